/**
 * Redis lost, on real processes (DESIGN.md section 5: Redis state can be rebuilt from the nodes,
 * which are the source of truth): the identity provider, 3 share nodes and a coordinator, with a
 * private redis-server on a port of its own (never the shared Redis, which no test may flush).
 *
 * (a) Flushed while the coordinator runs, by FLUSHALL and by deleting the deployment's prefix:
 *     the node and tenant registries, the key package, the epoch record and the ceremony queue's
 *     settings come back from the nodes, and derivations never fail nor change.
 * (b) Hung (SIGSTOP), stopped, and restarted empty: derivations go on throughout (the rate limit
 *     counts in memory, key packages come from the cache or straight from the nodes), and once
 *     Redis is back the registry is rebuilt and a ceremony job runs to its end.
 *
 * Every key is compared with the one derived before anything happened.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { bytesToHex } from '@noble/hashes/utils.js';
import { KmaasClient } from '../../client/index.ts';
import { MemoryPinStore } from '../../client/pins.ts';
import { canonicalKeyPackage } from '../../coordinator/key-quorum.ts';
import { devLogin } from '../../idp/dev-login.ts';
import type { KeyPackage } from '../../shared/key-package.ts';
import { draftProposal, type Operation } from '../../shared/proposal.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import { signWithDevKeys } from '../../scripts/lib/operators.ts';
import { deletePrefix } from '../../scripts/lib/redis.ts';
import { PrivateRedis } from '../helpers/redis-server.ts';
import { DerivationLoad } from './reshare-helpers.ts';

const TENANT = 'acme';
const DOCS = Array.from({ length: 16 }, (_, i) => `redis-loss/${i}.pdf`);

interface Snapshot {
  tenants: string[];
  pkg: string | null;
  nodes: string[];
  epoch: { epoch: number; threshold: number; committee: unknown[] } | null;
  marker: boolean;
  concurrency: string | null;
}

describe('Redis lost while the coordinator runs (real processes, a private redis-server)', function () {
  this.timeout(300_000);
  let dir: string;
  let redis: PrivateRedis;
  let r: Redis;
  let prefix: string;
  let cluster: LocalCluster;
  let client: KmaasClient;
  let expected: string[];
  let baseline: Snapshot;
  let groupKey: string;

  const deriveAll = async (c = client) =>
    (await c.deriveKeys(TENANT, 1, DOCS)).keys.map(bytesToHex);

  async function waitFor<T>(what: string, check: () => Promise<T | false>): Promise<T> {
    const until = Date.now() + 60_000;
    for (;;) {
      const value = await check().catch(() => false as const);
      if (value !== false) return value;
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  async function snapshot(): Promise<Snapshot> {
    const epoch = await r.get(`${prefix}epoch`);
    const record = epoch ? (JSON.parse(epoch) as Snapshot['epoch'] & object) : null;
    return {
      tenants: (await r.smembers(`${prefix}tenants`)).sort(),
      pkg: await r.hget(`${prefix}tenant:${TENANT}`, '1'),
      nodes: (await r.hkeys(`${prefix}nodes`)).sort(),
      epoch: record && {
        epoch: record.epoch,
        threshold: record.threshold,
        committee: record.committee,
      },
      marker: (await r.exists(`${prefix}registry`)) === 1,
      concurrency: await r.hget(`${prefix.slice(0, -1)}:dkg:meta`, 'concurrency'),
    };
  }

  /** Until Redis holds again everything it held before the loss. */
  async function rebuilt(): Promise<void> {
    await waitFor('the registry rebuilt from the nodes', async () => {
      const now = await snapshot();
      return JSON.stringify(now) === JSON.stringify(baseline) && now;
    });
  }

  /** The key package as a client that has none cached fetches it now. */
  async function fetchPackage(): Promise<{ status: number; body: KeyPackage }> {
    const res = await fetch(`${cluster.url}/v1/tenants/${TENANT}/keys/1`);
    return { status: res.status, body: (await res.json()) as KeyPackage };
  }

  /** A second client, pinned to the group key made at creation, derives the same keys. */
  async function freshClientKeys(): Promise<string[]> {
    const alice = cluster.devUsers.find((u) => u.tenant === TENANT)!;
    const login = await devLogin({ issuer: cluster.issuer, ...alice });
    const other = new KmaasClient({
      baseUrl: cluster.url,
      auth: { accessToken: login.accessToken, dpopKey: login.dpopKey },
      pins: new MemoryPinStore([{ tenant: TENANT, version: 1, groupKey }]),
    });
    return deriveAll(other);
  }

  async function propose(operation: Operation, version: number): Promise<unknown> {
    const { cluster: id, committee } = await client.committee();
    const p = draftProposal({
      cluster: id,
      operation,
      tenant: TENANT,
      version,
      threshold: 2,
      committee,
      expiresAt: new Date(Date.now() + 600_000),
    });
    const submitted = await client.submitProposal(
      signWithDevKeys(p, cluster.operators.keyFiles, 2),
    );
    if (submitted.kind !== 'job') throw new Error('expected a job');
    return (await client.waitForJob(submitted.jobId, { pollIntervalMs: 100, timeoutMs: 120_000 }))
      .result;
  }

  function coordinatorLog(): Record<string, unknown>[] {
    return readFileSync(join(dir, 'logs', 'coordinator.log'), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-redis-loss-'));
    redis = await PrivateRedis.start();
    r = new Redis(redis.url);
    r.on('error', () => undefined);
    prefix = `kmaas:test:${randomBytes(6).toString('hex')}:`;
    cluster = new LocalCluster({
      dataDir: dir,
      nodes: 3,
      redisUrl: redis.url,
      redisPrefix: prefix,
      nodeTimeoutMs: 2000,
      coordinatorEnv: {
        KMAAS_REGISTRY_CHECK_MS: '300',
        KMAAS_REDIS_COMMAND_TIMEOUT_MS: '300',
        KMAAS_DKG_BACKOFF_MS: '300',
      },
    });
    await cluster.start();
    const alice = cluster.devUsers.find((u) => u.tenant === TENANT)!;
    const login = await devLogin({ issuer: cluster.issuer, ...alice });
    client = new KmaasClient({
      baseUrl: cluster.url,
      auth: { accessToken: login.accessToken, dpopKey: login.dpopKey },
      adminToken: cluster.secrets.adminToken,
      pins: new MemoryPinStore(),
      trustOnFirstUse: true,
    });
    const created = (await propose('tenant.create', 1)) as { groupKey: string };
    groupKey = created.groupKey;
    expected = await deriveAll();
    baseline = await waitFor('the first registry rebuild', async () => {
      const s = await snapshot();
      return s.marker && s.epoch !== null && s.nodes.length === 3 && s;
    });
    expect(baseline.tenants).to.deep.equal([TENANT]);
    expect(baseline.concurrency).to.equal('1');
  });

  after(async () => {
    await cluster?.stop();
    r?.disconnect();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const [name, flush] of [
    ['FLUSHALL', () => r.flushall()],
    ['the prefix deleted', () => deletePrefix(redis.url, prefix)],
  ] as const) {
    it(`(a) ${name}: rebuilt from the nodes while serving, no key lost or changed`, async () => {
      const load = new DerivationLoad(client, TENANT, 1, DOCS, expected, 4);
      try {
        await flush();
        // A client with nothing cached gets the package at once, restored from the nodes.
        const pkg = await fetchPackage();
        expect(pkg.status).to.equal(200);
        expect(canonicalKeyPackage(pkg.body)).to.equal(baseline.pkg);
        await rebuilt();
      } finally {
        const seen = await load.stop();
        expect(seen.failures, 'derivations that failed').to.deep.equal([]);
        expect(seen.mismatches, 'derivations that gave another key').to.equal(0);
        expect(seen.ok).to.be.greaterThan(0);
      }
      expect(await deriveAll()).to.deep.equal(expected);
      expect(await freshClientKeys()).to.deep.equal(expected);
    });
  }

  it('(b) Redis hung, stopped and restarted empty: derivations go on; a ceremony runs after', async () => {
    const load = new DerivationLoad(client, TENANT, 1, DOCS, expected, 4);
    try {
      redis.pause();
      await new Promise((res) => setTimeout(res, 1500));
      expect((await fetchPackage()).status, 'key package while Redis hangs').to.equal(200);
      expect(await freshClientKeys()).to.deep.equal(expected);
      redis.resume();

      await redis.stop();
      await new Promise((res) => setTimeout(res, 1500));
      const pkg = await fetchPackage();
      expect(pkg.status, 'key package while Redis is down').to.equal(200);
      expect(canonicalKeyPackage(pkg.body)).to.equal(baseline.pkg);
      expect(await freshClientKeys()).to.deep.equal(expected);
      const status = (await (await fetch(`${cluster.url}/v1/status`)).json()) as {
        registry: string;
        nodes: { connected: boolean }[];
      };
      expect(status.registry).to.equal('unavailable');
      expect(status.nodes.every((n) => n.connected)).to.equal(true);
      // Jobs live in Redis alone: asked for one now, a retryable 503 with its code.
      const job = await fetch(`${cluster.url}/v1/jobs/1`);
      expect(job.status).to.equal(503);
      expect(((await job.json()) as { error: { code: string } }).error.code).to.equal(
        'ERR_REGISTRY_UNAVAILABLE',
      );
      // A proposal needs the queue and the epoch record: the same retryable 503, not a 500.
      const { cluster: id, committee } = await client.committee();
      const rotate = signWithDevKeys(
        draftProposal({
          cluster: id,
          operation: 'key.rotate',
          tenant: TENANT,
          version: 2,
          threshold: 2,
          committee,
          expiresAt: new Date(Date.now() + 600_000),
        }),
        cluster.operators.keyFiles,
        2,
      );
      const refused = await fetch(`${cluster.url}/v1/proposals`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${cluster.secrets.adminToken}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify(rotate),
      });
      const refusal = (await refused.json()) as { error: { code: string } };
      expect(refused.status, JSON.stringify(refusal)).to.equal(503);
      expect(refusal.error.code).to.equal('ERR_REGISTRY_UNAVAILABLE');

      await redis.start();
      await rebuilt();
    } finally {
      const seen = await load.stop();
      expect(seen.failures, 'derivations that failed').to.deep.equal([]);
      expect(seen.mismatches, 'derivations that gave another key').to.equal(0);
      expect(seen.ok).to.be.greaterThan(0);
    }
    // The ceremony queue works again: a key rotation runs to its end.
    const rotated = (await propose('key.rotate', 2)) as { version: number };
    expect(rotated.version).to.equal(2);
    expect(await deriveAll()).to.deep.equal(expected);

    const log = coordinatorLog();
    const fallback = log.filter(
      (l) => l.msg === 'rate limit unavailable in Redis; counted in memory on this replica',
    );
    expect(fallback, 'the rate limit fell back to memory').to.not.be.empty;
    expect(fallback[0]).to.include({ level: 40 });
    expect(log.some((l) => /registry is missing from redis/.test(String(l.msg)))).to.equal(true);
  });
});
