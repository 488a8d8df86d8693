/**
 * One node process per data folder (shared/data-lock.ts): a second node on a folder a live node
 * holds exits with code 2 and ERR_DATA_DIR_LOCKED, touching nothing, while the first serves on;
 * the lock a SIGKILLed node leaves behind is taken over, with a log line; a clean stop removes it.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { acquireDataLock, LOCK_FILE, procStartOf, readLock } from '../../shared/data-lock.ts';
import { KmaasError } from '../../shared/errors.ts';
import { OPERATOR_SET, TEST_CLUSTER_ID } from '../helpers/operators.ts';
import { folderDigests, startNodeProcess } from './node-process.ts';

describe('data folder lock: one node process per data folder', function () {
  this.timeout(60_000);
  let dir: string;
  const secret = randomBytes(32).toString('hex');
  const env = () => ({
    KMAAS_NODE_ID: '2',
    KMAAS_NODE_PORT: '0',
    KMAAS_NODE_DATA_DIR: dir,
    KMAAS_NODE_SECRET: secret,
    KMAAS_CLUSTER_TOKEN: 'test-cluster-token-lock',
    KMAAS_OIDC_ISSUER: 'http://127.0.0.1:9',
    KMAAS_CLUSTER_ID: TEST_CLUSTER_ID,
    KMAAS_OPERATORS: JSON.stringify(OPERATOR_SET),
  });
  const running: ChildProcess[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-lock-'));
  });
  after(() => {
    for (const c of running) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('a second node on a held folder exits 2 with ERR_DATA_DIR_LOCKED, changing nothing; the first serves on', async () => {
    const first = startNodeProcess(env());
    running.push(first.child);
    const port = Number((await first.waitFor('listening')).port);
    const lock = readLock(join(dir, LOCK_FILE));
    expect(lock?.pid).to.equal(first.child.pid);
    // The audit head is written just after the start; the snapshot waits for it.
    for (let i = 0; i < 50 && !existsSync(join(dir, 'audit.head')); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const before = folderDigests(dir);

    const second = startNodeProcess(env());
    expect(await second.exit).to.equal(2);
    const fatal = second.lines.find((l) => l.code === 'ERR_DATA_DIR_LOCKED');
    expect(fatal?.msg).to.contain(dir).and.contain(`pid ${first.child.pid}`);
    expect(second.lines.some((l) => l.msg === 'listening')).to.equal(false);
    expect(folderDigests(dir), 'every file byte-identical, none added').to.deep.equal(before);

    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(((await res.json()) as { ok: boolean }).ok).to.equal(true);
    first.child.kill('SIGTERM');
    expect(await first.exit).to.equal(0);
    expect(existsSync(join(dir, LOCK_FILE)), 'a clean stop removes the lock').to.equal(false);
  });

  it('the lock a SIGKILLed node leaves is taken over, with a log line', async () => {
    const killed = startNodeProcess(env());
    running.push(killed.child);
    await killed.waitFor('listening');
    killed.child.kill('SIGKILL');
    await killed.exit;
    expect(readLock(join(dir, LOCK_FILE))?.pid, 'left behind').to.equal(killed.child.pid);

    const next = startNodeProcess(env());
    running.push(next.child);
    await next.waitFor('listening');
    const line = next.lines.find((l) => String(l.msg).includes('taking over'));
    expect(line?.pid).to.equal(killed.child.pid);
    expect(readLock(join(dir, LOCK_FILE))?.pid).to.equal(next.child.pid);
    next.child.kill('SIGTERM');
    expect(await next.exit).to.equal(0);
  });

  it('a live pid that is another process now (its start time differs) does not hold the lock', () => {
    const file = join(dir, LOCK_FILE);
    // The parent runs, but did not write this lock: it started at another time.
    writeFileSync(
      file,
      JSON.stringify({ pid: process.ppid, started: '2000-01-01T00:00:00Z', procStart: '1' }),
    );
    const lock = acquireDataLock(dir, 'test');
    expect(lock.tookOver?.pid).to.equal(process.ppid);
    lock.release();
    expect(existsSync(file)).to.equal(false);

    // With its real start time it holds it.
    const procStart = procStartOf(process.ppid);
    writeFileSync(file, JSON.stringify({ pid: process.ppid, started: 'x', procStart }));
    expect(() => acquireDataLock(dir, 'test'))
      .to.throw(KmaasError)
      .with.property('code', 'ERR_DATA_DIR_LOCKED');
    rmSync(file);
  });
});
