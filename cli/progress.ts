/**
 * The progress of a tenant-creation job, as lines a person can read. The coordinator
 * (coordinator/dkg-job.ts, dkg-relay.ts) reports BullMQ's job state and { phase, done, total }:
 * phases round1, round2 and round3 of the DKG, where done counts the nodes that answered the
 * round, then store (0 or 1 of 1) while it writes the agreed key package. While an attempt waits
 * to be retried, the job carries the error of the last one.
 */
import type { Job } from '../client/index.ts';
import { errorFromBody } from '../client/http.ts';

const ROUND = /^(?:dkg\.)?round([1-3])$/;

/** One line for where the job stands, or undefined when it has failed (its error says why). */
export function progressLine(job: Job): string | undefined {
  const { phase, done, total } = job.progress;
  switch (job.state) {
    case 'completed':
      return 'done';
    case 'failed':
      return undefined;
    case 'waiting':
    case 'prioritized':
    case 'waiting-children':
      return 'queued: waiting for the coordinator to start the key generation';
    case 'delayed':
      return 'waiting to retry the key generation';
    case 'active':
      break;
    default:
      return `job state: ${job.state}`;
  }
  const counted = done !== undefined && total !== undefined;
  const round = phase === undefined ? null : ROUND.exec(phase);
  if (round) {
    return `DKG round ${round[1]}/3` + (counted ? `: ${done} of ${total} nodes` : '');
  }
  if (phase === 'store') return 'storing the key package';
  return 'key generation running' + (counted ? ` (step ${done} of ${total})` : '');
}

/** Why the last attempt failed, while the job is being retried; undefined when none did. */
export function retryLine(job: Job): string | undefined {
  if (job.error === undefined || job.state === 'failed' || job.state === 'completed') {
    return undefined;
  }
  const e = errorFromBody(job.error);
  const why = e ? `${e.code}: ${e.message}` : typeof job.error === 'string' ? job.error : '';
  return `an attempt failed${why ? ` (${why})` : ''}; the coordinator retries it`;
}
