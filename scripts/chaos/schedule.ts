/**
 * The chaos run's fault schedule: a pure function of (seed, minutes, n, t) that lays out, in
 * milliseconds from the start of the load, every fault the runner (scripts/chaos/main.ts) injects.
 *
 * Faulty, exactly: a committee node is faulty while it is killed (from the SIGKILL until it
 * listens again), frozen (SIGSTOP until SIGCONT), cut off or black-holed by the proxies between
 * the coordinators and it, or lying (the Byzantine node, failpoint `evaluate.lie`), and for
 * RECOVERY_MS after that: the time a coordinator is given to see it back. Added latency does not
 * make a node faulty (it answers, slowly), nor do the system faults (a coordinator killed, Redis
 * restarted or flushed), which touch no node. "At least t nodes alive" means at least t members
 * of the committee that are not faulty in this sense.
 *
 * The invariant: at no moment are more than n - t nodes faulty, and at some moments exactly
 * n - t are (two forced episodes: n - t nodes killed together, and the Byzantine node lying
 * while n - t - 1 others are frozen, cut or black-holed). The schedule plans a killed node's
 * restart with RESTART_ALLOWANCE_MS for it to come up; the runner checks the invariant again on
 * what really happens and postpones a fault that would break it.
 *
 * A node has at most one fault at a time, of any kind, latency included (the proxies have one
 * mode per link). Ceremonies (a refresh, a node added then removed) are planned at fixed shares
 * of the run; the runner starts each when the previous one has finished.
 */
import { Prng } from './prng.ts';

/** Node faults that count towards the n - t budget. */
export const BUDGET_FAULTS = ['kill', 'freeze', 'cut', 'drop', 'byzantine'] as const;
export type BudgetFaultKind = (typeof BUDGET_FAULTS)[number];

/** After a fault is lifted the node counts as faulty this much longer (see the module comment). */
export const RECOVERY_MS = 2000;
/** A SIGKILLed node's planned time from its restart to listening again. */
export const RESTART_ALLOWANCE_MS = 6000;
/** The first and last stretch of the run carry no node fault. */
export const WARMUP_MS = 5000;
export const COOLDOWN_MS = 5000;

export interface NodeFault {
  kind: BudgetFaultKind;
  node: number;
  /** When the fault is applied, and when it is lifted (ms from the start of the load). */
  at: number;
  until: number;
}

export interface LatencyFault {
  kind: 'latency';
  node: number;
  at: number;
  until: number;
  /** Added to every chunk in each direction, plus up to `jitterMs` more. */
  ms: number;
  jitterMs: number;
}

export interface CoordinatorKill {
  kind: 'coordinator-kill';
  /** Index of the coordinator (0 or 1). */
  coordinator: number;
  at: number;
  /** When it is started again, on the same port. */
  until: number;
}

export interface RedisRestart {
  kind: 'redis-restart';
  at: number;
  until: number;
}

export interface RedisFlush {
  kind: 'redis-flush';
  at: number;
}

export interface CeremonyEvent {
  kind: 'refresh' | 'add-node' | 'remove-node';
  at: number;
  /** add-node and remove-node: the spare node. */
  node?: number;
}

export type ChaosEvent =
  NodeFault | LatencyFault | CoordinatorKill | RedisRestart | RedisFlush | CeremonyEvent;

export interface ScheduleOptions {
  seed: string | number;
  minutes: number;
  /** Committee size and threshold (the chaos run: 5 and 3). */
  n: number;
  t: number;
  /** Coordinators behind the load's round robin (default 2). */
  coordinators?: number;
}

export interface Schedule {
  seed: string;
  minutes: number;
  n: number;
  t: number;
  durationMs: number;
  /** The node that lies while its `byzantine` faults last. */
  byzantine: number;
  /** The spare node added and then removed (n + 1); never faulted. */
  spare: number;
  /** Every event, by time. */
  events: ChaosEvent[];
}

/** Until when a node fault keeps the node faulty, as planned. */
export function plannedFaultyUntil(f: NodeFault): number {
  return f.until + RECOVERY_MS + (f.kind === 'kill' ? RESTART_ALLOWANCE_MS : 0);
}

export function isBudgetFault(e: ChaosEvent): e is NodeFault {
  return (BUDGET_FAULTS as readonly string[]).includes(e.kind);
}

