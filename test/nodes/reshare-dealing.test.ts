/**
 * Resharing arithmetic (nodes/reshare-dealing.ts): property tests over random thresholds, dealer
 * subsets and receiver sets, checked against an independent plain-bigint Shamir (own modular
 * arithmetic, own Lagrange), and the dealer faults a receiver must name.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import fc from 'fast-check';
import { Point } from '../../shared/encoding.ts';
import { buildKeyPackage, parseKeyPackage } from '../../shared/key-package.ts';
import { dealKey, receiveKey, SEED_BYTES } from '../../nodes/reshare-dealing.ts';
import { expectCode } from './helpers.ts';

/** The ristretto255 group order (RFC 9496 section 4.1), written out: not taken from the code. */
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const mod = (a: bigint) => ((a % L) + L) % L;
function pow(b: bigint, e: bigint): bigint {
  let r = 1n;
  b = mod(b);
  while (e > 0n) {
    if (e & 1n) r = mod(r * b);
    b = mod(b * b);
    e >>= 1n;
  }
  return r;
}
const inv = (a: bigint) => pow(a, L - 2n);
const poly = (c: bigint[], x: bigint) => c.reduceRight((acc, a) => mod(acc * x + a), 0n);
function interpolate(shares: [number, bigint][]): bigint {
  let s = 0n;
  for (const [j, y] of shares) {
    let num = 1n;
    let den = 1n;
    for (const [m] of shares) {
      if (m === j) continue;
      num = mod(num * BigInt(m));
      den = mod(den * BigInt(m - j));
    }
    s = mod(s + y * num * inv(den));
  }
  return s;
}
const randomScalar = () => mod(BigInt('0x' + randomBytes(40).toString('hex'))) || 1n;

/** An old epoch of one key: t-of-`members` from a known secret. */
function oldEpoch(t: number, members: number[]) {
  const coefficients = Array.from({ length: t }, randomScalar);
  const commitments = coefficients.map((a) => Point.BASE.multiply(a));
  const shares = new Map(members.map((m) => [m, poly(coefficients, BigInt(m))]));
  const pkg = buildKeyPackage({
    tenant: 'acme',
    version: 1,
    commitments,
    verificationShares: new Map(members.map((m) => [m, Point.BASE.multiply(shares.get(m)!)])),
  });
  return { secret: coefficients[0]!, shares, pkg: parseKeyPackage(pkg) };
}

const key = { reshareId: 'r' + 'A'.repeat(31), tenant: 'acme', version: 1 };

function reshare(
  old: ReturnType<typeof oldEpoch>,
  dealers: number[],
  t2: number,
  receivers: number[],
  tamper: (dealer: number, to: number, piece: bigint) => bigint = (_d, _t, p) => p,
) {
  const dealt = dealers.map((i) => ({
    i,
    d: dealKey(new Uint8Array(randomBytes(SEED_BYTES)), key, old.shares.get(i)!, t2, receivers),
  }));
  return receivers.map((j) =>
    receiveKey({
      self: j,
      key,
      old: old.pkg,
      threshold: t2,
      members: receivers,
      epoch: 2,
      dealings: dealt.map(({ i, d }) => ({
        dealer: i,
        commitments: d.commitments,
        piece: tamper(i, j, d.pieces.get(j)!),
      })),
    }),
  );
}

describe('reshare dealing', () => {
  it('new shares interpolate to the old secret under the same group key (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 4 }),
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 2, max: 5 }),
        fc.integer({ min: 0, max: 3 }),
        fc.integer(),
        (t, extraOld, t2, extraNew, salt) => {
          const oldMembers = Array.from({ length: t + extraOld }, (_, k) => k + 1);
          const old = oldEpoch(t, oldMembers);
          // A dealer subset of size t..n, and new ids that overlap the old ones or not.
          const rotate = Math.abs(salt) % oldMembers.length;
          const dealers = [...oldMembers.slice(rotate), ...oldMembers.slice(0, rotate)]
            .slice(0, t + (Math.abs(salt >> 3) % (extraOld + 1)))
            .sort((a, b) => a - b);
          const offset = Math.abs(salt >> 6) % 4;
          const receivers = Array.from({ length: t2 + extraNew }, (_, k) => k + 1 + offset);
          const out = reshare(old, dealers, t2, receivers);
          const shares = receivers.map((j, k) => [j, out[k]!.share] as [number, bigint]);
          // Any t2 of the new shares give the secret; t2 - 1 of them do not.
          expect(interpolate(shares.slice(0, t2))).to.equal(old.secret);
          expect(interpolate(shares.slice(-t2))).to.equal(old.secret);
          expect(interpolate(shares.slice(0, t2 - 1))).to.not.equal(old.secret);
          for (const r of out) {
            expect(r.keyPackage).to.deep.equal(out[0]!.keyPackage);
            expect(r.keyPackage.groupKey).to.equal(old.pkg.raw.groupKey);
            expect(r.keyPackage.threshold).to.equal(t2);
            expect(r.keyPackage.epoch).to.equal(2);
          }
          const parsed = parseKeyPackage(out[0]!.keyPackage);
          for (const [j, s] of shares) {
            expect(parsed.verificationShares.get(j)!.equals(Point.BASE.multiply(s))).to.equal(true);
          }
        },
      ),
      { numRuns: 25 },
    );
  });

  it('a dealer replays the very same dealing from the same seed', () => {
    const old = oldEpoch(2, [1, 2, 3]);
    const seed = new Uint8Array(randomBytes(SEED_BYTES));
    const a = dealKey(seed, key, old.shares.get(1)!, 3, [1, 2, 3, 4]);
    const b = dealKey(seed, key, old.shares.get(1)!, 3, [1, 2, 3, 4]);
    expect(a.commitments.map((c) => c.toHex())).to.deep.equal(b.commitments.map((c) => c.toHex()));
    expect([...a.pieces]).to.deep.equal([...b.pieces]);
    const other = dealKey(seed, { ...key, version: 2 }, old.shares.get(1)!, 3, [1]);
    expect(other.commitments[1]!.equals(a.commitments[1]!)).to.equal(false);
  });

  it('a corrupt piece names its dealer', () => {
    const old = oldEpoch(2, [1, 2, 3]);
    expectCode(
      () => reshare(old, [1, 3], 2, [1, 2, 3], (d, _to, p) => (d === 3 ? p + 1n : p)),
      'ERR_RESHARE_DEALER',
      { culprits: [3] },
    );
  });

  it('a dealer that shares something other than its old share is named', () => {
    const old = oldEpoch(2, [1, 2, 3]);
    old.shares.set(2, old.shares.get(2)! + 5n);
    expectCode(() => reshare(old, [1, 2], 2, [1, 2, 3]), 'ERR_RESHARE_DEALER', {
      culprits: [2],
    });
  });

  it('fewer dealers than the old threshold is refused', () => {
    const old = oldEpoch(3, [1, 2, 3]);
    expectCode(() => reshare(old, [1, 2], 2, [1, 2, 3]), 'ERR_RESHARE_STATE');
  });
});
