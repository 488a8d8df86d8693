/**
 * Operator proposals on real processes: 3 share node processes and a coordinator process
 * (LocalCluster, with its dev operator set, 2 of 3). Each attack is refused by EVERY node, and
 * nothing changes: no key, no ceremony. The coordinator is skipped where it would refuse first:
 * the test then stands in for a coordinator that lets anything through, on the node WebSockets.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bytesToHex } from '@noble/hashes/utils.js';
import { KmaasClient } from '../../client/index.ts';
import { devLogin } from '../../idp/dev-login.ts';
import { MemoryPinStore } from '../../client/pins.ts';
import { KmaasError, type ErrorCode } from '../../shared/errors.ts';
import { nodeReplyEnvelope } from '../../shared/messages.ts';
import { draftProposal, type Operation, type Proposal } from '../../shared/proposal.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import { signWithDevKeys } from '../../scripts/lib/operators.ts';
import { strangerIdentity } from '../helpers/operators.ts';
import { NodeClient } from '../nodes/helpers.ts';

const DOCS = ['a.pdf', 'b.pdf', 'c.pdf'];

describe('operator proposals through real node and coordinator processes', function () {
  this.timeout(180_000);
  let dir: string;
  let cluster: LocalCluster;
  let client: KmaasClient;
  let links: NodeClient[];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-proposals-'));
    cluster = new LocalCluster({
      dataDir: dir,
      nodes: 3,
      redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      redisPrefix: `kmaas:test:${randomBytes(6).toString('hex')}:`,
      cleanRedisOnStop: true,
      nodeTimeoutMs: 1500,
    });
    await cluster.start();
    // alice@acme, signed in at the cluster's identity provider, derives; the admin submits.
    const alice = cluster.devUsers.find((u) => u.tenant === 'acme')!;
    const { accessToken, dpopKey } = await devLogin({ issuer: cluster.issuer, ...alice });
    client = new KmaasClient({
      baseUrl: cluster.url,
      auth: { accessToken, dpopKey },
      adminToken: cluster.secrets.adminToken,
      pins: new MemoryPinStore(),
      trustOnFirstUse: true,
    });
    links = await Promise.all(
      cluster.secrets.nodes.map((n) =>
        NodeClient.connect(`ws://127.0.0.1:${n.port}/v1/ws`, cluster.secrets.clusterToken),
      ),
    );
  });

  after(async () => {
    await Promise.all((links ?? []).map((l) => l.close()));
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function draft(
    operation: Operation,
    tenant: string,
    version: number,
    o: { cluster?: string; expiresAt?: Date; signers?: number } = {},
  ): Promise<Proposal> {
    const { cluster: id, committee } = await client.committee();
    const p = draftProposal({
      cluster: o.cluster ?? id,
      operation,
      tenant,
      version,
      ...(operation === 'key.retire' ? {} : { threshold: 2 }),
      committee,
      expiresAt: o.expiresAt ?? new Date(Date.now() + 600_000),
    });
    return signWithDevKeys(p, cluster.operators.keyFiles, o.signers ?? 2);
  }

  /** Submit through the coordinator; the DKG job's final error, or its result. */
  async function submit(p: Proposal): Promise<unknown> {
    const submitted = await client.submitProposal(p);
    if (submitted.kind !== 'job') return submitted;
    try {
      return (await client.waitForJob(submitted.jobId, { pollIntervalMs: 100 })).result;
    } catch (err) {
      return err;
    }
  }

  /**
   * dkg.round1 for `p` straight to every node, under a fresh ceremony id: the codes. The committee
   * is the proposal's, as the coordinator sends it, unless `committee` says otherwise.
   */
  async function round1Everywhere(
    p: Proposal,
    committee = p.committee ?? [],
  ): Promise<(ErrorCode | 'ok')[]> {
    const ceremonyId = randomBytes(12).toString('base64url');
    const body = {
      ceremonyId,
      tenant: p.tenant,
      version: p.version,
      threshold: p.threshold ?? 2,
      participants: [1, 2, 3],
      committee,
      proposal: p,
    };
    return Promise.all(
      links.map(async (l) => {
        const reply = nodeReplyEnvelope.parse(await l.request('dkg.round1', body));
        return reply.ok ? 'ok' : (reply.error.code as ErrorCode);
      }),
    );
  }

  /** No node holds any version of `tenant`. */
  async function expectNoKey(tenant: string): Promise<void> {
    for (const l of links) {
      const status = await l.call<{ keys: { tenant: string }[] }>('status', {});
      expect(status.keys.filter((k) => k.tenant === tenant)).to.deep.equal([]);
    }
  }

  const refusals: [string, () => Promise<Proposal>, ErrorCode][] = [
    [
      'signed by 1 of the 2 required operators',
      () => draft('tenant.create', 'weak', 1, { signers: 1 }),
      'ERR_PROPOSAL_QUORUM',
    ],
  ];
  for (const [name, make, code] of refusals) {
    it(`a proposal ${name} is refused by every node with ${code}; no node holds a key`, async () => {
      const p = await make();
      const failed = await submit(p);
      expect(failed).to.be.instanceOf(KmaasError);
      const e = failed as KmaasError;
      expect(e.code, e.message).to.equal(code);
      const failures = (e.details?.failures ?? []) as { node: number; code: string }[];
      expect(failures.map((f) => [f.node, f.code])).to.deep.equal([
        [1, code],
        [2, code],
        [3, code],
      ]);
      expect(await round1Everywhere(p)).to.deep.equal([code, code, code]);
      await expectNoKey(p.tenant!);
    });
  }

  it('a proposal signed for another cluster: the coordinator refuses it with ERR_PROPOSAL_CLUSTER, and so does every node; no node holds a key', async () => {
    const p = await draft('tenant.create', 'stray', 1, { cluster: 'another-cluster' });
    const e = (await submit(p).catch((err: unknown) => err)) as KmaasError;
    expect(e).to.be.instanceOf(KmaasError);
    expect(e.code, e.message).to.equal('ERR_PROPOSAL_CLUSTER');
    expect(e.details).to.include({ cluster: 'another-cluster' });
    expect(await round1Everywhere(p)).to.deep.equal(Array(3).fill('ERR_PROPOSAL_CLUSTER'));
    await expectNoKey('stray');
  });

  it('an expired proposal: the coordinator refuses it, and so does every node', async () => {
    // Signed in good form, once, by a quorum: only its time has passed.
    const p = await draft('tenant.create', 'late', 1, { expiresAt: new Date(Date.now() - 1000) });
    const e = (await submit(p).catch((err: unknown) => err)) as KmaasError;
    expect(e).to.be.instanceOf(KmaasError);
    expect(e.code).to.equal('ERR_PROPOSAL_EXPIRED');
    expect(await round1Everywhere(p)).to.deep.equal(Array(3).fill('ERR_PROPOSAL_EXPIRED'));
    await expectNoKey('late');
  });

  it("a round 1 whose committee is not the signed proposal's: ERR_PROPOSAL_MISMATCH on every node", async () => {
    // A coordinator that swaps node 2's encryption key for one of its own, under a good proposal.
    const p = await draft('tenant.create', 'swapped', 1);
    const { encryption } = strangerIdentity(2);
    const swapped = p.committee!.map((m) => (m.node === 2 ? { ...m, encryption } : m));
    expect(await round1Everywhere(p, swapped)).to.deep.equal(
      Array(3).fill('ERR_PROPOSAL_MISMATCH'),
    );
    await expectNoKey('swapped');
    // Nothing was spent: the same proposal with its own committee then runs its ceremony.
    expect(await round1Everywhere(p)).to.deep.equal(['ok', 'ok', 'ok']);
  });

  let v1: string[];
  let created: Proposal;

  it('a good tenant.create makes version 1 on every node', async () => {
    created = await draft('tenant.create', 'acme', 1);
    const result = (await submit(created)) as { version: number; groupKey: string };
    expect(result).to.include({ version: 1 });
    v1 = (await client.deriveKeys('acme', 1, DOCS)).keys.map(bytesToHex);
    expect(new Set(v1).size).to.equal(3);
  });

  it('the used proposal replayed for a new ceremony: ERR_PROPOSAL_REPLAYED on every node', async () => {
    expect(await round1Everywhere(created)).to.deep.equal(Array(3).fill('ERR_PROPOSAL_REPLAYED'));
    const again = (await client.submitProposal(created).catch((err: unknown) => err)) as KmaasError;
    expect(again.code).to.equal('ERR_TENANT_EXISTS');
    for (const l of links) {
      const status = await l.call<{ keys: { tenant: string; version: number }[] }>('status', {});
      expect(status.keys.map((k) => `${k.tenant}/${k.version}`)).to.deep.equal(['acme/1']);
    }
  });

  it('key.rotate makes version 2; both versions derive, to different keys', async () => {
    const result = (await submit(await draft('key.rotate', 'acme', 2))) as { version: number };
    expect(result).to.include({ version: 2 });
    const v2 = (await client.deriveKeys('acme', 2, DOCS)).keys.map(bytesToHex);
    expect((await client.deriveKeys('acme', 1, DOCS)).keys.map(bytesToHex)).to.deep.equal(v1);
    expect(v2.filter((k) => v1.includes(k))).to.deep.equal([]);
  });

  it('key.retire of version 1: every node erases it, v1 is ERR_KEY_RETIRED, v2 still derives', async () => {
    const weak = await draft('key.retire', 'acme', 1, { signers: 1 });
    const refused = (await client.submitProposal(weak).catch((err: unknown) => err)) as KmaasError;
    expect(refused.code).to.equal('ERR_PROPOSAL_QUORUM');
    expect(refused.details?.nodes).to.deep.equal([1, 2, 3]);
    expect((await client.deriveKeys('acme', 1, DOCS)).keys.map(bytesToHex)).to.deep.equal(v1);

    const retire = await draft('key.retire', 'acme', 1);
    const applied = await client.submitProposal(retire);
    expect(applied).to.deep.include({ kind: 'applied', complete: true });
    const e = (await client.deriveKeys('acme', 1, DOCS).catch((err: unknown) => err)) as KmaasError;
    expect(e).to.be.instanceOf(KmaasError);
    expect(e.code, e.message).to.equal('ERR_KEY_RETIRED');
    expect((await client.deriveKeys('acme', 2, DOCS)).keys).to.have.length(3);
    for (const l of links) {
      const status = await l.call<{ keys: { tenant: string; version: number }[] }>('status', {});
      expect(status.keys.map((k) => `${k.tenant}/${k.version}`)).to.deep.equal(['acme/2']);
    }
    const replay = (await client.submitProposal(retire).catch((err: unknown) => err)) as KmaasError;
    expect(replay.code).to.equal('ERR_PROPOSAL_REPLAYED');
  });
});
