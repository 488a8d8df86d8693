/**
 * Key rotation end to end on real processes (LocalCluster: 3 share nodes, a coordinator, the dev
 * identity provider, Redis under this run's own prefix): the CLI creates tenant acme and encrypts
 * a few files under version 1; a key.rotate proposal signed with the dev operator keys makes
 * version 2; `kmaas rewrap` moves the folder to it; a key.retire proposal erases version 1 on
 * every node; every file still decrypts with the CLI to its plaintext.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KmaasClient } from '../../client/index.ts';
import { MemoryPinStore } from '../../client/pins.ts';
import { readHeader } from '../../client/envelope.ts';
import { draftProposal, type Operation } from '../../shared/proposal.ts';
import { ROOT } from '../../scripts/lib/child.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import { signWithDevKeys } from '../../scripts/lib/operators.ts';
import { pieces } from '../client/helpers/streams.ts';

const FILES = ['a.txt', 'b.bin', 'sub/c.bin'];

describe('key rotation and rewrap through real node and coordinator processes', function () {
  this.timeout(180_000);
  let dir: string;
  let cluster: LocalCluster;
  let admin: KmaasClient;
  const plain = new Map(FILES.map((f, i) => [f, randomBytes(1000 + i * 40_000)]));

  function kmaas(...args: string[]) {
    return spawnSync(
      process.execPath,
      [join(ROOT, 'cli', 'kmaas.mjs'), '--cluster', cluster.clusterFile, ...args],
      { encoding: 'utf8', cwd: dir },
    );
  }

  async function propose(operation: Operation, version: number): Promise<void> {
    const { cluster: id, committee } = await admin.committee();
    const p = draftProposal({
      cluster: id,
      operation,
      tenant: 'acme',
      version,
      ...(operation === 'key.rotate' ? { threshold: 2 } : {}),
      committee,
      expiresAt: new Date(Date.now() + 600_000),
    });
    const submitted = await admin.submitProposal(signWithDevKeys(p, cluster.operators.keyFiles, 2));
    if (submitted.kind === 'job') {
      await admin.waitForJob(submitted.jobId, { pollIntervalMs: 100 });
    } else {
      expect(submitted.complete).to.equal(true);
    }
  }

  async function versionOf(file: string): Promise<number> {
    return (await readHeader(pieces(readFileSync(file)))).header.keyVersion;
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-rewrap-'));
    mkdirSync(join(dir, 'cluster'));
    cluster = new LocalCluster({
      dataDir: join(dir, 'cluster'),
      nodes: 3,
      redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      redisPrefix: `kmaas:test:${randomBytes(6).toString('hex')}:`,
      cleanRedisOnStop: true,
      nodeTimeoutMs: 1500,
    });
    await cluster.start();
    admin = new KmaasClient({
      baseUrl: cluster.url,
      adminToken: cluster.secrets.adminToken,
      pins: new MemoryPinStore(),
    });
  });

  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('encrypt under v1, rotate, rewrap the folder, retire v1: every file decrypts', async () => {
    let r = kmaas('tenant', 'create', 'acme', '--threshold', '2');
    expect(r.status, r.stderr).to.equal(0);
    mkdirSync(join(dir, 'docs', 'sub'), { recursive: true });
    for (const [f, bytes] of plain) {
      const source = f.replace('/', '_') + '.plain';
      writeFileSync(join(dir, source), bytes);
      r = kmaas('encrypt', source, '-o', join('docs', f), '--tenant', 'acme', '--doc', f);
      expect(r.status, r.stderr).to.equal(0);
    }

    await propose('key.rotate', 2);
    r = kmaas('tenant', 'pin', 'acme', '--key-version', '2');
    expect(r.status, r.stderr).to.equal(0);

    r = kmaas('rewrap', 'docs');
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal('rewrapped 3, already current 0, failed 0');
    for (const f of FILES) expect(await versionOf(join(dir, 'docs', f)), f).to.equal(2);

    await propose('key.retire', 1);
    // Nothing is left under version 1: a second run has nothing to do.
    r = kmaas('rewrap', 'docs');
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal('rewrapped 0, already current 3, failed 0');

    for (const [f, bytes] of plain) {
      const out = join(dir, f.replace('/', '_') + '.out');
      r = kmaas('decrypt', join('docs', f), '-o', out);
      expect(r.status, r.stderr).to.equal(0);
      expect(readFileSync(out).equals(bytes), f).to.equal(true);
    }
  });
});
