/**
 * The DKG handlers (nodes/dkg.ts over nodes/dkg-machine.ts), driven directly: tables of "from
 * this state, this message, gives this error", idempotent repeats before and after the key is
 * stored, restart between rounds, a participant that finishes in a second attempt, dkg.commit,
 * and culprits named when a sender cheats.
 */
import { expect } from 'chai';
import { Fn, Point, fromB64, toB64 } from '../../shared/encoding.ts';
import type { ErrorCode } from '../../shared/errors.ts';
import { parseKeyPackage, type KeyPackage } from '../../shared/key-package.ts';
import { interpolateAtZero } from '../../shared/shamir.ts';
import type { NodeContext } from '../../nodes/context.ts';
import { handleCommit, handleRound1, handleRound2, handleRound3 } from '../../nodes/dkg.ts';
import type { Round1Wire, Round2Wire } from '../../nodes/dkg-machine.ts';
import {
  openPackage,
  sealPackage,
  signedPayload,
  type EnvelopeContext,
} from '../../nodes/round2-envelope.ts';
import type { Redacted } from '../../shared/redacted.ts';
import type { CommitteeMember } from '../../shared/proposal.ts';
import { NodeStore } from '../../nodes/store.ts';
import { strangerIdentity, testProposal } from '../helpers/operators.ts';
import {
  ceremonyId,
  committeeLookup,
  round1Body,
  testContext,
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
  return testContext(id, NodeStore.open(dir, id, secret));
}

/** Simulates a restart: close the store, open it again, reload the keyring. */
function restart(node: TestNode): void {
  node.ctx.store.close();
  node.ctx = openContext(node.id, node.dir, node.secret);
}

/** Every test node, by id, for committees and for sealing packages as a given sender. */
let nodes: TestNode[] = [];
const identityOf = (id: number) => nodes.find((n) => n.id === id)!.ctx.identity!;

/** The committee entry of each node: its real identity keys, or a stranger's for the others. */
const member = (node: number) => committeeLookup(nodes.map((m) => m.ctx))(node);

/**
 * dkg.round1 carrying the ceremony's proposal (signed by a quorum, with the participants' real
 * identity keys) and, as an honest coordinator sends it, the proposal's committee; `committee`
 * replaces the round-1 committee only (the proposal stays as signed).
 */
const r1 = (n: TestNode, p: DkgParams, committee?: CommitteeMember[]) => {
  const body = round1Body(p, member);
  return handleRound1(n.ctx, committee ? { ...body, committee } : body, {});
};
const r2 = (n: TestNode, id: string, round1: Round1Wire[]) =>
  handleRound2(n.ctx, { ceremonyId: id, round1 }, {});
const r3 = (n: TestNode, id: string, round2: Round2Wire[]) =>
  handleRound3(n.ctx, { ceremonyId: id, round2 }, {});
const commit = (n: TestNode, id: string) => handleCommit(n.ctx, { ceremonyId: id }, {});

function inbox(all: Round2Wire[], to: number): Round2Wire[] {
  return all.filter((p) => p.to === to);
}

function contextOf(p: DkgParams, from: number, to: number): EnvelopeContext {
  return { ceremonyId: p.ceremonyId, tenant: p.tenant, version: p.version, from, to };
}

/**
 * What `pkg`'s sender would have sent had it put `change(share)` in it: opened with the
 * recipient's identity and sealed again, properly signed, by the sender's identity.
 */
function reseal(
  p: DkgParams,
  pkg: Round2Wire,
  change: (share: Uint8Array) => Uint8Array,
  recipientKey = identityOf(pkg.to).encryptionPublicKey,
): Round2Wire {
  const context = contextOf(p, pkg.from, pkg.to);
  const sender = identityOf(pkg.from);
  const share = openPackage(context, pkg, sender.signingPublicKey, identityOf(pkg.to));
  return sealPackage(context, change(share), recipientKey, sender);
}

/** Shift a scalar by one: still a canonical scalar, no longer on the polynomial. */
function tamper(share: Uint8Array): Uint8Array {
  return Fn.toBytes(Fn.add(Fn.fromBytes(share), 1n));
}

