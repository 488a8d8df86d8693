/**
 * Resharing request handlers (DESIGN.md section 3, PLAN "Node messages"): load the reshare's
 * state (reshare-store.ts), run one transition of reshare-machine.ts, persist before replying.
 *
 *   reshare.begin    proposal checks (quorum, cluster, expiry, this node's identity in the new or
 *                    the previous committee, previous == this node's epoch, threshold policy,
 *                    nonce bound to the reshare id), key list covers every old-epoch key held,
 *                    one reshare at a time -> { node, epoch, dealer, receiver }
 *   reshare.deal     dealer: one chunk's commitments and sealed pieces (seed made at first deal,
 *                    stored sealed: a replay deals the same polynomials)
 *   reshare.prepare  receiver: checks a chunk of dealings, keeps its new shares (sealed) keyed by
 *                    (reshare id, dealer set, chunk) -> the chunk digest
 *   reshare.vote     receiver: every chunk prepared -> transcript and Ed25519 vote
 *   reshare.commit   a valid vote of every new member: ONE transaction writes the epoch record,
 *                    the new epoch's shares and the reshare state; the old epoch's shares stay
 *                    (retiring) so the coordinator can still route epoch e until it switches.
 *                    With a proposal, for a reshare this node never began: catch-up of a node
 *                    it removed (reshare-catchup.ts)
 *   reshare.finish   erase every older epoch's shares, the seed and the chunks
 *   reshare.abort    before commit: erase the pending state; the id may begin again
 *
 * A committed reshare finishes on its own RESHARE_FINISH_AFTER_MS after commit (startReshareFinisher).
 * Handlers are synchronous (better-sqlite3, noble), so requests never interleave.
 */
import type { Logger } from 'pino';
import type { z } from 'zod';
import { fromB64 } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import {
  RESHARE_CHUNK,
  type reshareAbortRequest,
  type reshareBeginRequest,
  type reshareCommitRequest,
  type reshareDealRequest,
  type reshareFinishRequest,
  type resharePrepareRequest,
  type reshareVoteRequest,
} from '../shared/messages.ts';
import { reshareIdOf, type CommitteeMember, type Proposal } from '../shared/proposal.ts';
import { DEFAULT_RESHARE_FINISH_AFTER_MS, type Failpoint } from './config.ts';
import type { LogFields, NodeContext } from './context.ts';
import type { NodeIdentity } from './identity.ts';
import { admitReshareProposal, checkNonce, useOf } from './proposals.ts';
import { catchUpParams } from './reshare-catchup.ts';
import { pauseEvery } from './cooperative.ts';
import { dealChunk, prepareChunk, type DealReply } from './reshare-chunk.ts';
import {
  abort,
  begin,
  catchUpCommit,
  checkDeal,
  checkPrepare,
  commit,
  expectStep,
  finish,
  stateError,
  vote,
  type ReshareParams,
  type ReshareState,
} from './reshare-machine.ts';
import { ReshareStore } from './reshare-store.ts';
import { digestOf, signVote, transcriptOf, voteValid, type KeyRef } from './reshare-transcript.ts';
import { secretShare } from './secret-share.ts';
import type { StoredKey } from './store.ts';

const fired = new Set<string>();

/** SIGKILL this process at `point` when the configuration set it, once per process start. */
function failpoint(ctx: NodeContext, point: Failpoint): void {
  if (!ctx.failpoints?.has(point) || fired.has(point)) return;
  fired.add(point);
  process.kill(process.pid, 'SIGKILL');
}

function identityOf(ctx: NodeContext): NodeIdentity {
  if (!ctx.identity) throw new KmaasError('ERR_INTERNAL', 'this node has no identity keys');
  return ctx.identity;
}

function sortedMembers(committee: readonly CommitteeMember[]): CommitteeMember[] {
  return [...committee].sort((a, b) => a.node - b.node);
}

/** Two committees differ in a node or in any identity key. */
function differ(a: readonly CommitteeMember[], b: readonly CommitteeMember[]): boolean {
  const key = (c: readonly CommitteeMember[]) =>
    sortedMembers(c)
      .map((m) => `${m.node}:${m.signing}:${m.encryption}`)
      .join(',');
  return key(a) !== key(b);
}

function mismatch(id: string, message: string, details: Record<string, unknown> = {}) {
  return new KmaasError('ERR_PROPOSAL_MISMATCH', `proposal ${id.slice(0, 12)}: ${message}`, {
    proposal: id,
    ...details,
  });
}

