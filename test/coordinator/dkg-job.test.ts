/**
 * processDkgJob attempt by attempt, without BullMQ in between (a stand-in job object), so that a
 * test can act between attempts: a node that crashes in round 3, the key package put into Redis
 * meanwhile as a registry rebuild would, and the rule that the job is done only when EVERY
 * participant holds the identical key package. Real Redis under a prefix of its own.
 */
import { testProposal } from '../helpers/operators.ts';
import { expect } from 'chai';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import {
  ceremonyIdOf,
  KeyHolders,
  processDkgJob,
  type DkgJobData,
  type DkgJobResult,
  type DkgWorkerDeps,
} from '../../coordinator/dkg-job.ts';
import { canonicalKeyPackage } from '../../coordinator/key-quorum.ts';
import { NodePool } from '../../coordinator/node-pool.ts';
import { redisKeys } from '../../coordinator/redis-keys.ts';
import { Registry } from '../../coordinator/registry.ts';
import { KmaasError } from '../../shared/errors.ts';
import type { KeyPackage } from '../../shared/key-package.ts';
import { Redacted } from '../../shared/redacted.ts';
import { FakeNode } from './fake-node.ts';
import {
  deletePrefix,
  LogCapture,
  REDIS_URL,
  splitKey,
  testPrefix,
  TOKENS,
  waitFor,
} from './helpers.ts';

/** Just what processDkgJob uses of a BullMQ job. */
class StandInJob {
  attemptsMade = 0;
  progress: unknown;
  readonly opts: { attempts: number };
  constructor(
    readonly id: string,
    public data: DkgJobData,
    attempts: number,
  ) {
    this.opts = { attempts };
  }
  updateData(data: DkgJobData): Promise<void> {
    this.data = data;
    return Promise.resolve();
  }
  updateProgress(progress: unknown): Promise<void> {
    this.progress = progress;
    return Promise.resolve();
  }
  get job(): Job<DkgJobData, DkgJobResult> {
    return this as unknown as Job<DkgJobData, DkgJobResult>;
  }
}