const WEIGHTS = { kill: 3, freeze: 2, cut: 2, drop: 2, byzantine: 1.5, latency: 2.5 } as const;
type NodeKind = keyof typeof WEIGHTS;

/** How long each node fault lasts, in ms: [min, max). */
const DURATION: Record<NodeKind, readonly [number, number]> = {
  kill: [3000, 10_000],
  freeze: [2000, 8000],
  cut: [2000, 8000],
  drop: [2000, 8000],
  byzantine: [8000, 25_000],
  latency: [4000, 15_000],
};

/** Pause between two node faults the schedule tries to place. */
const GAP: readonly [number, number] = [3000, 12_000];
/** Chance that a second fault on another node starts together with one just placed. */
const PAIR_CHANCE = 0.2;
/** System faults keep this far apart from each other. */
const SYSTEM_SPACING_MS = 8000;

export function faultSchedule(o: ScheduleOptions): Schedule {
  const { n, t, minutes } = o;
  if (!Number.isInteger(n) || n < 2) throw new RangeError('n: expected an integer >= 2');
  if (!Number.isInteger(t) || t < 1 || t > n) throw new RangeError(`t: expected 1..${n}`);
  if (!(minutes > 0)) throw new RangeError('minutes: expected a positive number');
  const coordinators = o.coordinators ?? 2;
  const seed = String(o.seed);
  const rng = Prng.from(seed, 'schedule');
  const durationMs = Math.round(minutes * 60_000);
  const budget = n - t;
  const nodes = Array.from({ length: n }, (_, i) => i + 1);
  const byzantine = rng.pick(nodes);
  const placed: (NodeFault | LatencyFault)[] = [];

  const faultyWindow = (f: NodeFault | LatencyFault): [number, number] =>
    f.kind === 'latency' ? [f.at, f.until] : [f.at, plannedFaultyUntil(f)];

  /** Whether `f` can join what is placed without breaking a rule. */
  const fits = (f: NodeFault | LatencyFault): boolean => {
    const [from, to] = faultyWindow(f);
    if (from < WARMUP_MS || to > durationMs - COOLDOWN_MS) return false;
    const overlapping = placed.filter((p) => {
      const [a, b] = faultyWindow(p);
      return a < to && from < b;
    });
    if (overlapping.some((p) => p.node === f.node)) return false;
    if (f.kind === 'latency') return true;
    // The most budget faults at once within [from, to) is reached at one of their starts.
    const counted = overlapping.filter(isBudgetFault).map(faultyWindow);
    const starts = [from, ...counted.map(([a]) => a).filter((a) => a > from)];
    const peak = Math.max(
      0,
      ...starts.map((s) => counted.filter(([a, b]) => a <= s && s < b).length),
    );
    return peak + 1 <= budget;
  };

  /** A fault of `kind` on `node` from `at`; `short`: its shortest duration. */
  const make = (
    kind: NodeKind,
    node: number,
    at: number,
    short = false,
  ): NodeFault | LatencyFault => {
    const [lo, hi] = DURATION[kind];
    const until = Math.round(at + (short ? lo : rng.between(lo, hi)));
    if (kind !== 'latency') return { kind, node, at: Math.round(at), until };
    const ms = rng.int(40, 250);
    return {
      kind,
      node,
      at: Math.round(at),
      until,
      ms,
      jitterMs: Math.round(ms * rng.between(0, 0.5)),
    };
  };

  const tryPlace = (
    kind: NodeKind,
    at: number,
    exclude: readonly number[] = [],
    short = false,
  ): boolean => {
    const candidates = kind === 'byzantine' ? [byzantine] : rng.shuffle(nodes);
    for (const node of candidates) {
      if (exclude.includes(node)) continue;
      const f = make(kind, node, at, short);
      if (fits(f)) {
        placed.push(f);
        return true;
      }
    }
    return false;
  };

  // Forced episodes, so that every run spends time at exactly n - t faulty nodes: each tried at
  // a few random times in its stretch of the run until it fits whole, then, shortened, at the
  // first second of the run where it fits.
  const episode = (from: number, to: number, place: (at: number, short: boolean) => boolean) => {
    const tries = [
      ...Array.from({ length: 8 }, () => ({
        at: durationMs * rng.between(from, to),
        short: false,
      })),
      ...Array.from({ length: Math.floor(durationMs / 1000) }, (_, i) => ({
        at: i * 1000,
        short: true,
      })),
    ];
    for (const { at, short } of tries) {
      const before = placed.length;
      if (place(at, short)) return;
      placed.length = before;
    }
  };
  if (budget > 0) {
    episode(0.2, 0.4, (at, short) => {
      for (let i = 0; i < budget; i++) {
        if (!tryPlace('kill', at + rng.between(0, 500), [], short)) return false;
      }
      return true;
    });
    episode(0.45, 0.7, (at, short) => {
      if (!tryPlace('byzantine', at, [], short)) return false;
      for (let i = 1; i < budget; i++) {
        const kind = rng.pick(['freeze', 'cut', 'drop'] as const);
        if (!tryPlace(kind, at + rng.between(500, 1500), [], short)) return false;
      }
      return true;
    });
  }
  // Then as many more as fit, at random times.
  for (let at = WARMUP_MS; at < durationMs; at += rng.between(GAP[0], GAP[1])) {
    const kind = rng.weighted(WEIGHTS);
    if (kind !== 'latency' && budget === 0) continue;
    if (!tryPlace(kind, at) || !rng.chance(PAIR_CHANCE)) continue;
    const partner = placed[placed.length - 1]!.node;
    tryPlace(rng.weighted(WEIGHTS), at + rng.between(0, 1000), [partner]);
  }

  const events: ChaosEvent[] = [...placed, ...systemFaults(rng, minutes, durationMs, coordinators)];
  events.push(...ceremonies(rng, minutes, durationMs, n + 1));
  events.sort((a, b) => a.at - b.at || a.kind.localeCompare(b.kind));
  return { seed, minutes, n, t, durationMs, byzantine, spare: n + 1, events };
}

