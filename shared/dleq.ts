/**
 * RFC 9497 section 2.2.2 VerifyProof with section 2.2.1 ComputeComposites, for a batch: checks
 * that the same secret k links (G, K_j) and every (B_i, Z_i). The client runs it once per node
 * answer against the verification share K_j from the key package, never a key the answer names.
 * Written out here (rather than through @noble's finalizeBatch, which would also unblind every
 * partial) so that checking a partial costs no more than the proof; the test suite cross-checks it
 * against @noble's implementation. All group and field operations are @noble/curves'.
 */
import { mulAddUnsafe } from '@noble/curves/abstract/curve.js';
import { ristretto255_hasher } from '@noble/curves/ed25519.js';
import { sha512 } from '@noble/hashes/sha2.js';
import { Fn, Point, concat, lengthPrefixed, utf8Bytes, type GroupElement } from './encoding.ts';
import { CONTEXT_STRING } from './suite.ts';

const SEED_DST = concat(utf8Bytes('Seed-'), CONTEXT_STRING);
const HASH_TO_SCALAR_DST = concat(utf8Bytes('HashToScalar-'), CONTEXT_STRING);
const COMPOSITE = utf8Bytes('Composite');
const CHALLENGE = utf8Bytes('Challenge');

function hashToScalar(msg: Uint8Array): bigint {
  return ristretto255_hasher.hashToScalar(msg, { DST: HASH_TO_SCALAR_DST });
}

function i2osp2(n: number): Uint8Array {
  return Uint8Array.of((n >> 8) & 0xff, n & 0xff);
}

/** Section 2.2.1: M = sum d_i C_i, Z = sum d_i D_i with d_i from the seeded transcript. */
function computeComposites(
  B: GroupElement,
  C: readonly GroupElement[],
  D: readonly GroupElement[],
): { M: GroupElement; Z: GroupElement } {
  const seed = sha512(concat(lengthPrefixed(B.toBytes()), lengthPrefixed(SEED_DST)));
  const d: bigint[] = [];
  for (let i = 0; i < C.length; i++) {
    d.push(
      hashToScalar(
        concat(
          lengthPrefixed(seed),
          i2osp2(i),
          lengthPrefixed(C[i]!.toBytes()),
          lengthPrefixed(D[i]!.toBytes()),
          COMPOSITE,
        ),
      ),
    );
  }
  // Every value here is public (wire elements and transcript hashes), so @noble's variable-time
  // multi-scalar multiplication is safe, and it is what keeps a 256-element check cheap.
  const M = mulAddUnsafe(Point, [...C], d);
  const Z = mulAddUnsafe(Point, [...D], d);
  return { M, Z };
}

/** True when `proof` (c || s) proves log_G(publicKey) = log_C_i(D_i) for every i. */
export function verifyBatchProof(
  publicKey: GroupElement,
  blinded: readonly GroupElement[],
  evaluated: readonly GroupElement[],
  proof: Uint8Array,
): boolean {
  if (
    proof.length !== 2 * Fn.BYTES ||
    blinded.length !== evaluated.length ||
    blinded.length === 0
  ) {
    return false;
  }
  let c: bigint;
  let s: bigint;
  try {
    c = Fn.fromBytes(proof.subarray(0, Fn.BYTES));
    s = Fn.fromBytes(proof.subarray(Fn.BYTES));
  } catch {
    return false;
  }
  const { M, Z } = computeComposites(publicKey, blinded, evaluated);
  // Section 2.2.2: t2 = s*A + c*B, t3 = s*M + c*Z, with A = G and B = the public key.
  const t2 = mulAdd(Point.BASE, s, publicKey, c);
  const t3 = mulAdd(M, s, Z, c);
  const expected = hashToScalar(
    concat(
      lengthPrefixed(publicKey.toBytes()),
      lengthPrefixed(M.toBytes()),
      lengthPrefixed(Z.toBytes()),
      lengthPrefixed(t2.toBytes()),
      lengthPrefixed(t3.toBytes()),
      CHALLENGE,
    ),
  );
  return Fn.eql(c, expected);
}

function mulAdd(P: GroupElement, a: bigint, Q: GroupElement, b: bigint): GroupElement {
  return mulAddUnsafe(Point, [P, Q], [a, b]);
}
