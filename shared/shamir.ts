/**
 * Shamir secret sharing over the ristretto255 scalar field: splitting (for resharing and for
 * tests that split a known RFC key) and Lagrange coefficients at zero (for combining partial
 * evaluations). All field operations are @noble/curves' own.
 */
import { bytesToNumberLE } from '@noble/curves/utils.js';
import { randomBytes } from '@noble/hashes/utils.js';
import { Fn } from './encoding.ts';
import { checkIdentifierSet } from './identifiers.ts';
import { KmaasError } from './errors.ts';

/** Source of random bytes, the shape @noble expects; tests pass one that replays fixed values. */
export type Rng = (bytesLength?: number) => Uint8Array;

/** A uniformly random nonzero scalar: 64 bytes reduced, so the bias is negligible. */
export function randomScalar(rng: Rng = randomBytes): bigint {
  for (;;) {
    const s = Fn.create(bytesToNumberLE(rng(64)));
    if (!Fn.is0(s)) return s;
  }
}

export interface Share {
  id: number;
  value: bigint;
}

/** f(x) for coefficients a_0..a_{t-1} (Horner). */
export function evaluatePolynomial(coefficients: readonly bigint[], x: bigint): bigint {
  let acc = 0n;
  for (let i = coefficients.length - 1; i >= 0; i--) acc = Fn.add(Fn.mul(acc, x), coefficients[i]!);
  return acc;
}

/** A random polynomial of degree t-1 with f(0) = secret, evaluated at each identifier. */
export function split(
  secret: bigint,
  threshold: number,
  ids: readonly number[],
  rng: Rng = randomBytes,
): { shares: Share[]; coefficients: bigint[] } {
  checkIdentifierSet(ids);
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > ids.length) {
    throw new KmaasError(
      'ERR_BAD_THRESHOLD',
      `threshold ${threshold} does not fit ${ids.length} shares`,
    );
  }
  const coefficients = [secret];
  for (let i = 1; i < threshold; i++) coefficients.push(randomScalar(rng));
  const shares = ids.map((id) => ({ id, value: evaluatePolynomial(coefficients, BigInt(id)) }));
  return { shares, coefficients };
}

/**
 * lambda_j = prod_{m != j} x_m / (x_m - x_j): the Lagrange coefficients at 0 for the set `ids`.
 */
export function lagrangeAtZero(ids: readonly number[]): Map<number, bigint> {
  checkIdentifierSet(ids);
  const out = new Map<number, bigint>();
  for (const j of ids) {
    let num = 1n;
    let den = 1n;
    for (const m of ids) {
      if (m === j) continue;
      num = Fn.mul(num, BigInt(m));
      den = Fn.mul(den, Fn.sub(BigInt(m), BigInt(j)));
    }
    out.set(j, Fn.div(num, den));
  }
  return out;
}

/** Recombine a secret from shares (tests and repair only; the service never does this). */
export function interpolateAtZero(shares: readonly Share[]): bigint {
  const lambdas = lagrangeAtZero(shares.map((s) => s.id));
  return shares.reduce((acc, s) => Fn.add(acc, Fn.mul(lambdas.get(s.id)!, s.value)), 0n);
}