/** t' >= max(2, the operators' minThreshold), t' <= n', 2t' > n'. */
function checkThreshold(ctx: NodeContext, threshold: number, n: number): void {
  const min = Math.max(2, ctx.policy.minThreshold ?? 2);
  if (threshold < min || threshold > n || 2 * threshold <= n) {
    throw new KmaasError(
      'ERR_BAD_THRESHOLD',
      `threshold ${threshold} for ${n} members: expected ${min} <= t <= n and t > n/2`,
      { threshold, members: n, minThreshold: min },
    );
  }
}

function compareKeys(a: KeyRef, b: KeyRef): number {
  return a.tenant === b.tenant ? a.version - b.version : a.tenant < b.tenant ? -1 : 1;
}

/** The old epoch a committee.reshare or committee.refresh moves from, as this node sees it. */
function oldEpochOf(
  ctx: NodeContext,
  body: z.infer<typeof reshareBeginRequest>,
  id: string,
): { epoch: number; threshold: number; committee: CommitteeMember[] } {
  const p = body.proposal;
  const record = ctx.store.currentEpoch();
  if (p.operation === 'committee.refresh') {
    const current = record ?? { epoch: 1, threshold: p.threshold!, committee: p.committee! };
    if (p.threshold !== current.threshold || differ(p.committee!, current.committee)) {
      throw mismatch(id, `a refresh keeps epoch ${current.epoch}'s committee and threshold`, {
        field: 'committee',
        epoch: current.epoch,
      });
    }
    const every = p.everySeconds! * 1000;
    const period = Math.floor((ctx.now ?? Date.now)() / every);
    const allowed = [period, period - 1];
    if (body.period === undefined || !allowed.includes(body.period)) {
      throw mismatch(id, `period: a refresh now belongs to period ${period}`, {
        field: 'period',
        period,
      });
    }
    if (body.reshareId !== reshareIdOf(id, body.period)) {
      throw mismatch(id, 'reshareId: not the one of this proposal and period', {
        field: 'reshareId',
      });
    }
    return {
      epoch: current.epoch,
      threshold: current.threshold,
      committee: sortedMembers(current.committee),
    };
  }
  if (p.operation !== 'committee.reshare') {
    throw mismatch(id, `${p.operation} is not a reshare`, { field: 'operation' });
  }
  if (body.period !== undefined) {
    throw mismatch(id, 'period: only a refresh has one', { field: 'period' });
  }
  if (body.reshareId !== reshareIdOf(id)) {
    throw mismatch(id, 'reshareId: not the one of this proposal', { field: 'reshareId' });
  }
  return { ...p.previous!, committee: sortedMembers(p.previous!.committee) };
}

function previousMatchesRecord(
  ctx: NodeContext,
  id: string,
  previous: { epoch: number; threshold: number; committee: CommitteeMember[] },
): void {
  const record = ctx.store.currentEpoch();
  // A node with keys but no record (made before epochs) takes the operators' word for epoch e.
  if (!record) return;
  if (
    record.epoch !== previous.epoch ||
    record.threshold !== previous.threshold ||
    differ(record.committee, previous.committee)
  ) {
    throw mismatch(
      id,
      `previous: node ${ctx.nodeId} is at epoch ${record.epoch} (threshold ${record.threshold}), ` +
        'not the previous epoch the proposal names',
      { field: 'previous', epoch: record.epoch },
    );
  }
}

function describe(state: ReshareState, log: LogFields): void {
  log.reshareId = state.params.reshareId;
  log.epoch = state.params.epoch;
}

function loadState(ctx: NodeContext, reshareId: string): ReshareState | undefined {
  return ReshareStore.of(ctx.store).load(reshareId);
}

