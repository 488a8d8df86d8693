/**
 * The hot path across a reshare (PLAN.md "Evaluate with epochs"): the coordinator asks for the
 * shares of its cached package's epoch, passes the epoch to the client, excludes an answer of
 * another epoch, and when the nodes have moved on (ERR_EPOCH_MISMATCH) drops its cached package
 * and retries once with the new one. The new epoch's shares come from test/helpers/plain-reshare.ts,
 * independent of the coordinator; outputs are checked against the plain VOPRF of the whole key.
 */
import { expect } from 'chai';
import { ristretto255_oprf } from '@noble/curves/ed25519.js';
import { documentInput } from '../../shared/document.ts';
import { decodeElementB64, encodeScalar, fromB64, toB64 } from '../../shared/encoding.ts';
import { parseKeyPackage, type KeyPackage } from '../../shared/key-package.ts';
import type { EvaluateResponse } from '../../shared/messages.ts';
import { blind, deriveOutputs, type BlindState } from '../../shared/voprf-client.ts';
import { plainReshare } from '../helpers/plain-reshare.ts';
import { Cluster, http, splitKey, TOKENS, type ErrorReply, type HttpResult } from './helpers.ts';

const voprf = ristretto255_oprf.voprf as unknown as {
  evaluate(secretKey: Uint8Array, input: Uint8Array): Uint8Array;
};

const TENANT = 'acme';
const PATH = `/v1/tenants/${TENANT}/keys/1/evaluate`;

function post(
  cluster: Cluster,
  state: BlindState,
): Promise<HttpResult<EvaluateResponse & ErrorReply>> {
  return http<EvaluateResponse & ErrorReply>(cluster.port, 'POST', PATH, {
    json: { blinded: state.blinded.map((b) => toB64(b.toBytes())) },
    token: TOKENS.client,
  });
}

function outputs(pkg: KeyPackage, state: BlindState, body: EvaluateResponse): Uint8Array[] {
  const partials = body.partials.map((p) => ({
    node: p.node,
    evaluated: p.evaluated.map((e, i) => decodeElementB64(e, `evaluated[${i}]`)),
    proof: fromB64(p.proof, 'proof'),
  }));
  const r = deriveOutputs(parseKeyPackage(pkg), state, partials);
  expect(r.rejected).to.deep.equal([]);
  return r.outputs;
}

function expected(secret: bigint, state: BlindState): Uint8Array[] {
  return state.inputs.map((input) => voprf.evaluate(encodeScalar(secret), input));
}

