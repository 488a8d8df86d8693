/**
 * Client half of the threshold VOPRF (DESIGN.md section 2, steps 1 and 3), RFC 9497 section 3.3.2
 * in verifiable mode with a committee in place of the single server:
 *
 *   client: B_i = r_i * HashToGroup(input_i)                      (Blind, section 3.3.1)
 *   node j: Z_ij = k_j * B_i, batched DLEQ proof against K_j      (BlindEvaluate)
 *   client: verify each node's proof against K_j from the key package,
 *           Z_i = sum_j lambda_j * Z_ij over any t valid nodes,   (Lagrange at 0)
 *           output_i = Finalize(input_i, r_i, Z_i)                (section 3.3.2)
 *
 * Since sum lambda_j k_j = k, Z_i = k * B_i and the output is the plain VOPRF output of k.
 */
import { ristretto255_oprf } from '@noble/curves/ed25519.js';
import { randomBytes } from '@noble/hashes/utils.js';
import { decodeElement, Point, type GroupElement } from './encoding.ts';
import { KmaasError, type ErrorCode } from './errors.ts';
import { verifyBatchProof } from './dleq.ts';
import type { ParsedKeyPackage } from './key-package.ts';
import { lagrangeAtZero, type Rng } from './shamir.ts';
import { checkBatchSize } from './suite.ts';

/** What the client keeps between blinding and finalizing. The blinds are secret. */
export interface BlindState {
  inputs: Uint8Array[];
  blinds: Uint8Array[];
  blinded: GroupElement[];
}

export interface PartialEvaluation {
  node: number;
  evaluated: GroupElement[];
  proof: Uint8Array;
}

export interface Rejection {
  node: number;
  code: ErrorCode;
  message: string;
}

/** RFC 9497 section 3.3.1 Blind for each input. `rng` is the source of the blinds r_i. */
export function blind(inputs: readonly Uint8Array[], rng: Rng = randomBytes): BlindState {
  checkBatchSize(inputs.length);
  const blinds: Uint8Array[] = [];
  const blinded: GroupElement[] = [];
  for (const input of inputs) {
    const r = ristretto255_oprf.voprf.blind(input, rng);
    blinds.push(r.blind);
    blinded.push(Point.fromBytes(r.blinded));
  }
  return { inputs: [...inputs], blinds, blinded };
}

/** Throws ERR_PROOF_INVALID naming the node when its answer does not prove k_j*B_i. */
export function verifyPartial(
  pkg: ParsedKeyPackage,
  blinded: readonly GroupElement[],
  partial: PartialEvaluation,
): void {
  const key = pkg.verificationShares.get(partial.node);
  if (!key) {
    throw new KmaasError('ERR_PROOF_INVALID', `node ${partial.node} is not in the key package`, {
      node: partial.node,
    });
  }
  if (
    partial.evaluated.length !== blinded.length ||
    !verifyBatchProof(key, blinded, partial.evaluated, partial.proof)
  ) {
    throw new KmaasError(
      'ERR_PROOF_INVALID',
      `node ${partial.node} returned an evaluation whose proof does not verify`,
      {
        node: partial.node,
      },
    );
  }
}

/** Z_i = sum_j lambda_j * Z_ij for exactly the given (already verified) partials. */
export function combine(partials: readonly PartialEvaluation[]): GroupElement[] {
  const lambdas = lagrangeAtZero(partials.map((p) => p.node));
  const count = partials[0]?.evaluated.length ?? 0;
  const out: GroupElement[] = [];
  for (let i = 0; i < count; i++) {
    let acc = Point.ZERO;
    // Partials and Lagrange coefficients are public (the blinds hide the inputs): vartime is safe.
    for (const p of partials) acc = acc.add(p.evaluated[i]!.multiplyUnsafe(lambdas.get(p.node)!));
    out.push(acc);
  }
  return out;
}

/** RFC 9497 section 3.3.2 Finalize: unblind with r_i and hash with the input. */
export function finalize(state: BlindState, combined: readonly GroupElement[]): Uint8Array[] {
  return state.inputs.map((input, i) => {
    const Z = combined[i]!;
    // A combination of honest partials is never the identity; refusing it keeps Finalize total.
    decodeElement(Z.toBytes(), `combined[${i}]`);
    return ristretto255_oprf.oprf.finalize(input, state.blinds[i]!, Z.toBytes());
  });
}

/**
 * Verify every partial, keep the first `threshold` valid ones and finalize. Throws
 * ERR_TOO_FEW_NODES (details.failed lists the refused nodes) when fewer than t partials are valid.
 */
export function deriveOutputs(
  pkg: ParsedKeyPackage,
  state: BlindState,
  partials: readonly PartialEvaluation[],
): { outputs: Uint8Array[]; used: number[]; rejected: Rejection[] } {
  const valid: PartialEvaluation[] = [];
  const rejected: Rejection[] = [];
  const seen = new Set<number>();
  for (const p of partials) {
    if (valid.length === pkg.threshold) break;
    if (seen.has(p.node)) {
      rejected.push({ node: p.node, code: 'ERR_BAD_IDENTIFIER', message: 'duplicate answer' });
      continue;
    }
    seen.add(p.node);
    try {
      verifyPartial(pkg, state.blinded, p);
      valid.push(p);
    } catch (err) {
      const e =
        err instanceof KmaasError ? err : new KmaasError('ERR_PROOF_INVALID', 'bad partial');
      rejected.push({ node: p.node, code: e.code, message: e.message });
    }
  }
  if (valid.length < pkg.threshold) {
    throw new KmaasError(
      'ERR_TOO_FEW_NODES',
      `need ${pkg.threshold} valid node answers, got ${valid.length}`,
      {
        needed: pkg.threshold,
        valid: valid.length,
        failed: rejected,
      },
    );
  }
  const outputs = finalize(state, combine(valid));
  return { outputs, used: valid.map((p) => p.node), rejected };
}
