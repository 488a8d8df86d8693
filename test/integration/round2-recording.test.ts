/**
 * "A recording of all coordinator traffic during a DKG contains no share in the clear" (issue 3),
 * on real processes: three share node processes and a coordinator process, with a recording TCP
 * proxy between the coordinator and each node. After a tenant creation (a tenant.create proposal
 * signed by a quorum of the test operators: a full DKG) the recorded bytes are decoded back into
 * WebSocket messages and scanned by test/helpers/share-detector.ts, which recognises any round-2
 * share f_i(x_j) or final share k_j from the Feldman commitments the recording itself carries. The final shares, unsealed from the nodes' databases with the
 * node secrets the test chose, are searched for directly as well. The detector is shown to fire
 * on a recording that does hold shares in the clear.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ristretto255_FROST } from '@noble/curves/ed25519.js';
import { hexToBytes } from '@noble/hashes/utils.js';
import { encodeScalar, Point, toB64 } from '../../shared/encoding.ts';
import { parseKeyPackage } from '../../shared/key-package.ts';
import { Redacted } from '../../shared/redacted.ts';
import { NodeStore } from '../../nodes/store.ts';
import { ROOT, ServiceProcess } from '../../scripts/lib/child.ts';
import { deletePrefix } from '../../scripts/lib/redis.ts';
import type { PublishedIdentity } from '../../nodes/identity.ts';
import { OPERATOR_SET, TEST_CLUSTER_ID, testProposal } from '../helpers/operators.ts';
import { decodeWebSocket, RecordingProxy } from '../helpers/recording-proxy.ts';
import { detectShares } from '../helpers/share-detector.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const IDS = [1, 2, 3];
const hex = (n: number) => randomBytes(n).toString('hex');
/** Nobody listens there: no evaluation happens here, and the processes start without it. */
const NO_ISSUER = 'http://127.0.0.1:9';

interface Recorded {
  messages: string[];
  raw: Buffer;
  /** node id -> its final share, unsealed from its database after the run. */
  shares: Map<number, bigint>;
  groupKey: string;
}

