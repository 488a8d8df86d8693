/**
 * The resharing handlers (nodes/reshare.ts) driven in-process, as the coordinator would relay
 * them, over several node contexts with real stores: 3-of-5 at epoch 1 to 4-of-7 at epoch 2.
 * Checked independently: every 4 of the new shares interpolate to the secret the old sharing was
 * made from (shared/shamir.ts split of a known secret), group keys never change, old shares stay
 * until finish and are gone after it. Then the refusals of begin and a dealer named by a corrupt
 * piece. Last, catch-up: a node down during whole reshares that removed it commits from the
 * latest proposal and its votes, and erases its old shares.
 */
import { expect } from 'chai';
import { z } from 'zod';
import { Point } from '../../shared/encoding.ts';
import { KmaasError } from '../../shared/errors.ts';
import { buildKeyPackage, type KeyPackage } from '../../shared/key-package.ts';
import {
  reshareBeginReply,
  reshareCommitReply,
  reshareDealReply,
  reshareFinishReply,
  resharePrepareReply,
  reshareVoteReply,
} from '../../shared/messages.ts';
import {
  draftProposal,
  proposalId,
  reshareIdOf,
  type CommitteeMember,
  type Proposal,
} from '../../shared/proposal.ts';
import { interpolateAtZero, randomScalar, split } from '../../shared/shamir.ts';
import type { NodeContext } from '../../nodes/context.ts';
import { requestEvent } from '../../nodes/audit-request.ts';
import { handleRound1 } from '../../nodes/dkg.ts';
import { createDispatcher } from '../../nodes/protocol.ts';
import {
  reshareGate,
  reshareHandlers,
  reshareStatus,
  startReshareFinisher,
} from '../../nodes/reshare.ts';
import { signVote } from '../../nodes/reshare-transcript.ts';
import { secretShare } from '../../nodes/secret-share.ts';
import { NodeStore } from '../../nodes/store.ts';
import { signWith, TEST_CLUSTER_ID } from '../helpers/operators.ts';
import {
  expectCode,
  expectRejection,
  randomSecret,
  round1Body,
  removeDir,
  silentLogger,
  tempDir,
  testContext,
} from './helpers.ts';

type Body<K extends keyof typeof reshareHandlers> = Parameters<(typeof reshareHandlers)[K]>[1];

function call<K extends keyof typeof reshareHandlers>(
  ctx: NodeContext,
  type: K,
  body: Body<K>,
): ReturnType<(typeof reshareHandlers)[K]> {
  return reshareHandlers[type](ctx, body as never, {}) as ReturnType<(typeof reshareHandlers)[K]>;
}

const KEYS = [
  { tenant: 'acme', version: 1 },
  { tenant: 'acme', version: 2 },
  { tenant: 'zeta', version: 1 },
];

interface Harness {
  dirs: string[];
  stores: NodeStore[];
  nodeSecrets: ReturnType<typeof randomSecret>[];
  ctxs: Map<number, NodeContext>;
  secrets: Map<string, bigint>;
  oldPackages: Map<string, KeyPackage>;
  member: (node: number) => CommitteeMember;
}

/** Nodes 1..`nodes`; nodes 1..`old` hold a `t`-of-`old` sharing of every key of `keys` at epoch 1. */
async function setup(nodes = 7, old = 5, t = 3, keys = KEYS): Promise<Harness> {
  const h: Harness = {
    dirs: [],
    stores: [],
    nodeSecrets: [],
    ctxs: new Map(),
    secrets: new Map(),
    oldPackages: new Map(),
    member: () => {
      throw new Error('no member');
    },
  };
  for (let id = 1; id <= nodes; id++) {
    const dir = await tempDir();
    h.dirs.push(dir);
    h.nodeSecrets.push(randomSecret());
    h.stores.push(NodeStore.open(dir, id, h.nodeSecrets[id - 1]!));
  }
  const identities = new Map(
    h.stores.map((s, i) => [i + 1, testContext(i + 1, s).identity!.published()]),
  );
  h.member = (node) => ({ node, ...identities.get(node)! });
  const oldIds = Array.from({ length: old }, (_, i) => i + 1);
  const oldCommittee = oldIds.map(h.member);
  for (const k of keys) {
    const secret = randomScalar();
    const { shares, coefficients } = split(secret, t, oldIds);
    const pkg = buildKeyPackage({
      ...k,
      epoch: 1,
      commitments: coefficients.map((a) => Point.BASE.multiply(a)),
      verificationShares: new Map(shares.map((s) => [s.id, Point.BASE.multiply(s.value)])),
    });
    h.secrets.set(`${k.tenant}/${k.version}`, secret);
    h.oldPackages.set(`${k.tenant}/${k.version}`, pkg);
    for (const s of shares) {
      const store = h.stores[s.id - 1]!;
      store.saveGenesisEpoch({ threshold: t, committee: oldCommittee });
      store.saveKey({
        ...k,
        ceremonyId: `dkg-${k.tenant}-${k.version}`,
        share: secretShare(s.value),
        keyPackage: pkg,
      });
    }
  }
  for (let id = 1; id <= nodes; id++) {
    const ctx = testContext(id, h.stores[id - 1]!);
    h.ctxs.set(id, { ...ctx, ceremonyGate: reshareGate(ctx), reshareStatus: reshareStatus(ctx) });
  }
  return h;
}