describe('coordinator: evaluate with epochs', function () {
  let cluster: Cluster | undefined;

  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  it('asks for the package epoch, returns it, and follows a reshare with one retry', async () => {
    // Four nodes: 1-3 hold epoch 1 (2 of 3); node 4 is a spare without a share.
    cluster = await Cluster.start({ nodes: 4 });
    const key = splitKey(TENANT, 1, 2, [1, 2, 3]);
    for (const id of [1, 2, 3]) cluster.node(id).install(key.keyPackage, key.shares.get(id)!);
    await cluster.waitForNodes();
    const state = blind([documentInput(TENANT, 1, 'invoice-1.pdf')]);

    const first = await post(cluster, state);
    expect(first.status, JSON.stringify(first.body)).to.equal(200);
    expect(first.body.epoch).to.equal(1);
    expect(first.body.partials.every((p) => p.epoch === 1)).to.equal(true);
    expect(outputs(key.keyPackage, state, first.body)).to.deep.equal(expected(key.secret, state));
    const asked = cluster.nodes.flatMap((n) => n.epochsAsked);
    expect(asked).to.have.length(2);
    expect(asked.every((e) => e === 1)).to.equal(true);

    // Reshare to epoch 2: committee 2, 3, 4 with t = 2, dealt by nodes 1 and 2. The nodes hold
    // only the new shares (finished); Redis loses the old package, as the reshare's switch
    // replaces it, but the coordinator still has epoch 1 cached.
    const dealers = [1, 2].map((id) => ({ id, value: key.shares.get(id)! }));
    const next = plainReshare({ tenant: TENANT, version: 1, epoch: 1 }, dealers, 2, [2, 3, 4]);
    for (const node of cluster.nodes) node.keys.delete(`${TENANT}/1`);
    for (const s of next.shares) cluster.node(s.id).install(next.keyPackage, s.value);
    await cluster.redis.del(`${cluster.prefix}tenant:${TENANT}`);
    for (const n of cluster.nodes) n.epochsAsked.length = 0;

    const second = await post(cluster, state);
    expect(second.status, JSON.stringify(second.body)).to.equal(200);
    expect(second.body.epoch).to.equal(2);
    expect(second.body.partials.every((p) => p.epoch === 2)).to.equal(true);
    expect(outputs(next.keyPackage, state, second.body)).to.deep.equal(expected(key.secret, state));
    const retried = cluster.nodes.flatMap((n) => n.epochsAsked);
    expect(retried.filter((e) => e === 1)).to.not.have.length(0);
    expect(retried.filter((e) => e === 2)).to.have.length(2);
    // Node 1 has no share of epoch 2: it was never asked for one.
    expect(cluster.node(1).epochsAsked).to.not.include(2);
  });

  it('never asks a node that has no verification share in the package', async () => {
    cluster = await Cluster.start({ nodes: 4 });
    const key = splitKey(TENANT, 1, 2, [1, 2, 3]);
    for (const id of [1, 2, 3]) cluster.node(id).install(key.keyPackage, key.shares.get(id)!);
    await cluster.waitForNodes();
    // Node 1 and 2 fail: only 3 is left among the holders, and the spare 4 must not be used.
    cluster.node(1).behaviour = 'refuse';
    cluster.node(2).behaviour = 'wrong-point';
    const res = await post(cluster, blind([documentInput(TENANT, 1, 'a')]));
    expect(res.status).to.equal(503);
    expect(cluster.node(4).epochsAsked).to.deep.equal([]);
  });

  it('excludes an answer that names another epoch and names the node', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    const key = splitKey(TENANT, 1, 2, [1, 2, 3]);
    for (const id of [1, 2, 3]) cluster.node(id).install(key.keyPackage, key.shares.get(id)!);
    await cluster.waitForNodes();
    cluster.node(1).answerEpoch = 7;
    const state = blind([documentInput(TENANT, 1, 'b')]);
    const res = await post(cluster, state);
    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    expect(res.body.partials.map((p) => p.node)).to.not.include(1);
    expect(outputs(key.keyPackage, state, res.body)).to.deep.equal(expected(key.secret, state));
  });

  it('fails with the nodes refusal when the reloaded package has the same epoch', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    const key = splitKey(TENANT, 1, 2, [1, 2, 3]);
    const moved = { ...key.keyPackage, epoch: 3 };
    // The nodes say their share is of epoch 3 while Redis (and the cache) keep epoch 1.
    for (const id of [1, 2, 3]) cluster.node(id).install(key.keyPackage, key.shares.get(id)!);
    await cluster.waitForNodes();
    expect((await post(cluster, blind([documentInput(TENANT, 1, 'c')]))).status).to.equal(200);
    for (const id of [1, 2, 3]) cluster.node(id).install(moved, key.shares.get(id)!);
    for (const n of cluster.nodes) n.epochsAsked.length = 0;
    const res = await post(cluster, blind([documentInput(TENANT, 1, 'c')]));
    expect(res.status, JSON.stringify(res.body)).to.equal(409);
    expect(res.body.error.code).to.equal('ERR_EPOCH_MISMATCH');
    // One round only: the reloaded package was still epoch 1, so no retry was made.
    expect(cluster.nodes.flatMap((n) => n.epochsAsked).every((e) => e === 1)).to.equal(true);
  });
});
