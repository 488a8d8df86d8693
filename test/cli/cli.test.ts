import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FakeCoordinator, type FakeKey } from '../client/helpers/fake-coordinator.ts';
import { randomBytes } from '../client/helpers/streams.ts';

const KMAAS = fileURLToPath(new URL('../../cli/kmaas.mjs', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the real executable as a child process, with no KMAAS_* settings from this process. */
function kmaas(args: string[], opts: { cwd: string; env?: Record<string, string> }): Promise<Run> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith('KMAAS_')) env[k] = v;
  }
  env.HOME = join(opts.cwd, 'home');
  Object.assign(env, opts.env);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [KMAAS, ...args], { cwd: opts.cwd, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function expectOneError(run: Run, code: string): void {
  expect(run.code, run.stderr).to.equal(1);
  const lines = run.stderr.trimEnd().split('\n');
  expect(lines.at(-1)).to.match(new RegExp(`^error ${code}: \\S`));
  expect(run.stderr).to.not.match(/\n\s+at /);
}

describe('cli: kmaas as a child process against a fake coordinator', function () {
  this.timeout(60_000);
  let fake: FakeCoordinator;
  let key: FakeKey;
  let dir: string;
  let pinsFile: string;
  let common: string[];

  const pinAcme = () =>
    writeFile(pinsFile, JSON.stringify({ pins: { acme: { '1': key.keyPackage.groupKey } } }));
  const run = (...args: string[]) => kmaas([...common, ...args], { cwd: dir });

  beforeEach(async () => {
    fake = new FakeCoordinator();
    await fake.start();
    key = fake.addKey('acme', 1, 3);
    dir = await mkdtemp(join(tmpdir(), 'kmaas-cli-'));
    pinsFile = join(dir, 'pins.json');
    common = ['--url', fake.url, '--token', fake.clientToken, '--pins', pinsFile];
  });

  afterEach(async () => {
    await fake.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('encrypts a 3 MB file and decrypts it to identical bytes', async () => {
    await pinAcme();
    const plaintext = randomBytes(3_000_000);
    await writeFile(join(dir, 'report.bin'), plaintext);

    const enc = await run(
      '--json',
      'encrypt',
      'report.bin',
      '-o',
      'report.kmaas',
      '--tenant',
      'acme',
    );
    expect(enc.code, enc.stderr).to.equal(0);
    const sealed = JSON.parse(enc.stdout) as Record<string, unknown>;
    expect(sealed).to.include({ tenant: 'acme', keyVersion: 1, documentId: 'report.bin' });
    expect(sealed.nodes).to.have.length(3);

    const dec = await run('decrypt', 'report.kmaas', '-o', 'report.out');
    expect(dec.code, dec.stderr).to.equal(0);
    expect(dec.stderr).to.match(/tenant acme, key version 1, document report\.bin, nodes \d,\d,\d/);
    const back = await readFile(join(dir, 'report.out'));
    expect(back.equals(Buffer.from(plaintext))).to.equal(true);
    expect((await stat(join(dir, 'report.out'))).mode & 0o777).to.equal(0o600);
    expect((await readdir(dir)).sort()).to.deep.equal([
      'pins.json',
      'report.bin',
      'report.kmaas',
      'report.out',
    ]);
    // Nothing secret on any stream.
    for (const out of [enc.stdout, enc.stderr, dec.stdout, dec.stderr]) {
      expect(out).to.not.include(fake.clientToken);
    }
  });

  it('a tampered file: exit 1, one ERR_DECRYPT_FAILED line, and no output file left', async () => {
    await pinAcme();
    await writeFile(join(dir, 'doc.bin'), randomBytes(3_000_000));
    const enc = await run(
      'encrypt',
      'doc.bin',
      '-o',
      'doc.kmaas',
      '--tenant',
      'acme',
      '--doc',
      'd-1',
    );
    expect(enc.code, enc.stderr).to.equal(0);
    const sealed = await readFile(join(dir, 'doc.kmaas'));
    sealed[1_500_000]! ^= 0x01;
    await writeFile(join(dir, 'doc.kmaas'), sealed);

    const dec = await run('decrypt', 'doc.kmaas', '-o', 'doc.out');
    expectOneError(dec, 'ERR_DECRYPT_FAILED');
    expect((await readdir(dir)).sort()).to.deep.equal(['doc.bin', 'doc.kmaas', 'pins.json']);
  });

  it('no pin: ERR_KEY_NOT_PINNED; --trust-on-first-use pins the key and says so', async () => {
    await writeFile(join(dir, 'a.txt'), 'hello');
    const refused = await run('encrypt', 'a.txt', '-o', 'a.kmaas', '--tenant', 'acme');
    expectOneError(refused, 'ERR_KEY_NOT_PINNED');
    expect((await readdir(dir)).sort()).to.deep.equal(['a.txt']);

    const tofu = await run(
      '--trust-on-first-use',
      'encrypt',
      'a.txt',
      '-o',
      'a.kmaas',
      '--tenant',
      'acme',
    );
    expect(tofu.code, tofu.stderr).to.equal(0);
    expect(tofu.stderr).to.include(
      `pinned group key of acme version 1 on first use: ${key.keyPackage.groupKey}`,
    );
    const pins = JSON.parse(await readFile(pinsFile, 'utf8')) as unknown;
    expect(pins).to.deep.equal({ pins: { acme: { '1': key.keyPackage.groupKey } } });
    expect((await stat(pinsFile)).mode & 0o777).to.equal(0o600);
  });

  it('a pin that does not match the served key: ERR_PINNED_KEY_MISMATCH', async () => {
    const other = fake.addKey('other', 1, 3);
    await writeFile(
      pinsFile,
      JSON.stringify({ pins: { acme: { '1': other.keyPackage.groupKey } } }),
    );
    await writeFile(join(dir, 'a.txt'), 'hello');
    expectOneError(
      await run('encrypt', 'a.txt', '-o', 'a.kmaas', '--tenant', 'acme'),
      'ERR_PINNED_KEY_MISMATCH',
    );
  });

  it('tenant create follows the job with progress on stderr and pins the group key', async () => {
    const r = await kmaas(
      [
        '--url',
        fake.url,
        '--admin-token',
        fake.adminToken,
        '--pins',
        pinsFile,
        '--json',
        'tenant',
        'create',
        'beta',
        '--threshold',
        '2',
      ],
      { cwd: dir },
    );
    expect(r.code, r.stderr).to.equal(0);
    const beta = fake.keys.get('beta/1')!;
    expect(beta.threshold).to.equal(2);
    expect(r.stderr).to.match(/job 1: active dkg\.round1 1\/3/);
    expect(r.stderr).to.match(/job 1: completed/);
    expect(JSON.parse(r.stdout)).to.include({
      tenant: 'beta',
      version: 1,
      groupKey: beta.keyPackage.groupKey,
    });
    expect(JSON.parse(await readFile(pinsFile, 'utf8'))).to.deep.equal({
      pins: { beta: { '1': beta.keyPackage.groupKey } },
    });
    expect(r.stdout + r.stderr).to.not.include(fake.adminToken);
  });

  it('tenant create refuses to pin when the job and the served package disagree', async () => {
    const stranger = fake.addKey('stranger', 1, 3);
    fake.jobScript = () => [{ state: 'completed', result: { keyPackage: stranger.keyPackage } }];
    const r = await kmaas(
      [
        '--url',
        fake.url,
        '--admin-token',
        fake.adminToken,
        '--pins',
        pinsFile,
        'tenant',
        'create',
        'beta',
      ],
      { cwd: dir },
    );
    expectOneError(r, 'ERR_PINNED_KEY_MISMATCH');
    expect(await readdir(dir)).to.not.include('pins.json');
  });

  it('tenant create --no-wait prints the job id and pins nothing; tenant pin pins later', async () => {
    const env = { KMAAS_URL: fake.url, KMAAS_ADMIN_TOKEN: fake.adminToken, KMAAS_PINS: pinsFile };
    const r = await kmaas(['tenant', 'create', 'beta', '--no-wait'], { cwd: dir, env });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal('1');
    expect(await readdir(dir)).to.not.include('pins.json');
    const p = await kmaas(['tenant', 'pin', 'beta'], { cwd: dir, env });
    expect(p.code, p.stderr).to.equal(0);
    expect(p.stdout).to.include(fake.keys.get('beta/1')!.keyPackage.groupKey);
  });

  it('reads url, tokens and pins from ./data/cluster/cluster.json, or from --cluster', async () => {
    const clusterDir = join(dir, 'data', 'cluster');
    await mkdir(clusterDir, { recursive: true });
    const cluster = {
      url: fake.url,
      token: fake.clientToken,
      adminToken: fake.adminToken,
      pins: join(clusterDir, 'pins.json'),
    };
    await writeFile(join(clusterDir, 'cluster.json'), JSON.stringify(cluster));
    await writeFile(join(dir, 'a.txt'), 'hello');

    const create = await kmaas(['tenant', 'create', 'beta'], { cwd: dir });
    expect(create.code, create.stderr).to.equal(0);
    const enc = await kmaas(['encrypt', 'a.txt', '-o', 'a.kmaas', '--tenant', 'beta'], {
      cwd: dir,
    });
    expect(enc.code, enc.stderr).to.equal(0);

    const elsewhere = join(dir, 'home');
    await mkdir(elsewhere, { recursive: true });
    const dec = await kmaas(
      [
        '--cluster',
        join(clusterDir, 'cluster.json'),
        'decrypt',
        join(dir, 'a.kmaas'),
        '-o',
        'a.out',
      ],
      {
        cwd: elsewhere,
      },
    );
    expect(dec.code, dec.stderr).to.equal(0);
    expect(await readFile(join(elsewhere, 'a.out'), 'utf8')).to.equal('hello');

    const status = await kmaas(['status', '--json'], { cwd: dir });
    expect(status.code, status.stderr).to.equal(0);
    expect((JSON.parse(status.stdout) as { nodes: unknown[] }).nodes).to.have.length(5);
  });

  it('errors are one coded line, never a stack trace, never a token', async () => {
    await pinAcme();
    await writeFile(join(dir, 'a.txt'), 'hello');
    const wrong = await kmaas(
      [
        '--url',
        fake.url,
        '--token',
        'not-the-token-xyz',
        '--pins',
        pinsFile,
        'encrypt',
        'a.txt',
        '-o',
        'a.kmaas',
        '--tenant',
        'acme',
      ],
      { cwd: dir },
    );
    expectOneError(wrong, 'ERR_UNAUTHORIZED');
    expect(wrong.stdout + wrong.stderr).to.not.include('not-the-token-xyz');

    expectOneError(
      await run('encrypt', 'missing.txt', '-o', 'x', '--tenant', 'acme'),
      'ERR_VALIDATION',
    );
    expectOneError(
      await run('encrypt', 'a.txt', '-o', 'no/such/dir/x', '--tenant', 'acme'),
      'ERR_VALIDATION',
    );
    expectOneError(await run('decrypt', 'a.txt', '-o', 'x'), 'ERR_ENVELOPE_FORMAT');
    expectOneError(await run('tenant', 'create', 'beta'), 'ERR_CONFIG');
    expectOneError(await run('encrypt', 'a.txt', '--tenant', 'acme'), 'ERR_VALIDATION');
    expectOneError(await kmaas(['status'], { cwd: dir }), 'ERR_CONFIG');
    await fake.close();
    expectOneError(await run('status'), 'ERR_NODE_UNAVAILABLE');
    expect((await readdir(dir)).sort()).to.deep.equal(['a.txt', 'pins.json']);
  });
});
