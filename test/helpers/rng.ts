import { encodeScalar, Fn } from '../../shared/encoding.ts';
import type { Rng } from '../../shared/shamir.ts';

/**
 * An rng whose bytes make @noble's RandomScalar return exactly the given scalars in turn, so a
 * test can replay an RFC vector's Blind or ProofRandomScalar through the public API.
 * @noble maps bytes b to (LE(b) mod (n-1)) + 1, so feeding LE(s - 1) yields s.
 */
export function fixedScalarRng(scalars: readonly bigint[]): Rng {
  let i = 0;
  return (len = 32) => {
    const s = scalars[i++ % scalars.length]!;
    const out = new Uint8Array(len);
    out.set(encodeScalar(Fn.sub(s, 1n)));
    return out;
  };
}
