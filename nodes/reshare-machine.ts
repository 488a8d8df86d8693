/**
 * The node side of resharing (DESIGN.md section 3, PLAN "Node messages") as a state machine:
 * pure transitions over one reshare's state on this node, no I/O (reshare.ts loads, persists and
 * replies). The arithmetic is reshare-dealing.ts, the sealing reshare-envelope.ts, the digests and
 * signatures reshare-transcript.ts.
 *
 *   (none | aborted) --begin-->  begun      parameters fixed: proposal, old and new committee,
 *                                           thresholds, key list, this node's roles
 *   begun   --deal-->     begun             dealer: commitments + sealed pieces of one chunk
 *   begun   --prepare-->  begun             receiver: one chunk's new shares (kept aside, sealed)
 *   begun   --vote-->     voted             receiver: every chunk of one dealer set prepared;
 *                                           signs the transcript. One vote per reshare: a node
 *                                           never signs two transcripts
 *   begun | voted --commit-->  committed    a valid vote of every new member over one transcript
 *                                           (a receiver's own): the new epoch is this node's
 *   committed --finish-->  finished         older epochs' shares, seed and chunks are erased
 *   begun | voted --abort-->   aborted      pending state erased; the same id may begin again
 *   none    --commit + proposal-->  committed   catch-up (reshare-catchup.ts): a node down during
 *                                           a whole reshare that removed it (or gave its id new
 *                                           identity keys) commits the new epoch as 'removed'
 *
 * Replays are answered from the state (deal, prepare, vote, commit, finish, abort repeat
 * harmlessly). Any other message for a state is ERR_RESHARE_STATE naming details.state, except
 * abort once committed, ERR_CEREMONY_CONFLICT (PLAN: the decision is irreversible).
 */
import { KmaasError } from '../shared/errors.ts';
import type { CommitteeMember, Proposal } from '../shared/proposal.ts';
import type { KeyRef } from './reshare-transcript.ts';

export type ReshareStep = 'begun' | 'voted' | 'committed' | 'finished' | 'aborted';

export type ReshareMessage = 'begin' | 'deal' | 'prepare' | 'vote' | 'commit' | 'finish' | 'abort';

/** What the begin fixed; the same on every replay. */
export interface ReshareParams {
  reshareId: string;
  proposalId: string;
  proposal: Proposal;
  period?: number;
  /** The old epoch e (the proposal's previous, or the node's own epoch for a refresh). */
  oldEpoch: number;
  oldThreshold: number;
  oldCommittee: CommitteeMember[];
  /** The new epoch e+1. */
  epoch: number;
  threshold: number;
  committee: CommitteeMember[];
  keys: KeyRef[];
  /** An old member that holds every listed key at e. */
  dealer: boolean;
  /** A member of the new committee. */
  receiver: boolean;
}

export interface ReshareVoteRecord {
  dealers: number[];
  chunks: number;
  transcript: string;
  signature: string;
}

export interface ReshareState {
  params: ReshareParams;
  step: ReshareStep;
  vote?: ReshareVoteRecord;
  /** The transcript committed, and when (ms since the epoch): auto-finish counts from it. */
  committed?: { transcript: string; at: number };
}

/** Which messages each step takes (replays included). */
const ALLOWED: Record<ReshareStep, readonly ReshareMessage[]> = {
  begun: ['begin', 'deal', 'prepare', 'vote', 'commit', 'abort'],
  voted: ['begin', 'deal', 'prepare', 'vote', 'commit', 'abort'],
  committed: ['commit', 'finish'],
  finished: ['commit', 'finish'],
  aborted: ['begin', 'abort'],
};

export function stateError(reshareId: string, state: string, message: ReshareMessage, why = '') {
  return new KmaasError(
    'ERR_RESHARE_STATE',
    `reshare ${reshareId} is ${state} on this node: ${message} is out of order${why ? `; ${why}` : ''}`,
    { reshareId, state, message },
  );
}

/**
 * The state `message` may act on: ERR_RESHARE_STATE (details.state: 'none' when this node has no
 * such reshare) otherwise. abort after commit is ERR_CEREMONY_CONFLICT.
 */
export function expectStep(
  reshareId: string,
  state: ReshareState | undefined,
  message: ReshareMessage,
): ReshareState {
  if (!state) {
    throw stateError(reshareId, 'none', message);
  }
  if (message === 'abort' && (state.step === 'committed' || state.step === 'finished')) {
    throw new KmaasError(
      'ERR_CEREMONY_CONFLICT',
      `reshare ${reshareId} was committed on this node: it cannot be aborted`,
      { reshareId, state: state.step },
    );
  }
  if (!ALLOWED[state.step].includes(message)) throw stateError(reshareId, state.step, message);
  return state;
}

function role(state: ReshareState, message: ReshareMessage, need: 'dealer' | 'receiver') {
  if (!state.params[need]) {
    throw stateError(
      state.params.reshareId,
      state.step,
      message,
      `this node is not a ${need} of it`,
    );
  }
}

