import { expect } from 'chai';
import { ristretto255_oprf } from '@noble/curves/ed25519.js';
import { CoordinatorHttp } from '../../client/http.ts';
import { deriveKeys } from '../../client/derive.ts';
import type { ClientEvent } from '../../client/events.ts';
import {
  generateDpopKey,
  KmaasClient,
  MemoryPinStore,
  type ClientAuth,
} from '../../client/index.ts';
import { KeyPackages } from '../../client/key-packages.ts';
import { documentInput, documentKeyBytes } from '../../shared/document.ts';
import { Fn, Point, toB64 } from '../../shared/encoding.ts';
import type { Rejection } from '../../shared/voprf-client.ts';
import { MAX_BATCH } from '../../shared/suite.ts';
import { randomScalar } from '../../shared/shamir.ts';
import { singleKeyOutput, subsets } from '../helpers/threshold.ts';
import { FakeCoordinator, type FakeKey } from './helpers/fake-coordinator.ts';
import { expectCode } from './helpers/streams.ts';

/** @noble's one-party VOPRF evaluation: present at runtime, missing from its type declarations. */
const voprf = ristretto255_oprf.voprf as typeof ristretto255_oprf.voprf & {
  evaluate?: (secretKey: Uint8Array, input: Uint8Array) => Uint8Array;
};

function referenceKey(key: FakeKey, documentId: string): Uint8Array {
  const input = documentInput(key.tenant, key.version, documentId);
  return documentKeyBytes(voprf.evaluate!(Fn.toBytes(key.secret), input));
}

