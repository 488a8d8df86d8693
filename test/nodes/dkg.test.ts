/**
 * The DKG handlers (nodes/dkg.ts over nodes/dkg-machine.ts), driven directly: tables of "from
 * this state, this message, gives this error", idempotent repeats, restart between rounds, and
 * culprits named when a sender cheats.
 */
import { expect } from 'chai';
import { Fn, Point, fromB64, toB64 } from '../../shared/encoding.ts';
import { parseKeyPackage, type KeyPackage } from '../../shared/key-package.ts';
import { interpolateAtZero } from '../../shared/shamir.ts';
import type { NodeContext } from '../../nodes/context.ts';
import { handleRound1, handleRound2, handleRound3 } from '../../nodes/dkg.ts';
import type { Round1Wire, Round2Wire } from '../../nodes/dkg-machine.ts';
import { Keyring } from '../../nodes/keyring.ts';
import { Redacted } from '../../shared/redacted.ts';
import { NodeStore } from '../../nodes/store.ts';
import {
  CLIENT_TOKEN,
  ceremonyId,
  expectCode,
  randomSecret,
  removeDir,
  tempDir,
  type DkgParams,
} from './helpers.ts';

interface TestNode {
  id: number;
  dir: string;
  secret: Redacted<Uint8Array>;
  ctx: NodeContext;
}

function openContext(id: number, dir: string, secret: Redacted<Uint8Array>): NodeContext {
  const store = NodeStore.open(dir, id, secret);
  const keyring = new Keyring(id);
  for (const k of store.listKeys()) keyring.add(k);
  return { nodeId: id, store, keyring, clientToken: new Redacted(CLIENT_TOKEN) };
}

/** Simulates a restart: close the store, open it again, reload the keyring. */
function restart(node: TestNode): void {
  node.ctx.store.close();
  node.ctx = openContext(node.id, node.dir, node.secret);
}

const r1 = (n: TestNode, p: DkgParams) => handleRound1(n.ctx, p, {});
const r2 = (n: TestNode, id: string, round1: Round1Wire[]) =>
  handleRound2(n.ctx, { ceremonyId: id, round1 }, {});
const r3 = (n: TestNode, id: string, round2: Round2Wire[]) =>
  handleRound3(n.ctx, { ceremonyId: id, round2 }, {});

function inbox(all: Round2Wire[], to: number): Round2Wire[] {
  return all.filter((p) => p.to === to);
}

/** Shift a base64url scalar by one: still a canonical scalar, no longer on the polynomial. */
function tamper(share: string): string {
  return toB64(Fn.toBytes(Fn.add(Fn.fromBytes(fromB64(share, 's')), 1n)));
}