/** Close node `id`'s store and open it again, with a fresh context (keys loaded from disk). */
function restart(h: Harness, id: number): void {
  h.stores[id - 1]!.close();
  const store = NodeStore.open(h.dirs[id - 1]!, id, h.nodeSecrets[id - 1]!);
  h.stores[id - 1] = store;
  const ctx = testContext(id, store);
  h.ctxs.set(id, { ...ctx, ceremonyGate: reshareGate(ctx), reshareStatus: reshareStatus(ctx) });
}

async function teardown(h: Harness) {
  for (const s of h.stores) s.close();
  for (const d of h.dirs) await removeDir(d);
}

function reshareProposal(
  h: Harness,
  overrides: Partial<Parameters<typeof draftProposal>[0]> = {},
): Proposal {
  return signWith(
    draftProposal({
      cluster: TEST_CLUSTER_ID,
      operation: 'committee.reshare',
      threshold: 4,
      committee: [1, 2, 3, 4, 5, 6, 7].map(h.member),
      epoch: 2,
      previous: { epoch: 1, threshold: 3, committee: [1, 2, 3, 4, 5].map(h.member) },
      reason: 'add',
      expiresAt: new Date(Date.now() + 3_600_000),
      ...overrides,
    }),
  );
}

/**
 * deal chunk `chunk` of `keys` with `dealers`, prepare it on every receiver; returns each
 * receiver's reply or error.
 */
async function dealAndPrepare(
  h: Harness,
  reshareId: string,
  dealers: number[],
  receivers: number[],
  keys: { tenant: string; version: number }[] = KEYS,
  chunk = 0,
) {
  const deals = [];
  for (const d of dealers) {
    const reply = await call(h.ctxs.get(d)!, 'reshare.deal', { reshareId, dealers, chunk, keys });
    expect(reshareDealReply.parse(reply)).to.deep.equal(reply);
    deals.push(reply);
  }
  const oldPackages = keys.map((k) => h.oldPackages.get(`${k.tenant}/${k.version}`)!);
  const out = new Map<number, z.infer<typeof resharePrepareReply> | Error>();
  for (const j of receivers) {
    try {
      out.set(
        j,
        await call(h.ctxs.get(j)!, 'reshare.prepare', {
          reshareId,
          dealers,
          chunk,
          keys,
          oldPackages,
          dealings: deals.map((d) => ({
            dealer: d.dealer,
            dealing: d.dealing,
            piece: d.pieces.find((p) => p.to === j)!,
            signature: d.signature,
          })),
        }),
      );
    } catch (err) {
      out.set(j, err as Error);
    }
  }
  return out;
}

/** vote on every receiver and commit on every node; returns the commit replies. */
function voteAndCommit(
  h: Harness,
  reshareId: string,
  dealers: number[],
  chunks: number,
  receivers: number[],
  everyone: number[],
) {
  const votes = receivers.map((id) =>
    call(h.ctxs.get(id)!, 'reshare.vote', { reshareId, dealers, chunks }),
  );
  const transcript = votes[0]!.transcript;
  const body = {
    reshareId,
    transcript,
    votes: votes.map((v) => ({ node: v.node, signature: v.signature })),
  };
  return new Map(everyone.map((id) => [id, call(h.ctxs.get(id)!, 'reshare.commit', body)]));
}

