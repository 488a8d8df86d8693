/**
 * The coordinator's Prometheus metrics (prom-client), served at GET /metrics in the text
 * exposition format. One registry per coordinator instance, so that several in one process (the
 * tests) do not share counters. Per-node gauges are read from the node links when scraped.
 *
 *   kmaas_coordinator_evaluations_total{outcome}          'ok' or the error code
 *   kmaas_coordinator_evaluation_duration_seconds         histogram, every outcome
 *   kmaas_coordinator_hedges_total                        backup nodes asked for slow ones
 *   kmaas_coordinator_probes_total                        requests sent to half-open breakers
 *   kmaas_coordinator_rate_limit_fallbacks_total          requests counted in memory (Redis out)
 *   kmaas_coordinator_registry_rebuilds_total             registry found lost and rebuilt
 *   kmaas_coordinator_breaker_transitions_total{node,to}  breakers opened / closed
 *   kmaas_coordinator_node_connected{node}                1 or 0
 *   kmaas_coordinator_node_breaker_state{node}            0 closed, 1 half-open, 2 open
 *   kmaas_coordinator_node_latency_seconds{node}          average evaluation round trip
 *   kmaas_coordinator_node_ping_seconds{node}             average heartbeat round trip
 *   kmaas_coordinator_node_recent_failures{node}          failures since the last good answer
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { BreakerState, Transition } from './circuit-breaker.ts';
import type { EvaluateMetrics } from './evaluate.ts';
import type { NodePool } from './node-pool.ts';

const BREAKER_VALUE: Record<BreakerState, number> = { closed: 0, 'half-open': 1, open: 2 };

export class CoordinatorMetrics implements EvaluateMetrics {
  readonly registry = new Registry();
  readonly #evaluations: Counter<'outcome'>;
  readonly #duration: Histogram;
  readonly #hedges: Counter;
  readonly #probes: Counter;
  readonly #fallbacks: Counter;
  readonly #rebuilds: Counter;
  readonly #transitions: Counter<'node' | 'to'>;

  constructor(pool: NodePool) {
    const registers = [this.registry];
    this.#evaluations = new Counter({
      name: 'kmaas_coordinator_evaluations_total',
      help: "Evaluations by outcome: 'ok' or the error code",
      labelNames: ['outcome'],
      registers,
    });
    this.#duration = new Histogram({
      name: 'kmaas_coordinator_evaluation_duration_seconds',
      help: 'Time to answer an evaluation, whatever its outcome',
      buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.#hedges = new Counter({
      name: 'kmaas_coordinator_hedges_total',
      help: 'Backup nodes asked because a node was slower than usual',
      registers,
    });
    this.#probes = new Counter({
      name: 'kmaas_coordinator_probes_total',
      help: 'Evaluations sent to a node whose circuit breaker is half-open',
      registers,
    });
    this.#fallbacks = new Counter({
      name: 'kmaas_coordinator_rate_limit_fallbacks_total',
      help: "Requests rate-limited in this replica's memory because Redis failed",
      registers,
    });
    this.#rebuilds = new Counter({
      name: 'kmaas_coordinator_registry_rebuilds_total',
      help: 'Times the registry was found missing from Redis and rebuilt from the nodes',
      registers,
    });
    this.#transitions = new Counter({
      name: 'kmaas_coordinator_breaker_transitions_total',
      help: 'Circuit breaker transitions per node, by the state entered',
      labelNames: ['node', 'to'],
      registers,
    });
    const perNode = (name: string, help: string, read: (id: number) => number | null) =>
      new Gauge({
        name,
        help,
        labelNames: ['node'],
        registers,
        collect() {
          this.reset();
          for (const id of pool.ids()) {
            const value = read(id);
            if (value !== null) this.set({ node: String(id) }, value);
          }
        },
      });
    const health = (id: number) => pool.get(id)!.health;
    perNode('kmaas_coordinator_node_connected', 'Whether the link to the node is up', (id) =>
      pool.get(id)!.connected ? 1 : 0,
    );
    perNode(
      'kmaas_coordinator_node_breaker_state',
      'Circuit breaker state: 0 closed, 1 half-open, 2 open',
      (id) => BREAKER_VALUE[health(id).breaker.state],
    );
    perNode(
      'kmaas_coordinator_node_latency_seconds',
      'Average evaluation round trip of the node',
      (id) => seconds(health(id).view().evaluateMs),
    );
    perNode(
      'kmaas_coordinator_node_ping_seconds',
      'Average heartbeat round trip of the node',
      (id) => seconds(health(id).pingLatency()),
    );
    perNode(
      'kmaas_coordinator_node_recent_failures',
      'Failures of the node since its last good answer (forgotten after 30 s)',
      (id) => health(id).recentFailures(),
    );
    for (const link of pool.all()) {
      link.onTransition((t: Transition) =>
        this.#transitions.inc({ node: String(link.id), to: t.to }),
      );
    }
  }

  evaluated(outcome: string, durationSeconds: number): void {
    this.#evaluations.inc({ outcome });
    this.#duration.observe(durationSeconds);
  }

  hedged(): void {
    this.#hedges.inc();
  }

  probed(): void {
    this.#probes.inc();
  }

  rateLimitFallback(): void {
    this.#fallbacks.inc();
  }

  registryRebuilt(): void {
    this.#rebuilds.inc();
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

function seconds(ms: number | null): number | null {
  return ms === null ? null : ms / 1000;
}
