/**
 * What a node leaves on disk and what every endpoint accepts, on real processes: three share
 * node processes and a coordinator process (scripts/lib/cluster.ts) make two keys by DKG. Then
 *
 * - every HTTP route of the coordinator and the node has a body limit, answered with a coded 413,
 *   and a WebSocket message over the node's limit gets a coded reply; every process stays up;
 * - the node databases (main file, WAL, shared memory) hold no share in any of four encodings,
 *   while the nodes run and after they stop; a node started with the wrong secret refuses with a
 *   clear message and leaves every file of its folder byte-identical;
 * - `kmaas audit verify`, run as a process on a node's audit log, names an edited entry, the first
 *   entry missing from a log cut at its end (signed head), and a line cut from the middle.
 */
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  copyFileSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { KmaasClient } from '../../client/index.ts';
import { MemoryPinStore } from '../../client/pins.ts';
import { devLogin } from '../../idp/dev-login.ts';
import { BODY_LIMIT_BYTES } from '../../coordinator/api.ts';
import { AUDIT_HEAD_FILE } from '../../nodes/audit-head.ts';
import { AUDIT_FILE, type AuditEntry } from '../../nodes/audit-log.ts';
import { MAX_MESSAGE_BYTES, MAX_PAYLOAD } from '../../nodes/server.ts';
import { DB_FILE, NodeStore } from '../../nodes/store.ts';
import { encodeScalar, toB64 } from '../../shared/encoding.ts';
import { Redacted } from '../../shared/redacted.ts';
import { ROOT } from '../../scripts/lib/child.ts';
import { folderDigests } from '../nodes/node-process.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import { proposeWithDevKeys } from '../../scripts/lib/operators.ts';
import { NodeClient } from '../nodes/helpers.ts';

const NODES = 3;
const TENANTS = ['acme', 'globex'];

/**
 * The one place this file makes keys: a tenant.create proposal signed with the cluster's dev
 * operator keys, submitted with the admin token, which relays a DKG between the node processes.
 */
async function createTenantByDkg(cluster: LocalCluster, tenant: string): Promise<void> {
  const client = new KmaasClient({
    baseUrl: cluster.url,
    adminToken: cluster.secrets.adminToken,
    pins: new MemoryPinStore(),
  });
  const submitted = await proposeWithDevKeys(client, cluster.operators.keyFiles, {
    operation: 'tenant.create',
    tenant,
    version: 1,
    threshold: 2,
  });
  if (submitted.kind !== 'job') throw new Error('expected a DKG job');
  const job = await client.waitForJob(submitted.jobId, { timeoutMs: 60_000, pollIntervalMs: 100 });
  expect(job.state).to.equal('completed');
}

/** Every file of a node's database (node.db, -wal, -shm), by name. */
function dbFiles(dir: string): Map<string, Buffer> {
  const names = readdirSync(dir).filter((f) => f.startsWith(DB_FILE));
  return new Map(names.map((f) => [f, readFileSync(join(dir, f))]));
}

/** A share as it could sit in a file: little- and big-endian bytes, hex of each, base64url of each. */
function encodings(share: bigint): Record<string, Buffer> {
  const le = encodeScalar(share);
  const be = Uint8Array.from(le).reverse();
  return {
    'little-endian': Buffer.from(le),
    'big-endian': Buffer.from(be),
    'hex (LE)': Buffer.from(bytesToHex(le)),
    'hex (BE)': Buffer.from(bytesToHex(be)),
    'HEX (LE)': Buffer.from(bytesToHex(le).toUpperCase()),
    'HEX (BE)': Buffer.from(bytesToHex(be).toUpperCase()),
    'base64url (LE)': Buffer.from(toB64(le)),
    'base64url (BE)': Buffer.from(toB64(be)),
  };
}

interface RawReply {
  status: number;
  head: string;
  body: { error?: { code: string; message: string } } | null;
}

/**
 * One HTTP/1.1 request on a raw socket, so that what is sent is exactly what is said: a
 * Content-Length with only `send` bytes of it, or a chunked body of `send` bytes. Stops sending
 * once the answer starts; the server may close the socket under a body it refused.
 */
