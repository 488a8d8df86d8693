/**
 * Tenant creation as a BullMQ job: the cold path, where correctness and recoverability come
 * first (DESIGN.md section 7). One job runs one DKG (dkg-relay.ts) among every configured node,
 * reports progress { phase, done, total } as nodes answer, stores the agreed key package in the
 * registry and returns { tenant, version, groupKey }. A failed attempt is retried with
 * exponential backoff under the same ceremony id, which nodes resume idempotently (the same
 * round-1 broadcast, the same round-2 packages); before that, an attempt checks whether an
 * earlier one already finished (the package is in Redis, or every node holds it). Once some node
 * has stored the key, no retry can run the ceremony again: ERR_CEREMONY_CONFLICT is final.
 *
 * SECURITY SHORTCOMING (until the next issue): the round-2 packages carry each node's secret
 * polynomial evaluated at the others, and they pass through the coordinator in the clear. A
 * coordinator that keeps them can reconstruct every share, and so the key. DESIGN.md section 3
 * requires them encrypted node to node (X25519 + HKDF + AEAD) and signed (Ed25519), so that the
 * coordinator sees only ciphertext. They are held in memory for the length of one ceremony
 * only, never logged, never written to Redis or to the job.
 */
import { createHash } from 'node:crypto';
import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { KmaasError, toKmaasError, type ErrorBody } from '../shared/errors.ts';
import type { KeyPackage } from '../shared/key-package.ts';
import { relayDkg, type DkgProgress } from './dkg-relay.ts';
import type { Logger } from './logger.ts';
import type { NodePool } from './node-pool.ts';
import { DKG_QUEUE_NAME, type RedisKeys } from './redis-keys.ts';
import type { Registry } from './registry.ts';
import { checkThreshold } from './tenant-create.ts';
import { releaseCreateLock } from './tenant-lock.ts';

export interface DkgJobData {
  tenant: string;
  version: number;
  threshold: number;
  participants: number[];
  /** The last attempt's error, kept so that GET /v1/jobs/:id can show its code and details. */
  lastError?: ErrorBody;
}

export interface DkgJobResult {
  tenant: string;
  version: number;
  groupKey: string;
}

export type DkgQueue = Queue<DkgJobData, DkgJobResult>;

/** Failures that no retry can fix. */
const PERMANENT = new Set(['ERR_BAD_THRESHOLD', 'ERR_CEREMONY_CONFLICT']);

export function createDkgQueue(connection: Redis, keys: RedisKeys): DkgQueue {
  return new Queue<DkgJobData, DkgJobResult>(DKG_QUEUE_NAME, {
    connection,
    prefix: keys.bullPrefix,
  });
}

export interface DkgWorkerDeps {
  /** A connection of the worker's own, with maxRetriesPerRequest: null as BullMQ requires. */
  connection: Redis;
  redis: Redis;
  keys: RedisKeys;
  pool: NodePool;
  registry: Registry;
  roundTimeoutMs: number;
  logger: Logger;
}

export function createDkgWorker(deps: DkgWorkerDeps): Worker<DkgJobData, DkgJobResult> {
  const worker = new Worker<DkgJobData, DkgJobResult>(
    DKG_QUEUE_NAME,
    (job) => processDkgJob(deps, job),
    // Ceremonies are rare and each one occupies every node: one at a time per replica.
    { connection: deps.connection, prefix: deps.keys.bullPrefix, concurrency: 1 },
  );
  worker.on('error', (err) => deps.logger.error({ err }, 'DKG worker error'));
  return worker;
}

