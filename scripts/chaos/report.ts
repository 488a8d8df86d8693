/**
 * The chaos report, computed from the timeline alone: requests, successes, failures by code and
 * by cause, wrong keys, the requests that failed while at least t nodes were healthy (and their
 * share of the requests made while at least t were), latency p50/p99 per fault phase, the
 * ceremonies, and the faults as they really happened, with the n - t invariant checked on them.
 *
 * A request counts as "made while at least t nodes were healthy" when, at every moment from its
 * start to its end, at least t members of the committee in force were not faulty (timeline.ts).
 * Its phases are the faults and ceremonies on at its start (a fault from its application to its
 * lift; a flush for FLUSH_PHASE_MS after it), plus "n - t faulty" when exactly n - t nodes were
 * faulty, and "no fault" when nothing was on. Percentiles are nearest-rank, over the latencies
 * of successful requests.
 */
import {
  committeeAt,
  faultyWindow,
  healthOver,
  isBudgetRecord,
  type CeremonyRecord,
  type FaultRecord,
  type RequestRecord,
  type Timeline,
} from './timeline.ts';

/** A flush is a moment; what follows it is its phase for this long. */
export const FLUSH_PHASE_MS = 10_000;
const MAX_LISTED_FAILURES = 200;

export interface ReportMeta {
  seed: string;
  minutes: number;
  command: string;
  startedAt: string;
  n: number;
  t: number;
  spare: number;
  byzantine: number;
  coordinators: number;
  clients: number;
  /** The settings the run gave the processes beyond their defaults. */
  settings: Record<string, Record<string, string>>;
  /** When the load stopped (timeline ms). */
  endMs: number;
}

export interface PhaseStats {
  requests: number;
  ok: number;
  failed: number;
  p50ms: number | null;
  p99ms: number | null;
}

export interface ChaosReport {
  seed: string;
  minutes: number;
  command: string;
  startedAt: string;
  durationSeconds: number;
  cluster: {
    n: number;
    t: number;
    spare: number;
    byzantine: number;
    coordinators: number;
    clients: number;
  };
  definitions: { faulty: string; healthy: string; whileHealthy: string };
  settings: ReportMeta['settings'];
  requests: {
    total: number;
    ok: number;
    failed: number;
    retriedOnOtherCoordinator: number;
    keysChecked: number;
    /** Partials the SDK refused although the coordinator passed them on (should be 0). */
    partialsRejectedByClient: number;
  };
  wrongKeys: number;
  failuresByCode: Record<string, number>;
  failuresByCause: Record<string, number>;
  whileHealthy: {
    requests: number;
    failed: number;
    share: number;
    byCause: Record<string, number>;
  };
  latency: { all: PhaseStats; byPhase: Record<string, PhaseStats> };
  ceremonies: {
    kind: string;
    plannedAtSeconds: number;
    startedAtSeconds: number;
    seconds: number | null;
    outcome: CeremonyRecord['outcome'];
    submissions: number;
    problems: string[];
    epoch?: number;
  }[];
  ceremoniesCompleted: number;
  invariant: {
    maxFaultyAtOnce: number;
    budget: number;
    secondsAtBudget: number;
    postponed: number;
    skipped: number;
  };
  faults: (Omit<FaultRecord, 'at' | 'liftedAt' | 'plannedAt'> & {
    plannedAtSeconds: number;
    atSeconds: number;
    liftedAtSeconds: number | null;
  })[];
  failures: {
    atSeconds: number;
    ms: number;
    coordinator: number;
    retried: boolean;
    code: string;
    cause: string;
    message: string;
    failedNodes?: string[];
    healthy: number;
    threshold: number;
    phases: string[];
  }[];
}

export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function stats(requests: readonly RequestRecord[]): PhaseStats {
  const ok = requests.filter((r) => r.ok);
  const latencies = ok.map((r) => r.end - r.at).sort((a, b) => a - b);
  const round = (x: number | null) => (x === null ? null : Math.round(x * 10) / 10);
  return {
    requests: requests.length,
    ok: ok.length,
    failed: requests.length - ok.length,
    p50ms: round(percentile(latencies, 50)),
    p99ms: round(percentile(latencies, 99)),
  };
}

