/**
 * Resharing as a BullMQ job (DESIGN.md section 3, "Resharing" and "Epochs"): one job moves the
 * committee from epoch e (committee C, threshold t) to epoch e+1 (C', t') for every key at once,
 * carrying an operator proposal that every node checks: a committee.reshare (add, remove,
 * threshold, refresh, repair), or a standing committee.refresh run once per period.
 *
 *   begin    every old and new member opens the reshare; old members that are down are
 *            tolerated while enough dealers remain, every new member must answer
 *   dealers  S = the `previous.threshold` lowest-id old members that can deal (hold every key)
 *   deal     chunk by chunk (RESHARE_CHUNK keys), each dealer in S
 *   prepare  chunk by chunk, each receiver its own piece of each dealing; all must agree on
 *            each chunk's digest. A dealer named by a receiver (ERR_RESHARE_DEALER) is excluded
 *            for the rest of the job and the next one dealt in instead (same reshare id: nodes
 *            key the prepared state by the dealer set)
 *   vote     every receiver signs the transcript
 *   decide   `decided` { transcript, votes } goes into the job's data BEFORE the first commit
 *   commit   every receiver (all must confirm), removed old members best effort
 *   switch   the epoch record and every key package of epoch e+1 into Redis, replicas told
 *   finish   after KMAAS_RESHARE_FINISH_DELAY_MS: every node erases its epoch-e shares
 *
 * Until the decision nothing has changed anywhere: a failed attempt sends reshare.abort to every
 * node (best effort) and BullMQ retries with backoff from begin. After it, the new epoch exists
 * on at least the nodes that got the commit: an attempt never aborts then, and a retry (or a
 * coordinator restarted after a crash, through BullMQ's stalled-job check) resumes at commit.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnrecoverableError, type Job, type Queue } from 'bullmq';
import { KmaasError, toKmaasError, type ErrorBody } from '../shared/errors.ts';
import { epochOf, type KeyPackage } from '../shared/key-package.ts';
import { keyPackageReply, parseMessage, RESHARE_CHUNK, statusReply } from '../shared/messages.ts';
import {
  proposalId,
  reshareIdOf,
  type CommitteeMember,
  type Operation,
  type Proposal,
} from '../shared/proposal.ts';
import type { DkgWorkerDeps } from './dkg-job.ts';
import { sameCommittee, type EpochRecord, type EpochStore } from './epoch.ts';
import { agreeOnKeyPackage } from './key-quorum.ts';
import type { Logger } from './logger.ts';
import type { ProposalJobAccepted } from './proposals.ts';
import { checkThreshold, PERMANENT_REFUSALS } from './proposals.ts';
import {
  askAll,
  checkAbort,
  checkBegin,
  checkCommit,
  checkDeal,
  checkFinish,
  checkPrepare,
  checkVote,
  chunked,
  phaseFailed,
  type BeginAnswer,
  type DealAnswer,
  type KeyRef,
  type ReshareProgress,
  type ReshareRelayDeps,
  type Vote,
} from './reshare-relay.ts';

export const RESHARE_JOB = 'committee.reshare';
export const REFRESH_JOB = 'committee.refresh';

/** What the job does, fixed on its first attempt so that every retry does the same. */
export interface ResharePlan {
  reshareId: string;
  /** The new epoch e+1. */
  epoch: number;
  threshold: number;
  committee: CommitteeMember[];
  previous: { epoch: number; threshold: number; committee: CommitteeMember[] };
  /** committee.refresh: the period this refresh belongs to. */
  period?: number;
}

export interface ReshareDecision {
  transcript: string;
  votes: Vote[];
  dealers: number[];
}

export interface ReshareJobData {
  /** committee.reshare, or the standing committee.refresh this run belongs to. */
  proposal: Proposal;
  plan?: ResharePlan;
  /** Dealers a receiver found at fault in this job; never chosen again. */
  excluded?: number[];
  /** Recorded before the first commit is sent: from here on the job never aborts. */
  decided?: ReshareDecision;
  lastError?: ErrorBody;
}

export interface ReshareJobResult {
  epoch: number;
  threshold: number;
  committee: number[];
  keys: number;
  /** The old members whose dealings made the new shares. */
  dealers?: number[];
  /** Dealers a receiver named (ERR_RESHARE_DEALER) and the ceremony went on without. */
  excludedDealers?: number[];
  /**
   * Nodes that missed the commit or the finish (down, or cut off): they get it from the
   * coordinator when they reconnect, or finish on their own timer.
   */
  lagging?: number[];
}

