/**
 * The expensive half of checking one node's evaluate answer (shared/voprf-client.ts
 * verifyPartial: RFC 9497 section 2.2.2 VerifyProof over the batch), in a form that crosses a
 * worker_threads boundary: plain bytes in, a plain result out. The coordinator's event loop only
 * parses the reply's JSON and base64; decoding the points and checking the proof, about 0.1 ms per
 * element, happens here, in a verify worker (coordinator/verify-pool.ts) or inline.
 */
import { decodeElement } from '../shared/encoding.ts';
import { toKmaasError, type ErrorBody } from '../shared/errors.ts';
import type { ParsedKeyPackage } from '../shared/key-package.ts';
import { verifyPartial } from '../shared/voprf-client.ts';

/** One node answer to check, as bytes: group elements are their 32-byte encodings. */
export interface VerifyTask {
  node: number;
  /** K_j, the node's verification share from the key package. */
  key: Uint8Array;
  /** The client's blinded elements B_i, as sent to the node. */
  blinded: Uint8Array[];
  /** The node's Z_ij, one for each B_i. */
  evaluated: Uint8Array[];
  /** The batched DLEQ proof c || s. */
  proof: Uint8Array;
}

export type VerifyResult = { ok: true } | { ok: false; error: ErrorBody };

/** Decode and verify; a wrong answer comes back as the KmaasError body naming the node. */
export function verifyAnswer(task: VerifyTask): VerifyResult {
  try {
    const { node } = task;
    const key = decodeElement(task.key, `node ${node} verification share`);
    const blinded = task.blinded.map((b, i) => decodeElement(b, `blinded[${i}]`));
    const evaluated = task.evaluated.map((e, i) =>
      decodeElement(e, `node ${node} evaluated[${i}]`),
    );
    // verifyPartial reads only the node's verification share from the package.
    const pkg = { verificationShares: new Map([[node, key]]) } as ParsedKeyPackage;
    verifyPartial(pkg, blinded, { node, evaluated, proof: task.proof });
    return { ok: true };
  } catch (err) {
    return { ok: false, error: toKmaasError(err).toBody() };
  }
}
