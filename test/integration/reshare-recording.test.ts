/**
 * "A recording of all coordinator traffic during a reshare contains no share in the clear"
 * (PLAN.md, issue 4), on real processes: a LocalCluster of 3 nodes (t = 2) and 2 spare nodes,
 * with a recording TCP proxy (test/helpers/recording-proxy.ts) between the coordinator and each
 * node. After a tenant creation the committee grows to 5 nodes at t = 3; every byte of the
 * reshare is decoded back into WebSocket messages and scanned by
 * test/helpers/reshare-share-detector.ts, which recognises from public data only an old share
 * (k_j * G == K_j of the epoch-1 package), a new share (k'_j * G == K'_j of the epoch-2 package)
 * or any dealt piece g_i(x_j) (== sum_k C_ik x_j^k, the commitments taken from the recorded
 * reshare.deal replies). The detector is shown to fire on shares and pieces planted in a copy of
 * the recording. The proxy also holds the coordinator's reshare.commit to node 4 back for a
 * moment, in which the test sends node 4 commits with a tampered transcript and with a vote
 * dropped, straight to its WebSocket: both are refused with ERR_RESHARE_VOTE.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ristretto255 } from '@noble/curves/ed25519.js';
import { hexToBytes } from '@noble/hashes/utils.js';
import { KmaasClient } from '../../client/index.ts';
import { MemoryPinStore } from '../../client/pins.ts';
import { encodeScalar, toB64, type GroupElement } from '../../shared/encoding.ts';
import { nodeReplyEnvelope } from '../../shared/messages.ts';
import { draftProposal } from '../../shared/proposal.ts';
import { Redacted } from '../../shared/redacted.ts';
import { NodeStore } from '../../nodes/store.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import { signWithDevKeys } from '../../scripts/lib/operators.ts';
import { NodeClient } from '../nodes/helpers.ts';
import { decodeWebSocket, RecordingProxy } from '../helpers/recording-proxy.ts';
import { detectReshareSecrets } from '../helpers/reshare-share-detector.ts';
import { clusterView, reshareProposal, runProposal } from './reshare-helpers.ts';

const TENANT = 'acme';
const ALL = [1, 2, 3, 4, 5];
const Fn = ristretto255.Point.Fn;

interface Envelope {
  id?: string;
  type?: string;
  ok?: boolean;
  body?: Record<string, unknown>;
}

describe('resharing through real processes: the recorded coordinator traffic holds no share', function () {
  this.timeout(120_000);
  let dir: string;
  let cluster: LocalCluster;
  let client: KmaasClient;
  const proxies = new Map<number, RecordingProxy>();
  const messages: string[] = [];
  let oldShares: Map<number, GroupElement>;
  let newShares: Map<number, GroupElement>;
  /** Node 1's epoch-1 share, unsealed from its database before the reshare. */
  let oldShare1: bigint;
  /** Node 4's answers to the commits the test sent it while the coordinator's was held back. */
  const refusals: { what: string; code: string; nodes: unknown }[] = [];

  const newClient = () =>
    new KmaasClient({
      baseUrl: cluster.url,
      adminToken: cluster.secrets.adminToken,
      pins: new MemoryPinStore(),
      trustOnFirstUse: true,
    });

  async function allConnected(): Promise<void> {
    for (;;) {
      const s = (await client.status()) as unknown as {
        nodes: { connected: boolean; identity?: unknown }[];
      };
      if (s.nodes.every((n) => n.connected && n.identity)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Unseal node `id`'s share of the tenant's key (at `epoch`) from its stopped database. */
  function unseal(id: number, epoch: number): bigint {
    const n = cluster.secrets.nodes.find((x) => x.id === id)!;
    const store = NodeStore.open(
      join(dir, `node-${id}`),
      id,
      new Redacted(hexToBytes(n.secret), 'node secret'),
    );
    try {
      return store.getKey(TENANT, 1, epoch)!.share.reveal();
    } finally {
      store.close();
    }
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-reshare-recording-'));
    // Read when the cluster starts the coordinator: KMAAS_NODES (the proxies) is filled in below.
    const coordinatorEnv: Record<string, string> = { KMAAS_RESHARE_FINISH_DELAY_MS: '200' };
    cluster = new LocalCluster({
      dataDir: dir,
      nodes: 3,
      spareNodes: 2,
      redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      redisPrefix: `kmaas:test:${randomBytes(6).toString('hex')}:`,
      cleanRedisOnStop: true,
      nodeTimeoutMs: 10_000,
      coordinatorEnv,
    });
    // The proxies start first (their ports go into the coordinator's KMAAS_NODES); each finds
    // its node's port at connection time, once the cluster has started the node.
    for (const id of ALL) {
      proxies.set(
        id,
        await RecordingProxy.start(() => cluster.secrets.nodes.find((n) => n.id === id)!.port),
      );
    }
    coordinatorEnv.KMAAS_NODES = JSON.stringify(
      ALL.map((id) => ({ id, url: `ws://127.0.0.1:${proxies.get(id)!.port}/v1/ws` })),
    );
    await cluster.start();
    client = newClient();
    await allConnected();
    const { cluster: clusterId, committee } = await client.committee([1, 2, 3]);
    const create = draftProposal({
      cluster: clusterId,
      operation: 'tenant.create',
      tenant: TENANT,
      version: 1,
      threshold: 2,
      committee,
      expiresAt: new Date(Date.now() + 600_000),
    });
    await runProposal(client, signWithDevKeys(create, cluster.operators.keyFiles, 2));
    const before = await client.keyPackage(TENANT, 1);
    expect([before.epoch, before.threshold]).to.deep.equal([1, 2]);
    oldShares = before.verificationShares;

    // Node 1's old share, for the planted-share test; the coordinator reconnects to it.
    await cluster.stopNode(1);
    oldShare1 = unseal(1, 1);
    await cluster.startNode(1);
    await allConnected();

    // From here on every byte counts: the reshare only.
    const start = new Map([...proxies].map(([id, p]) => [id, p.connections.length]));
    const marks = new Map(
      [...proxies].map(([id, p]) => [id, p.connections.map((c) => [c.up.length, c.down.length])]),
    );
    const p4 = proxies.get(4)!;
    p4.holdIf = (m) => m.includes('"type":"reshare.commit"');
    const proposal = await reshareProposal(client, cluster, {
      reason: 'add',
      add: [4, 5],
      threshold: 3,
    });
    const job = runProposal(client, proposal);
    await p4.held();
    await tamperWhileHeld(p4);
    p4.release();
    await job;

    for (const [id, proxy] of proxies) {
      proxy.connections.forEach((c, i) => {
        const [up, down] = i < start.get(id)! ? marks.get(id)![i]! : [0, 0];
        // A connection's earlier bytes are re-decoded and dropped by count, so frames stay whole.
        const skipUp = decodeWebSocket(c.up.slice(0, up)).length;
        const skipDown = decodeWebSocket(c.down.slice(0, down)).length;
        messages.push(...decodeWebSocket(c.up).slice(skipUp));
        messages.push(...decodeWebSocket(c.down).slice(skipDown));
      });
    }
    // A fresh client: the first one keeps the epoch-1 package it fetched.
    const after = await newClient().keyPackage(TENANT, 1);
    expect([after.epoch, after.threshold]).to.deep.equal([2, 3]);
    newShares = after.verificationShares;
  });

  /** The held commit to node 4, altered two ways, sent straight to node 4. */
  async function tamperWhileHeld(p4: RecordingProxy): Promise<void> {
    const commit = p4.connections
      .flatMap((c) => decodeWebSocket(c.up))
      .map((m) => JSON.parse(m) as Envelope)
      .find((m) => m.type === 'reshare.commit')!;
    const body = commit.body as {
      reshareId: string;
      transcript: string;
      votes: { node: number; signature: string }[];
    };
    const other = (body.transcript[0] === '0' ? '1' : '0') + body.transcript.slice(1);
    const node = cluster.secrets.nodes.find((n) => n.id === 4)!;
    const link = await NodeClient.connect(
      `ws://127.0.0.1:${node.port}/v1/ws`,
      cluster.secrets.clusterToken,
    );
    try {
      const tries = {
        'another transcript': { ...body, transcript: other },
        'vote of node 5 dropped': { ...body, votes: body.votes.filter((v) => v.node !== 5) },
      };
      for (const [what, b] of Object.entries(tries)) {
        const reply = nodeReplyEnvelope.parse(await link.request('reshare.commit', b));
        refusals.push(
          reply.ok
            ? { what, code: 'ok', nodes: undefined }
            : { what, code: reply.error.code, nodes: reply.error.details?.nodes },
        );
      }
    } finally {
      await link.close();
    }
  }

  after(async () => {
    await cluster?.stop().catch(() => undefined);
    for (const proxy of proxies.values()) await proxy.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const requests = () =>
    messages.map((m) => JSON.parse(m) as Envelope).filter((m) => m.type !== undefined);

  it('recorded the whole reshare: begin, deal, prepare, vote, commit, finish', () => {
    const types = requests().map((m) => m.type);
    for (const type of ['reshare.begin', 'reshare.prepare', 'reshare.vote', 'reshare.commit']) {
      expect(types.filter((t) => t === type).length, type).to.be.at.least(ALL.length);
    }
    expect(types.filter((t) => t === 'reshare.deal').length).to.be.at.least(2);
    expect(types).to.include('reshare.finish');
    expect(types).to.not.include('dkg.round1');
  });

  it('each recorded reshare.commit carries exactly one vote per new member, all over one transcript', () => {
    const commits = requests().filter((m) => m.type === 'reshare.commit');
    const transcripts = new Set(commits.map((c) => (c.body as { transcript: string }).transcript));
    expect(transcripts.size).to.equal(1);
    for (const c of commits) {
      const votes = (c.body as { votes: { node: number }[] }).votes.map((v) => v.node);
      expect(votes.sort((a, b) => a - b)).to.deep.equal(ALL);
    }
  });

  it('a node refuses a commit over another transcript, or with a vote dropped (ERR_RESHARE_VOTE)', async () => {
    expect(refusals).to.deep.equal([
      { what: 'another transcript', code: 'ERR_RESHARE_VOTE', nodes: ALL },
      { what: 'vote of node 5 dropped', code: 'ERR_RESHARE_VOTE', nodes: [5] },
    ]);
    // ...and took the coordinator's real commit afterwards.
    const { epoch } = await clusterView(client);
    expect(epoch.epoch).to.equal(2);
    expect(epoch.committee.map((m) => m.node)).to.deep.equal(ALL);
  });

  it('no 32-byte window is an old share, a new share or a dealt piece g_i(x_j)', () => {
    const scan = detectReshareSecrets(messages, oldShares, newShares, ALL);
    // Dealers 1 and 2 (the first t = 2 live old members), one key each.
    expect(scan.dealers).to.deep.equal([1, 2]);
    expect(scan.dealings).to.equal(2);
    expect(scan.targets).to.equal(3 + 5 + 2 * 5);
    expect(scan.windows).to.be.above(1000);
    expect(scan.findings).to.deep.equal([]);
  });

  it('the detector finds planted shares and pieces in a copy of the recording', async () => {
    await cluster.stopNode(4);
    const newShare4 = unseal(4, 2);
    // The real shares, unsealed from the databases, are in no encoding anywhere in the recording.
    const text = messages.join('\n');
    for (const share of [oldShare1, newShare4]) {
      const le = Buffer.from(encodeScalar(share));
      const be = Buffer.from(le).reverse();
      for (const form of [toB64(le), toB64(be), le.toString('hex'), be.toString('hex')]) {
        expect(text.includes(form)).to.equal(false);
      }
    }
    // A dealing of the test's own (dealer 9, a made-up key), with its piece for node 3 in hex.
    const coefficients = [Fn.create(7n), Fn.create(11n), Fn.create(13n)];
    const piece = coefficients.reduceRight((acc, c) => Fn.add(Fn.mul(acc, 3n), c), 0n);
    const planted = [
      ...messages,
      JSON.stringify({
        v: 1,
        id: 'x',
        ok: true,
        body: {
          dealer: 9,
          dealing: [
            {
              tenant: 'other',
              version: 1,
              commitments: coefficients.map((c) =>
                toB64(ristretto255.Point.BASE.multiply(c).toBytes()),
              ),
            },
          ],
          pieces: [{ leak: `0f${Buffer.from(encodeScalar(piece)).toString('hex')}aa` }],
        },
      }),
      JSON.stringify({
        v: 1,
        id: 'y',
        ok: true,
        body: { a: `leak${toB64(encodeScalar(oldShare1))}` },
      }),
      JSON.stringify({
        v: 1,
        id: 'z',
        ok: true,
        body: { b: Buffer.from(encodeScalar(newShare4)).reverse().toString('hex') },
      }),
    ];
    const n = messages.length;
    const found = detectReshareSecrets(planted, oldShares, newShares, ALL);
    expect(found.findings).to.deep.equal([
      { kind: 'piece', from: 9, key: 'other/1', to: 3, message: n, encoding: 'hex' },
      { kind: 'old share', to: 1, message: n + 1, encoding: 'base64url' },
      { kind: 'new share', to: 4, message: n + 2, encoding: 'hex' },
    ]);
  });
});
