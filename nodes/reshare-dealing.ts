/**
 * The arithmetic of resharing (DESIGN.md section 3): Feldman-verifiable redistribution of Shamir
 * shares from one committee to another (Desmedt-Jajodia 1997; Wong-Wang-Wing 2002, "Verifiable
 * secret redistribution"), with the group key unchanged. Pure functions, no I/O.
 *
 *   dealer i in S (old epoch e, share k_i of each key):
 *     g_i(x) = k_i + a_1 x + ... + a_{t'-1} x^{t'-1}     (a_k derived, see coefficientsOf)
 *     C_ik   = a_k * G  (C_i0 = k_i * G = K_i, the dealer's old verification share)
 *     piece  g_i(x_j) for every new member j
 *   receiver j (new epoch e+1):
 *     checks C_i0 == K_i from the old key package, and g_i(x_j) * G == sum_k C_ik x_j^k (Feldman)
 *     k'_j = sum_{i in S} lambda_i^S g_i(x_j)       (Lagrange at 0 over S)
 *     C'_k = sum_{i in S} lambda_i^S C_ik, K'_m = C'(x_m) for every new member m; C'_0 == K
 *
 * sum_i lambda_i g_i is a polynomial of degree t'-1 whose value at 0 is sum_i lambda_i k_i = k
 * (any |S| >= t_key old shares interpolate the secret), so the new shares are a fresh t'-of-n'
 * sharing of the same key, and C' its Feldman commitments.
 *
 * Coefficients come from a per-reshare 32-byte random seed through hash_to_scalar (RFC 9380
 * section 5, expand_message_xmd with SHA-512, reduced mod the group order as RFC 9496 section
 * 4.4 reduces 64 bytes), so that a dealer replays the very same dealing after a restart: two
 * different polynomials for one key would let anyone holding both pieces learn the difference.
 */
import { ristretto255_hasher } from '@noble/curves/ed25519.js';
import {
  concat,
  Fn,
  lengthPrefixed,
  Point,
  utf8Bytes,
  type GroupElement,
} from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import { evaluateCommitments } from '../shared/feldman.ts';
import { buildKeyPackage, type KeyPackage, type ParsedKeyPackage } from '../shared/key-package.ts';
import { evaluatePolynomial, lagrangeAtZero } from '../shared/shamir.ts';

export const SEED_BYTES = 32;
const COEFFICIENT_DST = utf8Bytes('KMaaS-v1 reshare coefficient');

function u16(n: number): Uint8Array {
  return Uint8Array.of(n >> 8, n & 0xff);
}

