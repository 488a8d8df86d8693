/**
 * Key generation (tenant.create, key.rotate) as a BullMQ job, carrying the operators' signed
 * proposal (proposals.ts) that every node checks before it takes part: the cold path, where
 * correctness and recoverability come first (DESIGN.md section 7). One job runs one DKG (dkg-relay.ts) among every configured node,
 * reports progress { phase, done, total } as nodes answer, stores the agreed key package in the
 * registry and returns { tenant, version, groupKey }. A failed attempt is retried with
 * exponential backoff under the same ceremony id, which nodes resume idempotently (the same
 * round-1 broadcast, the same round-2 packages, and the stored key package in round 3 once a node
 * has finished): so a node that crashed before round 3 finishes it in the retry, from its
 * persisted round-2 state.
 *
 * A ceremony is complete only when EVERY participant holds the identical key package: it returned
 * it in round 3, in this attempt or an earlier one (the job remembers who returned what, in
 * `holders`), or confirms holding it when asked with `keyPackage`. A package in Redis proves
 * nothing by itself (a registry rebuild restores one that only t nodes hold). Until every
 * participant holds it the attempt fails and is retried; the last attempt fails with
 * ERR_DKG_FAILED naming the nodes that do not hold it (details.missing). Once all do, the package
 * is stored and every participant is sent dkg.commit, which lets it erase the ceremony state.
 *
 * The round-2 packages, which carry each node's secret polynomial evaluated at the others, pass
 * through here sealed node to node (X25519 + HKDF + AES-256-GCM to the recipient's identity key,
 * Ed25519-signed by the sender; nodes/round2-envelope.ts): the coordinator relays ciphertext and
 * public commitments only. The committee's identity keys are the proposal's, which the operators
 * signed; each node refuses a round 1 whose committee differs from its proposal's.
 */
