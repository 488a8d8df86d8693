/**
 * Spare nodes of the local cluster (scripts/lib/cluster.ts `spareNodes`), on real processes: a
 * spare runs and reports its identity keys in GET /v1/status, but `kmaas tenant create` leaves
 * it out of the key generation's committee (the cluster file's first committee), so its key
 * package has no share for it. A restart without the option keeps the spare (a spare may hold
 * shares by then); wipeNode gives a node new identity keys, as a lost disk would.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../cli/program.ts';
import { LocalCluster, type ClusterFile } from '../../scripts/lib/cluster.ts';
import { Supervisor } from '../../scripts/lib/supervisor.ts';

interface Status {
  nodes: { id: number; connected: boolean; identity: { signing: string } | null }[];
}

describe('integration: spare nodes of the local cluster', function () {
  this.timeout(180_000);
  let dir: string;
  let cluster: LocalCluster | undefined;
  const prefix = `kmaas:test:${randomBytes(6).toString('hex')}:`;
  const options = () => ({
    dataDir: dir,
    nodes: 3,
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    redisPrefix: prefix,
    cleanRedisOnStop: true,
    nodeTimeoutMs: 1500,
  });

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-spare-'));
  });

  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const status = async (): Promise<Status> =>
    (await (await fetch(`${cluster!.url}/v1/status`)).json()) as Status;

  it('runs the spare, keeps it out of the first key, keeps it across a restart', async () => {
    cluster = new LocalCluster({ ...options(), spareNodes: 1 });
    await cluster.start();
    const file = JSON.parse(readFileSync(cluster.clusterFile, 'utf8')) as ClusterFile;
    expect(file.committee).to.deep.equal([1, 2, 3]);
    expect(file.spareNodes).to.deep.equal([4]);
    await waitUntil(async () => (await status()).nodes.every((n) => n.identity !== null));
    const before = (await status()).nodes.find((n) => n.id === 4)!.identity!.signing;

    let out = '';
    const io = { stdout: (t: string) => void (out += t), stderr: (t: string) => void (out += t) };
    const code = await run(['--cluster', cluster.clusterFile, 'tenant', 'create', 'acme'], {
      ...io,
      cwd: dir,
      home: dir,
    });
    expect(code, out).to.equal(0);
    const pkg = (await (await fetch(`${cluster.url}/v1/tenants/acme/keys/1`)).json()) as {
      threshold: number;
      verificationShares: { id: number }[];
    };
    expect(pkg.verificationShares.map((v) => v.id)).to.deep.equal([1, 2, 3]);
    expect(pkg.threshold).to.equal(2);

    // wipeNode: the node starts again with new identity keys and an empty folder.
    await cluster.stopNode(4);
    cluster.wipeNode(4);
    expect(readdirSync(cluster.nodeDataDir(4))).to.deep.equal([]);
    await cluster.startNode(4);
    await waitUntil(async () => {
      const id = (await status()).nodes.find((n) => n.id === 4)!.identity;
      return id !== null && id.signing !== before;
    });

    await cluster.stop();
    cluster = new LocalCluster(options());
    await cluster.start();
    expect(cluster.spareIds).to.deep.equal([4]);
    expect([...cluster.nodes.keys()]).to.deep.equal([1, 2, 3, 4]);
    expect(existsSync(cluster.nodeDataDir(4))).to.equal(true);
  });

  it('the launchers supervisor starts a killed node and a killed coordinator again, on their ports', async () => {
    const c = cluster!;
    const said: string[] = [];
    const supervisor = new Supervisor(
      () => c.supervised(),
      (line) => said.push(line),
      { everyMs: 100 },
    );
    supervisor.start();
    try {
      const node = c.nodes.get(2)!;
      const port = node.port;
      const pid = node.pid!;
      // Killed from outside, as a user or the OOM killer would: the cluster object is not told.
      process.kill(pid, 'SIGKILL');
      await waitUntil(() => Promise.resolve(said.includes(`node 2 is back (pid ${node.pid})`)));
      expect(node.pid).to.not.equal(pid);
      expect(node.port).to.equal(port);
      await waitUntil(async () => (await status()).nodes.find((n) => n.id === 2)!.connected);

      const url = c.url;
      process.kill(c.coordinator.pid!, 'SIGKILL');
      await waitUntil(() => Promise.resolve(said.some((l) => /^coordinator is back/.test(l))));
      expect(c.url).to.equal(url);
      await waitUntil(async () => (await status()).nodes.every((n) => n.connected));
      expect(said.filter((l) => / is not running: starting it again$/.test(l))).to.deep.equal([
        'node 2 is not running: starting it again',
        'coordinator is not running: starting it again',
      ]);
    } finally {
      supervisor.stop();
    }
  });
});

async function waitUntil(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('condition not reached');
}