function u32(n: number): Uint8Array {
  return Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/** Which key of which reshare a polynomial is for. */
export interface DealingKey {
  reshareId: string;
  tenant: string;
  version: number;
}

/**
 * a_0 = `share`, a_k = hash_to_scalar(lp(seed) || lp(reshareId) || lp(tenant) || u32(version) ||
 * u16(k)) for k = 1..t'-1.
 */
export function coefficientsOf(
  seed: Uint8Array,
  key: DealingKey,
  share: bigint,
  threshold: number,
): bigint[] {
  if (seed.length !== SEED_BYTES) throw new KmaasError('ERR_INTERNAL', 'reshare seed length');
  const prefix = concat(
    lengthPrefixed(seed),
    lengthPrefixed(utf8Bytes(key.reshareId)),
    lengthPrefixed(utf8Bytes(key.tenant)),
    u32(key.version),
  );
  const out = [share];
  for (let k = 1; k < threshold; k++) {
    out.push(ristretto255_hasher.hashToScalar(concat(prefix, u16(k)), { DST: COEFFICIENT_DST }));
  }
  return out;
}

export interface Dealt {
  /** C_i0..C_i(t'-1). */
  commitments: GroupElement[];
  /** g_i(x_j) for every receiver j. */
  pieces: Map<number, bigint>;
}

/** Dealer i's polynomial for one key: commitments and a piece for each receiver. */
export function dealKey(
  seed: Uint8Array,
  key: DealingKey,
  share: bigint,
  threshold: number,
  receivers: readonly number[],
): Dealt {
  const coefficients = coefficientsOf(seed, key, share, threshold);
  try {
    return {
      // Commitments are public, but a_0 is the share: the constant-time multiply for all.
      commitments: coefficients.map((a) => Point.BASE.multiply(a)),
      pieces: new Map(receivers.map((j) => [j, evaluatePolynomial(coefficients, BigInt(j))])),
    };
  } finally {
    coefficients.fill(0n);
  }
}

function dealerFault(dealer: number, key: DealingKey, why: string): KmaasError {
  return new KmaasError(
    'ERR_RESHARE_DEALER',
    `reshare ${key.reshareId}: dealer ${dealer} for ${key.tenant} v${key.version}: ${why}`,
    { reshareId: key.reshareId, tenant: key.tenant, version: key.version, culprits: [dealer] },
  );
}

/** One dealer's contribution to one key, as a receiver gets it. */
export interface ReceivedDealing {
  dealer: number;
  commitments: GroupElement[];
  /** g_i(x_self). */
  piece: bigint;
}

export interface ReceivedKey {
  share: bigint;
  keyPackage: KeyPackage;
}

/**
 * Receiver `self`'s new share of one key from every dealer of S, and the new key package for
 * `members` (the new committee) at `epoch`. ERR_RESHARE_DEALER naming the first dealer whose
 * commitments or piece do not check out.
 */
export function receiveKey(args: {
  self: number;
  key: DealingKey;
  old: ParsedKeyPackage;
  dealings: readonly ReceivedDealing[];
  threshold: number;
  members: readonly number[];
  epoch: number;
}): ReceivedKey {
  const { self, key, old, dealings, threshold } = args;
  const dealers = dealings.map((d) => d.dealer);
  if (dealers.length < old.threshold) {
    throw new KmaasError(
      'ERR_RESHARE_STATE',
      `reshare ${key.reshareId}: ${dealers.length} dealer(s) for ${key.tenant} v${key.version}, ` +
        `${old.threshold} needed`,
      { reshareId: key.reshareId, dealers, needed: old.threshold },
    );
  }
  for (const d of dealings) {
    if (d.commitments.length !== threshold) {
      throw dealerFault(
        d.dealer,
        key,
        `${d.commitments.length} commitments, ${threshold} expected`,
      );
    }
    const own = old.verificationShares.get(d.dealer);
    // C_i0 must be the dealer's old verification share: g_i(0) is then its old share k_i.
    if (!own || !d.commitments[0]!.equals(own)) {
      throw dealerFault(d.dealer, key, 'C_0 is not its verification share in the old package');
    }
    // Feldman VSS: g_i(x_j) * G == sum_k C_ik x_j^k. Public values: variable-time multiply.
    if (!Point.BASE.multiplyUnsafe(d.piece).equals(evaluateCommitments(d.commitments, self))) {
      throw dealerFault(d.dealer, key, `the piece for node ${self} fails the Feldman check`);
    }
  }
  const lambdas = lagrangeAtZero(dealers);
  let share = 0n;
  const commitments: GroupElement[] = [];
  for (let k = 0; k < threshold; k++) commitments.push(Point.ZERO);
  for (const d of dealings) {
    const lambda = lambdas.get(d.dealer)!;
    share = Fn.add(share, Fn.mul(lambda, d.piece));
    for (let k = 0; k < threshold; k++) {
      commitments[k] = commitments[k]!.add(d.commitments[k]!.multiplyUnsafe(lambda));
    }
  }
  // Honest dealers whose C_i0 were checked give C'_0 = sum lambda_i K_i = K; said explicitly.
  if (!commitments[0]!.equals(old.groupKey)) {
    throw new KmaasError(
      'ERR_RESHARE_DEALER',
      `reshare ${key.reshareId}: the new commitments of ${key.tenant} v${key.version} do not carry the group key`,
      { reshareId: key.reshareId, culprits: dealers },
    );
  }
  const verificationShares = new Map(
    args.members.map((m) => [m, evaluateCommitments(commitments, m)] as const),
  );
  return {
    share,
    keyPackage: buildKeyPackage({
      tenant: key.tenant,
      version: key.version,
      epoch: args.epoch,
      commitments,
      verificationShares,
    }),
  };
}
