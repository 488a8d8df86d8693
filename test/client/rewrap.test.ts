/**
 * KmaasClient.rewrap and planRewrap (client/rewrap.ts) against the fake coordinator with two key
 * versions of tenant acme: the rewrapped envelope names the new version and opens with the key
 * derived for it, and an old envelope that is cut or tampered with never gives a new envelope
 * that a reader accepts.
 */
import { expect } from 'chai';
import {
  decryptStream,
  KmaasClient,
  KmaasError,
  MemoryPinStore,
  readHeader,
} from '../../client/index.ts';
import { TAG_BYTES } from '../../client/envelope.ts';
import { FakeCoordinator } from './helpers/fake-coordinator.ts';
import { collect, expectCode, pieces, randomBytes, randomPieces } from './helpers/streams.ts';

const CHUNK = 1000;

/** What a stream yielded before it failed, and the failure. */
async function collectUntilFailure(
  source: AsyncIterable<Uint8Array>,
): Promise<{ bytes: Uint8Array; error: unknown }> {
  const parts: Uint8Array[] = [];
  let error: unknown;
  try {
    for await (const p of source) parts.push(p);
  } catch (err) {
    error = err;
  }
  return { bytes: new Uint8Array(Buffer.concat(parts)), error };
}

describe('client/rewrap: KmaasClient.rewrap', () => {
  let fake: FakeCoordinator;
  let client: KmaasClient;

  beforeEach(async () => {
    fake = new FakeCoordinator();
    await fake.start();
    const v1 = fake.addKey('acme', 1, 3);
    const v2 = fake.addKey('acme', 2, 2);
    client = new KmaasClient({
      baseUrl: fake.url,
      auth: fake.clientAuth,
      pins: new MemoryPinStore([
        { tenant: 'acme', version: 1, groupKey: v1.keyPackage.groupKey },
        { tenant: 'acme', version: 2, groupKey: v2.keyPackage.groupKey },
      ]),
    });
  });

  afterEach(() => fake.close());

  async function sealed(plaintext: Uint8Array, documentId: string, keyVersion = 1) {
    return collect(
      await client.encrypt(randomPieces(plaintext, 700), {
        tenant: 'acme',
        documentId,
        keyVersion,
        chunkSize: CHUNK,
      }),
    );
  }

  /** Open `envelope` with the key derived for (acme, version, documentId), outside rewrap. */
  async function openWith(envelope: Uint8Array, version: number, documentId: string) {
    const { keys } = await client.deriveKeys('acme', version, [documentId]);
    return collect(decryptStream(pieces(envelope, [333]), keys[0]!));
  }

  it('v1 to the latest (v2): one evaluate request per version, same tenant, document and plaintext', async () => {
    const plaintext = randomBytes(5500);
    const old = await sealed(plaintext, 'reports/q1.pdf');
    const before = fake.evaluateSizes.length;

    const moved = await client.rewrap(randomPieces(old, 900));
    expect(moved).to.include({
      tenant: 'acme',
      documentId: 'reports/q1.pdf',
      fromVersion: 1,
      keyVersion: 2,
      rewrapped: true,
    });
    const envelope = await collect(moved);
    expect(fake.evaluateSizes.slice(before)).to.deep.equal([1, 1]);

    const header = (await readHeader(pieces(envelope))).header;
    expect(header).to.include({
      tenant: 'acme',
      keyVersion: 2,
      documentId: 'reports/q1.pdf',
      chunkSize: CHUNK,
    });
    expect(await openWith(envelope, 2, 'reports/q1.pdf')).to.deep.equal(plaintext);
    await expectCode(openWith(envelope, 1, 'reports/q1.pdf'), 'ERR_DECRYPT_FAILED');
    expect(await collect(await client.decrypt(pieces(envelope)))).to.deep.equal(plaintext);
  });

  it('to a given version; an empty document too; the chunk size may change', async () => {
    const v3 = fake.addKey('acme', 3, 3);
    const c = new KmaasClient({
      baseUrl: fake.url,
      auth: fake.clientAuth,
      pins: new MemoryPinStore(),
      trustOnFirstUse: true,
    });
    expect(v3.version).to.equal(3);
    const empty = await sealed(new Uint8Array(0), 'empty');
    const moved = await c.rewrap(pieces(empty), { toVersion: 2 });
    expect(moved.keyVersion).to.equal(2);
    expect(await openWith(await collect(moved), 2, 'empty')).to.deep.equal(new Uint8Array(0));

    const plaintext = randomBytes(2500);
    const rechunked = await c.rewrap(pieces(await sealed(plaintext, 'd')), { chunkSize: 700 });
    expect(rechunked.keyVersion).to.equal(3);
    const envelope = await collect(rechunked);
    expect((await readHeader(pieces(envelope))).header.chunkSize).to.equal(700);
    expect(await collect(await c.decrypt(pieces(envelope)))).to.deep.equal(plaintext);
  });

  it('already at the target version: left as it is, byte for byte, with no key derived', async () => {
    const current = await sealed(randomBytes(2100), 'd', 2);
    const before = fake.evaluateSizes.length;
    const same = await client.rewrap(randomPieces(current, 500));
    expect(same).to.include({ rewrapped: false, fromVersion: 2, keyVersion: 2 });
    expect(await collect(same)).to.deep.equal(current);
    expect(fake.evaluateSizes.length).to.equal(before);
  });

  it('a target older than the envelope: ERR_VALIDATION before any key is derived', async () => {
    const current = await sealed(randomBytes(10), 'd', 2);
    const before = fake.evaluateSizes.length;
    const err = await expectCode(
      client.rewrap(pieces(current), { toVersion: 1 }),
      'ERR_VALIDATION',
    );
    expect(err.details).to.include({ field: 'toVersion' });
    expect(fake.evaluateSizes.length).to.equal(before);
  });

  it('an envelope of another document than expected: ERR_VALIDATION', async () => {
    const old = await sealed(randomBytes(10), 'mine');
    await expectCode(
      client.rewrap(pieces(old), { expect: { documentId: 'yours' } }),
      'ERR_VALIDATION',
    );
  });

  describe('a damaged old envelope fails the rewrap and gives no envelope a reader accepts', () => {
    const plaintext = randomBytes(4500); // 4 full chunks and a final one of 500 bytes
    const frame = CHUNK + TAG_BYTES;
    let old: Uint8Array;
    let prefix: number;

    beforeEach(async () => {
      old = await sealed(plaintext, 'doc');
      prefix = (await readHeader(pieces(old))).prefix.length;
    });

    const cases: [string, () => Uint8Array, string[]][] = [
      [
        'a flipped bit in the final chunk',
        () => {
          const bad = old.slice();
          bad[bad.length - 3]! ^= 1;
          return bad;
        },
        ['ERR_DECRYPT_FAILED'],
      ],
      [
        'a flipped bit in chunk 2',
        () => {
          const bad = old.slice();
          bad[prefix + 2 * frame + 10]! ^= 1;
          return bad;
        },
        ['ERR_DECRYPT_FAILED'],
      ],
      [
        'cut after chunk 3 (the final chunk missing)',
        () => old.slice(0, prefix + 4 * frame),
        ['ERR_ENVELOPE_FORMAT'],
      ],
      ['cut inside the final chunk', () => old.slice(0, old.length - 100), ['ERR_DECRYPT_FAILED']],
      [
        'bytes appended after the final chunk',
        () => new Uint8Array(Buffer.concat([old, Uint8Array.of(0)])),
        // The short final chunk then reads as a longer one that does not open.
        ['ERR_DECRYPT_FAILED'],
      ],
    ];

    for (const [name, damage, codes] of cases) {
      it(name, async () => {
        const moved = await client.rewrap(randomPieces(damage(), 800));
        const { bytes, error } = await collectUntilFailure(moved);
        expect(error, 'the rewrap must fail').to.be.instanceOf(KmaasError);
        expect(codes).to.include((error as KmaasError).code);
        // What came out before the failure is at most a header and the 4 non-final chunks.
        expect(bytes.length).to.be.at.most(prefix + 4 * frame);
        if (bytes.length > 0) {
          expect((await readHeader(pieces(bytes))).header.keyVersion).to.equal(2);
          await expectCode(openWith(bytes, 2, 'doc'), 'ERR_ENVELOPE_FORMAT', 'ERR_DECRYPT_FAILED');
        }
      });
    }

    it('the intact envelope, as a control, rewraps to one that opens', async () => {
      const { bytes, error } = await collectUntilFailure(await client.rewrap(pieces(old)));
      expect(error).to.equal(undefined);
      expect(await openWith(bytes, 2, 'doc')).to.deep.equal(plaintext);
    });
  });

  describe('planRewrap: many envelopes', () => {
    it('one deriveKeys per version over every document id; current and older-target sorted out', async () => {
      const docs = ['a', 'b', 'c', 'd'];
      const olds = await Promise.all(docs.map((d) => sealed(randomBytes(50), d)));
      const copy = olds[1]!; // a second envelope of document b
      const current = await sealed(randomBytes(50), 'e', 2);
      const headers = await Promise.all(
        [...olds, copy, current].map(async (e) => (await readHeader(pieces(e))).header),
      );
      const before = fake.evaluateSizes.length;
      const planned = await client.planRewrap(headers);
      try {
        // Four distinct documents to rewrap: 4 under v1 and 4 under v2, one request each.
        expect(fake.evaluateSizes.slice(before)).to.deep.equal([4, 4]);
        expect(planned.plans.map((p) => p.action)).to.deep.equal([
          'rewrap',
          'rewrap',
          'rewrap',
          'rewrap',
          'rewrap',
          'current',
        ]);
        const b = planned.plans[1]!;
        const bCopy = planned.plans[4]!;
        if (b.action !== 'rewrap' || bCopy.action !== 'rewrap') throw new Error('unreachable');
        expect(b.fromKey).to.deep.equal(bCopy.fromKey);
        expect(b.fromKey).to.not.equal(bCopy.fromKey); // copies, zeroed each on its own
        const [expectedV2] = (await client.deriveKeys('acme', 2, ['b'])).keys;
        expect(b.toKey).to.deep.equal(expectedV2);
      } finally {
        planned.dispose();
      }
      const b = planned.plans[1]!;
      if (b.action !== 'rewrap') throw new Error('unreachable');
      expect(b.toKey.every((x) => x === 0)).to.equal(true);

      const older = await client.planRewrap(headers, { toVersion: 1 });
      expect(older.plans.map((p) => p.action)).to.deep.equal([
        'current',
        'current',
        'current',
        'current',
        'current',
        'failed',
      ]);
    });

    it('a --to-version the tenant does not have: ERR_UNKNOWN_KEY_VERSION naming the newest, nothing derived', async () => {
      const headers = [(await readHeader(pieces(await sealed(randomBytes(50), 'a')))).header];
      const before = fake.evaluateSizes.length;
      const planned = await client.planRewrap(headers, { toVersion: 3 });
      const [failed] = planned.plans;
      if (failed?.action !== 'failed') throw new Error('expected a failed plan');
      expect(failed.error.code).to.equal('ERR_UNKNOWN_KEY_VERSION');
      expect(failed.error.message).to.equal('tenant acme has no key version 3: its newest is 2');
      expect(failed.error.details).to.include({ tenant: 'acme', version: 3, latest: 2 });
      expect(fake.evaluateSizes.length).to.equal(before);
    });

    it('a retired version fails only the envelopes under it', async () => {
      const old = await sealed(randomBytes(50), 'a');
      const current = await sealed(randomBytes(50), 'b', 2);
      fake.retired.add('acme/1');
      const headers = await Promise.all(
        [old, current].map(async (e) => (await readHeader(pieces(e))).header),
      );
      const planned = await client.planRewrap(headers);
      const [failed, ok] = planned.plans;
      expect(failed).to.deep.include({ action: 'failed' });
      if (failed?.action !== 'failed') throw new Error('unreachable');
      expect(failed.error.code).to.equal('ERR_KEY_RETIRED');
      expect(ok).to.deep.include({ action: 'current' });
      await expectCode(client.rewrap(pieces(old)), 'ERR_KEY_RETIRED');
    });
  });
});
