/**
 * Circuit breakers on the evaluation path, through fake nodes and a real coordinator: a node
 * whose proof fails is excluded from the requests that follow and named at warn; an open node is
 * still asked when the others cannot make t; a half-open node gets an extra probe whose success
 * closes its breaker; GET /v1/status and GET /metrics show it all.
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

const TENANT = 'acme';
type Reply = EvaluateResponse & ErrorReply;

let counter = 0;
function blinded(): string[] {
  return [toB64(Point.BASE.multiply(BigInt(++counter) * 104729n).toBytes())];
}

function post(cluster: Cluster): Promise<HttpResult<Reply>> {
  return http<Reply>(cluster.port, 'POST', `/v1/tenants/${TENANT}/keys/1/evaluate`, {
    json: { blinded: blinded() },
    token: TOKENS.client,
  });
}

function evaluations(cluster: Cluster, id: number): number {
  return cluster.node(id).received.filter((t) => t === 'evaluate').length;
}

async function breakerOf(cluster: Cluster, id: number): Promise<string> {
  const res = await http<StatusReply>(cluster.port, 'GET', '/v1/status');
  return res.body.nodes.find((n) => n.id === id)!.health.breaker.state;
}

/** Node `id` answers pings at once, the others after a delay: the coordinator ranks it first. */
async function makeFastest(cluster: Cluster, id: number): Promise<void> {
  for (const n of cluster.nodes) n.pongDelayMs = n.id === id ? 0 : 40;
  await waitFor('node ranking', async () => {
    const res = await http<StatusReply>(cluster.port, 'GET', '/v1/status');
    const mine = res.body.nodes.find((n) => n.id === id)!;
    return res.body.nodes.every(
      (n) =>
        n.connected && n.latencyMs !== null && (n.id === id || n.latencyMs > mine.latencyMs! + 10),
    );
  });
}

async function start(config: Record<string, unknown> = {}): Promise<Cluster> {
  const cluster = await Cluster.start({ nodes: 3, config });
  const key = splitKey(TENANT, 1, 2, [1, 2, 3]);
  for (const node of cluster.nodes) node.install(key.keyPackage, key.shares.get(node.id)!);
  return cluster;
}

describe('coordinator: circuit breakers on the evaluation path', function () {
  let cluster: Cluster | undefined;

  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  it('excludes a node whose proof fails from the requests that follow, and names it', async () => {
    cluster = await start();
    cluster.node(1).behaviour = 'wrong-point';
    await makeFastest(cluster, 1);

    for (let i = 0; i < 3; i++) {
      const res = await post(cluster);
      expect(res.status, JSON.stringify(res.body)).to.equal(200);
      expect(res.body.partials.map((p) => p.node)).to.deep.equal([2, 3]);
    }

    // Asked once, caught by its proof, then left out although it still ranks first by latency.
    expect(evaluations(cluster, 1)).to.equal(1);
    const opened = cluster.logs.find(/^circuit breaker opened/);
    expect(opened).to.have.length(1);
    expect(opened[0]).to.include({ level: 40, node: 1, reason: 'lied' });
    expect(await breakerOf(cluster, 1)).to.equal('open');

    const metrics = await fetch(`http://127.0.0.1:${cluster.port}/metrics`);
    expect(metrics.headers.get('content-type')).to.match(/^text\/plain/);
    const text = await metrics.text();
    expect(text).to.match(/^kmaas_coordinator_evaluations_total\{outcome="ok"\} 3$/m);
    expect(text).to.match(/^kmaas_coordinator_node_breaker_state\{node="1"\} 2$/m);
    expect(text).to.match(/^kmaas_coordinator_node_breaker_state\{node="2"\} 0$/m);
    expect(text).to.match(/^kmaas_coordinator_breaker_transitions_total\{node="1",to="open"\} 1$/m);
  });

  it('asks a node whose breaker is open when the others cannot make t, and closes it on success', async () => {
    cluster = await start({ breakerFailures: 1, breakerOpenMs: 600_000 });
    cluster.node(1).behaviour = 'silent';
    await makeFastest(cluster, 1);
    expect((await post(cluster)).status).to.equal(200);
    expect(await breakerOf(cluster, 1)).to.equal('open');
    cluster.node(1).behaviour = 'honest';
    await cluster.node(3).stop();
    await cluster.waitForNodes((n) => n.connected === (n.id !== 3));
    const before = evaluations(cluster, 1);

    const res = await post(cluster);

    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    expect(res.body.partials.map((p) => p.node)).to.deep.equal([1, 2]);
    expect(evaluations(cluster, 1)).to.equal(before + 1);
    expect(await breakerOf(cluster, 1)).to.equal('closed');
    expect(cluster.logs.find('circuit breaker closed')[0]).to.include({ node: 1, from: 'open' });
  });

  it('sends a half-open node an extra probe; its success closes the breaker', async () => {
    cluster = await start({ breakerFailures: 1, breakerOpenMs: 300 });
    cluster.node(1).behaviour = 'silent';
    await makeFastest(cluster, 1);
    expect((await post(cluster)).status).to.equal(200);
    // Opened by its timeout (the cool-down may be over by the time status is asked).
    expect(cluster.logs.find('circuit breaker opened')[0]).to.include({
      node: 1,
      reason: 'failures',
    });
    cluster.node(1).behaviour = 'honest';
    await waitFor(
      'the cool-down to end',
      async () => (await breakerOf(cluster!, 1)) === 'half-open',
    );
    const asked = [1, 2, 3].map((id) => evaluations(cluster!, id));

    const res = await post(cluster);

    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    // Nodes 2 and 3 carry the request; node 1 is asked beside them.
    expect([1, 2, 3].map((id) => evaluations(cluster!, id) - asked[id - 1]!)).to.deep.equal([
      1, 1, 1,
    ]);
    await waitFor(
      'the probe to close the breaker',
      async () => (await breakerOf(cluster!, 1)) === 'closed',
    );
    const metrics = await (await fetch(`http://127.0.0.1:${cluster.port}/metrics`)).text();
    expect(metrics).to.match(/^kmaas_coordinator_probes_total 1$/m);
  });
});
