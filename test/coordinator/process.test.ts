/**
 * The coordinator as a process and as a service (docs/CONTRACTS.md "Processes and readiness"):
 * the one `listening` line with the real port, a graceful SIGTERM, an idempotent close() that
 * leaves nothing open, a start that fails cleanly, and no Redis key outside the prefix.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { validateConfig } from '../../coordinator/config.ts';
import { startCoordinator } from '../../coordinator/server.ts';
import {
  Cluster,
  createTenant,
  http,
  keysUnder,
  LogCapture,
  REDIS_URL,
  TOKENS,
  waitFor,
  type JobReply,
} from './helpers.ts';

describe('coordinator: process and lifecycle', function () {
  let cluster: Cluster | undefined;

  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  it('logs one `listening` line with the real port and stops on SIGTERM', async () => {
    cluster = await Cluster.start({ nodes: 2 });
    const child = spawn(process.execPath, ['--import', 'tsx', 'coordinator/main.ts'], {
      env: {
        ...process.env,
        KMAAS_COORDINATOR_PORT: '0',
        REDIS_URL,
        KMAAS_REDIS_PREFIX: cluster.prefix,
        KMAAS_NODES: JSON.stringify(cluster.nodes.map((n) => ({ id: n.id, url: n.url }))),
        KMAAS_CLUSTER_TOKEN: TOKENS.cluster,
        // Nobody listens there: the coordinator must start anyway (the issuer may start later).
        KMAAS_OIDC_ISSUER: 'http://127.0.0.1:9',
        KMAAS_ADMIN_TOKEN: TOKENS.admin,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines: Record<string, unknown>[] = [];
    const reader = createInterface({ input: child.stdout });
    const listening = new Promise<number>((resolve, reject) => {
      reader.on('line', (line) => {
        const entry = JSON.parse(line) as Record<string, unknown>;
        lines.push(entry);
        if (entry.msg === 'listening') resolve(entry.port as number);
      });
      child.once('exit', (code) => reject(new Error(`exited early with ${code}`)));
    });
    const port = await listening;
    expect(port).to.be.a('number').above(0);
    expect((await http(port, 'GET', '/healthz')).status).to.equal(200);

    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number | null];

    // The last log lines say why, should the shutdown ever fail.
    expect(code, JSON.stringify(lines.slice(-4))).to.equal(0);
    expect(lines.filter((l) => l.msg === 'listening')).to.have.length(1);
    const text = JSON.stringify(lines);
    for (const token of Object.values(TOKENS)) expect(text).to.not.include(token);
  });

  it('exits with a named ERR_CONFIG when a setting is bad', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'coordinator/main.ts'], {
      env: { ...process.env, KMAAS_NODES: 'not json' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).to.equal(1);
    const entry = JSON.parse(out.trim().split('\n').at(-1)!) as Record<string, unknown>;
    expect(entry).to.deep.include({ code: 'ERR_CONFIG' });
    expect(entry.msg).to.match(/^KMAAS_NODES: /);
  });

  it('close() is idempotent and releases every handle', async () => {
    cluster = await Cluster.start({ nodes: 2 });
    await cluster.waitForNodes();
    const coordinator = cluster.coordinator!;
    const port = coordinator.port;
    await Promise.all([coordinator.close(), coordinator.close()]);
    await coordinator.close();
    cluster.coordinator = null;
    const refused = await fetch(`http://127.0.0.1:${port}/healthz`).then(
      () => false,
      () => true,
    );
    expect(refused).to.equal(true);
    expect(cluster.nodes.map((n) => n.connections)).to.deep.equal([0, 0]);
  });

  it('fails to start, and cleans up, when Redis cannot be reached', async () => {
    const logs = new LogCapture();
    const config = validateConfig({
      port: 0,
      redisUrl: 'redis://127.0.0.1:1',
      nodes: [{ id: 1, url: 'ws://127.0.0.1:1/v1/ws' }],
      clusterToken: TOKENS.cluster,
      oidcIssuer: 'http://127.0.0.1:9',
      adminToken: TOKENS.admin,
    });
    let failed = false;
    try {
      const handle = await startCoordinator(config, logs.logger);
      await handle.close();
    } catch {
      failed = true;
    }
    expect(failed).to.equal(true);
  });

  it('writes Redis keys only under its prefix', async () => {
    // A database of its own, so that every key in it can be accounted for.
    const url = `${REDIS_URL.replace(/\/\d*$/, '')}/11`;
    const probe = new Redis(url);
    try {
      const before = new Set(await keysUnder(probe, ''));
      cluster = await Cluster.start({ nodes: 3, config: { redisUrl: url } });
      await cluster.waitForNodes();
      const res = await createTenant(cluster, 'acme');
      await waitFor('creation', async () => {
        const job = await http<JobReply>(cluster!.port, 'GET', `/v1/jobs/${res.body.jobId}`);
        return job.body.state === 'completed';
      });
      await http(cluster.port, 'GET', '/v1/tenants/acme');
      await http(cluster.port, 'GET', '/v1/status');

      const after = await keysUnder(probe, '');
      const fresh = after.filter((k) => !before.has(k));
      expect(fresh.some((k) => k.startsWith(`${cluster!.prefix}dkg:`))).to.equal(true);
      // Concurrent test runs write under prefixes of their own, which this run cannot know and
      // so cannot have written to; anything else new is a key outside every prefix.
      expect(fresh.filter((k) => !/^kmaas:test:[0-9a-f]{12}:/.test(k))).to.deep.equal([]);
    } finally {
      probe.disconnect();
    }
  });

  it('cleans its prefix up after a test', async () => {
    const c = await Cluster.start({ nodes: 2 });
    const prefix = c.prefix;
    await createTenant(c, 'acme');
    const redis = new Redis(REDIS_URL);
    try {
      await c.close();
      expect(await keysUnder(redis, prefix)).to.deep.equal([]);
    } finally {
      redis.disconnect();
    }
  });
});
