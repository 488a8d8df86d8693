/** Builders shared by the protocol tests: a key package for a known sharing, a node's answer. */
import { ristretto255_oprf } from '@noble/curves/ed25519.js';
import { decodeElement, Fn, Point } from '../../shared/encoding.ts';
import { commit } from '../../shared/feldman.ts';
import {
  buildKeyPackage,
  parseKeyPackage,
  type ParsedKeyPackage,
} from '../../shared/key-package.ts';
import type { Share } from '../../shared/shamir.ts';
import type { BlindState, PartialEvaluation } from '../../shared/voprf-client.ts';
import { evaluateBatch } from '../../shared/voprf-node.ts';

export function subsets<T>(items: readonly T[], size: number): T[][] {
  if (size === 0) return [[]];
  if (items.length < size) return [];
  const [head, ...rest] = items;
  return [...subsets(rest, size - 1).map((s) => [head!, ...s]), ...subsets(rest, size)];
}

export function packageFor(shares: Share[], coefficients: bigint[]): ParsedKeyPackage {
  return parseKeyPackage(
    buildKeyPackage({
      tenant: 'rfc9497',
      version: 1,
      commitments: commit(coefficients),
      verificationShares: new Map(shares.map((s) => [s.id, Point.BASE.multiply(s.value)])),
    }),
  );
}

export function evaluateAt(
  pkg: ParsedKeyPackage,
  share: Share,
  blinded: BlindState['blinded'],
): PartialEvaluation {
  const r = evaluateBatch(share.value, pkg.verificationShares.get(share.id)!, blinded);
  return {
    node: share.id,
    evaluated: r.evaluated.map((e, i) => decodeElement(e, `evaluated[${i}]`)),
    proof: r.proof,
  };
}

/**
 * The plain single-server RFC 9497 VOPRF output of key k, run entirely by @noble (blind,
 * BlindEvaluate, Finalize with proof check): the independent reference for threshold results.
 */
export function singleKeyOutput(k: bigint, input: Uint8Array): Uint8Array {
  const { voprf } = ristretto255_oprf;
  const sk = Fn.toBytes(k);
  const pk = Point.BASE.multiply(k).toBytes();
  const b = voprf.blind(input);
  const e = voprf.blindEvaluate(sk, pk, b.blinded);
  return voprf.finalize(input, b.blind, e.evaluated, b.blinded, pk, e.proof);
}
