/**
 * The hot path under load (DESIGN.md section 7): admission control refuses work beyond the bound
 * at once, with a coded 503 and Retry-After, and before any node is asked; a stalled event loop
 * does not turn answers already in the sockets into timeouts; hedging adds work only for a node
 * that is slow by its own standard, and never at the admission limit. Stalls are made with a
 * busy wait right after a node has answered, so that its answer sits unread while timers expire.
 */
import { expect } from 'chai';
import { Point, toB64 } from '../../shared/encoding.ts';
import type { EvaluateResponse } from '../../shared/messages.ts';
import {
  Cluster,
  http,
  splitKey,
  TOKENS,
  waitFor,
  type ErrorReply,
  type HttpResult,
  type StatusReply,
} from './helpers.ts';
import { stallEventLoop } from './stall.ts';

const TENANT = 'acme';
const STALL_MS = 400;
/** Node timeouts far beyond any held answer, so that only admission decides. */
const PATIENT = { nodeTimeoutMs: 30_000, evaluateDeadlineMs: 60_000 };

type Reply = EvaluateResponse & ErrorReply;

function installKey(cluster: Cluster, threshold: number): void {
  const key = splitKey(
    TENANT,
    1,
    threshold,
    cluster.nodes.map((n) => n.id),
  );
  for (const node of cluster.nodes) node.install(key.keyPackage, key.shares.get(node.id)!);
}

let elementCounter = 0;

/**
 * `count` fresh blinded elements, base64url, as a client sends them. Any valid elements will do
 * for the coordinator and the fake nodes: multiples of the base point are much cheaper to make
 * than blinded hashes of documents.
 */
function blinded(count: number): string[] {
  return Array.from({ length: count }, () =>
    toB64(Point.BASE.multiply(BigInt(++elementCounter) * 7919n).toBytes()),
  );
}

function post(cluster: Cluster, elements: string[], tenant = TENANT): Promise<HttpResult<Reply>> {
  return http<Reply>(cluster.port, 'POST', `/v1/tenants/${tenant}/keys/1/evaluate`, {
    json: { blinded: elements },
    token: TOKENS.client,
  });
}

function evaluations(cluster: Cluster): number {
  return cluster.nodes
    .map((n) => n.received.filter((t) => t === 'evaluate').length)
    .reduce((a, b) => a + b, 0);
}

/** Every node stalls the shared event loop right after the `nth` evaluate answer overall. */
function stallAfterAnswer(cluster: Cluster, nth: number, ms: number): void {
  let answers = 0;
  for (const node of cluster.nodes) {
    node.afterEvaluate = () => {
      if (++answers === nth) stallEventLoop(ms);
    };
  }
}

/** Hold every evaluate answer until the returned function is called. */
function holdAnswers(cluster: Cluster): () => void {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  for (const node of cluster.nodes) node.hold = gate;
  return () => {
    for (const node of cluster.nodes) node.hold = null;
    release();
  };
}

/** Node `id` answers pings at once, the others after a delay: the coordinator ranks it first. */
async function makeFastest(cluster: Cluster, id: number): Promise<void> {
  for (const n of cluster.nodes) n.pongDelayMs = n.id === id ? 0 : 40;
  await waitFor('node ranking', async () => {
    const res = await http<StatusReply>(cluster.port, 'GET', '/v1/status');
    const nodes = res.body.nodes;
    const mine = nodes.find((n) => n.id === id)!;
    return nodes.every(
      (n) =>
        n.connected && n.latencyMs !== null && (n.id === id || n.latencyMs > mine.latencyMs! + 10),
    );
  });
}

/** Requests in pairs until every node has answered at least one evaluation. */
async function warmUp(cluster: Cluster): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const results = await Promise.all([post(cluster, blinded(1)), post(cluster, blinded(1))]);
    for (const r of results) expect(r.status, JSON.stringify(r.body)).to.equal(200);
    if (cluster.nodes.every((n) => n.received.includes('evaluate'))) return;
  }
  throw new Error('warm-up did not reach every node');
}