export function handleBegin(
  ctx: NodeContext,
  body: z.infer<typeof reshareBeginRequest>,
  log: LogFields,
): { node: number; epoch: number; dealer: boolean; receiver: boolean } {
  log.reshareId = body.reshareId;
  const p: Proposal = body.proposal;
  const reshares = ReshareStore.of(ctx.store);
  if (p.operation !== 'committee.reshare' && p.operation !== 'committee.refresh') {
    throw new KmaasError('ERR_PROPOSAL_MISMATCH', `${p.operation} is not a reshare`, {
      field: 'operation',
    });
  }
  const record = ctx.store.currentEpoch();
  const previousCommittee =
    p.operation === 'committee.reshare'
      ? p.previous!.committee
      : (record?.committee ?? p.committee ?? []);
  const admitted = admitReshareProposal(ctx, p, previousCommittee, log);
  const id = admitted.id;
  const previous = oldEpochOf(ctx, body, id);
  if (admitted.oldMember) previousMatchesRecord(ctx, id, previous);
  const committee = sortedMembers(p.committee!);
  checkThreshold(ctx, p.threshold!, committee.length);
  const keys = body.keys.map((k) => ({ tenant: k.tenant, version: k.version }));
  for (let i = 1; i < keys.length; i++) {
    if (compareKeys(keys[i - 1]!, keys[i]!) >= 0) {
      throw new KmaasError('ERR_VALIDATION', 'keys: expected sorted by tenant then version, once', {
        field: 'keys',
      });
    }
  }
  // Every key this node holds at epoch e must move: one left out would be lost at finish.
  const listed = new Set(keys.map((k) => `${k.tenant}/${k.version}`));
  const held = ctx.store.keyRecords(previous.epoch);
  const missing = held
    .filter((k) => !listed.has(`${k.tenant}/${k.version}`))
    .map((k) => ({ tenant: k.tenant, version: k.version }));
  if (missing.length > 0) {
    throw new KmaasError(
      'ERR_RESHARE_KEYSET',
      `reshare ${body.reshareId}: node ${ctx.nodeId} holds ${missing.length} key(s) at epoch ` +
        `${previous.epoch} the reshare does not list`,
      { reshareId: body.reshareId, missing: missing.slice(0, 100) },
    );
  }
  const dealer = admitted.oldMember && held.length === keys.length;
  const params: ReshareParams = {
    reshareId: body.reshareId,
    proposalId: id,
    proposal: p,
    ...(body.period === undefined ? {} : { period: body.period }),
    oldEpoch: previous.epoch,
    oldThreshold: previous.threshold,
    oldCommittee: previous.committee,
    epoch: previous.epoch + 1,
    threshold: p.threshold!,
    committee,
    keys,
    dealer,
    receiver: admitted.newMember,
  };
  // A refresh's nonce acts once per period: each period is its own use.
  const base = useOf(p, id, body.reshareId);
  const use = body.period === undefined ? base : { ...base, nonce: `${p.nonce}/${body.period}` };
  abandonUnvoted(ctx, log, body.reshareId);
  const open = reshares.open();
  const { state, replay } = begin(
    loadState(ctx, body.reshareId),
    params,
    open && { reshareId: open.params.reshareId, step: open.step },
  );
  if (!replay) {
    checkNonce(ctx, use);
    // An earlier reshare committed but not yet finished: this one moves on from its epoch, so the
    // older epochs go now (the coordinator's finish, or the timer, would have erased them).
    for (const done of reshares.inSteps(['committed'])) finishState(ctx, done);
    ctx.store.transaction(() => {
      if (!ctx.store.proposalUse(use.nonce)) ctx.store.recordProposalUse(use);
      reshares.save(state);
    });
  }
  describe(state, log);
  log.dealer = state.params.dealer;
  log.receiver = state.params.receiver;
  return {
    node: ctx.nodeId,
    epoch: record?.epoch ?? 0,
    dealer: state.params.dealer,
    receiver: state.params.receiver,
  };
}

function stateFor(ctx: NodeContext, reshareId: string, log: LogFields): ReshareState | undefined {
  log.reshareId = reshareId;
  const state = loadState(ctx, reshareId);
  if (state) describe(state, log);
  return state;
}

export async function handleDeal(
  ctx: NodeContext,
  body: z.infer<typeof reshareDealRequest>,
  log: LogFields,
): Promise<DealReply> {
  const state = expectStep(body.reshareId, stateFor(ctx, body.reshareId, log), 'deal');
  checkDeal(ctx.nodeId, state, body, RESHARE_CHUNK);
  log.chunk = body.chunk;
  failpoint(ctx, 'reshare.deal:before');
  const held = body.keys.map((k) => {
    const key = ctx.store.getKey(k.tenant, k.version, state.params.oldEpoch);
    if (!key) {
      throw new KmaasError(
        'ERR_RESHARE_KEYSET',
        `node ${ctx.nodeId} holds no share of ${k.tenant} v${k.version} at epoch ${state.params.oldEpoch}`,
        { reshareId: body.reshareId, missing: [k] },
      );
    }
    return { share: key.share.reveal(), keyPackage: key.keyPackage };
  });
  const reshares = ReshareStore.of(ctx.store);
  const seed = ctx.store.transaction(() => reshares.seed(body.reshareId));
  try {
    return await dealChunk({
      self: ctx.nodeId,
      params: state.params,
      dealers: body.dealers,
      chunk: body.chunk,
      keys: body.keys,
      held,
      seed,
      signer: identityOf(ctx),
      ...(ctx.rng ? { rng: ctx.rng } : {}),
      corruptLowest: ctx.failpoints?.has('reshare.deal:corrupt-piece') ?? false,
      pause: pauseEvery(),
    });
  } finally {
    seed.fill(0);
  }
}

