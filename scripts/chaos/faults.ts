/**
 * The chaos runner's hands: it applies each fault of the schedule at its time and lifts it at
 * the end of its planned duration, on real processes and real sockets:
 *
 *   kill        SIGKILL the node, restart it (same port, same data) when the fault ends
 *   freeze      SIGSTOP, then SIGCONT: a hang, not a crash
 *   cut, drop   the proxies of every coordinator's link to the node (proxy.ts), then pass
 *   latency     the same proxies, in latency mode
 *   byzantine   the node's `evaluate.lie` switch: a file in its data folder (nodes/evaluate.ts)
 *   coordinator-kill  SIGKILL one coordinator, start it again on the same port
 *   redis-restart     SIGKILL the private redis-server, start it again on the same port
 *   redis-flush       FLUSHALL on the private redis-server
 *
 * The schedule keeps at most n - t nodes faulty, planning a restart allowance; here the budget is
 * checked again against what really happened (a restart that took longer, a recovery window not
 * yet over), and a fault that would break it, or meet another fault on the same node, is held
 * back until it fits (recorded as postponed), or dropped after MAX_POSTPONE_MS (recorded as
 * skipped). Every application and lift goes on the timeline.
 */
import { setMaxListeners } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LIE_FILE } from '../../nodes/evaluate.ts';
import type { LocalCluster } from '../lib/cluster.ts';
import type { FaultProxy } from './proxy.ts';
import type { ChaosRedis } from './redis.ts';
import type {
  ChaosEvent,
  CoordinatorKill,
  LatencyFault,
  NodeFault,
  RedisRestart,
} from './schedule.ts';
import { faultyAt, type FaultRecord, type Timeline } from './timeline.ts';

/** A fault held back longer than this is given up. */
const MAX_POSTPONE_MS = 30_000;
const POLL_MS = 100;

export interface FaultDeps {
  cluster: LocalCluster;
  /** proxies[coordinator].get(node): the proxy of that coordinator's link to that node. */
  proxies: Map<number, FaultProxy>[];
  redis: ChaosRedis;
  timeline: Timeline;
  /** n - t: the most nodes faulty at once. */
  budget: number;
  /** Logs a line per fault for the operator watching the run. */
  note: (line: string) => void;
}

export class FaultInjector {
  readonly #d: FaultDeps;
  readonly #stop = new AbortController();
  readonly #tasks: Promise<void>[] = [];
  /** Nodes with a fault on (any kind, latency too), held until it is lifted. */
  readonly #busy = new Set<number>();

  constructor(deps: FaultDeps) {
    this.#d = deps;
    // Every waiting task listens on the one stop signal.
    setMaxListeners(Infinity, this.#stop.signal);
  }

  /** Start every fault task; run() resolves once each has applied and lifted its fault. */
  run(events: readonly ChaosEvent[]): Promise<void> {
    for (const e of events) {
      const task = this.#task(e).catch((err: unknown) => {
        this.#d.note(`fault ${e.kind} failed: ${(err as Error).message}`);
      });
      this.#tasks.push(task);
    }
    return Promise.all(this.#tasks).then(() => undefined);
  }

  /** Apply nothing more, lift what is on now; resolves when everything is back. */
  async stop(): Promise<void> {
    this.#stop.abort();
    await Promise.all(this.#tasks);
  }

  get #stopping(): boolean {
    return this.#stop.signal.aborted;
  }

  /** Sleep until `at` on the timeline, or until stop(); false when stopped first. */
  async #until(at: number): Promise<boolean> {
    const wait = at - this.#d.timeline.now();
    if (wait > 0)
      await sleep(wait, undefined, { signal: this.#stop.signal }).catch(() => undefined);
    return !this.#stopping;
  }

  #task(e: ChaosEvent): Promise<void> {
    switch (e.kind) {
      case 'kill':
      case 'freeze':
      case 'cut':
      case 'drop':
      case 'byzantine':
      case 'latency':
        return this.#nodeFault(e);
      case 'coordinator-kill':
        return this.#coordinatorKill(e);
      case 'redis-restart':
        return this.#redisRestart(e);
      case 'redis-flush':
        return this.#redisFlush(e.at);
      default:
        return Promise.resolve();
    }
  }

