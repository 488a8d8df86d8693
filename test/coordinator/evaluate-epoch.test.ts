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
  epoch?: number,
): Promise<HttpResult<EvaluateResponse & ErrorReply>> {
  return http<EvaluateResponse & ErrorReply>(cluster.port, 'POST', PATH, {
    json: { blinded: state.blinded.map((b) => toB64(b.toBytes())), ...(epoch ? { epoch } : {}) },
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

  /** Key 1 of acme on nodes 1-3 (t = 2, epoch 1), after one evaluation that caches it. */
  async function epochOne(nodes: number) {
    cluster = await Cluster.start({ nodes });
    for (const n of cluster.nodes) n.refuseReplays = true;
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
    expect(asked).to.deep.equal([1, 1]);
    for (const n of cluster.nodes) n.epochsAsked.length = 0;
    return { key, state };
  }

  /**
   * Reshare to epoch 2 dealt by nodes 1 and 2, finished: members of `to` hold only the new
   * shares, the others are removed; Redis loses the old package, as the reshare's switch
   * replaces it, while the coordinator still has epoch 1 cached.
   */
  async function reshareTo(key: { shares: Map<number, bigint> }, to: number[]) {
    const dealers = [1, 2].map((id) => ({ id, value: key.shares.get(id)! }));
    const next = plainReshare({ tenant: TENANT, version: 1, epoch: 1 }, dealers, 2, to);
    for (const node of cluster!.nodes) {
      node.keys.delete(`${TENANT}/1`);
      node.removed = !to.includes(node.id);
    }
    for (const s of next.shares) cluster!.node(s.id).install(next.keyPackage, s.value);
    await cluster!.redis.del(`${cluster!.prefix}tenant:${TENANT}`);
    return next;
  }

  it('asks for the package epoch, returns it, and follows a reshare within the request', async () => {
    // Six nodes: 1-3 hold epoch 1; 4-6 are spares, then the whole new committee.
    const { key, state } = await epochOne(6);
    const next = await reshareTo(key, [4, 5, 6]);
    const second = await post(cluster!, state);
    expect(second.status, JSON.stringify(second.body)).to.equal(200);
    expect(second.body.epoch).to.equal(2);
    expect(second.body.partials.every((p) => p.epoch === 2)).to.equal(true);
    expect(second.body.partials.every((p) => p.node >= 4)).to.equal(true);
    expect(outputs(next.keyPackage, state, second.body)).to.deep.equal(expected(key.secret, state));
    // The retry asked only for epoch 2, and only nodes of epoch 2.
    expect(cluster!.nodes.flatMap((n) => n.epochsAsked)).to.deep.equal([2, 2]);
  });

  it('never shows a proof twice to a node: ERR_EPOCH_MISMATCH, then the next request works', async () => {
    // Epoch 2 is nodes 2, 3, 4: 2 and 3 saw the proof refusing epoch 1, 4 alone is too few.
    const { key, state } = await epochOne(4);
    const next = await reshareTo(key, [2, 3, 4]);
    const second = await post(cluster!, state);
    expect(second.status, JSON.stringify(second.body)).to.equal(409);
    expect(second.body.error.code).to.equal('ERR_EPOCH_MISMATCH');
    expect(second.body.error.details).to.include({ requested: 1, current: 2 });
    expect(cluster!.nodes.flatMap((n) => n.epochsAsked)).to.deep.equal([1, 1]);

    // A new request (new proof): the coordinator has the epoch-2 package by now.
    const third = await post(cluster!, state);
    expect(third.status, JSON.stringify(third.body)).to.equal(200);
    expect(third.body.epoch).to.equal(2);
    expect(outputs(next.keyPackage, state, third.body)).to.deep.equal(expected(key.secret, state));
  });

  it('a client naming the newer epoch of its package: the stale replica reloads and asks for it at once', async () => {
    // The same committee as above, where a request without the hint fails once: the client got
    // the epoch-2 package from the registry while this replica still had epoch 1 cached.
    const { key, state } = await epochOne(4);
    const next = await reshareTo(key, [2, 3, 4]);
    const second = await post(cluster!, state, 2);
    expect(second.status, JSON.stringify(second.body)).to.equal(200);
    expect(second.body.epoch).to.equal(2);
    expect(outputs(next.keyPackage, state, second.body)).to.deep.equal(expected(key.secret, state));
    expect(cluster!.nodes.flatMap((n) => n.epochsAsked)).to.deep.equal([2, 2]);
  });

  it('a client naming an epoch that does not exist: served from the package there is', async () => {
    const { key, state } = await epochOne(3);
    const again = await post(cluster!, state, 99);
    expect(again.status, JSON.stringify(again.body)).to.equal(200);
    expect(again.body.epoch).to.equal(1);
    expect(outputs(key.keyPackage, state, again.body)).to.deep.equal(expected(key.secret, state));
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