describe('nodes/dkg: the node side of the three DKG rounds', () => {
  let nodes: TestNode[];
  const node = (id: number) => nodes.find((n) => n.id === id)!;

  beforeEach(async () => {
    nodes = [];
    for (let id = 1; id <= 5; id++) {
      const dir = await tempDir();
      const secret = randomSecret();
      nodes.push({ id, dir, secret, ctx: openContext(id, dir, secret) });
    }
  });

  afterEach(async () => {
    for (const n of nodes) {
      n.ctx.store.close();
      await removeDir(n.dir);
    }
  });

  function params(overrides: Partial<DkgParams> = {}): DkgParams {
    return {
      ceremonyId: ceremonyId(),
      tenant: 'acme',
      version: 1,
      threshold: 3,
      participants: [1, 2, 3, 4, 5],
      ...overrides,
    };
  }

  /** Rounds 1 and 2 for every participant. */
  function upToRound2(p: DkgParams) {
    const members = p.participants.map(node);
    const round1 = members.map((n) => r1(n, p));
    const round2 = members.flatMap((n) => r2(n, p.ceremonyId, round1).packages);
    return { members, round1, round2 };
  }

  function fullCeremony(p: DkgParams): Map<number, KeyPackage> {
    const { members, round2 } = upToRound2(p);
    return new Map(members.map((n) => [n.id, r3(n, p.ceremonyId, inbox(round2, n.id)).keyPackage]));
  }

  it('3-of-5: identical key packages, and any 3 stored shares recombine to the group key', () => {
    const p = params();
    const packages = fullCeremony(p);
    const first = packages.get(1)!;
    for (const pkg of packages.values()) expect(pkg).to.deep.equal(first);
    const parsed = parseKeyPackage(first);
    expect(parsed.threshold).to.equal(3);
    expect([...parsed.verificationShares.keys()]).to.deep.equal([1, 2, 3, 4, 5]);
    const shares = nodes.map((n) => ({
      id: n.id,
      value: n.ctx.store.getKey('acme', 1)!.share.reveal(),
    }));
    for (const subset of [
      [0, 1, 2],
      [1, 3, 4],
      [0, 2, 4],
    ]) {
      const k = interpolateAtZero(subset.map((i) => shares[i]!));
      expect(Point.BASE.multiply(k).equals(parsed.groupKey)).to.equal(true);
    }
    // Two shares are not enough: they interpolate to something else.
    const two = interpolateAtZero([shares[0]!, shares[1]!]);
    expect(Point.BASE.multiply(two).equals(parsed.groupKey)).to.equal(false);
    for (const n of nodes) expect(n.ctx.keyring.get('acme', 1).keyPackage).to.deep.equal(first);
  });

  it('a ceremony over a subset of the nodes (2-of-3) works and leaves the others alone', () => {
    const packages = fullCeremony(params({ threshold: 2, participants: [2, 4, 5] }));
    expect([...packages.keys()]).to.deep.equal([2, 4, 5]);
    expect(node(1).ctx.store.hasKey('acme', 1)).to.equal(false);
  });

  describe('round 1 refuses bad parameters', () => {
    const table: [string, Partial<DkgParams>, string][] = [
      [
        'this node is not a participant',
        { participants: [2, 3, 4], threshold: 2 },
        'ERR_VALIDATION',
      ],
      ['a participant appears twice', { participants: [1, 2, 2, 3, 4] }, 'ERR_BAD_IDENTIFIER'],
      ['a participant id is zero', { participants: [0, 1, 2, 3, 4] }, 'ERR_BAD_IDENTIFIER'],
      ['threshold is not a majority (2 of 5)', { threshold: 2 }, 'ERR_BAD_THRESHOLD'],
      ['threshold is above n (6 of 5)', { threshold: 6 }, 'ERR_BAD_THRESHOLD'],
      [
        'threshold is half (2 of 4)',
        { threshold: 2, participants: [1, 2, 3, 4] },
        'ERR_BAD_THRESHOLD',
      ],
    ];
    for (const [name, change, code] of table) {
      it(`${name} gives ${code}`, () => {
        expectCode(() => r1(node(1), params(change)), code as 'ERR_VALIDATION');
      });
    }

    it('a repeated round 1 returns the same package; other parameters conflict', () => {
      const p = params();
      const first = r1(node(1), p);
      expect(r1(node(1), p)).to.deep.equal(first);
      expectCode(() => r1(node(1), { ...p, threshold: 4 }), 'ERR_CEREMONY_CONFLICT');
      expectCode(() => r1(node(1), { ...p, tenant: 'other' }), 'ERR_CEREMONY_CONFLICT');
    });

    it('a (tenant, version) that already has a key refuses a second ceremony', () => {
      fullCeremony(params());
      expectCode(() => r1(node(1), params()), 'ERR_CEREMONY_CONFLICT', {
        tenant: 'acme',
        version: 1,
      });
      // Another version is a new key: fine.
      expect(r1(node(1), params({ version: 2 })).node).to.equal(1);
    });
  });

  describe('round 2 checks the round-1 packages', () => {
    let p: DkgParams;
    let round1: Round1Wire[];
    beforeEach(() => {
      p = params();
      round1 = nodes.map((n) => r1(n, p));
    });

    const cases: [string, (r: Round1Wire[]) => Round1Wire[], string, object?][] = [
      ['a participant missing', (r) => r.slice(0, 4), 'ERR_VALIDATION', { missing: [5] }],
      [
        'a non-participant added',
        (r) => [...r, { ...r[4]!, node: 6 }],
        'ERR_VALIDATION',
        { unexpected: [6] },
      ],
      ['a package twice', (r) => [...r.slice(0, 4), r[3]!], 'ERR_BAD_IDENTIFIER'],
      [
        "this node's own package altered",
        (r) => [{ ...r[0]!, proofOfKnowledge: r[1]!.proofOfKnowledge }, ...r.slice(1)],
        'ERR_VALIDATION',
        { field: 'round1' },
      ],
      [
        'too few commitments',
        (r) => [r[0]!, { ...r[1]!, commitment: r[1]!.commitment.slice(1) }, ...r.slice(2)],
        'ERR_VALIDATION',
        { field: 'round1[1].commitment' },
      ],
      [
        'an identity commitment',
        (r) => [
          r[0]!,
          { ...r[1]!, commitment: [toB64(new Uint8Array(32)), ...r[1]!.commitment.slice(1)] },
          ...r.slice(2),
        ],
        'ERR_IDENTITY_POINT',
      ],
      [
        'a non-canonical commitment',
        (r) => [
          r[0]!,
          {
            ...r[1]!,
            // 2^255 - 1 is above the field prime: RFC 9496 section 4.3.1 refuses it.
            commitment: [toB64(new Uint8Array(32).fill(0xff)), ...r[1]!.commitment.slice(1)],
          },
          ...r.slice(2),
        ],
        'ERR_INVALID_POINT',
      ],
      [
        'a short proof',
        (r) => [r[0]!, { ...r[1]!, proofOfKnowledge: toB64(new Uint8Array(63)) }, ...r.slice(2)],
        'ERR_BAD_LENGTH',
      ],
    ];
    for (const [name, change, code, details] of cases) {
      it(`${name} gives ${code}`, () => {
        expectCode(
          () => r2(node(1), p.ceremonyId, change(round1)),
          code as 'ERR_VALIDATION',
          details,
        );
      });
    }

    it('an unknown ceremony gives ERR_UNKNOWN_CEREMONY', () => {
      expectCode(() => r2(node(1), 'never-started', round1), 'ERR_UNKNOWN_CEREMONY');
    });

    it('swapped proofs of knowledge give ERR_DKG_FAILED naming both senders', () => {
      const swapped = round1.map((r) =>
        r.node === 2
          ? { ...r, proofOfKnowledge: round1[3]!.proofOfKnowledge }
          : r.node === 4
            ? { ...r, proofOfKnowledge: round1[1]!.proofOfKnowledge }
            : r,
      );
      expectCode(() => r2(node(1), p.ceremonyId, swapped), 'ERR_DKG_FAILED', { culprits: [2, 4] });
      // The failure changed nothing: the honest transcript still goes through.
      expect(r2(node(1), p.ceremonyId, round1).packages).to.have.length(4);
    });

    it('a repeated round 2 returns the same packages; a different transcript conflicts', () => {
      const first = r2(node(1), p.ceremonyId, round1);
      expect(r2(node(1), p.ceremonyId, [...round1].reverse())).to.deep.equal(first);
      expect(first.packages.map((x) => [x.from, x.to])).to.deep.equal([
        [1, 2],
        [1, 3],
        [1, 4],
        [1, 5],
      ]);
      const other = nodes.slice(1).map((n) => r1(n, { ...p, ceremonyId: ceremonyId() }));
      expectCode(() => r2(node(1), p.ceremonyId, [round1[0]!, ...other]), 'ERR_CEREMONY_CONFLICT');
    });
  });

  describe('round 3 checks the round-2 packages', () => {
    let p: DkgParams;
    let round2: Round2Wire[];
    beforeEach(() => {
      p = params();
      round2 = upToRound2(p).round2;
    });

    it('before round 2 gives ERR_CEREMONY_CONFLICT', () => {
      const q = params();
      r1(node(1), q);
      expectCode(() => r3(node(1), q.ceremonyId, inbox(round2, 1)), 'ERR_CEREMONY_CONFLICT');
    });

    const cases: [
      string,
      (mine: Round2Wire[], all: Round2Wire[]) => Round2Wire[],
      string,
      object?,
    ][] = [
      [
        'a package addressed to another node',
        (m, all) => [...m.slice(1), all.find((x) => x.to === 2 && x.from === 3)!],
        'ERR_VALIDATION',
        { field: 'round2[3].to' },
      ],
      ['a sender missing', (m) => m.slice(1), 'ERR_VALIDATION', { missing: [2] }],
      [
        'a package from this node itself',
        (m) => [...m, { from: 1, to: 1, signingShare: m[0]!.signingShare }],
        'ERR_VALIDATION',
        { unexpected: [1] },
      ],
      ['a sender twice', (m) => [...m, m[0]!], 'ERR_BAD_IDENTIFIER'],
      ['bad base64', (m) => [{ ...m[0]!, signingShare: 'AB' }, ...m.slice(1)], 'ERR_BAD_BASE64'],
    ];
    for (const [name, change, code, details] of cases) {
      it(`${name} gives ${code}`, () => {
        expectCode(
          () => r3(node(1), p.ceremonyId, change(inbox(round2, 1), round2)),
          code as 'ERR_VALIDATION',
          details,
        );
      });
    }

    it('an unknown ceremony gives ERR_UNKNOWN_CEREMONY', () => {
      expectCode(() => r3(node(1), 'never-started', inbox(round2, 1)), 'ERR_UNKNOWN_CEREMONY');
    });

    it('shares inconsistent with their commitments give ERR_DKG_FAILED naming the senders', () => {
      const mine = inbox(round2, 1).map((x) =>
        x.from === 3 || x.from === 5 ? { ...x, signingShare: tamper(x.signingShare) } : x,
      );
      expectCode(() => r3(node(1), p.ceremonyId, mine), 'ERR_DKG_FAILED', {
        culprits: [3, 5],
        ceremonyId: p.ceremonyId,
      });
      // Malformed scalars (wrong length, not below the order) are the sender's fault too.
      const garbage = inbox(round2, 1).map((x) =>
        x.from === 2
          ? { ...x, signingShare: toB64(new Uint8Array(32).fill(0xff)) }
          : x.from === 4
            ? { ...x, signingShare: toB64(new Uint8Array(31)) }
            : x,
      );
      expectCode(() => r3(node(1), p.ceremonyId, garbage), 'ERR_DKG_FAILED', { culprits: [2, 4] });
      expect(node(1).ctx.store.hasKey('acme', 1)).to.equal(false);
      // The state survives the failure: honest packages still finish the ceremony.
      expect(r3(node(1), p.ceremonyId, inbox(round2, 1)).keyPackage.tenant).to.equal('acme');
    });

    it('a repeated round 3 returns the stored key package; round 1 and 2 then conflict', () => {
      const first = r3(node(1), p.ceremonyId, inbox(round2, 1));
      expect(r3(node(1), p.ceremonyId, [])).to.deep.equal(first);
      expectCode(() => r1(node(1), p), 'ERR_CEREMONY_CONFLICT');
      expectCode(() => r2(node(1), p.ceremonyId, []), 'ERR_CEREMONY_CONFLICT');
    });
  });

  it('a restart between every round loses nothing', () => {
    const p = params();
    const round1 = nodes.map((n) => r1(n, p));
    nodes.forEach(restart);
    // Round 1 is replayed from disk, byte for byte.
    expect(nodes.map((n) => r1(n, p))).to.deep.equal(round1);
    const round2 = nodes.flatMap((n) => r2(n, p.ceremonyId, round1).packages);
    nodes.forEach(restart);
    expect(nodes.flatMap((n) => r2(n, p.ceremonyId, round1).packages)).to.deep.equal(round2);
    const packages = nodes.map((n) => r3(n, p.ceremonyId, inbox(round2, n.id)).keyPackage);
    nodes.forEach(restart);
    for (const n of nodes) {
      expect(n.ctx.keyring.get('acme', 1).keyPackage).to.deep.equal(packages[0]);
      expect(n.ctx.store.loadCeremony(p.ceremonyId)).to.equal(undefined);
    }
  });
});
