/**
 * The real `kmaas` executable against a fake coordinator (test/client/helpers) that checks every
 * evaluation's access token and DPoP proof as a node does, with the real development identity
 * provider (idp/main.ts) as a process: the CLI signs in with devLogin as it does for a user.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { calculateJwkThumbprint, decodeProtectedHeader, type JWK } from 'jose';
import { ROOT, ServiceProcess } from '../../scripts/lib/child.ts';
import { FakeCoordinator, type FakeKey } from '../client/helpers/fake-coordinator.ts';
import { randomBytes } from '../client/helpers/streams.ts';
import { OPERATOR_SET, writeOperatorKeys } from '../helpers/operators.ts';

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

/** The identity provider's users: alice of the fake's tenant acme, bob of a tenant created here. */
const ALICE = {
  username: 'alice',
  password: 'alice-pw-' + Math.random().toString(36).slice(2),
  tenant: 'acme',
};
const BOB = {
  username: 'bob',
  password: 'bob-pw-' + Math.random().toString(36).slice(2),
  tenant: 'beta',
};

/** The thumbprint of the DPoP key that signed a proof. */
function proofKey(proof: string): Promise<string> {
  return calculateJwkThumbprint(decodeProtectedHeader(proof).jwk as JWK);
}

describe('cli: kmaas as a child process against a fake coordinator', function () {
  this.timeout(60_000);
  let idpDir: string;
  let idp: ServiceProcess;
  let issuer: string;
  let fake: FakeCoordinator;
  let key: FakeKey;
  let dir: string;
  let pinsFile: string;
  let common: string[];
  /** The test operators' key files, and the flags that sign with the first two (a quorum). */
  let keyFiles: string[];
  let keysDir: string;
  const signFlags = () => ['--operator-key', keyFiles[0]!, '--operator-key', keyFiles[1]!];

  const pinAcme = () =>
    writeFile(pinsFile, JSON.stringify({ pins: { acme: { '1': key.keyPackage.groupKey } } }));
  const run = (...args: string[]) =>
    kmaas([...common, ...args], { cwd: dir, env: { KMAAS_PASSWORD: ALICE.password } });

  before(async () => {
    idpDir = await mkdtemp(join(tmpdir(), 'kmaas-cli-idp-'));
    await writeFile(join(idpDir, 'users.json'), JSON.stringify([ALICE, BOB]), { mode: 0o600 });
    idp = new ServiceProcess({
      name: 'idp',
      entry: join(ROOT, 'idp', 'main.ts'),
      logFile: join(idpDir, 'idp.log'),
      env: {
        KMAAS_IDP_PORT: '0',
        KMAAS_IDP_USERS_FILE: join(idpDir, 'users.json'),
        LOG_LEVEL: 'info',
      },
    });
    issuer = `http://127.0.0.1:${await idp.start()}`;
  });

  after(async () => {
    await idp?.stop();
    if (idpDir) await rm(idpDir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    fake = new FakeCoordinator({
      oidc: {
        issuer,
        audience: 'urn:kmaas:api',
        tenantClaim: 'tenant',
        clockSkewSeconds: 30,
        dpopMaxAgeSeconds: 60,
      },
    });
    await fake.start();
    key = fake.addKey('acme', 1, 3);
    dir = await mkdtemp(join(tmpdir(), 'kmaas-cli-'));
    pinsFile = join(dir, 'pins.json');
    common = ['--url', fake.url, '--issuer', issuer, '--user', 'alice', '--pins', pinsFile];
    keysDir = await mkdtemp(join(tmpdir(), 'kmaas-cli-keys-'));
    keyFiles = await writeOperatorKeys(keysDir);
  });

  afterEach(async () => {
    await fake.close();
    await rm(dir, { recursive: true, force: true });
    await rm(keysDir, { recursive: true, force: true });
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
      expect(out).to.not.include(ALICE.password);
    }
    // Each run signed in afresh, with a DPoP key of its own.
    expect(fake.proofs).to.have.length(2);
    const [first, second] = await Promise.all(fake.proofs.map(proofKey));
    expect(first).to.not.equal(second);
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
    // The "tenant ..., key version ..." line comes only after a decryption that succeeded.
    expect(dec.stderr).to.not.include('key version');
    expect(dec.stderr.trimEnd().split('\n')).to.have.length(1);
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
        ...signFlags(),
      ],
      { cwd: dir },
    );
    expect(r.code, r.stderr).to.equal(0);
    const beta = fake.keys.get('beta/1')!;
    expect(beta.threshold).to.equal(2);
    const [signed, ...rest] = r.stderr.trimEnd().split('\n');
    expect(signed).to.match(/^proposal [0-9a-f]{64} signed by operator-1, operator-2$/);
    expect(rest).to.deep.equal([
      'job 1: tenant.create of beta version 1',
      'queued: waiting for the coordinator to start the key generation',
      'DKG round 1/3: waiting for 5 nodes',
      'DKG round 2/3: 3 of 5 nodes',
      'DKG round 3/3: 5 of 5 nodes',
      'storing the key package',
      'done',
      `pinned group key of beta version 1: ${beta.keyPackage.groupKey}`,
    ]);
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

  it('proposal create, sign by each operator, show, then submit follows the job', async () => {
    const opsFile = join(keysDir, 'operators.json');
    await writeFile(opsFile, JSON.stringify(OPERATOR_SET));
    const base = ['--url', fake.url, '--admin-token', fake.adminToken, '--pins', pinsFile];
    const create = await kmaas(
      [
        ...base,
        'proposal',
        'create',
        '--operation',
        'tenant.create',
        '--tenant',
        'beta',
        '--out',
        'p.json',
      ],
      { cwd: dir },
    );
    expect(create.code, create.stderr).to.equal(0);
    expect(create.stderr).to.include('operation  tenant.create');
    expect(create.stderr).to.include('signed by  (nobody yet)');
    const written = JSON.parse(await readFile(join(dir, 'p.json'), 'utf8')) as {
      cluster: string;
      threshold: number;
      committee: { node: number }[];
      signatures: unknown[];
    };
    expect(written.committee.map((m) => m.node)).to.deep.equal([1, 2, 3, 4, 5]);
    expect(written.threshold).to.equal(3);
    expect(written.signatures).to.deep.equal([]);
    expectOneError(
      await kmaas(
        [
          ...base,
          'proposal',
          'create',
          '--operation',
          'tenant.create',
          '--tenant',
          'beta',
          '--out',
          'p.json',
        ],
        { cwd: dir },
      ),
      'ERR_VALIDATION',
    );

    const show = (...more: string[]) =>
      kmaas(['--json', 'proposal', 'show', 'p.json', '--operators', opsFile, ...more], {
        cwd: dir,
      });
    const verdict = async () =>
      JSON.parse((await show()).stdout) as { valid: string[]; quorumReached: boolean };
    expect(await verdict()).to.include({ quorumReached: false });

    const sign = (i: number) =>
      kmaas(['proposal', 'sign', 'p.json', '--key', keyFiles[i]!], { cwd: dir });
    expect((await sign(0)).code).to.equal(0);
    // The same operator twice still counts once.
    expect((await sign(0)).code).to.equal(0);
    expect(await verdict()).to.deep.include({ valid: ['operator-1'], quorumReached: false });
    const human = await kmaas(['proposal', 'show', 'p.json', '--operators', opsFile], { cwd: dir });
    expect(human.stdout).to.include('(1 of 2 required)');
    expect(human.stdout).to.include('ERR_PROPOSAL_QUORUM');
    const signed = await sign(1);
    expect(signed.code, signed.stderr).to.equal(0);
    expect(signed.stdout + signed.stderr).to.not.include(
      (JSON.parse(await readFile(keyFiles[1]!, 'utf8')) as { secretKey: string }).secretKey,
    );
    expect(await verdict()).to.deep.include({
      valid: ['operator-1', 'operator-2'],
      quorumReached: true,
    });

    const submit = await kmaas([...base, 'proposal', 'submit', 'p.json'], { cwd: dir });
    expect(submit.code, submit.stderr).to.equal(0);
    const beta = fake.keys.get('beta/1')!;
    expect(submit.stdout).to.include(`tenant beta version 1 group key ${beta.keyPackage.groupKey}`);
    expect(fake.requests).to.include('POST /v1/proposals');
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
        ...signFlags(),
      ],
      { cwd: dir },
    );
    expectOneError(r, 'ERR_PINNED_KEY_MISMATCH');
    expect(await readdir(dir)).to.not.include('pins.json');
  });

  it('tenant create --no-wait prints the job id and pins nothing; tenant pin pins later', async () => {
    const env = { KMAAS_URL: fake.url, KMAAS_ADMIN_TOKEN: fake.adminToken, KMAAS_PINS: pinsFile };
    const r = await kmaas(['tenant', 'create', 'beta', '--no-wait', ...signFlags()], {
      cwd: dir,
      env,
    });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal('1');
    expect(await readdir(dir)).to.not.include('pins.json');
    const p = await kmaas(['tenant', 'pin', 'beta'], { cwd: dir, env });
    expect(p.code, p.stderr).to.equal(0);
    expect(p.stdout).to.include(fake.keys.get('beta/1')!.keyPackage.groupKey);
  });

  it('reads url, tokens, pins, issuer and dev users from ./data/cluster/cluster.json, or from --cluster', async () => {
    const clusterDir = join(dir, 'data', 'cluster');
    await mkdir(clusterDir, { recursive: true });
    // As `npm run cluster` writes it: the issuer and its dev users, with their passwords.
    const cluster = {
      url: fake.url,
      issuer,
      devUsers: [ALICE, BOB],
      adminToken: fake.adminToken,
      pins: join(clusterDir, 'pins.json'),
      operatorKeys: keyFiles,
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
    // Both signed in as bob, the cluster file's dev user of tenant beta, each with a new key.
    const keys = await Promise.all(fake.proofs.map(proofKey));
    expect(keys).to.have.length(2);
    expect(keys[0]).to.not.equal(keys[1]);

    const status = await kmaas(['status', '--json'], { cwd: dir });
    expect(status.code, status.stderr).to.equal(0);
    expect((JSON.parse(status.stdout) as { nodes: unknown[] }).nodes).to.have.length(5);
  });

  it('errors are one coded line, never a stack trace, never a password', async () => {
    await pinAcme();
    await writeFile(join(dir, 'a.txt'), 'hello');
    const encryptArgs = ['encrypt', 'a.txt', '-o', 'a.kmaas', '--tenant', 'acme'];
    const wrong = await kmaas([...common, ...encryptArgs], {
      cwd: dir,
      env: { KMAAS_PASSWORD: 'not-the-password-xyz' },
    });
    expectOneError(wrong, 'ERR_LOGIN_FAILED');
    expect(wrong.stdout + wrong.stderr).to.not.include('not-the-password-xyz');
    expect(wrong.stderr).to.include(
      `the identity provider at ${issuer} refused the login of alice`,
    );
    // A user of another tenant: refused before any evaluation (every node would refuse it).
    const bob = await kmaas([...common, '--user', 'bob', ...encryptArgs], {
      cwd: dir,
      env: { KMAAS_PASSWORD: BOB.password },
    });
    expectOneError(bob, 'ERR_TOKEN_TENANT');
    expect(bob.stderr).to.include('user bob signs in for tenant beta, not acme');
    // A password is never a command-line value.
    const flag = await kmaas([...common, '--password', ALICE.password, ...encryptArgs], {
      cwd: dir,
    });
    expectOneError(flag, 'ERR_VALIDATION');
    expect(flag.stderr).to.not.include(ALICE.password);
    expect(fake.requests.filter((r) => r.endsWith('/evaluate'))).to.deep.equal([]);

    const missing = await run('encrypt', 'missing.txt', '-o', 'x', '--tenant', 'acme');
    expectOneError(missing, 'ERR_VALIDATION');
    expect(missing.stderr).to.equal('error ERR_VALIDATION: input file not found: missing.txt\n');
    const noFolder = await run('encrypt', 'a.txt', '-o', 'no/such/dir/x', '--tenant', 'acme');
    expectOneError(noFolder, 'ERR_VALIDATION');
    expect(noFolder.stderr).to.include('output folder not found: no/such/dir');
    expectOneError(await run('decrypt', 'a.txt', '-o', 'x'), 'ERR_ENVELOPE_FORMAT');
    expectOneError(await run('tenant', 'create', 'beta'), 'ERR_CONFIG');
    expectOneError(await run('encrypt', 'a.txt', '--tenant', 'acme'), 'ERR_VALIDATION');
    expectOneError(await kmaas(['status'], { cwd: dir }), 'ERR_CONFIG');
    await fake.close();
    expectOneError(await run('status'), 'ERR_NODE_UNAVAILABLE');
    expect((await readdir(dir)).sort()).to.deep.equal(['a.txt', 'pins.json']);
  });

  describe('messages a new user can act on', () => {
    /** The message of the one error line, without its `error CODE: ` prefix. */
    const message = (r: Run) =>
      r.stderr
        .trimEnd()
        .split('\n')
        .at(-1)!
        .replace(/^error \S+: /, '');

    it('no URL and no cluster file: says that `npm run cluster` writes ./data/cluster/cluster.json', async () => {
      const r = await kmaas(['status'], { cwd: dir });
      expectOneError(r, 'ERR_CONFIG');
      const m = message(r);
      expect(m).to.include('no coordinator URL: pass --url, set KMAAS_URL, or give a cluster file');
      expect(m).to.include(`There is no ./data/cluster/cluster.json in this folder (${dir})`);
      expect(m).to.include('`npm run cluster` writes it once the cluster is up');
      expect(m).to.include('start the cluster or wait for it');
    });

    it('an unreachable coordinator named by the cluster file: the file may be stale', async () => {
      const clusterDir = join(dir, 'data', 'cluster');
      await mkdir(clusterDir, { recursive: true });
      const clusterFile = join(clusterDir, 'cluster.json');
      await writeFile(clusterFile, JSON.stringify({ url: fake.url, adminToken: fake.adminToken }));
      await fake.close();

      const stale = await kmaas(['status'], { cwd: dir });
      expectOneError(stale, 'ERR_NODE_UNAVAILABLE');
      const m = message(stale);
      expect(m).to.include(`coordinator ${fake.url} unreachable`);
      expect(m).to.include(
        `Its URL comes from the cluster file ${clusterFile}, which may be stale`,
      );
      expect(m).to.include('the cluster is not running, or was restarted');
      expect(m).to.include('the file is rewritten at each start');

      // A URL the user gave says nothing of cluster files.
      const given = await kmaas(['--url', fake.url, 'status'], { cwd: dir });
      expectOneError(given, 'ERR_NODE_UNAVAILABLE');
      expect(message(given)).to.equal(`coordinator ${fake.url} unreachable`);
    });

    it('ERR_KEY_NOT_PINNED names tenant pin, --trust-on-first-use and --pins', async () => {
      await writeFile(join(dir, 'a.txt'), 'hello');
      const r = await run('encrypt', 'a.txt', '-o', 'a.kmaas', '--tenant', 'acme');
      expectOneError(r, 'ERR_KEY_NOT_PINNED');
      const m = message(r);
      expect(m).to.include(`no pinned group key for acme version 1 in ${pinsFile}`);
      expect(m).to.include('`kmaas tenant pin acme --key-version 1`');
      expect(m).to.include('--trust-on-first-use');
      expect(m).to.include('--pins <file>');
      expect(m).to.include(
        `a local cluster's pins are in the file named by "pins" in its cluster file`,
      );

      // With a cluster file whose pins are not the ones in use, it names them.
      const clusterDir = join(dir, 'data', 'cluster');
      await mkdir(clusterDir, { recursive: true });
      await writeFile(join(clusterDir, 'cluster.json'), JSON.stringify({ pins: 'pins.json' }));
      const other = await run('encrypt', 'a.txt', '-o', 'a.kmaas', '--tenant', 'acme');
      expectOneError(other, 'ERR_KEY_NOT_PINNED');
      expect(message(other)).to.include(
        `the cluster file ${join(clusterDir, 'cluster.json')} names ${join(clusterDir, 'pins.json')}`,
      );
    });

    it('status lists each tenant with its key versions and thresholds, or says there are none', async () => {
      fake.addKey('acme', 2, 4);
      fake.addKey('beta', 1, 3);
      const r = await run('status');
      expect(r.code, r.stderr).to.equal(0);
      const lines = r.stdout.trimEnd().split('\n');
      expect(lines.filter((l) => l.startsWith('node '))).to.have.length(5);
      expect(lines[0]).to.equal('cluster test-cluster');
      expect(lines[1]).to.equal('node 1  up  epoch -  ws://node-1');
      expect(lines.filter((l) => l.startsWith('tenant '))).to.deep.equal([
        'tenant acme  key versions 1 (threshold 3), 2 (threshold 4)',
        'tenant beta  key version 1 (threshold 3)',
      ]);
      const json = JSON.parse((await run('--json', 'status')).stdout) as { tenants: unknown };
      expect(json.tenants).to.deep.equal([
        {
          tenant: 'acme',
          versions: [
            { version: 1, threshold: 3, groupKey: key.keyPackage.groupKey },
            { version: 2, threshold: 4, groupKey: fake.keys.get('acme/2')!.keyPackage.groupKey },
          ],
        },
        {
          tenant: 'beta',
          versions: [
            { version: 1, threshold: 3, groupKey: fake.keys.get('beta/1')!.keyPackage.groupKey },
          ],
        },
      ]);

      fake.keys.clear();
      const empty = await run('status');
      expect(empty.code, empty.stderr).to.equal(0);
      expect(empty.stdout.trimEnd().split('\n').at(-1)).to.equal(
        'no tenants yet: create one with `kmaas tenant create <tenant>`',
      );
    });

    it('encrypt -o and decrypt -o refuse an existing file unless --force', async () => {
      await pinAcme();
      await writeFile(join(dir, 'a.txt'), 'hello');
      await writeFile(join(dir, 'a.kmaas'), 'precious');
      const enc = await run('encrypt', 'a.txt', '-o', 'a.kmaas', '--tenant', 'acme');
      expectOneError(enc, 'ERR_VALIDATION');
      expect(message(enc)).to.equal(
        'output file a.kmaas already exists: pass --force to overwrite it',
      );
      expect(await readFile(join(dir, 'a.kmaas'), 'utf8')).to.equal('precious');
      // Refused before any key was derived.
      expect(fake.requests.filter((r) => r.endsWith('/evaluate'))).to.deep.equal([]);

      const forced = await run('encrypt', 'a.txt', '-o', 'a.kmaas', '--tenant', 'acme', '--force');
      expect(forced.code, forced.stderr).to.equal(0);
      expect(await readFile(join(dir, 'a.kmaas'), 'utf8')).to.not.equal('precious');

      await writeFile(join(dir, 'a.out'), 'precious');
      const dec = await run('decrypt', 'a.kmaas', '-o', 'a.out');
      expectOneError(dec, 'ERR_VALIDATION');
      expect(message(dec)).to.equal(
        'output file a.out already exists: pass --force to overwrite it',
      );
      expect(dec.stderr).to.not.include('key version');
      expect(await readFile(join(dir, 'a.out'), 'utf8')).to.equal('precious');

      const decForced = await run('decrypt', 'a.kmaas', '-o', 'a.out', '--force');
      expect(decForced.code, decForced.stderr).to.equal(0);
      expect(decForced.stderr).to.match(/^tenant acme, key version 1, document a\.txt, nodes /);
      expect(await readFile(join(dir, 'a.out'), 'utf8')).to.equal('hello');
      expect((await readdir(dir)).sort()).to.deep.equal(['a.kmaas', 'a.out', 'a.txt', 'pins.json']);
    });

    it('a missing or unreadable input: input file not found, or not readable', async () => {
      await pinAcme();
      const dec = await run('decrypt', 'nope.kmaas', '-o', 'x');
      expectOneError(dec, 'ERR_VALIDATION');
      expect(message(dec)).to.equal('input file not found: nope.kmaas');
      await mkdir(join(dir, 'folder'));
      const folder = await run('encrypt', 'folder', '-o', 'x', '--tenant', 'acme');
      expectOneError(folder, 'ERR_VALIDATION');
      expect(message(folder)).to.equal('input folder is a folder, not a file');
      expect(fake.requests).to.deep.equal([]);
    });

    it('a missing admin token names --admin-token, KMAAS_ADMIN_TOKEN and the cluster file', async () => {
      const r = await kmaas(['--url', fake.url, 'tenant', 'create', 'beta'], { cwd: dir });
      expectOneError(r, 'ERR_CONFIG');
      expect(message(r)).to.equal(
        'an admin token is required to create a tenant: pass --admin-token <token>, set ' +
          'KMAAS_ADMIN_TOKEN, or give a cluster file that has one with --cluster (default ' +
          './data/cluster/cluster.json in the current folder)',
      );
      expect(fake.requests).to.deep.equal([]);
    });

    it('nothing to sign in with names --issuer, --user, KMAAS_PASSWORD and --password-file', async () => {
      await pinAcme();
      await writeFile(join(dir, 'a.txt'), 'hello');
      const base = ['--url', fake.url, '--pins', pinsFile];
      const encrypt = ['encrypt', 'a.txt', '-o', 'a.kmaas', '--tenant', 'acme'];
      const noIssuer = await kmaas([...base, ...encrypt], { cwd: dir });
      expectOneError(noIssuer, 'ERR_CONFIG');
      expect(message(noIssuer)).to.include(
        'to derive the document key you sign in at an identity provider, and none is known: ' +
          'pass --issuer <url> or set KMAAS_OIDC_ISSUER',
      );
      const noUser = await kmaas([...base, '--issuer', issuer, ...encrypt], { cwd: dir });
      expectOneError(noUser, 'ERR_CONFIG');
      expect(message(noUser)).to.include(
        'a user of tenant acme signs in: pass --user <name> or set KMAAS_USER, with the ' +
          'password in KMAAS_PASSWORD or a file named by --password-file',
      );
      const noPassword = await kmaas([...base, '--issuer', issuer, ...encrypt], {
        cwd: dir,
        env: { KMAAS_USER: 'alice' },
      });
      expectOneError(noPassword, 'ERR_CONFIG');
      expect(message(noPassword)).to.include(
        'no password to sign in as alice: set KMAAS_PASSWORD or pass --password-file <file>',
      );
      expect(fake.requests).to.deep.equal([]);

      // A password file (as KMAAS_PASSWORD_FILE here) signs in.
      await writeFile(join(dir, 'pw'), ALICE.password + '\n', { mode: 0o600 });
      const withFile = await kmaas([...base, '--issuer', issuer, ...encrypt], {
        cwd: dir,
        env: { KMAAS_USER: 'alice', KMAAS_PASSWORD_FILE: join(dir, 'pw') },
      });
      expect(withFile.code, withFile.stderr).to.equal(0);
    });

    it('an identity provider named by the cluster file that does not answer: the file may be stale', async () => {
      const clusterDir = join(dir, 'data', 'cluster');
      await mkdir(clusterDir, { recursive: true });
      await pinAcme();
      await writeFile(
        join(clusterDir, 'cluster.json'),
        JSON.stringify({ url: fake.url, issuer: 'http://127.0.0.1:1', devUsers: [ALICE] }),
      );
      await writeFile(join(dir, 'a.txt'), 'hello');
      const r = await kmaas(
        ['--pins', pinsFile, 'encrypt', 'a.txt', '-o', 'a.kmaas', '--tenant', 'acme'],
        { cwd: dir },
      );
      expectOneError(r, 'ERR_IDP_UNAVAILABLE');
      expect(message(r)).to.include(
        `The issuer comes from the cluster file ${join(clusterDir, 'cluster.json')}, which may be stale`,
      );
    });

    it('--help and every command help name the environment variables and the defaults', async () => {
      const vars = [
        'KMAAS_URL',
        'KMAAS_USER',
        'KMAAS_PASSWORD',
        'KMAAS_OIDC_ISSUER',
        'KMAAS_ADMIN_TOKEN',
        'KMAAS_PINS',
        'KMAAS_CLUSTER',
      ];
      const top = await kmaas(['--help'], { cwd: dir });
      expect(top.code, top.stderr).to.equal(0);
      for (const v of vars) expect(top.stdout).to.include(v);
      for (const d of [
        '--doc          the input file name',
        '--key-version  the latest key version',
        "--threshold    the committee's, else a majority of the nodes",
        '~/.kmaas/pins.json',
        './data/cluster/cluster.json in the current folder',
      ]) {
        expect(top.stdout).to.include(d);
      }
      for (const line of top.stdout.split('\n')) expect(line.length, line).to.be.at.most(80);

      const commands = [
        ['status'],
        ['tenant'],
        ['tenant', 'create'],
        ['tenant', 'pin'],
        ['tenant', 'show'],
        ['encrypt'],
        ['decrypt'],
        ['tenant', 'rotate'],
        ['tenant', 'retire'],
        ['committee', 'add'],
        ['committee', 'repair'],
      ];
      const helps = await Promise.all(commands.map((c) => kmaas([...c, '--help'], { cwd: dir })));
      for (const [i, h] of helps.entries()) {
        expect(h.code, `${commands[i]!.join(' ')}: ${h.stderr}`).to.equal(0);
        for (const v of vars) expect(h.stdout, commands[i]!.join(' ')).to.include(v);
        expect(h.stdout).to.include('./data/cluster/cluster.json');
      }
      const [, , create, pin, , encrypt, decrypt] = helps.map((h) => h.stdout.replace(/\s+/g, ' '));
      expect(create).to.include("(default: the committee's, else a majority of the nodes)");
      expect(pin).to.include('key version (default: the latest)');
      expect(encrypt).to.include('document id (default: the input file name)');
      expect(encrypt).to.include('key version (default: the latest)');
      expect(encrypt).to.include('--force');
      expect(decrypt).to.include('--force');
    });
  });
});