/** Run one DKG through real processes behind recording proxies; return what was recorded. */
async function recordDkg(dir: string): Promise<Recorded> {
  const tokens = { cluster: hex(32), admin: hex(32) };
  const prefix = `kmaas:test:${hex(6)}:`;
  const secrets = new Map(IDS.map((id) => [id, hex(32)]));
  const nodes = new Map<number, ServiceProcess>();
  const proxies = new Map<number, RecordingProxy>();
  let coordinator: ServiceProcess | undefined;
  try {
    for (const id of IDS) {
      const proc = new ServiceProcess({
        name: `node-${id}`,
        entry: join(ROOT, 'nodes', 'main.ts'),
        logFile: join(dir, `node-${id}.log`),
        env: {
          KMAAS_NODE_ID: String(id),
          KMAAS_NODE_HOST: '127.0.0.1',
          KMAAS_NODE_PORT: '0',
          KMAAS_NODE_DATA_DIR: join(dir, `node-${id}`),
          KMAAS_NODE_SECRET: secrets.get(id)!,
          KMAAS_CLUSTER_TOKEN: tokens.cluster,
          KMAAS_OIDC_ISSUER: NO_ISSUER,
          KMAAS_CLUSTER_ID: TEST_CLUSTER_ID,
          KMAAS_OPERATORS: JSON.stringify(OPERATOR_SET),
          LOG_LEVEL: 'info',
        },
      });
      nodes.set(id, proc);
    }
    await Promise.all([...nodes.values()].map((p) => p.start()));
    for (const [id, proc] of nodes) proxies.set(id, await RecordingProxy.start(proc.port));

    coordinator = new ServiceProcess({
      name: 'coordinator',
      entry: join(ROOT, 'coordinator', 'main.ts'),
      logFile: join(dir, 'coordinator.log'),
      env: {
        KMAAS_COORDINATOR_HOST: '127.0.0.1',
        KMAAS_COORDINATOR_PORT: '0',
        REDIS_URL,
        KMAAS_REDIS_PREFIX: prefix,
        KMAAS_NODES: JSON.stringify(
          IDS.map((id) => ({ id, url: `ws://127.0.0.1:${proxies.get(id)!.port}/v1/ws` })),
        ),
        KMAAS_CLUSTER_TOKEN: tokens.cluster,
        KMAAS_OIDC_ISSUER: NO_ISSUER,
        KMAAS_ADMIN_TOKEN: tokens.admin,
        LOG_LEVEL: 'info',
      },
    });
    const port = await coordinator.start();
    const base = `http://127.0.0.1:${port}`;
    type Status = {
      nodes: { id: number; connected: boolean; identity: PublishedIdentity | null }[];
    };
    const status = await poll('every node connected', async () => {
      const s = (await (await fetch(`${base}/v1/status`)).json()) as Status;
      return s.nodes.every((n) => n.connected && n.identity) && s;
    });
    // tenant.create signed by a quorum of the test operators, for the committee the nodes publish.
    const proposal = testProposal({
      tenant: 'acme',
      version: 1,
      threshold: 2,
      committee: status.nodes.map((n) => ({ node: n.id, ...n.identity! })),
    });
    const created = await fetch(`${base}/v1/proposals`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${tokens.admin}` },
      body: JSON.stringify(proposal),
    });
    expect(created.status).to.equal(202);
    const { jobId } = (await created.json()) as { jobId: string };
    const job = await poll('the DKG job to end', async () => {
      const j = (await (await fetch(`${base}/v1/jobs/${jobId}`)).json()) as {
        state: string;
        result?: { groupKey: string };
        error?: unknown;
      };
      return j.state === 'completed' || j.state === 'failed' ? j : undefined;
    });
    expect(job.state, JSON.stringify(job.error)).to.equal('completed');
    await coordinator.stop();
    for (const proc of nodes.values()) await proc.stop();

    const shares = new Map<number, bigint>();
    for (const id of IDS) {
      const secret = new Redacted(hexToBytes(secrets.get(id)!), 'node secret');
      const store = NodeStore.open(join(dir, `node-${id}`), id, secret);
      try {
        const key = store.getKey('acme', 1)!;
        const pkg = parseKeyPackage(key.keyPackage);
        // The unsealed share is the real one: k_j * G is node j's verification share.
        expect(Point.BASE.multiply(key.share.reveal()).equals(pkg.verificationShares.get(id)!)).to
          .be.true;
        shares.set(id, key.share.reveal());
      } finally {
        store.close();
      }
    }
    const connections = [...proxies.values()].flatMap((p) => p.connections);
    return {
      messages: connections.flatMap((c) => [...decodeWebSocket(c.up), ...decodeWebSocket(c.down)]),
      raw: Buffer.concat(connections.flatMap((c) => [...c.up, ...c.down])),
      shares,
      groupKey: job.result!.groupKey,
    };
  } finally {
    await coordinator?.stop().catch(() => undefined);
    for (const proc of nodes.values()) await proc.stop().catch(() => undefined);
    for (const proxy of proxies.values()) await proxy.close();
    await deletePrefix(REDIS_URL, prefix).catch(() => 0);
  }
}

async function poll<T>(what: string, check: () => Promise<T | undefined | false>): Promise<T> {
  for (let i = 0; i < 600; i++) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Every textual and binary form of a scalar a leak could take. */
function encodingsOf(s: bigint): { text: string[]; bytes: Buffer[] } {
  const le = Buffer.from(encodeScalar(s));
  const be = Buffer.from(le).reverse();
  return {
    text: [toB64(le), le.toString('hex'), toB64(be), be.toString('hex'), s.toString()],
    bytes: [le, be],
  };
}

describe('DKG through real processes: the recorded coordinator traffic holds no share', function () {
  this.timeout(120_000);
  let dir: string;
  let rec: Recorded;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-recording-'));
    rec = await recordDkg(dir);
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('recorded the whole ceremony: every round, sealed round-2 packages, the key packages', () => {
    const requests = rec.messages
      .map((m) => JSON.parse(m) as { type?: string; body?: unknown })
      .filter((m) => m.type !== undefined);
    const types = requests.map((m) => m.type);
    for (const type of ['status', 'dkg.round1', 'dkg.round2', 'dkg.round3', 'dkg.commit']) {
      expect(types.filter((t) => t === type).length, type).to.be.at.least(IDS.length);
    }
    const round3 = requests.filter((m) => m.type === 'dkg.round3');
    const relayed = round3.flatMap((m) => (m.body as { round2: Record<string, unknown>[] }).round2);
    expect(relayed).to.have.length(IDS.length * (IDS.length - 1));
    for (const p of relayed) {
      expect(Object.keys(p).sort()).to.deep.equal([
        'ciphertext',
        'ephemeral',
        'from',
        'signature',
        'to',
      ]);
    }
    expect(rec.messages.join('\n')).to.not.include('signingShare');
    expect(rec.messages.join('\n')).to.include(rec.groupKey);
  });

  it('no 32-byte window of any recorded byte string is a round-2 or final share', () => {
    const found = detectShares(rec.messages);
    expect(found.senders).to.deep.equal(IDS);
    // Commitments, proofs, ciphertexts, signatures, key packages: thousands of windows.
    expect(found.windows).to.be.above(1000);
    expect(found.findings).to.deep.equal([]);
  });

  it('the final shares, unsealed from the node databases, appear nowhere in the recording', () => {
    const text = rec.messages.join('\n');
    for (const [id, share] of rec.shares) {
      const { text: forms, bytes } = encodingsOf(share);
      for (const f of forms) expect(text.includes(f), `share of node ${id} as ${f}`).to.be.false;
      for (const b of bytes) expect(rec.raw.includes(b), `share of node ${id} raw`).to.be.false;
    }
  });

  it('the detector finds a final share planted in the real recording', () => {
    const share = rec.shares.get(2)!;
    // Inside a longer string: 4 base64url characters (3 bytes) keep the share's bytes aligned.
    const planted = [
      ...rec.messages,
      JSON.stringify({
        v: 1,
        id: 'x',
        ok: true,
        body: { leak: `leak${toB64(encodeScalar(share))}` },
      }),
    ];
    const found = detectShares(planted);
    expect(found.findings).to.deep.include({
      kind: 'final share',
      to: 2,
      message: rec.messages.length,
      encoding: 'base64url',
    });
  });

  it('the detector finds every plaintext round-2 share of a recording in the old format', () => {
    // A 2-of-3 DKG whose round-2 packages travel as before this change: { signingShare }.
    const { DKG, Identifier } = ristretto255_FROST;
    const signers = { min: 2, max: 3 };
    const r1 = IDS.map((id) => DKG.round1(Identifier.fromNumber(id), signers));
    const messages = r1.map((r, i) =>
      JSON.stringify({
        v: 1,
        id: `r1-${i}`,
        ok: true,
        body: {
          node: IDS[i],
          commitment: r.public.commitment.map((c) => toB64(c)),
          proofOfKnowledge: toB64(r.public.proofOfKnowledge),
        },
      }),
    );
    const nodeOf = new Map(IDS.map((id) => [Identifier.fromNumber(id), id]));
    r1.forEach((r, i) => {
      const out = DKG.round2(
        r.secret,
        r1.filter((_, k) => k !== i).map((o) => o.public),
      );
      const packages = Object.entries(out).map(([to, p]) => ({
        from: IDS[i],
        to: nodeOf.get(to),
        // Node 3 hides its shares in hex, off the byte boundary of a longer string.
        signingShare:
          IDS[i] === 3
            ? `0f${Buffer.from(p.signingShare).toString('hex')}aa`
            : toB64(p.signingShare),
      }));
      messages.push(JSON.stringify({ v: 1, id: `r2-${i}`, ok: true, body: { packages } }));
    });
    const found = detectShares(messages);
    const pairs = found.findings
      .filter((f) => f.kind === 'round-2 share')
      .map((f) => `${f.from}->${f.to} ${f.encoding}`)
      .sort();
    expect(pairs).to.deep.equal([
      '1->2 base64url',
      '1->3 base64url',
      '2->1 base64url',
      '2->3 base64url',
      '3->1 hex',
      '3->2 hex',
    ]);
  });
});
