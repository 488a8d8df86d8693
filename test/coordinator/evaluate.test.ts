/**
 * The hot path end to end through fake nodes: routing to t share holders, the proof check that
 * excludes a lying node, timeouts and hedging that route around a silent one, and the bounded
 * ERR_TOO_FEW_NODES when t valid answers cannot be had. Outputs are checked against the plain
 * RFC 9497 VOPRF of the whole key, which only the test knows.
 */
import { expect } from 'chai';
import { ristretto255_oprf } from '@noble/curves/ed25519.js';
import { documentInput } from '../../shared/document.ts';
import { decodeElementB64, encodeScalar, fromB64, toB64 } from '../../shared/encoding.ts';
import { parseKeyPackage, type KeyPackage } from '../../shared/key-package.ts';
import type { EvaluateResponse } from '../../shared/messages.ts';
import { blind, deriveOutputs, type BlindState } from '../../shared/voprf-client.ts';
import {
  Cluster,
  createTenant,
  http,
  splitKey,
  TOKENS,
  waitFor,
  type ErrorReply,
  type HttpResult,
  type StatusReply,
} from './helpers.ts';

// @noble/curves implements voprf.evaluate (RFC 9497 section 3.3.2's single-party Evaluate) but
// its type declarations only list it for POPRF.
const voprf = ristretto255_oprf.voprf as unknown as {
  evaluate(secretKey: Uint8Array, input: Uint8Array): Uint8Array;
};

const TENANT = 'acme';
const PATH = `/v1/tenants/${TENANT}/keys/1/evaluate`;

function installKey(
  cluster: Cluster,
  threshold: number,
): { secret: bigint; keyPackage: KeyPackage } {
  const ids = cluster.nodes.map((n) => n.id);
  const key = splitKey(TENANT, 1, threshold, ids);
  for (const node of cluster.nodes) node.install(key.keyPackage, key.shares.get(node.id)!);
  return key;
}

function blindDocs(...docs: string[]): BlindState {
  return blind(docs.map((d) => documentInput(TENANT, 1, d)));
}

function post(
  cluster: Cluster,
  state: BlindState,
  token = TOKENS.client,
): Promise<HttpResult<EvaluateResponse & ErrorReply>> {
  return http<EvaluateResponse & ErrorReply>(cluster.port, 'POST', PATH, {
    json: { blinded: state.blinded.map((b) => toB64(b.toBytes())) },
    token,
  });
}

/** What the client does with the answer: verify every partial, combine t, finalize. */
function finish(pkg: KeyPackage, state: BlindState, body: EvaluateResponse): Uint8Array[] {
  const partials = body.partials.map((p) => ({
    node: p.node,
    evaluated: p.evaluated.map((e, i) => decodeElementB64(e, `evaluated[${i}]`)),
    proof: fromB64(p.proof, 'proof'),
  }));
  const { outputs, rejected } = deriveOutputs(parseKeyPackage(pkg), state, partials);
  expect(rejected).to.deep.equal([]);
  return outputs;
}

function expected(secret: bigint, state: BlindState): Uint8Array[] {
  return state.inputs.map((input) => voprf.evaluate(encodeScalar(secret), input));
}