import { createHash } from 'node:crypto';
import { UnrecoverableError, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { KmaasError, toKmaasError, type ErrorBody } from '../shared/errors.ts';
import { keyPackageSchema, type KeyPackage } from '../shared/key-package.ts';
import {
  checkHeldKeyPackage,
  commitDkg,
  relayDkg,
  type DkgParams,
  type DkgProgress,
} from './dkg-relay.ts';
import { canonicalKeyPackage } from './key-quorum.ts';
import type { Logger } from './logger.ts';
import type { NodePool } from './node-pool.ts';
import type { RedisKeys } from './redis-keys.ts';
import type { CeremonyQueue } from './ceremony-queue.ts';
import type { EpochStore } from './epoch.ts';
import { describeReshareJob, type ReshareJobData, type ReshareJobView } from './reshare-job.ts';
import type { Registry } from './registry.ts';
import { checkThreshold, PERMANENT_REFUSALS } from './proposals.ts';
import { proposalId, type Proposal } from '../shared/proposal.ts';
import { releaseCreateLock } from './tenant-lock.ts';

export interface DkgJobData {
  tenant: string;
  version: number;
  threshold: number;
  participants: number[];
  /** The operator proposal: sent with dkg.round1, checked by every node. */
  proposal: Proposal;
  /** The last attempt's error, kept so that GET /v1/jobs/:id can show its code and details. */
  lastError?: ErrorBody;
  /**
   * Which participants returned (round 3) or confirmed (`keyPackage`) which key package, over
   * every attempt so far. Public data only.
   */
  holders?: HeldKeyPackage[];
}

export interface HeldKeyPackage {
  keyPackage: KeyPackage;
  nodes: number[];
}

export interface DkgJobResult {
  tenant: string;
  version: number;
  groupKey: string;
}

/** The ceremony queue (ceremony-queue.ts), which DKG jobs share with reshare jobs. */
export type DkgQueue = CeremonyQueue;

/** Failures that no retry can fix. */
const PERMANENT = new Set([...PERMANENT_REFUSALS, 'ERR_TENANT_EXISTS', 'ERR_UNKNOWN_TENANT']);

export interface DkgWorkerDeps {
  /** A connection of the worker's own, with maxRetriesPerRequest: null as BullMQ requires. */
  connection: Redis;
  redis: Redis;
  keys: RedisKeys;
  pool: NodePool;
  registry: Registry;
  roundTimeoutMs: number;
  logger: Logger;
  /** The epoch record: the first DKG of a cluster without one makes epoch 1 of its committee. */
  epochs?: EpochStore;
}

/** Who holds which key package of the job's (tenant, version), as far as the job knows. */
export class KeyHolders {
  readonly #groups = new Map<string, { keyPackage: KeyPackage; nodes: Set<number> }>();

  constructor(known: readonly HeldKeyPackage[] = []) {
    for (const entry of known) {
      // Written by an earlier attempt; anything else in its place is ignored.
      const pkg = keyPackageSchema.safeParse(entry?.keyPackage);
      if (!pkg.success || !Array.isArray(entry.nodes)) continue;
      for (const node of entry.nodes) if (Number.isInteger(node)) this.add(node, pkg.data);
    }
  }

  add(node: number, keyPackage: KeyPackage): void {
    const key = canonicalKeyPackage(keyPackage);
    const group = this.#groups.get(key) ?? { keyPackage, nodes: new Set<number>() };
    group.nodes.add(node);
    this.#groups.set(key, group);
  }

  /** Is `node` known to hold some package? */
  has(node: number): boolean {
    return [...this.#groups.values()].some((g) => g.nodes.has(node));
  }

  get empty(): boolean {
    return this.#groups.size === 0;
  }

  /** The package that every one of `participants` holds, if there is one. */
  heldByAll(participants: readonly number[]): KeyPackage | null {
    for (const g of this.#groups.values()) {
      if (participants.every((p) => g.nodes.has(p))) return g.keyPackage;
    }
    return null;
  }

  /**
   * The package most participants hold, who holds it and who does not; null when no participant
   * is known to hold any.
   */
  coverage(
    participants: readonly number[],
  ): { keyPackage: KeyPackage; holders: number[]; missing: number[] } | null {
    let best: { keyPackage: KeyPackage; holders: number[] } | null = null;
    for (const g of this.#groups.values()) {
      const holders = participants.filter((p) => g.nodes.has(p));
      if (holders.length > 0 && holders.length > (best?.holders.length ?? 0)) {
        best = { keyPackage: g.keyPackage, holders };
      }
    }
    if (!best) return null;
    return { ...best, missing: participants.filter((p) => !best.holders.includes(p)) };
  }

  toJSON(): HeldKeyPackage[] {
    return [...this.#groups.values()].map((g) => ({
      keyPackage: g.keyPackage,
      nodes: [...g.nodes].sort((a, b) => a - b),
    }));
  }
}

function ceremonyParams(job: Job<DkgJobData, DkgJobResult>): DkgParams {
  const { tenant, version, threshold, proposal } = job.data;
  const participants = [...job.data.participants].sort((a, b) => a - b);
  return { ceremonyId: ceremonyIdOf(job.id!), tenant, version, threshold, participants, proposal };
}

export async function processDkgJob(
  deps: DkgWorkerDeps,
  job: Job<DkgJobData, DkgJobResult>,
): Promise<DkgJobResult> {
  const { tenant, version } = job.data;
  const attempt = job.attemptsMade + 1;
  const log = deps.logger.child({ jobId: job.id, tenant, version, attempt });
  const holders = new KeyHolders(job.data.holders);
  try {
    const pkg = await runCeremony(deps, job, holders, log);
    await releaseCreateLock(deps.redis, deps.keys, tenant, job.id!);
    return { tenant, version, groupKey: pkg.groupKey };
  } catch (err) {
    let e = toKmaasError(err);
    if (!(err instanceof KmaasError)) log.error({ err }, 'DKG attempt failed unexpectedly');
    const permanent = PERMANENT.has(e.code);
    const final = permanent || attempt >= (job.opts.attempts ?? 1);
    const params = ceremonyParams(job);
    // The last word names whoever lacks the key: ask those not yet known to hold it.
    if (final && e.code !== 'ERR_BAD_THRESHOLD') await askHolders(deps, params, holders, log);
    e = withMissing(e, holders, params.participants, final);
    log.warn({ code: e.code, details: e.details, final }, `DKG attempt failed: ${e.message}`);
    // Bookkeeping must not replace the ceremony's own error with one of its own.
    await job
      .updateData({ ...job.data, holders: holders.toJSON(), lastError: e.toBody() })
      .catch((cause: unknown) => log.error({ err: cause }, 'could not record the DKG error'));
    if (final) {
      await releaseCreateLock(deps.redis, deps.keys, tenant, job.id!).catch((cause: unknown) =>
        log.error({ err: cause }, 'could not release the creation lock; it will expire'),
      );
    }
    if (permanent) throw new UnrecoverableError(e.message);
    throw e;
  }
}

