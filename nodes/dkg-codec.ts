/**
 * Serialisation of a DKG ceremony state (dkg-machine.ts) for the store, which seals it: the
 * state holds the secret polynomial, so these bytes only ever exist in memory or sealed on disk.
 * Bigints become 32-byte little-endian scalars and byte strings base64url, inside JSON.
 */
import type { DKG_Round1, DKG_Round2, DKG_Secret } from '@noble/curves/abstract/frost.js';
import { z } from 'zod';
import { encodeScalar, Fn, fromB64, toB64, utf8Bytes } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import type { CeremonyState } from './dkg-machine.ts';

/** 2: the committee in the parameters, round-2 packages sealed (format 1 states are refused). */
const FORMAT = 2;

const b64 = z.string();
const round1Wire = z.object({
  node: z.number().int(),
  commitment: z.array(b64),
  proofOfKnowledge: b64,
});
const round2Wire = z.object({
  from: z.number().int(),
  to: z.number().int(),
  ephemeral: b64,
  ciphertext: b64,
  signature: b64,
});
const nobleRound1 = z.object({
  identifier: z.string(),
  commitment: z.array(b64),
  proofOfKnowledge: b64,
});
const nobleRound2 = z.object({ identifier: z.string(), signingShare: b64 });

const stateSchema = z.object({
  format: z.literal(FORMAT),
  params: z.object({
    ceremonyId: z.string(),
    tenant: z.string(),
    version: z.number().int(),
    threshold: z.number().int(),
    participants: z.array(z.number().int()),
    committee: z.array(z.object({ node: z.number().int(), signing: b64, encryption: b64 })),
  }),
  step: z.union([z.literal(1), z.literal(2)]),
  round1: round1Wire,
  transcript: z.array(round1Wire).optional(),
  round2: z.array(round2Wire).optional(),
  secret: z.object({
    identifier: b64,
    coefficients: z.array(b64).optional(),
    commitment: z.array(b64),
    signers: z.object({ min: z.number().int(), max: z.number().int() }),
    round1Cache: z.array(nobleRound1).optional(),
    round2Cache: z.record(z.string(), nobleRound2).optional(),
    step: z.union([z.literal(1), z.literal(2), z.literal(3)]).optional(),
  }),
});

type Encoded = z.infer<typeof stateSchema>;

const scalarOut = (s: bigint) => toB64(encodeScalar(s));
const scalarIn = (s: string) => Fn.fromBytes(fromB64(s, 'scalar'));
/** A copy with its own ArrayBuffer, the type noble's packages declare. */
const bytesIn = (s: string) => new Uint8Array(fromB64(s, 'bytes'));

function encodeSecret(s: DKG_Secret): Encoded['secret'] {
  return {
    identifier: scalarOut(s.identifier),
    coefficients: s.coefficients?.map(scalarOut),
    commitment: s.commitment.map((c) => toB64(c)),
    signers: { min: s.signers.min, max: s.signers.max },
    round1Cache: s.round1Cache?.map((p) => ({
      identifier: p.identifier,
      commitment: p.commitment.map((c) => toB64(c)),
      proofOfKnowledge: toB64(p.proofOfKnowledge),
    })),
    round2Cache:
      s.round2Cache &&
      Object.fromEntries(
        Object.entries(s.round2Cache).map(([k, v]) => [
          k,
          { identifier: v.identifier, signingShare: toB64(v.signingShare) },
        ]),
      ),
    step: s.step,
  };
}

function decodeSecret(e: Encoded['secret']): DKG_Secret {
  const secret: DKG_Secret = {
    identifier: scalarIn(e.identifier),
    commitment: e.commitment.map(bytesIn),
    signers: { ...e.signers },
  };
  if (e.coefficients) secret.coefficients = e.coefficients.map(scalarIn);
  if (e.step !== undefined) secret.step = e.step;
  if (e.round1Cache) {
    secret.round1Cache = e.round1Cache.map((p): DKG_Round1 => ({
      identifier: p.identifier,
      commitment: p.commitment.map(bytesIn),
      proofOfKnowledge: bytesIn(p.proofOfKnowledge),
    }));
  }
  if (e.round2Cache) {
    secret.round2Cache = Object.fromEntries(
      Object.entries(e.round2Cache).map(([k, v]): [string, DKG_Round2] => [
        k,
        { identifier: v.identifier, signingShare: bytesIn(v.signingShare) },
      ]),
    );
  }
  return secret;
}

export function encodeCeremony(state: CeremonyState): Uint8Array {
  const encoded: Encoded = {
    format: FORMAT,
    params: state.params,
    step: state.step,
    round1: state.round1,
    transcript: state.transcript,
    round2: state.round2,
    secret: encodeSecret(state.secret),
  };
  return utf8Bytes(JSON.stringify(encoded));
}

export function decodeCeremony(bytes: Uint8Array): CeremonyState {
  const parsed = stateSchema.safeParse(JSON.parse(new TextDecoder().decode(bytes)));
  if (!parsed.success) {
    throw new KmaasError('ERR_INTERNAL', 'stored ceremony state has an unknown shape');
  }
  const e = parsed.data;
  const state: CeremonyState = {
    params: e.params,
    step: e.step,
    round1: e.round1,
    secret: decodeSecret(e.secret),
  };
  if (e.transcript) state.transcript = e.transcript;
  if (e.round2) state.round2 = e.round2;
  return state;
}
