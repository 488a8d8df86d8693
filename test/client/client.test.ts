import { draftProposal } from '../../shared/proposal.ts';
import { signWith, TEST_CLUSTER_ID } from '../helpers/operators.ts';
import { expect } from 'chai';
import { KmaasClient, MemoryPinStore, type ClientEvent, type Job } from '../../client/index.ts';
import { FakeCoordinator, type FakeKey } from './helpers/fake-coordinator.ts';
import { collect, expectCode, randomBytes, randomPieces } from './helpers/streams.ts';

describe('client/index: KmaasClient', () => {
  let fake: FakeCoordinator;
  let v1: FakeKey;
  let pins: MemoryPinStore;
  let events: ClientEvent[];
  let client: KmaasClient;

  beforeEach(async () => {
    fake = new FakeCoordinator();
    await fake.start();
    v1 = fake.addKey('acme', 1, 3);
    pins = new MemoryPinStore([{ tenant: 'acme', version: 1, groupKey: v1.keyPackage.groupKey }]);
    events = [];
    client = new KmaasClient({
      baseUrl: fake.url,
      auth: fake.clientAuth,
      adminToken: fake.adminToken,
      pins,
      onEvent: (e) => events.push(e),
    });
  });

  afterEach(() => fake.close());

  describe('encrypt and decrypt', () => {
    it('round trip; decrypt reports the tenant, version, document and nodes', async () => {
      const plaintext = randomBytes(200_000);
      const sealed = await client.encrypt(randomPieces(plaintext, 50_000), {
        tenant: 'acme',
        documentId: 'reports/q1.pdf',
        chunkSize: 65536,
      });
      expect(sealed).to.include({ tenant: 'acme', keyVersion: 1, documentId: 'reports/q1.pdf' });
      expect(sealed.nodes).to.have.length(3);
      const envelope = await collect(sealed);

      const opened = await client.decrypt(randomPieces(envelope, 70_000));
      expect(opened).to.include({ tenant: 'acme', keyVersion: 1, documentId: 'reports/q1.pdf' });
      expect(opened.nodes).to.have.length(3);
      expect(await collect(opened)).to.deep.equal(plaintext);
    });

    it('encrypts under the latest version unless told otherwise; old versions still open', async () => {
      const v2 = fake.addKey('acme', 2, 2);
      await pins.set('acme', 2, v2.keyPackage.groupKey);
      const latest = await client.encrypt(randomPieces(randomBytes(10), 3), {
        tenant: 'acme',
        documentId: 'd',
      });
      expect(latest.keyVersion).to.equal(2);
      expect(latest.nodes).to.have.length(2);
      const old = await client.encrypt(randomPieces(randomBytes(10), 3), {
        tenant: 'acme',
        documentId: 'd',
        keyVersion: 1,
      });
      expect(old.keyVersion).to.equal(1);
      const envelope = await collect(old);
      expect((await client.decrypt(randomPieces(envelope, 9))).keyVersion).to.equal(1);
    });

    it('a client that derives other keys cannot open the envelope', async () => {
      const envelope = await collect(
        await client.encrypt(randomPieces(randomBytes(100), 30), {
          tenant: 'acme',
          documentId: 'd',
        }),
      );
      const impostor = new FakeCoordinator();
      await impostor.start();
      try {
        const other = impostor.addKey('acme', 1, 3);
        const c = new KmaasClient({
          baseUrl: impostor.url,
          auth: impostor.clientAuth,
          pins: new MemoryPinStore([
            { tenant: 'acme', version: 1, groupKey: other.keyPackage.groupKey },
          ]),
        });
        await expectCode(
          collect(await c.decrypt(randomPieces(envelope, 30))),
          'ERR_DECRYPT_FAILED',
        );
      } finally {
        await impostor.close();
      }
    });

    it('with expectations, an envelope of another document is refused before any key is derived', async () => {
      const envelope = await collect(
        await client.encrypt(randomPieces(randomBytes(100), 30), {
          tenant: 'acme',
          documentId: 'mine',
        }),
      );
      const before = fake.evaluateSizes.length;
      const err = await expectCode(
        client.decrypt(randomPieces(envelope, 30), { documentId: 'yours' }),
        'ERR_VALIDATION',
      );
      expect(err.details).to.deep.equal({ field: 'documentId' });
      expect(fake.evaluateSizes.length).to.equal(before);
      const ok = await client.decrypt(randomPieces(envelope, 30), {
        tenant: 'acme',
        documentId: 'mine',
      });
      expect((await collect(ok)).length).to.equal(100);
    });

    it('not an envelope: ERR_ENVELOPE_FORMAT before any request', async () => {
      await expectCode(client.decrypt(randomPieces(randomBytes(500), 100)), 'ERR_ENVELOPE_FORMAT');
      expect(fake.requests).to.deep.equal([]);
    });
  });

  describe('operator calls', () => {
    /** tenant.create as a proposal signed by a quorum of the test operators. */
    async function createTenant(c: KmaasClient, tenant: string, threshold = 3) {
      const { cluster, committee } = await client.committee();
      const p = draftProposal({
        cluster,
        committee,
        operation: 'tenant.create',
        tenant,
        version: 1,
        threshold,
        expiresAt: new Date(Date.now() + 60_000),
      });
      const submitted = await c.submitProposal(signWith(p));
      if (submitted.kind !== 'job') throw new Error('expected a job');
      return submitted;
    }

    it('committee: the cluster id and every node with its identity keys', async () => {
      const { cluster, committee } = await client.committee();
      expect(cluster).to.equal(TEST_CLUSTER_ID);
      expect(committee.map((m) => m.node)).to.deep.equal([1, 2, 3, 4, 5]);
      expect(committee[0]).to.deep.equal({ node: 1, ...fake.identity(1) });
    });

    it('submitProposal, then waitForJob reports progress and resolves with the result', async () => {
      const created = await createTenant(client, 'beta', 2);
      expect(created).to.deep.include({ kind: 'job', jobId: '1', tenant: 'beta', version: 1 });
      expect(created.proposal).to.match(/^[0-9a-f]{64}$/);
      const seen: Job[] = [];
      const job = await client.waitForJob(created.jobId, {
        onProgress: (j) => seen.push(j),
        pollIntervalMs: 1,
      });
      expect(job.state).to.equal('completed');
      expect(seen.map((j) => j.state)).to.deep.equal([
        'waiting',
        'active',
        'active',
        'active',
        'active',
        'completed',
      ]);
      expect(seen[0]!.progress).to.deep.equal({ phase: 'round1', done: 0, total: 5 });
      expect(seen[2]!.progress).to.deep.equal({ phase: 'round2', done: 3, total: 5 });
      const beta = fake.keys.get('beta/1')!;
      expect(job.result).to.deep.include({ groupKey: beta.keyPackage.groupKey });

      const pinned = await client.pinKeyPackage('beta', 1, beta.keyPackage.groupKey);
      expect(pinned).to.deep.equal({ groupKey: beta.keyPackage.groupKey, newlyPinned: true });
      expect(await pins.get('beta', 1)).to.equal(beta.keyPackage.groupKey);
      expect(events.map((e) => e.type)).to.deep.equal(['key-pinned']);
      const betaUser = new KmaasClient({
        baseUrl: fake.url,
        auth: await fake.authFor('beta'),
        pins,
      });
      expect((await betaUser.deriveKeys('beta', 1, ['d'])).nodes).to.have.length(2);
    });

    it('pinKeyPackage refuses a package that disagrees with the job or an existing pin', async () => {
      const other = fake.addKey('other', 1, 3);
      await expectCode(
        client.pinKeyPackage('acme', 1, other.keyPackage.groupKey),
        'ERR_PINNED_KEY_MISMATCH',
      );
      await pins.set('acme', 1, other.keyPackage.groupKey);
      const fresh = new KmaasClient({ baseUrl: fake.url, pins });
      await expectCode(fresh.pinKeyPackage('acme', 1), 'ERR_PINNED_KEY_MISMATCH');
      expect(await pins.get('acme', 1)).to.equal(other.keyPackage.groupKey);
    });

    it('a failed job throws its error code, or ERR_DKG_FAILED when it names none', async () => {
      fake.jobScript = () => [
        { state: 'active' },
        { state: 'failed', error: { code: 'ERR_TOO_FEW_NODES', message: 'only 2 nodes' } },
      ];
      const a = await createTenant(client, 'gamma');
      const err = await expectCode(
        client.waitForJob(a.jobId, { pollIntervalMs: 1 }),
        'ERR_TOO_FEW_NODES',
      );
      expect(err.message).to.equal('only 2 nodes');
      fake.jobScript = () => [{ state: 'failed', error: 'node 3 sent a bad share' }];
      const b = await createTenant(client, 'delta');
      await expectCode(client.waitForJob(b.jobId, { pollIntervalMs: 1 }), 'ERR_DKG_FAILED');
    });

    it('a job that never ends: ERR_NODE_UNAVAILABLE after the timeout', async () => {
      fake.jobScript = () => [{ state: 'active' }];
      const a = await createTenant(client, 'slow');
      await expectCode(
        client.waitForJob(a.jobId, { pollIntervalMs: 1, timeoutMs: 30 }),
        'ERR_NODE_UNAVAILABLE',
      );
    });

    it('a coordinator that restarts while a job is followed: polls go on through the outage', async () => {
      const a = await createTenant(client, 'restart');
      const outages: string[] = [];
      await fake.pause();
      const following = client.waitForJob(a.jobId, {
        pollIntervalMs: 20,
        onOutage: (err) => outages.push(err.code),
      });
      await new Promise((resolve) => setTimeout(resolve, 200));
      await fake.resume();
      expect((await following).state).to.equal('completed');
      expect(outages).to.deep.equal(['ERR_NODE_UNAVAILABLE']);
    });

    it('a coordinator gone for longer than outageMs: ERR_NODE_UNAVAILABLE naming the job', async () => {
      const a = await createTenant(client, 'gone');
      await fake.pause();
      const err = await expectCode(
        client.waitForJob(a.jobId, { pollIntervalMs: 10, outageMs: 100 }),
        'ERR_NODE_UNAVAILABLE',
      );
      expect(err.message).to.match(new RegExp(`^no answer about job ${a.jobId} for 0.1 s`));
      expect(err.details).to.include({ jobId: a.jobId, outageMs: 100 });
      await fake.resume();
    });

    it('operator calls need the admin token', async () => {
      const noAdmin = new KmaasClient({ baseUrl: fake.url, auth: fake.clientAuth, pins });
      await expectCode(createTenant(noAdmin, 'beta'), 'ERR_CONFIG');
      const wrong = new KmaasClient({ baseUrl: fake.url, adminToken: 'wrong', pins });
      await expectCode(createTenant(wrong, 'beta'), 'ERR_UNAUTHORIZED');
      await expectCode(createTenant(client, 'acme'), 'ERR_TENANT_EXISTS');
      await expectCode(createTenant(client, 'Bad Name'), 'ERR_PROPOSAL_INVALID');
      await expectCode(client.job('404'), 'ERR_UNKNOWN_JOB');
    });

    it('status lists the nodes', async () => {
      const status = await client.status();
      expect(status.nodes.map((n) => n.id)).to.deep.equal([1, 2, 3, 4, 5]);
    });
  });
});
