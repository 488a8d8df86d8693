/**
 * The one BullMQ queue every ceremony runs in (DESIGN.md section 3): DKG jobs (tenant.create,
 * key.rotate; dkg-job.ts) and committee jobs (committee.reshare, committee.refresh;
 * reshare-job.ts). A ceremony occupies the whole committee, and a DKG during a reshare would
 * make a key the reshare does not carry over, so the queue runs ONE job at a time across every
 * replica (BullMQ global concurrency 1), and one worker per replica dispatches on the job name.
 *
 * A replica killed mid-ceremony stops renewing its job's lock; BullMQ's stalled-job check (on
 * any replica, every `stalledIntervalMs`) puts the job back, and it is run again from what its
 * data records: a DKG replays under the same ceremony id, a reshare resumes at commit once
 * decided.
 */
import { Queue, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { processDkgJob, type DkgJobData, type DkgJobResult } from './dkg-job.ts';
import { DKG_QUEUE_NAME, type RedisKeys } from './redis-keys.ts';
import {
  processReshareJob,
  REFRESH_JOB,
  RESHARE_JOB,
  type ReshareJobData,
  type ReshareJobResult,
  type ReshareWorkerDeps,
} from './reshare-job.ts';

export type CeremonyJobData = DkgJobData | ReshareJobData;
export type CeremonyJobResult = DkgJobResult | ReshareJobResult;
export type CeremonyQueue = Queue<CeremonyJobData, CeremonyJobResult>;

/** How many times a job may stall (its replica died) before BullMQ fails it. */
const MAX_STALLED = 5;

/** The queue, limited to one running job across every replica. */
export async function createCeremonyQueue(
  connection: Redis,
  keys: RedisKeys,
): Promise<CeremonyQueue> {
  const queue = new Queue<CeremonyJobData, CeremonyJobResult>(DKG_QUEUE_NAME, {
    connection,
    prefix: keys.bullPrefix,
  });
  await queue.setGlobalConcurrency(1);
  return queue;
}

export interface CeremonyWorkerDeps extends ReshareWorkerDeps {
  /** The job lock; a replica that stops renewing it loses the job after this long. */
  lockDurationMs: number;
  /** How often the stalled-job check runs. */
  stalledIntervalMs: number;
}

export function createCeremonyWorker(
  deps: CeremonyWorkerDeps,
): Worker<CeremonyJobData, CeremonyJobResult> {
  const worker = new Worker<CeremonyJobData, CeremonyJobResult>(
    DKG_QUEUE_NAME,
    (job) => runCeremony(deps, job),
    {
      connection: deps.connection,
      prefix: deps.keys.bullPrefix,
      concurrency: 1,
      lockDuration: deps.lockDurationMs,
      stalledInterval: deps.stalledIntervalMs,
      maxStalledCount: MAX_STALLED,
    },
  );
  worker.on('error', (err) => deps.logger.error({ err }, 'ceremony worker error'));
  return worker;
}

/** Dispatch on the job's name: committee jobs to reshare-job.ts, the rest are DKGs. */
export function runCeremony(
  deps: ReshareWorkerDeps,
  job: Job<CeremonyJobData, CeremonyJobResult>,
): Promise<CeremonyJobResult> {
  if (job.name === RESHARE_JOB || job.name === REFRESH_JOB) {
    return processReshareJob(deps, job as Job<ReshareJobData, ReshareJobResult>);
  }
  return processDkgJob(deps, job as Job<DkgJobData, DkgJobResult>);
}
