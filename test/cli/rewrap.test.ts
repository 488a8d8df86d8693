/**
 * `kmaas rewrap` (cli/rewrap.ts) as a child process against the fake coordinator with key
 * versions 1 and 2 of tenant acme, and the real development identity provider (idp/main.ts) to
 * sign in at. The envelopes are made with the SDK as alice; what the CLI writes is opened with the
 * SDK again.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KmaasClient, MemoryPinStore, readHeader } from '../../client/index.ts';
import { devLogin } from '../../idp/dev-login.ts';
import { ROOT, ServiceProcess } from '../../scripts/lib/child.ts';
import { FakeCoordinator } from '../client/helpers/fake-coordinator.ts';
import { collect, pieces, randomBytes } from '../client/helpers/streams.ts';

const KMAAS = fileURLToPath(new URL('../../cli/kmaas.mjs', import.meta.url));
const ALICE = {
  username: 'alice',
  password: 'alice-pw-' + Math.random().toString(36).slice(2),
  tenant: 'acme',
};

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Every file under `dir`, relative, sorted. */
async function tree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

describe('cli: kmaas rewrap', function () {
  this.timeout(90_000);
  let idpDir: string;
  let idp: ServiceProcess;
  let issuer: string;
  let fake: FakeCoordinator;
  let dir: string;
  let sdk: KmaasClient;

  /** The real executable, signed in as alice, with no KMAAS_* settings of this process. */
  function kmaas(args: string[], onSpawn?: (kill: () => void) => void): Promise<Run> {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (v !== undefined && !k.startsWith('KMAAS_')) env[k] = v;
    }
    env.HOME = join(dir, 'home');
    env.KMAAS_PASSWORD = ALICE.password;
    const common = ['--url', fake.url, '--issuer', issuer, '--user', 'alice'];
    const pins = ['--pins', join(dir, 'pins.json')];
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [KMAAS, ...common, ...pins, ...args], {
        cwd: dir,
        env,
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
      onSpawn?.(() => child.kill('SIGKILL'));
    });
  }

  async function seal(file: string, plaintext: Uint8Array, documentId: string, keyVersion = 1) {
    const sealed = await sdk.encrypt(pieces(plaintext), {
      tenant: 'acme',
      documentId,
      keyVersion,
    });
    await mkdir(join(file, '..'), { recursive: true });
    await writeFile(file, await collect(sealed));
  }

  async function open(file: string): Promise<{ keyVersion: number; plaintext: Uint8Array }> {
    const opened = await sdk.decrypt(pieces(await readFile(file), [65536]));
    return { keyVersion: opened.keyVersion, plaintext: await collect(opened) };
  }

  before(async () => {
    idpDir = await mkdtemp(join(tmpdir(), 'kmaas-rewrap-idp-'));
    await writeFile(join(idpDir, 'users.json'), JSON.stringify([ALICE]), { mode: 0o600 });
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
    const v1 = fake.addKey('acme', 1, 3);
    const v2 = fake.addKey('acme', 2, 2);
    dir = await mkdtemp(join(tmpdir(), 'kmaas-rewrap-'));
    const pins = { acme: { '1': v1.keyPackage.groupKey, '2': v2.keyPackage.groupKey } };
    await writeFile(join(dir, 'pins.json'), JSON.stringify({ pins }));
    const login = await devLogin({ issuer, ...ALICE });
    sdk = new KmaasClient({
      baseUrl: fake.url,
      auth: { accessToken: login.accessToken, dpopKey: login.dpopKey },
      pins: new MemoryPinStore([
        { tenant: 'acme', version: 1, groupKey: v1.keyPackage.groupKey },
        { tenant: 'acme', version: 2, groupKey: v2.keyPackage.groupKey },
      ]),
    });
  });

  afterEach(async () => {
    await fake.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a folder: --out, then in place; batched keys, summary, progress, exit status, a tampered envelope and other files untouched', async () => {
    const docs = join(dir, 'docs');
    const plain = { a: randomBytes(3000), b: randomBytes(70_000), c: randomBytes(10) };
    await seal(join(docs, 'a.kmaas'), plain.a, 'a');
    await seal(join(docs, 'sub', 'deeper', 'b.kmaas'), plain.b, 'b');
    await seal(join(docs, 'sub', 'c.kmaas'), plain.c, 'c', 2);
    await seal(join(docs, 'bad.kmaas'), randomBytes(100), 'bad');
    const bad = await readFile(join(docs, 'bad.kmaas'));
    bad[bad.length - 1]! ^= 1;
    await writeFile(join(docs, 'bad.kmaas'), bad);
    await writeFile(join(docs, 'notes.txt'), 'not an envelope');
    const before = new Map<string, Buffer>();
    for (const f of await tree(docs)) before.set(f, await readFile(join(docs, f)));

    // --out: the folder is mirrored; the tampered envelope fails and is not written.
    const evaluations = fake.evaluateSizes.length;
    let r = await kmaas(['rewrap', 'docs', '--out', 'moved']);
    expect(r.code, r.stderr).to.equal(1);
    // a, b and bad need keys: one request of 3 under version 1, one under version 2.
    expect(fake.evaluateSizes.slice(evaluations)).to.deep.equal([3, 3]);
    expect(r.stdout.trim()).to.equal(
      'rewrapped 2, already current 1, failed 1 (1 other files skipped)',
    );
    const progress = r.stderr.split('\n').filter((l) => l.startsWith('['));
    expect(progress).to.have.length(4);
    expect(progress.find((l) => l.includes('bad.kmaas'))).to.match(
      /^\[\d\/4\] docs\/bad\.kmaas: failed: ERR_DECRYPT_FAILED: /,
    );
    expect(progress).to.include('[4/4] docs/sub/deeper/b.kmaas: key version 1 -> 2');
    expect(r.stderr.trimEnd().split('\n').at(-1)).to.match(/^error ERR_DECRYPT_FAILED: 1 of 4 /);
    const moved = join(dir, 'moved');
    expect(await tree(moved)).to.deep.equal(['a.kmaas', 'sub/c.kmaas', 'sub/deeper/b.kmaas']);
    expect(await open(join(moved, 'a.kmaas'))).to.deep.equal({ keyVersion: 2, plaintext: plain.a });
    expect(await open(join(moved, 'sub/deeper/b.kmaas'))).to.deep.equal({
      keyVersion: 2,
      plaintext: plain.b,
    });
    expect(await readFile(join(moved, 'sub/c.kmaas'))).to.deep.equal(before.get('sub/c.kmaas'));
    for (const [f, bytes] of before) expect(await readFile(join(docs, f)), f).to.deep.equal(bytes);

    // In place: every intact envelope moves; the tampered one and the other file stay as they
    // were, and no temporary file is left.
    r = await kmaas(['--json', 'rewrap', 'docs']);
    expect(r.code).to.equal(1);
    const summary = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(summary).to.include({ rewrapped: 2, current: 1, failed: 1, skipped: 1 });
    expect(await tree(docs)).to.deep.equal([...before.keys()].sort());
    expect(await open(join(docs, 'a.kmaas'))).to.deep.equal({ keyVersion: 2, plaintext: plain.a });
    expect((await open(join(docs, 'sub/deeper/b.kmaas'))).plaintext).to.deep.equal(plain.b);
    for (const f of ['sub/c.kmaas', 'notes.txt', 'bad.kmaas']) {
      expect(await readFile(join(docs, f)), f).to.deep.equal(before.get(f));
    }

    // Back to an older version: refused.
    r = await kmaas(['rewrap', 'docs/a.kmaas', '--to-version', '1']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/error ERR_VALIDATION: .*older than the envelope's key version 2/);

    // To a version that does not exist: said so, not "pin it".
    r = await kmaas(['rewrap', 'docs/a.kmaas', '--to-version', '3']);
    expect(r.code).to.equal(1);
    expect(r.stderr.trimEnd().split('\n').at(-1)).to.match(
      /^error ERR_UNKNOWN_KEY_VERSION: 1 of 1 .*tenant acme has no key version 3: its newest is 2$/,
    );
  });

  it('SIGKILL during an in-place rewrap leaves the old file or the new one, and the next run finishes', async () => {
    const docs = join(dir, 'docs');
    const plaintext = randomBytes(24 * 1024 * 1024);
    await seal(join(docs, 'big.kmaas'), plaintext, 'big');
    const old = await readFile(join(docs, 'big.kmaas'));

    // Kill once the temporary file is being written (or the run is over, if it was quicker).
    let finished = false;
    const killed = await kmaas(['rewrap', 'docs'], (kill) => {
      void (async () => {
        while (!finished) {
          if ((await readdir(docs)).some((f) => f.endsWith('.tmp'))) return kill();
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
    });
    finished = true;
    const after = await readFile(join(docs, 'big.kmaas'));
    const temps = (await readdir(docs)).filter((f) => f.endsWith('.tmp'));
    if (temps.length > 0) {
      // Killed before the rename: the old envelope, as it was.
      expect(killed.code).to.equal(null);
      expect(after.equals(old)).to.equal(true);
    } else {
      // Killed after the rename, or not killed: the complete new envelope.
      expect(await open(join(docs, 'big.kmaas'))).to.deep.equal({ keyVersion: 2, plaintext });
    }

    // The next run ignores the temporary file left behind and completes the work.
    const r = await kmaas(['--json', 'rewrap', 'docs']);
    expect(r.code, r.stderr).to.equal(0);
    const summary = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(summary).to.include({ rewrapped: temps.length > 0 ? 1 : 0, failed: 0, skipped: 0 });
    expect(await open(join(docs, 'big.kmaas'))).to.deep.equal({ keyVersion: 2, plaintext });
    const header = (await readHeader(pieces(await readFile(join(docs, 'big.kmaas'))))).header;
    expect(header).to.include({ tenant: 'acme', documentId: 'big', keyVersion: 2 });
  });
});
