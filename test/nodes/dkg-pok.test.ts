/**
 * The DKG round-1 proof of knowledge as nodes/dkg-pok.ts checks it, against @noble/curves' own
 * check (DKG.round2 validates every proof it is given): on honest packages and on every kind of
 * change to them, both always agree. Then the node side: every bad proof named in one pass, and a
 * round 2 of the largest allowed ceremony, every proof bogus, answered in a moment.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { ristretto255_FROST } from '@noble/curves/ed25519.js';
import type { DKG_Round1 } from '@noble/curves/abstract/frost.js';
import { sha512 } from '@noble/hashes/sha2.js';
import { concatBytes } from '@noble/hashes/utils.js';
import { Fn, Point, fromB64, toB64 } from '../../shared/encoding.ts';
import type { NodeContext } from '../../nodes/context.ts';
import { handleRound1, handleRound2 } from '../../nodes/dkg.ts';
import { MAX_PARTICIPANTS, type Round1Wire } from '../../nodes/dkg-machine.ts';
import { POK_BYTES, proofOfKnowledgeValid } from '../../nodes/dkg-pok.ts';
import { NodeStore } from '../../nodes/store.ts';
import {
  committeeLookup,
  round1Body,
  testContext,
  ceremonyId,
  expectCode,
  randomSecret,
  removeDir,
  tempDir,
} from './helpers.ts';

const { DKG, Identifier } = ristretto255_FROST;
/** The node the noble oracle plays; never a sender. */
const SELF = 1;
/** Filler participants of the oracle's ceremony; never a sender either. */
const FILLER_BASE = 60_000;

/** Deterministic bytes from a seed, so a failing case replays from fast-check's seed. */
function seededRng(seed: Uint8Array): (n?: number) => Uint8Array {
  let counter = 0;
  return (n = 32) => {
    const out = new Uint8Array(n);
    for (let at = 0; at < n; at += 64) {
      const block = sha512(concatBytes(seed, Uint8Array.of(counter++ & 0xff, counter >> 8)));
      out.set(block.subarray(0, Math.min(64, n - at)), at);
    }
    return out;
  };
}

interface Pkg {
  node: number;
  commitment: Uint8Array[];
  proof: Uint8Array;
}

function honest(node: number, t: number, seed: Uint8Array): Pkg {
  const { public: pub } = DKG.round1(
    Identifier.fromNumber(node),
    { min: t, max: t + 1 },
    undefined,
    seededRng(seed),
  );
  return { node, commitment: pub.commitment, proof: pub.proofOfKnowledge };
}

/** Does noble's DKG.round2 accept `pkg`? A t-of-t ceremony where every other package is honest. */
function nobleAccepts(pkg: Pkg, t: number): boolean {
  const signers = { min: t, max: t };
  const fillers: DKG_Round1[] = [];
  for (let i = 0; fillers.length < t - 2; i++) {
    fillers.push(DKG.round1(Identifier.fromNumber(FILLER_BASE + i), signers).public);
  }
  const probe = DKG.round1(Identifier.fromNumber(SELF), signers).secret;
  try {
    DKG.round2(probe, [
      {
        identifier: Identifier.fromNumber(pkg.node),
        commitment: pkg.commitment,
        proofOfKnowledge: pkg.proof,
      },
      ...fillers,
    ]);
    return true;
  } catch {
    return false;
  } finally {
    DKG.clean(probe);
  }
}

function oursAccepts(pkg: Pkg): boolean {
  return proofOfKnowledgeValid(pkg.node, Point.fromBytes(pkg.commitment[0]!), pkg.proof);
}

type Change =
  | { kind: 'none' }
  | { kind: 'other sender'; node: number }
  | { kind: 'flipped bit'; bit: number }
  | { kind: 'random proof'; bytes: Uint8Array }
  | { kind: 'z plus the group order' }
  | { kind: 'z zero' }
  | { kind: 'R the identity' }
  | { kind: 'R the generator' }
  | { kind: 'other first commitment' }
  | { kind: 'proof of another package' }
  | { kind: 'negated z' };