describe('nodes/dkg: the node side of the three DKG rounds', () => {
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
        'ERR_PROPOSAL_MISMATCH',
      ],
      // Checked by the proposal, before the ceremony's own parameter checks.
      ['a participant appears twice', { participants: [1, 2, 2, 3, 4] }, 'ERR_PROPOSAL_INVALID'],
      ['a participant id is zero', { participants: [0, 1, 2, 3, 4] }, 'ERR_PROPOSAL_INVALID'],
      [
        'more than 32 participants (33)',
        { participants: Array.from({ length: 33 }, (_, i) => i + 1), threshold: 17 },
        'ERR_VALIDATION',
      ],
      [
        '64 participants, the most the message schema allows',
        { participants: Array.from({ length: 64 }, (_, i) => i + 1), threshold: 33 },
        'ERR_VALIDATION',
      ],
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
        expectCode(() => r1(node(1), params(change)), code as ErrorCode);
      });
    }

    // The committee whose keys seal round 2 is the operators': a round-1 committee that is not
    // the signed proposal's, in any entry, is refused before anything is stored.
    const committees: [string, (c: CommitteeMember[]) => CommitteeMember[]][] = [
      [
        "another node's encryption key swapped (node 2 under a stranger's key)",
        (c) =>
          c.map((m) => (m.node === 2 ? { ...m, encryption: strangerIdentity(2).encryption } : m)),
      ],
      [
        "another node's signing key swapped (node 3 under node 4's)",
        (c) => c.map((m) => (m.node === 3 ? { ...m, signing: c[3]!.signing } : m)),
      ],
      [
        "this node's entry with another encryption key",
        (c) => [{ ...c[0]!, encryption: c[1]!.encryption }, ...c.slice(1)],
      ],
      ['a participant missing from the committee', (c) => c.slice(0, 4)],
      ['a committee entry for a non-participant', (c) => [...c, { ...c[4]!, node: 6 }]],
      ['a committee entry twice, replacing another', (c) => [...c.slice(0, 4), c[2]!]],
      [
        'the entries of nodes 4 and 5 exchanged',
        (c) => [...c.slice(0, 3), { ...c[4]!, node: 4 }, { ...c[3]!, node: 5 }],
      ],
    ];
    for (const [name, change] of committees) {
      it(`a round-1 committee that is not the proposal's: ${name} gives ERR_PROPOSAL_MISMATCH`, () => {
        const p = params();
        const signed = round1Body(p, member).committee;
        expectCode(() => r1(node(1), p, change(signed)), 'ERR_PROPOSAL_MISMATCH', {
          field: 'committee',
        });
        const store = node(1).ctx.store;
        expect(store.loadCeremony(p.ceremonyId)).to.equal(undefined);
        expect(store.proposalUse(round1Body(p, member).proposal.nonce)).to.equal(undefined);
        // The same proposal with its own committee is then accepted.
        expect(r1(node(1), p).node).to.equal(1);
      });
    }

    it('a repeated round 1 returns the same package; other parameters conflict', () => {
      const p = params();
      const first = r1(node(1), p);
      expect(r1(node(1), p)).to.deep.equal(first);
      expectCode(() => r1(node(1), { ...p, threshold: 4 }), 'ERR_CEREMONY_CONFLICT');
      expectCode(() => r1(node(1), { ...p, tenant: 'other' }), 'ERR_CEREMONY_CONFLICT');
      // Another proposal with another committee (node 3 under other keys), signed by a quorum
      // and sent with its own committee, is other parameters too.
      const committee = p.participants.map((n) => (n === 3 ? strangerIdentity(3) : member(n)));
      const other = testProposal({ tenant: p.tenant, version: p.version, threshold: 3, committee });
      expectCode(() => r1(node(1), { ...p, proposal: other }), 'ERR_CEREMONY_CONFLICT');
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
        (m) => [...m, { ...m[0]!, from: 1, to: 1 }],
        'ERR_VALIDATION',
        { unexpected: [1] },
      ],
      ['a sender twice', (m) => [...m, m[0]!], 'ERR_BAD_IDENTIFIER'],
      [
        'a ciphertext that is not base64url',
        (m) => [{ ...m[0]!, ciphertext: 'AB' }, ...m.slice(1)],
        'ERR_DKG_PACKAGE_SIGNATURE',
        { from: 2, culprits: [2] },
      ],
      [
        "a package whose ciphertext is another sender's",
        (m) => [m[0]!, { ...m[1]!, ciphertext: m[2]!.ciphertext }, ...m.slice(2)],
        'ERR_DKG_PACKAGE_SIGNATURE',
        { from: 3, culprits: [3] },
      ],
      [
        'a package with one bit of its ciphertext flipped',
        (m) =>
          m.map((x) => {
            if (x.from !== 4) return x;
            const c = fromB64(x.ciphertext, 'c');
            c[5]! ^= 0x10;
            return { ...x, ciphertext: toB64(c) };
          }),
        'ERR_DKG_PACKAGE_SIGNATURE',
        { from: 4, culprits: [4] },
      ],
      [
        'the from fields of two packages swapped',
        (m) => [{ ...m[0]!, from: m[1]!.from }, { ...m[1]!, from: m[0]!.from }, ...m.slice(2)],
        'ERR_DKG_PACKAGE_SIGNATURE',
        { culprits: [2, 3] },
      ],
      [
        'two packages with bad signatures: both senders named',
        (m) =>
          m.map((x) => (x.from === 2 || x.from === 5 ? { ...x, signature: m[1]!.signature } : x)),
        'ERR_DKG_PACKAGE_SIGNATURE',
        { culprits: [2, 5] },
      ],
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

    it("a package sealed to a key other than the recipient's fails its signature check", () => {
      // The recipient's key is part of what is signed: sealed for someone else is not for us.
      const stranger = fromB64(strangerIdentity(9).encryption, 'k');
      const mine = inbox(round2, 1).map((x) =>
        x.from === 4 ? reseal(p, x, (s) => s, stranger) : x,
      );
      expectCode(() => r3(node(1), p.ceremonyId, mine), 'ERR_DKG_PACKAGE_SIGNATURE', {
        from: 4,
        culprits: [4],
      });
    });

    it('a correctly signed package that does not decrypt gives ERR_DKG_PACKAGE_DECRYPT', () => {
      const mine = inbox(round2, 1).map((x) => {
        if (x.from !== 4) return x;
        const ciphertext = fromB64(x.ciphertext, 'c');
        ciphertext[0]! ^= 0x01;
        const signed = signedPayload(
          contextOf(p, 4, 1),
          fromB64(x.ephemeral, 'e'),
          identityOf(1).encryptionPublicKey,
          ciphertext,
        );
        // Node 4 itself signs the damaged ciphertext: the failure is its own.
        return {
          ...x,
          ciphertext: toB64(ciphertext),
          signature: toB64(identityOf(4).sign(signed)),
        };
      });
      expectCode(() => r3(node(1), p.ceremonyId, mine), 'ERR_DKG_PACKAGE_DECRYPT', {
        from: 4,
        to: 1,
        culprits: [4],
        ceremonyId: p.ceremonyId,
      });
      expect(node(1).ctx.store.hasKey('acme', 1)).to.equal(false);
      // The state survives: the honest packages still finish the ceremony.
      expect(r3(node(1), p.ceremonyId, inbox(round2, 1)).keyPackage.tenant).to.equal('acme');
    });

    it("a package another node signed in the sender's name gives ERR_DKG_PACKAGE_SIGNATURE", () => {
      const mine = inbox(round2, 1).map((x) => {
        if (x.from !== 5) return x;
        const share = openPackage(
          contextOf(p, 5, 1),
          x,
          identityOf(5).signingPublicKey,
          identityOf(1),
        );
        // Node 2 holds a valid signing key, just not node 5's.
        return sealPackage(
          contextOf(p, 5, 1),
          share,
          identityOf(1).encryptionPublicKey,
          identityOf(2),
        );
      });
      expectCode(() => r3(node(1), p.ceremonyId, mine), 'ERR_DKG_PACKAGE_SIGNATURE', {
        from: 5,
        culprits: [5],
      });
    });

    it('shares inconsistent with their commitments give ERR_DKG_FAILED naming the senders', () => {
      const mine = inbox(round2, 1).map((x) =>
        x.from === 3 || x.from === 5 ? reseal(p, x, tamper) : x,
      );
      expectCode(() => r3(node(1), p.ceremonyId, mine), 'ERR_DKG_FAILED', {
        culprits: [3, 5],
        ceremonyId: p.ceremonyId,
      });
      // Malformed scalars (not below the order, zero) are the sender's fault too.
      const garbage = inbox(round2, 1).map((x) =>
        x.from === 2
          ? reseal(p, x, () => new Uint8Array(32).fill(0xff))
          : x.from === 4
            ? reseal(p, x, () => new Uint8Array(32))
            : x,
      );
      expectCode(() => r3(node(1), p.ceremonyId, garbage), 'ERR_DKG_FAILED', { culprits: [2, 4] });
      expect(node(1).ctx.store.hasKey('acme', 1)).to.equal(false);
      // The state survives the failure: honest packages still finish the ceremony.
      expect(r3(node(1), p.ceremonyId, inbox(round2, 1)).keyPackage.tenant).to.equal('acme');
    });

    it('a repeated round 3 returns the stored key package, whatever it is sent', () => {
      const first = r3(node(1), p.ceremonyId, inbox(round2, 1));
      expect(r3(node(1), p.ceremonyId, [])).to.deep.equal(first);
      expect(r3(node(1), p.ceremonyId, inbox(round2, 2))).to.deep.equal(first);
    });
  });

  describe('every round replays identically, before and after the key is stored', () => {
    let p: DkgParams;
    let round1: Round1Wire[];
    let round2: Round2Wire[];
    /** Node 1's first answer to each round. */
    let first: {
      round1: Round1Wire;
      round2: { packages: Round2Wire[] };
      round3: { keyPackage: KeyPackage };
    };
    beforeEach(() => {
      p = params();
      ({ round1, round2 } = upToRound2(p));
      first = {
        round1: round1[0]!,
        round2: { packages: round2.filter((x) => x.from === 1) },
        round3: r3(node(1), p.ceremonyId, inbox(round2, 1)),
      };
    });

    const replays: [string, () => unknown, keyof typeof first][] = [
      ['round 1', () => r1(node(1), p), 'round1'],
      ['round 2', () => r2(node(1), p.ceremonyId, round1), 'round2'],
      [
        'round 2, packages in another order',
        () => r2(node(1), p.ceremonyId, [...round1].reverse()),
        'round2',
      ],
      ['round 3', () => r3(node(1), p.ceremonyId, inbox(round2, 1)), 'round3'],
      ['round 3 without packages', () => r3(node(1), p.ceremonyId, []), 'round3'],
    ];
    const stages: [string, () => void][] = [
      ['right after the key is stored', () => undefined],
      ['after a restart', () => restart(node(1))],
      [
        'after the other nodes finished too',
        () => {
          for (const n of nodes.slice(1)) r3(n, p.ceremonyId, inbox(round2, n.id));
        },
      ],
    ];
    for (const [stage, before] of stages) {
      for (const [name, replay, round] of replays) {
        it(`${name}, ${stage}, gives the first answer`, () => {
          before();
          expect(node(1).ctx.store.hasKey('acme', 1)).to.equal(true);
          expect(replay()).to.deep.equal(first[round]);
        });
      }
    }

    it('rounds 1 and 2 replay identically before round 3 as well', () => {
      const q = params({ tenant: 'other' });
      const a = upToRound2(q);
      expect(nodes.map((n) => r1(n, q))).to.deep.equal(a.round1);
      expect(nodes.flatMap((n) => r2(n, q.ceremonyId, a.round1).packages)).to.deep.equal(a.round2);
    });

    it('other round-1 packages or other parameters still conflict after the key is stored', () => {
      const other = nodes.slice(1).map((n) => r1(n, { ...p, ceremonyId: ceremonyId() }));
      expectCode(() => r2(node(1), p.ceremonyId, [round1[0]!, ...other]), 'ERR_CEREMONY_CONFLICT');
      expectCode(() => r1(node(1), { ...p, threshold: 4 }), 'ERR_CEREMONY_CONFLICT');
      // A new ceremony for the same key is refused.
      expectCode(() => r1(node(1), { ...p, ceremonyId: ceremonyId() }), 'ERR_CEREMONY_CONFLICT', {
        tenant: 'acme',
        version: 1,
      });
    });
  });

  describe('dkg.commit erases the ceremony state of a finished ceremony', () => {
    it('erases the state; round 3 still answers, rounds 1 and 2 then conflict', () => {
      const p = params();
      const { round2 } = upToRound2(p);
      const pkg = r3(node(1), p.ceremonyId, inbox(round2, 1));
      expect(node(1).ctx.store.loadCeremony(p.ceremonyId)).to.not.equal(undefined);
      expect(commit(node(1), p.ceremonyId)).to.deep.equal({
        ceremonyId: p.ceremonyId,
        erased: true,
      });
      expect(node(1).ctx.store.loadCeremony(p.ceremonyId)).to.equal(undefined);
      // Repeating it is harmless.
      expect(commit(node(1), p.ceremonyId)).to.deep.equal({
        ceremonyId: p.ceremonyId,
        erased: false,
      });
      expect(r3(node(1), p.ceremonyId, [])).to.deep.equal(pkg);
      expectCode(() => r1(node(1), p), 'ERR_CEREMONY_CONFLICT');
      expectCode(() => r2(node(1), p.ceremonyId, []), 'ERR_CEREMONY_CONFLICT');
      // The key itself is untouched.
      restart(node(1));
      expect(node(1).ctx.keyring.get('acme', 1).keyPackage).to.deep.equal(pkg.keyPackage);
    });

    const refusals: [string, (p: DkgParams) => void, string][] = [
      ['an unknown ceremony', () => undefined, 'ERR_UNKNOWN_CEREMONY'],
      ['a ceremony after round 1', (p) => r1(node(1), p), 'ERR_CEREMONY_CONFLICT'],
      ['a ceremony after round 2', (p) => upToRound2(p), 'ERR_CEREMONY_CONFLICT'],
    ];
    for (const [name, setup, code] of refusals) {
      it(`refuses ${name} with ${code} and keeps its state`, () => {
        const p = params();
        setup(p);
        const before = node(1).ctx.store.loadCeremony(p.ceremonyId)?.state;
        expectCode(() => commit(node(1), p.ceremonyId), code as 'ERR_CEREMONY_CONFLICT');
        expect(node(1).ctx.store.loadCeremony(p.ceremonyId)?.state).to.deep.equal(before);
      });
    }

    it('storing a key erases the state of another ceremony for the same key, not its own', () => {
      const a = params();
      const b = params();
      upToRound2(b);
      const { round2 } = upToRound2(a);
      r3(node(1), a.ceremonyId, inbox(round2, 1));
      expect(node(1).ctx.store.loadCeremony(a.ceremonyId)).to.not.equal(undefined);
      expect(node(1).ctx.store.loadCeremony(b.ceremonyId)).to.equal(undefined);
      expect(node(2).ctx.store.loadCeremony(b.ceremonyId)).to.not.equal(undefined);
    });
  });

  it('a node that crashed before round 3 finishes it in a second attempt, with the same key', () => {
    const p = params();
    // Attempt 1: rounds 1 and 2 everywhere; round 3 reaches every node but node 3, which dies.
    const attempt1 = upToRound2(p);
    const firstKeys = new Map(
      nodes
        .filter((n) => n.id !== 3)
        .map((n) => [n.id, r3(n, p.ceremonyId, inbox(attempt1.round2, n.id)).keyPackage]),
    );
    restart(node(3));
    expect(node(3).ctx.store.hasKey('acme', 1)).to.equal(false);

    // Attempt 2, same ceremony id: every node replays rounds 1 and 2 identically ...
    const round1 = nodes.map((n) => r1(n, p));
    expect(round1).to.deep.equal(attempt1.round1);
    const round2 = nodes.flatMap((n) => r2(n, p.ceremonyId, round1).packages);
    expect(round2).to.deep.equal(attempt1.round2);
    // ... and round 3 gives the stored package on four nodes, a fresh one, the same, on node 3.
    const packages = nodes.map((n) => r3(n, p.ceremonyId, inbox(round2, n.id)).keyPackage);
    for (const pkg of packages) expect(pkg).to.deep.equal(firstKeys.get(1));
    for (const [id, pkg] of firstKeys) expect(packages[id - 1]).to.deep.equal(pkg);

    restart(node(3));
    expect(node(3).ctx.keyring.get('acme', 1).keyPackage).to.deep.equal(packages[0]);
    const group = parseKeyPackage(packages[0]!).groupKey;
    const shares = [1, 3, 5].map((id) => ({
      id,
      value: node(id).ctx.store.getKey('acme', 1)!.share.reveal(),
    }));
    expect(Point.BASE.multiply(interpolateAtZero(shares)).equals(group)).to.equal(true);

    for (const n of nodes) commit(n, p.ceremonyId);
    for (const n of nodes) expect(n.ctx.store.loadCeremony(p.ceremonyId)).to.equal(undefined);
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
      // Kept until dkg.commit, for participants that have not finished.
      expect(n.ctx.store.loadCeremony(p.ceremonyId)).to.not.equal(undefined);
    }
  });
});
