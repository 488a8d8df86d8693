/**
 * Catch-up of a node that missed the whole reshare removing it (coordinator/reshare-catchup.ts,
 * nodes/reshare-catchup.ts), on real processes: 5 nodes at t = 3, node 5 SIGKILLed, a reshare to
 * nodes 1-4 (t = 3) runs without it. Node 5 never saw reshare.begin, so when it starts again
 * only the coordinator's catch-up (commit with the epoch record's proposal and votes, then
 * finish) can tell it that it was removed: its database must end with no share at all, and an
 * evaluate sent straight to it must answer ERR_NODE_REMOVED. The keys stay the same throughout.
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bytesToHex } from '@noble/hashes/utils.js';
import { KmaasClient } from '../../client/index.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import {
  clusterView,
  nodeDb,
  reshareProposal,
  runProposal,
  shareEpochs,
  evaluateAt,
  startReshareCluster,
  type Login,
} from './reshare-helpers.ts';

const DOCS = Array.from({ length: 8 }, (_, i) => `catchup/${i}.txt`);
const TENANT = 'acme';

describe('resharing: a node down during its whole removal is caught up (real processes)', function () {
  this.timeout(180_000);
  let dir: string;
  let cluster: LocalCluster;
  let client: KmaasClient;
  let login: Login;

  const deriveAll = async () => (await client.deriveKeys(TENANT, 1, DOCS)).keys.map(bytesToHex);

  async function waitFor(what: string, check: () => Promise<boolean> | boolean): Promise<void> {
    const until = Date.now() + 60_000;
    while (!(await check())) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  const evaluateAtNode = (id: number): Promise<string> =>
    evaluateAt(cluster, login, TENANT, DOCS[0]!, id);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-catchup-'));
    ({ cluster, login, client } = await startReshareCluster(dir, TENANT, { finishDelayMs: 200 }));
  });

  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('node 5, down while a reshare removed it, erases its shares when it comes back', async () => {
    const before = await deriveAll();
    expect(await evaluateAtNode(5)).to.equal('ok');
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
    expect(await evaluateAtNode(5)).to.equal('ERR_NODE_REMOVED');
    expect(await evaluateAtNode(1)).to.equal('ok');
    expect(await deriveAll()).to.deep.equal(before);
  });
});