/** The phases a request that started at `at` belongs to. */
export function phasesAt(
  tl: Pick<Timeline, 'faults' | 'ceremonies' | 'committees'>,
  at: number,
  end: number,
): string[] {
  const phases = new Set<string>();
  for (const f of tl.faults) {
    const until = f.kind === 'redis-flush' ? f.at + FLUSH_PHASE_MS : (f.liftedAt ?? end);
    if (f.at <= at && at < until) phases.add(f.kind);
  }
  for (const c of tl.ceremonies) {
    if (c.at <= at && at < (c.endedAt ?? end)) phases.add(c.kind);
  }
  const committee = committeeAt(tl.committees, at);
  const faulty = tl.faults.filter((f) => {
    if (!isBudgetRecord(f)) return false;
    const [a, b] = faultyWindow(f, end);
    return a <= at && at < b;
  });
  if (faulty.length > 0 && faulty.length === committee.committee.length - committee.threshold) {
    phases.add('n - t faulty');
  }
  if (phases.size === 0) phases.add('no fault');
  return [...phases].sort();
}

/** The most budget faults at once, and how long exactly `budget` were on. */
function invariantOf(faults: readonly FaultRecord[], budget: number, end: number) {
  const edges = faults
    .filter(isBudgetRecord)
    .flatMap((f) => {
      const [a, b] = faultyWindow(f, end);
      return [
        [a, 1],
        [b, -1],
      ] as const;
    })
    .sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let open = 0;
  let most = 0;
  let atBudget = 0;
  let last = 0;
  for (const [time, delta] of edges) {
    if (open === budget && budget > 0) atBudget += time - last;
    open += delta;
    last = time;
    most = Math.max(most, open);
  }
  return { maxFaultyAtOnce: most, secondsAtBudget: Math.round(atBudget / 100) / 10 };
}

export function buildReport(tl: Timeline, meta: ReportMeta): ChaosReport {
  const end = meta.endMs;
  const s = (ms: number) => Math.round(ms / 100) / 10;
  const requests = tl.requests;
  const failed = requests.filter((r) => !r.ok);
  const count = (keys: string[]) => {
    const out: Record<string, number> = {};
    for (const k of keys.sort()) out[k] = (out[k] ?? 0) + 1;
    return out;
  };
  const phased = requests.map((r) => ({
    r,
    phases: phasesAt(tl, r.at, end),
    health: healthOver(tl, r.at, r.end, end),
  }));
  const healthy = phased.filter((p) => p.health.margin >= 0);
  const healthyFailures = healthy.filter((p) => !p.r.ok).map((p) => p.r);
  const healthyFailed = healthyFailures.length;
  const byPhase: Record<string, RequestRecord[]> = {};
  for (const p of phased) for (const ph of p.phases) (byPhase[ph] ??= []).push(p.r);
  const budget = meta.n - meta.t;
  const inv = invariantOf(tl.faults, budget, end);
  return {
    seed: meta.seed,
    minutes: meta.minutes,
    command: meta.command,
    startedAt: meta.startedAt,
    durationSeconds: s(end),
    cluster: {
      n: meta.n,
      t: meta.t,
      spare: meta.spare,
      byzantine: meta.byzantine,
      coordinators: meta.coordinators,
      clients: meta.clients,
    },
    definitions: {
      faulty:
        'a node is faulty while it is SIGKILLed (until it listens again), SIGSTOPped, cut off or black-holed by the proxies, or lying (the Byzantine node), and for 2 s after; added latency, coordinator kills and Redis faults make no node faulty',
      healthy: 'a member of the committee in force that is not faulty',
      whileHealthy:
        'at every moment from the request’s start to its end, at least t members of the committee in force were healthy',
    },
    settings: meta.settings,
    requests: {
      total: requests.length,
      ok: requests.length - failed.length,
      failed: failed.length,
      retriedOnOtherCoordinator: requests.filter((r) => r.retried).length,
      partialsRejectedByClient: requests.reduce((n, r) => n + (r.rejectedByClient ?? 0), 0),
      keysChecked: requests.filter((r) => r.code === undefined).reduce((n, r) => n + r.docs, 0),
    },
    wrongKeys: requests.reduce((n, r) => n + r.wrong, 0),
    failuresByCode: count(failed.map((r) => r.code ?? 'WRONG_KEY')),
    failuresByCause: count(failed.map((r) => r.cause ?? r.code ?? 'unknown')),
    whileHealthy: {
      requests: healthy.length,
      failed: healthyFailed,
      share: healthy.length === 0 ? 0 : Math.round((healthyFailed / healthy.length) * 1e6) / 1e6,
      byCause: count(healthyFailures.map((r) => r.cause ?? r.code ?? 'unknown')),
    },
    latency: {
      all: stats(requests),
      byPhase: Object.fromEntries(
        Object.entries(byPhase)
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([k, v]) => [k, stats(v)]),
      ),
    },
    ceremonies: tl.ceremonies.map((c) => ({
      kind: c.kind,
      plannedAtSeconds: s(c.plannedAt),
      startedAtSeconds: s(c.at),
      seconds: c.doneAt === undefined ? null : s(c.doneAt - c.at),
      outcome: c.outcome,
      submissions: c.submissions,
      problems: c.problems,
      ...(c.epoch === undefined ? {} : { epoch: c.epoch }),
    })),
    ceremoniesCompleted: tl.ceremonies.filter((c) => c.outcome === 'completed').length,
    invariant: {
      ...inv,
      budget,
      postponed: tl.faults.filter((f) => f.postponedMs > 0).length,
      skipped: tl.skipped.length,
    },
    faults: tl.faults.map(({ at, liftedAt, plannedAt, ...rest }) => ({
      ...rest,
      plannedAtSeconds: s(plannedAt),
      atSeconds: s(at),
      liftedAtSeconds: liftedAt === undefined ? null : s(liftedAt),
    })),
    failures: phased
      .filter((p) => !p.r.ok)
      .slice(0, MAX_LISTED_FAILURES)
      .map(({ r, phases, health }) => ({
        atSeconds: s(r.at),
        ms: Math.round(r.end - r.at),
        coordinator: r.coordinator,
        retried: r.retried,
        code: r.code ?? 'WRONG_KEY',
        cause: r.cause ?? r.code ?? 'unknown',
        message: r.message ?? '',
        ...(r.failedNodes ? { failedNodes: r.failedNodes } : {}),
        healthy: health.healthy,
        threshold: health.threshold,
        phases,
      })),
  };
}