describe('client/derive: document keys through the coordinator', () => {
  let fake: FakeCoordinator;
  let key: FakeKey;
  let events: ClientEvent[];

  const client = (
    opts: { pinned?: boolean; trustOnFirstUse?: boolean; auth?: ClientAuth } = {},
  ) => {
    const pins = new MemoryPinStore(
      opts.pinned === false
        ? []
        : [{ tenant: 'acme', version: 1, groupKey: key.keyPackage.groupKey }],
    );
    return {
      pins,
      client: new KmaasClient({
        baseUrl: fake.url,
        auth: opts.auth ?? fake.clientAuth,
        pins,
        trustOnFirstUse: opts.trustOnFirstUse ?? false,
        onEvent: (e) => events.push(e),
      }),
    };
  };

  const evaluations = () => fake.requests.filter((r) => r.endsWith('/evaluate')).length;

  beforeEach(async () => {
    fake = new FakeCoordinator();
    await fake.start();
    key = fake.addKey('acme', 1, 3);
    events = [];
  });

  afterEach(() => fake.close());

  it('the reference is the plain RFC 9497 VOPRF output of the tenant key', () => {
    expect(voprf.evaluate).to.be.a('function');
    const input = documentInput('acme', 1, 'doc');
    expect(voprf.evaluate!(Fn.toBytes(key.secret), input)).to.deep.equal(
      singleKeyOutput(key.secret, input),
    );
  });

  it('keys equal HKDF over voprf.evaluate(k, documentInput(...)), and t nodes answered', async () => {
    const docs = ['a', 'contracts/2026/001.pdf', 'ünïcode ✓', 'x'.repeat(1024)];
    const { keys, nodes, rejected } = await client().client.deriveKeys('acme', 1, docs);
    expect(keys).to.have.length(docs.length);
    docs.forEach((d, i) => {
      expect(keys[i]).to.have.length(32);
      expect(keys[i]).to.deep.equal(referenceKey(key, d), d);
    });
    expect(nodes).to.have.length(3);
    for (const n of nodes) expect(fake.nodeIds).to.include(n);
    expect(rejected).to.deep.equal([]);
  });

  it('any t of the n nodes give the same key', async () => {
    const c = client().client;
    const want = referenceKey(key, 'doc-1');
    for (const set of subsets(fake.nodeIds, 3)) {
      fake.answering = set;
      const { keys, nodes } = await c.deriveKeys('acme', 1, ['doc-1']);
      expect(keys[0]).to.deep.equal(want);
      expect(nodes).to.deep.equal(set);
    }
    fake.answering = [5, 4, 3, 2, 1];
    const { keys, nodes } = await c.deriveKeys('acme', 1, ['doc-1']);
    expect(keys[0]).to.deep.equal(want);
    expect(nodes).to.deep.equal([3, 4, 5]);
  });

  it('different documents, versions and tenants get different keys', async () => {
    fake.addKey('acme', 2, 3);
    fake.addKey('beta', 1, 2);
    const pins = new MemoryPinStore();
    const c = new KmaasClient({
      baseUrl: fake.url,
      auth: fake.clientAuth,
      pins,
      trustOnFirstUse: true,
    });
    const a = (await c.deriveKeys('acme', 1, ['d1', 'd2'])).keys;
    const b = (await c.deriveKeys('acme', 2, ['d1'])).keys;
    const betaUser = new KmaasClient({
      baseUrl: fake.url,
      auth: await fake.authFor('beta'),
      pins,
      trustOnFirstUse: true,
    });
    const d = (await betaUser.deriveKeys('beta', 1, ['d1'])).keys;
    const hex = [...a, ...b, ...d].map((k) => Buffer.from(k).toString('hex'));
    expect(new Set(hex).size).to.equal(4);
  });

  describe('node answers are checked against the pinned package', () => {
    const wrongPoint = () => toB64(Point.BASE.multiply(randomScalar()).toBytes());

    it('a partial with a wrong point is rejected naming the node; t honest answers still suffice', async () => {
      fake.answering = [1, 2, 3, 4];
      fake.tamper = (ps) =>
        ps.map((p) =>
          p.node === 2 ? { ...p, evaluated: [wrongPoint(), ...p.evaluated.slice(1)] } : p,
        );
      const { keys, nodes, rejected } = await client().client.deriveKeys('acme', 1, [
        'doc',
        'doc2',
      ]);
      expect(keys[0]).to.deep.equal(referenceKey(key, 'doc'));
      expect(keys[1]).to.deep.equal(referenceKey(key, 'doc2'));
      expect(nodes).to.deep.equal([1, 3, 4]);
      expect(rejected).to.have.length(1);
      expect(rejected[0]).to.include({ node: 2, code: 'ERR_PROOF_INVALID' });
      expect(events).to.deep.equal([
        { type: 'nodes-rejected', tenant: 'acme', version: 1, rejected },
      ]);
    });

    it('with only t answers, one wrong point fails the derivation with ERR_TOO_FEW_NODES naming it', async () => {
      fake.answering = [1, 3, 5];
      fake.tamper = (ps) => ps.map((p) => (p.node === 3 ? { ...p, evaluated: [wrongPoint()] } : p));
      const err = await expectCode(
        client().client.deriveKeys('acme', 1, ['doc']),
        'ERR_TOO_FEW_NODES',
      );
      const rejected = err.details?.failed as Rejection[];
      expect(rejected.map((r) => [r.node, r.code])).to.deep.equal([[3, 'ERR_PROOF_INVALID']]);
      expect(err.message).to.include('node 3');
    });

    it('an answer that does not decode is blamed on its node, not the request', async () => {
      fake.answering = [1, 2, 3, 4];
      const bad = toB64(new Uint8Array(32).fill(0xff));
      const identity = toB64(new Uint8Array(32));
      fake.tamper = (ps) =>
        ps.map((p) =>
          p.node === 1
            ? { ...p, evaluated: [bad] }
            : p.node === 4
              ? { ...p, evaluated: [identity] }
              : p,
        );
      const err = await expectCode(
        client().client.deriveKeys('acme', 1, ['doc']),
        'ERR_TOO_FEW_NODES',
      );
      const rejected = err.details?.failed as Rejection[];
      expect(rejected.map((r) => [r.node, r.code])).to.deep.equal([
        [1, 'ERR_INVALID_POINT'],
        [4, 'ERR_IDENTITY_POINT'],
      ]);
      fake.answering = [1, 2, 3, 4, 5];
      const ok = await client().client.deriveKeys('acme', 1, ['doc']);
      expect(ok.nodes).to.deep.equal([2, 3, 5]);
      expect(ok.rejected.map((r) => r.node)).to.deep.equal([1, 4]);
    });

    it('swapped proofs, a short answer, a stranger and a duplicate are each refused', async () => {
      fake.answering = [1, 2, 3, 4, 5];
      fake.tamper = (ps) => {
        const [p1, p2, p3, p4, p5] = ps as [
          (typeof ps)[0],
          (typeof ps)[0],
          (typeof ps)[0],
          (typeof ps)[0],
          (typeof ps)[0],
        ];
        return [
          { ...p1, proof: p2.proof },
          { ...p2, proof: p1.proof },
          { ...p3, evaluated: p3.evaluated.slice(1) },
          { ...p4, node: 9 },
          p5,
          p5,
        ];
      };
      const err = await expectCode(
        client().client.deriveKeys('acme', 1, ['a', 'b']),
        'ERR_TOO_FEW_NODES',
      );
      const rejected = err.details?.failed as Rejection[];
      expect(rejected.map((r) => r.node)).to.deep.equal([1, 2, 3, 9, 5]);
      expect(rejected.map((r) => r.code)).to.deep.equal([
        'ERR_PROOF_INVALID',
        'ERR_PROOF_INVALID',
        'ERR_PROOF_INVALID',
        'ERR_PROOF_INVALID',
        'ERR_BAD_IDENTIFIER',
      ]);
    });

    it('no answers at all: ERR_TOO_FEW_NODES', async () => {
      fake.tamper = () => [];
      await expectCode(client().client.deriveKeys('acme', 1, ['a']), 'ERR_TOO_FEW_NODES');
    });
  });

  describe('pins', () => {
    it('a package whose group key differs from the pin: ERR_PINNED_KEY_MISMATCH, nothing evaluated', async () => {
      const other = fake.addKey('other', 1, 3);
      const pins = new MemoryPinStore([
        { tenant: 'acme', version: 1, groupKey: other.keyPackage.groupKey },
      ]);
      const c = new KmaasClient({ baseUrl: fake.url, auth: fake.clientAuth, pins });
      await expectCode(c.deriveKeys('acme', 1, ['doc']), 'ERR_PINNED_KEY_MISMATCH');
      expect(evaluations()).to.equal(0);
    });

    it('a coordinator serving a key of its own under the right name: ERR_PINNED_KEY_MISMATCH', async () => {
      const swapped = fake.addKey('acme', 99, 3);
      fake.servePackage = () => ({ ...structuredClone(swapped.keyPackage), version: 1 });
      await expectCode(client().client.deriveKeys('acme', 1, ['doc']), 'ERR_PINNED_KEY_MISMATCH');
      expect(evaluations()).to.equal(0);
    });

    it('a verification share that does not match the commitments: ERR_KEY_PACKAGE_INVALID', async () => {
      fake.servePackage = (pkg) => {
        const [a, b] = pkg.verificationShares;
        [a!.key, b!.key] = [b!.key, a!.key];
        return pkg;
      };
      await expectCode(client().client.deriveKeys('acme', 1, ['doc']), 'ERR_KEY_PACKAGE_INVALID');
    });

    it('no pin and no trust on first use: ERR_KEY_NOT_PINNED, nothing fetched or evaluated', async () => {
      await expectCode(
        client({ pinned: false }).client.deriveKeys('acme', 1, ['doc']),
        'ERR_KEY_NOT_PINNED',
      );
      expect(fake.requests).to.deep.equal([]);
    });

    it('trust on first use pins the key, says so, and fetches the package once', async () => {
      const { client: c, pins } = client({ pinned: false, trustOnFirstUse: true });
      const first = await c.deriveKeys('acme', 1, ['doc']);
      await c.deriveKeys('acme', 1, ['doc2']);
      expect(first.keys[0]).to.deep.equal(referenceKey(key, 'doc'));
      expect(await pins.get('acme', 1)).to.equal(key.keyPackage.groupKey);
      expect(events).to.deep.equal([
        {
          type: 'key-pinned',
          tenant: 'acme',
          version: 1,
          groupKey: key.keyPackage.groupKey,
          reason: 'trust-on-first-use',
        },
      ]);
      expect(
        fake.requests.filter((r) => r.startsWith('GET /v1/tenants/acme/keys/1')),
      ).to.have.length(1);
    });

    it('trust on first use still refuses the package of another tenant', async () => {
      const other = fake.addKey('other', 1, 3);
      fake.servePackage = () => structuredClone(other.keyPackage);
      const { client: c, pins } = client({ pinned: false, trustOnFirstUse: true });
      await expectCode(c.deriveKeys('acme', 1, ['doc']), 'ERR_KEY_PACKAGE_INVALID');
      expect(await pins.get('acme', 1)).to.equal(undefined);
    });
  });

  describe('batches', () => {
    it(`batches larger than MAX_BATCH (${MAX_BATCH}) are split, and keys keep their order`, async () => {
      const docs = Array.from({ length: MAX_BATCH + 1 }, (_, i) => `doc-${i}`);
      const { keys } = await client().client.deriveKeys('acme', 1, docs);
      expect([...fake.evaluateSizes].sort((a, b) => b - a)).to.deep.equal([MAX_BATCH, 1]);
      expect(keys).to.have.length(docs.length);
      for (const i of [0, 1, MAX_BATCH - 1, MAX_BATCH]) {
        expect(keys[i]).to.deep.equal(referenceKey(key, docs[i]!), docs[i]);
      }
    });

    it('small batches in flight together still come back in order', async () => {
      const http = new CoordinatorHttp({ baseUrl: fake.url });
      const pins = new MemoryPinStore([
        { tenant: 'acme', version: 1, groupKey: key.keyPackage.groupKey },
      ]);
      const packages = new KeyPackages({ http, pins });
      const docs = Array.from({ length: 10 }, (_, i) => `d${i}`);
      const ctx = { http, packages, auth: fake.clientAuth, maxBatch: 3, concurrency: 3 };
      const { keys } = await deriveKeys(ctx, 'acme', 1, docs);
      expect(fake.evaluateSizes.length).to.equal(4);
      expect([...fake.evaluateSizes].sort()).to.deep.equal([1, 3, 3, 3]);
      // One fresh DPoP proof per request (the fake refuses a replayed one, as nodes do).
      expect(new Set(fake.proofs.slice(-4)).size).to.equal(4);
      docs.forEach((d, i) => expect(keys[i]).to.deep.equal(referenceKey(key, d), d));
    });

    it('a failing batch fails the whole call', async () => {
      const http = new CoordinatorHttp({ baseUrl: fake.url });
      const pins = new MemoryPinStore([
        { tenant: 'acme', version: 1, groupKey: key.keyPackage.groupKey },
      ]);
      let calls = 0;
      fake.tamper = (ps) => (++calls === 2 ? [] : ps);
      const ctx = {
        http,
        packages: new KeyPackages({ http, pins }),
        auth: fake.clientAuth,
        maxBatch: 2,
        concurrency: 1,
      };
      await expectCode(deriveKeys(ctx, 'acme', 1, ['a', 'b', 'c', 'd', 'e']), 'ERR_TOO_FEW_NODES');
      expect(calls).to.equal(2);
    });
  });

  describe('requests', () => {
    it('a bad document id fails before anything goes on the wire', async () => {
      const c = client().client;
      await expectCode(c.deriveKeys('acme', 1, ['ok', '']), 'ERR_VALIDATION');
      await expectCode(c.deriveKeys('acme', 1, ['x'.repeat(1025)]), 'ERR_VALIDATION');
      await expectCode(c.deriveKeys('Bad Tenant', 1, ['ok']), 'ERR_VALIDATION');
      await expectCode(c.deriveKeys('acme', 0, ['ok']), 'ERR_VALIDATION');
      expect(fake.requests).to.deep.equal([]);
      expect(await c.deriveKeys('acme', 1, [])).to.deep.equal({
        keys: [],
        nodes: [],
        rejected: [],
      });
      expect(fake.requests).to.deep.equal([]);
    });

    it('a token refused by the coordinator: its code; no auth at all: ERR_CONFIG', async () => {
      await expectCode(
        client({ auth: { ...fake.clientAuth, accessToken: 'wrong' } }).client.deriveKeys(
          'acme',
          1,
          ['d'],
        ),
        'ERR_TOKEN_MALFORMED',
      );
      const otherKey = await generateDpopKey();
      await expectCode(
        client({ auth: { ...fake.clientAuth, dpopKey: otherKey } }).client.deriveKeys('acme', 1, [
          'd',
        ]),
        'ERR_DPOP_KEY_MISMATCH',
      );
      const pins = new MemoryPinStore();
      const c = new KmaasClient({ baseUrl: fake.url, pins });
      await expectCode(c.deriveKeys('acme', 1, ['d']), 'ERR_CONFIG');
    });

    it("an unknown version is the coordinator's ERR_UNKNOWN_KEY_VERSION", async () => {
      const { client: c } = client({ pinned: false, trustOnFirstUse: true });
      await expectCode(c.deriveKeys('acme', 7, ['d']), 'ERR_UNKNOWN_KEY_VERSION');
    });

    it('latestVersion is the highest version of the tenant', async () => {
      const c = client().client;
      expect(await c.latestVersion('acme')).to.equal(1);
      fake.addKey('acme', 4, 3);
      fake.addKey('acme', 2, 3);
      expect(await c.latestVersion('acme')).to.equal(4);
      await expectCode(c.latestVersion('nobody'), 'ERR_UNKNOWN_TENANT');
    });
  });
});