export async function handlePrepare(
  ctx: NodeContext,
  body: z.infer<typeof resharePrepareRequest>,
  log: LogFields,
): Promise<{ node: number; chunk: number; digest: string }> {
  const state = expectStep(body.reshareId, stateFor(ctx, body.reshareId, log), 'prepare');
  checkPrepare(state, body, RESHARE_CHUNK);
  log.chunk = body.chunk;
  const reshares = ReshareStore.of(ctx.store);
  // The dealers' signatures name their dealings (Ed25519 is deterministic, and so is a dealer's
  // replay from its stored seed): the same ones are a replay, answered from the stored chunk.
  const input = digestOf(
    [...body.dealings]
      .sort((a, b) => a.dealer - b.dealer)
      .map((d) => ({ dealer: d.dealer, signature: d.signature })),
  );
  const done = reshares.chunkInputs(body.reshareId, body.dealers).get(body.chunk);
  if (done?.input === input) return { node: ctx.nodeId, chunk: body.chunk, digest: done.digest };
  // Other dealings for a chunk already prepared (a dealer lost its seed to an abort this node
  // never got): before its vote the node takes the new ones; after it, never.
  if (done && state.vote) {
    throw stateError(body.reshareId, state.step, 'prepare', 'it voted on other dealings');
  }
  const prepared = await prepareChunk({
    self: ctx.nodeId,
    params: state.params,
    dealers: body.dealers,
    chunk: body.chunk,
    keys: body.keys,
    oldPackages: body.oldPackages,
    dealings: body.dealings,
    recipient: identityOf(ctx),
    pause: pauseEvery(),
  });
  try {
    // The work above let other messages in: an abort (or a vote) may have moved the reshare on
    // meanwhile, and new shares must never be stored for a reshare that is no longer preparing.
    const now = expectStep(body.reshareId, loadState(ctx, body.reshareId), 'prepare');
    if (now.vote && !state.vote) {
      throw stateError(body.reshareId, now.step, 'prepare', 'it voted meanwhile');
    }
    failpoint(ctx, 'reshare.prepare:before-persist');
    reshares.saveChunk(body.reshareId, body.dealers, body.chunk, state.params.epoch, {
      ...prepared,
      input,
    });
    failpoint(ctx, 'reshare.prepare:after-persist');
  } finally {
    prepared.shares.fill(0n);
  }
  return { node: ctx.nodeId, chunk: body.chunk, digest: prepared.digest };
}

export function handleVote(
  ctx: NodeContext,
  body: z.infer<typeof reshareVoteRequest>,
  log: LogFields,
): { node: number; transcript: string; signature: string } {
  const state = expectStep(body.reshareId, stateFor(ctx, body.reshareId, log), 'vote');
  const reshares = ReshareStore.of(ctx.store);
  const { params } = state;
  const next = vote(
    state,
    body,
    reshares.chunkDigests(body.reshareId, body.dealers),
    RESHARE_CHUNK,
    (dealers, chunks) => {
      const transcript = transcriptOf({
        reshareId: params.reshareId,
        proposal: params.proposalId,
        epoch: params.epoch,
        dealers,
        keys: params.keys,
        chunks,
      });
      return { transcript, signature: signVote(transcript, identityOf(ctx)) };
    },
  );
  if (next.state !== state) reshares.save(next.state);
  return { node: ctx.nodeId, transcript: next.vote.transcript, signature: next.vote.signature };
}