export interface ReshareWorkerDeps extends DkgWorkerDeps {
  epochs: EpochStore;
  /** How long to wait between the switch and finish (KMAAS_RESHARE_FINISH_DELAY_MS). */
  finishDelayMs: number;
  /** Tell every replica to drop its cached key packages. */
  invalidate(): Promise<void>;
  /** ms since the epoch; default Date.now. Tests only. */
  now?: () => number;
}

/** Failures before the decision that no retry can fix. */
const PERMANENT = PERMANENT_REFUSALS;

/** Key packages fetched from the new members at once during the switch. */
const SWITCH_CONCURRENCY = 8;

// --- Submission (POST /v1/proposals) ---

export interface QueueReshareDeps {
  queue: Queue;
  epochs: Pick<EpochStore, 'current'>;
  attempts: number;
  backoffMs: number;
  /** The operators' minThreshold when the coordinator knows it (default 2). */
  minThreshold?: number;
}

function mismatch(message: string, details: Record<string, unknown> = {}): KmaasError {
  return new KmaasError('ERR_PROPOSAL_MISMATCH', `proposal: ${message}`, details);
}

/** The threshold policy of proposals.ts, and the operators' minThreshold. */
export function checkReshareThreshold(n: number, t: number, minThreshold = 2): void {
  checkThreshold(n, t);
  if (t < minThreshold) {
    throw new KmaasError(
      'ERR_BAD_THRESHOLD',
      `threshold ${t} is below the operators' minimum ${minThreshold}`,
      { threshold: t, minThreshold },
    );
  }
}

/** Does `record` describe the epoch `previous` names? */
function isEpoch(record: EpochRecord, previous: ResharePlan['previous']): boolean {
  return (
    record.epoch === previous.epoch &&
    record.threshold === previous.threshold &&
    sameCommittee(record.committee, previous.committee)
  );
}

/**
 * committee.reshare and committee.refresh from POST /v1/proposals: the checks that spare the
 * nodes pointless work (the nodes make them all again), then a job. 202 { jobId, ... }.
 */
export async function queueReshare(
  deps: QueueReshareDeps,
  p: Proposal,
  log: Logger,
): Promise<ProposalJobAccepted> {
  const id = proposalId(p);
  const committee = p.committee ?? [];
  checkReshareThreshold(committee.length, p.threshold!, deps.minThreshold);
  const record = await deps.epochs.current();
  if (p.operation === 'committee.reshare') {
    const previous = p.previous!;
    if (record && !isEpoch(record, previous)) {
      throw mismatch(
        `previous: the committee is in epoch ${record.epoch} (threshold ${record.threshold}, ` +
          `nodes ${record.committee.map((m) => m.node).join(', ')}), not the one named`,
        { field: 'previous', epoch: record.epoch },
      );
    }
  } else if (p.operation === 'committee.refresh') {
    if (
      record &&
      (record.threshold !== p.threshold || !sameCommittee(record.committee, committee))
    ) {
      throw mismatch(
        `committee: a refresh keeps the committee and threshold of epoch ${record.epoch}`,
        {
          field: 'committee',
          epoch: record.epoch,
        },
      );
    }
  } else {
    throw new KmaasError(
      'ERR_PROPOSAL_INVALID',
      `proposal: ${p.operation} is no committee operation`,
      {
        field: 'operation',
      },
    );
  }
  const jobId = randomUUID();
  const data: ReshareJobData = { proposal: p };
  await deps.queue.add(p.operation, data, ceremonyJobOptions(deps, jobId));
  const epoch = p.epoch ?? (record ? record.epoch + 1 : undefined);
  log.info({ operation: p.operation, proposal: id, jobId, epoch }, 'proposal queued');
  return {
    jobId,
    proposal: id,
    operation: p.operation as Operation,
    ...(epoch === undefined ? {} : { epoch }),
  };
}

export function ceremonyJobOptions(deps: { attempts: number; backoffMs: number }, jobId?: string) {
  return {
    ...(jobId === undefined ? {} : { jobId }),
    attempts: deps.attempts,
    backoff: { type: 'exponential', delay: deps.backoffMs },
    removeOnComplete: { age: 7 * 24 * 3600, count: 1000 },
    removeOnFail: { age: 30 * 24 * 3600 },
  };
}

