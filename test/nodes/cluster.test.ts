/**
 * Five share nodes in-process on port 0, driven over real WebSockets as the coordinator drives
 * them: DKG, then threshold evaluation through 3 of them, checked against an independent
 * computation: the plain RFC 9497 VOPRF evaluation (@noble) under the key recombined from the
 * shares read back out of the nodes' own databases.
 */
import { expect } from 'chai';
import { ristretto255_oprf } from '@noble/curves/ed25519.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { documentInput } from '../../shared/document.ts';
import { decodeElementB64, encodeScalar, fromB64, Point, toB64 } from '../../shared/encoding.ts';
import { parseKeyPackage, type ParsedKeyPackage } from '../../shared/key-package.ts';
import { interpolateAtZero, type Share } from '../../shared/shamir.ts';
import {
  blind,
  deriveOutputs,
  type BlindState,
  type PartialEvaluation,
} from '../../shared/voprf-client.ts';
import { NodeStore } from '../../nodes/store.ts';
import {
  capturingLogger,
  ceremonyId,
  CLUSTER_TOKEN,
  Cluster,
  evaluateBody,
  ISSUER,
  runDkg,
  type DkgResult,
} from './helpers.ts';

const TENANT = 'acme';
// Issued when the suite reaches this file, not when mocha loads it: tokens live 10 minutes.
let USER: Awaited<ReturnType<typeof ISSUER.user>>;

/**
 * RFC 9497 section 3.3.2 Evaluate in VOPRF mode, the server computing the output by itself.
 * @noble/curves 2.4.0 has it at runtime but leaves it out of the voprf type, hence the narrowing.
 */
const voprfEvaluate = (
  ristretto255_oprf.voprf as unknown as {
    evaluate: (secretKey: Uint8Array, input: Uint8Array) => Uint8Array;
  }
).evaluate;
const VERSION = 1;

interface EvaluateReply {
  node: number;
  epoch?: number;
  evaluated: string[];
  proof: string;
}

async function evaluateThrough(
  cluster: Cluster,
  ids: readonly number[],
  state: BlindState,
  epoch?: number,
): Promise<PartialEvaluation[]> {
  const blinded = state.blinded.map((b) => toB64(b.toBytes()));
  return Promise.all(
    ids.map(async (id) => {
      const body = await evaluateBody(USER, TENANT, VERSION, blinded);
      const r = await cluster
        .node(id)
        .client.call<EvaluateReply>('evaluate', epoch === undefined ? body : { ...body, epoch });
      // The DKG founded epoch 1: every answer names it, asked for or not.
      expect(r.epoch).to.equal(1);
      return {
        node: r.node,
        evaluated: r.evaluated.map((e, i) => decodeElementB64(e, `evaluated[${i}]`)),
        proof: fromB64(r.proof, 'proof'),
      };
    }),
  );
}

/** Shares as the nodes stored them, read through a second connection to each database. */
function sharesFromStores(cluster: Cluster, ids: readonly number[]): Share[] {
  return ids.map((id) => {
    const node = cluster.node(id);
    const store = NodeStore.open(node.dataDir, id, node.secret);
    try {
      return { id, value: store.getKey(TENANT, VERSION)!.share.reveal() };
    } finally {
      store.close();
    }
  });
}