export async function processDkgJob(
  deps: DkgWorkerDeps,
  job: Job<DkgJobData, DkgJobResult>,
): Promise<DkgJobResult> {
  const { tenant, version } = job.data;
  const attempt = job.attemptsMade + 1;
  const log = deps.logger.child({ jobId: job.id, tenant, version, attempt });
  try {
    const pkg = await runCeremony(deps, job, log);
    await releaseCreateLock(deps.redis, deps.keys, tenant, job.id!);
    return { tenant, version, groupKey: pkg.groupKey };
  } catch (err) {
    const e = toKmaasError(err);
    if (!(err instanceof KmaasError)) log.error({ err }, 'DKG attempt failed unexpectedly');
    const permanent = PERMANENT.has(e.code);
    const final = permanent || attempt >= (job.opts.attempts ?? 1);
    log.warn({ code: e.code, details: e.details, final }, `DKG attempt failed: ${e.message}`);
    // Bookkeeping must not replace the ceremony's own error with one of its own.
    await job
      .updateData({ ...job.data, lastError: e.toBody() })
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

async function runCeremony(
  deps: DkgWorkerDeps,
  job: Job<DkgJobData, DkgJobResult>,
  log: Logger,
): Promise<KeyPackage> {
  const { tenant, version, threshold, participants } = job.data;
  const progress = async (p: DkgProgress): Promise<void> => {
    try {
      await job.updateProgress(p);
    } catch (err) {
      // Progress is informative; losing one update must not fail a ceremony.
      log.warn({ err }, 'could not record DKG progress');
    }
  };

  // An earlier attempt may have finished after all: on the nodes, in Redis, or both.
  const stored = await deps.registry.readKeyPackage(tenant, version);
  if (stored) return stored;
  const held = await deps.registry.restoreKeyPackage(tenant, version, {
    atLeast: participants.length,
  });
  if (held) {
    log.info('key package found on every node; nothing to generate');
    return held;
  }

  checkThreshold(participants.length, threshold);
  const ceremonyId = ceremonyIdOf(job.id!);
  log.info({ ceremonyId, threshold, participants }, 'DKG started');
  const pkg = await relayDkg(
    { pool: deps.pool, timeoutMs: deps.roundTimeoutMs, logger: log, progress },
    { ceremonyId, tenant, version, threshold, participants },
  );
  await progress({ phase: 'store', done: 0, total: 1 });
  await deps.registry.store(pkg);
  await progress({ phase: 'store', done: 1, total: 1 });
  log.info({ ceremonyId, groupKey: pkg.groupKey }, 'DKG complete; key package stored');
  return pkg;
}

/** One ceremony per job, the same for every attempt, in the form shared/messages.ts accepts. */
export function ceremonyIdOf(jobId: string): string {
  return `c${createHash('sha256').update(jobId).digest('base64url').slice(0, 31)}`;
}

export interface JobView {
  id: string;
  tenant: string;
  version: number;
  state: string;
  attemptsMade: number;
  progress: DkgProgress;
  result?: DkgJobResult;
  error?: ErrorBody;
}

const JOB_ID = /^[A-Za-z0-9_-]{1,128}$/;

/** What GET /v1/jobs/:id shows. ERR_UNKNOWN_JOB when there is no such job (or it was removed). */
export async function describeJob(queue: DkgQueue, id: string): Promise<JobView> {
  const job = JOB_ID.test(id) ? await queue.getJob(id) : undefined;
  if (!job) throw new KmaasError('ERR_UNKNOWN_JOB', `no job ${id.slice(0, 128)}`);
  const state = await job.getState();
  const view: JobView = {
    id,
    tenant: job.data.tenant,
    version: job.data.version,
    state,
    attemptsMade: job.attemptsMade,
    progress: isProgress(job.progress)
      ? job.progress
      : { phase: 'round1', done: 0, total: job.data.participants.length },
  };
  if (state === 'completed' && job.returnvalue) view.result = job.returnvalue;
  // While retrying, the last error says why; once failed, it is the final word.
  if (state !== 'completed' && job.data.lastError) view.error = job.data.lastError;
  else if (state === 'failed') view.error = { code: 'ERR_INTERNAL', message: job.failedReason };
  return view;
}

function isProgress(p: unknown): p is DkgProgress {
  if (typeof p !== 'object' || p === null) return false;
  const { phase, done, total } = p as Record<string, unknown>;
  return typeof phase === 'string' && typeof done === 'number' && typeof total === 'number';
}
