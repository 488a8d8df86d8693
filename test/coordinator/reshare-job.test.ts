/**
 * The coordinator's reshare job against scripted nodes (reshare-fakes.ts), on real Redis under a
 * prefix of its own: a whole reshare (add node 4, t 2 -> 3, 65 keys so two chunks), a dealer a
 * receiver names excluded and replaced, an attempt failing before the decision aborted and
 * retried, and a worker killed between the decision and the commit whose job a new worker
 * completes through BullMQ's stalled-job check, without an abort.
 */
import { expect } from 'chai';
import type { Job, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import {
  createCeremonyQueue,
  createCeremonyWorker,
  type CeremonyJobData,
  type CeremonyJobResult,
  type CeremonyQueue,
} from '../../coordinator/ceremony-queue.ts';
import { describeJob } from '../../coordinator/dkg-job.ts';
import { EpochStore } from '../../coordinator/epoch.ts';
import { redisKeys, type RedisKeys } from '../../coordinator/redis-keys.ts';
import { Registry } from '../../coordinator/registry.ts';
import {
  processReshareJob,
  RESHARE_JOB,
  scheduleRefresh,
  type ReshareJobData,
  type ReshareJobResult,
  type ReshareWorkerDeps,
} from '../../coordinator/reshare-job.ts';
import { KmaasError } from '../../shared/errors.ts';
import { canonicalKeyPackage } from '../../coordinator/key-quorum.ts';
import type { KeyPackage } from '../../shared/key-package.ts';
import { draftProposal, reshareIdOf, proposalId, type Proposal } from '../../shared/proposal.ts';
import { randomScalar } from '../../shared/shamir.ts';
import { signWith, TEST_CLUSTER_ID } from '../helpers/operators.ts';
import { deletePrefix, LogCapture, REDIS_URL, testPrefix, waitFor } from './helpers.ts';
import { FakePool, ScriptedNode, sharing } from './reshare-fakes.ts';

/** Just what processReshareJob uses of a BullMQ job. */
class StandInJob {
  attemptsMade = 0;
  progress: unknown;
  readonly name = RESHARE_JOB;
  readonly opts: { attempts: number };
  /** data.decided as it was when each commit was sent. */
  constructor(
    readonly id: string,
    public data: ReshareJobData,
    attempts: number,
  ) {
    this.opts = { attempts };
  }
  updateData(data: ReshareJobData): Promise<void> {
    this.data = data;
    return Promise.resolve();
  }
  updateProgress(progress: unknown): Promise<void> {
    this.progress = progress;
    return Promise.resolve();
  }
  get job(): Job<ReshareJobData, ReshareJobResult> {
    return this as unknown as Job<ReshareJobData, ReshareJobResult>;
  }
}

const KEYS: { tenant: string; version: number }[] = [
  ...Array.from({ length: 40 }, (_, i) => ({ tenant: 'acme', version: i + 1 })),
  ...Array.from({ length: 25 }, (_, i) => ({ tenant: 'beta', version: i + 1 })),
];

describe('coordinator/reshare-job: add a node and raise the threshold', function () {
  this.timeout(20_000);
  let redis: Redis;
  let prefix: string;
  let keys: RedisKeys;
  let nodes: ScriptedNode[];
  let fake: FakePool;
  let registry: Registry;
  let epochs: EpochStore;
  let deps: ReshareWorkerDeps;
  let logs: LogCapture;
  let invalidations: number;
  let proposal: Proposal;
  const oldPackages = new Map<string, KeyPackage>();
  const newPackages = new Map<string, KeyPackage>();

  before(() => {
    // The new epoch's packages, made independently: the same secret split 3-of-4.
    for (const { tenant, version } of KEYS) {
      const secret = randomScalar();
      oldPackages.set(`${tenant}/${version}`, sharing(secret, tenant, version, 2, [1, 2, 3], 1));
      newPackages.set(`${tenant}/${version}`, sharing(secret, tenant, version, 3, [1, 2, 3, 4], 2));
    }
  });

  beforeEach(async () => {
    prefix = testPrefix();
    keys = redisKeys(prefix);
    redis = new Redis(REDIS_URL);
    logs = new LogCapture();
    const old = { epoch: 1, threshold: 2, members: [1, 2, 3] };
    nodes = [new ScriptedNode(1, old), new ScriptedNode(2, old), new ScriptedNode(3, old)];
    nodes.push(new ScriptedNode(4, null));
    for (const n of nodes) {
      if (n.id !== 4) for (const [k, pkg] of oldPackages) n.keys.set(k, pkg);
      for (const [k, pkg] of newPackages) n.next.set(k, pkg);
    }
    fake = new FakePool(nodes);
    registry = new Registry({
      redis,
      keys,
      pool: fake.pool,
      nodeTimeoutMs: 500,
      logger: logs.logger,
    });
    epochs = new EpochStore({
      redis,
      keys,
      pool: fake.pool,
      nodeTimeoutMs: 500,
      logger: logs.logger,
    });
    for (const pkg of oldPackages.values()) await registry.store(pkg);
    const previous = { epoch: 1, threshold: 2, committee: nodes.slice(0, 3).map((n) => n.member) };
    await epochs.write(previous);
    invalidations = 0;
    deps = {
      connection: redis,
      redis,
      keys,
      pool: fake.pool,
      registry,
      roundTimeoutMs: 1000,
      logger: logs.logger,
      epochs,
      finishDelayMs: 0,
      invalidate: () => {
        invalidations++;
        return Promise.resolve();
      },
    };
    proposal = signWith(
      draftProposal({
        cluster: TEST_CLUSTER_ID,
        operation: 'committee.reshare',
        epoch: 2,
        threshold: 3,
        committee: nodes.map((n) => n.member),
        previous,
        reason: 'add',
        expiresAt: new Date(Date.now() + 3_600_000),
      }),
    );
  });

  afterEach(async () => {
    await registry.stop();
    await deletePrefix(redis, prefix);
    redis.disconnect();
  });

  let jobs = 0;
  function newJob(attempts: number): StandInJob {
    return new StandInJob(`reshare-${process.pid}-${++jobs}`, { proposal }, attempts);
  }

  async function attempt(job: StandInJob): Promise<ReshareJobResult | KmaasError> {
    try {
      return await processReshareJob(deps, job.job);
    } catch (err) {
      return err instanceof KmaasError ? err : new KmaasError('ERR_INTERNAL', String(err));
    } finally {
      job.attemptsMade++;
    }
  }

  const node = (id: number) => nodes.find((n) => n.id === id)!;

  /** The registry holds the new epoch's package of every key, and the record names epoch 2. */
  async function expectSwitched(): Promise<void> {
    for (const { tenant, version } of KEYS) {
      const stored = await registry.readKeyPackage(tenant, version);
      expect(canonicalKeyPackage(stored!)).to.equal(
        canonicalKeyPackage(newPackages.get(`${tenant}/${version}`)!),
      );
    }
    const record = await epochs.read();
    expect(record).to.deep.include({
      epoch: 2,
      threshold: 3,
      reshareId: reshareIdOf(proposalId(proposal)),
    });
    expect(record!.committee.map((m) => m.node)).to.deep.equal([1, 2, 3, 4]);
    expect(record!.votes!.map((v) => v.node)).to.deep.equal([1, 2, 3, 4]);
  }

  it('runs every phase in order, each receiver getting only its own pieces', async () => {
    const job = newJob(1);
    // The decision must be on record when the first commit goes out.
    const decidedAtCommit: boolean[] = [];
    for (const n of nodes) {
      n.fail = (type) => {
        if (type === 'reshare.commit') decidedAtCommit.push(job.data.decided !== undefined);
      };
    }

    const result = await attempt(job);

    expect(result).to.deep.equal({
      epoch: 2,
      threshold: 3,
      committee: [1, 2, 3, 4],
      keys: 65,
      dealers: [1, 2],
      excludedDealers: [],
    });
    expect(decidedAtCommit).to.deep.equal([true, true, true, true]);
    // Dealers: the previous threshold's worth of old members, lowest ids first.
    for (const id of [1, 2]) {
      expect(
        node(id)
          .bodies('reshare.deal')
          .map((b) => [b.dealers, b.chunk]),
      ).to.deep.equal([
        [[1, 2], 0],
        [[1, 2], 1],
      ]);
    }
    expect(node(3).types('reshare.deal')).to.deep.equal([]);
    // The key list: every old key, by tenant then version, in chunks of 64.
    const begin = node(4).bodies('reshare.begin')[0]!;
    expect(begin.keys).to.deep.equal(KEYS);
    for (const n of nodes) {
      expect(n.types().filter((t) => t.startsWith('reshare.'))).to.deep.equal([
        'reshare.begin',
        ...(n.id <= 2 ? ['reshare.deal', 'reshare.deal'] : []),
        'reshare.prepare',
        'reshare.prepare',
        'reshare.vote',
        'reshare.commit',
        'reshare.finish',
      ]);
      const prepares = n.bodies('reshare.prepare');
      expect(prepares.map((p) => (p.keys as unknown[]).length)).to.deep.equal([64, 1]);
      // The old packages are the registry's epoch-1 packages of the chunk's keys.
      const olds = prepares[1]!.oldPackages as KeyPackage[];
      expect(olds.map(canonicalKeyPackage)).to.deep.equal([
        canonicalKeyPackage(oldPackages.get('beta/25')!),
      ]);
    }
    await expectSwitched();
    expect(invalidations).to.equal(1);
    expect(job.progress).to.deep.equal({ phase: 'finish', done: 4, total: 4 });
    expect(logs.find('reshare switched')).to.have.length(1);
  });

  it('excludes a dealer a receiver names and deals again with the next old member', async () => {
    node(3).fail = (type, body) => {
      if (type === 'reshare.prepare' && (body.dealers as number[]).includes(1)) {
        throw new KmaasError('ERR_RESHARE_DEALER', 'piece inconsistent', { culprits: [1] });
      }
    };
    const job = newJob(1);

    const result = await attempt(job);

    expect(result).to.not.be.instanceOf(KmaasError);
    expect(job.data.excluded).to.deep.equal([1]);
    expect(
      node(3)
        .bodies('reshare.deal')
        .map((b) => b.dealers),
    ).to.deep.equal([
      [2, 3],
      [2, 3],
    ]);
    expect(node(1).types('reshare.deal')).to.have.length(2);
    expect(node(4).bodies('reshare.vote')[0]!.dealers).to.deep.equal([2, 3]);
    for (const n of nodes) expect(n.types('reshare.abort')).to.deep.equal([]);
    await expectSwitched();
  });

  it('aborts an attempt that fails before the decision, and the retry begins again', async () => {
    let votes = 0;
    node(4).fail = (type) => {
      if (type === 'reshare.vote' && votes++ === 0) {
        throw new KmaasError('ERR_RESHARE_STATE', 'chunk missing', { state: 'prepared' });
      }
    };
    const job = newJob(2);

    const first = await attempt(job);
    expect(first).to.be.instanceOf(KmaasError);
    expect((first as KmaasError).code).to.equal('ERR_RESHARE_STATE');
    expect(job.data.decided).to.equal(undefined);
    expect(job.data.lastError?.code).to.equal('ERR_RESHARE_STATE');
    for (const n of nodes) {
      expect(n.types('reshare.abort')).to.have.length(1);
      expect(n.types('reshare.commit')).to.deep.equal([]);
    }
    expect((await epochs.read())?.epoch).to.equal(1);

    const second = await attempt(job);
    expect(second).to.deep.include({ epoch: 2 });
    for (const n of nodes) expect(n.types('reshare.begin')).to.have.length(2);
    await expectSwitched();
  });

  it('never aborts after the decision: a commit failure is retried from the commit', async () => {
    // Two of the four receivers miss the first commit: fewer than t' = 3 committed.
    const missed = new Set<number>();
    for (const id of [3, 4]) {
      node(id).fail = (type) => {
        if (type === 'reshare.commit' && !missed.has(id)) {
          missed.add(id);
          throw new KmaasError('ERR_NODE_UNAVAILABLE', 'dropped');
        }
      };
    }
    const job = newJob(2);
    expect(await attempt(job)).to.be.instanceOf(KmaasError);
    expect(job.data.decided?.votes).to.have.length(4);

    expect(await attempt(job)).to.deep.include({ epoch: 2 });
    for (const n of nodes) {
      expect(n.types('reshare.abort')).to.deep.equal([]);
      expect(n.types('reshare.begin')).to.have.length(1);
      expect(n.types('reshare.commit')).to.have.length(2);
    }
    await expectSwitched();
  });

  it("switches once t' receivers committed; one that missed the commit is left to catch up", async () => {
    node(4).fail = (type) => {
      if (type === 'reshare.commit') throw new KmaasError('ERR_NODE_UNAVAILABLE', 'down');
    };
    const job = newJob(2);
    expect(await attempt(job)).to.deep.include({ epoch: 2 });
    for (const n of nodes) expect(n.types('reshare.abort')).to.deep.equal([]);
    await expectSwitched();
  });

  it('refuses a proposal whose previous epoch is not the current one, for good', async () => {
    await epochs.write({
      epoch: 2,
      threshold: 2,
      committee: nodes.slice(0, 3).map((n) => n.member),
    });
    const job = newJob(3);
    const r = await attempt(job);
    expect(r).to.be.instanceOf(KmaasError);
    expect(job.data.lastError?.code).to.equal('ERR_PROPOSAL_MISMATCH');
    for (const n of nodes) expect(n.types('reshare.begin')).to.deep.equal([]);
  });

  it('a scheduled refresh reshares the current epoch once per period', async () => {
    const committee = nodes.slice(0, 3).map((n) => n.member);
    const refresh = signWith(
      draftProposal({
        cluster: TEST_CLUSTER_ID,
        operation: 'committee.refresh',
        threshold: 2,
        committee,
        everySeconds: 3600,
        expiresAt: new Date(Date.now() + 3_600_000),
      }),
    );
    // The same secrets, 2-of-3 again at epoch 2: what a refresh makes.
    for (const n of nodes) {
      n.next.clear();
      for (const [k, pkg] of oldPackages) {
        n.next.set(k, { ...pkg, epoch: 2 });
      }
    }
    const now = 1_800_000_000_000;
    const period = Math.floor(now / 1000 / 3600);
    deps.now = () => now;
    const run = () =>
      attempt(new StandInJob(`refresh-${process.pid}-${++jobs}`, { proposal: refresh }, 1));

    expect(await run()).to.deep.equal({
      epoch: 2,
      threshold: 2,
      committee: [1, 2, 3],
      keys: 65,
      dealers: [1, 2],
      excludedDealers: [],
    });
    const begin = node(1).bodies('reshare.begin')[0]!;
    expect(begin).to.deep.include({ reshareId: reshareIdOf(proposalId(refresh), period), period });
    expect(node(4).types()).to.deep.equal([]);
    expect(await epochs.read()).to.deep.include({
      epoch: 2,
      reshareId: reshareIdOf(proposalId(refresh), period),
    });

    // Scheduled again within the same period: already done, nothing sent.
    const before = node(1).received.length;
    expect(await run()).to.deep.include({ epoch: 2, keys: 0 });
    expect(node(1).received.length).to.equal(before);
  });

  describe('in BullMQ', function () {
    let queue: CeremonyQueue;
    const workers: Worker<CeremonyJobData, CeremonyJobResult>[] = [];
    const connections: Redis[] = [];

    afterEach(async () => {
      await Promise.all(workers.splice(0).map((w) => w.close(true)));
      await queue.close();
      for (const c of connections.splice(0)) c.disconnect();
    });

    function worker(): Worker<CeremonyJobData, CeremonyJobResult> {
      const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
      connections.push(connection);
      const w = createCeremonyWorker({
        ...deps,
        connection,
        lockDurationMs: 600,
        stalledIntervalMs: 200,
      });
      workers.push(w);
      return w;
    }

    it('schedules one repeatable refresh, however many replicas schedule it', async () => {
      queue = await createCeremonyQueue(redis, keys);
      const refresh = signWith(
        draftProposal({
          cluster: TEST_CLUSTER_ID,
          operation: 'committee.refresh',
          threshold: 2,
          committee: nodes.slice(0, 3).map((n) => n.member),
          everySeconds: 600,
          expiresAt: new Date(Date.now() + 3_600_000),
        }),
      );
      await scheduleRefresh(queue, refresh, { attempts: 2, backoffMs: 10 });
      await scheduleRefresh(queue, refresh, { attempts: 2, backoffMs: 10 });
      const schedulers = await queue.getJobSchedulers();
      expect(schedulers.map((j) => [j.name, j.every])).to.deep.equal([
        ['committee.refresh', 600_000],
      ]);
      const jobs = await queue.getJobs(['waiting', 'delayed', 'prioritized']);
      expect(
        jobs.map((j) => [j.name, proposalId((j.data as ReshareJobData).proposal)]),
      ).to.deep.equal([['committee.refresh', proposalId(refresh)]]);
    });

    it('a worker killed between the decision and the commit: another completes, no abort', async () => {
      queue = await createCeremonyQueue(redis, keys);
      const first = worker();
      // Node 1 never answers the first commit, and the worker dies right then (as a replica
      // killed mid-commit would): its lock lapses and the stalled-job check hands the job on.
      node(1).hangNext = 'reshare.commit';
      const kill: { closed?: Promise<void> } = {};
      node(1).fail = (type) => {
        if (type === 'reshare.commit' && node(1).types('reshare.commit').length === 1) {
          kill.closed = first.close(true);
        }
      };
      const added = await queue.add(RESHARE_JOB, { proposal }, { jobId: 'reshare-killed' });
      await waitFor('the first commit', () => node(1).types('reshare.commit').length === 1);
      await waitFor('the first worker killed', () => kill.closed !== undefined);
      await kill.closed;
      worker();

      const state = await waitFor('job completed', async () => {
        const s = await added.getState();
        return s === 'completed' || s === 'failed' ? s : null;
      });

      expect(state).to.equal('completed');
      // GET /v1/jobs/:id shows it as a reshare.
      expect(await describeJob(queue, 'reshare-killed')).to.deep.include({
        id: 'reshare-killed',
        operation: 'committee.reshare',
        proposal: proposalId(proposal),
        epoch: 2,
        state: 'completed',
        progress: { phase: 'finish', done: 4, total: 4 },
        result: {
          epoch: 2,
          threshold: 3,
          committee: [1, 2, 3, 4],
          keys: 65,
          dealers: [1, 2],
          excludedDealers: [],
        },
      });
      for (const n of nodes) {
        expect(n.types('reshare.abort')).to.deep.equal([]);
        expect(n.types('reshare.begin')).to.have.length(1);
        expect(n.types('reshare.commit')).to.have.length(2);
      }
      await expectSwitched();
    });
  });
});
