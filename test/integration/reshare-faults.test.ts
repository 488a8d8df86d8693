/**
 * Resharing survives crashes and lies (DESIGN.md section 3), on real processes: a node SIGKILLed
 * at each phase of a reshare (a dealer before it deals, a new member before and after it persists
 * its new shares, a member before and after it commits), the coordinator SIGKILLed mid-ceremony,
 * a dealer whose pieces do not match its commitments, and a node whose data folder was deleted.
 * Each time the old epoch keeps serving (derivations run throughout and none fails or differs),
 * the ceremony completes when the node is back or the job is retried, and every key is the one
 * derived before anything happened.
 *
 * The crash points are the node's test-only failpoints (KMAAS_FAILPOINTS): at that exact point
 * the node sends itself a real SIGKILL. It is then restarted without them.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bytesToHex } from '@noble/hashes/utils.js';
import { KmaasClient } from '../../client/index.ts';
import { MemoryPinStore } from '../../client/pins.ts';
import { devLogin } from '../../idp/dev-login.ts';
import { draftProposal } from '../../shared/proposal.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import { signWithDevKeys } from '../../scripts/lib/operators.ts';
import {
  clusterView,
  DerivationLoad,
  nodeDb,
  reshareProposal,
  shareEpochs,
} from './reshare-helpers.ts';

const DOCS = Array.from({ length: 24 }, (_, i) => `faults/${i}.txt`);
const TENANT = 'acme';

describe('resharing under crashes and lies (real processes, real SIGKILL)', function () {
  this.timeout(900_000);
  let dir: string;
  let cluster: LocalCluster;
  let client: KmaasClient;
  let expected: string[];

  const deriveAll = async () => (await client.deriveKeys(TENANT, 1, DOCS)).keys.map(bytesToHex);

  async function waitFor(what: string, check: () => Promise<boolean> | boolean): Promise<void> {
    const until = Date.now() + 120_000;
    while (!(await check())) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Restart node `id` with `failpoint`, run a refresh (or `change`), wait until the node has
   * killed itself, restart it clean, and wait for the job: the epoch moved on by one, no
   * derivation failed or differed, and every key is unchanged.
   */
  async function crashDuringReshare(
    id: number,
    failpoint: string,
    change: Parameters<typeof reshareProposal>[2] = { reason: 'refresh' },
  ): Promise<unknown> {
    await cluster.killNode(id, 'SIGTERM');
    await cluster.startNode(id, false, { KMAAS_FAILPOINTS: failpoint });
    const start = (await clusterView(client)).epoch.epoch;
    const load = new DerivationLoad(client, TENANT, 1, DOCS, expected);
    let result: unknown;
    try {
      const p = await reshareProposal(client, cluster, change);
      const submitted = await client.submitProposal(p);
      if (submitted.kind !== 'job') throw new Error('expected a job');
      await waitFor(`node ${id} to die at ${failpoint}`, () => !cluster.nodeRunning(id));
      await cluster.startNode(id);
      const job = await client.waitForJob(submitted.jobId, {
        pollIntervalMs: 200,
        timeoutMs: 300_000,
      });
      result = job.result;
    } finally {
      const seen = await load.stop();
      expect(seen.failures, 'derivations that failed').to.deep.equal([]);
      expect(seen.mismatches, 'derivations that gave another key').to.equal(0);
    }
    expect((await clusterView(client)).epoch.epoch).to.equal(start + 1);
    expect(await deriveAll()).to.deep.equal(expected);
    return result;
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-reshare-faults-'));
    cluster = new LocalCluster({
      dataDir: dir,
      nodes: 5,
      redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      redisPrefix: `kmaas:test:${randomBytes(6).toString('hex')}:`,
      cleanRedisOnStop: true,
      nodeTimeoutMs: 3000,
      coordinatorEnv: {
        KMAAS_RESHARE_FINISH_DELAY_MS: '300',
        KMAAS_DKG_BACKOFF_MS: '500',
        KMAAS_RESHARE_ATTEMPTS: '12',
        KMAAS_CEREMONY_LOCK_MS: '3000',
        KMAAS_CEREMONY_STALLED_INTERVAL_MS: '1000',
      },
    });
    await cluster.start();
    const alice = cluster.devUsers.find((u) => u.tenant === TENANT)!;
    const login = await devLogin({ issuer: cluster.issuer, ...alice });
    client = new KmaasClient({
      baseUrl: cluster.url,
      auth: { accessToken: login.accessToken, dpopKey: login.dpopKey },
      adminToken: cluster.secrets.adminToken,
      pins: new MemoryPinStore(),
      trustOnFirstUse: true,
    });
    const { cluster: id, committee } = await client.committee();
    const create = draftProposal({
      cluster: id,
      operation: 'tenant.create',
      tenant: TENANT,
      version: 1,
      threshold: 3,
      committee,
      expiresAt: new Date(Date.now() + 600_000),
    });
    const submitted = await client.submitProposal(
      signWithDevKeys(create, cluster.operators.keyFiles, 2),
    );
    if (submitted.kind !== 'job') throw new Error('expected a job');
    await client.waitForJob(submitted.jobId, { pollIntervalMs: 100 });
    expected = await deriveAll();
  });

  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a dealer SIGKILLed before it deals', async () => {
    await crashDuringReshare(1, 'reshare.deal:before');
  });

  it('a new member SIGKILLed before it persists its new shares', async () => {
    await crashDuringReshare(2, 'reshare.prepare:before-persist');
  });

  it('a new member SIGKILLed after it persisted its new shares', async () => {
    await crashDuringReshare(3, 'reshare.prepare:after-persist');
  });

  it('a member SIGKILLed as the commit reaches it', async () => {
    await crashDuringReshare(4, 'reshare.commit:before');
  });

  it('a member SIGKILLed right after it committed', async () => {
    await crashDuringReshare(5, 'reshare.commit:after');
  });

  it('the coordinator SIGKILLed mid-ceremony: the restarted one finishes the job', async () => {
    const start = (await clusterView(client)).epoch.epoch;
    const load = new DerivationLoad(client, TENANT, 1, DOCS, expected);
    try {
      const p = await reshareProposal(client, cluster, { reason: 'refresh' });
      const submitted = await client.submitProposal(p);
      if (submitted.kind !== 'job') throw new Error('expected a job');
      await waitFor('the reshare to be dealing', async () => {
        const job = await client.job(submitted.jobId);
        const phase = (job.progress as { phase?: string } | undefined)?.phase;
        return (
          phase === 'deal' || phase === 'prepare' || phase === 'vote' || job.state === 'completed'
        );
      });
      await cluster.restartCoordinator('SIGKILL');
      await client.waitForJob(submitted.jobId, { pollIntervalMs: 200, timeoutMs: 300_000 });
    } finally {
      const seen = await load.stop();
      // While the coordinator is down nothing derives; what did run must be right.
      expect(seen.mismatches).to.equal(0);
    }
    expect((await clusterView(client)).epoch.epoch).to.equal(start + 1);
    expect(await deriveAll()).to.deep.equal(expected);
  });

  it('a dealer whose pieces contradict its commitments is named, excluded, replaced', async () => {
    const result = (await crashFreeWithFailpoint(1, 'reshare.deal:corrupt-piece')) as {
      excludedDealers?: number[];
      dealers?: number[];
    };
    expect(result.excludedDealers).to.deep.equal([1]);
    expect(result.dealers).to.not.include(1);
  });

  it('a node whose data folder was deleted is repaired and serves the same keys', async () => {
    await cluster.killNode(3, 'SIGKILL');
    cluster.wipeNode(3);
    await cluster.startNode(3);
    expect(shareEpochs(nodeDb(dir, 3))).to.deep.equal([]);
    // The coordinator sees node 3 again, with the new identity keys it made at start.
    await waitFor('node 3 to report new identity keys', async () => {
      const view = await clusterView(client);
      const recorded = view.epoch.committee.find((m) => m.node === 3)!;
      const now = view.identities.get(3);
      return now !== undefined && now.signing !== recorded.signing;
    });
    // Status names it as a member that lost its data, and says how to repair it.
    const before = (await client.status()) as unknown as {
      nodes: { id: number; lostData?: boolean }[];
    };
    expect(before.nodes.filter((n) => n.lostData === true).map((n) => n.id)).to.deep.equal([3]);
    const p = await reshareProposal(client, cluster, { reason: 'repair', renew: [3] });
    const submitted = await client.submitProposal(p);
    if (submitted.kind !== 'job') throw new Error('expected a job');
    await client.waitForJob(submitted.jobId, { pollIntervalMs: 200, timeoutMs: 300_000 });
    expect(shareEpochs(nodeDb(dir, 3)).length).to.be.greaterThan(0);
    const after = (await client.status()) as unknown as {
      nodes: { id: number; lostData?: boolean }[];
    };
    expect(after.nodes.filter((n) => n.lostData === true)).to.deep.equal([]);
    // With nodes 1 and 2 down, t = 3 answers must include node 3's.
    await cluster.killNode(1, 'SIGTERM');
    await cluster.killNode(2, 'SIGTERM');
    try {
      const { keys, nodes } = await client.deriveKeys(TENANT, 1, DOCS);
      expect(nodes).to.include(3);
      expect(keys.map(bytesToHex)).to.deep.equal(expected);
    } finally {
      await cluster.startNode(1);
      await cluster.startNode(2);
    }
  });

  /** Start node `id` with a failpoint that lies rather than crashes; run a refresh. */
  async function crashFreeWithFailpoint(id: number, failpoint: string): Promise<unknown> {
    await cluster.killNode(id, 'SIGTERM');
    await cluster.startNode(id, false, { KMAAS_FAILPOINTS: failpoint });
    const load = new DerivationLoad(client, TENANT, 1, DOCS, expected);
    let result: unknown;
    try {
      const p = await reshareProposal(client, cluster, { reason: 'refresh' });
      const submitted = await client.submitProposal(p);
      if (submitted.kind !== 'job') throw new Error('expected a job');
      result = (
        await client.waitForJob(submitted.jobId, { pollIntervalMs: 200, timeoutMs: 300_000 })
      ).result;
    } finally {
      const seen = await load.stop();
      expect(seen.failures).to.deep.equal([]);
      expect(seen.mismatches).to.equal(0);
      await cluster.killNode(id, 'SIGTERM');
      await cluster.startNode(id);
    }
    expect(await deriveAll()).to.deep.equal(expected);
    return result;
  }
});