describe('coordinator/dkg-job: done only when every participant holds the key', function () {
  let nodes: FakeNode[];
  let redis: Redis;
  let pool: NodePool;
  let registry: Registry;
  let deps: DkgWorkerDeps;
  let logs: LogCapture;
  let prefix: string;
  let jobs = 0;

  beforeEach(async () => {
    nodes = await Promise.all(
      [1, 2, 3].map((id) => FakeNode.start({ id, clusterToken: TOKENS.cluster })),
    );
    logs = new LogCapture();
    prefix = testPrefix();
    redis = new Redis(REDIS_URL);
    pool = new NodePool(
      nodes.map((n) => ({ id: n.id, url: n.url })),
      {
        clusterToken: new Redacted(TOKENS.cluster),
        heartbeatMs: 100,
        reconnectBaseMs: 10,
        reconnectMaxMs: 50,
      },
      logs.logger,
    );
    pool.start();
    await waitFor('links up', () => pool.connected().length === 3);
    const keys = redisKeys(prefix);
    registry = new Registry({ redis, keys, pool, nodeTimeoutMs: 1000, logger: logs.logger });
    deps = {
      connection: redis,
      redis,
      keys,
      pool,
      registry,
      roundTimeoutMs: 2000,
      logger: logs.logger,
    };
  });

  afterEach(async () => {
    await registry.stop();
    await pool.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await deletePrefix(redis, prefix);
    redis.disconnect();
  });

  const node = (id: number) => nodes.find((n) => n.id === id)!;

  function newJob(attempts: number): StandInJob {
    return new StandInJob(
      `job-${process.pid}-${++jobs}`,
      {
        tenant: 'acme',
        version: 1,
        threshold: 2,
        participants: [1, 2, 3],
        proposal: testProposal({
          tenant: 'acme',
          version: 1,
          threshold: 2,
          committee: [1, 2, 3].map((id) => ({ node: id, ...node(id).identity })),
        }),
      },
      attempts,
    );
  }

  /** One attempt, as BullMQ would run it; the error when it fails. */
  async function attempt(job: StandInJob): Promise<DkgJobResult | KmaasError> {
    try {
      return await processDkgJob(deps, job.job);
    } catch (err) {
      return err instanceof KmaasError ? err : new KmaasError('ERR_INTERNAL', String(err));
    } finally {
      job.attemptsMade++;
    }
  }

  /** What a registry rebuild does when t nodes hold the key: the package goes into Redis. */
  async function rebuildFromNode1(): Promise<KeyPackage> {
    const pkg = node(1).keys.get('acme/1')!.keyPackage;
    await registry.store(pkg);
    return pkg;
  }

  const dkgRounds = (n: FakeNode) => n.received.filter((t) => t.startsWith('dkg.round'));

  it('a node that crashed in round 3 finishes in the next attempt, although Redis has the package', async () => {
    const job = newJob(3);
    node(3).round3Crashes = 1;

    const first = await attempt(job);
    expect(first).to.be.instanceOf(KmaasError);
    const e = first as KmaasError;
    expect(e.code).to.equal('ERR_DKG_FAILED');
    expect(e.details).to.deep.include({ missing: [3], holders: [1, 2], phase: 'round3' });
    expect(job.data.holders?.map((h) => h.nodes)).to.deep.equal([[1, 2]]);
    expect(job.data.lastError?.details?.missing).to.deep.equal([3]);
    for (const n of nodes) expect(n.committed).to.deep.equal([]);

    const pkg = await rebuildFromNode1();
    await waitFor('node 3 back', () => pool.get(3)!.connected);

    const second = await attempt(job);
    expect(second).to.deep.equal({ tenant: 'acme', version: 1, groupKey: pkg.groupKey });
    expect(canonicalKeyPackage(node(3).keys.get('acme/1')!.keyPackage)).to.equal(
      canonicalKeyPackage(pkg),
    );
    expect(
      logs.find('not every participant holds the key package: replaying the ceremony'),
    ).to.satisfy((lines: Record<string, unknown>[]) =>
      lines.some((l) => l.inRegistry === true && String(l.holders) === '1,2'),
    );
    // Node 3 finished from its round-2 state; nodes 1 and 2 replayed every round for it.
    for (const n of [node(1), node(2)]) {
      expect(dkgRounds(n)).to.deep.equal([
        'dkg.round1',
        'dkg.round2',
        'dkg.round3',
        'dkg.round1',
        'dkg.round2',
        'dkg.round3',
      ]);
    }
    for (const n of nodes) expect(n.committed).to.deep.equal([ceremonyIdOf(job.id)]);
    expect(job.progress).to.deep.equal({ phase: 'store', done: 1, total: 1 });
  });

  it('the package in Redis is not enough: a node that never gets the key fails the job', async () => {
    const job = newJob(3);
    node(3).round3Crashes = Infinity;
    const errors: KmaasError[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await attempt(job);
      expect(r, `attempt ${i + 1}`).to.be.instanceOf(KmaasError);
      errors.push(r as KmaasError);
      if (i === 0) await rebuildFromNode1();
      await waitFor('node 3 back', () => pool.get(3)!.connected);
    }
    for (const e of errors) {
      expect(e.code).to.equal('ERR_DKG_FAILED');
      expect(e.details).to.deep.include({ missing: [3], holders: [1, 2] });
    }
    expect(errors[0]!.message).to.match(/\(retrying\)$/);
    expect(errors[2]!.message).to.not.match(/retrying/);
    expect(job.data.lastError).to.deep.include({ code: 'ERR_DKG_FAILED' });
    expect(job.data.lastError?.details?.missing).to.deep.equal([3]);
    expect(node(3).keys.has('acme/1')).to.equal(false);
    for (const n of nodes) expect(n.committed).to.deep.equal([]);
  });

  it('a node that holds the key but whose round-3 answer was lost is found by asking it', async () => {
    const job = newJob(2);
    node(3).round3Crashes = Infinity;
    await attempt(job);
    // Node 3 gets the key some other way (as if its answer, not its work, had been lost).
    node(3).install(node(1).keys.get('acme/1')!.keyPackage, 1n);
    node(1).round3Crashes = Infinity;
    await waitFor('node 3 back', () => pool.get(3)!.connected);
    const before = dkgRounds(node(1)).length;

    const second = await attempt(job);
    // Every participant confirmed the package (1 and 2 in round 3, 3 via keyPackage): done,
    // without running the rounds again.
    expect(second).to.not.be.instanceOf(KmaasError);
    expect(dkgRounds(node(1))).to.have.length(before);
    expect(node(3).received).to.include('keyPackage');
  });

  it('every node holding the package from the start is done at once; a different one conflicts', async () => {
    const key = splitKey('acme', 1, 2, [1, 2, 3]);
    for (const n of nodes) n.install(key.keyPackage, key.shares.get(n.id)!);
    const job = newJob(1);
    job.attemptsMade = 1;
    expect(await attempt(job)).to.deep.equal({
      tenant: 'acme',
      version: 1,
      groupKey: key.keyPackage.groupKey,
    });
    for (const n of nodes) expect(dkgRounds(n)).to.deep.equal([]);

    const other = splitKey('acme', 1, 2, [1, 2, 3]);
    for (const n of nodes) n.install(other.keyPackage, other.shares.get(n.id)!);
    const again = newJob(1);
    again.attemptsMade = 1;
    // Permanent: BullMQ gets an UnrecoverableError; the job's data keeps the code.
    expect(await attempt(again)).to.be.instanceOf(KmaasError);
    expect(again.data.lastError?.code).to.equal('ERR_CEREMONY_CONFLICT');
  });
});

