/**
 * DKG request handlers: load the ceremony state, run one transition of dkg-machine.ts, persist
 * the result (sealed) before replying. Persisting first means a node restarted between rounds
 * answers the next round as if it never stopped, and a repeated request gets the same answer:
 *
 *   dkg.round1  same ceremony id and parameters -> the same broadcast
 *   dkg.round2  same round-1 packages           -> the same outgoing packages
 *   dkg.round3  ceremony already finished       -> the stored key package
 *
 * A (tenant, version) that already has a key never gets a second one (ERR_CEREMONY_CONFLICT).
 * Handlers are synchronous (better-sqlite3, noble), so requests never interleave.
 */
import type { z } from 'zod';
import { KmaasError } from '../shared/errors.ts';
import type { KeyPackage } from '../shared/key-package.ts';
import type { dkgRound1Request, dkgRound2Request, dkgRound3Request } from '../shared/messages.ts';
import type { LogFields, NodeContext } from './context.ts';
import { decodeCeremony, encodeCeremony } from './dkg-codec.ts';
import {
  advanceRound2,
  checkParams,
  finishRound3,
  sameParams,
  startCeremony,
  type CeremonyState,
  type Round1Wire,
  type Round2Wire,
} from './dkg-machine.ts';
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

/** The state of a ceremony in progress; a finished or unknown ceremony is an error. */
function inProgress(ctx: NodeContext, ceremonyId: string): CeremonyState {
  const state = load(ctx, ceremonyId);
  if (state) return state;
  if (ctx.store.findKeyByCeremony(ceremonyId)) {
    throw conflict(ceremonyId, `ceremony ${ceremonyId} has already finished`);
  }
  throw new KmaasError('ERR_UNKNOWN_CEREMONY', `no ceremony ${ceremonyId} on this node`, {
    ceremonyId,
  });
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
  const params = checkParams(ctx.nodeId, body);
  if (ctx.store.hasKey(params.tenant, params.version)) {
    throw conflict(
      params.ceremonyId,
      `${params.tenant} v${params.version} already has a key on node ${ctx.nodeId}`,
      { tenant: params.tenant, version: params.version },
    );
  }
  const existing = load(ctx, params.ceremonyId);
  if (existing) {
    if (!sameParams(existing.params, params)) {
      throw conflict(
        params.ceremonyId,
        `ceremony ${params.ceremonyId} exists with other parameters`,
      );
    }
    return existing.round1;
  }
  const state = startCeremony(ctx.nodeId, params, ctx.rng);
  save(ctx, state);
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
  const state = inProgress(ctx, body.ceremonyId);
  describe(state, log);
  const next = advanceRound2(ctx.nodeId, state, body.round1);
  if (next.state !== state) save(ctx, next.state);
  return { packages: next.reply };
}

export function handleRound3(
  ctx: NodeContext,
  body: z.infer<typeof dkgRound3Request>,
  log: LogFields,
): { keyPackage: KeyPackage } {
  log.ceremonyId = body.ceremonyId;
  const state = load(ctx, body.ceremonyId);
  if (!state) {
    const done = ctx.store.findKeyByCeremony(body.ceremonyId);
    if (!done) {
      throw new KmaasError('ERR_UNKNOWN_CEREMONY', `no ceremony ${body.ceremonyId} on this node`, {
        ceremonyId: body.ceremonyId,
      });
    }
    log.tenant = done.tenant;
    log.version = done.version;
    return { keyPackage: done.keyPackage };
  }
  describe(state, log);
  const { share, keyPackage } = finishRound3(ctx.nodeId, state, body.round2);
  const key = {
    tenant: state.params.tenant,
    version: state.params.version,
    ceremonyId: state.params.ceremonyId,
    share: secretShare(share),
    keyPackage,
  };
  // Store first, then serve: a key is never used before it is durable.
  ctx.store.saveKey(key);
  ctx.keyring.add(key);
  return { keyPackage };
}
