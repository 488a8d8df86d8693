/**
 * The end-to-end path on real processes: the development identity provider, 5 share node
 * processes, a coordinator process, the real Redis under a prefix of this run's own, the SDK (as
 * alice, signed in with devLogin) and the CLI (which signs in by itself from cluster.json). Faults
 * are real SIGKILLs.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bytesToHex } from '@noble/hashes/utils.js';
import { KmaasClient, type ClientAuth } from '../../client/index.ts';
import { MemoryPinStore } from '../../client/pins.ts';
import { devLogin } from '../../idp/dev-login.ts';
import { KmaasError } from '../../shared/errors.ts';
import { ROOT } from '../../scripts/lib/child.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import { LIE_FILE } from '../../nodes/evaluate.ts';

const DOCS = Array.from({ length: 50 }, (_, i) => `invoices/2026/${i}.pdf`);

describe('end to end through real node and coordinator processes', function () {
  this.timeout(180_000);
  let dir: string;
  let cluster: LocalCluster;
  let client: KmaasClient;
  let baseline: string[];

  const derive = async () => (await client.deriveKeys('acme', 1, DOCS)).keys.map(bytesToHex);

  function kmaas(...args: string[]) {
    return spawnSync(
      process.execPath,
      [join(ROOT, 'cli', 'kmaas.mjs'), '--cluster', cluster.clusterFile, ...args],
      {
        encoding: 'utf8',
      },
    );
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-e2e-'));
    cluster = new LocalCluster({
      dataDir: dir,
      redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      redisPrefix: `kmaas:test:${randomBytes(6).toString('hex')}:`,
      cleanRedisOnStop: true,
      nodeTimeoutMs: 1500,
    });
    await cluster.start();
    client = new KmaasClient({
      baseUrl: cluster.url,
      adminToken: cluster.secrets.adminToken,
      pins: new MemoryPinStore(),
    });
  });

  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('runs a development identity provider that signs in alice (acme) and bob (globex)', async () => {
    const file = JSON.parse(readFileSync(cluster.clusterFile, 'utf8')) as {
      issuer: string;
      devUsers: { username: string; tenant: string }[];
    };
    expect(file.issuer).to.equal(cluster.issuer);
    // No development client token any more: end users sign in.
    expect(file).to.not.have.property('token');
    expect(file.devUsers.map((u) => `${u.username}@${u.tenant}`)).to.deep.equal([
      'alice@acme',
      'bob@globex',
    ]);
    for (const user of cluster.devUsers) {
      const login = await devLogin({ issuer: cluster.issuer, ...user });
      expect(login).to.include({ subject: user.username, tenant: user.tenant });
    }
  });

  it('creates a tenant key by DKG through the CLI, which pins its group key', () => {
    const r = kmaas('tenant', 'create', 'acme', '--threshold', '3');
    expect(r.status, r.stderr).to.equal(0);
    const file = JSON.parse(readFileSync(cluster.pinsFile, 'utf8')) as {
      pins: Record<string, Record<string, string>>;
    };
    expect(file.pins.acme?.['1']).to.match(/^[A-Za-z0-9_-]{43}$/);
  });

  it('derives 50 document keys, all distinct, and the same again', async () => {
    // The SDK trusts the group key the CLI pinned at creation, and nothing else.
    const file = JSON.parse(readFileSync(cluster.pinsFile, 'utf8')) as {
      pins: Record<string, Record<string, string>>;
    };
    const pins = new MemoryPinStore([
      { tenant: 'acme', version: 1, groupKey: file.pins.acme!['1']! },
    ]);
    // Alice of acme signs in at the cluster's identity provider; every node checks her token.
    const alice = cluster.devUsers.find((u) => u.tenant === 'acme')!;
    const login = await devLogin({ issuer: cluster.issuer, ...alice });
    expect(login.tenant).to.equal('acme');
    const auth: ClientAuth = { accessToken: login.accessToken, dpopKey: login.dpopKey };
    client = new KmaasClient({ baseUrl: cluster.url, pins, auth });
    baseline = await derive();
    expect(new Set(baseline).size).to.equal(50);
    expect(await derive()).to.deep.equal(baseline);
  });

  it('with 2 of 5 nodes SIGKILLed, the keys are identical', async () => {
    await cluster.killNode(2);
    await cluster.killNode(5);
    expect(await derive()).to.deep.equal(baseline);
  });

  it('restarted nodes serve the same keys from disk (the other two killed to force them in)', async () => {
    await cluster.startNode(2);
    await cluster.startNode(5);
    await cluster.killNode(1);
    await cluster.killNode(3);
    // The coordinator reconnects with backoff; ask until the restarted nodes are back.
    let keys: string[] | undefined;
    let lastError: unknown;
    for (let i = 0; i < 40 && !keys; i++) {
      try {
        keys = await derive();
      } catch (err) {
        lastError = err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    expect(keys, String(lastError)).to.deep.equal(baseline);
  });

  it('with 3 of 5 dead, a clear ERR_TOO_FEW_NODES within a bounded time, no hang', async () => {
    await cluster.killNode(4);
    const t0 = Date.now();
    try {
      await derive();
      expect.fail('derived with only 2 of 5 nodes alive');
    } catch (err) {
      expect(err).to.be.instanceOf(KmaasError);
      expect((err as KmaasError).code).to.equal('ERR_TOO_FEW_NODES');
    }
    // A bound on giving up (the node deadline is 1.5 s), not a speed measurement.
    expect(Date.now() - t0).to.be.below(30_000);
    for (const id of [1, 3, 4]) await cluster.startNode(id);
  });

  it('encrypts a real file with the CLI and decrypts it byte-identical; a tampered copy is refused', async () => {
    // The coordinator reconnects with backoff: wait until all 5 are back before the CLI runs.
    for (let i = 0; i < 40; i++) {
      const status = (await (await fetch(`${cluster.url}/v1/status`)).json()) as {
        nodes: { connected: boolean }[];
      };
      if (status.nodes.filter((n) => n.connected).length === 5) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const plain = join(dir, 'contract.pdf');
    writeFileSync(plain, randomBytes(3 * 1024 * 1024 + 12345));
    const enc = join(dir, 'contract.pdf.kmaas');
    const dec = join(dir, 'contract.out.pdf');
    let r = kmaas('encrypt', plain, '-o', enc, '--tenant', 'acme', '--doc', 'contracts/1');
    expect(r.status, r.stderr).to.equal(0);
    const ciphertext = readFileSync(enc);
    expect(ciphertext.includes(readFileSync(plain).subarray(0, 64))).to.equal(false);
    r = kmaas('decrypt', enc, '-o', dec);
    expect(r.status, r.stderr).to.equal(0);
    expect(readFileSync(dec).equals(readFileSync(plain))).to.equal(true);

    ciphertext[ciphertext.length - 100]! ^= 0x01;
    const bad = join(dir, 'tampered.kmaas');
    writeFileSync(bad, ciphertext);
    const badOut = join(dir, 'tampered.out');
    r = kmaas('decrypt', bad, '-o', badOut);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/ERR_DECRYPT_FAILED/);
    expect(existsSync(badOut)).to.equal(false);
  });

  it('a Byzantine node (failpoint evaluate.lie) is named and excluded by the coordinator; the keys stay right', async () => {
    // Node 1 restarted as a liar: valid points and a well-formed proof, of k_1 + 1 (nodes/evaluate.ts).
    await cluster.stopNode(1);
    await cluster.startNode(1, false, { KMAAS_FAILPOINTS: 'evaluate.lie' });
    const lie = join(cluster.nodeDataDir(1), LIE_FILE);
    writeFileSync(lie, '');
    // Only nodes 1-3 up: the coordinator must ask the liar, and names it rather than pass it on.
    await cluster.killNode(4);
    await cluster.killNode(5);
    await connectedNodes([1, 2, 3]);
    const refused = await derive().then(
      () => expect.fail('derived with a lying node among only t'),
      (err: unknown) => err as KmaasError,
    );
    expect(refused.code).to.equal('ERR_TOO_FEW_NODES');
    const failed = (refused.details?.failed ?? []) as { node: number; code: string }[];
    expect(failed.filter((f) => f.code === 'ERR_PROOF_INVALID').map((f) => f.node)).to.deep.equal([
      1,
    ]);
    // With a fourth honest node, the liar is left out and every key is the right one.
    await cluster.startNode(4);
    await connectedNodes([1, 2, 3, 4]);
    const { keys, nodes } = await client.deriveKeys('acme', 1, DOCS);
    expect(keys.map(bytesToHex)).to.deep.equal(baseline);
    expect(nodes).to.not.include(1);
    // The lie is switched off at run time: with node 4 gone, node 1 is needed and honest again.
    rmSync(lie);
    await cluster.killNode(4);
    await connectedNodes([1, 2, 3]);
    const again = await client.deriveKeys('acme', 1, DOCS);
    expect(again.keys.map(bytesToHex)).to.deep.equal(baseline);
    expect(again.nodes).to.deep.equal([1, 2, 3]);
  });

  /** Until the coordinator is connected to exactly `ids` (it reconnects with backoff). */
  async function connectedNodes(ids: number[]): Promise<void> {
    let seen: number[] = [];
    for (let i = 0; i < 120; i++) {
      const status = (await (await fetch(`${cluster.url}/v1/status`)).json()) as {
        nodes: { id: number; connected: boolean }[];
      };
      seen = status.nodes.filter((n) => n.connected).map((n) => n.id);
      if (seen.join() === ids.join()) return;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect.fail(`connected nodes ${seen.join(', ')}, expected ${ids.join(', ')}`);
  }
});
