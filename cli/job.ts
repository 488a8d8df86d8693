/**
 * Following ceremony jobs: `kmaas job <id>` shows where a key generation or reshare job stands
 * (operation, state, attempts, phase, the last attempt's error) and follows it to its end, and
 * the commands that submit a proposal follow their job the same way. A job runs in the
 * coordinators, not in the CLI: Ctrl-C while following stops only the following, and says how to
 * pick it up again.
 */
import type { Command } from 'commander';
import type { Job } from '../client/index.ts';
import { errorFromBody } from '../client/http.ts';
import { KmaasError } from '../shared/errors.ts';
import type { Io, Session } from './program.ts';
import { progressLine, reshareProgressLine, retryLine } from './progress.ts';

/**
 * How long following a job waits through polls the coordinator does not answer (a restart takes
 * about a second) before it gives up with ERR_NODE_UNAVAILABLE.
 */
export const OUTAGE_MS = 30_000;

/** Whether the job is a committee change (its progress is a bar over the reshare phases). */
export function isReshareJob(job: Pick<Job, 'operation'>): boolean {
  return job.operation === 'committee.reshare' || job.operation === 'committee.refresh';
}

function lineOf(job: Job, reshare: boolean): string | undefined {
  return reshare ? reshareProgressLine(job) : progressLine(job);
}

/**
 * Follow `jobId` to its end, one line on stderr per change of its progress or of the reason its
 * last attempt failed; resolves with the completed job, throws its error when it fails. Whether
 * it is a reshare comes from the job itself when `reshare` is undefined; `onFirst` sees the
 * first answer. Polls the coordinator does not answer are tried again for OUTAGE_MS.
 */
export async function followJob(
  s: Session,
  jobId: string,
  reshare: boolean | undefined,
  onFirst?: (job: Job) => void,
): Promise<Job> {
  let first = true;
  let last: string | undefined;
  let lastRetry: string | undefined;
  const interrupted = (): void => {
    s.note(`stopped following job ${jobId}; it goes on in the coordinator: kmaas job ${jobId}`);
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  try {
    return await s.client.waitForJob(jobId, {
      outageMs: OUTAGE_MS,
      onOutage: (err) =>
        s.note(
          `waiting for the coordinator (${err.message}); following job ${jobId} again once it ` +
            `answers, for up to ${OUTAGE_MS / 1000} s`,
        ),
      onProgress: (j) => {
        if (first) onFirst?.(j);
        first = false;
        const retry = retryLine(j);
        if (retry !== undefined && retry !== lastRetry) s.note(retry);
        lastRetry = retry;
        const line = lineOf(j, reshare ?? isReshareJob(j));
        if (line !== undefined && line !== last) s.note(line);
        last = line;
      },
    });
  } catch (err) {
    if (err instanceof KmaasError && err.details?.outageMs !== undefined) {
      throw new KmaasError(
        err.code,
        `${err.message}: follow it again with kmaas job ${jobId} once the coordinator is back`,
        err.details,
      );
    }
    throw err;
  } finally {
    process.off('SIGINT', interrupted);
  }
}

/** The lines that say what a completed reshare left to catch up, if anything. */
export function laggingLines(result: unknown): string[] {
  const lagging = (result as { lagging?: unknown } | undefined)?.lagging;
  if (!Array.isArray(lagging) || lagging.length === 0) return [];
  return [
    `node(s) ${lagging.join(', ')} missed the commit or the finish: each gets it when it ` +
      'reconnects, or erases its old shares on its own timer',
  ];
}

function describe(job: Job): string {
  const attempts = job.attemptsMade ? `, ${job.attemptsMade} attempt(s) made` : '';
  return `job ${job.id}: ${job.operation ?? 'ceremony'}, ${job.state}${attempts}`;
}

/** Adds `job <id>`. */
export function addJobCommand(
  program: Command,
  _io: Io,
  session: (cmd: Command) => Promise<Session>,
): void {
  program
    .command('job <id>')
    .description('where a key generation or reshare job stands; follows it to its end')
    .option('--no-follow', 'print where it stands and return')
    .action(async (id: string, o: { follow: boolean }, cmd: Command) => {
      const s = await session(cmd);
      let job: Job;
      if (o.follow) {
        // From the first poll on: a coordinator that is restarting is waited for.
        job = await followJob(s, id, undefined, (j) => s.note(describe(j)));
      } else {
        job = await s.client.job(id);
        const reshare = isReshareJob(job);
        s.note(describe(job));
        const ended = job.state === 'completed' || job.state === 'failed';
        const retry = retryLine(job);
        if (retry !== undefined) s.note(retry);
        const line = lineOf(job, reshare);
        if (line !== undefined && !ended) s.note(line);
        if (job.state === 'failed') {
          throw (
            errorFromBody(job.error) ??
            new KmaasError('ERR_INTERNAL', `job ${id} failed without a coded error`)
          );
        }
      }
      const human = [describe(job), ...(job.state === 'completed' ? laggingLines(job.result) : [])];
      s.result({ ...job }, human);
    });
}