describe('nodes/reshare: 3-of-5 at epoch 1 to 4-of-7 at epoch 2, in-process', function () {
  this.timeout(60_000);
  let h: Harness;
  beforeEach(async () => {
    h = await setup();
  });
  afterEach(async () => teardown(h));

  it('reshares every key, keeps the secrets and group keys, erases epoch 1 at finish', async () => {
    const proposal = reshareProposal(h);
    const reshareId = reshareIdOf(proposalId(proposal));
    const all = [1, 2, 3, 4, 5, 6, 7];
    for (const id of all) {
      const reply = call(h.ctxs.get(id)!, 'reshare.begin', { reshareId, proposal, keys: KEYS });
      expect(reshareBeginReply.parse(reply)).to.deep.equal({
        node: id,
        epoch: id <= 5 ? 1 : 0,
        dealer: id <= 5,
        receiver: true,
      });
      // A replayed begin answers the same.
      expect(
        call(h.ctxs.get(id)!, 'reshare.begin', { reshareId, proposal, keys: KEYS }),
      ).to.deep.equal(reply);
    }
    expect(h.ctxs.get(1)!.reshareStatus!()).to.deep.equal({ id: reshareId, state: 'begun' });
    expect(h.ctxs.get(6)!.reshareStatus!()).to.deep.equal({ id: reshareId, state: 'begun' });

    // Dealer 2 corrupts the pieces of the lowest receiver (node 1): node 1 names it.
    h.ctxs.set(2, { ...h.ctxs.get(2)!, failpoints: new Set(['reshare.deal:corrupt-piece']) });
    const bad = await dealAndPrepare(h, reshareId, [1, 2, 3], [1, 2]);
    const named = bad.get(1);
    expect(named).to.be.instanceOf(KmaasError);
    expect((named as KmaasError).code).to.equal('ERR_RESHARE_DEALER');
    expect((named as KmaasError).details).to.deep.include({ culprits: [2] });
    expect(bad.get(2)).to.not.be.instanceOf(Error);

    // A dealer replays the very same dealing (the seed is stored): same commitments, signature.
    const once = await call(h.ctxs.get(4)!, 'reshare.deal', {
      reshareId,
      dealers: [1, 3, 4],
      chunk: 0,
      keys: KEYS,
    });
    const twice = await call(h.ctxs.get(4)!, 'reshare.deal', {
      reshareId,
      dealers: [1, 3, 4],
      chunk: 0,
      keys: KEYS,
    });
    expect(twice.dealing).to.deep.equal(once.dealing);
    expect(twice.signature).to.equal(once.signature);

    const prepared = await dealAndPrepare(h, reshareId, [1, 3, 4], all);
    const digests = new Set([...prepared.values()].map((p) => (p as { digest: string }).digest));
    expect(digests.size, 'every receiver made the same new packages').to.equal(1);
    // A replayed prepare answers the stored digest.
    expect((await dealAndPrepare(h, reshareId, [1, 3, 4], [5])).get(5)).to.deep.equal(
      prepared.get(5),
    );

    const votes = all.map((id) => {
      const v = call(h.ctxs.get(id)!, 'reshare.vote', { reshareId, dealers: [1, 3, 4], chunks: 1 });
      expect(reshareVoteReply.parse(v)).to.deep.equal(v);
      return v;
    });
    const transcript = votes[0]!.transcript;
    expect(new Set(votes.map((v) => v.transcript)).size).to.equal(1);
    const commitBody = {
      reshareId,
      transcript,
      votes: votes.map((v) => ({ node: v.node, signature: v.signature })),
    };
    expectCode(
      () =>
        call(h.ctxs.get(1)!, 'reshare.commit', { ...commitBody, votes: commitBody.votes.slice(1) }),
      'ERR_RESHARE_VOTE',
      { nodes: [1] },
    );
    for (const id of all) {
      const r = call(h.ctxs.get(id)!, 'reshare.commit', commitBody);
      expect(reshareCommitReply.parse(r)).to.deep.equal({ node: id, epoch: 2, role: 'member' });
      expect(call(h.ctxs.get(id)!, 'reshare.commit', commitBody)).to.deep.equal(r);
    }
    expect(h.ctxs.get(1)!.ceremonyGate!()).to.equal(undefined);

    for (const k of KEYS) {
      const name = `${k.tenant}/${k.version}`;
      const held = all.map((id) => h.stores[id - 1]!.getKey(k.tenant, k.version, 2)!);
      for (const key of held) {
        expect(key.keyPackage).to.deep.equal(held[0]!.keyPackage);
        expect(key.keyPackage.groupKey).to.equal(h.oldPackages.get(name)!.groupKey);
        expect(key.keyPackage.threshold).to.equal(4);
        expect(key.keyPackage.epoch).to.equal(2);
      }
      const shares = held.map((key, i) => ({ id: all[i]!, value: key.share.reveal() }));
      for (const subset of [
        shares.slice(0, 4),
        shares.slice(3),
        [shares[0]!, shares[2]!, shares[4]!, shares[6]!],
      ]) {
        expect(interpolateAtZero(subset)).to.equal(h.secrets.get(name));
      }
      expect(interpolateAtZero(shares.slice(0, 3))).to.not.equal(h.secrets.get(name));
      // Epoch 1 still serves until finish.
      expect(h.stores[0]!.getKey(k.tenant, k.version, 1)).to.not.equal(undefined);
    }
    expect(h.stores[0]!.currentEpoch()!.epoch).to.equal(2);

    for (const id of all) {
      const r = call(h.ctxs.get(id)!, 'reshare.finish', { reshareId });
      expect(reshareFinishReply.parse(r)).to.deep.equal({
        node: id,
        erased: id <= 5 ? KEYS.length : 0,
      });
      expect(call(h.ctxs.get(id)!, 'reshare.finish', { reshareId })).to.deep.equal({
        node: id,
        erased: 0,
      });
      expect(h.ctxs.get(id)!.reshareStatus!()).to.equal(null);
    }
    for (const k of KEYS) {
      for (let id = 1; id <= 5; id++) {
        expect(h.stores[id - 1]!.getKey(k.tenant, k.version, 1)).to.equal(undefined);
        expect(h.stores[id - 1]!.getKey(k.tenant, k.version)!.epoch).to.equal(2);
      }
    }
    expectCode(() => call(h.ctxs.get(1)!, 'reshare.abort', { reshareId }), 'ERR_CEREMONY_CONFLICT');
  });

  it('begin refusals: previous, threshold, key list, one reshare at a time; abort and begin again', async () => {
    const ctx = h.ctxs.get(1)!;
    const begin = (proposal: Proposal, keys = KEYS) =>
      call(ctx, 'reshare.begin', { reshareId: reshareIdOf(proposalId(proposal)), proposal, keys });
    expectCode(
      () =>
        begin(
          reshareProposal(h, {
            previous: { epoch: 1, threshold: 2, committee: [1, 2, 3, 4, 5].map(h.member) },
          }),
        ),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'previous' },
    );
    expectCode(() => begin(reshareProposal(h, { threshold: 3 })), 'ERR_BAD_THRESHOLD');
    expectCode(() => begin(reshareProposal(h, { threshold: 8 })), 'ERR_BAD_THRESHOLD');
    // The operators' own floor: minThreshold 5 refuses 4-of-7.
    const strict = { ...ctx, policy: { ...ctx.policy, minThreshold: 5 } };
    const p4 = reshareProposal(h);
    expectCode(
      () =>
        call(strict, 'reshare.begin', {
          reshareId: reshareIdOf(proposalId(p4)),
          proposal: p4,
          keys: KEYS,
        }),
      'ERR_BAD_THRESHOLD',
      { minThreshold: 5 },
    );
    expectCode(() => begin(reshareProposal(h), KEYS.slice(1)), 'ERR_RESHARE_KEYSET', {
      missing: [KEYS[0]],
    });
    const p = reshareProposal(h);
    const reshareId = reshareIdOf(proposalId(p));
    expectCode(
      () =>
        call(ctx, 'reshare.begin', {
          reshareId: reshareIdOf(proposalId(p), 3),
          proposal: p,
          keys: KEYS,
        }),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'reshareId' },
    );
    expectCode(
      () => call(ctx, 'reshare.vote', { reshareId, dealers: [1, 2, 3], chunks: 1 }),
      'ERR_RESHARE_STATE',
      {
        state: 'none',
      },
    );
    // A reshare that never voted does not block for good: the next ceremony to reach the node
    // abandons it (its coordinator gave it up; the abort may have missed this node).
    const other = reshareProposal(h);
    const otherId = reshareIdOf(proposalId(other));
    begin(other);
    begin(p);
    await expectRejection(
      () =>
        call(ctx, 'reshare.deal', { reshareId: otherId, dealers: [1, 2, 3], chunk: 0, keys: KEYS }),
      'ERR_RESHARE_STATE',
      { state: 'aborted' },
    );
    // So does a key generation: it starts, and the abandoned reshare is aborted.
    const dkg = {
      ceremonyId: 'ceremony-during-reshare',
      tenant: 'newco',
      version: 1,
      threshold: 3,
      participants: [1, 2, 3, 4, 5],
    };
    handleRound1(ctx, round1Body(dkg, h.member), {});
    expect(ctx.reshareStatus!()).to.equal(null);
    begin(p);
    expectCode(() => call(ctx, 'reshare.finish', { reshareId }), 'ERR_RESHARE_STATE', {
      state: 'begun',
    });
    expect(call(ctx, 'reshare.abort', { reshareId })).to.deep.equal({ node: 1, aborted: true });
    expect(call(ctx, 'reshare.abort', { reshareId })).to.deep.equal({ node: 1, aborted: false });
    expect(ctx.ceremonyGate!()).to.equal(undefined);
    await expectRejection(
      () => call(ctx, 'reshare.deal', { reshareId, dealers: [1, 2, 3], chunk: 0, keys: KEYS }),
      'ERR_RESHARE_STATE',
      {
        state: 'aborted',
      },
    );
    // The same reshare may begin again after an abort.
    expect(begin(p).dealer).to.equal(true);
    // The nonce is bound to that reshare: another proposal with it is a replay.
    call(ctx, 'reshare.abort', { reshareId });
    expectCode(
      () => begin(reshareProposal(h, { nonce: p.nonce, reason: 'threshold' })),
      'ERR_PROPOSAL_REPLAYED',
    );
  });
});

