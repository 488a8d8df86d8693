/**
 * The coordinator's rate limit (coordinator/rate-limit.ts, DESIGN.md section 4) with a real Redis
 * under a prefix of its own: a burst past the budget of one (tenant, subject) is a 429 with
 * Retry-After before any node is asked, two replicas on the same prefix draw on one budget, nodes
 * that refuse with ERR_RATE_LIMITED make a 429 too, and a Redis that fails hands the count to an
 * in-memory limiter of the same budget (a hung Redis: test/integration/redis-loss.test.ts).
 */
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { documentInput } from '../../shared/document.ts';
import { toB64 } from '../../shared/encoding.ts';
import { blind } from '../../shared/voprf-client.ts';
import { RateLimit } from '../../coordinator/rate-limit.ts';
import { startCoordinator, type CoordinatorHandle } from '../../coordinator/server.ts';
import {
  Cluster,
  http,
  keysUnder,
  LogCapture,
  REDIS_URL,
  splitKey,
  testPrefix,
  TOKENS,
  type ErrorReply,
} from './helpers.ts';

const TENANT = 'acme';
const PATH = `/v1/tenants/${TENANT}/keys/1/evaluate`;
/** The smallest budget the configuration allows: one full batch. */
const BUDGET = 256;

function installKey(cluster: Cluster, threshold: number): void {
  const key = splitKey(
    TENANT,
    1,
    threshold,
    cluster.nodes.map((n) => n.id),
  );
  for (const node of cluster.nodes) node.install(key.keyPackage, key.shares.get(node.id)!);
}

/** `n` valid blinded elements, base64url. */
function blinded(n: number): string[] {
  const docs = Array.from({ length: n }, (_, i) => documentInput(TENANT, 1, `doc-${i}`));
  return blind(docs).blinded.map((b) => toB64(b.toBytes()));
}

function post(port: number, elements: string[]) {
  return http<ErrorReply>(port, 'POST', PATH, {
    json: { blinded: elements },
    token: TOKENS.client,
  });
}

function evaluations(cluster: Cluster): number {
  return cluster.nodes.flatMap((n) => n.received).filter((t) => t === 'evaluate').length;
}

describe('coordinator: rate limit', function () {
  this.timeout(20_000);
  let cluster: Cluster | undefined;
  let second: CoordinatorHandle | undefined;

  afterEach(async () => {
    await second?.close();
    second = undefined;
    await cluster?.close();
    cluster = undefined;
  });

  it('refuses a burst past the budget with 429, Retry-After and ERR_RATE_LIMITED', async () => {
    cluster = await Cluster.start({ nodes: 3, config: { rateElementsPerMin: BUDGET } });
    installKey(cluster, 2);
    await cluster.waitForNodes();

    const ok = await post(cluster.port, blinded(200));
    expect(ok.status, JSON.stringify(ok.body)).to.equal(200);
    const asked = evaluations(cluster);

    const refused = await post(cluster.port, blinded(100));
    expect(refused.status).to.equal(429);
    expect(refused.body.error.code).to.equal('ERR_RATE_LIMITED');
    const wait = (refused.body.error.details as { retryAfterSeconds: number }).retryAfterSeconds;
    expect(wait).to.be.within(1, 60);
    expect(refused.headers.get('retry-after')).to.equal(String(wait));
    expect(evaluations(cluster), 'no node asked').to.equal(asked);
    // The counter lives under the run's prefix, nowhere else.
    expect(await keysUnder(cluster.redis, `${cluster.prefix}ratelimit`)).to.have.length(1);
  });

  it('shares one budget between two coordinators on the same prefix', async () => {
    cluster = await Cluster.start({ nodes: 3, config: { rateElementsPerMin: BUDGET } });
    installKey(cluster, 2);
    await cluster.waitForNodes();
    second = await startCoordinator(cluster.config, new LogCapture().logger);

    const ok = await post(cluster.port, blinded(200));
    expect(ok.status, JSON.stringify(ok.body)).to.equal(200);
    const refused = await post(second.port, blinded(100));
    expect(refused.status).to.equal(429);
    expect(refused.body.error.code).to.equal('ERR_RATE_LIMITED');
    expect(refused.headers.get('retry-after')).to.match(/^[1-9][0-9]*$/);
  });

  it('passes on the nodes refusing with ERR_RATE_LIMITED as a 429 with their longest wait', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    installKey(cluster, 2);
    await cluster.waitForNodes();
    for (const [id, wait] of [
      [1, 3],
      [2, 7],
      [3, 5],
    ] as const) {
      cluster.node(id).behaviour = 'rate-limited';
      cluster.node(id).retryAfterSeconds = wait;
    }

    const res = await post(cluster.port, blinded(2));
    expect(res.status, JSON.stringify(res.body)).to.equal(429);
    expect(res.body.error.code).to.equal('ERR_RATE_LIMITED');
    expect(res.body.error.details).to.deep.include({ nodes: [1, 2, 3], retryAfterSeconds: 7 });
    expect(res.headers.get('retry-after')).to.equal('7');
  });

  it('counts in memory, with a warning, when Redis fails: requests go on, the budget holds', async () => {
    // Never connected: every command fails at once, as with Redis down.
    const redis = new Redis(REDIS_URL, { lazyConnect: true });
    const logs = new LogCapture();
    let fallbacks = 0;
    try {
      const limit = new RateLimit({
        redis,
        prefix: testPrefix(),
        points: BUDGET,
        durationSeconds: 60,
        onFallback: () => fallbacks++,
      });
      await limit.take(TENANT, 'client-user', 100, logs.logger);
      await limit.take(TENANT, 'client-user', 100, logs.logger);
      let refused: unknown;
      await limit.take(TENANT, 'client-user', 100, logs.logger).catch((e: unknown) => {
        refused = e;
      });
      expect((refused as { code?: string }).code).to.equal('ERR_RATE_LIMITED');
      // Another subject has a budget of its own.
      await limit.take(TENANT, 'someone-else', 100, logs.logger);
      expect(fallbacks).to.equal(4);
      const warnings = logs.find(/rate limit unavailable in Redis/);
      expect(warnings).to.have.length(1);
      expect(warnings[0]).to.include({ level: 40, tenant: TENANT });
    } finally {
      redis.disconnect();
    }
  });
});
