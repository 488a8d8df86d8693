/**
 * Sealing (nodes/sealing.ts): HKDF-SHA-256 key-encryption key (RFC 5869) and AES-256-GCM with
 * the record's context as AAD. Cross-checked against node:crypto's own HKDF.
 */
import { createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Redacted } from '../../shared/redacted.ts';
import { KEK_INFO, Sealer, UnsealError, encodeAad, type SealContext } from '../../nodes/sealing.ts';

const secret = new Redacted(new Uint8Array(randomBytes(32)));
const salt = new Uint8Array(randomBytes(32));
const ctx: SealContext = { purpose: 'share', nodeId: 3, tenant: 'acme', version: 2 };
const plaintext = new Uint8Array(randomBytes(32));

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(haystack).indexOf(Buffer.from(needle)) !== -1;
}

describe('nodes/sealing: AES-256-GCM under an HKDF-SHA-256 key-encryption key', () => {
  it('opens what it sealed, and the ciphertext does not contain the plaintext', () => {
    const sealer = new Sealer(secret, salt);
    const sealed = sealer.seal(plaintext, ctx);
    expect(contains(sealed, plaintext)).to.equal(false);
    expect(sealed.length).to.equal(1 + 12 + plaintext.length + 16);
    expect(sealer.open(sealed, ctx)).to.deep.equal(plaintext);
  });

  it('uses a fresh nonce each time', () => {
    const sealer = new Sealer(secret, salt);
    expect(sealer.seal(plaintext, ctx)).to.not.deep.equal(sealer.seal(plaintext, ctx));
  });

  it('derives the KEK exactly as RFC 5869 HKDF-SHA-256 (cross-check with node:crypto)', () => {
    const kek = new Uint8Array(hkdfSync('sha256', secret.reveal(), salt, KEK_INFO, 32));
    const sealed = new Sealer(secret, salt).seal(plaintext, ctx);
    // Open by hand with node:crypto and the independently derived key.
    const d = createDecipheriv('aes-256-gcm', kek, sealed.subarray(1, 13));
    d.setAAD(encodeAad(ctx));
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    const out = Buffer.concat([d.update(sealed.subarray(13, sealed.length - 16)), d.final()]);
    expect(new Uint8Array(out)).to.deep.equal(plaintext);
  });

  const changes: [string, SealContext][] = [
    ['another purpose', { ...ctx, purpose: 'ceremony' }],
    ['another node', { ...ctx, nodeId: 4 }],
    ['another tenant', { ...ctx, tenant: 'acme2' }],
    ['another version', { ...ctx, version: 3 }],
    ['a ceremony id', { ...ctx, ceremonyId: 'abcdefgh' }],
    ['another committee epoch', { ...ctx, epoch: 2 }],
  ];
  for (const [name, other] of changes) {
    it(`refuses a record moved to ${name} (AAD binding)`, () => {
      const sealer = new Sealer(secret, salt);
      expect(() => sealer.open(sealer.seal(plaintext, ctx), other)).to.throw(UnsealError);
    });
  }

  it('refuses a flipped bit, a truncated record and another secret', () => {
    const sealer = new Sealer(secret, salt);
    const sealed = sealer.seal(plaintext, ctx);
    const flipped = sealed.slice();
    flipped[20]! ^= 1;
    expect(() => sealer.open(flipped, ctx)).to.throw(UnsealError);
    expect(() => sealer.open(sealed.subarray(0, 20), ctx)).to.throw(UnsealError);
    const other = new Sealer(new Redacted(new Uint8Array(randomBytes(32))), salt);
    expect(() => other.open(sealed, ctx)).to.throw(UnsealError);
  });

  it('epoch 1 seals as records did before epochs existed: an absent epoch opens it', () => {
    const sealer = new Sealer(secret, salt);
    expect(encodeAad({ ...ctx, epoch: 1 })).to.deep.equal(encodeAad(ctx));
    expect(sealer.open(sealer.seal(plaintext, ctx), { ...ctx, epoch: 1 })).to.deep.equal(plaintext);
    expect(() => sealer.open(sealer.seal(plaintext, { ...ctx, epoch: 3 }), ctx)).to.throw(
      UnsealError,
    );
  });

  it('AAD encodings of distinct contexts differ even when fields could run together', () => {
    const a = encodeAad({ ...ctx, tenant: 'ab', ceremonyId: 'c' });
    const b = encodeAad({ ...ctx, tenant: 'a', ceremonyId: 'bc' });
    expect(a).to.not.deep.equal(b);
  });
});
