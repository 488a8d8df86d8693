/**
 * The proof of knowledge in a DKG round-1 package, checked on its own (Komlo-Goldberg, FROST,
 * Figure 1, steps 2 and 5; RFC 9591's ristretto255-SHA512 ciphersuite hashes): participant i's
 * Schnorr signature (R, z) proving it knows a_i0, the discrete log of its commitment constant
 * term phi = C_i0, bound to its identifier and to the ciphersuite's DKG context string:
 *
 *   c = H_dkg(SerializeScalar(i) || SerializeElement(phi) || SerializeElement(R))
 *   H_dkg(m) = int_le(SHA-512("FROST-RISTRETTO255-SHA512-v1" || "dkg" || m)) mod L
 *   valid  <=>  R decodes to a non-identity element, z is a canonical scalar, and R == z*G - c*phi
 *
 * This is exactly what @noble/curves abstract/frost.js computes in DKG.round1
 * (ProofOfKnowledge.compute) and checks in DKG.round2 (ProofOfKnowledge.validate), with the same
 * hash, DST, encodings and decoders; only the check is reproduced here, with noble's Point, Fn
 * and hash functions, so that a bad package can be named in one pass, linear in t, instead of
 * by running a ceremony per suspect. test/nodes/dkg-pok.test.ts checks that both always agree.
 */
import { ristretto255_FROST } from '@noble/curves/ed25519.js';
import { bytesToNumberLE } from '@noble/curves/utils.js';
import { sha512 } from '@noble/hashes/sha2.js';
import { concatBytes, hexToBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { Fn, Point, type GroupElement } from '../shared/encoding.ts';

/** The ciphersuite's context string (RFC 9591 section 6.2) followed by noble's "dkg" label. */
const DKG_DST = utf8ToBytes('FROST-RISTRETTO255-SHA512-v1dkg');
const ELEMENT_BYTES = 32;
/** SerializeElement(R) || SerializeScalar(z). */
export const POK_BYTES = ELEMENT_BYTES + Fn.BYTES;

/** The FROST identifier of a node as SerializeScalar bytes (noble's Identifier.fromNumber). */
function identifierBytes(node: number): Uint8Array {
  return hexToBytes(ristretto255_FROST.Identifier.fromNumber(node));
}

/** H_dkg, as noble's default hashToScalar: SHA-512 of DST || message, little-endian, mod L. */
function challenge(node: number, phi: GroupElement, R: GroupElement): bigint {
  const digest = sha512(concatBytes(DKG_DST, identifierBytes(node), phi.toBytes(), R.toBytes()));
  return Fn.create(bytesToNumberLE(digest));
}

/**
 * Does `proof` prove knowledge of the discrete log of `phi` (the sender's first commitment, an
 * already decoded non-identity element) for participant `node`? Never throws.
 */
export function proofOfKnowledgeValid(node: number, phi: GroupElement, proof: Uint8Array): boolean {
  if (proof.length !== POK_BYTES) return false;
  let R: GroupElement;
  let z: bigint;
  try {
    R = Point.fromBytes(proof.subarray(0, ELEMENT_BYTES));
    z = Fn.fromBytes(proof.subarray(ELEMENT_BYTES));
  } catch {
    return false;
  }
  if (R.is0()) return false;
  const c = challenge(node, phi, R);
  // Public inputs only: variable-time multiplication is fine, as in noble.
  return R.equals(Point.BASE.multiplyUnsafe(z).subtract(phi.multiplyUnsafe(c)));
}