/**
 * The scheduled proactive refresh (KMAAS_REFRESH_PROPOSAL_FILE): a repeatable job every
 * `everySeconds`, each run a refresh of its period. Upserting is idempotent across replicas.
 *
 * When it runs (BullMQ 5 job schedulers with `every`, addJobScheduler.lua): a scheduler new to
 * Redis runs its first iteration at once, then every period after it; upserting one that exists
 * (every coordinator start, every replica) keeps the time of its pending next iteration. So a
 * refresh that is due does not wait a whole period after the proposal is installed, and a
 * restart does not run an extra one; should a second run fall in the same period anyway, its
 * reshare id is the period's (planOf) and the nodes accept one refresh per period. BullMQ's
 * `immediately` is for cron patterns only and must not be set here (it only warns with `every`).
 */
/** The id of the one proactive-refresh scheduler in the ceremony queue. */
export const REFRESH_SCHEDULER = 'refresh';

export async function scheduleRefresh(
  queue: Queue,
  proposal: Proposal,
  deps: { attempts: number; backoffMs: number },
): Promise<void> {
  if (proposal.operation !== 'committee.refresh' || proposal.everySeconds === undefined) {
    throw new KmaasError('ERR_CONFIG', 'KMAAS_REFRESH_PROPOSAL_FILE: not a committee.refresh', {
      setting: 'KMAAS_REFRESH_PROPOSAL_FILE',
    });
  }
  const data: ReshareJobData = { proposal };
  // One scheduler for the cluster, whatever the proposal: a new standing proposal (the old one
  // expired, or the committee changed and the old one no longer matches it) replaces the old
  // schedule instead of running beside it. Every replica must be given the same file.
  await queue.upsertJobScheduler(
    REFRESH_SCHEDULER,
    { every: proposal.everySeconds * 1000 },
    { name: REFRESH_JOB, data, opts: ceremonyJobOptions(deps) },
  );
}

// --- The job ---

/** Progress updates in the order they were made, even when answers arrive at once. */
function progressOf(job: Job, log: Logger): (p: ReshareProgress) => Promise<void> {
  let last = Promise.resolve();
  return (p) => {
    last = last.then(async () => {
      try {
        await job.updateProgress(p);
      } catch (err) {
        // Progress is informative; losing one update must not fail a ceremony.
        log.warn({ err }, 'could not record reshare progress');
      }
    });
    return last;
  };
}

/** The plan of a committee.reshare is its proposal's; a refresh's is the current epoch's. */
async function planOf(deps: ReshareWorkerDeps, data: ReshareJobData): Promise<ResharePlan> {
  const p = data.proposal;
  const id = proposalId(p);
  if (p.operation === 'committee.reshare') {
    return {
      reshareId: reshareIdOf(id),
      epoch: p.epoch!,
      threshold: p.threshold!,
      committee: sortedMembers(p.committee!),
      previous: { ...p.previous!, committee: sortedMembers(p.previous!.committee) },
    };
  }
  if (p.operation !== 'committee.refresh' || p.everySeconds === undefined) {
    throw new KmaasError('ERR_PROPOSAL_INVALID', `proposal: ${p.operation} is no reshare`, {
      field: 'operation',
    });
  }
  const record = await deps.epochs.current();
  if (!record) {
    throw new KmaasError('ERR_NODE_UNAVAILABLE', 'the current epoch is not known yet', {
      reason: 'epoch',
    });
  }
  if (record.threshold !== p.threshold || !sameCommittee(record.committee, p.committee!)) {
    throw mismatch(`committee: the refresh proposal's committee is not epoch ${record.epoch}'s`, {
      epoch: record.epoch,
    });
  }
  // PLAN: period = floor(now / everySeconds); nodes accept it or the previous one.
  const period = Math.floor((deps.now ?? Date.now)() / 1000 / p.everySeconds);
  const committee = sortedMembers(record.committee);
  const reshareId = reshareIdOf(id, period);
  if (record.reshareId === reshareId) {
    // This period's refresh made the current epoch already (scheduled twice, or retried).
    return {
      reshareId,
      epoch: record.epoch,
      threshold: record.threshold,
      committee,
      previous: { epoch: record.epoch - 1, threshold: record.threshold, committee },
      period,
    };
  }
  return {
    reshareId,
    epoch: record.epoch + 1,
    threshold: record.threshold,
    committee,
    previous: { epoch: record.epoch, threshold: record.threshold, committee },
    period,
  };
}

function sortedMembers(c: readonly CommitteeMember[]): CommitteeMember[] {
  return [...c].sort((a, b) => a.node - b.node);
}