/** A short text summary for the terminal. */
export function summaryLines(r: ChaosReport): string[] {
  const pct = (x: number) => `${(x * 100).toFixed(3)}%`;
  const lines = [
    `seed ${r.seed}, ${r.minutes} min (${r.durationSeconds} s of load), n = ${r.cluster.n}, t = ${r.cluster.t}, ${r.cluster.clients} clients, Byzantine node ${r.cluster.byzantine}`,
    `requests ${r.requests.total}: ok ${r.requests.ok}, failed ${r.requests.failed}, retried on the other coordinator ${r.requests.retriedOnOtherCoordinator}`,
    `wrong keys ${r.wrongKeys} (of ${r.requests.keysChecked} checked); partials the SDK refused ${r.requests.partialsRejectedByClient}`,
    `failed while >= t healthy: ${r.whileHealthy.failed} of ${r.whileHealthy.requests} (${pct(r.whileHealthy.share)})`,
    `most nodes faulty at once ${r.invariant.maxFaultyAtOnce} (n - t = ${r.invariant.budget}; ${r.invariant.secondsAtBudget} s at n - t; ${r.invariant.postponed} postponed, ${r.invariant.skipped} skipped)`,
    `ceremonies completed ${r.ceremoniesCompleted} of ${r.ceremonies.length}: ${r.ceremonies
      .map(
        (c) =>
          `${c.kind} ${c.outcome}${c.seconds === null ? '' : ` ${c.seconds} s`}` +
          (c.submissions > 1 ? ` (${c.submissions} submissions)` : ''),
      )
      .join(', ')}`,
  ];
  for (const [cause, n] of Object.entries(r.failuresByCause))
    lines.push(`  failure: ${n} x ${cause}`);
  lines.push(
    '',
    '| phase | requests | failed | p50 ms | p99 ms |',
    '| --- | ---: | ---: | ---: | ---: |',
  );
  const row = (name: string, p: PhaseStats) =>
    `| ${name} | ${p.requests} | ${p.failed} | ${p.p50ms ?? '-'} | ${p.p99ms ?? '-'} |`;
  lines.push(row('all', r.latency.all));
  for (const [name, p] of Object.entries(r.latency.byPhase)) lines.push(row(name, p));
  return lines;
}
