/**
 * The chaos run's ceremonies, one after the other while the faults go on: a proactive refresh
 * (a committee.refresh proposal), the spare node added (committee.reshare to n + 1 nodes, with
 * the smallest threshold the policy allows there) and removed again (back to n nodes and the
 * first threshold), each signed by a quorum of the dev operators as `kmaas committee` would sign
 * it (cli/committee.ts builds the reshare drafts).
 *
 * Each is submitted to whichever coordinator answers and followed on either. A job that fails,
 * or that no coordinator knows any more (a Redis flush takes BullMQ's jobs with it), is proposed
 * anew from the committee the nodes report now, as an operator would; every such problem is
 * recorded. A ceremony still running at the run's deadline is recorded as unfinished.
 *
 * The committee in force (for counting healthy members) changes on the timeline when the job
 * is seen completed, a little after the coordinators switched to the new epoch: an
 * approximation of at most one poll plus the finish delay, in which either epoch serves.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { KmaasClient, MemoryPinStore } from '../../client/index.ts';
import { currentEpoch, parseStatusView, type StatusView } from '../../client/committee.ts';
import { reshareDraft } from '../../cli/committee.ts';
import { toKmaasError } from '../../shared/errors.ts';
import { draftProposal, type Proposal } from '../../shared/proposal.ts';
import { signWithDevKeys } from '../lib/operators.ts';
import type { CeremonyEvent } from './schedule.ts';
import type { CeremonyRecord, Timeline } from './timeline.ts';

const MAX_SUBMISSIONS = 4;
const POLL_MS = 500;
/** A job no coordinator has heard of for this long is lost. */
const LOST_AFTER_MS = 5000;

export interface CeremonyDeps {
  coordinators: readonly string[];
  adminToken: string;
  operatorKeyFiles: readonly string[];
  timeline: Timeline;
  /** The first committee's threshold, which the removal goes back to. */
  threshold: number;
  note: (line: string) => void;
}

type Outcome =
  | { done: true; epoch?: number; committee?: number[]; threshold?: number }
  | { done: false; problem: string };

export class CeremonyRunner {
  readonly #d: CeremonyDeps;
  readonly #clients: KmaasClient[];