function idsOf(c: readonly CommitteeMember[]): number[] {
  return c.map((m) => m.node).sort((a, b) => a - b);
}

function resultOf(
  plan: ResharePlan,
  keys: number,
  who?: { dealers: number[]; excluded: number[]; lagging: number[] },
): ReshareJobResult {
  return {
    epoch: plan.epoch,
    threshold: plan.threshold,
    committee: idsOf(plan.committee),
    keys,
    ...(who ? { dealers: who.dealers, excludedDealers: who.excluded } : {}),
    ...(who && who.lagging.length > 0 ? { lagging: who.lagging } : {}),
  };
}

export async function processReshareJob(
  deps: ReshareWorkerDeps,
  job: Job<ReshareJobData, ReshareJobResult>,
): Promise<ReshareJobResult> {
  const attempt = job.attemptsMade + 1;
  let log = deps.logger.child({ jobId: job.id, operation: job.name, attempt });
  let plan: ResharePlan | undefined = job.data.plan;
  try {
    if (!plan) {
      plan = await planOf(deps, job.data);
      await job.updateData({ ...job.data, plan });
    }
    log = log.child({ reshareId: plan.reshareId, epoch: plan.epoch });
    const relay: ReshareRelayDeps = {
      pool: deps.pool,
      timeoutMs: deps.roundTimeoutMs,
      logger: log,
    };
    if (!job.data.decided) {
      const record = await deps.epochs.current();
      if (record && record.epoch >= plan.epoch) {
        // Done already (a refresh scheduled twice in one period), or overtaken.
        if (record.reshareId === plan.reshareId) {
          log.info('the committee is already in the epoch this reshare makes; nothing to do');
          return resultOf(plan, 0);
        }
        throw mismatch(`epoch: the committee is in epoch ${record.epoch} already`, {
          epoch: record.epoch,
        });
      }
      if (record && !isEpoch(record, plan.previous)) {
        throw mismatch(`previous: the committee is in epoch ${record.epoch}, not the one named`, {
          epoch: record.epoch,
        });
      }
      const decided = await decide(deps, relay, job, plan, log);
      // The decision is on record before any node hears of it: a retry resumes from here.
      await job.updateData({ ...job.data, plan, decided });
    }
    return await complete(deps, relay, job, plan, job.data.decided!, log);
  } catch (err) {
    const e = toKmaasError(err);
    if (!(err instanceof KmaasError)) log.error({ err }, 'reshare attempt failed unexpectedly');
    const decided = job.data.decided !== undefined;
    const permanent = !decided && PERMANENT.has(e.code);
    const final = permanent || attempt >= (job.opts.attempts ?? 1);
    if (!decided && plan) {
      await abortAll({ pool: deps.pool, timeoutMs: deps.roundTimeoutMs, logger: log }, plan);
    }
    log.warn(
      { code: e.code, details: e.details, final, decided },
      `reshare attempt failed: ${e.message}`,
    );
    await job
      .updateData({ ...job.data, lastError: e.toBody() })
      .catch((cause: unknown) => log.error({ err: cause }, 'could not record the reshare error'));
    if (permanent) throw new UnrecoverableError(e.message);
    throw e;
  }
}

/** reshare.abort to every node, best effort: each erases its pending state and seed. */
async function abortAll(relay: ReshareRelayDeps, plan: ResharePlan): Promise<void> {
  const nodes = everyNode(plan);
  const { answers, failures } = await askAll(
    relay,
    'reshare.abort',
    nodes,
    () => ({ reshareId: plan.reshareId }),
    checkAbort,
  );
  relay.logger.info(
    {
      aborted: [...answers].filter(([, a]) => a).map(([n]) => n),
      unreachable: failures.map((f) => f.node),
    },
    'reshare aborted',
  );
}

/** Old and new members, once each, ascending. */
function everyNode(plan: ResharePlan): number[] {
  const ids = new Set([...idsOf(plan.previous.committee), ...idsOf(plan.committee)]);
  return [...ids].sort((a, b) => a - b);
}

/**
 * Every key of the old epoch: what the old members that answer report holding at epoch e,
 * sorted by tenant then version. A key in the registry that no old member holds (retired, its
 * shares erased) cannot be dealt and is left out.
 */