describe('nodes/reshare: removal, refresh, chunks, auto-finish', function () {
  this.timeout(120_000);
  let h: Harness | undefined;
  afterEach(async () => {
    if (h) await teardown(h);
    h = undefined;
  });

  it('removes node 5 (3-of-5 to 3-of-4); after finish it serves nothing', async () => {
    h = await setup(5, 5, 3);
    const hh = h;
    const proposal = reshareProposal(hh, {
      threshold: 3,
      committee: [1, 2, 3, 4].map(hh.member),
      reason: 'remove',
    });
    const reshareId = reshareIdOf(proposalId(proposal));
    const all = [1, 2, 3, 4, 5];
    for (const id of all) {
      const r = call(hh.ctxs.get(id)!, 'reshare.begin', { reshareId, proposal, keys: KEYS });
      expect(r.receiver).to.equal(id !== 5);
      expect(r.dealer).to.equal(true);
    }
    // A node that is not a receiver is refused prepare and vote.
    expectCode(
      () => call(hh.ctxs.get(5)!, 'reshare.vote', { reshareId, dealers: [2, 3, 5], chunks: 1 }),
      'ERR_RESHARE_STATE',
      { state: 'begun' },
    );
    await dealAndPrepare(hh, reshareId, [2, 3, 5], [1, 2, 3, 4]);
    const commits = voteAndCommit(hh, reshareId, [2, 3, 5], 1, [1, 2, 3, 4], all);
    expect(commits.get(5)).to.deep.equal({ node: 5, epoch: 2, role: 'removed' });
    expect(commits.get(1)!.role).to.equal('member');
    const removed = hh.ctxs.get(5)!;
    // Retiring: epoch 1 still answers when asked for by epoch.
    expect(removed.keyring.get('acme', 1, 1).epoch).to.equal(1);
    expect(call(removed, 'reshare.finish', { reshareId })).to.deep.equal({ node: 5, erased: 3 });
    expectCode(() => removed.keyring.get('acme', 1), 'ERR_NODE_REMOVED');
    expect(hh.stores[4]!.listKeys()).to.deep.equal([]);
    for (const k of KEYS) {
      const shares = [1, 2, 3].map((id) => ({
        id,
        value: hh.stores[id - 1]!.getKey(k.tenant, k.version, 2)!.share.reveal(),
      }));
      expect(interpolateAtZero(shares)).to.equal(hh.secrets.get(`${k.tenant}/${k.version}`));
    }
  });

  it('a refresh: once per period, 65 keys in two chunks, finished on its own', async () => {
    const keys = Array.from({ length: 65 }, (_, i) => ({
      tenant: `t${String(i).padStart(3, '0')}`,
      version: 1,
    }));
    h = await setup(3, 3, 2, keys);
    const hh = h;
    const proposal = signWith(
      draftProposal({
        cluster: TEST_CLUSTER_ID,
        operation: 'committee.refresh',
        threshold: 2,
        committee: [1, 2, 3].map(hh.member),
        everySeconds: 3600,
        expiresAt: new Date(Date.now() + 3_600_000),
      }),
    );
    const id = proposalId(proposal);
    const period = Math.floor(Date.now() / 3_600_000);
    const reshareId = reshareIdOf(id, period);
    const all = [1, 2, 3];
    expectCode(
      () =>
        call(hh.ctxs.get(1)!, 'reshare.begin', {
          reshareId: reshareIdOf(id, period + 1),
          proposal,
          period: period + 1,
          keys,
        }),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'period' },
    );
    expectCode(
      () => call(hh.ctxs.get(1)!, 'reshare.begin', { reshareId, proposal, keys }),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'period' },
    );
    for (const n of all) {
      expect(
        call(hh.ctxs.get(n)!, 'reshare.begin', { reshareId, proposal, period, keys }),
      ).to.deep.equal({
        node: n,
        epoch: 1,
        dealer: true,
        receiver: true,
      });
    }
    await dealAndPrepare(hh, reshareId, [1, 3], all, keys.slice(0, 64), 0);
    expectCode(
      () => call(hh.ctxs.get(2)!, 'reshare.vote', { reshareId, dealers: [1, 3], chunks: 2 }),
      'ERR_RESHARE_STATE',
    );
    await dealAndPrepare(hh, reshareId, [1, 3], all, keys.slice(64), 1);
    const commits = voteAndCommit(hh, reshareId, [1, 3], 2, all, all);
    expect([...commits.values()].map((c) => c.epoch)).to.deep.equal([2, 2, 2]);
    for (const k of [keys[0]!, keys[63]!, keys[64]!]) {
      const shares = [2, 3].map((n) => ({
        id: n,
        value: hh.stores[n - 1]!.getKey(k.tenant, k.version, 2)!.share.reveal(),
      }));
      expect(interpolateAtZero(shares)).to.equal(hh.secrets.get(`${k.tenant}/${k.version}`));
      const old = hh.stores[1]!.getKey(k.tenant, k.version, 1)!.share.reveal();
      expect(shares[0]!.value, 'a refresh changes every share').to.not.equal(old);
    }
    // Not yet due: nothing happens; due: every committed reshare finishes on its own.
    for (const n of all) startReshareFinisher(hh.ctxs.get(n)!, silentLogger(), 3_600_000)();
    expect(hh.ctxs.get(1)!.reshareStatus!()).to.deep.equal({ id: reshareId, state: 'committed' });
    for (const n of all) startReshareFinisher(hh.ctxs.get(n)!, silentLogger(), 0)();
    for (const n of all) {
      expect(hh.ctxs.get(n)!.reshareStatus!()).to.equal(null);
      expect(hh.stores[n - 1]!.keysAtEpoch(1)).to.deep.equal([]);
      expect(hh.stores[n - 1]!.keysAtEpoch(2)).to.have.length(65);
    }
    // This period's refresh is done; the previous period's may still run (skew), once.
    expectCode(
      () => call(hh.ctxs.get(1)!, 'reshare.begin', { reshareId, proposal, period, keys }),
      'ERR_RESHARE_STATE',
      { state: 'finished' },
    );
    const earlier = reshareIdOf(id, period - 1);
    const again = call(hh.ctxs.get(1)!, 'reshare.begin', {
      reshareId: earlier,
      proposal,
      period: period - 1,
      keys,
    });
    expect(again.epoch).to.equal(2);
  });

  it('a node restarted at each step answers as if it never stopped', async () => {
    h = await setup(3, 3, 2);
    const hh = h;
    const proposal = reshareProposal(hh, {
      threshold: 2,
      committee: [1, 2, 3].map(hh.member),
      previous: { epoch: 1, threshold: 2, committee: [1, 2, 3].map(hh.member) },
      reason: 'refresh',
    });
    const reshareId = reshareIdOf(proposalId(proposal));
    const all = [1, 2, 3];
    for (const n of all)
      call(hh.ctxs.get(n)!, 'reshare.begin', { reshareId, proposal, keys: KEYS });
    restart(hh, 1);
    expect(hh.ctxs.get(1)!.reshareStatus!()).to.deep.equal({ id: reshareId, state: 'begun' });
    const first = await dealAndPrepare(hh, reshareId, [1, 2], all);
    restart(hh, 1);
    restart(hh, 3);
    // The dealer's seed survived: the replayed dealing is the same, and so the prepared digest.
    expect((await dealAndPrepare(hh, reshareId, [1, 2], [3])).get(3)).to.deep.equal(first.get(3));
    const vote = call(hh.ctxs.get(3)!, 'reshare.vote', { reshareId, dealers: [1, 2], chunks: 1 });
    restart(hh, 3);
    expect(
      call(hh.ctxs.get(3)!, 'reshare.vote', { reshareId, dealers: [1, 2], chunks: 1 }),
    ).to.deep.equal(vote);
    voteAndCommit(hh, reshareId, [1, 2], 1, all, all);
    restart(hh, 2);
    // The new epoch serves from disk after the restart; the old one still answers by epoch.
    expect(hh.ctxs.get(2)!.keyring.get('acme', 1).epoch).to.equal(2);
    expect(hh.ctxs.get(2)!.keyring.get('acme', 1, 1).epoch).to.equal(1);
    expect(call(hh.ctxs.get(2)!, 'reshare.finish', { reshareId })).to.deep.equal({
      node: 2,
      erased: 3,
    });
    restart(hh, 2);
    expectCode(() => hh.ctxs.get(2)!.keyring.get('acme', 1, 1), 'ERR_EPOCH_MISMATCH');
  });

  it('every reshare message is audited under its reshare id', () => {
    const reshareId = 'r' + 'x'.repeat(31);
    const event = requestEvent(
      { v: 1, id: 'q1', type: 'reshare.prepare', body: { reshareId } },
      { v: 1, id: 'q1', ok: false, error: { code: 'ERR_RESHARE_DEALER', message: 'm' } },
    );
    expect(event).to.deep.equal({
      type: 'reshare.prepare',
      requestId: 'q1',
      outcome: 'ERR_RESHARE_DEALER',
      ceremonyId: reshareId,
    });
  });

  it('a kill failpoint fires once per process, where it is set; status names the open reshare', async () => {
    h = await setup(3, 3, 2);
    const hh = h;
    const proposal = reshareProposal(hh, {
      threshold: 2,
      committee: [1, 2, 3].map(hh.member),
      previous: { epoch: 1, threshold: 2, committee: [1, 2, 3].map(hh.member) },
      reason: 'refresh',
    });
    const reshareId = reshareIdOf(proposalId(proposal));
    for (const n of [1, 2, 3])
      call(hh.ctxs.get(n)!, 'reshare.begin', { reshareId, proposal, keys: KEYS });
    const dispatch = createDispatcher(hh.ctxs.get(1)!, silentLogger());
    const { reply } = await dispatch(JSON.stringify({ v: 1, id: 's', type: 'status', body: {} }));
    expect(reply.ok && (reply.body as { reshare: unknown }).reshare).to.deep.equal({
      id: reshareId,
      state: 'begun',
    });
    const kills: unknown[][] = [];
    const kill = process.kill.bind(process);
    process.kill = (...args: unknown[]) => {
      kills.push(args);
      return true;
    };
    try {
      const ctx = { ...hh.ctxs.get(1)!, failpoints: new Set(['reshare.deal:before']) };
      const body = { reshareId, dealers: [1, 2], chunk: 0, keys: KEYS };
      await call(hh.ctxs.get(1)!, 'reshare.deal', body);
      expect(kills).to.deep.equal([]);
      await call(ctx, 'reshare.deal', body);
      await call(ctx, 'reshare.deal', body);
      expect(kills).to.deep.equal([[process.pid, 'SIGKILL']]);
    } finally {
      process.kill = kill;
    }
  });

  it('a receiver that missed an abort takes the new dealings until it votes', async () => {
    h = await setup(3, 3, 2);
    const hh = h;
    const proposal = reshareProposal(hh, {
      threshold: 2,
      committee: [1, 2, 3].map(hh.member),
      previous: { epoch: 1, threshold: 2, committee: [1, 2, 3].map(hh.member) },
      reason: 'refresh',
    });
    const reshareId = reshareIdOf(proposalId(proposal));
    const begin = (n: number) =>
      call(hh.ctxs.get(n)!, 'reshare.begin', { reshareId, proposal, keys: KEYS });
    [1, 2, 3].forEach(begin);
    const first = (await dealAndPrepare(hh, reshareId, [1, 2], [3])).get(3);
    // The dealers were aborted and begun again (new seeds); node 3 never heard of the abort.
    for (const n of [1, 2]) {
      call(hh.ctxs.get(n)!, 'reshare.abort', { reshareId });
      begin(n);
    }
    const second = (await dealAndPrepare(hh, reshareId, [1, 2], [3])).get(3);
    expect(second).to.not.deep.equal(first);
    call(hh.ctxs.get(3)!, 'reshare.vote', { reshareId, dealers: [1, 2], chunks: 1 });
    for (const n of [1, 2]) {
      call(hh.ctxs.get(n)!, 'reshare.abort', { reshareId });
      begin(n);
    }
    const third = (await dealAndPrepare(hh, reshareId, [1, 2], [3])).get(3);
    expect(third).to.be.instanceOf(KmaasError);
    expect((third as KmaasError).code).to.equal('ERR_RESHARE_STATE');
  });
});

