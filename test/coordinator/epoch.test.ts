/**
 * The coordinator's epoch state: the record rebuilt from the nodes' status (a quorum of members
 * reporting the same summary), written only forward; registry packages replaced only by a later
 * epoch of the same group key; a node that missed a commit caught up from the record; DKG
 * proposals held to the current epoch's committee. Real Redis under a prefix of its own.
 */
import { expect } from 'chai';
import { Redis } from 'ioredis';
import {
  agreeOnEpoch,
  EpochStore,
  type EpochReport,
  type EpochRecord,
} from '../../coordinator/epoch.ts';
import { KeyCache } from '../../coordinator/key-cache.ts';
import { publishInvalidation, subscribeInvalidations } from '../../coordinator/key-invalidation.ts';
import { canonicalKeyPackage } from '../../coordinator/key-quorum.ts';
import { agreedClusterId } from '../../coordinator/cluster-status.ts';
import { submitProposal, type ProposalDeps } from '../../coordinator/proposals.ts';
import { redisKeys, type RedisKeys } from '../../coordinator/redis-keys.ts';
import { Registry } from '../../coordinator/registry.ts';
import { catchUp } from '../../coordinator/reshare-catchup.ts';
import { queueReshare } from '../../coordinator/reshare-job.ts';
import { KmaasError } from '../../shared/errors.ts';
import { draftProposal, type Proposal } from '../../shared/proposal.ts';
import { randomScalar } from '../../shared/shamir.ts';
import { signWith, testProposal, TEST_CLUSTER_ID } from '../helpers/operators.ts';
import { deletePrefix, LogCapture, REDIS_URL, testPrefix, waitFor } from './helpers.ts';
import { FakePool, ScriptedNode, sharing } from './reshare-fakes.ts';

const id = (node: number) => ({ signing: `s${node}`, encryption: `e${node}` });
const summary = (epoch: number, threshold: number, members: number[]) => ({
  epoch,
  threshold,
  members,
});

describe('coordinator/epoch: agreeing on the epoch from status reports', () => {
  const e2 = summary(2, 2, [1, 2, 3]);
  const table: [string, EpochReport[], number | string][] = [
    [
      'every member reports epoch 2',
      [1, 2, 3].map((node) => ({ node, epoch: e2, identity: id(node) })),
      2,
    ],
    [
      't members suffice; a node left behind on epoch 1 is outvoted',
      [
        { node: 1, epoch: e2, identity: id(1) },
        { node: 2, epoch: e2, identity: id(2) },
        { node: 3, epoch: summary(1, 2, [1, 2, 3]), identity: id(3) },
      ],
      2,
    ],
    [
      'one member is not a quorum',
      [
        { node: 1, epoch: e2, identity: id(1) },
        { node: 2, epoch: null, identity: id(2) },
        { node: 3, epoch: null, identity: id(3) },
      ],
      'no epoch has a quorum of members',
    ],
    [
      'non-members do not vouch',
      [
        { node: 1, epoch: e2, identity: id(1) },
        { node: 6, epoch: e2, identity: id(6) },
        { node: 7, epoch: e2, identity: id(7) },
        { node: 2, epoch: null, identity: id(2) },
        { node: 3, epoch: null, identity: id(3) },
      ],
      'no epoch has a quorum of members',
    ],
    [
      'a member whose identity keys are unknown',
      [
        { node: 1, epoch: e2, identity: id(1) },
        { node: 2, epoch: e2, identity: id(2) },
      ],
      'identity keys of member(s) 3 unknown (not connected)',
    ],
    ['nobody reports', [], 'no node reports an epoch'],
  ];
  for (const [name, reports, want] of table) {
    it(`${name} -> ${String(want)}`, () => {
      const r = agreeOnEpoch(reports);
      if (typeof want === 'number') {
        expect(r.ok).to.equal(true);
        const record = (r as { record: EpochRecord }).record;
        expect(record.epoch).to.equal(want);
        expect(record.committee).to.deep.equal([1, 2, 3].map((node) => ({ node, ...id(node) })));
      } else {
        expect(r).to.deep.equal({ ok: false, reason: want });
      }
    });
  }
});

