/**
 * Catch-up (PLAN "Coordinator"): a node that was down when a reshare committed comes back on the
 * older epoch. Its prepared shares (a new member) or its old ones (a removed member) wait for the
 * commit; the epoch record keeps the transcript and every new member's vote, which is all a
 * node needs to commit by itself (each checks the votes against the proposal's signing keys). So
 * when a node connects, it gets reshare.commit from the record, then reshare.finish. A node that
 * is not in the record's committee with its current identity keys also gets the record's
 * proposal: it may have been down during the whole reshare (never begun it), and with the
 * proposal it commits as removed (nodes/reshare-catchup.ts) and its finish erases its old shares,
 * however many epochs it missed. Best effort: a node that refuses is logged, and a later
 * connection tries again.
 */
import { toKmaasError } from '../shared/errors.ts';
import { parseMessage, statusReply } from '../shared/messages.ts';
import type { EpochSource } from './epoch.ts';
import type { Logger } from './logger.ts';
import type { NodeLink } from './node-link.ts';
import { checkCommit, checkFinish } from './reshare-relay.ts';

export interface CatchUpDeps {
  epochs: EpochSource;
  timeoutMs: number;
  logger: Logger;
}

/** Bring `link`'s node to the recorded epoch if it is behind; true when it was sent the commit. */
export async function catchUp(deps: CatchUpDeps, link: NodeLink): Promise<boolean> {
  const log = deps.logger.child({ node: link.id, component: 'catch-up' });
  try {
    const record = await deps.epochs.current();
    if (!record?.votes || !record.reshareId || !record.transcript) return false;
    const body = await link.request('status', {}, deps.timeoutMs);
    const status = parseMessage(statusReply, body, 'status reply');
    const behind = status.epoch?.epoch ?? 0;
    if (status.node !== link.id || behind >= record.epoch) return false;
    // A spare that never belonged to any epoch has nothing to commit.
    const member = record.committee.some((m) => m.node === link.id);
    if (behind === 0 && !member) return false;
    const { reshareId, transcript, votes } = record;
    // A member with its current identity keys that is merely behind has the reshare's state: the
    // commit alone does. Anyone else (removed, or its id now has other keys) may never have begun
    // it: the proposal lets it check the votes by itself and commit as removed.
    const own = record.committee.find((m) => m.node === link.id);
    const current =
      !!own &&
      !!status.identity &&
      own.signing === status.identity.signing &&
      own.encryption === status.identity.encryption;
    const proposal = current ? undefined : record.proposal;
    const commit = checkCommit(
      link.id,
      await link.request(
        'reshare.commit',
        { reshareId, transcript, votes, ...(proposal ? { proposal } : {}) },
        deps.timeoutMs,
      ),
    );
    const erased = checkFinish(
      link.id,
      await link.request('reshare.finish', { reshareId }, deps.timeoutMs),
    );
    log.info(
      { reshareId, from: behind, epoch: commit.epoch, role: commit.role, erased },
      'node caught up with the current epoch',
    );
    return true;
  } catch (err) {
    const e = toKmaasError(err);
    log.warn({ code: e.code }, `node could not catch up with the current epoch: ${e.message}`);
    return false;
  }
}

export interface CatchUpSweepDeps extends CatchUpDeps {
  /** The links to look at each time (the connected ones). */
  links: () => readonly NodeLink[];
  everyMs: number;
}

/**
 * Catch-up again, every `everyMs`, for each connected node: one attempt at connection time is not
 * enough when it fails (Redis down at that moment, the node busy, the link cut mid-way), and a
 * node left behind makes every later reshare refuse (its previous epoch is not the current one).
 * A node that is not behind costs one status request per sweep; one already being caught up is
 * skipped.
 */
export class CatchUpSweep {
  readonly #deps: CatchUpSweepDeps;
  readonly #running = new Set<number>();
  #timer: NodeJS.Timeout | null = null;

  constructor(deps: CatchUpSweepDeps) {
    this.#deps = deps;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.sweep(), this.#deps.everyMs);
    this.#timer.unref();
  }

  /** Try every connected node once (also what a node's reconnection triggers for that node). */
  sweep(): void {
    for (const link of this.#deps.links()) this.one(link);
  }

  one(link: NodeLink): void {
    if (this.#running.has(link.id)) return;
    this.#running.add(link.id);
    void catchUp(this.#deps, link).finally(() => this.#running.delete(link.id));
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
