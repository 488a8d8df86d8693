/**
 * Tenant creation: the BullMQ job that relays a real ristretto255_FROST DKG among fake nodes,
 * its progress and its result, the stored key package, retries, culprits, the threshold policy
 * and the guard against creating a tenant twice.
 */
import { expect } from 'chai';
import { ristretto255_oprf } from '@noble/curves/ed25519.js';
import { QueueEvents } from 'bullmq';
import { documentInput } from '../../shared/document.ts';
import { decodeElementB64, encodeScalar, fromB64, toB64 } from '../../shared/encoding.ts';
import { parseKeyPackage, type KeyPackage } from '../../shared/key-package.ts';
import type { EvaluateResponse } from '../../shared/messages.ts';
import { interpolateAtZero } from '../../shared/shamir.ts';
import { blind, deriveOutputs } from '../../shared/voprf-client.ts';
import { canonicalKeyPackage } from '../../coordinator/key-quorum.ts';
import { DKG_QUEUE_NAME } from '../../coordinator/redis-keys.ts';
import { checkThreshold } from '../../coordinator/proposals.ts';
import {
  Cluster,
  createTenant,
  http,
  keysUnder,
  REDIS_URL,
  TOKENS,
  waitFor,
  type JobReply,
  type TenantReply,
} from './helpers.ts';

const voprf = ristretto255_oprf.voprf as unknown as {
  evaluate(secretKey: Uint8Array, input: Uint8Array): Uint8Array;
};

/** tenant.create through POST /v1/proposals (fake nodes check no signatures). */
function create(cluster: Cluster, body: { tenant: string; threshold?: number }) {
  return createTenant(cluster, body.tenant, body);
}

async function jobWhen(cluster: Cluster, jobId: string, states: string[]): Promise<JobReply> {
  return waitFor(
    `job ${jobId} in ${states.join('|')}`,
    async () => {
      const res = await http<JobReply>(cluster.port, 'GET', `/v1/jobs/${jobId}`);
      expect(res.status).to.equal(200);
      return states.includes(res.body.state) ? res.body : undefined;
    },
    30_000,
  );
}