async function keyList(
  deps: ReshareWorkerDeps,
  relay: ReshareRelayDeps,
  plan: ResharePlan,
  log: Logger,
): Promise<KeyRef[]> {
  const { answers } = await askAll(
    relay,
    'status',
    idsOf(plan.previous.committee),
    () => ({}),
    (node, body) => {
      const s = parseMessage(statusReply, body, 'status reply');
      if (s.node !== node)
        throw new KmaasError('ERR_VALIDATION', `node ${node} reports itself as ${s.node}`);
      return s;
    },
  );
  const keys = new Map<string, KeyRef>();
  for (const status of answers.values()) {
    for (const k of status.keys) {
      if ((k.epoch ?? 1) !== plan.previous.epoch) continue;
      keys.set(`${k.tenant}/${k.version}`, { tenant: k.tenant, version: k.version });
    }
  }
  // Retired versions are held by no one, by design; any other registry key that no old member
  // holds is worth a line (its shares are gone, so it cannot be dealt).
  const unheld: string[] = [];
  for (const tenant of await deps.registry.tenantNames()) {
    const retired = new Set(await deps.registry.retiredVersions(tenant));
    for (const pkg of await deps.registry.readTenant(tenant)) {
      const name = `${pkg.tenant}/${pkg.version}`;
      if (!keys.has(name) && !retired.has(pkg.version)) unheld.push(name);
    }
  }
  if (unheld.length > 0) {
    log.warn({ unheld }, 'registry keys that no old member holds are not reshared');
  }
  return [...keys.values()].sort((a, b) =>
    a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : a.version - b.version,
  );
}

/** begin .. vote: returns what every receiver voted for. Changes nothing for good. */
async function decide(
  deps: ReshareWorkerDeps,
  relay: ReshareRelayDeps,
  job: Job<ReshareJobData, ReshareJobResult>,
  plan: ResharePlan,
  log: Logger,
): Promise<ReshareDecision> {
  const progress = progressOf(job, log);
  const receivers = idsOf(plan.committee);
  const olds = idsOf(plan.previous.committee);
  const nodes = everyNode(plan);
  const keys = await keyList(deps, relay, plan, log);

  // begin: every old and new member opens the reshare.
  let begun = 0;
  await progress({ phase: 'begin', done: 0, total: nodes.length });
  const begin = await askAll(
    relay,
    'reshare.begin',
    nodes,
    () => ({
      reshareId: plan.reshareId,
      proposal: job.data.proposal,
      ...(plan.period === undefined ? {} : { period: plan.period }),
      keys,
    }),
    checkBegin,
    () => void progress({ phase: 'begin', done: ++begun, total: nodes.length }),
  );
  const missing = begin.failures.filter((f) => receivers.includes(f.node));
  if (missing.length > 0) throw phaseFailed('begin', missing);
  const notReceiving = receivers.filter((n) => !begin.answers.get(n)!.receiver);
  if (notReceiving.length > 0) {
    throw mismatch(`committee: node(s) ${notReceiving.join(', ')} do not see themselves in it`, {
      nodes: notReceiving,
    });
  }
  const candidates = olds.filter((n) => {
    const a: BeginAnswer | undefined = begin.answers.get(n);
    return a?.dealer === true && a.epoch === plan.previous.epoch;
  });
  log.info(
    {
      keys: keys.length,
      begun: [...begin.answers.keys()].sort((a, b) => a - b),
      down: begin.failures.map((f) => f.node),
      candidates,
    },
    'reshare begun',
  );

  // deal + prepare, with another dealer in place of each one a receiver finds at fault.
  for (;;) {
    const excluded = new Set(job.data.excluded ?? []);
    const dealers = candidates.filter((n) => !excluded.has(n)).slice(0, plan.previous.threshold);
    if (dealers.length < plan.previous.threshold) {
      throw new KmaasError(
        'ERR_NODE_UNAVAILABLE',
        `reshare: ${dealers.length} old member(s) can deal, ${plan.previous.threshold} needed`,
        { reason: 'dealers', candidates, excluded: [...excluded] },
      );
    }
    try {
      const digests = await dealAndPrepare(deps, relay, job, plan, keys, dealers, log);
      return await vote(relay, job, plan, dealers, digests.length, log);
    } catch (err) {
      const e = toKmaasError(err);
      const culprits = Array.isArray(e.details?.culprits)
        ? (e.details.culprits as unknown[]).filter(
            (c): c is number => typeof c === 'number' && dealers.includes(c) && !excluded.has(c),
          )
        : [];
      if (e.code !== 'ERR_RESHARE_DEALER' || culprits.length === 0) throw err;
      const next = [...excluded, ...culprits].sort((a, b) => a - b);
      log.warn({ culprits, excluded: next, dealers }, 'reshare dealer(s) excluded; dealing again');
      await job.updateData({ ...job.data, excluded: next });
    }
  }
}

