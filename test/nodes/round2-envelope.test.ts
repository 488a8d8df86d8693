/**
 * nodes/round2-envelope.ts on its own: a round trip, the wire form pinned, and each way a package
 * can be wrong (another recipient, a flipped bit, from and to swapped, another ceremony, tenant
 * or version, a signature by another node, a signed package that does not decrypt), each refused
 * with its code and the sender named.
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { fromB64, toB64 } from '../../shared/encoding.ts';
import { NodeIdentity } from '../../nodes/identity.ts';
import {
  openPackage,
  sealPackage,
  signedPayload,
  type EnvelopeContext,
  type EnvelopeRecipient,
  type SealedPackage,
} from '../../nodes/round2-envelope.ts';
import { NodeStore } from '../../nodes/store.ts';
import { expectCode, randomSecret } from './helpers.ts';

/** A fixed-key identity for vectors: the same keys on every run. */
function fixedIdentity(seed: number) {
  const signingKey = new Uint8Array(32).fill(seed);
  const encryptionKey = new Uint8Array(32).fill(seed + 100);
  return {
    signingPublicKey: ed25519.getPublicKey(signingKey),
    encryptionPublicKey: x25519.getPublicKey(encryptionKey),
    sign: (msg: Uint8Array) => ed25519.sign(msg, signingKey),
    sharedSecret: (peer: Uint8Array) => x25519.getSharedSecret(encryptionKey, peer),
  };
}

/** Counter bytes: a replayable "RNG". */
function counterRng(start: number) {
  let n = start;
  return (len = 32) => new Uint8Array(len).fill(n++ & 0xff);
}