/** The new epoch's shares from the chunks this receiver prepared for the dealer set it voted. */
function newKeys(ctx: NodeContext, state: ReshareState): StoredKey[] {
  const { params, vote: voted } = state;
  if (!params.receiver || !voted) return [];
  const reshares = ReshareStore.of(ctx.store);
  const ceremonies = new Map(
    ctx.store.keyRecords(params.oldEpoch).map((k) => [`${k.tenant}/${k.version}`, k.ceremonyId]),
  );
  const out: StoredKey[] = [];
  for (let c = 0; c < voted.chunks; c++) {
    const chunk = reshares.loadChunk(params.reshareId, voted.dealers, c, params.epoch);
    if (!chunk) {
      throw new KmaasError('ERR_INTERNAL', `reshare ${params.reshareId}: chunk ${c} is gone`);
    }
    chunk.packages.forEach((keyPackage, i) => {
      const name = `${keyPackage.tenant}/${keyPackage.version}`;
      out.push({
        tenant: keyPackage.tenant,
        version: keyPackage.version,
        epoch: params.epoch,
        // A reshared key keeps the ceremony of its DKG; a new member never saw it.
        ceremonyId: ceremonies.get(name) ?? params.reshareId,
        share: secretShare(chunk.shares[i]!),
        keyPackage,
      });
    });
  }
  return out;
}

export function handleCommit(
  ctx: NodeContext,
  body: z.infer<typeof reshareCommitRequest>,
  log: LogFields,
): { node: number; epoch: number; role: 'member' | 'removed' } {
  const stored = stateFor(ctx, body.reshareId, log);
  if (!stored && body.proposal) return catchUp(ctx, body, log);
  const state = expectStep(body.reshareId, stored, 'commit');
  const { params } = state;
  const next = commit(state, body, voteChecker(params.committee, body.transcript), ctx.store.now());
  const role = params.receiver ? 'member' : 'removed';
  log.role = role;
  if (next.replay) return { node: ctx.nodeId, epoch: params.epoch, role };
  failpoint(ctx, 'reshare.commit:before');
  const keys = newKeys(ctx, next.state);
  ctx.store.transaction(() => {
    ctx.store.commitEpoch(
      {
        epoch: params.epoch,
        threshold: params.threshold,
        committee: params.committee,
        reshareId: params.reshareId,
        transcript: body.transcript,
      },
      keys,
    );
    ReshareStore.of(ctx.store).save(next.state);
  });
  // Durable: the new epoch serves, the old one still answers when asked for by epoch.
  for (const k of keys) ctx.keyring.add(k);
  ctx.keyring.setEpoch(ctx.store.currentEpoch());
  failpoint(ctx, 'reshare.commit:after');
  return { node: ctx.nodeId, epoch: params.epoch, role };
}

/** Checks one new member's vote: its signature over `transcript` by its committee signing key. */
function voteChecker(
  committee: readonly { node: number; signing: string }[],
  transcript: string,
): (node: number, signature: string) => boolean {
  const signing = new Map(committee.map((m) => [m.node, m.signing]));
  return (node, signature) =>
    voteValid(transcript, signature, fromB64(signing.get(node)!, 'signing'));
}

/**
 * commit of a reshare this node never began (reshare-catchup.ts): it was down throughout and is
 * not in the new committee. The new epoch is recorded with no keys, an open reshare it had begun
 * before is dropped (the cluster moved past it), and finish then erases the older epochs.
 */
function catchUp(
  ctx: NodeContext,
  body: z.infer<typeof reshareCommitRequest>,
  log: LogFields,
): { node: number; epoch: number; role: 'removed' } {
  const params = catchUpParams(ctx, body, log);
  const state = catchUpCommit(
    params,
    body,
    voteChecker(params.committee, body.transcript),
    ctx.store.now(),
  );
  describe(state, log);
  log.role = 'removed';
  const reshares = ReshareStore.of(ctx.store);
  ctx.store.transaction(() => {
    const open = reshares.open();
    if (open) {
      reshares.erasePending(open.params.reshareId);
      reshares.save(abort(open).state);
    }
    ctx.store.commitEpoch(
      {
        epoch: params.epoch,
        threshold: params.threshold,
        committee: params.committee,
        reshareId: params.reshareId,
        transcript: body.transcript,
      },
      [],
    );
    reshares.save(state);
  });
  ctx.keyring.setEpoch(ctx.store.currentEpoch());
  return { node: ctx.nodeId, epoch: params.epoch, role: 'removed' };
}

/** Erase older epochs, seed and chunks in one transaction, then drop them from memory. */
function finishState(ctx: NodeContext, state: ReshareState): number {
  const next = finish(state);
  if (next.replay) return 0;
  const reshares = ReshareStore.of(ctx.store);
  const erased = ctx.store.transaction(() => {
    const n = ctx.store.eraseKeysBefore(state.params.epoch);
    reshares.erasePending(state.params.reshareId);
    reshares.save(next.state);
    return n;
  });
  ctx.store.scrubLog();
  ctx.keyring.dropBefore(state.params.epoch);
  return erased;
}