async function dealAndPrepare(
  deps: ReshareWorkerDeps,
  relay: ReshareRelayDeps,
  job: Job<ReshareJobData, ReshareJobResult>,
  plan: ResharePlan,
  keys: readonly KeyRef[],
  dealers: number[],
  log: Logger,
): Promise<string[]> {
  const progress = progressOf(job, log);
  const receivers = idsOf(plan.committee);
  const chunks = chunked(keys, RESHARE_CHUNK);
  const { reshareId } = plan;

  // deal: chunk by chunk, every dealer at once. Dealings are public; pieces are sealed.
  const dealt: Map<number, DealAnswer>[] = [];
  await progress({ phase: 'deal', done: 0, total: chunks.length });
  for (const [chunk, chunkKeys] of chunks.entries()) {
    const { answers, failures } = await askAll(
      relay,
      'reshare.deal',
      dealers,
      () => ({ reshareId, dealers, chunk, keys: chunkKeys }),
      (dealer, body) =>
        checkDeal(dealer, body, { chunk, keys: chunkKeys, threshold: plan.threshold, receivers }),
    );
    if (failures.length > 0) throw phaseFailed('deal', failures);
    dealt.push(answers);
    await progress({ phase: 'deal', done: chunk + 1, total: chunks.length });
  }
  log.info({ dealers, chunks: chunks.length, keys: keys.length }, 'reshare dealt');

  // prepare: each receiver gets the old packages and its own piece of every dealing.
  const digests: string[] = [];
  await progress({ phase: 'prepare', done: 0, total: chunks.length });
  for (const [chunk, chunkKeys] of chunks.entries()) {
    const oldPackages = await Promise.all(
      chunkKeys.map((k) => oldPackage(deps, k, plan.previous.epoch)),
    );
    const dealings = dealers.map((d) => dealt[chunk]!.get(d)!);
    const { answers, failures } = await askAll(
      relay,
      'reshare.prepare',
      receivers,
      (node) => ({
        reshareId,
        dealers,
        chunk,
        keys: chunkKeys,
        oldPackages,
        dealings: dealings.map((d) => ({
          dealer: d.dealer,
          dealing: d.dealing,
          piece: d.pieces.find((p) => p.to === node)!,
          signature: d.signature,
        })),
      }),
      (node, body) => checkPrepare(node, chunk, body),
    );
    if (failures.length > 0) throw phaseFailed('prepare', failures);
    const groups = groupBy(answers);
    if (groups.length !== 1) {
      throw new KmaasError(
        'ERR_RESHARE_VOTE',
        `reshare prepare: receivers disagree on chunk ${chunk}: ` +
          groups.map((g) => `nodes ${g.nodes.join(', ')}`).join(' vs '),
        { phase: 'prepare', chunk, groups: groups.map((g) => g.nodes) },
      );
    }
    digests.push(groups[0]!.value);
    await progress({ phase: 'prepare', done: chunk + 1, total: chunks.length });
  }
  log.info({ receivers, chunks: chunks.length }, 'reshare prepared');
  return digests;
}

/** The epoch-e package of `k`, as the receivers check the dealings against it. */
async function oldPackage(deps: ReshareWorkerDeps, k: KeyRef, epoch: number): Promise<KeyPackage> {
  const pkg = await deps.registry.keyPackage(k.tenant, k.version);
  if (epochOf(pkg) !== epoch) {
    throw new KmaasError(
      'ERR_RESHARE_STATE',
      `the registry holds ${k.tenant} v${k.version} at epoch ${epochOf(pkg)}, not ${epoch}`,
      { tenant: k.tenant, version: k.version },
    );
  }
  return pkg;
}

function groupBy(answers: Map<number, string>): { value: string; nodes: number[] }[] {
  const groups = new Map<string, number[]>();
  for (const [node, value] of answers) groups.set(value, [...(groups.get(value) ?? []), node]);
  return [...groups].map(([value, nodes]) => ({ value, nodes: nodes.sort((a, b) => a - b) }));
}

