/**
 * The node as a process (docs/CONTRACTS.md, "Processes and readiness"): exactly one `listening`
 * line with the real port, graceful SIGTERM, exit code 2 and a clear message for a wrong secret.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { CLUSTER_TOKEN, removeDir, tempDir } from './helpers.ts';
import { OPERATOR_SET, TEST_CLUSTER_ID } from '../helpers/operators.ts';
import { folderDigests, startNodeProcess } from './node-process.ts';

describe('nodes/main: the share node process', function () {
  this.timeout(30_000);
  let dir: string;
  const secret = randomBytes(32).toString('hex');
  const env = () => ({
    KMAAS_NODE_ID: '4',
    KMAAS_NODE_PORT: '0',
    KMAAS_NODE_DATA_DIR: dir,
    KMAAS_NODE_SECRET: secret,
    KMAAS_CLUSTER_TOKEN: CLUSTER_TOKEN,
    // Nobody listens there: the node must start anyway (the issuer may start later).
    KMAAS_OIDC_ISSUER: 'http://127.0.0.1:9',
    KMAAS_CLUSTER_ID: TEST_CLUSTER_ID,
    KMAAS_OPERATORS: JSON.stringify(OPERATOR_SET),
  });

  before(async () => {
    dir = await tempDir();
  });
  after(async () => {
    await removeDir(dir);
  });

  it('logs one `listening` line with the real port, serves /healthz, and stops on SIGTERM', async () => {
    const run = startNodeProcess(env());
    const listening = await run.waitFor('listening');
    const port = listening.port as number;
    expect(port).to.be.a('number').greaterThan(0);
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(await res.json()).to.deep.include({ ok: true, node: 4, keys: 0 });
    run.child.kill('SIGTERM');
    expect(await run.exit).to.equal(0);
    expect(run.lines.filter((l) => l.msg === 'listening')).to.have.length(1);
    expect(run.lines.every((l) => l.node === 4)).to.equal(true);
  });

  it('a wrong secret exits with code 2 and says why, without touching the database', async () => {
    const before = folderDigests(dir);
    expect(Object.keys(before)).to.include.members(['node.db', 'audit.jsonl', 'audit.head']);
    const run = startNodeProcess({ ...env(), KMAAS_NODE_SECRET: randomBytes(32).toString('hex') });
    expect(await run.exit).to.equal(2);
    const fatal = run.lines.find((l) => l.code === 'ERR_WRONG_NODE_SECRET');
    expect(fatal?.msg).to.contain('different KMAAS_NODE_SECRET');
    expect(run.lines.some((l) => l.msg === 'listening')).to.equal(false);
    expect(folderDigests(dir), 'every file byte-identical, none added').to.deep.equal(before);
    // The right secret still starts it.
    const ok = startNodeProcess(env());
    await ok.waitFor('listening');
    ok.child.kill('SIGINT');
    expect(await ok.exit).to.equal(0);
  });

  it('a bad setting exits with code 1 and names it', async () => {
    const run = startNodeProcess({ ...env(), KMAAS_NODE_ID: '0' });
    expect(await run.exit).to.equal(1);
    const fatal = run.lines.find((l) => l.code === 'ERR_CONFIG');
    expect(fatal?.msg).to.contain('KMAAS_NODE_ID');
  });
});
