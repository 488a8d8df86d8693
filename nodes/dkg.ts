/**
 * DKG request handlers: load the ceremony state, run one transition of dkg-machine.ts, persist
 * the result (sealed) before replying. Persisting first means a node restarted between rounds
 * answers the next round as if it never stopped, and a repeated request gets the same answer,
 * also after the key is stored:
 *
 *   dkg.round1  same ceremony id and parameters -> the same broadcast
 *               (parameters include the committee's identity keys: the operator-signed
 *               proposal's, which the round-1 committee must equal; this node's own entry must be
 *               its own keys; kept in the sealed state for rounds 2 and 3)
 *   dkg.round2  same round-1 packages           -> the same sealed outgoing packages, byte for
 *               byte (signed and encrypted to each recipient's identity key)
 *   dkg.round3  ceremony already finished       -> the stored key package
 *   dkg.commit  every participant holds the key -> the ceremony state is erased
 *
 * The state outlives the key on purpose: a participant that has not finished round 3 (it
 * crashed, its answer was lost) can only finish when the others replay rounds 1 and 2 for it,
 * under the same ceremony id. The coordinator sends dkg.commit once every participant returned
 * the same key package; abandoned ceremonies expire (dkg-expiry.ts).
 *
 * Round 1 carries the operator proposal (nodes/proposals.ts): nothing is stored, and no ceremony
 * state exists, unless it passes. Its nonce is then bound to this ceremony id, so only a replay of
 * this very ceremony may carry it again.
 *
 * A (tenant, version) that already has a key never gets a second one (ERR_CEREMONY_CONFLICT).
 *
 * Epochs (DESIGN.md section 3): a key is made in the node's current committee epoch, with that
 * epoch's committee and threshold (proposals.ts step 5), and its package carries the epoch. A node
 * with no epoch yet founds epoch 1 from the first ceremony it accepts, in the transaction that
 * records the proposal's nonce and the ceremony state. While a reshare is open on the node
 * (ctx.ceremonyGate), round 1 and the storing of a new key in round 3 are refused: the reshare
 * moves exactly the keys it listed at its start, and a key made meanwhile would be left behind.
 *
 * Handlers are synchronous (better-sqlite3, noble), so requests never interleave.
 */
import type { z } from 'zod';
import { KmaasError } from '../shared/errors.ts';
import type { KeyPackage } from '../shared/key-package.ts';
import type {
  dkgCommitRequest,
  dkgRound1Request,
  dkgRound2Request,
  dkgRound3Request,
} from '../shared/messages.ts';
import type { LogFields, NodeContext } from './context.ts';
import { decodeCeremony, encodeCeremony } from './dkg-codec.ts';
import {
  advanceRound2,
  checkParams,
  finishRound3,
  sameParams,
  startCeremony,
  type CeremonyParams,
  type CeremonyState,
  type Round1Wire,
  type Round2Wire,
} from './dkg-machine.ts';
import type { NodeIdentity } from './identity.ts';
import {
  checkDkgEpoch,
  checkDkgProposal,
  checkLifecycle,
  committeeDifference,
} from './proposals.ts';
import { secretShare } from './secret-share.ts';

function conflict(ceremonyId: string, message: string, details: LogFields = {}): KmaasError {
  return new KmaasError('ERR_CEREMONY_CONFLICT', message, { ceremonyId, ...details });
}

function load(ctx: NodeContext, ceremonyId: string): CeremonyState | undefined {
  const stored = ctx.store.loadCeremony(ceremonyId);
  if (!stored) return undefined;
  try {
    return decodeCeremony(stored.state);
  } finally {
    stored.state.fill(0);
  }
}

function save(ctx: NodeContext, state: CeremonyState): void {
  const bytes = encodeCeremony(state);
  try {
    ctx.store.saveCeremony({
      ceremonyId: state.params.ceremonyId,
      tenant: state.params.tenant,
      version: state.params.version,
      state: bytes,
    });
  } finally {
    bytes.fill(0);
  }
}