function sameMembers(a: readonly CommitteeMember[], b: readonly CommitteeMember[]): boolean {
  const key = (m: CommitteeMember) => `${m.node}:${m.signing}:${m.encryption}`;
  return a.map(key).join(',') === b.map(key).join(',');
}

export function sameParams(a: ReshareParams, b: ReshareParams): boolean {
  return (
    a.reshareId === b.reshareId &&
    a.proposalId === b.proposalId &&
    a.period === b.period &&
    a.oldEpoch === b.oldEpoch &&
    a.epoch === b.epoch &&
    a.threshold === b.threshold &&
    a.oldThreshold === b.oldThreshold &&
    sameMembers(a.committee, b.committee) &&
    sameMembers(a.oldCommittee, b.oldCommittee) &&
    JSON.stringify(a.keys) === JSON.stringify(b.keys)
  );
}

/**
 * begin: a new reshare, a replay of this one (same parameters: the stored state), or a fresh
 * start of an aborted one. `open` is another reshare still open on this node, if any.
 */
export function begin(
  existing: ReshareState | undefined,
  params: ReshareParams,
  open: { reshareId: string; step: ReshareStep } | undefined,
): { state: ReshareState; replay: boolean } {
  if (open && open.reshareId !== params.reshareId) {
    throw new KmaasError(
      'ERR_CEREMONY_CONFLICT',
      `reshare ${open.reshareId} is ${open.step} on this node; one reshare at a time`,
      { reshareId: params.reshareId, open: open.reshareId, state: open.step },
    );
  }
  if (existing && existing.step !== 'aborted') {
    expectStep(params.reshareId, existing, 'begin');
    if (!sameParams(existing.params, params)) {
      throw new KmaasError(
        'ERR_CEREMONY_CONFLICT',
        `reshare ${params.reshareId} exists on this node with other parameters`,
        { reshareId: params.reshareId },
      );
    }
    // The roles were fixed at the first begin: keep them.
    return { state: existing, replay: true };
  }
  return { state: { params, step: 'begun' }, replay: false };
}

/** The keys of chunk `chunk` of the begun list (RESHARE_CHUNK per chunk). */
export function chunkKeys(params: ReshareParams, chunk: number, size: number): KeyRef[] {
  return params.keys.slice(chunk * size, (chunk + 1) * size);
}

export function chunkCount(params: ReshareParams, size: number): number {
  return Math.ceil(params.keys.length / size);
}

/**
 * The chunk request names the chunk's keys, in order, and a dealer set of old members that is
 * big enough (at least the old threshold) and sorted.
 */
export function checkChunk(
  state: ReshareState,
  message: 'deal' | 'prepare',
  req: { dealers: readonly number[]; chunk: number; keys: readonly KeyRef[] },
  size: number,
): void {
  const { params } = state;
  role(state, message, message === 'deal' ? 'dealer' : 'receiver');
  const want = chunkKeys(params, req.chunk, size);
  const same =
    want.length === req.keys.length &&
    want.every((k, i) => k.tenant === req.keys[i]!.tenant && k.version === req.keys[i]!.version);
  if (!same) {
    throw new KmaasError(
      'ERR_RESHARE_KEYSET',
      `reshare ${params.reshareId}: chunk ${req.chunk} does not list the begun keys ${req.chunk * size}..`,
      { reshareId: params.reshareId, chunk: req.chunk },
    );
  }
  checkDealers(params, req.dealers);
}

export function checkDealers(params: ReshareParams, dealers: readonly number[]): void {
  const old = new Set(params.oldCommittee.map((m) => m.node));
  const sorted = dealers.every((d, i) => i === 0 || dealers[i - 1]! < d);
  const strangers = dealers.filter((d) => !old.has(d));
  if (!sorted || strangers.length > 0 || dealers.length < params.oldThreshold) {
    throw new KmaasError(
      'ERR_VALIDATION',
      `dealers: expected at least ${params.oldThreshold} distinct old members, ascending` +
        (strangers.length ? `; not old members: ${strangers.join(', ')}` : ''),
      { field: 'dealers', strangers },
    );
  }
}

/** deal: only a dealer that is one of `dealers`; the state does not change. */
export function checkDeal(
  self: number,
  state: ReshareState,
  req: { dealers: readonly number[]; chunk: number; keys: readonly KeyRef[] },
  size: number,
): void {
  checkChunk(state, 'deal', req, size);
  if (!req.dealers.includes(self)) {
    throw new KmaasError('ERR_VALIDATION', `dealers: node ${self} is not one of them`, {
      field: 'dealers',
    });
  }
}

/** prepare: a receiver; after its vote, only replays of the dealer set it voted for. */
export function checkPrepare(
  state: ReshareState,
  req: { dealers: readonly number[]; chunk: number; keys: readonly KeyRef[] },
  size: number,
): void {
  checkChunk(state, 'prepare', req, size);
  if (state.vote && state.vote.dealers.join(',') !== req.dealers.join(',')) {
    throw stateError(
      state.params.reshareId,
      state.step,
      'prepare',
      `it voted for dealers ${state.vote.dealers.join(', ')}`,
    );
  }
}