async function vote(
  relay: ReshareRelayDeps,
  job: Job<ReshareJobData, ReshareJobResult>,
  plan: ResharePlan,
  dealers: number[],
  chunks: number,
  log: Logger,
): Promise<ReshareDecision> {
  const progress = progressOf(job, log);
  const members = new Map(plan.committee.map((m) => [m.node, m]));
  const receivers = idsOf(plan.committee);
  let done = 0;
  await progress({ phase: 'vote', done, total: receivers.length });
  const { answers, failures } = await askAll(
    relay,
    'reshare.vote',
    receivers,
    () => ({ reshareId: plan.reshareId, dealers, chunks }),
    (node, body) => checkVote(members.get(node)!, body),
    () => void progress({ phase: 'vote', done: ++done, total: receivers.length }),
  );
  if (failures.length > 0) throw phaseFailed('vote', failures);
  const groups = groupBy(new Map([...answers].map(([n, v]) => [n, v.transcript])));
  if (groups.length !== 1) {
    throw new KmaasError(
      'ERR_RESHARE_VOTE',
      'reshare vote: receivers signed different transcripts: ' +
        groups.map((g) => `nodes ${g.nodes.join(', ')}`).join(' vs '),
      { phase: 'vote', groups: groups.map((g) => g.nodes) },
    );
  }
  const votes = receivers.map((node) => ({ node, signature: answers.get(node)!.signature }));
  log.info({ dealers, votes: votes.length }, 'reshare voted; decided');
  return { transcript: groups[0]!.value, votes, dealers };
}

/** commit, switch, finish: repeatable as often as it takes. */
async function complete(
  deps: ReshareWorkerDeps,
  relay: ReshareRelayDeps,
  job: Job<ReshareJobData, ReshareJobResult>,
  plan: ResharePlan,
  decided: ReshareDecision,
  log: Logger,
): Promise<ReshareJobResult> {
  const progress = progressOf(job, log);
  const receivers = idsOf(plan.committee);
  const nodes = everyNode(plan);

  // commit: t' receivers must confirm; any node that misses it catches up later.
  let committed = 0;
  await progress({ phase: 'commit', done: 0, total: nodes.length });
  const commit = await askAll(
    relay,
    'reshare.commit',
    nodes,
    () => ({ reshareId: plan.reshareId, transcript: decided.transcript, votes: decided.votes }),
    (node, body) => {
      const reply = checkCommit(node, body);
      if (reply.epoch !== plan.epoch) {
        throw new KmaasError('ERR_RESHARE_STATE', `node ${node} committed epoch ${reply.epoch}`, {
          node,
        });
      }
      return reply;
    },
    () => void progress({ phase: 'commit', done: ++committed, total: nodes.length }),
  );
  // The decision is final and every receiver persisted its new shares before it voted: once t'
  // receivers have committed, the new epoch can serve, so the switch must not wait for one that
  // is down (the old epoch's shares are erased on a timer; waiting could outlive them). A
  // receiver that missed the commit gets it when it reconnects (reshare-catchup.ts).
  const uncommitted = commit.failures.filter((f) => receivers.includes(f.node));
  const committedReceivers = receivers.length - uncommitted.length;
  if (committedReceivers < plan.threshold) throw phaseFailed('commit', uncommitted);
  log.info(
    {
      committed: [...commit.answers.keys()].sort((a, b) => a - b),
      missed: commit.failures.map((f) => f.node),
    },
    'reshare committed',
  );

  // switch: the new packages into the registry, then the epoch record, then the replicas.
  const keys = await switchPackages(deps, relay, plan, progress, log);
  await deps.epochs.write({
    epoch: plan.epoch,
    threshold: plan.threshold,
    committee: plan.committee,
    reshareId: plan.reshareId,
    transcript: decided.transcript,
    votes: decided.votes,
    // A removed node that missed the whole reshare needs it to check the votes (catch-up).
    ...(job.data.proposal.operation === 'committee.reshare' ? { proposal: job.data.proposal } : {}),
  });
  await deps.invalidate();
  log.info({ keys, threshold: plan.threshold, members: receivers.length }, 'reshare switched');

  // finish: old shares stay until evaluations routed just before the switch have completed.
  if (deps.finishDelayMs > 0) await sleep(deps.finishDelayMs);
  let finished = 0;
  await progress({ phase: 'finish', done: 0, total: nodes.length });
  const finish = await askAll(
    relay,
    'reshare.finish',
    nodes,
    () => ({ reshareId: plan.reshareId }),
    checkFinish,
    () => void progress({ phase: 'finish', done: ++finished, total: nodes.length }),
  );
  // The per-answer updates are not awaited: write the final count once more, awaited, so the job
  // never completes showing fewer nodes done than answered (Redis keeps one connection's order).
  await progress({ phase: 'finish', done: finished, total: nodes.length });
  // Best effort: a node finishes by itself KMAAS_RESHARE_FINISH_AFTER_MS after its commit.
  log.info(
    {
      erased: Object.fromEntries(finish.answers),
      unfinished: finish.failures.map((f) => f.node),
    },
    'reshare finished',
  );
  const lagging = [...new Set([...commit.failures, ...finish.failures].map((f) => f.node))].sort(
    (a, b) => a - b,
  );
  return resultOf(plan, keys, {
    dealers: decided.dealers,
    excluded: job.data.excluded ?? [],
    lagging,
  });
}