export function handleFinish(
  ctx: NodeContext,
  body: z.infer<typeof reshareFinishRequest>,
  log: LogFields,
): { node: number; erased: number } {
  const state = expectStep(body.reshareId, stateFor(ctx, body.reshareId, log), 'finish');
  const erased = finishState(ctx, state);
  log.erased = erased;
  return { node: ctx.nodeId, erased };
}

export function handleAbort(
  ctx: NodeContext,
  body: z.infer<typeof reshareAbortRequest>,
  log: LogFields,
): { node: number; aborted: boolean } {
  const stored = stateFor(ctx, body.reshareId, log);
  // Best effort from the coordinator: a node that never began it has nothing to abort.
  if (!stored) return { node: ctx.nodeId, aborted: false };
  const next = abort(stored);
  if (next.replay) return { node: ctx.nodeId, aborted: false };
  const reshares = ReshareStore.of(ctx.store);
  ctx.store.transaction(() => {
    reshares.erasePending(body.reshareId);
    reshares.save(next.state);
  });
  ctx.store.scrubLog();
  return { node: ctx.nodeId, aborted: true };
}

export const reshareHandlers = {
  'reshare.begin': handleBegin,
  'reshare.deal': handleDeal,
  'reshare.prepare': handlePrepare,
  'reshare.vote': handleVote,
  'reshare.commit': handleCommit,
  'reshare.finish': handleFinish,
  'reshare.abort': handleAbort,
};

/**
 * Abort the reshare open on this node (other than `keep`) when it has not voted. Ceremonies run
 * one at a time (the coordinator's queue), so another ceremony reaching this node means the
 * coordinator gave that reshare up, and its abort may have missed this node while it was down.
 * Left open, it would refuse every later ceremony for good. Without this node's vote it cannot
 * commit (a receiver) or it is past needing this node (a dealer: a retry begins again), so
 * dropping its pending state harms nothing. A voted reshare may have been decided: it stays open
 * until its commit or abort arrives.
 */
export function abandonUnvoted(
  ctx: Pick<NodeContext, 'store'>,
  log: LogFields,
  keep?: string,
): string | undefined {
  const reshares = ReshareStore.of(ctx.store);
  const open = reshares.open();
  if (!open || open.step !== 'begun' || open.params.reshareId === keep) return undefined;
  const next = abort(open);
  ctx.store.transaction(() => {
    reshares.erasePending(open.params.reshareId);
    reshares.save(next.state);
  });
  ctx.store.scrubLog();
  log.abandoned = open.params.reshareId;
  return open.params.reshareId;
}

/**
 * NodeContext.ceremonyGate: the id of the reshare open on this node, if any, after abandoning
 * one that never voted (abandonUnvoted): a key generation reaching this node means no reshare job
 * runs any more.
 */
export function reshareGate(ctx: Pick<NodeContext, 'store'>): () => string | undefined {
  return () => {
    abandonUnvoted(ctx, {});
    return ReshareStore.of(ctx.store).open()?.params.reshareId;
  };
}

/** NodeContext.reshareStatus: the latest reshare not finished or aborted. */
export function reshareStatus(ctx: Pick<NodeContext, 'store'>) {
  return () => ReshareStore.of(ctx.store).latest();
}

/**
 * Finish every committed reshare whose commit is at least `afterMs` old: now, then every
 * min(afterMs, 60 s). A failure is logged, never thrown. Returns the function that stops it.
 */
export function startReshareFinisher(
  ctx: NodeContext,
  logger: Logger,
  afterMs: number = DEFAULT_RESHARE_FINISH_AFTER_MS,
): () => void {
  const run = () => {
    try {
      const now = ctx.store.now();
      for (const state of ReshareStore.of(ctx.store).inSteps(['committed'])) {
        if ((state.committed?.at ?? 0) + afterMs > now) continue;
        const erased = finishState(ctx, state);
        logger.info(
          { reshareId: state.params.reshareId, epoch: state.params.epoch, erased },
          'reshare finished on its own after commit; older epochs erased',
        );
      }
    } catch (err) {
      logger.error({ err }, 'finishing committed reshares failed');
    }
  };
  run();
  const timer = setInterval(run, Math.max(1000, Math.min(afterMs, 60_000)));
  timer.unref();
  return () => clearInterval(timer);
}
