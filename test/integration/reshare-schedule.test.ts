/**
 * The scheduled proactive refresh (DESIGN.md section 3, PLAN "committee.refresh"), on real
 * processes: the operators sign a standing committee.refresh proposal (the current committee and
 * threshold, everySeconds = 60, the shortest period), the coordinator is restarted with
 * KMAAS_REFRESH_PROPOSAL_FILE naming it, and a refresh runs by itself: nobody submits anything.
 * The epoch moves from 1 to 2 with the same committee and threshold, every node then holds
 * shares of epoch 2 only, and every key derives as before. Restarting the coordinator again in
 * the same period runs no second refresh (the repeatable job keeps its next run a period after
 * the first, and a node accepts one refresh per period).
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
  nodeDb,
  runProposal,
  shareEpochs,
  type EpochView,
} from './reshare-helpers.ts';

const DOCS = Array.from({ length: 16 }, (_, i) => `schedule/${i}.txt`);
const TENANT = 'acme';
const NODES = [1, 2, 3];

describe('the scheduled proactive refresh runs by itself (real processes)', function () {
  this.timeout(120_000);
  let dir: string;
  let cluster: LocalCluster;
  let client: KmaasClient;
  let baseline: string[];
  let first: EpochView;
  let refreshFile: string;

  const deriveAll = async () => (await client.deriveKeys(TENANT, 1, DOCS)).keys.map(bytesToHex);

  /**
   * Poll `check` until it holds. The deadline turns a hang into a failure, and is half the
   * period: a first refresh that waited for the end of its period would fail here.
   */
  async function waitFor(what: string, check: () => Promise<boolean> | boolean): Promise<void> {
    const until = Date.now() + 30_000;
    while (!(await check())) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  const epochsHeld = (id: number) => [...new Set(shareEpochs(nodeDb(dir, id)).map((r) => r.epoch))];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-schedule-'));
    cluster = new LocalCluster({
      dataDir: dir,
      nodes: NODES.length,
      redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      redisPrefix: `kmaas:test:${randomBytes(6).toString('hex')}:`,
      cleanRedisOnStop: true,
      nodeTimeoutMs: 3000,
      coordinatorEnv: { KMAAS_RESHARE_FINISH_DELAY_MS: '200', KMAAS_DKG_BACKOFF_MS: '300' },
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
    const { cluster: id, committee } = await client.committee(NODES);
    const create = draftProposal({
      cluster: id,
      operation: 'tenant.create',
      tenant: TENANT,
      version: 1,
      threshold: 2,
      committee,
      expiresAt: new Date(Date.now() + 600_000),
    });
    await runProposal(client, signWithDevKeys(create, cluster.operators.keyFiles, 2));
    baseline = await deriveAll();
    expect(new Set(baseline).size).to.equal(DOCS.length);
    first = (await clusterView(client)).epoch;

    // The standing proposal, as the operators would sign it: nothing is submitted.
    const standing = draftProposal({
      cluster: id,
      operation: 'committee.refresh',
      committee: first.committee,
      threshold: first.threshold,
      everySeconds: 60,
      expiresAt: new Date(Date.now() + 3_600_000),
    });
    refreshFile = join(dir, 'refresh-proposal.json');
    writeFileSync(
      refreshFile,
      JSON.stringify(signWithDevKeys(standing, cluster.operators.keyFiles, 2)),
    );
  });

  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('starts at epoch 1: nodes 1-3, t = 2, shares of epoch 1 only', () => {
    expect(first.epoch).to.equal(1);
    expect(first.threshold).to.equal(2);
    expect(first.committee.map((m) => m.node)).to.deep.equal(NODES);
    for (const id of NODES) expect(epochsHeld(id), `node ${id}`).to.deep.equal([1]);
  });

  it('a coordinator started with the proposal refreshes at once: epoch 2, same committee', async () => {
    await cluster.restartCoordinator('SIGTERM', { KMAAS_REFRESH_PROPOSAL_FILE: refreshFile });
    await waitFor('the refresh to make epoch 2', async () => {
      try {
        return (await clusterView(client)).epoch.epoch === 2;
      } catch {
        return false; // the coordinator is still rebuilding its view of the nodes
      }
    });
    const now = (await clusterView(client)).epoch;
    expect(now.threshold).to.equal(first.threshold);
    expect(now.committee).to.deep.equal(first.committee);
    // The coordinator tells the nodes to erase epoch 1 shortly after its switch.
    await waitFor('every node to erase its epoch-1 shares', () =>
      NODES.every((id) => epochsHeld(id).join() === '2'),
    );
    for (const id of NODES) {
      const rows = shareEpochs(nodeDb(dir, id));
      expect(rows, `node ${id}`).to.deep.equal([{ tenant: TENANT, version: 1, epoch: 2 }]);
    }
    expect(await deriveAll()).to.deep.equal(baseline);
  });

  it('a coordinator restarted in the same period runs no second refresh', async () => {
    await cluster.restartCoordinator('SIGTERM', { KMAAS_REFRESH_PROPOSAL_FILE: refreshFile });
    await cluster.waitForNodes();
    // The first refresh, started the same way, was under way within a second of the start: a
    // second one would have moved the epoch within these few seconds.
    const until = Date.now() + 3000;
    while (Date.now() < until) {
      const view = await clusterView(client);
      expect(view.epoch.epoch).to.equal(2);
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const id of NODES) expect(epochsHeld(id), `node ${id}`).to.deep.equal([2]);
    expect(await deriveAll()).to.deep.equal(baseline);
  });
});