describe('nodes/round2-envelope: sealed, signed DKG round-2 packages', () => {
  const dirs: string[] = [];
  const stores: NodeStore[] = [];
  let alice: NodeIdentity; // node 1, the sender
  let bob: NodeIdentity; // node 2, the recipient
  let carol: NodeIdentity; // node 3, a third committee member
  const share = new Uint8Array(32).map((_, i) => i + 1);
  const ctx: EnvelopeContext = {
    ceremonyId: 'ceremony-1',
    tenant: 'acme',
    version: 1,
    from: 1,
    to: 2,
  };

  function identity(id: number): NodeIdentity {
    const dir = mkdtempSync(join(tmpdir(), 'kmaas-envelope-'));
    dirs.push(dir);
    const store = NodeStore.open(dir, id, randomSecret());
    stores.push(store);
    return NodeIdentity.loadOrCreate(store);
  }

  before(() => {
    alice = identity(1);
    bob = identity(2);
    carol = identity(3);
  });

  after(() => {
    for (const s of stores) s.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  const seal = (c = ctx, to = bob.encryptionPublicKey) => sealPackage(c, share, to, alice);
  const open = (
    pkg: SealedPackage,
    c = ctx,
    sender = alice.signingPublicKey,
    recipient: EnvelopeRecipient = bob,
  ) => openPackage(c, pkg, sender, recipient);

  it('round trip: the recipient gets the share back; the wire holds only the five fields', () => {
    const pkg = seal();
    expect(Object.keys(pkg).sort()).to.deep.equal([
      'ciphertext',
      'ephemeral',
      'from',
      'signature',
      'to',
    ]);
    expect(pkg).to.include({ from: 1, to: 2 });
    expect(fromB64(pkg.ephemeral, 'e')).to.have.length(32);
    expect(fromB64(pkg.ciphertext, 'c')).to.have.length(48);
    expect(fromB64(pkg.signature, 's')).to.have.length(64);
    expect(JSON.stringify(pkg)).to.not.include(toB64(share));
    expect(open(pkg)).to.deep.equal(share);
    // A fresh ephemeral key each time: two seals of the same share differ entirely.
    const again = seal();
    expect(again.ephemeral).to.not.equal(pkg.ephemeral);
    expect(again.ciphertext).to.not.equal(pkg.ciphertext);
  });

  it('randomness is a parameter: the same RNG gives the same bytes (wire format pinned)', () => {
    const a = fixedIdentity(1);
    const b = fixedIdentity(2);
    const one = sealPackage(ctx, share, b.encryptionPublicKey, a, counterRng(7));
    const two = sealPackage(ctx, share, b.encryptionPublicKey, a, counterRng(7));
    expect(two).to.deep.equal(one);
    expect(openPackage(ctx, one, a.signingPublicKey, b)).to.deep.equal(share);
    // Any change to the construction (labels, context encoding, KDF, AEAD, signed bytes) shows
    // here. Recompute deliberately, never to make a failure go away.
    expect(bytesToHex(sha256(new TextEncoder().encode(JSON.stringify(one))))).to.equal(
      '88455a786324390e097f08097edd28774d6d1a89b41103980acebdc9bf4f99a7',
    );
  });

  const refusals: [string, () => Uint8Array, string, object][] = [
    [
      "opened by a node other than the recipient (carol's keys)",
      () => open(seal(), ctx, alice.signingPublicKey, carol),
      'ERR_DKG_PACKAGE_SIGNATURE',
      { from: 1, culprits: [1] },
    ],
    [
      "sealed to carol's key, claimed for bob",
      () => open(seal(ctx, carol.encryptionPublicKey)),
      'ERR_DKG_PACKAGE_SIGNATURE',
      { from: 1 },
    ],
    [
      'one bit of the ciphertext flipped',
      () => {
        const pkg = seal();
        const c = fromB64(pkg.ciphertext, 'c');
        c[40]! ^= 0x01;
        return open({ ...pkg, ciphertext: toB64(c) });
      },
      'ERR_DKG_PACKAGE_SIGNATURE',
      { from: 1 },
    ],
    [
      'one bit of the ephemeral key flipped',
      () => {
        const pkg = seal();
        const e = fromB64(pkg.ephemeral, 'e');
        e[0]! ^= 0x02;
        return open({ ...pkg, ephemeral: toB64(e) });
      },
      'ERR_DKG_PACKAGE_SIGNATURE',
      { from: 1 },
    ],
    [
      'one bit of the signature flipped',
      () => {
        const pkg = seal();
        const s = fromB64(pkg.signature, 's');
        s[10]! ^= 0x80;
        return open({ ...pkg, signature: toB64(s) });
      },
      'ERR_DKG_PACKAGE_SIGNATURE',
      { from: 1 },
    ],
    [
      'from and to swapped',
      () => open(seal(), { ...ctx, from: 2, to: 1 }, bob.signingPublicKey, alice),
      'ERR_DKG_PACKAGE_SIGNATURE',
      { from: 2, to: 1, culprits: [2] },
    ],
    [
      'another ceremony',
      () => open(seal(), { ...ctx, ceremonyId: 'ceremony-2' }),
      'ERR_DKG_PACKAGE_SIGNATURE',
      { ceremonyId: 'ceremony-2' },
    ],
    [
      'another tenant',
      () => open(seal(), { ...ctx, tenant: 'other' }),
      'ERR_DKG_PACKAGE_SIGNATURE',
      { from: 1 },
    ],
    [
      'another key version',
      () => open(seal(), { ...ctx, version: 2 }),
      'ERR_DKG_PACKAGE_SIGNATURE',
      { from: 1 },
    ],
    [
      "signed by carol, checked against alice's committee key",
      () => open(sealPackage(ctx, share, bob.encryptionPublicKey, carol)),
      'ERR_DKG_PACKAGE_SIGNATURE',
      { from: 1, culprits: [1] },
    ],
    [
      'a signature of the wrong length',
      () => open({ ...seal(), signature: toB64(new Uint8Array(63)) }),
      'ERR_DKG_PACKAGE_SIGNATURE',
      { from: 1 },
    ],
    [
      'a signature that is not base64url',
      () => open({ ...seal(), signature: '!!' }),
      'ERR_DKG_PACKAGE_SIGNATURE',
      { from: 1 },
    ],
    [
      "bob's public key but another secret key (the wrong recipient key)",
      () =>
        open(seal(), ctx, alice.signingPublicKey, {
          ...carol,
          encryptionPublicKey: bob.encryptionPublicKey,
          sharedSecret: (p) => carol.sharedSecret(p),
        }),
      'ERR_DKG_PACKAGE_DECRYPT',
      { from: 1, to: 2, culprits: [1] },
    ],
    [
      'a damaged ciphertext that alice herself signed',
      () => {
        const pkg = seal();
        const c = fromB64(pkg.ciphertext, 'c');
        c[3]! ^= 0x04;
        const signed = signedPayload(ctx, fromB64(pkg.ephemeral, 'e'), bob.encryptionPublicKey, c);
        return open({ ...pkg, ciphertext: toB64(c), signature: toB64(alice.sign(signed)) });
      },
      'ERR_DKG_PACKAGE_DECRYPT',
      { from: 1, culprits: [1] },
    ],
    [
      'a short ciphertext that alice herself signed',
      () => {
        const pkg = seal();
        const c = fromB64(pkg.ciphertext, 'c').subarray(0, 40);
        const signed = signedPayload(ctx, fromB64(pkg.ephemeral, 'e'), bob.encryptionPublicKey, c);
        return open({ ...pkg, ciphertext: toB64(c), signature: toB64(alice.sign(signed)) });
      },
      'ERR_DKG_PACKAGE_DECRYPT',
      { from: 1 },
    ],
  ];
  for (const [name, attempt, code, details] of refusals) {
    it(`${name}: refused with ${code}, naming the sender`, () => {
      expectCode(attempt, code as 'ERR_DKG_PACKAGE_SIGNATURE', details);
    });
  }

  it('sealing to a low-order X25519 key is refused with ERR_INVALID_POINT', () => {
    // The all-zero u-coordinate is of low order: X25519 with it is all zeros (RFC 7748 6.1).
    expectCode(() => sealPackage(ctx, share, new Uint8Array(32), alice), 'ERR_INVALID_POINT');
  });
});
