/**
 * The node-to-node seal that DKG round-2 packages (round2-envelope.ts) and reshare pieces
 * (reshare-envelope.ts) share: a plaintext encrypted to the recipient's X25519 identity key and
 * signed with the sender's Ed25519 identity key, so that the coordinator relaying it sees only
 * ciphertext and cannot alter, swap or forge one.
 *
 * HPKE-shaped (RFC 9180 section 4.1, DHKEM with X25519 and HKDF-SHA-256, AES-256-GCM), written
 * out with labels of our own, plus an outer signature because HPKE's base mode is anonymous and
 * the recipient must know the sender:
 *
 *   bound      = ctx || ephemeral public key (32) || recipient X25519 public key (32)
 *   dh         = X25519(ephemeral secret, recipient public)          RFC 7748 section 5; the
 *                all-zero output of a low-order key is refused      (section 6.1)
 *   key, nonce = HKDF-SHA-256(IKM = dh, salt = label, info = bound, L = 44)   RFC 5869
 *   ciphertext = AES-256-GCM(key, nonce, plaintext, AAD = bound) (plaintext + 16-byte tag)
 *   signature  = Ed25519(sender signing key, signature label || bound || ciphertext)  RFC 8032
 *
 * `ctx` is the caller's canonical encoding of what the box is about; it is bound into the key,
 * the AAD and the signature, so a box for another context fails to open even before its
 * signature is considered. A fresh ephemeral key per box gives each its own AEAD key, so the
 * derived nonce is never reused under one key. Opening checks the signature FIRST: nothing
 * unauthenticated reaches the decryption, and every later failure is the signer's doing.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { concat, utf8Bytes } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import type { Rng } from '../shared/shamir.ts';

const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const SIGNATURE_BYTES = 64;

/** The two labels that keep one kind of box from ever opening as another. */
export interface BoxLabels {
  /** HKDF salt. */
  key: string;
  /** Prefix of the signed bytes. */
  signature: string;
}

/** The sender's side: its signing key (NodeIdentity satisfies this). */
export interface BoxSigner {
  sign(msg: Uint8Array): Uint8Array;
}

/** The recipient's side: X25519 with its own secret key (NodeIdentity satisfies this). */
export interface BoxRecipient {
  readonly encryptionPublicKey: Uint8Array;
  sharedSecret(peerPublic: Uint8Array): Uint8Array;
}

export interface SealedBox {
  ephemeral: Uint8Array;
  ciphertext: Uint8Array;
  signature: Uint8Array;
}

/**
 * Why a box did not open: `signature` before anything is trusted, `decrypt` once the signature
 * held (bad lengths, an invalid ephemeral key, a failed AEAD tag).
 */
export type BoxFailure = 'signature' | 'decrypt';

/** Turns a failure into the caller's error, which names the sender. */
export type BoxRefusal = (stage: BoxFailure, why: string) => KmaasError;

function boundBytes(ctx: Uint8Array, ephemeral: Uint8Array, recipient: Uint8Array): Uint8Array {
  return concat(ctx, ephemeral, recipient);
}

/** The bytes the signature covers; tests use it to play a sender that signs something bad. */
export function signedBytes(
  labels: BoxLabels,
  ctx: Uint8Array,
  ephemeral: Uint8Array,
  recipientKey: Uint8Array,
  ciphertext: Uint8Array,
): Uint8Array {
  return concat(utf8Bytes(labels.signature), boundBytes(ctx, ephemeral, recipientKey), ciphertext);
}

/** HKDF output split into the AES key and the GCM nonce; the caller zeroes `okm`. */
function deriveKey(labels: BoxLabels, dh: Uint8Array, bound: Uint8Array) {
  const okm = hkdf(sha256, dh, utf8Bytes(labels.key), bound, KEY_BYTES + NONCE_BYTES);
  return { okm, key: okm.subarray(0, KEY_BYTES), nonce: okm.subarray(KEY_BYTES) };
}

function isZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (const b of bytes) acc |= b;
  return acc === 0;
}

/**
 * Seal `plaintext` to the recipient whose X25519 public key is `recipientKey` (node `to`, named
 * in the error when that key is invalid or of low order). `rng` draws the ephemeral secret.
 */
export function sealBox(
  labels: BoxLabels,
  ctx: Uint8Array,
  plaintext: Uint8Array,
  recipientKey: Uint8Array,
  to: number,
  signer: BoxSigner,
  rng: Rng = (n = KEY_BYTES) => randomBytes(n),
): SealedBox {
  const ephemeralSecret = new Uint8Array(rng(KEY_BYTES));
  let dh: Uint8Array | undefined;
  let okm: Uint8Array | undefined;
  try {
    const ephemeral = x25519.getPublicKey(ephemeralSecret);
    const lowOrder = () =>
      new KmaasError(
        'ERR_INVALID_POINT',
        `the X25519 key of node ${to} is invalid or of low order`,
        {
          node: to,
        },
      );
    try {
      dh = x25519.getSharedSecret(ephemeralSecret, recipientKey);
    } catch {
      throw lowOrder();
    }
    if (isZero(dh)) throw lowOrder();
    const bound = boundBytes(ctx, ephemeral, recipientKey);
    const derived = deriveKey(labels, dh, bound);
    okm = derived.okm;
    const cipher = createCipheriv('aes-256-gcm', derived.key, derived.nonce, {
      authTagLength: TAG_BYTES,
    });
    cipher.setAAD(bound);
    const ciphertext = concat(cipher.update(plaintext), cipher.final(), cipher.getAuthTag());
    const signature = signer.sign(concat(utf8Bytes(labels.signature), bound, ciphertext));
    return { ephemeral, ciphertext, signature };
  } finally {
    ephemeralSecret.fill(0);
    dh?.fill(0);
    okm?.fill(0);
  }
}

/**
 * Open a box addressed to `recipient` and sent by the holder of `senderKey` (Ed25519): the
 * signature first, then `length` bytes of plaintext (the caller zeroes them). Every failure goes
 * through `refuse`.
 */
export function openBox(
  labels: BoxLabels,
  ctx: Uint8Array,
  box: SealedBox,
  length: number,
  senderKey: Uint8Array,
  recipient: BoxRecipient,
  refuse: BoxRefusal,
): Uint8Array {
  const { ephemeral, ciphertext, signature } = box;
  const bound = boundBytes(ctx, ephemeral, recipient.encryptionPublicKey);
  let valid = false;
  if (signature.length === SIGNATURE_BYTES) {
    try {
      valid = ed25519.verify(
        signature,
        concat(utf8Bytes(labels.signature), bound, ciphertext),
        senderKey,
      );
    } catch {
      valid = false;
    }
  }
  if (!valid) throw refuse('signature', 'the signature does not verify against its identity key');
  if (ephemeral.length !== KEY_BYTES || ciphertext.length !== length + TAG_BYTES) {
    throw refuse('decrypt', 'ephemeral key or ciphertext of bad length');
  }
  let dh: Uint8Array;
  try {
    dh = recipient.sharedSecret(ephemeral);
  } catch {
    throw refuse('decrypt', 'the ephemeral key is invalid');
  }
  const { okm, key, nonce } = deriveKey(labels, dh, bound);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(bound);
    decipher.setAuthTag(ciphertext.subarray(length));
    const plain = decipher.update(ciphertext.subarray(0, length));
    try {
      decipher.final();
    } catch {
      plain.fill(0);
      throw refuse('decrypt', 'the ciphertext fails authentication');
    }
    const out = new Uint8Array(plain);
    plain.fill(0);
    return out;
  } finally {
    dh.fill(0);
    okm.fill(0);
  }
}