/**
 * Every key the new members hold at the new epoch: its package, as at least t' of them return
 * it identically, replaces the epoch-e package in the registry (same group key, later epoch).
 */
async function switchPackages(
  deps: ReshareWorkerDeps,
  relay: ReshareRelayDeps,
  plan: ResharePlan,
  progress: (p: ReshareProgress) => Promise<void>,
  log: Logger,
): Promise<number> {
  const receivers = idsOf(plan.committee);
  const { answers } = await askAll(
    relay,
    'status',
    receivers,
    () => ({}),
    (node, body) => {
      const s = parseMessage(statusReply, body, 'status reply');
      if (s.node !== node) throw new KmaasError('ERR_VALIDATION', `node ${node} is ${s.node}`);
      return s;
    },
  );
  const keys = new Map<string, KeyRef>();
  for (const status of answers.values()) {
    for (const k of status.keys) {
      if ((k.epoch ?? 1) === plan.epoch) keys.set(`${k.tenant}/${k.version}`, k);
    }
  }
  const list = [...keys.values()];
  const committee = new Set(receivers);
  let done = 0;
  await progress({ phase: 'switch', done, total: list.length });
  for (const batch of chunked(list, SWITCH_CONCURRENCY)) {
    await Promise.all(
      batch.map(async ({ tenant, version }) => {
        const got = await askAll(
          relay,
          'keyPackage',
          receivers,
          () => ({ tenant, version }),
          (node, body) => ({
            node,
            keyPackage: parseMessage(keyPackageReply, body, 'keyPackage reply').keyPackage,
          }),
        );
        const fresh = [...got.answers.values()].filter((a) => epochOf(a.keyPackage) === plan.epoch);
        const agreed = agreeOnKeyPackage(fresh, {
          tenant,
          version,
          committee,
          atLeast: plan.threshold,
        });
        if (!agreed.ok) {
          throw new KmaasError(
            'ERR_RESHARE_STATE',
            `no epoch-${plan.epoch} package of ${tenant} v${version} agreed: ${agreed.reason}`,
            { tenant, version },
          );
        }
        await deps.registry.store(agreed.keyPackage);
        await progress({ phase: 'switch', done: ++done, total: list.length });
      }),
    );
  }
  log.debug({ keys: list.length }, 'key packages of the new epoch stored');
  return list.length;
}

// --- GET /v1/jobs/:id ---

export interface ReshareJobView {
  id: string;
  operation: string;
  proposal: string;
  epoch?: number;
  state: string;
  attemptsMade: number;
  progress: ReshareProgress;
  result?: ReshareJobResult;
  error?: ErrorBody;
}

export function describeReshareJob(
  job: Job<ReshareJobData, ReshareJobResult>,
  id: string,
  state: string,
): ReshareJobView {
  const { proposal, plan } = job.data;
  const epoch = plan?.epoch ?? proposal.epoch;
  const p = job.progress as Partial<ReshareProgress> | undefined;
  const progress: ReshareProgress =
    p && typeof p.phase === 'string' && typeof p.done === 'number' && typeof p.total === 'number'
      ? { phase: p.phase, done: p.done, total: p.total }
      : { phase: 'begin', done: 0, total: 0 };
  const view: ReshareJobView = {
    id,
    operation: job.name,
    proposal: proposalId(proposal),
    ...(epoch === undefined ? {} : { epoch }),
    state,
    attemptsMade: job.attemptsMade,
    progress,
  };
  if (state === 'completed' && job.returnvalue) view.result = job.returnvalue;
  if (state !== 'completed' && job.data.lastError) view.error = job.data.lastError;
  else if (state === 'failed') view.error = { code: 'ERR_INTERNAL', message: job.failedReason };
  return view;
}
