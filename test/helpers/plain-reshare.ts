/**
 * Resharing done the plain way, for tests that need a key's next-epoch shares without the nodes
 * (PLAN.md "Vocabulary"): each dealer i of S deals g_i of degree t'-1 with g_i(0) = k_i, receiver
 * j sets k'_j = sum_{i in S} lambda_i^S g_i(x_j), and C'_k = sum_i lambda_i C_ik. Independent of
 * nodes/ and coordinator/ code: only shared/shamir.ts split and Lagrange coefficients.
 */
import { Fn, Point } from '../../shared/encoding.ts';
import { buildKeyPackage, type KeyPackage } from '../../shared/key-package.ts';
import { lagrangeAtZero, split, type Share } from '../../shared/shamir.ts';

export interface Reshared {
  shares: Share[];
  keyPackage: KeyPackage;
}

/** New shares of the same secret for `to` with threshold `threshold`, dealt by `dealers`. */
export function plainReshare(
  old: { tenant: string; version: number; epoch: number },
  dealers: readonly Share[],
  threshold: number,
  to: readonly number[],
): Reshared {
  const lambdas = lagrangeAtZero(dealers.map((d) => d.id));
  const values = new Map<number, bigint>(to.map((j) => [j, 0n]));
  const commitments = Array.from({ length: threshold }, () => Point.ZERO);
  for (const dealer of dealers) {
    const lambda = lambdas.get(dealer.id)!;
    const dealt = split(dealer.value, threshold, to);
    for (const piece of dealt.shares) {
      values.set(piece.id, Fn.add(values.get(piece.id)!, Fn.mul(lambda, piece.value)));
    }
    dealt.coefficients.forEach((a, k) => {
      commitments[k] = commitments[k]!.add(Point.BASE.multiply(Fn.mul(lambda, a)));
    });
  }
  const shares = to.map((id) => ({ id, value: values.get(id)! }));
  const keyPackage = buildKeyPackage({
    tenant: old.tenant,
    version: old.version,
    epoch: old.epoch + 1,
    commitments,
    verificationShares: new Map(shares.map((s) => [s.id, Point.BASE.multiply(s.value)])),
  });
  return { shares, keyPackage };
}
