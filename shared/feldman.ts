/**
 * Feldman commitments: C_i = a_i * G for the coefficients of a sharing polynomial. Anyone can
 * compute the verification share of identifier x as sum(C_i * x^i) and check it against the
 * share's public key k_x * G, without learning anything about the secret.
 */
import { Fn, Point, type GroupElement } from './encoding.ts';

export function commit(coefficients: readonly bigint[]): GroupElement[] {
  return coefficients.map((a) => Point.BASE.multiply(a));
}

/** sum_i C_i * x^i. Commitments are public, so the variable-time multiply is safe. */
export function evaluateCommitments(commitments: readonly GroupElement[], x: number): GroupElement {
  let acc = Point.ZERO;
  let power = 1n;
  for (const c of commitments) {
    acc = acc.add(c.multiplyUnsafe(power));
    power = Fn.mul(power, BigInt(x));
  }
  return acc;
}