describe('nodes over WebSocket: a 5-node cluster, 3-of-5', () => {
  const lines: string[] = [];
  let cluster: Cluster;
  let dkg: DkgResult;
  let pkg: ParsedKeyPackage;
  const inputs = ['invoice-2024-001.pdf', 'contract.docx', 'x'].map((d) =>
    documentInput(TENANT, VERSION, d),
  );
  const blindedSeen: string[] = [];

  before(async () => {
    USER = await ISSUER.user(TENANT);
    cluster = await Cluster.start(5, capturingLogger(lines));
  });

  after(async () => {
    await cluster?.close();
  });

  it('DKG over WebSocket gives all five nodes the identical key package', async () => {
    dkg = await runDkg(cluster, {
      ceremonyId: ceremonyId(),
      tenant: TENANT,
      version: VERSION,
      threshold: 3,
      participants: [1, 2, 3, 4, 5],
    });
    const first = dkg.packages.get(1)!;
    for (const p of dkg.packages.values()) expect(p).to.deep.equal(first);
    pkg = parseKeyPackage(first);
    expect(pkg.threshold).to.equal(3);
    expect(pkg.verificationShares.size).to.equal(5);
    // dkg.commit: every node erased its ceremony state.
    for (const c of dkg.committed.values()) expect(c.erased).to.equal(true);
  });

  it('evaluation through 3 nodes equals the plain VOPRF under the recombined key', async () => {
    const state = blind(inputs);
    blindedSeen.push(...state.blinded.map((b) => toB64(b.toBytes())));
    const partials = await evaluateThrough(cluster, [2, 4, 5], state);
    const { outputs, used } = deriveOutputs(pkg, state, partials);
    expect(used).to.deep.equal([2, 4, 5]);

    // Independent: a different subset's shares, straight from the databases, recombined.
    const k = interpolateAtZero(sharesFromStores(cluster, [1, 3, 5]));
    expect(Point.BASE.multiply(k).equals(pkg.groupKey)).to.equal(true);
    const expected = inputs.map((input) => bytesToHex(voprfEvaluate(encodeScalar(k), input)));
    expect(outputs.map((o) => bytesToHex(o))).to.deep.equal(expected);
    // And through the single-server VOPRF protocol with the whole key, proof included.
    const K = Point.BASE.multiply(k).toBytes();
    const single = inputs.map((input) => {
      const b = ristretto255_oprf.voprf.blind(input);
      const e = ristretto255_oprf.voprf.blindEvaluate(encodeScalar(k), K, b.blinded);
      return bytesToHex(
        ristretto255_oprf.voprf.finalize(input, b.blind, e.evaluated, b.blinded, K, e.proof),
      );
    });
    expect(single).to.deep.equal(expected);
  });

  it('any 3 nodes give the same outputs; a tampered partial is caught and excluded', async () => {
    const state = blind(inputs);
    blindedSeen.push(...state.blinded.map((b) => toB64(b.toBytes())));
    const a = deriveOutputs(pkg, state, await evaluateThrough(cluster, [1, 2, 3], state));
    const partials = await evaluateThrough(cluster, [3, 1, 4, 5], state);
    // Node 3's answer is altered in transit: its proof no longer verifies.
    partials[0] = { ...partials[0]!, evaluated: partials[0]!.evaluated.map((e) => e.double()) };
    const b = deriveOutputs(pkg, state, partials);
    expect(b.used).to.deep.equal([1, 4, 5]);
    expect(b.rejected.map((r) => [r.node, r.code])).to.deep.equal([[3, 'ERR_PROOF_INVALID']]);
    expect(b.outputs).to.deep.equal(a.outputs);
  });

  it('status, keyPackage and /healthz report the key', async () => {
    const status = await cluster
      .node(3)
      .client.call<{ node: number; keys: unknown[] }>('status', {});
    expect(status).to.deep.include({
      node: 3,
      keys: [
        { tenant: TENANT, version: VERSION, groupKey: dkg.packages.get(1)!.groupKey, epoch: 1 },
      ],
      // The first DKG's committee and threshold became the node's epoch 1.
      epoch: { epoch: 1, threshold: 3, members: [1, 2, 3, 4, 5] },
    });
    expect(dkg.packages.get(1)!.epoch).to.equal(1);
    const kp = await cluster.node(4).client.call<{ keyPackage: unknown }>('keyPackage', {
      tenant: TENANT,
      version: VERSION,
    });
    expect(kp.keyPackage).to.deep.equal(dkg.packages.get(1));
    const res = await fetch(`http://127.0.0.1:${cluster.node(2).handle.port}/healthz`);
    expect(res.status).to.equal(200);
    expect(await res.json()).to.deep.include({ ok: true, node: 2, keys: 1 });
  });

  it('evaluate with epoch 1 gives the same outputs; an epoch the node does not hold is ERR_EPOCH_MISMATCH', async () => {
    const state = blind(inputs);
    blindedSeen.push(...state.blinded.map((b) => toB64(b.toBytes())));
    const plain = deriveOutputs(pkg, state, await evaluateThrough(cluster, [1, 2, 3], state));
    const pinned = deriveOutputs(pkg, state, await evaluateThrough(cluster, [3, 4, 5], state, 1));
    expect(pinned.used).to.deep.equal([3, 4, 5]);
    expect(pinned.outputs).to.deep.equal(plain.outputs);
    const body = await evaluateBody(USER, TENANT, VERSION, [toB64(state.blinded[0]!.toBytes())]);
    const reply = await cluster.node(2).client.request('evaluate', { ...body, epoch: 2 });
    expect(reply.ok).to.equal(false);
    if (reply.ok) return;
    expect(reply.error.code).to.equal('ERR_EPOCH_MISMATCH');
    expect(reply.error.details).to.deep.include({ requested: 2, current: 1 });
  });

  it('a restarted node loads its key from disk and serves the same outputs', async () => {
    const state = blind(inputs);
    blindedSeen.push(...state.blinded.map((b) => toB64(b.toBytes())));
    const before = deriveOutputs(pkg, state, await evaluateThrough(cluster, [1, 2, 3], state));
    await cluster.restart(2);
    const after = deriveOutputs(pkg, state, await evaluateThrough(cluster, [2, 3, 4], state));
    expect(after.outputs).to.deep.equal(before.outputs);
    // The epoch record came back from disk too.
    const status = await cluster.node(2).client.call<{ epoch: unknown }>('status', {});
    expect(status.epoch).to.deep.equal({ epoch: 1, threshold: 3, members: [1, 2, 3, 4, 5] });
  });

  it('no log line holds a token, a share, a relayed share or a blinded element', () => {
    const text = lines.join('');
    expect(lines.length).to.be.greaterThan(20);
    expect(text).to.contain('"type":"evaluate"');
    const shares = sharesFromStores(cluster, [1, 2, 3, 4, 5]);
    const forbidden = [
      USER.token,
      CLUSTER_TOKEN,
      ...shares.flatMap((s) => [
        toB64(encodeScalar(s.value)),
        bytesToHex(encodeScalar(s.value)),
        s.value.toString(),
      ]),
      ...dkg.relayed.map((p) => p.ciphertext),
      ...blindedSeen,
    ];
    for (const f of forbidden)
      expect(text.includes(f), `log contains ${f.slice(0, 12)}...`).to.equal(false);
  });
});
