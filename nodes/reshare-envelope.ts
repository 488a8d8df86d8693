/**
 * Sealed reshare pieces (DESIGN.md section 3): the scalars g_i(x_j) dealer i owes receiver j for
 * one chunk of keys travel encrypted to j's X25519 identity key and signed with i's Ed25519
 * identity key, exactly as DKG round-2 packages do (round2-envelope.ts has the reasoning: an
 * HPKE-shaped seal, RFC 9180 section 4.1, with an outer signature because HPKE base mode is
 * anonymous). Only the context and the plaintext length differ:
 *
 *   ctx        = lp(LABEL) || lp(reshareId) || u16(chunk) || u16(dealer) || u16(to) ||
 *                u16(|S|) || u16(s) for each s in S (the dealer set, ascending)
 *   bound      = ctx || ephemeral public key (32) || recipient X25519 public key (32)
 *   dh         = X25519(ephemeral secret, recipient public)        RFC 7748 section 5 (all-zero
 *                                                                  output refused, section 6.1)
 *   key, nonce = HKDF-SHA-256(IKM = dh, salt = LABEL, info = bound, L = 44)   RFC 5869
 *   ciphertext = AES-256-GCM(key, nonce, g_i(x_j) of each key of the chunk (32 bytes each,
 *                little-endian), AAD = bound)                     SP 800-38D
 *   signature  = Ed25519(dealer signing key, SIG_LABEL || bound || ciphertext)  RFC 8032 5.1.6
 *
 * Binding the dealer set means a piece dealt for one set S (whose Lagrange weights the receiver
 * applies) is never combined under another. The signature is checked first; any failure is the
 * dealer's: ERR_RESHARE_DEALER with details.culprits = [dealer].
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { concat, fromB64, lengthPrefixed, toB64, utf8Bytes } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import type { Rng } from '../shared/shamir.ts';
import type { EnvelopeRecipient, EnvelopeSigner, SealedPackage } from './round2-envelope.ts';

export const PIECE_LABEL = 'KMaaS-v1 reshare piece';
const SIGNATURE_LABEL = utf8Bytes('KMaaS-v1 reshare piece signature');
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const SIGNATURE_BYTES = 64;
export const SCALAR_BYTES = 32;

/** What one sealed piece is about; all of it is bound into the key, the AAD and the signature. */
export interface PieceContext {
  reshareId: string;
  chunk: number;
  dealer: number;
  to: number;
  /** The dealer set S, ascending. */
  dealers: readonly number[];
}

function u16(n: number): Uint8Array {
  return Uint8Array.of(n >> 8, n & 0xff);
}

export function encodePieceContext(c: PieceContext): Uint8Array {
  return concat(
    lengthPrefixed(utf8Bytes(PIECE_LABEL)),
    lengthPrefixed(utf8Bytes(c.reshareId)),
    u16(c.chunk),
    u16(c.dealer),
    u16(c.to),
    u16(c.dealers.length),
    ...c.dealers.map(u16),
  );
}

function bound(c: PieceContext, ephemeral: Uint8Array, recipient: Uint8Array): Uint8Array {
  return concat(encodePieceContext(c), ephemeral, recipient);
}

function deriveKey(dh: Uint8Array, b: Uint8Array) {
  const okm = hkdf(sha256, dh, utf8Bytes(PIECE_LABEL), b, KEY_BYTES + NONCE_BYTES);
  return { okm, key: okm.subarray(0, KEY_BYTES), nonce: okm.subarray(KEY_BYTES) };
}

/**
 * Seal `scalars` (a multiple of 32 bytes) from `c.dealer` to `c.to`, whose X25519 identity key is
 * `recipientKey`. `rng` draws the ephemeral secret (default: the crypto RNG).
 */