describe('coordinator/dkg-job: KeyHolders', () => {
  const a = splitKey('acme', 1, 2, [1, 2, 3]).keyPackage;
  const b = splitKey('acme', 1, 2, [1, 2, 3]).keyPackage;
  const table: [string, [number, KeyPackage][], { all: boolean; missing: number[] | null }][] = [
    ['nobody', [], { all: false, missing: null }],
    [
      'two of three',
      [
        [1, a],
        [2, a],
      ],
      { all: false, missing: [3] },
    ],
    [
      'all three',
      [
        [1, a],
        [2, a],
        [3, a],
      ],
      { all: true, missing: [] },
    ],
    [
      'all three, one of them also another package',
      [
        [1, a],
        [2, a],
        [3, a],
        [3, b],
      ],
      { all: true, missing: [] },
    ],
    [
      'two different packages',
      [
        [1, a],
        [2, b],
        [3, b],
      ],
      { all: false, missing: [1] },
    ],
  ];
  for (const [name, adds, want] of table) {
    it(`${name}: held by all ${want.all}, missing ${JSON.stringify(want.missing)}`, () => {
      const h = new KeyHolders();
      for (const [n, p] of adds) h.add(n, p);
      // The record survives the trip through the job's data.
      const back = new KeyHolders(JSON.parse(JSON.stringify(h.toJSON())) as never);
      for (const holders of [h, back]) {
        expect(holders.heldByAll([1, 2, 3]) !== null).to.equal(want.all);
        expect(holders.coverage([1, 2, 3])?.missing ?? null).to.deep.equal(want.missing);
      }
    });
  }

  it('ignores a damaged record', () => {
    const h = new KeyHolders([
      { keyPackage: { nonsense: true } as never, nodes: [1, 2, 3] },
      { keyPackage: a, nodes: 'all' as never },
    ]);
    expect(h.empty).to.equal(true);
  });
});