describe('coordinator/epoch: Redis state', function () {
  let redis: Redis;
  let prefix: string;
  let keys: RedisKeys;
  let logs: LogCapture;

  beforeEach(() => {
    prefix = testPrefix();
    keys = redisKeys(prefix);
    redis = new Redis(REDIS_URL);
    logs = new LogCapture();
  });

  afterEach(async () => {
    await deletePrefix(redis, prefix);
    redis.disconnect();
  });

  function store(nodes: ScriptedNode[]): EpochStore {
    const pool = new FakePool(nodes).pool;
    return new EpochStore({ redis, keys, pool, nodeTimeoutMs: 500, logger: logs.logger });
  }

  it('rebuilds a missing record from the nodes, with their identity keys, then reads Redis', async () => {
    const e2 = summary(2, 2, [1, 2, 3]);
    const nodes = [
      new ScriptedNode(1, e2),
      new ScriptedNode(2, e2),
      new ScriptedNode(3, summary(1, 2, [1, 2, 3])),
      new ScriptedNode(4, null),
    ];
    const epochs = store(nodes);
    expect(await epochs.read()).to.equal(null);

    const record = await epochs.current();

    expect(record).to.deep.equal({
      epoch: 2,
      threshold: 2,
      committee: nodes.slice(0, 3).map((n) => n.member),
    });
    expect(await epochs.read()).to.deep.equal(record);
    const asked = nodes.map((n) => n.types('status').length);
    await epochs.current();
    expect(nodes.map((n) => n.types('status').length)).to.deep.equal(asked);
  });

  it('only moves forward', async () => {
    const epochs = store([]);
    const committee = [1, 2, 3].map((node) => new ScriptedNode(node, null).member);
    expect(await epochs.write({ epoch: 3, threshold: 2, committee })).to.equal(true);
    expect(await epochs.write({ epoch: 2, threshold: 2, committee })).to.equal(false);
    expect((await epochs.read())?.epoch).to.equal(3);
    const votes = [{ node: 1, signature: 'x' }];
    expect(await epochs.write({ epoch: 3, threshold: 2, committee, votes })).to.equal(true);
    expect((await epochs.read())?.votes).to.deep.equal(votes);
  });

  it('catches up a node that missed the commit, and leaves current and spare nodes alone', async () => {
    const e1 = summary(1, 2, [1, 2, 3]);
    const behind = new ScriptedNode(3, e1);
    const current = new ScriptedNode(1, summary(2, 2, [1, 2, 3]));
    const spare = new ScriptedNode(6, null);
    const record: EpochRecord = {
      epoch: 2,
      threshold: 2,
      committee: [current.member, new ScriptedNode(2, null).member, behind.member],
      reshareId: `r${'a'.repeat(31)}`,
      transcript: 'f'.repeat(64),
      votes: [1, 2, 3].map((node) => ({ node, signature: 'c2ln' })),
    };
    const pool = new FakePool([behind, current, spare]);
    const epochs = store([]);
    await epochs.write(record);
    const deps = { epochs, timeoutMs: 500, logger: logs.logger };

    expect(await catchUp(deps, pool.get(3)!)).to.equal(true);
    expect(await catchUp(deps, pool.get(1)!)).to.equal(false);
    expect(await catchUp(deps, pool.get(6)!)).to.equal(false);

    expect(behind.types()).to.deep.equal(['status', 'reshare.commit', 'reshare.finish']);
    expect(behind.bodies('reshare.commit')[0]).to.deep.equal({
      reshareId: record.reshareId,
      transcript: record.transcript,
      votes: record.votes,
    });
    expect(current.types()).to.deep.equal(['status']);
    expect(spare.types()).to.deep.equal(['status']);
  });

  describe('registry packages', () => {
    let registry: Registry;
    afterEach(() => registry.stop());

    it('are replaced only by a later epoch of the same group key', async () => {
      registry = new Registry({
        redis,
        keys,
        pool: new FakePool([]).pool,
        nodeTimeoutMs: 500,
        logger: logs.logger,
      });
      const secret = randomScalar();
      const e1 = sharing(secret, 'acme', 1, 2, [1, 2, 3], 1);
      const e2 = sharing(secret, 'acme', 1, 3, [1, 2, 3, 4], 2);
      const e2other = sharing(secret, 'acme', 1, 3, [1, 2, 3, 4], 2);
      const e3foreign = sharing(randomScalar(), 'acme', 1, 2, [1, 2, 3], 3);
      const stored = async () => canonicalKeyPackage((await registry.readKeyPackage('acme', 1))!);

      expect(await registry.store(e1)).to.equal('stored');
      expect(await registry.store(e1)).to.equal('same');
      expect(await registry.store(e2)).to.equal('replaced');
      expect(await stored()).to.equal(canonicalKeyPackage(e2));
      expect(await registry.store(e1)).to.equal('stale');
      expect(await stored()).to.equal(canonicalKeyPackage(e2));
      for (const other of [e2other, e3foreign]) {
        const err = await registry.store(other).catch((e: unknown) => e);
        expect(err).to.be.instanceOf(KmaasError);
        expect((err as KmaasError).code).to.equal('ERR_CEREMONY_CONFLICT');
      }
      expect(await stored()).to.equal(canonicalKeyPackage(e2));
      expect(await registry.tenantNames()).to.deep.equal(['acme']);
    });
  });

  it("a reshare's invalidation makes every replica's key cache read the new package", async () => {
    const registry = new Registry({
      redis,
      keys,
      pool: new FakePool([]).pool,
      nodeTimeoutMs: 500,
      logger: logs.logger,
    });
    const subscriber = new Redis(REDIS_URL);
    try {
      const secret = randomScalar();
      await registry.store(sharing(secret, 'acme', 1, 2, [1, 2, 3], 1));
      // Two replicas' caches, each with its own subscription.
      const caches = [new KeyCache(registry), new KeyCache(registry)];
      await subscribeInvalidations(
        subscriber,
        keys,
        (what) => caches.forEach((c) => c.invalidate(what.tenant, what.version)),
        logs.logger,
      );
      for (const c of caches) expect((await c.get('acme', 1)).epoch).to.equal(1);
      await registry.store(sharing(secret, 'acme', 1, 3, [1, 2, 3, 4], 2));
      // Cached: still epoch 1 until told.
      for (const c of caches) expect((await c.get('acme', 1)).epoch).to.equal(1);

      await publishInvalidation(redis, keys);

      for (const c of caches) {
        await waitFor('the new epoch', async () => (await c.get('acme', 1)).epoch === 2);
      }
    } finally {
      subscriber.disconnect();
      await registry.stop();
    }
  });

  describe('proposals against the current epoch', () => {
    const members = [1, 2, 3].map((n) => new ScriptedNode(n, null).member);
    const record: EpochRecord = { epoch: 2, threshold: 2, committee: members };
    let queued: { name: string; data: unknown }[];
    let deps: ProposalDeps;
    let nodes: ScriptedNode[];

    beforeEach(async () => {
      nodes = [1, 2, 3, 6].map((n) => new ScriptedNode(n, null));
      const pool = new FakePool(nodes).pool;
      const registry = new Registry({ redis, keys, pool, nodeTimeoutMs: 500, logger: logs.logger });
      const epochs = store([]);
      await epochs.write(record);
      queued = [];
      const queue = {
        add: (name: string, data: unknown) => {
          queued.push({ name, data });
          return Promise.resolve();
        },
      } as never;
      deps = {
        redis,
        keys,
        registry,
        queue,
        pool,
        attempts: 1,
        backoffMs: 10,
        lockTtlMs: 10_000,
        nodeTimeoutMs: 500,
        logger: logs.logger,
        epochs,
        clusterId: () => agreedClusterId(pool, 500),
        queueReshare: (p, l) => queueReshare({ queue, epochs, attempts: 1, backoffMs: 10 }, p, l),
      };
    });

    const code = (p: Promise<unknown>) =>
      p.then(
        () => 'accepted',
        (e: unknown) => (e instanceof KmaasError ? e.code : String(e)),
      );

    it('a DKG must name the epoch committee and threshold', async () => {
      const create = (committee = members, threshold = 2): Proposal =>
        testProposal({ tenant: 'acme', version: 1, threshold, committee });
      const spare = new ScriptedNode(6, null).member;
      expect(await code(submitProposal(deps, create(), logs.logger))).to.equal('accepted');
      expect(await code(submitProposal(deps, create(members, 3), logs.logger))).to.equal(
        'ERR_PROPOSAL_MISMATCH',
      );
      expect(
        await code(submitProposal(deps, create([...members.slice(0, 2), spare]), logs.logger)),
      ).to.equal('ERR_PROPOSAL_MISMATCH');
      expect(queued.map((q) => q.name)).to.deep.equal(['tenant.create']);
    });

    it('a proposal for another cluster than the nodes report: ERR_PROPOSAL_CLUSTER, nothing queued', async () => {
      const create = (tenant = 'acme') =>
        testProposal({ tenant, version: 1, threshold: 2, committee: members });
      for (const n of nodes) n.cluster = 'kmaas-elsewhere';
      const refused = await submitProposal(deps, create(), logs.logger).catch((e: unknown) => e);
      expect(refused).to.be.instanceOf(KmaasError);
      expect((refused as KmaasError).code).to.equal('ERR_PROPOSAL_CLUSTER');
      expect((refused as KmaasError).status).to.equal(403);
      expect((refused as KmaasError).message).to.include(
        `is for cluster ${TEST_CLUSTER_ID}, but the nodes here belong to cluster kmaas-elsewhere`,
      );
      expect(queued).to.have.length(0);
      // Nodes that disagree, or report none: the nodes decide.
      nodes[0]!.cluster = TEST_CLUSTER_ID;
      expect(await code(submitProposal(deps, create(), logs.logger))).to.equal('accepted');
      for (const n of nodes) n.cluster = TEST_CLUSTER_ID;
      expect(await code(submitProposal(deps, create('beta'), logs.logger))).to.equal('accepted');
      expect(queued).to.have.length(2);
    });

    it('a reshare must start from the current epoch', async () => {
      const reshare = (previousEpoch: number) =>
        signWith(
          draftProposal({
            cluster: TEST_CLUSTER_ID,
            operation: 'committee.reshare',
            epoch: previousEpoch + 1,
            threshold: 2,
            committee: members,
            previous: { epoch: previousEpoch, threshold: 2, committee: members },
            reason: 'refresh',
            expiresAt: new Date(Date.now() + 3_600_000),
          }),
        );
      expect(await code(submitProposal(deps, reshare(1), logs.logger))).to.equal(
        'ERR_PROPOSAL_MISMATCH',
      );
      const accepted = await submitProposal(deps, reshare(2), logs.logger);
      expect(accepted).to.deep.include({ operation: 'committee.reshare', epoch: 3 });
      expect(queued.map((q) => q.name)).to.deep.equal(['committee.reshare']);
    });
  });
});