describe('nodes/reshare: catch-up of a node down during whole reshares', function () {
  this.timeout(120_000);
  let h: Harness | undefined;
  afterEach(async () => {
    if (h) await teardown(h);
    h = undefined;
  });

  /** One whole reshare among `nodes` (all old and new members), finished; returns its commit. */
  async function reshareAmong(hh: Harness, proposal: Proposal, nodes: number[], dealers: number[]) {
    const reshareId = reshareIdOf(proposalId(proposal));
    const keys = KEYS;
    for (const id of nodes) call(hh.ctxs.get(id)!, 'reshare.begin', { reshareId, proposal, keys });
    const prepared = await dealAndPrepare(hh, reshareId, dealers, nodes);
    for (const r of prepared.values()) expect(r).to.not.be.instanceOf(Error);
    const votes = nodes.map((id) =>
      call(hh.ctxs.get(id)!, 'reshare.vote', { reshareId, dealers, chunks: 1 }),
    );
    const commit = {
      reshareId,
      transcript: votes[0]!.transcript,
      votes: votes.map((v) => ({ node: v.node, signature: v.signature })),
    };
    for (const id of nodes) {
      expect(call(hh.ctxs.get(id)!, 'reshare.commit', commit).role).to.equal('member');
      call(hh.ctxs.get(id)!, 'reshare.finish', { reshareId });
    }
    // The next reshare deals from this epoch's packages.
    for (const k of KEYS) {
      const pkg = hh.stores[0]!.getKey(k.tenant, k.version)!.keyPackage;
      hh.oldPackages.set(`${k.tenant}/${k.version}`, pkg);
    }
    return commit;
  }

  it('node 5 misses its removal and one more epoch; the latest proposal catches it up', async () => {
    h = await setup(5, 5, 3);
    const hh = h;
    const four = [1, 2, 3, 4];
    // Epoch 1 -> 2 removes node 5, which is down throughout (it never gets begin).
    const removal = reshareProposal(hh, {
      threshold: 3,
      committee: four.map(hh.member),
      reason: 'remove',
    });
    const first = await reshareAmong(hh, removal, four, [1, 2, 3]);
    // Epoch 2 -> 3, a refresh of the four: node 5 is told only of this one.
    const refresh = reshareProposal(hh, {
      threshold: 3,
      committee: four.map(hh.member),
      epoch: 3,
      previous: { epoch: 2, threshold: 3, committee: four.map(hh.member) },
      reason: 'refresh',
    });
    const latest = await reshareAmong(hh, refresh, four, [2, 3, 4]);
    // The proposal has long expired when node 5 comes back: the votes prove the reshare happened.
    const ctx = { ...hh.ctxs.get(5)!, now: () => Date.now() + 2 * 3_600_000 };
    const commit = (body: Partial<Body<'reshare.commit'>>) =>
      call(ctx, 'reshare.commit', { ...latest, proposal: refresh, ...body });

    // Refusals, each leaving node 5 as it was.
    expectCode(() => call(ctx, 'reshare.commit', latest), 'ERR_RESHARE_STATE', { state: 'none' });
    expectCode(
      () => commit({ proposal: { ...refresh, signatures: refresh.signatures.slice(0, 1) } }),
      'ERR_PROPOSAL_QUORUM',
    );
    expectCode(
      () => commit({ proposal: { ...refresh, cluster: 'another-cluster' } }),
      'ERR_PROPOSAL_CLUSTER',
    );
    expectCode(() => commit({ reshareId: first.reshareId }), 'ERR_PROPOSAL_MISMATCH', {
      field: 'reshareId',
    });
    expectCode(() => commit({ votes: latest.votes.slice(1) }), 'ERR_RESHARE_VOTE', {
      nodes: [1],
    });
    // Node 2's vote under node 1's name: one vote each, but node 1's does not verify.
    const forged = latest.votes.map((v) =>
      v.node === 1 ? { node: 1, signature: latest.votes[1]!.signature } : v,
    );
    expectCode(() => commit({ votes: forged }), 'ERR_RESHARE_VOTE', { nodes: [1] });
    expectCode(() => commit({ transcript: first.transcript }), 'ERR_RESHARE_VOTE');
    // A proposal that keeps node 5 (with its own keys) in the committee: it should have begun.
    const keeps = reshareProposal(hh, {
      threshold: 3,
      committee: [1, 2, 3, 4, 5].map(hh.member),
      epoch: 3,
      previous: { epoch: 2, threshold: 3, committee: four.map(hh.member) },
      reason: 'add',
    });
    expectCode(
      () => commit({ reshareId: reshareIdOf(proposalId(keeps)), proposal: keeps }),
      'ERR_RESHARE_STATE',
      { state: 'none' },
    );
    expect(hh.stores[4]!.currentEpoch()!.epoch).to.equal(1);
    expect(hh.stores[4]!.listKeys()).to.have.length(KEYS.length);

    // Caught up: epoch 3 with no keys, removed; a replay answers the same.
    const reply = commit({});
    expect(reshareCommitReply.parse(reply)).to.deep.equal({ node: 5, epoch: 3, role: 'removed' });
    expect(commit({})).to.deep.equal(reply);
    expect(hh.stores[4]!.currentEpoch()).to.deep.include({ epoch: 3, threshold: 3 });
    expect(hh.stores[4]!.currentEpoch()!.committee.map((m) => m.node)).to.deep.equal(four);
    // Old shares stay until finish (retiring), as for any commit.
    expect(hh.stores[4]!.listKeys()).to.have.length(KEYS.length);
    expect(call(ctx, 'reshare.finish', { reshareId: latest.reshareId })).to.deep.equal({
      node: 5,
      erased: KEYS.length,
    });
    expect(hh.stores[4]!.listKeys()).to.deep.equal([]);
    for (const k of KEYS) expect(hh.stores[4]!.getKey(k.tenant, k.version, 1)).to.equal(undefined);
    expectCode(() => ctx.keyring.get('acme', 1), 'ERR_NODE_REMOVED');
    expectCode(() => ctx.keyring.get('acme', 1, 1), 'ERR_NODE_REMOVED');

    // Stale: the first removal's commit now names an epoch node 5 is past.
    expectCode(
      () => call(ctx, 'reshare.commit', { ...first, proposal: removal }),
      'ERR_PROPOSAL_MISMATCH',
      { field: 'epoch', epoch: 3 },
    );
    // After a restart the node is still removed, with nothing to serve.
    restart(hh, 5);
    expectCode(() => hh.ctxs.get(5)!.keyring.get('acme', 1), 'ERR_NODE_REMOVED');
  });

  it('a node whose id now has other identity keys (repaired elsewhere) is caught up as removed', async () => {
    h = await setup(6, 5, 3);
    const hh = h;
    // Node 6's identity keys stand in for node 5's new ones (a repair made them).
    const repaired = (node: number) =>
      node === 5 ? { ...hh.member(6), node: 5 } : hh.member(node);
    const committee = [1, 2, 3, 4, 5].map(repaired);
    const repair = reshareProposal(hh, { threshold: 3, committee, reason: 'repair' });
    const reshareId = reshareIdOf(proposalId(repair));
    const four = [1, 2, 3, 4];
    for (const id of four) {
      call(hh.ctxs.get(id)!, 'reshare.begin', { reshareId, proposal: repair, keys: KEYS });
    }
    await dealAndPrepare(hh, reshareId, [1, 2, 3], four);
    // Node 5 with its new keys is played by node 6's context; it votes as node 5.
    const votes = four.map((id) =>
      call(hh.ctxs.get(id)!, 'reshare.vote', { reshareId, dealers: [1, 2, 3], chunks: 1 }),
    );
    const transcript = votes[0]!.transcript;
    const fifth = { node: 5, signature: signVote(transcript, hh.ctxs.get(6)!.identity!) };
    const body = {
      reshareId,
      transcript,
      votes: [...votes.map((v) => ({ node: v.node, signature: v.signature })), fifth],
    };
    const old5 = hh.ctxs.get(5)!;
    expect(call(old5, 'reshare.commit', { ...body, proposal: repair })).to.deep.equal({
      node: 5,
      epoch: 2,
      role: 'removed',
    });
    expect(call(old5, 'reshare.finish', { reshareId }).erased).to.equal(KEYS.length);
    expect(hh.stores[4]!.listKeys()).to.deep.equal([]);
  });
});