  constructor(deps: CeremonyDeps) {
    this.#d = deps;
    this.#clients = deps.coordinators.map(
      (baseUrl) =>
        new KmaasClient({
          baseUrl,
          adminToken: deps.adminToken,
          pins: new MemoryPinStore(),
          timeoutMs: 10_000,
        }),
    );
  }

  /** Run `events` in order, none before its time; give up on the one running at `deadline`. */
  async run(events: readonly CeremonyEvent[], deadline: () => number): Promise<void> {
    const tl = this.#d.timeline;
    for (const e of events) {
      const wait = e.at - tl.now();
      if (wait > 0) await sleep(wait);
      const record: CeremonyRecord = {
        kind: e.kind,
        plannedAt: e.at,
        at: tl.now(),
        outcome: 'unfinished',
        submissions: 0,
        jobIds: [],
        problems: [],
      };
      tl.ceremonies.push(record);
      await this.#perform(e, record, deadline);
      record.endedAt = tl.now();
      this.#d.note(
        `ceremony ${e.kind}: ${record.outcome}` +
          (record.doneAt === undefined
            ? ''
            : ` in ${((record.doneAt - record.at) / 1000).toFixed(1)} s`) +
          (record.problems.length ? ` (${record.problems.join('; ')})` : ''),
      );
    }
  }

  async #perform(e: CeremonyEvent, record: CeremonyRecord, deadline: () => number): Promise<void> {
    const tl = this.#d.timeline;
    // The epoch when the last job was submitted: a job lost with Redis may still have committed.
    let submittedAt: number | undefined;
    while (record.submissions < MAX_SUBMISSIONS && tl.now() < deadline()) {
      let proposal: Proposal | 'skip';
      try {
        const view = parseStatusView(await this.#any((c) => c.status()));
        if (submittedAt !== undefined && this.#achieved(e, view, submittedAt)) {
          const epoch = currentEpoch(view);
          record.outcome = 'completed';
          record.doneAt = tl.now();
          record.epoch = epoch.epoch;
          record.problems.push(`the nodes committed epoch ${epoch.epoch} all the same`);
          tl.committees.push({
            at: record.doneAt,
            committee: epoch.committee.map((m) => m.node).sort((a, b) => a - b),
            threshold: epoch.threshold,
            epoch: epoch.epoch,
          });
          return;
        }
        submittedAt = currentEpoch(view).epoch;
        proposal = this.#propose(e, view);
      } catch (err) {
        // No coordinator answered, or too few dealers are up right now: try again shortly.
        record.problems.push(`proposal: ${brief(err)}`);
        await sleep(2000);
        continue;
      }
      if (proposal === 'skip') {
        record.outcome = 'skipped';
        return;
      }
      let jobId: string;
      try {
        // Shortcoming: a submission whose answer was lost with a killed coordinator is sent to
        // the other one too; the nodes then see the proposal twice (one job fails on it).
        const submitted = await this.#any((c) => c.submitProposal(proposal));
        if (submitted.kind !== 'job') throw new Error('no job');
        jobId = submitted.jobId;
      } catch (err) {
        record.problems.push(`submit: ${brief(err)}`);
        await sleep(2000);
        continue;
      }
      record.submissions++;
      record.jobIds.push(jobId);
      this.#d.note(`ceremony ${e.kind}: job ${jobId}`);
      const outcome = await this.#follow(jobId, deadline);
      if (outcome.done) {
        record.outcome = 'completed';
        record.doneAt = tl.now();
        if (outcome.epoch !== undefined) record.epoch = outcome.epoch;
        if (outcome.committee && outcome.threshold !== undefined) {
          tl.committees.push({
            at: record.doneAt,
            committee: outcome.committee,
            threshold: outcome.threshold,
            ...(outcome.epoch === undefined ? {} : { epoch: outcome.epoch }),
          });
        }
        return;
      }
      if (outcome.problem.startsWith('deadline')) {
        record.problems.push(outcome.problem);
        return;
      }
      record.problems.push(`${outcome.problem}, proposed again`);
      await sleep(2000);
    }
    if (record.outcome === 'unfinished' && record.submissions >= MAX_SUBMISSIONS)
      record.outcome = 'failed';
  }

  /** Whether the committee the nodes report shows `e` done since epoch `since`. */
  #achieved(e: CeremonyEvent, view: StatusView, since: number): boolean {
    const epoch = currentEpoch(view);
    if (epoch.epoch <= since) return false;
    const members = epoch.committee.map((m) => m.node);
    if (e.kind === 'add-node') return members.includes(e.node!);
    if (e.kind === 'remove-node') return !members.includes(e.node!);
    return true;
  }

  /** The signed proposal for `e` from the committee the nodes report, or 'skip'. */
  #propose(e: CeremonyEvent, view: StatusView): Proposal | 'skip' {
    const expiresAt = new Date(Date.now() + 10 * 60_000);
    const epoch = currentEpoch(view);
    const members = epoch.committee.map((m) => m.node);
    let draft;
    if (e.kind === 'refresh') {
      draft = {
        cluster: view.cluster!,
        operation: 'committee.refresh' as const,
        committee: epoch.committee,
        threshold: epoch.threshold,
        everySeconds: 60,
        expiresAt,
      };
    } else if (e.kind === 'add-node') {
      if (members.includes(e.node!)) return 'skip';
      // The smallest threshold above half of the bigger committee (policy: t' > n'/2).
      const threshold = Math.max(epoch.threshold, Math.floor((members.length + 1) / 2) + 1);
      draft = reshareDraft(view, { reason: 'add', nodes: [e.node!], threshold }, { expiresAt });
    } else {
      if (!members.includes(e.node!)) return 'skip';
      draft = reshareDraft(
        view,
        { reason: 'remove', nodes: [e.node!], threshold: this.#d.threshold },
        { expiresAt },
      );
    }
    return signWithDevKeys(draftProposal(draft), this.#d.operatorKeyFiles, 2);
  }

  /** Poll the job on either coordinator until it completes, fails, is lost, or the deadline. */
  async #follow(jobId: string, deadline: () => number): Promise<Outcome> {
    const tl = this.#d.timeline;
    let unknownSince: number | undefined;
    while (tl.now() < deadline()) {
      let job;
      try {
        job = await this.#any((c) => c.job(jobId));
        unknownSince = undefined;
      } catch (err) {
        if (toKmaasError(err).code === 'ERR_UNKNOWN_JOB') {
          unknownSince ??= tl.now();
          if (tl.now() - unknownSince > LOST_AFTER_MS)
            return { done: false, problem: 'job lost (ERR_UNKNOWN_JOB)' };
        }
        await sleep(POLL_MS);
        continue;
      }
      if (job.state === 'completed') {
        const r = (job.result ?? {}) as {
          epoch?: number;
          committee?: number[];
          threshold?: number;
        };
        return {
          done: true,
          ...(typeof r.epoch === 'number' ? { epoch: r.epoch } : {}),
          ...(Array.isArray(r.committee) ? { committee: r.committee } : {}),
          ...(typeof r.threshold === 'number' ? { threshold: r.threshold } : {}),
        };
      }
      if (job.state === 'failed') {
        const code = (job.error as { code?: string } | undefined)?.code ?? 'unknown';
        return { done: false, problem: `job failed (${code})` };
      }
      await sleep(POLL_MS);
    }
    return { done: false, problem: 'deadline: still running at the end of the run' };
  }

  /** `call` on the first coordinator that answers (a dead one fails at once). */
  async #any<T>(call: (c: KmaasClient) => Promise<T>): Promise<T> {
    let last: unknown;
    for (const c of this.#clients) {
      try {
        return await call(c);
      } catch (err) {
        last = err;
        // An answer is an answer: only an unreachable coordinator makes us ask the other.
        if (toKmaasError(err).code !== 'ERR_NODE_UNAVAILABLE') throw err;
      }
    }
    throw last;
  }
}

/** A code and the start of its message, for the report. */
function brief(err: unknown): string {
  const e = toKmaasError(err);
  return `${e.code} ${e.message.slice(0, 120)}`;
}
