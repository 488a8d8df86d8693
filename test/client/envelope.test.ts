import { expect } from 'chai';
import fc from 'fast-check';
import { createCipheriv, createDecipheriv, hkdfSync } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  CHUNK_KEY_INFO,
  DEFAULT_CHUNK_SIZE,
  FIXED_PREFIX_BYTES,
  MAGIC,
  TAG_BYTES,
  decryptStream,
  encryptStream,
  envelopeLength,
  readHeader,
  type EncryptOptions,
} from '../../client/envelope.ts';
import { fromB64 } from '../../shared/encoding.ts';
import { collect, expectCode, pieces, randomBytes, randomPieces } from './helpers/streams.ts';

const KEY = randomBytes(32);
const BASE = { key: KEY, tenant: 'acme', keyVersion: 3, documentId: 'contracts/2026/001.pdf' };

function encrypt(
  plaintext: Uint8Array,
  opts: Partial<EncryptOptions> = {},
  split: readonly number[] = [4096],
): Promise<Uint8Array> {
  return collect(encryptStream(pieces(plaintext, split), { ...BASE, ...opts }));
}

function decrypt(
  envelope: Uint8Array,
  key: Uint8Array = KEY,
  split: readonly number[] = [4096],
): Promise<Uint8Array> {
  return collect(decryptStream(pieces(envelope, split), key));
}

/** Where each frame of an envelope starts, from its own header. */
function layout(envelope: Uint8Array) {
  const headerLength = new DataView(envelope.buffer, envelope.byteOffset).getUint16(9);
  const prefix = FIXED_PREFIX_BYTES + headerLength;
  const header = JSON.parse(
    new TextDecoder().decode(envelope.subarray(FIXED_PREFIX_BYTES, prefix)),
  ) as { chunkSize: number; salt: string };
  const frame = header.chunkSize + TAG_BYTES;
  const frames: [number, number][] = [];
  for (let off = prefix; off < envelope.length; off += frame) {
    frames.push([off, Math.min(off + frame, envelope.length)]);
  }
  return { prefix, frame, frames, header };
}

const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
};

/** Split sizes for fast-check: at least one nonzero, zeros allowed (empty pieces). */
const splits = (max: number) =>
  fc.array(fc.nat({ max }), { minLength: 1, maxLength: 16 }).map((a) => [...a, 1 + (a[0] ?? 0)]);