/** DKG needs the node's identity keys: they sign and open the round-2 packages. */
function identityOf(ctx: NodeContext): NodeIdentity {
  if (!ctx.identity) throw new KmaasError('ERR_INTERNAL', 'this node has no identity keys');
  return ctx.identity;
}

function unknownCeremony(ceremonyId: string): KmaasError {
  return new KmaasError('ERR_UNKNOWN_CEREMONY', `no ceremony ${ceremonyId} on this node`, {
    ceremonyId,
  });
}

/**
 * Refuse to work on a ceremony when its (tenant, version) already has a key made by another
 * ceremony: this one can never finish here.
 */
function checkNotSuperseded(ctx: NodeContext, params: CeremonyParams): void {
  const holder = ctx.store.keyCeremonyId(params.tenant, params.version);
  if (holder !== undefined && holder !== params.ceremonyId) {
    throw conflict(
      params.ceremonyId,
      `${params.tenant} v${params.version} already has a key on node ${ctx.nodeId}`,
      { tenant: params.tenant, version: params.version },
    );
  }
}

/** The stored state of a ceremony; a committed or unknown ceremony is an error. */
function stateOf(ctx: NodeContext, ceremonyId: string): CeremonyState {
  const state = load(ctx, ceremonyId);
  if (state) {
    checkNotSuperseded(ctx, state.params);
    return state;
  }
  if (ctx.store.keyRecordByCeremony(ceremonyId)) {
    throw conflict(ceremonyId, `ceremony ${ceremonyId} has finished and was committed`);
  }
  throw unknownCeremony(ceremonyId);
}

/** ERR_CEREMONY_CONFLICT while a reshare is open on this node (see the header). */
function checkNoReshare(ctx: NodeContext, ceremonyId: string): void {
  const reshareId = ctx.ceremonyGate?.();
  if (reshareId !== undefined) {
    throw conflict(ceremonyId, `reshare ${reshareId} is open on node ${ctx.nodeId}`, {
      reshareId,
    });
  }
}

function describe(state: CeremonyState, log: LogFields): void {
  log.ceremonyId = state.params.ceremonyId;
  log.tenant = state.params.tenant;
  log.version = state.params.version;
}

export function handleRound1(
  ctx: NodeContext,
  body: z.infer<typeof dkgRound1Request>,
  log: LogFields,
): Round1Wire {
  log.ceremonyId = body.ceremonyId;
  log.tenant = body.tenant;
  log.version = body.version;
  checkNoReshare(ctx, body.ceremonyId);
  const use = checkDkgProposal(ctx, body, log);
  // The committee whose keys seal round 2 is the operators' (checkDkgProposal refused any other).
  const params = checkParams(
    ctx.nodeId,
    {
      ceremonyId: body.ceremonyId,
      tenant: body.tenant,
      version: body.version,
      threshold: body.threshold,
      participants: body.participants,
      committee: body.proposal.committee ?? [],
    },
    identityOf(ctx).published(),
  );
  const existing = load(ctx, params.ceremonyId);
  if (existing) {
    if (!sameParams(existing.params, params)) {
      throw conflict(
        params.ceremonyId,
        `ceremony ${params.ceremonyId} exists with other parameters`,
      );
    }
    // A replay, also after this node stored the key of this very ceremony.
    checkNotSuperseded(ctx, params);
    return existing.round1;
  }
  if (ctx.store.hasKey(params.tenant, params.version)) {
    throw conflict(
      params.ceremonyId,
      `${params.tenant} v${params.version} already has a key on node ${ctx.nodeId}`,
      { tenant: params.tenant, version: params.version },
    );
  }
  // A replay above was checked when its ceremony began (and round 3 checks again).
  checkDkgEpoch(ctx, body.proposal, use.proposalId, params, log);
  checkLifecycle(ctx, body.proposal, use.proposalId);
  const state = startCeremony(ctx.nodeId, params, ctx.rng);
  // One transaction: a ceremony state never exists without the proposal that allowed it, nor
  // without the epoch it makes its key in.
  const epoch = ctx.store.transaction(() => {
    const { record } = ctx.store.saveGenesisEpoch(params);
    if (!ctx.store.proposalUse(use.nonce)) ctx.store.recordProposalUse(use);
    save(ctx, state);
    return record;
  });
  ctx.keyring.setEpoch(epoch);
  log.participants = params.participants;
  log.threshold = params.threshold;
  return state.round1;
}

