/**
 * `kmaas audit verify` as a child process, on a log written by nodes/audit-log.ts: a good log
 * is reported with its head, a tampered one names its first broken line and exits 1.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { AUDIT_FILE, AuditLog, type AuditEntry } from '../../nodes/audit-log.ts';

const KMAAS = fileURLToPath(new URL('../../cli/kmaas.mjs', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The real executable, with no KMAAS_* settings from this process. */
function kmaas(args: string[], cwd: string): Promise<Run> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith('KMAAS_')) env[k] = v;
  }
  env.HOME = cwd;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [KMAAS, ...args], { cwd, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('cli: kmaas audit verify', function () {
  this.timeout(60_000);
  let dir: string;
  let path: string;
  let lines: string[];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kmaas-cli-audit-'));
    const audit = await AuditLog.open(dir, { logger: pino({ level: 'silent' }), now: () => 0 });
    for (let i = 1; i <= 5; i++) {
      audit.append({ type: 'evaluate', tenant: 'acme', requestId: `r${i}`, outcome: 'ok' });
    }
    await audit.close();
    path = join(dir, AUDIT_FILE);
    lines = (await readFile(path, 'utf8')).trimEnd().split('\n');
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reports a good log with its entry count, last seq and head', async () => {
    const run = await kmaas(['audit', 'verify', AUDIT_FILE], dir);
    expect(run.code, run.stderr).to.equal(0);
    const head = (JSON.parse(lines.at(-1)!) as AuditEntry).hash;
    expect(run.stdout).to.equal(`audit log OK: 7 entries, last seq 7, head ${head}\n`);
  });

  it('warns that a cut end cannot be seen when the log has no signed head beside it', async () => {
    // This log was written without a signer, as a cut log whose head was deleted would look.
    await writeFile(path, lines.slice(0, -2).join('\n') + '\n');
    const run = await kmaas(['audit', 'verify', AUDIT_FILE], dir);
    expect(run.code, run.stderr).to.equal(0);
    expect(run.stdout).to.match(/^audit log OK: 5 entries, last seq 5/);
    expect(run.stderr).to.match(/no signed head .*cut from its end cannot be detected/);
  });

  it('with --json, prints the verification result', async () => {
    const run = await kmaas(['--json', 'audit', 'verify', path], dir);
    expect(run.code, run.stderr).to.equal(0);
    expect(JSON.parse(run.stdout)).to.include({ ok: true, entries: 7, lastSeq: 7 });
  });

  it('names the first broken line of a tampered log and exits 1', async () => {
    const edited = { ...(JSON.parse(lines[2]!) as AuditEntry), tenant: 'other' };
    await writeFile(path, lines.with(2, JSON.stringify(edited)).join('\n') + '\n');
    const run = await kmaas(['audit', 'verify', path], dir);
    expect(run.code).to.equal(1);
    expect(run.stdout).to.equal('');
    expect(run.stderr).to.match(
      /^error ERR_AUDIT_BROKEN: line 3 \(seq 3\): hash is [0-9a-f]{12}\.\.\. but the entry hashes to [0-9a-f]{12}\.\.\. \(edited\)\n$/,
    );
  });

  it('a missing file is a clear ERR_VALIDATION', async () => {
    const run = await kmaas(['audit', 'verify', 'nowhere.jsonl'], dir);
    expect(run.code).to.equal(1);
    expect(run.stderr).to.equal('error ERR_VALIDATION: audit log nowhere.jsonl not found\n');
  });
});