describe('client/envelope: format v1 (STREAM over AES-256-GCM)', () => {
  const cs = 64;

  describe('round trip', () => {
    it('sizes 0, 1, chunkSize-1, chunkSize, chunkSize+1 and several chunks, split anyhow', async () => {
      const sizes = [0, 1, cs - 1, cs, cs + 1, 2 * cs, 3 * cs + 7, 10 * cs];
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...sizes),
          splits(3 * cs),
          splits(3 * cs),
          async (size, encSplit, decSplit) => {
            const plaintext = randomBytes(size);
            const envelope = await encrypt(plaintext, { chunkSize: cs }, encSplit);
            const header = {
              ...BASE,
              chunkSize: cs,
              salt: layout(envelope).header.salt,
            };
            expect(envelope.length).to.equal(envelopeLength(header, size));
            expect(await decrypt(envelope, KEY, decSplit)).to.deep.equal(plaintext);
          },
        ),
        { numRuns: 150 },
      );
    });

    it('any size with random split points', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.nat({ max: 12 * cs }),
          fc.integer({ min: 1, max: 3 * cs }),
          splits(200),
          async (size, chunkSize, split) => {
            const plaintext = randomBytes(size);
            const envelope = await encrypt(plaintext, { chunkSize }, split);
            expect(await decrypt(envelope, KEY, [...split].reverse())).to.deep.equal(plaintext);
          },
        ),
        { numRuns: 150 },
      );
    });

    it('with the default 1 MiB chunk: 0, 1, 1 MiB - 1, 1 MiB, 1 MiB + 1 and 3 MiB + 17', async () => {
      const mib = DEFAULT_CHUNK_SIZE;
      for (const size of [0, 1, mib - 1, mib, mib + 1, 3 * mib + 17]) {
        const plaintext = randomBytes(size);
        const envelope = await collect(encryptStream(randomPieces(plaintext, 300_000), BASE));
        const frames = layout(envelope).frames.length;
        expect(frames, `size ${size}`).to.equal(Math.max(1, Math.ceil(size / mib)));
        const back = await collect(decryptStream(randomPieces(envelope, 300_000), KEY));
        expect(Buffer.from(back).equals(Buffer.from(plaintext)), `size ${size}`).to.equal(true);
      }
    });

    it('an empty document is one empty final chunk: just a tag after the header', async () => {
      const envelope = await encrypt(new Uint8Array(0), { chunkSize: cs });
      const { prefix, frames } = layout(envelope);
      expect(frames).to.deep.equal([[prefix, prefix + TAG_BYTES]]);
      expect(await decrypt(envelope)).to.deep.equal(new Uint8Array(0));
    });

    it('every chunk but the last is full', async () => {
      const envelope = await encrypt(randomBytes(5 * cs + 9), { chunkSize: cs });
      const { frame, frames } = layout(envelope);
      expect(frames.map(([a, b]) => b - a)).to.deep.equal([
        frame,
        frame,
        frame,
        frame,
        frame,
        9 + TAG_BYTES,
      ]);
    });

    it('readHeader names tenant, version and document before any key is needed', async () => {
      const envelope = await encrypt(randomBytes(300), { chunkSize: cs });
      const reader = await readHeader(pieces(envelope, [1]));
      expect(reader.header).to.include({
        tenant: 'acme',
        keyVersion: 3,
        documentId: 'contracts/2026/001.pdf',
        chunkSize: cs,
      });
      expect(reader.prefix).to.deep.equal(envelope.subarray(0, layout(envelope).prefix));
      expect((await collect(decryptStream(reader, KEY))).length).to.equal(300);
      await expectCode(collect(decryptStream(reader, KEY)), 'ERR_VALIDATION');
    });

    it('the same plaintext encrypted twice gives different ciphertexts', async () => {
      const plaintext = randomBytes(3 * cs);
      const a = await encrypt(plaintext, { chunkSize: cs });
      const b = await encrypt(plaintext, { chunkSize: cs });
      expect(layout(a).header.salt).to.not.equal(layout(b).header.salt);
      for (const [i, [start, end]] of layout(a).frames.entries()) {
        const [s2, e2] = layout(b).frames[i]!;
        expect(
          Buffer.from(a.subarray(start, end)).equals(Buffer.from(b.subarray(s2, e2))),
        ).to.equal(false);
      }
    });

    it('the salt source is a parameter: the same salt gives the same envelope', async () => {
      const salt = randomBytes(32);
      const opts = { chunkSize: cs, random: () => salt };
      const plaintext = randomBytes(200);
      expect(await encrypt(plaintext, opts)).to.deep.equal(await encrypt(plaintext, opts));
    });
  });

  describe('cross-check against node:crypto (OpenSSL AES-256-GCM and HKDF)', () => {
    it('each chunk opens with node:crypto under the documented key, nonce and additional data', async () => {
      const plaintext = randomBytes(2 * cs + 5);
      const envelope = await encrypt(plaintext, { chunkSize: cs });
      const { prefix, frames, header } = layout(envelope);
      const chunkKey = Buffer.from(
        hkdfSync('sha256', KEY, fromB64(header.salt, 'salt'), CHUNK_KEY_INFO, 32),
      );
      const opened = frames.map(([start, end], i) => {
        const nonce = Buffer.alloc(12);
        nonce.writeUInt32BE(i, 7);
        nonce[11] = i === frames.length - 1 ? 1 : 0;
        const d = createDecipheriv('aes-256-gcm', chunkKey, nonce);
        d.setAAD(envelope.subarray(0, prefix));
        d.setAuthTag(envelope.subarray(end - TAG_BYTES, end));
        return Buffer.concat([d.update(envelope.subarray(start, end - TAG_BYTES)), d.final()]);
      });
      expect(new Uint8Array(Buffer.concat(opened))).to.deep.equal(plaintext);
    });

    it('decryptStream opens an envelope sealed by node:crypto', async () => {
      const salt = randomBytes(32);
      const plaintext = randomBytes(cs + 10);
      // Take the prefix from the SDK (same header), seal the chunks independently.
      const reference = await encrypt(new Uint8Array(0), { chunkSize: cs, random: () => salt });
      const prefix = reference.subarray(0, layout(reference).prefix);
      const chunkKey = Buffer.from(hkdfSync('sha256', KEY, salt, CHUNK_KEY_INFO, 32));
      const seal = (data: Uint8Array, i: number, final: boolean) => {
        const nonce = Buffer.alloc(12);
        nonce.writeUInt32BE(i, 7);
        nonce[11] = final ? 1 : 0;
        const c = createCipheriv('aes-256-gcm', chunkKey, nonce);
        c.setAAD(prefix);
        return Buffer.concat([c.update(data), c.final(), c.getAuthTag()]);
      };
      const envelope = concat(
        prefix,
        seal(plaintext.subarray(0, cs), 0, false),
        seal(plaintext.subarray(cs), 1, true),
      );
      expect(await decrypt(envelope)).to.deep.equal(plaintext);
    });
  });

  describe('refusals', () => {
    let envelope: Uint8Array;
    let shape: ReturnType<typeof layout>;
    const plaintext = randomBytes(3 * cs + 20);

    before(async () => {
      envelope = await encrypt(plaintext, { chunkSize: cs });
      shape = layout(envelope);
    });

    it('any flipped bit: ERR_DECRYPT_FAILED in a chunk, one of the two codes in the prefix', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.nat({ max: envelope.length - 1 }),
          fc.integer({ min: 0, max: 7 }),
          splits(100),
          async (index, bit, split) => {
            const bad = envelope.slice();
            bad[index]! ^= 1 << bit;
            const codes =
              index < shape.prefix
                ? (['ERR_DECRYPT_FAILED', 'ERR_ENVELOPE_FORMAT'] as const)
                : (['ERR_DECRYPT_FAILED'] as const);
            await expectCode(decrypt(bad, KEY, split), ...codes);
          },
        ),
        { numRuns: 300 },
      );
    });

    it('every byte position, tampered, is refused', async () => {
      for (let index = 0; index < envelope.length; index++) {
        const bad = envelope.slice();
        bad[index]! ^= 0x80;
        await expectCode(decrypt(bad), 'ERR_DECRYPT_FAILED', 'ERR_ENVELOPE_FORMAT');
      }
    });

    it('no plaintext of a tampered chunk is released', async () => {
      const bad = envelope.slice();
      const [start] = shape.frames[2]!;
      bad[start + 3]! ^= 1;
      const released: Uint8Array[] = [];
      await expectCode(
        (async () => {
          for await (const p of decryptStream(pieces(bad, [7]), KEY)) released.push(p);
        })(),
        'ERR_DECRYPT_FAILED',
      );
      expect(concat(...released)).to.deep.equal(plaintext.subarray(0, 2 * cs));
    });

    it('truncation at a chunk boundary: ERR_ENVELOPE_FORMAT', async () => {
      for (const [, end] of shape.frames.slice(0, -1)) {
        const err = await expectCode(decrypt(envelope.subarray(0, end)), 'ERR_ENVELOPE_FORMAT');
        expect(err.message).to.match(/final chunk is missing/);
      }
    });

    it('dropped final chunk of a document that fills its last chunk: ERR_ENVELOPE_FORMAT', async () => {
      const full = await encrypt(randomBytes(3 * cs), { chunkSize: cs });
      const frames = layout(full).frames;
      expect(frames).to.have.length(3);
      await expectCode(decrypt(full.subarray(0, frames[1]![1])), 'ERR_ENVELOPE_FORMAT');
    });

    it('truncation inside a chunk: ERR_DECRYPT_FAILED (ERR_ENVELOPE_FORMAT when less than a tag is left)', async () => {
      const [start] = shape.frames[1]!;
      await expectCode(decrypt(envelope.subarray(0, start + 40)), 'ERR_DECRYPT_FAILED');
      await expectCode(decrypt(envelope.subarray(0, start + 5)), 'ERR_ENVELOPE_FORMAT');
      await expectCode(decrypt(envelope.subarray(0, envelope.length - 1)), 'ERR_DECRYPT_FAILED');
    });

    it('truncation in or right after the header: ERR_ENVELOPE_FORMAT', async () => {
      for (const cut of [
        0,
        3,
        FIXED_PREFIX_BYTES - 1,
        FIXED_PREFIX_BYTES + 4,
        shape.prefix - 1,
        shape.prefix,
      ]) {
        await expectCode(decrypt(envelope.subarray(0, cut)), 'ERR_ENVELOPE_FORMAT');
      }
    });

    it('bytes appended after a full final chunk: ERR_ENVELOPE_FORMAT (trailing bytes)', async () => {
      const full = await encrypt(randomBytes(2 * cs), { chunkSize: cs });
      for (const extra of [1, 16, cs + 16, 200]) {
        const err = await expectCode(
          decrypt(concat(full, randomBytes(extra))),
          'ERR_ENVELOPE_FORMAT',
        );
        expect(err.message).to.match(/trailing bytes/);
      }
    });

    it('bytes appended after a short final chunk: refused (ERR_DECRYPT_FAILED)', async () => {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 1, max: 3 * cs }), async (extra) => {
          await expectCode(decrypt(concat(envelope, randomBytes(extra))), 'ERR_DECRYPT_FAILED');
        }),
        { numRuns: 50 },
      );
    });

    it('a whole chunk appended twice, or chunks reordered: ERR_DECRYPT_FAILED', async () => {
      const f = shape.frames.map(([a, b]) => envelope.subarray(a, b));
      const head = envelope.subarray(0, shape.prefix);
      await expectCode(decrypt(concat(head, f[1]!, f[0]!, f[2]!, f[3]!)), 'ERR_DECRYPT_FAILED');
      await expectCode(decrypt(concat(head, f[0]!, f[2]!, f[1]!, f[3]!)), 'ERR_DECRYPT_FAILED');
      await expectCode(
        decrypt(concat(head, f[0]!, f[0]!, f[1]!, f[2]!, f[3]!)),
        'ERR_DECRYPT_FAILED',
      );
      await expectCode(decrypt(concat(head, f[0]!, f[1]!, f[3]!)), 'ERR_DECRYPT_FAILED');
    });

    it('the chunks of another envelope under the same key: ERR_DECRYPT_FAILED', async () => {
      const other = await encrypt(plaintext, { chunkSize: cs });
      const spliced = concat(
        envelope.subarray(0, shape.prefix),
        other.subarray(layout(other).prefix),
      );
      await expectCode(decrypt(spliced), 'ERR_DECRYPT_FAILED');
    });

    it('a wrong key: ERR_DECRYPT_FAILED, for one chunk and for several', async () => {
      await expectCode(decrypt(envelope, randomBytes(32)), 'ERR_DECRYPT_FAILED');
      const single = await encrypt(randomBytes(cs), { chunkSize: cs });
      await expectCode(decrypt(single, randomBytes(32)), 'ERR_DECRYPT_FAILED');
    });

    it('bad magic, unknown format version, bad header: ERR_ENVELOPE_FORMAT', async () => {
      const withHeader = (json: string, version = 1) => {
        const h = new TextEncoder().encode(json);
        const fixed = new Uint8Array(FIXED_PREFIX_BYTES);
        fixed.set(MAGIC);
        fixed[8] = version;
        new DataView(fixed.buffer).setUint16(9, h.length);
        return concat(fixed, h, envelope.subarray(shape.prefix));
      };
      const good = JSON.parse(
        new TextDecoder().decode(envelope.subarray(FIXED_PREFIX_BYTES, shape.prefix)),
      ) as Record<string, unknown>;
      const cases: [string, Uint8Array][] = [
        ['bad magic', concat(new TextEncoder().encode('KMAASENX'), envelope.subarray(8))],
        ['format version 2', withHeader(JSON.stringify(good), 2)],
        ['format version 0', withHeader(JSON.stringify(good), 0)],
        ['empty header', withHeader('')],
        ['not JSON', withHeader('{"tenant":')],
        ['not UTF-8', concat(withHeader('').subarray(0, 9), Uint8Array.of(0, 2, 0xff, 0xfe))],
        ['an array', withHeader('[]')],
        ['missing salt', withHeader(JSON.stringify({ ...good, salt: undefined }))],
        ['extra field', withHeader(JSON.stringify({ ...good, extra: 1 }))],
        ['short salt', withHeader(JSON.stringify({ ...good, salt: 'AAAA' }))],
        ['salt not base64url', withHeader(JSON.stringify({ ...good, salt: '!'.repeat(43) }))],
        ['chunkSize 0', withHeader(JSON.stringify({ ...good, chunkSize: 0 }))],
        ['chunkSize 1 GiB', withHeader(JSON.stringify({ ...good, chunkSize: 2 ** 30 }))],
        ['chunkSize 1.5', withHeader(JSON.stringify({ ...good, chunkSize: 1.5 }))],
        ['bad tenant', withHeader(JSON.stringify({ ...good, tenant: 'Acme!' }))],
        ['version 0', withHeader(JSON.stringify({ ...good, keyVersion: 0 }))],
        ['empty document id', withHeader(JSON.stringify({ ...good, documentId: '' }))],
        [
          'document id too long',
          withHeader(JSON.stringify({ ...good, documentId: 'x'.repeat(1025) })),
        ],
      ];
      for (const [name, bytes] of cases) {
        const err = await expectCode(decrypt(bytes), 'ERR_ENVELOPE_FORMAT');
        expect(err.message, name).to.be.a('string').and.not.equal('');
      }
    });

    it('a header that parses but was altered does not authenticate: ERR_DECRYPT_FAILED', async () => {
      const json = new TextDecoder().decode(envelope.subarray(FIXED_PREFIX_BYTES, shape.prefix));
      const altered = new TextEncoder().encode(json.replace('001.pdf', '002.pdf'));
      const bad = concat(
        envelope.subarray(0, FIXED_PREFIX_BYTES),
        altered,
        envelope.subarray(shape.prefix),
      );
      await expectCode(decrypt(bad), 'ERR_DECRYPT_FAILED');
    });
  });

  describe('API boundaries', () => {
    it('refuses bad options with ERR_VALIDATION on the call', () => {
      const src = pieces(new Uint8Array(1));
      const bad: Partial<EncryptOptions>[] = [
        { key: new Uint8Array(16) },
        { tenant: 'Not A Tenant' },
        { keyVersion: 0 },
        { documentId: '' },
        { chunkSize: 0 },
        { chunkSize: 2 ** 30 },
      ];
      for (const o of bad) {
        expect(() => encryptStream(src, { ...BASE, ...o }), JSON.stringify(o))
          .to.throw()
          .with.property('code', 'ERR_VALIDATION');
      }
      expect(() => decryptStream(src, new Uint8Array(31)))
        .to.throw()
        .with.property('code', 'ERR_VALIDATION');
    });

    it('refuses a source of strings', async () => {
      const strings = () => Readable.from(['text']) as AsyncIterable<Uint8Array>;
      await expectCode(collect(encryptStream(strings(), BASE)), 'ERR_VALIDATION');
    });

    it('closes the source when the reader stops early or fails', async () => {
      const envelope = await encrypt(randomBytes(5 * 64), { chunkSize: 64 });
      let closed = 0;
      async function* tracked(bytes: Uint8Array) {
        try {
          yield* pieces(bytes, [10]);
        } finally {
          closed++;
        }
      }
      const early = decryptStream(tracked(envelope), KEY)[Symbol.asyncIterator]();
      expect((await early.next()).value).to.have.length(64);
      await early.return?.();
      expect(closed).to.equal(1);
      await expectCode(
        collect(decryptStream(tracked(envelope), randomBytes(32))),
        'ERR_DECRYPT_FAILED',
      );
      expect(closed).to.equal(2);
      await expectCode(readHeader(tracked(new Uint8Array(40))), 'ERR_ENVELOPE_FORMAT');
      expect(closed).to.equal(3);
    });
  });
});