/**
 * vote: a receiver whose prepared chunks `digests` (by chunk number, for this dealer set) cover
 * chunks 0..chunks-1, which must be every chunk of the begun list. `sign` makes the transcript and
 * its signature. A second vote must be a replay of the first.
 */
export function vote(
  state: ReshareState,
  req: { dealers: readonly number[]; chunks: number },
  digests: ReadonlyMap<number, string>,
  size: number,
  sign: (dealers: number[], chunks: string[]) => { transcript: string; signature: string },
): { state: ReshareState; vote: ReshareVoteRecord } {
  const id = state.params.reshareId;
  expectStep(id, state, 'vote');
  role(state, 'vote', 'receiver');
  checkDealers(state.params, req.dealers);
  if (state.vote) {
    if (
      state.vote.dealers.join(',') !== req.dealers.join(',') ||
      state.vote.chunks !== req.chunks
    ) {
      throw stateError(id, state.step, 'vote', 'it voted on another dealer set or chunk count');
    }
    return { state, vote: state.vote };
  }
  const want = chunkCount(state.params, size);
  if (req.chunks !== want) {
    throw new KmaasError(
      'ERR_RESHARE_KEYSET',
      `reshare ${id}: ${req.chunks} chunk(s) named, the begun key list has ${want}`,
      { reshareId: id, chunks: req.chunks, expected: want },
    );
  }
  const chunks: string[] = [];
  const missing: number[] = [];
  for (let c = 0; c < want; c++) {
    const d = digests.get(c);
    if (d === undefined) missing.push(c);
    else chunks.push(d);
  }
  if (missing.length > 0) {
    throw stateError(id, state.step, 'vote', `chunk(s) ${missing.join(', ')} not prepared`);
  }
  const dealers = [...req.dealers];
  const signed = sign(dealers, chunks);
  const record = { dealers, chunks: req.chunks, ...signed };
  return { state: { ...state, step: 'voted', vote: record }, vote: record };
}

/**
 * commit: every new member's vote over `transcript` must verify (`valid(node, signature)`), and a
 * receiver must have voted that very transcript. A replay of a committed one is answered again.
 */
export function commit(
  state: ReshareState,
  req: { transcript: string; votes: readonly { node: number; signature: string }[] },
  valid: (node: number, signature: string) => boolean,
  now: number,
): { state: ReshareState; replay: boolean } {
  const id = state.params.reshareId;
  expectStep(id, state, 'commit');
  if (state.committed) {
    if (state.committed.transcript !== req.transcript) {
      throw new KmaasError(
        'ERR_RESHARE_VOTE',
        `reshare ${id} was committed with another transcript`,
        { reshareId: id, nodes: [] },
      );
    }
    return { state, replay: true };
  }
  const bad = state.params.committee
    .map((m) => m.node)
    .filter((node) => {
      const votes = req.votes.filter((v) => v.node === node);
      return votes.length !== 1 || !valid(node, votes[0]!.signature);
    });
  if (bad.length > 0) {
    throw new KmaasError(
      'ERR_RESHARE_VOTE',
      `reshare ${id}: no single valid vote of node(s) ${bad.join(', ')}`,
      { reshareId: id, nodes: bad },
    );
  }
  if (state.params.receiver) {
    if (!state.vote) throw stateError(id, state.step, 'commit', 'this receiver has not voted');
    if (state.vote.transcript !== req.transcript) {
      throw new KmaasError(
        'ERR_RESHARE_VOTE',
        `reshare ${id}: the transcript is not the one this node voted`,
        { reshareId: id, nodes: [] },
      );
    }
  }
  return {
    state: { ...state, step: 'committed', committed: { transcript: req.transcript, at: now } },
    replay: false,
  };
}

/**
 * commit for a reshare this node never began, with its proposal (catch-up): the caller checked
 * the proposal and that this node is not in its new committee; here every new member's vote over
 * `transcript` must verify. The state is committed at once, as a node that is neither dealer nor
 * receiver: its following finish erases every older epoch.
 */
export function catchUpCommit(
  params: ReshareParams,
  req: { transcript: string; votes: readonly { node: number; signature: string }[] },
  valid: (node: number, signature: string) => boolean,
  now: number,
): ReshareState {
  if (params.dealer || params.receiver) {
    throw stateError(params.reshareId, 'none', 'commit', 'a member takes part from begin');
  }
  const begun: ReshareState = { params, step: 'begun' };
  return commit(begun, req, valid, now).state;
}

export function finish(state: ReshareState): { state: ReshareState; replay: boolean } {
  expectStep(state.params.reshareId, state, 'finish');
  if (state.step === 'finished') return { state, replay: true };
  return { state: { ...state, step: 'finished' }, replay: false };
}

export function abort(state: ReshareState): { state: ReshareState; replay: boolean } {
  expectStep(state.params.reshareId, state, 'abort');
  if (state.step === 'aborted') return { state, replay: true };
  const next: ReshareState = { ...state, step: 'aborted' };
  delete next.vote;
  return { state: next, replay: false };
}

/** Open: begun or voted (dkg.round1 is refused meanwhile). */
export function isOpen(step: ReshareStep): boolean {
  return step === 'begun' || step === 'voted';
}
