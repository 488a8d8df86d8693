/**
 * Everything a chaos run did and saw, on one clock (ms since the load started): each fault as it
 * was really applied and lifted, each request with its outcome and latency, each ceremony, and
 * each change of committee. The report (report.ts) and the plot (plot.ts) are computed from this
 * alone, and the runner's own guard of the n - t budget (faults.ts) reads it too.
 *
 * Faulty, as in schedule.ts: a node is faulty from the moment a budget fault is applied until
 * RECOVERY_MS after it was lifted (a killed node: after it listened again). Healthy: a member of
 * the committee in force that is not faulty.
 */
import { performance } from 'node:perf_hooks';
import { BUDGET_FAULTS, RECOVERY_MS, type ChaosEvent } from './schedule.ts';

export type FaultKind = Exclude<ChaosEvent['kind'], 'refresh' | 'add-node' | 'remove-node'>;

export interface FaultRecord {
  kind: FaultKind;
  node?: number;
  coordinator?: number;
  /** When the schedule wanted it, when it was applied, and when lifted (undefined: still on). */
  plannedAt: number;
  at: number;
  liftedAt?: number;
  /** How long the runner held it back to keep the n - t budget or one fault per node. */
  postponedMs: number;
  /** Latency faults: "120+-30 ms". */
  detail?: string;
}

export interface SkippedFault {
  kind: FaultKind;
  node?: number;
  plannedAt: number;
  reason: string;
}

export type CeremonyKind = 'refresh' | 'add-node' | 'remove-node';

export interface CeremonyRecord {
  kind: CeremonyKind;
  plannedAt: number;
  /** First submission, and when its job (or the last retry's) completed. */
  at: number;
  doneAt?: number;
  /** When the runner stopped working on it, whatever the outcome. */
  endedAt?: number;
  outcome: 'completed' | 'failed' | 'unfinished' | 'skipped';
  /** Proposals submitted (a failed or lost job is proposed again, as an operator would). */
  submissions: number;
  jobIds: string[];
  /** Why earlier submissions did not complete, in order. */
  problems: string[];
  epoch?: number;
}

export interface RequestRecord {
  at: number;
  end: number;
  /** The coordinator asked first (0 or 1). */
  coordinator: number;
  tenant: string;
  docs: number;
  ok: boolean;
  /** Keys that differed from the recorded ones (any > 0 is a wrong key). */
  wrong: number;
  /** Asked again on the other coordinator after a connection-level error. */
  retried: boolean;
  code?: string;
  cause?: string;
  message?: string;
  /** ERR_TOO_FEW_NODES: the nodes the coordinator names, and why each failed. */
  failedNodes?: string[];
  /** The nodes whose partials made the keys. */
  nodes?: number[];
  /** Partials the SDK refused (bad proof) although the coordinator passed them on. */
  rejectedByClient?: number;
}

export interface CommitteeRecord {
  at: number;
  committee: number[];
  threshold: number;
  epoch?: number;
}

export class Timeline {
  readonly #t0 = performance.now();
  readonly faults: FaultRecord[] = [];
  readonly skipped: SkippedFault[] = [];
  readonly requests: RequestRecord[] = [];
  readonly ceremonies: CeremonyRecord[] = [];
  readonly committees: CommitteeRecord[] = [];

  constructor(initial: { committee: number[]; threshold: number; epoch?: number }) {
    this.committees.push({ at: 0, ...initial });
  }

  /** Milliseconds since the load started. */
  now(): number {
    return Math.round((performance.now() - this.#t0) * 10) / 10;
  }
}

const BUDGET = new Set<string>(BUDGET_FAULTS);

export function isBudgetRecord(f: FaultRecord): boolean {
  return BUDGET.has(f.kind) && f.node !== undefined;
}

/** [from, to) during which a budget fault made its node faulty; `end` for one never lifted. */
export function faultyWindow(f: FaultRecord, end: number): [number, number] {
  return [f.at, (f.liftedAt ?? end) + RECOVERY_MS];
}

/** The nodes faulty at `time`. */
export function faultyAt(
  faults: readonly FaultRecord[],
  time: number,
  end = Infinity,
): Set<number> {
  const out = new Set<number>();
  for (const f of faults) {
    if (!isBudgetRecord(f)) continue;
    const [from, to] = faultyWindow(f, end);
    if (from <= time && time < to) out.add(f.node!);
  }
  return out;
}

/** The committee in force at `time` (the last change at or before it). */
export function committeeAt(committees: readonly CommitteeRecord[], time: number): CommitteeRecord {
  let current = committees[0]!;
  for (const c of committees) if (c.at <= time) current = c;
  return current;
}

/**
 * The fewest healthy members, and their margin over the threshold, at any moment of
 * [from, to]: checked at `from` and at every fault and committee change inside.
 */
export function healthOver(
  tl: Pick<Timeline, 'faults' | 'committees'>,
  from: number,
  to: number,
  end = Infinity,
): { healthy: number; threshold: number; margin: number } {
  const moments = new Set<number>([from]);
  for (const f of tl.faults) {
    if (!isBudgetRecord(f)) continue;
    const [a, b] = faultyWindow(f, end);
    if (a > from && a <= to) moments.add(a);
    if (b > from && b <= to) moments.add(b);
  }
  for (const c of tl.committees) if (c.at > from && c.at <= to) moments.add(c.at);
  let worst = { healthy: Infinity, threshold: 0, margin: Infinity };
  for (const m of moments) {
    const c = committeeAt(tl.committees, m);
    const faulty = faultyAt(tl.faults, m, end);
    const healthy = c.committee.filter((id) => !faulty.has(id)).length;
    const margin = healthy - c.threshold;
    if (margin < worst.margin) worst = { healthy, threshold: c.threshold, margin };
  }
  return worst;
}
