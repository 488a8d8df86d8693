/**
 * Node half of the threshold VOPRF (DESIGN.md section 2, step 2). Node j holds the Shamir share
 * k_j and its verification share K_j = k_j*G. For a batch of blinded elements B_i it returns
 * Z_i = k_j*B_i and one RFC 9497 batched DLEQ proof (section 2.2.1 GenerateProof) that the same
 * k_j links G to K_j and every B_i to Z_i. That is exactly RFC 9497 BlindEvaluate in VOPRF mode
 * with (k_j, K_j) as the server key pair, so @noble/curves does the work.
 */
import { ristretto255_oprf } from '@noble/curves/ed25519.js';
import { randomBytes } from '@noble/hashes/utils.js';
import { encodeScalar, type GroupElement } from './encoding.ts';
import type { Rng } from './shamir.ts';
import { checkBatchSize } from './suite.ts';

export interface NodeEvaluation {
  evaluated: Uint8Array[];
  proof: Uint8Array;
}

/**
 * `blinded` must already be decoded with decodeElement (canonical, not the identity).
 * `rng` feeds the proof's random scalar; tests pass one that replays the RFC's ProofRandomScalar.
 */
export function evaluateBatch(
  share: bigint,
  verificationShare: GroupElement,
  blinded: readonly GroupElement[],
  rng: Rng = randomBytes,
): NodeEvaluation {
  checkBatchSize(blinded.length);
  const secret = encodeScalar(share);
  try {
    return ristretto255_oprf.voprf.blindEvaluateBatch(
      secret,
      verificationShare.toBytes(),
      blinded.map((b) => b.toBytes()),
      rng,
    );
  } finally {
    secret.fill(0);
  }
}