export function sealPieces(
  c: PieceContext,
  scalars: Uint8Array,
  recipientKey: Uint8Array,
  signer: EnvelopeSigner,
  rng: Rng = (n = KEY_BYTES) => randomBytes(n),
): SealedPackage {
  if (scalars.length === 0 || scalars.length % SCALAR_BYTES !== 0) {
    throw new KmaasError('ERR_INTERNAL', 'reshare pieces are whole 32-byte scalars');
  }
  const ephemeralSecret = new Uint8Array(rng(KEY_BYTES));
  let dh: Uint8Array | undefined;
  let okm: Uint8Array | undefined;
  try {
    const ephemeral = x25519.getPublicKey(ephemeralSecret);
    const lowOrder = () =>
      new KmaasError('ERR_INVALID_POINT', `the X25519 key of node ${c.to} is invalid`, {
        node: c.to,
      });
    try {
      dh = x25519.getSharedSecret(ephemeralSecret, recipientKey);
    } catch {
      throw lowOrder();
    }
    if (dh.every((b) => b === 0)) throw lowOrder();
    const b = bound(c, ephemeral, recipientKey);
    const derived = deriveKey(dh, b);
    okm = derived.okm;
    const cipher = createCipheriv('aes-256-gcm', derived.key, derived.nonce, {
      authTagLength: TAG_BYTES,
    });
    cipher.setAAD(b);
    const ciphertext = concat(cipher.update(scalars), cipher.final(), cipher.getAuthTag());
    return {
      from: c.dealer,
      to: c.to,
      ephemeral: toB64(ephemeral),
      ciphertext: toB64(ciphertext),
      signature: toB64(signer.sign(concat(SIGNATURE_LABEL, b, ciphertext))),
    };
  } finally {
    ephemeralSecret.fill(0);
    dh?.fill(0);
    okm?.fill(0);
  }
}

function culprit(c: PieceContext, why: string): KmaasError {
  return new KmaasError(
    'ERR_RESHARE_DEALER',
    `reshare ${c.reshareId}: piece from dealer ${c.dealer}: ${why}`,
    { reshareId: c.reshareId, chunk: c.chunk, from: c.dealer, to: c.to, culprits: [c.dealer] },
  );
}

function decode(text: string, name: string, c: PieceContext): Uint8Array {
  try {
    return new Uint8Array(fromB64(text, name));
  } catch {
    throw culprit(c, `${name} is not base64url`);
  }
}

/**
 * Open the piece addressed to `recipient`: verify the signature against `dealerKey` (the old
 * committee's Ed25519 key of the dealer) first, then decrypt `count` scalars (bytes; the caller
 * decodes and zeroes them).
 */
export function openPieces(
  c: PieceContext,
  piece: Pick<SealedPackage, 'ephemeral' | 'ciphertext' | 'signature'>,
  count: number,
  dealerKey: Uint8Array,
  recipient: EnvelopeRecipient,
): Uint8Array {
  const signature = decode(piece.signature, 'signature', c);
  const ephemeral = decode(piece.ephemeral, 'ephemeral', c);
  const ciphertext = decode(piece.ciphertext, 'ciphertext', c);
  const b = bound(c, ephemeral, recipient.encryptionPublicKey);
  let valid = false;
  if (signature.length === SIGNATURE_BYTES) {
    try {
      valid = ed25519.verify(signature, concat(SIGNATURE_LABEL, b, ciphertext), dealerKey);
    } catch {
      valid = false;
    }
  }
  if (!valid) throw culprit(c, 'the signature does not verify against its identity key');
  const length = count * SCALAR_BYTES;
  if (ephemeral.length !== KEY_BYTES || ciphertext.length !== length + TAG_BYTES) {
    throw culprit(c, 'ephemeral key or ciphertext of bad length');
  }
  let dh: Uint8Array;
  try {
    dh = recipient.sharedSecret(ephemeral);
  } catch {
    throw culprit(c, 'the ephemeral key is invalid');
  }
  const { okm, key, nonce } = deriveKey(dh, b);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(b);
    decipher.setAuthTag(ciphertext.subarray(length));
    const plain = decipher.update(ciphertext.subarray(0, length));
    try {
      decipher.final();
    } catch {
      plain.fill(0);
      throw culprit(c, 'the ciphertext fails authentication');
    }
    const out = new Uint8Array(plain);
    plain.fill(0);
    return out;
  } finally {
    dh.fill(0);
    okm.fill(0);
  }
}