  /** Whether `node` may get a fault of `kind` now without breaking the budget. */
  #fits(node: number, counted: boolean): boolean {
    if (this.#busy.has(node)) return false;
    if (!counted) return true;
    const faulty = faultyAt(this.#d.timeline.faults, this.#d.timeline.now());
    return !faulty.has(node) && faulty.size + 1 <= this.#d.budget;
  }

  async #nodeFault(f: NodeFault | LatencyFault): Promise<void> {
    const tl = this.#d.timeline;
    if (!(await this.#until(f.at))) return;
    const counted = f.kind !== 'latency';
    const asked = tl.now();
    while (!this.#fits(f.node, counted)) {
      if (tl.now() - asked > MAX_POSTPONE_MS) {
        tl.skipped.push({
          kind: f.kind,
          node: f.node,
          plannedAt: f.at,
          reason: 'no room in the n - t budget',
        });
        return;
      }
      if (!(await this.#until(tl.now() + POLL_MS))) return;
    }
    // Checked and recorded in the same tick: no other task can slip in between.
    this.#busy.add(f.node);
    const record: FaultRecord = {
      kind: f.kind,
      node: f.node,
      plannedAt: f.at,
      at: tl.now(),
      postponedMs: Math.round(tl.now() - asked),
      ...(f.kind === 'latency' ? { detail: `${f.ms}+${f.jitterMs} ms` } : {}),
    };
    tl.faults.push(record);
    try {
      await this.#apply(f);
      this.#d.note(`node ${f.node}: ${f.kind}${record.detail ? ` ${record.detail}` : ''}`);
      await this.#until(record.at + (f.until - f.at));
    } finally {
      await this.#lift(f);
      record.liftedAt = tl.now();
      this.#busy.delete(f.node);
      this.#d.note(`node ${f.node}: ${f.kind} lifted`);
    }
  }

  #proxiesOf(node: number): FaultProxy[] {
    return this.#d.proxies.map((m) => m.get(node)).filter((p): p is FaultProxy => p !== undefined);
  }

  #lieFile(node: number): string {
    return join(this.#d.cluster.nodeDataDir(node), LIE_FILE);
  }

  async #apply(f: NodeFault | LatencyFault): Promise<void> {
    const { cluster } = this.#d;
    switch (f.kind) {
      case 'kill':
        await cluster.killNode(f.node, 'SIGKILL');
        return;
      case 'freeze':
        signal(cluster, f.node, 'SIGSTOP');
        return;
      case 'cut':
      case 'drop':
        for (const p of this.#proxiesOf(f.node)) p.setMode({ kind: f.kind });
        return;
      case 'latency':
        for (const p of this.#proxiesOf(f.node)) {
          p.setMode({ kind: 'latency', ms: f.ms, jitterMs: f.jitterMs });
        }
        return;
      case 'byzantine':
        writeFileSync(this.#lieFile(f.node), '');
        return;
    }
  }

  async #lift(f: NodeFault | LatencyFault): Promise<void> {
    const { cluster } = this.#d;
    switch (f.kind) {
      case 'kill':
        await this.#restartNode(f.node);
        return;
      case 'freeze':
        signal(cluster, f.node, 'SIGCONT');
        return;
      case 'cut':
      case 'drop':
      case 'latency':
        for (const p of this.#proxiesOf(f.node)) p.setMode({ kind: 'pass' });
        return;
      case 'byzantine':
        rmSync(this.#lieFile(f.node), { force: true });
        return;
    }
  }

  /**
   * Start a killed node on its port; if another process took the port meanwhile, on a new one,
   * and point the proxies there.
   */
  async #restartNode(node: number): Promise<void> {
    const { cluster } = this.#d;
    for (let attempt = 1; ; attempt++) {
      try {
        await cluster.startNode(node, attempt > 2);
        const port = cluster.secrets.nodes.find((n) => n.id === node)!.port;
        for (const p of this.#proxiesOf(node)) p.retarget(port);
        return;
      } catch (err) {
        if (attempt >= 5) throw err;
        this.#d.note(
          `node ${node} did not restart (${(err as Error).message.split('\n')[0]}); again`,
        );
        await sleep(1000);
      }
    }
  }

  async #coordinatorKill(e: CoordinatorKill): Promise<void> {
    const tl = this.#d.timeline;
    if (!(await this.#until(e.at))) return;
    const proc = this.#d.cluster.coordinators[e.coordinator];
    if (!proc) return;
    const port = proc.port;
    const record: FaultRecord = {
      kind: e.kind,
      coordinator: e.coordinator,
      plannedAt: e.at,
      at: tl.now(),
      postponedMs: 0,
    };
    tl.faults.push(record);
    try {
      await proc.kill('SIGKILL');
      this.#d.note(`coordinator ${e.coordinator + 1}: SIGKILL`);
      await this.#until(record.at + (e.until - e.at));
    } finally {
      await proc.start({ KMAAS_COORDINATOR_PORT: String(port) });
      record.liftedAt = tl.now();
      this.#d.note(`coordinator ${e.coordinator + 1}: restarted`);
    }
  }

  async #redisRestart(e: RedisRestart): Promise<void> {
    const tl = this.#d.timeline;
    if (!(await this.#until(e.at))) return;
    const record: FaultRecord = { kind: e.kind, plannedAt: e.at, at: tl.now(), postponedMs: 0 };
    tl.faults.push(record);
    try {
      await this.#d.redis.crash();
      this.#d.note('redis: SIGKILL');
      await this.#until(record.at + (e.until - e.at));
    } finally {
      await this.#d.redis.restart();
      record.liftedAt = tl.now();
      this.#d.note('redis: restarted');
    }
  }

  async #redisFlush(at: number): Promise<void> {
    const tl = this.#d.timeline;
    if (!(await this.#until(at))) return;
    // A restart may be under way: a flush needs a server to flush.
    const asked = tl.now();
    while (tl.faults.some((f) => f.kind === 'redis-restart' && f.liftedAt === undefined)) {
      if (!(await this.#until(tl.now() + POLL_MS))) return;
    }
    await this.#d.redis.flushAll();
    const now = tl.now();
    tl.faults.push({
      kind: 'redis-flush',
      plannedAt: at,
      at: now,
      liftedAt: now,
      postponedMs: Math.round(now - asked),
    });
    this.#d.note('redis: FLUSHALL');
  }
}

function signal(cluster: LocalCluster, node: number, sig: 'SIGSTOP' | 'SIGCONT'): void {
  const pid = cluster.nodes.get(node)?.pid;
  if (pid === undefined || !cluster.nodeRunning(node)) return;
  process.kill(pid, sig);
}