const sender = fc.integer({ min: 2, max: FILLER_BASE - 1 });
const change: fc.Arbitrary<Change> = fc.oneof(
  fc.constant({ kind: 'none' as const }),
  sender.map((node) => ({ kind: 'other sender' as const, node })),
  fc
    .integer({ min: 0, max: POK_BYTES * 8 - 1 })
    .map((bit) => ({ kind: 'flipped bit' as const, bit })),
  fc
    .uint8Array({ minLength: POK_BYTES, maxLength: POK_BYTES })
    .map((bytes) => ({ kind: 'random proof' as const, bytes })),
  fc.constant({ kind: 'z plus the group order' as const }),
  fc.constant({ kind: 'z zero' as const }),
  fc.constant({ kind: 'R the identity' as const }),
  fc.constant({ kind: 'R the generator' as const }),
  fc.constant({ kind: 'other first commitment' as const }),
  fc.constant({ kind: 'proof of another package' as const }),
  fc.constant({ kind: 'negated z' as const }),
);

function littleEndian(n: bigint, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++, n >>= 8n) out[i] = Number(n & 0xffn);
  return out;
}

function apply(pkg: Pkg, c: Change, other: Pkg): Pkg {
  const R = pkg.proof.subarray(0, 32);
  const z = Fn.fromBytes(pkg.proof.subarray(32));
  const withProof = (proof: Uint8Array) => ({ ...pkg, proof });
  switch (c.kind) {
    case 'none':
      return pkg;
    case 'other sender':
      // The drawn sender may be the package's own; then it is no change, so take its neighbour.
      return { ...pkg, node: c.node !== pkg.node ? c.node : c.node === 2 ? 3 : c.node - 1 };
    case 'flipped bit': {
      const proof = pkg.proof.slice();
      proof[c.bit >> 3]! ^= 1 << (c.bit & 7);
      return withProof(proof);
    }
    case 'random proof':
      return withProof(c.bytes);
    case 'z plus the group order':
      // The same residue, encoded non-canonically (fits: z + L < 2^253).
      return withProof(concatBytes(R, littleEndian(z + Fn.ORDER, 32)));
    case 'z zero':
      return withProof(concatBytes(R, new Uint8Array(32)));
    case 'R the identity':
      return withProof(concatBytes(new Uint8Array(32), pkg.proof.subarray(32)));
    case 'R the generator':
      return withProof(concatBytes(Point.BASE.toBytes(), pkg.proof.subarray(32)));
    case 'other first commitment':
      return { ...pkg, commitment: [other.commitment[0]!, ...pkg.commitment.slice(1)] };
    case 'proof of another package':
      return withProof(other.proof);
    case 'negated z':
      return withProof(concatBytes(R, Fn.toBytes(Fn.neg(z))));
  }
}