describe('coordinator: tenant creation (DKG job)', function () {
  let cluster: Cluster | undefined;

  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  it('runs the DKG through the nodes, reports progress and stores the identical package', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    await cluster.waitForNodes();
    const events = new QueueEvents(DKG_QUEUE_NAME, {
      connection: { url: REDIS_URL },
      prefix: cluster.prefix.slice(0, -1),
    });
    const progress: { phase: string; done: number; total: number }[] = [];
    events.on('progress', ({ data }) => progress.push(data as (typeof progress)[number]));
    await events.waitUntilReady();
    try {
      const res = await create(cluster, { tenant: 'acme' });
      expect(res.status, JSON.stringify(res.body)).to.equal(202);
      expect(res.body).to.include({ tenant: 'acme', version: 1 });
      const job = await jobWhen(cluster, res.body.jobId, ['completed', 'failed']);

      expect(job.state, JSON.stringify(job.error)).to.equal('completed');
      expect(job.progress).to.deep.equal({ phase: 'store', done: 1, total: 1 });
      const stored = await http<KeyPackage>(cluster.port, 'GET', '/v1/tenants/acme/keys/1');
      expect(stored.status).to.equal(200);
      expect(job.result).to.deep.equal({
        tenant: 'acme',
        version: 1,
        groupKey: stored.body.groupKey,
      });
      for (const node of cluster.nodes) {
        expect(canonicalKeyPackage(node.keys.get('acme/1')!.keyPackage)).to.equal(
          canonicalKeyPackage(stored.body),
        );
      }
      expect(parseKeyPackage(stored.body).threshold).to.equal(2);
      const tenant = await http<TenantReply>(cluster.port, 'GET', '/v1/tenants/acme');
      expect(tenant.body).to.deep.equal({
        tenant: 'acme',
        versions: [{ version: 1, threshold: 2, groupKey: stored.body.groupKey }],
      });
      await waitFor('all progress events', () => progress.length >= 11);
      for (const phase of ['round1', 'round2', 'round3']) {
        expect(progress.filter((p) => p.phase === phase).map((p) => p.done)).to.deep.equal([
          0, 1, 2, 3,
        ]);
      }
      expect(progress.map((p) => p.phase)).to.include('store');
      expect(await keysUnder(cluster.redis, `${cluster.prefix}${DKG_QUEUE_NAME}:`)).to.not.be.empty;
    } finally {
      await events.close();
    }
  });

  it('gives a key whose partial evaluations combine to the VOPRF output of the DKG secret', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    await cluster.waitForNodes();
    const res = await create(cluster, { tenant: 'acme', threshold: 3 });
    const job = await jobWhen(cluster, res.body.jobId, ['completed', 'failed']);
    expect(job.state, JSON.stringify(job.error)).to.equal('completed');
    // Only the test may do this: rebuild k from every node's share.
    const secret = interpolateAtZero(
      cluster.nodes.map((n) => ({ id: n.id, value: n.keys.get('acme/1')!.share })),
    );
    const state = blind([documentInput('acme', 1, 'report.pdf')]);

    const ev = await http<EvaluateResponse>(
      cluster.port,
      'POST',
      '/v1/tenants/acme/keys/1/evaluate',
      {
        json: { blinded: state.blinded.map((b) => toB64(b.toBytes())) },
        token: TOKENS.client,
      },
    );

    expect(ev.status, JSON.stringify(ev.body)).to.equal(200);
    const body = ev.body;
    expect(body.threshold).to.equal(3);
    const pkg = await http<KeyPackage>(cluster.port, 'GET', '/v1/tenants/acme/keys/1');
    const { outputs } = deriveOutputs(
      parseKeyPackage(pkg.body),
      state,
      body.partials.map((p) => ({
        node: p.node,
        evaluated: p.evaluated.map((e) => decodeElementB64(e, 'evaluated')),
        proof: fromB64(p.proof, 'proof'),
      })),
    );
    expect(outputs).to.deep.equal([voprf.evaluate(encodeScalar(secret), state.inputs[0]!)]);
  });

  it('fails the attempt naming the culprits a node reports, and releases the creation lock', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    await cluster.waitForNodes();
    cluster.node(1).dkgCulprits = [2];
    cluster.node(3).dkgCulprits = [2];

    const res = await create(cluster, { tenant: 'acme' });
    const job = await jobWhen(cluster, res.body.jobId, ['completed', 'failed']);

    expect(job.state).to.equal('failed');
    expect(job.error?.code).to.equal('ERR_DKG_FAILED');
    expect(job.error?.details?.culprits).to.deep.equal([2]);
    expect(job.error?.details?.phase).to.equal('round3');
    expect(job.error?.message).to.match(/node\(s\) 2 at fault \(reported by 1, 3\)/);
    expect(await cluster.redis.exists(`${cluster.prefix}lock:create:acme`)).to.equal(0);
    expect(await cluster.redis.exists(`${cluster.prefix}tenant:acme`)).to.equal(0);
  });

  it('retries a failed attempt with backoff and resumes the same ceremony', async () => {
    cluster = await Cluster.start({ nodes: 3, config: { dkgAttempts: 3, dkgBackoffMs: 300 } });
    await cluster.waitForNodes();
    const port = cluster.node(3).port;
    await cluster.node(3).stop();
    await cluster.waitForNodes((n) => n.connected === (n.id !== 3));

    const res = await create(cluster, { tenant: 'acme' });
    const retrying = await waitFor('first attempt to fail', async () => {
      const r = await http<JobReply>(cluster!.port, 'GET', `/v1/jobs/${res.body.jobId}`);
      return r.body.attemptsMade >= 1 ? r.body : undefined;
    });
    expect(retrying.error?.code).to.equal('ERR_NODE_UNAVAILABLE');
    await cluster.node(3).listen(port);
    const job = await jobWhen(cluster, res.body.jobId, ['completed', 'failed']);

    expect(job.state, JSON.stringify(job.error)).to.equal('completed');
    expect(job.attemptsMade).to.be.at.least(1);
    // The first attempt stopped in round 1: node 3 could not be reached. The retry ran the
    // ceremony.
    expect(retrying.error?.details?.phase).to.equal('round1');
    expect(cluster.node(1).received.filter((t) => t === 'dkg.round1').length).to.be.at.least(1);
  });

  it('a node that crashes in round 3 finishes in the retry; the job completes only then', async () => {
    cluster = await Cluster.start({ nodes: 3, config: { dkgAttempts: 4, dkgBackoffMs: 300 } });
    await cluster.waitForNodes();
    // Node 3 drops its connection on the first round 3 it gets, before storing anything, while
    // nodes 1 and 2 store the key (and a registry rebuild may put their package into Redis).
    cluster.node(3).round3Crashes = 1;

    const res = await create(cluster, { tenant: 'acme' });
    const job = await jobWhen(cluster, res.body.jobId, ['completed', 'failed']);

    expect(job.state, JSON.stringify(job.error)).to.equal('completed');
    expect(job.attemptsMade).to.be.at.least(1);
    const stored = await http<KeyPackage>(cluster.port, 'GET', '/v1/tenants/acme/keys/1');
    expect(stored.status).to.equal(200);
    for (const node of cluster.nodes) {
      expect(node.keys.has('acme/1'), `node ${node.id} holds the key`).to.equal(true);
      expect(canonicalKeyPackage(node.keys.get('acme/1')!.keyPackage)).to.equal(
        canonicalKeyPackage(stored.body),
      );
      // Committed once every node held it, not before.
      expect(node.committed).to.have.length(1);
    }
    expect(cluster.node(3).received.filter((t) => t === 'dkg.round3')).to.have.length.at.least(2);
    // The first attempt said who lacked the key.
    const failed = cluster.logs.find(/^DKG attempt failed/);
    expect(failed[0]?.details).to.deep.include({ missing: [3], holders: [1, 2] });
  });

  it('a node that never finishes round 3 fails the job, naming it in details.missing', async () => {
    cluster = await Cluster.start({ nodes: 3, config: { dkgAttempts: 3, dkgBackoffMs: 100 } });
    await cluster.waitForNodes();
    cluster.node(3).round3Crashes = Infinity;

    const res = await create(cluster, { tenant: 'acme' });
    const job = await jobWhen(cluster, res.body.jobId, ['completed', 'failed']);

    expect(job.state).to.equal('failed');
    expect(job.attemptsMade).to.equal(3);
    expect(job.error?.code).to.equal('ERR_DKG_FAILED');
    expect(job.error?.details).to.deep.include({ missing: [3], holders: [1, 2] });
    expect(job.error?.message).to.match(/node\(s\) 3 do not hold the key that node\(s\) 1, 2 hold/);
    expect(cluster.node(3).keys.has('acme/1')).to.equal(false);
    // Nobody was told to erase the ceremony state: node 3 may still finish from it.
    for (const node of cluster.nodes) expect(node.committed).to.deep.equal([]);
    expect(await cluster.redis.exists(`${cluster.prefix}lock:create:acme`)).to.equal(0);
  });

  it('refuses a tenant that exists, and a second creation racing the first', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    await cluster.waitForNodes();
    const [a, b] = await Promise.all([
      create(cluster, { tenant: 'acme' }),
      create(cluster, { tenant: 'acme' }),
    ]);
    expect([a.status, b.status].sort()).to.deep.equal([202, 409]);
    const loser = a.status === 409 ? a : b;
    const winner = a.status === 202 ? a : b;
    expect(loser.body.error.code).to.equal('ERR_TENANT_EXISTS');
    await jobWhen(cluster, winner.body.jobId, ['completed']);

    const again = await create(cluster, { tenant: 'acme' });
    expect(again.status).to.equal(409);
    expect(again.body.error.code).to.equal('ERR_TENANT_EXISTS');
  });

  it('refuses thresholds that are not an honest majority with ERR_BAD_THRESHOLD', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    for (const threshold of [1, 4, 0, -1]) {
      const res = await create(cluster, { tenant: 'acme', threshold });
      expect(res.status, String(threshold)).to.equal(400);
      expect(res.body.error.code).to.equal('ERR_BAD_THRESHOLD');
    }
  });
});

describe('coordinator: threshold policy', function () {
  const table: [string, number, number | undefined, number | 'ERR_BAD_THRESHOLD'][] = [
    ['default for 3 nodes is 2', 3, undefined, 2],
    ['default for 4 nodes is 3', 4, undefined, 3],
    ['default for 5 nodes is 3', 5, undefined, 3],
    ['t = n is allowed', 5, 5, 5],
    ['threshold too low (below 2) returns an error', 3, 1, 'ERR_BAD_THRESHOLD'],
    ['half of the nodes returns an error', 4, 2, 'ERR_BAD_THRESHOLD'],
    ['threshold above n returns an error', 3, 4, 'ERR_BAD_THRESHOLD'],
    ['a single node can never satisfy the policy', 1, undefined, 'ERR_BAD_THRESHOLD'],
    ['2 of 2 is allowed', 2, undefined, 2],
    ['a fractional threshold returns an error', 5, 3.5, 'ERR_BAD_THRESHOLD'],
  ];
  for (const [name, n, t, want] of table) {
    it(name, () => {
      if (typeof want === 'number') expect(checkThreshold(n, t)).to.equal(want);
      else
        expect(() => checkThreshold(n, t))
          .to.throw()
          .with.property('code', want);
    });
  }
});
