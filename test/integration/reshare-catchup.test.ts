/**
 * Catch-up of a node that missed the whole reshare removing it (coordinator/reshare-catchup.ts,
 * nodes/reshare-catchup.ts), on real processes: 5 nodes at t = 3, node 5 SIGKILLed, a reshare to
 * nodes 1-4 (t = 3) runs without it. Node 5 never saw reshare.begin, so when it starts again
 * only the coordinator's catch-up (commit with the epoch record's proposal and votes, then
 * finish) can tell it that it was removed: its database must end with no share at all, and an
 * evaluate sent straight to it must answer ERR_NODE_REMOVED. The keys stay the same throughout.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bytesToHex } from '@noble/hashes/utils.js';
import { KmaasClient } from '../../client/index.ts';
import { createEvaluateProof } from '../../client/dpop.ts';
import { MemoryPinStore } from '../../client/pins.ts';
import { devLogin } from '../../idp/dev-login.ts';
import { documentInput } from '../../shared/document.ts';
import { evaluatePath } from '../../shared/dpop-binding.ts';
import { toB64 } from '../../shared/encoding.ts';
import { nodeReplyEnvelope } from '../../shared/messages.ts';
import { draftProposal } from '../../shared/proposal.ts';
import { blind } from '../../shared/voprf-client.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import { signWithDevKeys } from '../../scripts/lib/operators.ts';
import { NodeClient } from '../nodes/helpers.ts';
import {
  clusterView,
  nodeDb,
  reshareProposal,
  runProposal,
  shareEpochs,
} from './reshare-helpers.ts';

const DOCS = Array.from({ length: 8 }, (_, i) => `catchup/${i}.txt`);
const TENANT = 'acme';

describe('resharing: a node down during its whole removal is caught up (real processes)', function () {
  this.timeout(180_000);
  let dir: string;
  let cluster: LocalCluster;
  let client: KmaasClient;
  let login: Awaited<ReturnType<typeof devLogin>>;

  const deriveAll = async () => (await client.deriveKeys(TENANT, 1, DOCS)).keys.map(bytesToHex);

  async function waitFor(what: string, check: () => Promise<boolean> | boolean): Promise<void> {
    const until = Date.now() + 60_000;
    while (!(await check())) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** An evaluate request straight to node `id`, with alice's valid token and proof. */
  async function evaluateAt(id: number): Promise<string> {
    const node = cluster.secrets.nodes.find((n) => n.id === id)!;
    const link = await NodeClient.connect(
      `ws://127.0.0.1:${node.port}/v1/ws`,
      cluster.secrets.clusterToken,
    );
    try {
      const blinded = blind([documentInput(TENANT, 1, DOCS[0]!)]).blinded.map((b) =>
        toB64(b.toBytes()),
      );
      const dpop = await createEvaluateProof({
        dpopKey: login.dpopKey,
        accessToken: login.accessToken,
        url: cluster.url + evaluatePath(TENANT, 1),
        tenant: TENANT,
        version: 1,
        blinded,
      });
      const reply = nodeReplyEnvelope.parse(
        await link.request('evaluate', {
          tenant: TENANT,
          version: 1,
          blinded,
          auth: { token: login.accessToken, dpop },
        }),
      );
      return reply.ok ? 'ok' : reply.error.code;
    } finally {
      await link.close();
    }
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-catchup-'));
    cluster = new LocalCluster({
      dataDir: dir,
      nodes: 5,
      redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      redisPrefix: `kmaas:test:${randomBytes(6).toString('hex')}:`,
      cleanRedisOnStop: true,
      nodeTimeoutMs: 3000,
      coordinatorEnv: { KMAAS_RESHARE_FINISH_DELAY_MS: '200' },
    });
    await cluster.start();
    const alice = cluster.devUsers.find((u) => u.tenant === TENANT)!;
    login = await devLogin({ issuer: cluster.issuer, ...alice });
    client = new KmaasClient({
      baseUrl: cluster.url,
      auth: { accessToken: login.accessToken, dpopKey: login.dpopKey },
      adminToken: cluster.secrets.adminToken,
      pins: new MemoryPinStore(),
      trustOnFirstUse: true,
    });
    const { cluster: id, committee } = await client.committee([1, 2, 3, 4, 5]);
    const create = draftProposal({
      cluster: id,
      operation: 'tenant.create',
      tenant: TENANT,
      version: 1,
      threshold: 3,
      committee,
      expiresAt: new Date(Date.now() + 600_000),
    });
    await runProposal(client, signWithDevKeys(create, cluster.operators.keyFiles, 2));
  });

  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('node 5, down while a reshare removed it, erases its shares when it comes back', async () => {
    const before = await deriveAll();
    expect(await evaluateAt(5)).to.equal('ok');
    expect(shareEpochs(nodeDb(dir, 5))).to.deep.equal([{ tenant: TENANT, version: 1, epoch: 1 }]);

    await cluster.killNode(5, 'SIGKILL');
    const p = await reshareProposal(client, cluster, { reason: 'remove', remove: [5] });
    await runProposal(client, p);
    const { epoch } = await clusterView(client);
    expect([epoch.epoch, epoch.threshold]).to.deep.equal([2, 3]);
    expect(epoch.committee.map((m) => m.node)).to.deep.equal([1, 2, 3, 4]);
    // Node 5 never heard of it: it still holds its epoch-1 share on disk.
    expect(shareEpochs(nodeDb(dir, 5))).to.deep.equal([{ tenant: TENANT, version: 1, epoch: 1 }]);

    await cluster.startNode(5);
    await waitFor('node 5 to erase its shares', () => shareEpochs(nodeDb(dir, 5)).length === 0);
    expect(await evaluateAt(5)).to.equal('ERR_NODE_REMOVED');
    expect(await evaluateAt(1)).to.equal('ok');
    expect(await deriveAll()).to.deep.equal(before);
  });
});
