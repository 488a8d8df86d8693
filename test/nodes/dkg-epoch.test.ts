/**
 * DKG and committee epochs (nodes/dkg.ts, nodes/proposals.ts step 5): the first accepted DKG
 * founds epoch 1 with its committee and threshold; later DKG proposals must carry that epoch's
 * committee (node ids and identity keys) and threshold, and name no other epoch; key packages
 * carry the epoch the key was made in; an open reshare holds DKG back.
 */
import { expect } from 'chai';
import type { ErrorCode } from '../../shared/errors.ts';
import type { CommitteeMember, Proposal } from '../../shared/proposal.ts';
import type { NodeContext } from '../../nodes/context.ts';
import { handleCommit, handleRound1, handleRound2, handleRound3 } from '../../nodes/dkg.ts';
import { NodeStore } from '../../nodes/store.ts';
import type { Round1Wire, Round2Wire } from '../../nodes/dkg-machine.ts';
import type { KeyPackage } from '../../shared/key-package.ts';
import { strangerIdentity, testProposal } from '../helpers/operators.ts';
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
  ctx: NodeContext;
}

const RESHARE_ID = `r${'Q'.repeat(31)}`;

describe('nodes/dkg: keys are made in the committee epoch', () => {
  let nodes: TestNode[];
  let member: (node: number) => CommitteeMember;
  let gate: string | undefined;

  beforeEach(async () => {
    nodes = [];
    gate = undefined;
    for (const id of [1, 2, 3]) {
      const dir = await tempDir();
      const store = NodeStore.open(dir, id, randomSecret());
      nodes.push({ id, dir, ctx: testContext(id, store, { ceremonyGate: () => gate }) });
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

  function proposal(overrides: Partial<Parameters<typeof testProposal>[0]> = {}): Proposal {
    return testProposal({
      tenant: 'acme',
      version: 1,
      threshold: 2,
      committee: [1, 2, 3].map(member),
      ...overrides,
    });
  }

  /** The round-1 body as a coordinator sends it: the proposal's committee and parameters. */
  function body(prop: Proposal, overrides: Partial<DkgParams> = {}) {
    const p = params({
      tenant: prop.tenant!,
      version: prop.version!,
      threshold: prop.threshold!,
      participants: (prop.committee ?? []).map((m) => m.node),
      ...overrides,
    });
    return round1Body({ ...p, proposal: prop }, member);
  }

  /** Rounds 1 and 2 of `prop` on every node; returns what round 3 needs. */
  function upToRound3(prop: Proposal): { id: string; round2: Round2Wire[] } {
    const b = body(prop);
    const round1: Round1Wire[] = nodes.map((n) => handleRound1(n.ctx, b, {}));
    const round2 = nodes.flatMap(
      (n) => handleRound2(n.ctx, { ceremonyId: b.ceremonyId, round1 }, {}).packages,
    );
    return { id: b.ceremonyId, round2 };
  }

  function round3(n: TestNode, c: { id: string; round2: Round2Wire[] }): KeyPackage {
    return handleRound3(
      n.ctx,
      { ceremonyId: c.id, round2: c.round2.filter((x) => x.to === n.id) },
      {},
    ).keyPackage;
  }

  /** A whole ceremony of `prop`; returns the key package every node agreed on. */
  function ceremony(prop: Proposal): KeyPackage {
    const c = upToRound3(prop);
    const packages = nodes.map((n) => round3(n, c));
    for (const n of nodes) handleCommit(n.ctx, { ceremonyId: c.id }, {});
    for (const p of packages) expect(p).to.deep.equal(packages[0]);
    return packages[0]!;
  }

  it('the first accepted round 1 founds epoch 1 with its committee and threshold', () => {
    expect(ctx(1).store.currentEpoch()).to.equal(undefined);
    expect(ctx(1).keyring.epoch).to.equal(undefined);
    handleRound1(ctx(1), body(proposal()), {});
    const epoch = ctx(1).store.currentEpoch()!;
    expect(epoch).to.deep.include({ epoch: 1, threshold: 2, reshareId: '', transcript: '' });
    expect(epoch.committee).to.deep.equal([1, 2, 3].map(member));
    expect(ctx(1).keyring.epoch).to.deep.equal(epoch);
  });

  it('a refused round 1 founds no epoch', () => {
    const prop = proposal({ cluster: 'elsewhere' });
    expectCode(() => handleRound1(ctx(1), body(prop), {}), 'ERR_PROPOSAL_CLUSTER');
    const early = proposal({ epoch: 2 });
    expectCode(() => handleRound1(ctx(1), body(early), {}), 'ERR_PROPOSAL_MISMATCH', {
      field: 'epoch',
      epoch: 1,
    });
    expect(ctx(1).store.currentEpoch()).to.equal(undefined);
    expect(ctx(1).store.proposalUse(early.nonce)).to.equal(undefined);
  });

  it('the key package and the stored share carry epoch 1', () => {
    const pkg = ceremony(proposal());
    expect(pkg.epoch).to.equal(1);
    for (const n of nodes) {
      expect(n.ctx.store.getKey('acme', 1)!.epoch).to.equal(1);
      expect(n.ctx.keyring.get('acme', 1).epoch).to.equal(1);
    }
  });

  /** [name, proposal for the next DKG (globex v1) once epoch 1 is {1,2,3}, t=2; code, details]. */
  const refusals: [string, () => Proposal, ErrorCode, Record<string, unknown>][] = [
    [
      'another threshold',
      () => proposal({ tenant: 'globex', threshold: 3 }),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'threshold', epoch: 1 },
    ],
    [
      'other identity keys for node 2',
      () => proposal({ tenant: 'globex', committee: [member(1), strangerIdentity(2), member(3)] }),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'committee', nodes: [2] },
    ],
    [
      'an added node 4',
      () =>
        proposal({
          tenant: 'globex',
          threshold: 3,
          committee: [member(1), member(2), member(3), strangerIdentity(4)],
        }),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'threshold' },
    ],
    [
      'node 3 swapped for node 4',
      () => proposal({ tenant: 'globex', committee: [member(1), member(2), strangerIdentity(4)] }),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'committee', nodes: [3, 4] },
    ],
    [
      'node 3 left out',
      () => proposal({ tenant: 'globex', committee: [member(1), member(2)] }),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'committee', nodes: [3] },
    ],
    [
      'epoch 2 named',
      () => proposal({ tenant: 'globex', epoch: 2 }),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'epoch', epoch: 1 },
    ],
  ];
  for (const [name, make, code, details] of refusals) {
    it(`with epoch 1 committed, a DKG proposal with ${name}: ${code}, nothing stored`, () => {
      ceremony(proposal());
      const prop = make();
      const b = body(prop);
      expectCode(() => handleRound1(ctx(1), b, {}), code, details);
      expect(ctx(1).store.loadCeremony(b.ceremonyId)).to.equal(undefined);
      expect(ctx(1).store.proposalUse(prop.nonce)).to.equal(undefined);
      expect(ctx(1).store.currentEpoch()!.committee).to.deep.equal([1, 2, 3].map(member));
    });
  }

  it('with the epoch-1 committee and threshold, naming epoch 1 or none, a DKG goes through', () => {
    ceremony(proposal());
    expect(ceremony(proposal({ tenant: 'globex', epoch: 1 })).epoch).to.equal(1);
    expect(ceremony(proposal({ tenant: 'initech' })).epoch).to.equal(1);
  });

  it('after a reshare committed epoch 2, keys are made in epoch 2 and named so', () => {
    ceremony(proposal());
    for (const n of nodes) {
      const record = {
        epoch: 2,
        threshold: 2,
        committee: [1, 2, 3].map(member),
        reshareId: RESHARE_ID,
        transcript: 'ab'.repeat(32),
      };
      n.ctx.store.commitEpoch(record, []);
      n.ctx.keyring.setEpoch(n.ctx.store.currentEpoch());
    }
    expectCode(
      () => handleRound1(ctx(1), body(proposal({ tenant: 'globex', epoch: 1 })), {}),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'epoch', epoch: 2 },
    );
    const pkg = ceremony(proposal({ tenant: 'globex', epoch: 2 }));
    expect(pkg.epoch).to.equal(2);
    for (const n of nodes) {
      expect(n.ctx.store.getKey('globex', 1)!.epoch).to.equal(2);
      expect(n.ctx.keyring.get('globex', 1).epoch).to.equal(2);
    }
  });

  it('a ceremony begun under one committee cannot store its key under another', () => {
    const c = upToRound3(proposal());
    // A reshare (which the coordinator should never run in the middle of a DKG) moved node 1
    // to a committee with another threshold.
    ctx(1).store.commitEpoch(
      {
        epoch: 2,
        threshold: 3,
        committee: [1, 2, 3].map(member),
        reshareId: RESHARE_ID,
        transcript: 'cd'.repeat(32),
      },
      [],
    );
    expectCode(() => round3(nodes[0]!, c), 'ERR_CEREMONY_CONFLICT', { epoch: 2 });
    expect(ctx(1).store.hasKey('acme', 1)).to.equal(false);
    // The others, still in epoch 1, finish.
    expect(round3(nodes[1]!, c).epoch).to.equal(1);
  });

  it('while a reshare is open, round 1 and the storing of a new key are refused', () => {
    const c = upToRound3(proposal());
    gate = RESHARE_ID;
    expectCode(() => round3(nodes[0]!, c), 'ERR_CEREMONY_CONFLICT', { reshareId: RESHARE_ID });
    expect(ctx(1).store.hasKey('acme', 1)).to.equal(false);
    const other = body(proposal({ tenant: 'globex' }));
    expectCode(() => handleRound1(ctx(1), other, {}), 'ERR_CEREMONY_CONFLICT', {
      reshareId: RESHARE_ID,
    });
    expect(ctx(1).store.loadCeremony(other.ceremonyId)).to.equal(undefined);
    // Once it is over, the ceremony finishes.
    gate = undefined;
    expect(round3(nodes[0]!, c).epoch).to.equal(1);
  });
});
