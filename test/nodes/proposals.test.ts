/**
 * nodes/proposals.ts through the handlers: a refused proposal leaves nothing behind (no ceremony
 * state, no nonce, no key); a replay of the same round of the same ceremony stays idempotent; a
 * proposal used once is refused for any other ceremony; key.retire erases the share for good.
 */
import { expect } from 'chai';
import type { ErrorCode } from '../../shared/errors.ts';
import type { CommitteeMember, Proposal } from '../../shared/proposal.ts';
import type { NodeContext } from '../../nodes/context.ts';
import { handleCommit, handleRound1, handleRound2, handleRound3 } from '../../nodes/dkg.ts';
import { handleProposalApply } from '../../nodes/proposals.ts';
import { NodeStore } from '../../nodes/store.ts';
import type { Redacted } from '../../shared/redacted.ts';
import { signWith, strangerIdentity, testProposal } from '../helpers/operators.ts';
import {
  ceremonyId,
  committeeLookup,
  expectCode,
  randomSecret,
  removeDir,
  round1Body,
  tempDir,
  testContext,
  type DkgParams,
} from './helpers.ts';

interface TestNode {
  id: number;
  dir: string;
  secret: Redacted<Uint8Array>;
  ctx: NodeContext;
}

describe('nodes/proposals: every node checks the proposal before it acts', () => {
  let nodes: TestNode[];
  let member: (node: number) => CommitteeMember;

  beforeEach(async () => {
    nodes = [];
    for (const id of [1, 2, 3]) {
      const dir = await tempDir();
      const secret = randomSecret();
      nodes.push({ id, dir, secret, ctx: testContext(id, NodeStore.open(dir, id, secret)) });
    }
    member = committeeLookup(nodes.map((n) => n.ctx));
  });

  afterEach(async () => {
    for (const n of nodes) {
      n.ctx.store.close();
      await removeDir(n.dir);
    }
  });

  const ctx = (id: number) => nodes.find((n) => n.id === id)!.ctx;

  function params(overrides: Partial<DkgParams> = {}): DkgParams {
    return {
      ceremonyId: ceremonyId(),
      tenant: 'acme',
      version: 1,
      threshold: 2,
      participants: [1, 2, 3],
      ...overrides,
    };
  }

  function proposal(
    overrides: Partial<Parameters<typeof testProposal>[0]> = {},
    signers?: number[],
  ): Proposal {
    return testProposal(
      { tenant: 'acme', version: 1, threshold: 2, committee: [1, 2, 3].map(member), ...overrides },
      signers,
    );
  }

  /** The dkg.round1 body of `p` carrying `prop`, with the committee of `prop` as a coordinator sends it. */
  const body = (p: DkgParams, prop: Proposal) => round1Body({ ...p, proposal: prop }, member);

  /** Nothing at all on node `id` for this ceremony or proposal. */
  function expectUntouched(id: number, p: DkgParams, prop: Proposal): void {
    const c = ctx(id);
    expect(c.store.loadCeremony(p.ceremonyId)).to.equal(undefined);
    expect(c.store.proposalUse(prop.nonce)).to.equal(undefined);
    expect(c.store.listKeys()).to.deep.equal([]);
  }

  const refusals: [string, (p: DkgParams) => Proposal, ErrorCode][] = [
    ['signed by 1 of the 2 required operators', () => proposal({}, [0]), 'ERR_PROPOSAL_QUORUM'],
    [
      'signed for another cluster',
      () => proposal({ cluster: 'elsewhere' }),
      'ERR_PROPOSAL_CLUSTER',
    ],
    ['expired', () => proposal({ expiresAt: new Date(Date.now() - 1) }), 'ERR_PROPOSAL_EXPIRED'],
    ['edited after signing', () => ({ ...proposal(), tenant: 'globex' }), 'ERR_PROPOSAL_QUORUM'],
    [
      'for another tenant than the request',
      () => proposal({ tenant: 'globex' }),
      'ERR_PROPOSAL_MISMATCH',
    ],
    ['for another threshold', () => proposal({ threshold: 3 }), 'ERR_PROPOSAL_MISMATCH'],
    [
      'whose committee is not the participants',
      () =>
        proposal({
          committee: [1, 2, 3, 4].map((n) => (n === 4 ? strangerIdentity(4) : member(n))),
        }),
      'ERR_PROPOSAL_MISMATCH',
    ],
    [
      'whose committee carries other keys for this node',
      () => proposal({ committee: [strangerIdentity(1), member(2), member(3)] }),
      'ERR_PROPOSAL_MISMATCH',
    ],
    [
      'a key.retire sent as a DKG',
      () => proposal({ operation: 'key.retire' }),
      'ERR_PROPOSAL_MISMATCH',
    ],
  ];
  for (const [name, make, code] of refusals) {
    it(`dkg.round1 with a proposal ${name}: ${code}, and nothing is stored`, () => {
      const p = params();
      const prop = make(p);
      expectCode(() => handleRound1(ctx(1), body(p, prop), {}), code);
      expectUntouched(1, p, prop);
    });
  }

  it("dkg.round1 whose committee is not its proposal's (node 2's encryption key swapped): ERR_PROPOSAL_MISMATCH, and nothing is stored", () => {
    const p = params();
    const prop = proposal();
    const honest = body(p, prop);
    // A coordinator that puts a key of its own in node 2's entry would read what node 1 seals
    // to node 2 in round 2: the proposal, signed by the operators, says otherwise.
    const swapped = honest.committee.map((m) =>
      m.node === 2 ? { ...m, encryption: strangerIdentity(2).encryption } : m,
    );
    expectCode(
      () => handleRound1(ctx(1), { ...honest, committee: swapped }, {}),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'committee', nodes: [2] },
    );
    expectUntouched(1, p, prop);
    // The proposal is not spent: with its own committee the same round 1 then goes through.
    expect(handleRound1(ctx(1), honest, {}).node).to.equal(1);
  });

  it('the same round of the same ceremony replays; another ceremony is ERR_PROPOSAL_REPLAYED', () => {
    const p = params();
    const prop = proposal();
    const first = handleRound1(ctx(1), body(p, prop), {});
    expect(handleRound1(ctx(1), body(p, prop), {})).to.deep.equal(first);
    const other = params();
    expectCode(() => handleRound1(ctx(1), body(other, prop), {}), 'ERR_PROPOSAL_REPLAYED', {
      ceremonyId: other.ceremonyId,
    });
    expect(ctx(1).store.loadCeremony(other.ceremonyId)).to.equal(undefined);
    // More signatures do not make it another proposal: the same id, the same nonce.
    const resigned = signWith(prop, [2]);
    expectCode(() => handleRound1(ctx(1), body(params(), resigned), {}), 'ERR_PROPOSAL_REPLAYED');
  });

  /** A whole ceremony for `prop` on every node; returns each node's group key. */
  function ceremony(prop: Proposal): string {
    const p = params({ version: prop.version, threshold: prop.threshold! });
    const round1 = nodes.map((n) => handleRound1(n.ctx, body(p, prop), {}));
    const round2 = nodes.flatMap(
      (n) => handleRound2(n.ctx, { ceremonyId: p.ceremonyId, round1 }, {}).packages,
    );
    const keys = nodes.map(
      (n) =>
        handleRound3(
          n.ctx,
          { ceremonyId: p.ceremonyId, round2: round2.filter((x) => x.to === n.id) },
          {},
        ).keyPackage,
    );
    for (const n of nodes) handleCommit(n.ctx, { ceremonyId: p.ceremonyId }, {});
    // After use, for a new ceremony, on every node.
    for (const n of nodes) {
      expectCode(
        () =>
          handleRound1(
            n.ctx,
            body(params({ version: prop.version, threshold: prop.threshold! }), prop),
            {},
          ),
        'ERR_PROPOSAL_REPLAYED',
      );
    }
    return keys[0]!.groupKey;
  }

  it('tenant.create, key.rotate to v2, key.retire of v1: v1 erased and refused, v2 serves', () => {
    ceremony(proposal());
    // Rotation must name the next version; a second tenant.create is refused.
    expectCode(
      () =>
        handleRound1(
          ctx(1),
          body(params({ version: 3 }), proposal({ version: 3, operation: 'key.rotate' })),
          {},
        ),
      'ERR_PROPOSAL_MISMATCH',
    );
    expectCode(
      () => handleRound1(ctx(1), body(params({ tenant: 'acme' }), proposal()), {}),
      'ERR_CEREMONY_CONFLICT',
    );
    ceremony(proposal({ version: 2, operation: 'key.rotate' }));
    for (const n of nodes) expect(n.ctx.keyring.list().map((k) => k.version)).to.deep.equal([1, 2]);

    // key.retire over dkg.round1 is refused; a DKG proposal over proposal.apply too.
    expectCode(
      () => handleProposalApply(ctx(1), { proposal: proposal() }, {}),
      'ERR_PROPOSAL_MISMATCH',
    );
    const retire = proposal({ operation: 'key.retire', threshold: undefined });
    const weak = signWith({ ...retire, signatures: [] }, [0]);
    expectCode(() => handleProposalApply(ctx(1), { proposal: weak }, {}), 'ERR_PROPOSAL_QUORUM');
    expect(ctx(1).store.hasKey('acme', 1)).to.equal(true);

    for (const n of nodes) {
      expect(handleProposalApply(n.ctx, { proposal: retire }, {})).to.deep.include({
        node: n.id,
        tenant: 'acme',
        version: 1,
      });
      expect(n.ctx.store.hasKey('acme', 1)).to.equal(false);
      expect(n.ctx.store.getKey('acme', 1)).to.equal(undefined);
      expectCode(() => n.ctx.keyring.get('acme', 1), 'ERR_KEY_RETIRED');
      expect(n.ctx.keyring.get('acme', 2).version).to.equal(2);
      expectCode(
        () => handleProposalApply(n.ctx, { proposal: retire }, {}),
        'ERR_PROPOSAL_REPLAYED',
      );
    }
    // Retired for good: after a restart, and for a second retirement proposal.
    const n1 = nodes[0]!;
    n1.ctx.store.close();
    n1.ctx = testContext(1, NodeStore.open(n1.dir, 1, n1.secret));
    expectCode(() => n1.ctx.keyring.get('acme', 1), 'ERR_KEY_RETIRED');
    const again = proposal({ operation: 'key.retire', threshold: undefined });
    expectCode(() => handleProposalApply(n1.ctx, { proposal: again }, {}), 'ERR_KEY_RETIRED');
    // Rotation continues from the highest version ever made, retired or not.
    expect(() =>
      handleRound1(
        n1.ctx,
        body(params({ version: 3 }), proposal({ version: 3, operation: 'key.rotate' })),
        {},
      ),
    ).to.not.throw();
  });
});