export function handleRound2(
  ctx: NodeContext,
  body: z.infer<typeof dkgRound2Request>,
  log: LogFields,
): { packages: Round2Wire[] } {
  log.ceremonyId = body.ceremonyId;
  const state = stateOf(ctx, body.ceremonyId);
  describe(state, log);
  const next = advanceRound2(ctx.nodeId, state, body.round1, identityOf(ctx), ctx.rng);
  if (next.state !== state) save(ctx, next.state);
  return { packages: next.reply };
}

export function handleRound3(
  ctx: NodeContext,
  body: z.infer<typeof dkgRound3Request>,
  log: LogFields,
): { keyPackage: KeyPackage } {
  log.ceremonyId = body.ceremonyId;
  // Finished already (before or after a commit): the stored package, whatever was sent.
  const done = ctx.store.keyRecordByCeremony(body.ceremonyId);
  if (done) {
    log.tenant = done.tenant;
    log.version = done.version;
    log.replayed = true;
    return { keyPackage: done.keyPackage };
  }
  const state = stateOf(ctx, body.ceremonyId);
  describe(state, log);
  checkNoReshare(ctx, body.ceremonyId);
  const epoch = epochOfCeremony(ctx, state.params);
  log.epoch = epoch;
  const { share, keyPackage } = finishRound3(
    ctx.nodeId,
    state,
    body.round2,
    identityOf(ctx),
    epoch,
  );
  // Store first, then serve: a key is never used before it is durable.
  const key = ctx.store.saveKey({
    tenant: state.params.tenant,
    version: state.params.version,
    ceremonyId: state.params.ceremonyId,
    share: secretShare(share),
    keyPackage,
  });
  ctx.keyring.add(key);
  return { keyPackage };
}

/**
 * The epoch a ceremony's key is made in: the node's current one, whose committee round 1 checked.
 * Should a reshare have committed another committee since (the coordinator runs one ceremony at a
 * time, so only a misbehaving one could cause this), the shares would belong to no epoch:
 * ERR_CEREMONY_CONFLICT. A ceremony begun before epochs existed makes an epoch-1 key.
 */
function epochOfCeremony(ctx: NodeContext, params: CeremonyParams): number {
  const current = ctx.store.currentEpoch();
  if (!current) return 1;
  const differ = committeeDifference(params.committee, current.committee);
  if (differ.length > 0 || params.threshold !== current.threshold) {
    throw conflict(
      params.ceremonyId,
      `ceremony ${params.ceremonyId} was begun with a committee other than epoch ${current.epoch}'s`,
      { epoch: current.epoch },
    );
  }
  return current.epoch;
}

/**
 * Every participant returned the same key package: this node's ceremony state is no longer
 * needed. Only a node that holds the key of this ceremony erases it; repeating is harmless.
 */
export function handleCommit(
  ctx: NodeContext,
  body: z.infer<typeof dkgCommitRequest>,
  log: LogFields,
): { ceremonyId: string; erased: boolean } {
  log.ceremonyId = body.ceremonyId;
  const done = ctx.store.keyRecordByCeremony(body.ceremonyId);
  if (!done) {
    const pending = ctx.store.ceremonyKey(body.ceremonyId);
    if (!pending) throw unknownCeremony(body.ceremonyId);
    log.tenant = pending.tenant;
    log.version = pending.version;
    throw conflict(
      body.ceremonyId,
      `ceremony ${body.ceremonyId} has not finished on node ${ctx.nodeId}; its state is kept`,
    );
  }
  log.tenant = done.tenant;
  log.version = done.version;
  const erased = ctx.store.deleteCeremony(body.ceremonyId);
  log.erased = erased;
  return { ceremonyId: body.ceremonyId, erased };
}