/** Coordinator kills (alternating), Redis restarts and flushes, kept apart from each other. */
function systemFaults(
  rng: Prng,
  minutes: number,
  durationMs: number,
  coordinators: number,
): ChaosEvent[] {
  const out: (CoordinatorKill | RedisRestart | RedisFlush)[] = [];
  const kills = Math.max(1, Math.round(minutes / 2));
  const restarts = Math.max(1, Math.round(minutes / 4));
  const flushes = Math.max(1, Math.round(minutes / 4));
  const latest = durationMs - COOLDOWN_MS - 10_000;
  const place = (make: (at: number) => CoordinatorKill | RedisRestart | RedisFlush): void => {
    for (let attempt = 0; attempt < 200; attempt++) {
      const e = make(Math.round(rng.between(WARMUP_MS, Math.max(WARMUP_MS + 1, latest))));
      const end = 'until' in e ? e.until : e.at;
      const clear = out.every((o) => {
        const oEnd = 'until' in o ? o.until : o.at;
        return e.at > oEnd + SYSTEM_SPACING_MS || end + SYSTEM_SPACING_MS < o.at;
      });
      if (clear) {
        out.push(e);
        return;
      }
    }
  };
  let coordinator = rng.int(0, coordinators - 1);
  for (let i = 0; i < kills; i++) {
    const c = coordinator;
    place((at) => ({
      kind: 'coordinator-kill',
      coordinator: c,
      at,
      until: at + rng.int(2000, 6000),
    }));
    coordinator = (coordinator + 1) % coordinators;
  }
  for (let i = 0; i < restarts; i++) {
    place((at) => ({ kind: 'redis-restart', at, until: at + rng.int(1000, 4000) }));
  }
  for (let i = 0; i < flushes; i++) place((at) => ({ kind: 'redis-flush', at }));
  return out;
}

/** A refresh, the spare added then removed, and a second refresh in runs of 6 minutes or more. */
function ceremonies(
  rng: Prng,
  minutes: number,
  durationMs: number,
  spare: number,
): CeremonyEvent[] {
  const at = (lo: number, hi: number) => Math.round(durationMs * rng.between(lo, hi));
  const out: CeremonyEvent[] = [
    { kind: 'refresh', at: at(0.12, 0.2) },
    { kind: 'add-node', at: at(0.3, 0.4), node: spare },
    { kind: 'remove-node', at: at(0.55, 0.65), node: spare },
  ];
  if (minutes >= 6) out.push({ kind: 'refresh', at: at(0.75, 0.8) });
  return out;
}
