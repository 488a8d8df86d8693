/**
 * The progress of a tenant-creation or reshare job, as lines a person can read. The coordinator
 * (coordinator/dkg-job.ts, dkg-relay.ts) reports BullMQ's job state and { phase, done, total }:
 * phases round1, round2 and round3 of the DKG, where done counts the nodes that answered the
 * round, then store (0 or 1 of 1) while it writes the agreed key package. While an attempt waits
 * to be retried, the job carries the error of the last one. A reshare job (committee.reshare,
 * coordinator/reshare-job.ts) goes through the phases of RESHARE_PHASES, done counting chunks or
 * nodes of the phase; it is shown as a bar over the phases.
 */
import type { Job } from '../client/index.ts';
import { errorFromBody } from '../client/http.ts';

const ROUND = /^(?:dkg\.)?round([1-3])$/;

/** The steps of a reshare job, in order (PLAN.md "Coordinator"). */
export const RESHARE_PHASES = [
  'begin',
  'deal',
  'prepare',
  'vote',
  'commit',
  'switch',
  'finish',
] as const;

const BAR_WIDTH = 20;

/**
 * One line for a reshare job: a bar over the phases (a phase counts as begun, plus its share
 * done), the phase and its count. Undefined once it has failed.
 */
export function reshareProgressLine(job: Job): string | undefined {
  const { phase, done, total } = job.progress;
  switch (job.state) {
    case 'completed':
      return `[${'#'.repeat(BAR_WIDTH)}] done`;
    case 'failed':
      return undefined;
    case 'waiting':
    case 'prioritized':
    case 'waiting-children':
      return 'queued: waiting for other ceremonies to end';
    case 'delayed':
      return 'waiting to retry the reshare';
    case 'active':
      break;
    default:
      return `job state: ${job.state}`;
  }
  const step = RESHARE_PHASES.indexOf(phase as (typeof RESHARE_PHASES)[number]);
  if (step < 0) return 'reshare running';
  const counted = done !== undefined && total !== undefined && total > 0;
  const within = counted ? Math.min(1, done / total) : 0;
  const filled = Math.round(((step + within) / RESHARE_PHASES.length) * BAR_WIDTH);
  const bar = `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}]`;
  const count = counted ? ` ${done}/${total}` : '';
  return `${bar} ${step + 1}/${RESHARE_PHASES.length} ${phase}${count}`;
}

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
    // A poll often lands just as a round starts; "0 of 5" read as stuck, so it says what waits.
    if (!counted) return `DKG round ${round[1]}/3`;
    return done === 0
      ? `DKG round ${round[1]}/3: waiting for ${total} nodes`
      : `DKG round ${round[1]}/3: ${done} of ${total} nodes`;
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