/**
 * When some participants hold the key and others do not, the failure says so: ERR_DKG_FAILED
 * with details.missing (and details.holders), keeping what the original error said.
 */
function withMissing(
  e: KmaasError,
  holders: KeyHolders,
  participants: readonly number[],
  final: boolean,
): KmaasError {
  const coverage = holders.coverage(participants);
  if (!coverage || coverage.missing.length === 0) return e;
  const { missing } = coverage;
  const message =
    `${e.message}; node(s) ${missing.join(', ')} do not hold the key that ` +
    `node(s) ${coverage.holders.join(', ')} hold` +
    (final ? '' : ' (retrying)');
  return new KmaasError('ERR_DKG_FAILED', message, {
    ...e.details,
    missing,
    holders: coverage.holders,
    groupKey: coverage.keyPackage.groupKey,
    ...(e.code === 'ERR_DKG_FAILED' ? {} : { cause: { code: e.code, message: e.message } }),
  });
}

/**
 * Ask every participant not yet known to hold a key package whether it holds one (`keyPackage`),
 * and record the well-formed answers. Never throws: a node that cannot say is simply not a holder.
 */
async function askHolders(
  deps: DkgWorkerDeps,
  params: DkgParams,
  holders: KeyHolders,
  log: Logger,
): Promise<void> {
  const { tenant, version } = params;
  await Promise.all(
    params.participants
      .filter((node) => !holders.has(node))
      .map(async (node) => {
        try {
          const link = deps.pool.get(node);
          if (!link) return;
          const body = await link.request('keyPackage', { tenant, version }, deps.roundTimeoutMs);
          holders.add(node, checkHeldKeyPackage(params, node, body));
        } catch (err) {
          const e = toKmaasError(err);
          log.debug({ node, code: e.code }, 'node does not confirm holding the key package');
        }
      }),
  );
}

async function runCeremony(
  deps: DkgWorkerDeps,
  job: Job<DkgJobData, DkgJobResult>,
  holders: KeyHolders,
  log: Logger,
): Promise<KeyPackage> {
  const params = ceremonyParams(job);
  const { ceremonyId, tenant, version, threshold, participants } = params;
  const progress = async (p: DkgProgress): Promise<void> => {
    try {
      await job.updateProgress(p);
    } catch (err) {
      // Progress is informative; losing one update must not fail a ceremony.
      log.warn({ err }, 'could not record DKG progress');
    }
  };
  checkThreshold(participants.length, threshold);

  // An earlier attempt may have finished, on some nodes or on all of them, and the package may
  // be in Redis (stored by that attempt, or restored by a registry rebuild from t nodes). It is
  // done only when every participant holds it; otherwise the ceremony is replayed below.
  const stored = await deps.registry.readKeyPackage(tenant, version);
  if (stored || !holders.empty || job.attemptsMade > 0) {
    await askHolders(deps, params, holders, log);
    const held = holders.heldByAll(participants);
    if (held) {
      log.info({ ceremonyId }, 'every participant holds the key package; nothing to generate');
      return finish(deps, params, held, progress, log);
    }
    const coverage = holders.coverage(participants);
    if (stored || coverage) {
      log.info(
        { ceremonyId, inRegistry: stored !== null, holders: coverage?.holders ?? [] },
        'not every participant holds the key package: replaying the ceremony',
      );
    }
  }

  log.info({ ceremonyId, threshold, participants }, 'DKG started');
  const pkg = await relayDkg(
    {
      pool: deps.pool,
      timeoutMs: deps.roundTimeoutMs,
      logger: log,
      progress,
      onKeyPackage: (node, keyPackage) => holders.add(node, keyPackage),
    },
    params,
  );
  // relayDkg returns only when every participant returned this very package in round 3.
  if (holders.heldByAll(participants) === null) {
    throw new KmaasError('ERR_INTERNAL', 'DKG relay returned a package not every node holds');
  }
  return finish(deps, params, pkg, progress, log);
}