function rawHttp(
  port: number,
  method: string,
  path: string,
  opts: {
    headers?: Record<string, string>;
    declared?: number;
    chunked?: boolean;
    send?: number;
    /** A body to send as it is (one chunk when chunked) instead of `send` filler bytes. */
    payload?: string;
    /** Chunked: never send the last chunk, as a client that keeps streaming would not. */
    endless?: boolean;
  },
): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let answered = false;
    let sent = 0;
    const total = opts.payload === undefined ? (opts.send ?? 0) : Buffer.byteLength(opts.payload);
    const headers: Record<string, string> = {
      host: `127.0.0.1:${port}`,
      connection: 'close',
      'content-type': 'application/json',
      ...opts.headers,
    };
    if (opts.chunked) headers['transfer-encoding'] = 'chunked';
    else if (opts.declared !== undefined) headers['content-length'] = String(opts.declared);
    socket.on('data', (d: Buffer) => {
      answered = true;
      chunks.push(d);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A refused body: the server answered and closed while we were still sending.
      if (!answered && err.code !== 'EPIPE' && err.code !== 'ECONNRESET') reject(err);
    });
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const split = text.indexOf('\r\n\r\n');
      if (split === -1) return reject(new Error(`no HTTP answer: ${JSON.stringify(text)}`));
      const head = text.slice(0, split);
      const rest = text.slice(split + 4);
      resolve({
        status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]),
        head: head.toLowerCase(),
        body: rest ? (JSON.parse(rest) as RawReply['body']) : null,
      });
    });
    socket.on('connect', () => {
      const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`);
      socket.write(`${method} ${path} HTTP/1.1\r\n${lines.join('')}\r\n`);
      const piece =
        opts.payload === undefined ? Buffer.alloc(16 * 1024, 0x61) : Buffer.from(opts.payload);
      const pump = () => {
        while (!answered && !socket.destroyed && sent < total) {
          const n = Math.min(piece.length, total - sent);
          sent += n;
          const data = piece.subarray(0, n);
          const ok = socket.write(
            opts.chunked
              ? Buffer.concat([Buffer.from(`${n.toString(16)}\r\n`), data, Buffer.from('\r\n')])
              : data,
          );
          if (!ok) return void socket.once('drain', pump);
        }
        if (opts.chunked && !opts.endless && !answered && !socket.destroyed) {
          socket.write('0\r\n\r\n');
        }
      };
      pump();
    });
  });
}

function kmaas(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'cli', 'kmaas.mjs'), ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', HOME: tmpdir() },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Like kmaas(), without blocking the event loop (for a node process started by this test). */
function kmaasAsync(
  args: string[],
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'cli', 'kmaas.mjs'), ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: tmpdir() },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

describe('integration: body limits, the node disk and the audit log on real processes', function () {
  this.timeout(180_000);
  let dir: string;
  let cluster: LocalCluster;
  /** Each node's signing public key and node.db files, read while the cluster ran. */
  const signing = new Map<number, string>();
  const whileRunning = new Map<number, Map<string, Buffer>>();
  let liveVerify: { status: number | null; stdout: string; stderr: string };

  const nodeDir = (id: number) => join(dir, `node-${id}`);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-disk-'));
    cluster = new LocalCluster({
      dataDir: dir,
      nodes: NODES,
      redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      redisPrefix: `kmaas:test:${randomBytes(6).toString('hex')}:`,
      cleanRedisOnStop: true,
    });
    await cluster.start();
    for (const tenant of TENANTS) await createTenantByDkg(cluster, tenant);
    for (let id = 1; id <= NODES; id++) {
      const res = await fetch(`http://127.0.0.1:${cluster.nodes.get(id)!.port}/healthz`);
      const body = (await res.json()) as { identity: { signing: string } };
      signing.set(id, body.identity.signing);
      whileRunning.set(id, dbFiles(nodeDir(id)));
    }
    liveVerify = await kmaasAsync([
      'audit',
      'verify',
      join(nodeDir(1), AUDIT_FILE),
      '--node',
      `http://127.0.0.1:${cluster.nodes.get(1)!.port}`,
    ]);
  });

  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  describe('body limits: every endpoint answers an oversized body with a coded 413 and stays up', () => {
    const coordinatorRoutes: [string, string][] = [
      ['POST', '/v1/tenants'],
      ['POST', '/v1/tenants/acme/keys/1/evaluate'],
      ['GET', '/healthz'],
      ['GET', '/v1/status'],
      ['GET', '/v1/jobs/1'],
      ['GET', '/v1/tenants/acme'],
      ['GET', '/v1/tenants/acme/keys/1'],
      ['POST', '/v1/no-such-route'],
    ];

    it('coordinator: a declared body over the route limit is refused unread on every route', async () => {
      const port = cluster.coordinator.port;
      for (const [method, path] of coordinatorRoutes) {
        const takesBody = path === '/v1/tenants' || path.endsWith('/evaluate');
        const declared = takesBody ? BODY_LIMIT_BYTES + 1 : 10;
        // Nothing of the body is sent: the answer must come on the headers alone.
        const r = await rawHttp(port, method, path, { declared });
        expect(r.status, `${method} ${path}`).to.equal(413);
        expect(r.body?.error?.code, `${method} ${path}`).to.equal('ERR_BODY_TOO_LARGE');
        expect(r.head, `${method} ${path} closes`).to.contain('connection: close');
      }
      expect(cluster.coordinator.running).to.equal(true);
      expect((await fetch(`${cluster.url}/healthz`)).status).to.equal(200);
    });

    it('coordinator: a chunked body that grows past the limit is cut off with 413', async () => {
      const port = cluster.coordinator.port;
      // A valid access token of alice@acme: the body is only read once the credential passes.
      const alice = cluster.devUsers.find((u) => u.tenant === 'acme')!;
      const { accessToken } = await devLogin({ issuer: cluster.issuer, ...alice });
      const headers = { authorization: `DPoP ${accessToken}` };
      const path = '/v1/tenants/acme/keys/1/evaluate';
      const r = await rawHttp(port, 'POST', path, {
        headers,
        chunked: true,
        // No end: the answer must come without waiting for the body to finish. (Bytes the
        // server never reads would make its close a reset, which can swallow the answer.)
        endless: true,
        send: BODY_LIMIT_BYTES + 64 * 1024,
      });
      expect(r.status).to.equal(413);
      expect(r.body?.error?.code).to.equal('ERR_BODY_TOO_LARGE');
      // A chunked body within the limit is still read and parsed.
      const small = await rawHttp(port, 'POST', path, {
        headers,
        chunked: true,
        payload: JSON.stringify({ blinded: ['AAAA'] }),
      });
      expect(small.body?.error?.code).to.not.equal('ERR_BODY_TOO_LARGE');
      expect(small.body?.error?.code).to.not.equal('ERR_MALFORMED_JSON');
      const get = await rawHttp(port, 'GET', '/v1/status', { chunked: true, endless: true });
      expect(get.body?.error?.code).to.equal('ERR_BODY_TOO_LARGE');
      expect((await fetch(`${cluster.url}/healthz`)).status).to.equal(200);
    });

    it('node: GET /healthz and any other route refuse a body with 413', async () => {
      const port = cluster.nodes.get(1)!.port;
      const cases = [
        rawHttp(port, 'GET', '/healthz', { declared: 10 }),
        rawHttp(port, 'POST', '/healthz', { declared: 50 * 1024 * 1024 }),
        rawHttp(port, 'POST', '/anything', { chunked: true, endless: true }),
      ];
      for (const r of await Promise.all(cases)) {
        expect(r.status).to.equal(413);
        expect(r.body?.error?.code).to.equal('ERR_BODY_TOO_LARGE');
      }
      expect(cluster.nodes.get(1)!.running).to.equal(true);
      const ok = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(ok.status).to.equal(200);
    });

    it(`node WebSocket: a message over ${MAX_MESSAGE_BYTES} bytes gets a coded ERR_BODY_TOO_LARGE reply and the socket stays open`, async () => {
      const url = `ws://127.0.0.1:${cluster.nodes.get(2)!.port}/v1/ws`;
      const client = await NodeClient.connect(url, cluster.secrets.clusterToken);
      try {
        const padding = 'x'.repeat(MAX_MESSAGE_BYTES);
        const text = JSON.stringify({ v: 1, id: 'big-1', type: 'status', body: { padding } });
        const reply = await client.sendRaw(text, 'big-1');
        expect(reply.ok).to.equal(false);
        expect(!reply.ok && reply.error.code).to.equal('ERR_BODY_TOO_LARGE');
        const status = await client.request('status', {});
        expect(status.ok, 'the same socket still answers').to.equal(true);
      } finally {
        await client.close();
      }
    });

    it(`node WebSocket: a frame over ${MAX_PAYLOAD} bytes closes that socket (1009); the node stays up`, async () => {
      const url = `ws://127.0.0.1:${cluster.nodes.get(2)!.port}/v1/ws`;
      const victim = await NodeClient.connect(url, cluster.secrets.clusterToken);
      const code = await new Promise<number>((resolve) => {
        victim.socket.once('close', (c: number) => resolve(c));
        victim.socket.send('x'.repeat(MAX_PAYLOAD + 1));
      });
      expect(code).to.equal(1009);
      const fresh = await NodeClient.connect(url, cluster.secrets.clusterToken);
      expect((await fresh.request('status', {})).ok).to.equal(true);
      await fresh.close();
    });
  });

  describe('node disk: no share in the clear, and a wrong secret changes nothing', () => {
    /** Each node's files after a clean stop, before anything else opened them. */
    const afterStop = new Map<number, Map<string, Buffer>>();

    before(async () => {
      await cluster.stop();
      for (let id = 1; id <= NODES; id++) afterStop.set(id, dbFiles(nodeDir(id)));
    });

    it('the .db, -wal and -shm files of every node process hold no share in LE, BE, hex or base64url, while running and after stop', () => {
      for (let id = 1; id <= NODES; id++) {
        const secret = cluster.secrets.nodes.find((n) => n.id === id)!.secret;
        const snapshots = { running: whileRunning.get(id)!, stopped: afterStop.get(id)! };
        expect([...snapshots.running.keys()], 'the WAL was on disk while running').to.include(
          `${DB_FILE}-wal`,
        );
        // Unsealed with the test's knowledge of the node secret, after the snapshots were taken.
        const store = NodeStore.open(nodeDir(id), id, new Redacted(hexToBytes(secret)));
        const keys = store.listKeys();
        store.close();
        expect(keys.map((k) => k.tenant).sort()).to.deep.equal(TENANTS);
        for (const [phase, files] of Object.entries(snapshots)) {
          for (const [file, bytes] of files) {
            for (const key of keys) {
              for (const [form, needle] of Object.entries(encodings(key.share.reveal()))) {
                expect(
                  bytes.indexOf(needle),
                  `node ${id} ${phase} ${file}: share of ${key.tenant} as ${form}`,
                ).to.equal(-1);
              }
            }
          }
          // The search finds what is there: the public key package is stored as it is.
          const all = Buffer.concat([...files.values()]);
          expect(all.indexOf(keys[0]!.keyPackage.groupKey), `node ${id} ${phase}`).to.not.equal(-1);
        }
      }
    });

    it('a node process started with the wrong secret exits 2 with a clear message, every file byte-identical', async () => {
      const id = 1;
      const before = folderDigests(nodeDir(id));
      expect(Object.keys(before)).to.include.members([DB_FILE, AUDIT_FILE, AUDIT_HEAD_FILE]);
      const env = {
        PATH: process.env.PATH ?? '',
        KMAAS_NODE_ID: String(id),
        KMAAS_NODE_PORT: '0',
        KMAAS_NODE_DATA_DIR: nodeDir(id),
        KMAAS_NODE_SECRET: randomBytes(32).toString('hex'),
        KMAAS_CLUSTER_TOKEN: cluster.secrets.clusterToken,
        ...cluster.oidcEnv,
        KMAAS_CLUSTER_ID: cluster.operators.clusterId,
        KMAAS_OPERATORS_FILE: cluster.operators.setFile,
      };
      const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'nodes', 'main.ts')], {
        cwd: ROOT,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      expect(code).to.equal(2);
      const lines = out
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const fatal = lines.find((l) => l.code === 'ERR_WRONG_NODE_SECRET');
      expect(fatal?.msg)
        .to.contain('different KMAAS_NODE_SECRET')
        .and.contain('Nothing was changed');
      expect(lines.some((l) => l.msg === 'listening')).to.equal(false);
      expect(folderDigests(nodeDir(id))).to.deep.equal(before);
    });
  });

  describe('audit: `kmaas audit verify` on the log of a real node process', () => {
    let lines: string[];
    let work: string;

    before(() => {
      lines = readFileSync(join(nodeDir(2), AUDIT_FILE), 'utf8')
        .trimEnd()
        .split('\n');
      expect(lines.length, 'node.start, two DKGs, node.stop').to.be.greaterThan(8);
    });
    beforeEach(() => {
      work = mkdtempSync(join(tmpdir(), 'kmaas-audit-copy-'));
      copyFileSync(join(nodeDir(2), AUDIT_HEAD_FILE), join(work, AUDIT_HEAD_FILE));
    });
    afterEach(() => rmSync(work, { recursive: true, force: true }));

    const verify = (text: string) => {
      writeFileSync(join(work, AUDIT_FILE), text);
      return kmaas(['audit', 'verify', join(work, AUDIT_FILE), '--signing-key', signing.get(2)!]);
    };
    const joined = (l: string[]) => l.map((x) => `${x}\n`).join('');
    const seqOf = (line: string) => (JSON.parse(line) as AuditEntry).seq;

    it('the log of a running node verifies, its head checked with the key from --node', () => {
      expect(liveVerify.status, liveVerify.stderr).to.equal(0);
      expect(liveVerify.stdout).to.match(/^audit log OK: \d+ entries/);
      expect(liveVerify.stdout).to.match(/signed head: node 1, seq \d+, signature verified\n$/);
    });

    it('an intact log verifies, its signed head at the last entry', () => {
      const r = verify(joined(lines));
      expect(r.status, r.stderr).to.equal(0);
      const last = seqOf(lines.at(-1)!);
      expect(r.stdout).to.contain(`audit log OK: ${lines.length} entries, last seq ${last}`);
      expect(r.stdout).to.contain(`signed head: node 2, seq ${last}, signature verified`);
    });

    it('(a) one field of one entry edited: ERR_AUDIT_BROKEN names its line and seq', () => {
      const entry = JSON.parse(lines[3]!) as AuditEntry;
      const edited = JSON.stringify({ ...entry, outcome: 'ERR_UNAUTHORIZED' });
      const r = verify(joined(lines.with(3, edited)));
      expect(r.status).to.equal(1);
      expect(r.stderr).to.match(
        new RegExp(
          `^error ERR_AUDIT_BROKEN: line 4 \\(seq ${entry.seq}\\): hash is .* \\(edited\\)\\n$`,
        ),
      );
    });

    it('(b) the last lines cut: ERR_AUDIT_TRUNCATED names the first missing seq', () => {
      const kept = lines.slice(0, -3);
      const r = verify(joined(kept));
      expect(r.status).to.equal(1);
      const firstMissing = seqOf(lines.at(-3)!);
      expect(r.stderr).to.equal(
        `error ERR_AUDIT_TRUNCATED: the log ends at seq ${firstMissing - 1} but its signed head is at seq ${seqOf(lines.at(-1)!)}: ` +
          `entries seq ${firstMissing} to ${seqOf(lines.at(-1)!)} are missing (cut from the end)\n`,
      );
    });

    it('(c) a line cut from the middle: ERR_AUDIT_BROKEN names the missing seq', () => {
      const cut = seqOf(lines[4]!);
      const r = verify(joined(lines.toSpliced(4, 1)));
      expect(r.status).to.equal(1);
      expect(r.stderr).to.contain(
        `error ERR_AUDIT_BROKEN: line 5 (seq ${cut + 1}): seq is ${cut + 1}, expected ${cut} (a line is missing, moved or repeated)`,
      );
    });

    it('a head signed by another key, moved back over a cut: ERR_AUDIT_HEAD', () => {
      const r = kmaas([
        'audit',
        'verify',
        join(nodeDir(3), AUDIT_FILE),
        '--head',
        join(work, AUDIT_HEAD_FILE),
        '--signing-key',
        signing.get(3)!,
      ]);
      expect(r.status).to.equal(1);
      expect(r.stderr).to.match(
        /^error ERR_AUDIT_HEAD: the signature of the head \(seq \d+\) does not verify/,
      );
    });
  });
});