describe('coordinator: evaluate under load', function () {
  let cluster: Cluster | undefined;

  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  describe('timers against a stalled event loop', function () {
    it('does not time out a node whose answer is in the socket when its timer fires', async () => {
      cluster = await Cluster.start({ nodes: 3, config: { nodeTimeoutMs: 100 } });
      installKey(cluster, 2);
      await cluster.waitForNodes();
      expect((await post(cluster, blinded(1))).status).to.equal(200);
      const asked = evaluations(cluster);
      stallAfterAnswer(cluster, 2, STALL_MS);

      const res = await post(cluster, blinded(2));

      expect(res.status, JSON.stringify(res.body)).to.equal(200);
      expect(res.body.partials).to.have.length(2);
      expect(evaluations(cluster) - asked).to.equal(2);
      expect(cluster.logs.find('node failed to evaluate')).to.deep.equal([]);
    });

    it('does not end a request at its deadline while answers that came in time are unread', async () => {
      cluster = await Cluster.start({
        nodes: 3,
        config: { nodeTimeoutMs: 60_000, evaluateDeadlineMs: 150 },
      });
      installKey(cluster, 2);
      await cluster.waitForNodes();
      expect((await post(cluster, blinded(1))).status).to.equal(200);
      stallAfterAnswer(cluster, 2, STALL_MS);

      const res = await post(cluster, blinded(2));

      expect(res.status, JSON.stringify(res.body)).to.equal(200);
      expect(res.body.partials).to.have.length(2);
    });
  });

  describe('admission control', function () {
    it('refuses at once with 503 ERR_OVERLOADED and Retry-After, asking no node', async () => {
      cluster = await Cluster.start({ nodes: 3, config: { ...PATIENT, maxInflightElements: 256 } });
      installKey(cluster, 2);
      await cluster.waitForNodes();
      const release = holdAnswers(cluster);
      try {
        const first = post(cluster, blinded(200));
        await waitFor('the first request at the nodes', () => evaluations(cluster!) === 2);

        const refused = await post(cluster, blinded(100));

        expect(refused.status).to.equal(503);
        expect(Object.keys(refused.body)).to.deep.equal(['error']);
        expect(refused.body.error.code).to.equal('ERR_OVERLOADED');
        expect(refused.body.error.details).to.deep.equal({ retryAfterSeconds: 1 });
        expect(refused.headers.get('retry-after')).to.equal('1');
        expect(evaluations(cluster)).to.equal(2);
        const warned = cluster.logs.find('overloaded: evaluation refused');
        expect(warned).to.have.length(1);
        expect(warned[0]).to.include({ level: 40, tenant: TENANT, batch: 100, limit: 256 });

        release();
        expect((await first).status).to.equal(200);
        expect((await post(cluster, blinded(100))).status).to.equal(200);
      } finally {
        release();
      }
    });

    it('keeps the last eighth of the budget for small batches', async () => {
      cluster = await Cluster.start({ nodes: 3, config: { ...PATIENT, maxInflightElements: 512 } });
      installKey(cluster, 2);
      await cluster.waitForNodes();
      const release = holdAnswers(cluster);
      try {
        const bulk = post(cluster, blinded(256));
        await waitFor('the bulk request at the nodes', () => evaluations(cluster!) === 2);

        // 256 + 200 would fit in 512, but not without the reserve.
        expect((await post(cluster, blinded(200))).body.error.code).to.equal('ERR_OVERLOADED');
        const small = post(cluster, blinded(16));
        // Admitted: node 3 has it; the other node it needs is busy with the bulk request, so
        // there it waits its turn, at the coordinator.
        await waitFor('the small request at a node', () => evaluations(cluster!) === 3);

        release();
        expect((await bulk).status).to.equal(200);
        expect((await small).status).to.equal(200);
      } finally {
        release();
      }
    });

    it('frees the budget of a request that fails', async () => {
      cluster = await Cluster.start({ nodes: 3, config: { maxInflightElements: 256 } });
      installKey(cluster, 2);
      await cluster.waitForNodes();
      const bad = blinded(256);
      bad[255] = toB64(new Uint8Array(32).fill(0xff));

      expect((await post(cluster, bad)).body.error.code).to.equal('ERR_INVALID_POINT');
      expect((await post(cluster, blinded(256), 'nobody')).body.error.code).to.equal(
        'ERR_UNKNOWN_TENANT',
      );
      for (const n of cluster.nodes) n.behaviour = 'silent';
      expect((await post(cluster, blinded(256))).body.error.code).to.equal('ERR_TOO_FEW_NODES');
      for (const n of cluster.nodes) n.behaviour = 'honest';

      const res = await post(cluster, blinded(256));
      expect(res.status, JSON.stringify(res.body)).to.equal(200);
    });
  });

  describe('a node busy with earlier batches', function () {
    it('gets the next batch only when it has room for it', async () => {
      cluster = await Cluster.start({ nodes: 2, config: PATIENT });
      installKey(cluster, 2);
      await cluster.waitForNodes();
      const release = holdAnswers(cluster);
      try {
        const first = post(cluster, blinded(200));
        await waitFor('the first request at the nodes', () => evaluations(cluster!) === 2);

        const second = post(cluster, blinded(200));
        await waitFor('the second request waiting at the coordinator', async () => {
          const res = await http<StatusReply>(cluster!.port, 'GET', '/v1/status');
          return res.body.nodes.every((n) => n.pending === 2);
        });
        for (const node of cluster.nodes) expect(node.evaluateSizes).to.deep.equal([200]);

        release();
        expect((await first).status).to.equal(200);
        expect((await second).status).to.equal(200);
        for (const node of cluster.nodes) expect(node.evaluateSizes).to.deep.equal([200, 200]);
      } finally {
        release();
      }
    });
  });

  describe('hedging', function () {
    it('does not hedge a node that is slow only as slow as it usually is', async () => {
      cluster = await Cluster.start({
        nodes: 3,
        config: { hedgeDelayMs: 30, nodeTimeoutMs: 10_000, evaluateDeadlineMs: 20_000 },
      });
      installKey(cluster, 2);
      for (const n of cluster.nodes) n.evaluateDelayMs = 150;
      await cluster.waitForNodes();
      await warmUp(cluster);
      const asked = evaluations(cluster);
      const seen = cluster.logs.lines.length;

      const res = await post(cluster, blinded(1));

      expect(res.status).to.equal(200);
      expect(evaluations(cluster) - asked).to.equal(2);
      const hedged = cluster.logs.lines.slice(seen).filter((l) => l.msg === 'node slow: hedging');
      expect(hedged).to.deep.equal([]);
    });

    it('hedges a node that is far slower than it usually is', async () => {
      cluster = await Cluster.start({
        nodes: 3,
        config: { hedgeDelayMs: 30, nodeTimeoutMs: 10_000, evaluateDeadlineMs: 20_000 },
      });
      installKey(cluster, 2);
      for (const n of cluster.nodes) n.evaluateDelayMs = 10;
      await cluster.waitForNodes();
      await warmUp(cluster);
      await makeFastest(cluster, 1);
      cluster.node(1).evaluateDelayMs = 8000;
      const seen = cluster.logs.lines.length;

      const res = await post(cluster, blinded(1));

      expect(res.status).to.equal(200);
      expect(res.body.partials.map((p) => p.node)).to.deep.equal([2, 3]);
      const hedged = cluster.logs.lines.slice(seen).filter((l) => l.msg === 'node slow: hedging');
      expect(hedged.map((l) => l.node)).to.deep.equal([1]);
    });

    it('never hedges while the coordinator is at its admission limit', async () => {
      cluster = await Cluster.start({
        nodes: 3,
        config: { maxInflightElements: 256, hedgeDelayMs: 30, nodeTimeoutMs: 1500 },
      });
      installKey(cluster, 2);
      cluster.node(1).behaviour = 'silent';
      await makeFastest(cluster, 1);

      const res = await post(cluster, blinded(256));

      expect(res.status, JSON.stringify(res.body)).to.equal(200);
      expect(res.body.partials.map((p) => p.node)).to.deep.equal([2, 3]);
      expect(cluster.logs.find('node slow: hedging')).to.deep.equal([]);
      expect(cluster.logs.find(/not hedging: the coordinator is at its admission limit/)).to.not.be
        .empty;
      // Node 3 was asked only when node 1 had timed out.
      const failed = cluster.logs.find('node failed to evaluate');
      expect(failed.map((l) => [l.node, l.code])).to.deep.equal([[1, 'ERR_NODE_UNAVAILABLE']]);
    });
  });

  it('checks proofs inline when KMAAS_VERIFY_WORKERS is 0', async () => {
    cluster = await Cluster.start({ nodes: 3, config: { verifyWorkers: 0 } });
    installKey(cluster, 2);
    cluster.node(1).behaviour = 'wrong-point';
    await makeFastest(cluster, 1);

    const res = await post(cluster, blinded(3));

    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    expect(res.body.partials.map((p) => p.node)).to.deep.equal([2, 3]);
    expect(cluster.logs.find(/invalid proof/)).to.have.length(1);
  });
});