describe('nodes/dkg-pok: the round-1 proof of knowledge, checked directly', () => {
  it('agrees with noble on honest packages and on every kind of change to them', function () {
    this.timeout(120_000);
    const seen = new Map<string, { accepted: number; refused: number }>();
    fc.assert(
      fc.property(
        sender,
        fc.constantFrom(2, 3),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        change,
        (node, t, seed, c) => {
          const pkg = honest(node, t, seed);
          const other = honest(node, t, sha512(seed).subarray(0, 32));
          const changed = apply(pkg, c, other);
          const noble = nobleAccepts(changed, t);
          expect(oursAccepts(changed), `${c.kind}: noble says ${noble}`).to.equal(noble);
          const tally = seen.get(c.kind) ?? { accepted: 0, refused: 0 };
          tally[noble ? 'accepted' : 'refused']++;
          seen.set(c.kind, tally);
        },
      ),
      { numRuns: 200 },
    );
    // Both verdicts were exercised: honest packages pass, changed ones fail.
    expect(seen.get('none')?.refused ?? 0).to.equal(0);
    expect(seen.get('none')?.accepted ?? 0).to.be.above(0);
    for (const kind of ['other sender', 'z zero', 'R the identity', 'proof of another package']) {
      expect(seen.get(kind)?.accepted ?? 0, kind).to.equal(0);
    }
  });

  it('agrees with noble on honest packages of every threshold up to 8', () => {
    fc.assert(
      fc.property(
        sender,
        fc.integer({ min: 2, max: 8 }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        (node, t, seed) => {
          const pkg = honest(node, t, seed);
          expect(oursAccepts(pkg)).to.equal(true);
          expect(nobleAccepts(pkg, t)).to.equal(true);
        },
      ),
      { numRuns: 25 },
    );
  });

  const shapes: [string, Uint8Array][] = [
    ['empty', new Uint8Array(0)],
    ['63 bytes', new Uint8Array(63)],
    ['65 bytes', new Uint8Array(65)],
    ['all 0xff', new Uint8Array(64).fill(0xff)],
  ];
  for (const [name, proof] of shapes) {
    it(`a proof that is ${name} is refused without throwing`, () => {
      expect(proofOfKnowledgeValid(2, Point.BASE, proof)).to.equal(false);
    });
  }
});

describe('nodes/dkg round 2: bad proofs named in one pass', () => {
  let dir: string;
  let ctx: NodeContext;
  beforeEach(async () => {
    dir = await tempDir();
    const store = NodeStore.open(dir, SELF, randomSecret());
    ctx = testContext(SELF, store);
  });
  afterEach(async () => {
    ctx.store.close();
    await removeDir(dir);
  });

  it(`${MAX_PARTICIPANTS} participants, t=17, every other proof bogus: all named, at once`, () => {
    const participants = Array.from({ length: MAX_PARTICIPANTS }, (_, i) => i + 1);
    const params = {
      ceremonyId: ceremonyId(),
      tenant: 'acme',
      version: 1,
      threshold: 17,
      participants,
    };
    const own = handleRound1(ctx, round1Body(params, committeeLookup([ctx])), {});
    // Valid commitments (node 2's), proofs that prove nothing for anyone else.
    const real = honest(2, 17, new Uint8Array(32).fill(7));
    const round1: Round1Wire[] = participants.map((node) =>
      node === SELF
        ? own
        : {
            node,
            commitment: real.commitment.map((c) => toB64(c)),
            proofOfKnowledge: toB64(
              node === 2 ? honest(2, 17, new Uint8Array(32)).proof : real.proof,
            ),
          },
    );
    const started = performance.now();
    const e = expectCode(
      () => handleRound2(ctx, { ceremonyId: params.ceremonyId, round1 }, {}),
      'ERR_DKG_FAILED',
    );
    const elapsed = performance.now() - started;
    expect(e.details?.culprits).to.deep.equal(participants.slice(1));
    // Linear in t: tens of milliseconds (a throwaway ceremony per suspect took ~30 s).
    expect(elapsed, `${elapsed} ms`).to.be.below(2000);
    // Nothing was saved: the honest transcript can still go through.
    expect(ctx.store.loadCeremony(params.ceremonyId)).to.not.equal(undefined);
  });

  it('one bad proof among honest ones names only its sender', () => {
    const participants = [1, 2, 3, 4, 5];
    const params = {
      ceremonyId: ceremonyId(),
      tenant: 'acme',
      version: 1,
      threshold: 3,
      participants,
    };
    const own = handleRound1(ctx, round1Body(params, committeeLookup([ctx])), {});
    const others = participants.slice(1).map((node) => {
      const pkg = honest(node, 3, new Uint8Array(32).fill(node));
      return {
        node,
        commitment: pkg.commitment.map((c) => toB64(c)),
        proofOfKnowledge: toB64(pkg.proof),
      };
    });
    const bad = fromB64(others[2]!.proofOfKnowledge, 'proof');
    bad[40]! ^= 1;
    others[2] = { ...others[2]!, proofOfKnowledge: toB64(bad) };
    expectCode(
      () => handleRound2(ctx, { ceremonyId: params.ceremonyId, round1: [own, ...others] }, {}),
      'ERR_DKG_FAILED',
      { culprits: [4] },
    );
  });
});