function evaluations(cluster: Cluster, id: number): number {
  return cluster.node(id).received.filter((t) => t === 'evaluate').length;
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

describe('coordinator: evaluate', function () {
  let cluster: Cluster | undefined;

  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  it('routes to t nodes and the partials combine to the plain VOPRF output of the key', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    const key = installKey(cluster, 2);
    await cluster.waitForNodes();
    const state = blindDocs('invoice-1.pdf', 'invoice-2.pdf', 'contract.docx');

    const res = await post(cluster, state);

    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    const body = res.body as EvaluateResponse;
    expect(body).to.include({ tenant: TENANT, version: 1, threshold: 2 });
    expect(body.partials).to.have.length(2);
    expect([1, 2, 3].map((id) => evaluations(cluster!, id)).reduce((a, b) => a + b)).to.equal(2);
    expect(finish(key.keyPackage, state, body)).to.deep.equal(expected(key.secret, state));
  });

  it('gives the same output through any t nodes', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    const key = installKey(cluster, 2);
    const state = blindDocs('same-document');
    const used = new Set<string>();
    for (const fastest of [1, 2, 3]) {
      await makeFastest(cluster, fastest);
      const res = await post(cluster, state);
      expect(res.status).to.equal(200);
      used.add((res.body as EvaluateResponse).partials.map((p) => p.node).join());
      expect(finish(key.keyPackage, state, res.body)).to.deep.equal(expected(key.secret, state));
    }
    expect(used.size).to.be.greaterThan(1);
  });

  it('excludes a node whose evaluation is a wrong point, names it, and still succeeds', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    const key = installKey(cluster, 2);
    cluster.node(1).behaviour = 'wrong-point';
    await makeFastest(cluster, 1);
    const state = blindDocs('a', 'b');

    const res = await post(cluster, state);

    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    const body = res.body as EvaluateResponse;
    expect(evaluations(cluster, 1)).to.equal(1);
    expect(body.partials.map((p) => p.node)).to.deep.equal([2, 3]);
    expect(finish(key.keyPackage, state, body)).to.deep.equal(expected(key.secret, state));
    const warned = cluster.logs.find(/invalid proof/);
    expect(warned).to.have.length(1);
    expect(warned[0]).to.include({ level: 40, node: 1, code: 'ERR_PROOF_INVALID', tenant: TENANT });
  });

  it('times out a node that never answers and routes around it', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    const key = installKey(cluster, 2);
    cluster.node(1).behaviour = 'silent';
    await makeFastest(cluster, 1);
    const state = blindDocs('a');

    const res = await post(cluster, state);

    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    expect(evaluations(cluster, 1)).to.equal(1);
    expect((res.body as EvaluateResponse).partials.map((p) => p.node)).to.deep.equal([2, 3]);
    expect(finish(key.keyPackage, state, res.body)).to.deep.equal(expected(key.secret, state));
    const failed = cluster.logs.find('node failed to evaluate');
    expect(failed.map((l) => [l.node, l.code])).to.deep.equal([[1, 'ERR_NODE_UNAVAILABLE']]);
  });

  it('waits past its timeout for a slow node nobody can replace, asking the others meanwhile', async () => {
    cluster = await Cluster.start({
      nodes: 3,
      config: {
        nodeTimeoutMs: 300,
        evaluateDeadlineMs: 5000,
        perElementMs: 0,
        hedgeDelayMs: 60_000,
      },
    });
    const key = installKey(cluster, 2);
    // Ranked 2, 1, 3: the first pair asked is {2, 1}. Node 2 answers only after three times its
    // timeout, and node 3, the one left to ask in its place, never does.
    const pong = new Map([
      [2, 0],
      [1, 30],
      [3, 60],
    ]);
    for (const n of cluster.nodes) n.pongDelayMs = pong.get(n.id)!;
    await waitFor('node ranking', async () => {
      const nodes = (await http<StatusReply>(cluster!.port, 'GET', '/v1/status')).body.nodes;
      const ms = (id: number) => nodes.find((n) => n.id === id)!.latencyMs;
      const [a, b, c] = [ms(2), ms(1), ms(3)];
      return a !== null && b !== null && c !== null && a + 10 < b && b + 10 < c;
    });
    cluster.node(2).evaluateDelayMs = 900;
    cluster.node(3).behaviour = 'silent';
    const state = blindDocs('slow');

    const res = await post(cluster, state);

    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    expect((res.body as EvaluateResponse).partials.map((p) => p.node)).to.deep.equal([1, 2]);
    expect(finish(key.keyPackage, state, res.body)).to.deep.equal(expected(key.secret, state));
    // Node 3 was asked in node 2's place when node 2 ran past its timeout.
    expect(evaluations(cluster, 3)).to.equal(1);
  });

  it('hedges: a backup node is asked when one is slow, long before its timeout', async () => {
    cluster = await Cluster.start({
      nodes: 3,
      config: { hedgeDelayMs: 50, nodeTimeoutMs: 20_000, evaluateDeadlineMs: 30_000 },
    });
    installKey(cluster, 2);
    cluster.node(1).behaviour = 'silent';
    await makeFastest(cluster, 1);
    const started = performance.now();

    const res = await post(cluster, blindDocs('a'));

    expect(res.status).to.equal(200);
    expect((res.body as EvaluateResponse).partials.map((p) => p.node)).to.deep.equal([2, 3]);
    // The silent node was asked and never answered: only the hedge can have finished this.
    expect(evaluations(cluster, 1)).to.equal(1);
    expect(performance.now() - started).to.be.below(10_000);
  });

  it('answers ERR_TOO_FEW_NODES at once when fewer than t holders are connected', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    installKey(cluster, 2);
    await cluster.waitForNodes();
    expect((await post(cluster, blindDocs('warm-up'))).status).to.equal(200);
    await cluster.node(2).stop();
    await cluster.node(3).stop();
    await cluster.waitForNodes((n) => n.connected === (n.id === 1));
    const started = performance.now();

    const res = await post(cluster, blindDocs('a'));

    expect(performance.now() - started).to.be.below(cluster.config.evaluateDeadlineMs);
    expect(res.status).to.equal(503);
    expect(res.body.error.code).to.equal('ERR_TOO_FEW_NODES');
    expect(res.body.error.details).to.deep.include({ needed: 2, valid: 0 });
    expect(res.body.error.details!.failed).to.deep.equal([
      { node: 2, code: 'ERR_NODE_UNAVAILABLE', message: 'node 2 is not connected' },
      { node: 3, code: 'ERR_NODE_UNAVAILABLE', message: 'node 3 is not connected' },
    ]);
  });

  it('answers ERR_TOO_FEW_NODES naming the silent nodes once their timeouts pass', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    installKey(cluster, 2);
    await cluster.waitForNodes();
    expect((await post(cluster, blindDocs('warm-up'))).status).to.equal(200);
    cluster.node(2).behaviour = 'silent';
    cluster.node(3).behaviour = 'silent';

    const res = await post(cluster, blindDocs('a'));

    expect(res.status).to.equal(503);
    expect(res.body.error.code).to.equal('ERR_TOO_FEW_NODES');
    const failed = res.body.error.details!.failed as { node: number; code: string }[];
    expect(failed.map((f) => [f.node, f.code])).to.deep.equal([
      [2, 'ERR_NODE_UNAVAILABLE'],
      [3, 'ERR_NODE_UNAVAILABLE'],
    ]);
  });

  it('ends at the overall deadline even when per-node timeouts are longer', async () => {
    cluster = await Cluster.start({
      nodes: 3,
      config: { nodeTimeoutMs: 60_000, evaluateDeadlineMs: 300, perElementMs: 0 },
    });
    installKey(cluster, 2);
    await cluster.waitForNodes();
    expect((await post(cluster, blindDocs('warm-up'))).status).to.equal(200);
    for (const n of cluster.nodes) n.behaviour = 'silent';
    const started = performance.now();

    const res = await post(cluster, blindDocs('a'));

    expect(performance.now() - started).to.be.below(10_000);
    expect(res.status).to.equal(503);
    expect(res.body.error.code).to.equal('ERR_TOO_FEW_NODES');
    const failed = res.body.error.details!.failed as { message: string }[];
    expect(failed).to.have.length(2);
    for (const f of failed) expect(f.message).to.match(/before the 300 ms deadline/);
  });

  it('passes on a refusal that t nodes agree on instead of blaming the nodes', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    installKey(cluster, 2);
    await cluster.waitForNodes();
    for (const n of cluster.nodes) n.behaviour = 'refuse';

    const res = await post(cluster, blindDocs('a'));

    expect(res.status).to.equal(401);
    expect(res.body.error.code).to.equal('ERR_UNAUTHORIZED');
  });

  it('never logs tokens, blinded elements or evaluations', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    installKey(cluster, 2);
    await cluster.waitForNodes();
    cluster.node(1).behaviour = 'wrong-point';
    const state = blindDocs('secret-document');
    const res = await post(cluster, state);
    expect(res.status).to.equal(200);
    await createTenant(cluster, 'x', { token: 'wrong' });

    const log = cluster.logs.raw.join('');
    expect(log).to.not.include(TOKENS.client);
    expect(log).to.not.include(TOKENS.cluster);
    expect(log).to.not.include(TOKENS.admin);
    for (const b of state.blinded) expect(log).to.not.include(toB64(b.toBytes()));
    for (const p of (res.body as EvaluateResponse).partials) {
      for (const e of p.evaluated) expect(log).to.not.include(e);
      expect(log).to.not.include(p.proof);
    }
  });

  it('reads the key package from Redis once and serves later requests from memory', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    installKey(cluster, 2);
    await cluster.waitForNodes();
    expect((await post(cluster, blindDocs('a'))).status).to.equal(200);
    // With the entry gone from Redis and the nodes no longer serving key packages, only the
    // in-memory cache can still answer.
    await cluster.redis.del(`${cluster.prefix}tenant:${TENANT}`);
    for (const n of cluster.nodes) n.keys.get(`${TENANT}/1`)!.keyPackage.tenant = 'changed';
    expect((await post(cluster, blindDocs('b'))).status).to.equal(200);
  });
});
