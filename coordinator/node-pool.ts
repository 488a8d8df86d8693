/**
 * All node links of one coordinator, and the order in which to ask them (coordinator/node-health.ts
 * has what the order is made of). Connected nodes fall in three tiers by their circuit breaker:
 * closed ones are routed to; half-open ones may take one probe; open ones are asked only when the
 * others cannot make a threshold, since trying a node that may be ill beats failing for sure.
 * Within a tier: a node that missed its last heartbeat goes behind every node that did not, then
 * fewer recent failures go first, then less of our work open (blinded elements sent or waiting),
 * so that concurrent evaluations spread over the committee instead of queueing at the same t
 * nodes; then the lower heartbeat latency wins, then the lower id so that the order is stable.
 */
import type { NodeEndpoint } from './config.ts';
import type { Logger } from './logger.ts';
import { NodeLink, type NodeLinkOptions, type NodeLinkState } from './node-link.ts';

export type PoolOptions = Omit<NodeLinkOptions, 'id' | 'url' | 'logger'>;

/** Connected nodes by breaker tier, each best first. */
export interface Route {
  /** Closed breakers: routed to. */
  ready: NodeLink[];
  /** Half-open breakers whose probe slot is free: one request may probe each. */
  probes: NodeLink[];
  /** Open breakers, or half-open with a probe out: only when the others cannot make t. */
  held: NodeLink[];
}

interface Ranked {
  link: NodeLink;
  silent: number;
  failures: number;
  load: number;
  latency: number;
}

export class NodePool {
  readonly #links = new Map<number, NodeLink>();

  constructor(endpoints: readonly NodeEndpoint[], options: PoolOptions, logger: Logger) {
    for (const { id, url } of endpoints) {
      this.#links.set(id, new NodeLink({ ...options, id, url, logger }));
    }
  }

  start(): void {
    for (const link of this.#links.values()) link.start();
  }

  get(id: number): NodeLink | undefined {
    return this.#links.get(id);
  }

  /** Configured node ids, ascending. */
  ids(): number[] {
    return [...this.#links.keys()].sort((a, b) => a - b);
  }

  all(): NodeLink[] {
    return this.ids().map((id) => this.#links.get(id)!);
  }

  connected(): NodeLink[] {
    return this.all().filter((l) => l.connected);
  }

  /** Connected links in routing order: every tier, best first (see the module comment). */
  healthy(): NodeLink[] {
    const { ready, probes, held } = this.route();
    return [...ready, ...probes, ...held];
  }

  /** Connected links that `eligible` accepts, by breaker tier, each tier best first. */
  route(eligible: (link: NodeLink) => boolean = () => true): Route {
    const tiers: Record<'yes' | 'probe' | 'no', Ranked[]> = { yes: [], probe: [], no: [] };
    for (const link of this.connected()) {
      if (!eligible(link)) continue;
      tiers[link.health.routable()].push({
        link,
        silent: link.health.missedPongs > 0 ? 1 : 0,
        failures: link.recentFailures(),
        load: link.load(),
        latency: link.latency(),
      });
    }
    const order = (list: Ranked[]) =>
      list
        .sort(
          (a, b) =>
            a.silent - b.silent ||
            a.failures - b.failures ||
            a.load - b.load ||
            a.latency - b.latency ||
            a.link.id - b.link.id,
        )
        .map((x) => x.link);
    return { ready: order(tiers.yes), probes: order(tiers.probe), held: order(tiers.no) };
  }

  states(): NodeLinkState[] {
    return this.all().map((l) => l.state());
  }

  /** `listener` runs each time any link (re)connects. */
  onUp(listener: (link: NodeLink) => void): void {
    for (const link of this.#links.values()) link.onUp(() => listener(link));
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#links.values()].map((l) => l.close()));
  }
}