/** Every participant holds `pkg`: store it, then let the nodes erase the ceremony state. */
async function finish(
  deps: DkgWorkerDeps,
  params: DkgParams,
  pkg: KeyPackage,
  progress: (p: DkgProgress) => Promise<void>,
  log: Logger,
): Promise<KeyPackage> {
  await progress({ phase: 'store', done: 0, total: 1 });
  // ERR_CEREMONY_CONFLICT when Redis already holds a different package.
  await deps.registry.store(pkg);
  const uncommitted = await commitDkg(
    { pool: deps.pool, timeoutMs: deps.roundTimeoutMs, logger: log },
    params,
  );
  if (deps.epochs && (await deps.epochs.read()) === null) {
    // As each node does (PLAN: a node with no epoch adopts the first DKG's committee).
    await deps.epochs.write({
      epoch: params.proposal.epoch ?? 1,
      threshold: params.threshold,
      committee: [...(params.proposal.committee ?? [])].sort((a, b) => a.node - b.node),
    });
  }
  await progress({ phase: 'store', done: 1, total: 1 });
  log.info(
    { ceremonyId: params.ceremonyId, groupKey: pkg.groupKey, uncommitted },
    'DKG complete; key package stored',
  );
  return pkg;
}

/** One ceremony per job, the same for every attempt, in the form shared/messages.ts accepts. */
export function ceremonyIdOf(jobId: string): string {
  return `c${createHash('sha256').update(jobId).digest('base64url').slice(0, 31)}`;
}

export interface JobView {
  id: string;
  /** tenant.create or key.rotate. */
  operation: string;
  /** The id of the proposal the job carries out. */
  proposal?: string;
  tenant: string;
  version: number;
  state: string;
  attemptsMade: number;
  progress: DkgProgress;
  result?: DkgJobResult;
  error?: ErrorBody;
}

const JOB_ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * What GET /v1/jobs/:id shows, for DKG and reshare jobs alike. ERR_UNKNOWN_JOB when there is no
 * such job (or it was removed).
 */
export async function describeJob(queue: DkgQueue, id: string): Promise<JobView | ReshareJobView> {
  let job = JOB_ID.test(id) ? await queue.getJob(id) : undefined;
  if (!job) throw new KmaasError('ERR_UNKNOWN_JOB', `no job ${id.slice(0, 128)}`);
  const state = await job.getState();
  // The job may have finished between reading it and reading its state: read it again, so that
  // a completed job always shows its result.
  if ((state === 'completed' || state === 'failed') && !job.finishedOn) {
    job = (await queue.getJob(id)) ?? job;
  }
  if (job.name === 'committee.reshare' || job.name === 'committee.refresh') {
    return describeReshareJob(job as Job<ReshareJobData, never>, id, state);
  }
  const dkg = job as Job<DkgJobData, DkgJobResult>;
  const view: JobView = {
    id,
    operation: job.name,
    ...(dkg.data.proposal ? { proposal: proposalId(dkg.data.proposal) } : {}),
    tenant: dkg.data.tenant,
    version: dkg.data.version,
    state,
    attemptsMade: dkg.attemptsMade,
    progress: isProgress(dkg.progress)
      ? dkg.progress
      : { phase: 'round1', done: 0, total: dkg.data.participants.length },
  };
  if (state === 'completed' && dkg.returnvalue) view.result = dkg.returnvalue;
  // While retrying, the last error says why; once failed, it is the final word.
  if (state !== 'completed' && dkg.data.lastError) view.error = dkg.data.lastError;
  else if (state === 'failed') view.error = { code: 'ERR_INTERNAL', message: dkg.failedReason };
  return view;
}

function isProgress(p: unknown): p is DkgProgress {
  if (typeof p !== 'object' || p === null) return false;
  const { phase, done, total } = p as Record<string, unknown>;
  return typeof phase === 'string' && typeof done === 'number' && typeof total === 'number';
}
