/**
 * Sealed DKG round-2 packages (DESIGN.md section 3): the share f_i(x_j) that node i owes node j
 * travels encrypted to j's X25519 identity key and signed with i's Ed25519 identity key, so the
 * coordinator relaying it sees only ciphertext and cannot alter, swap or forge a package.
 *
 * The construction is HPKE-shaped (RFC 9180 section 4.1, DHKEM with X25519 and HKDF-SHA-256,
 * AES-256-GCM), written out here with labels of our own rather than HPKE's, plus an outer
 * signature, because the recipient must know the package comes from `from` and not merely from
 * someone who knows j's public key (HPKE's base mode is anonymous):
 *
 *   ctx        = lp(LABEL) || lp(ceremonyId) || lp(tenant) || u32(version) || u16(from) || u16(to)
 *   bound      = ctx || ephemeral public key (32) || recipient X25519 public key (32)
 *   dh         = X25519(ephemeral secret, recipient public)          RFC 7748 section 5; the
 *                all-zero output of a low-order key is refused      (section 6.1)
 *   key, nonce = HKDF-SHA-256(IKM = dh, salt = LABEL, info = bound, L = 44)   RFC 5869
 *   ciphertext = AES-256-GCM(key, nonce, share, AAD = bound) (32 + 16-byte tag)  SP 800-38D
 *   signature  = Ed25519(sender signing key, SIG_LABEL || bound || ciphertext)  RFC 8032 5.1.6
 *
 * Why each piece: a fresh ephemeral key per package gives every package its own AEAD key, so a
 * fixed derivation of the nonce is safe and nothing is ever encrypted twice under one key. The
 * context in HKDF info and in the AAD means a package for another ceremony, tenant, version or
 * recipient (or one with from and to swapped) derives another key and fails to open even before
 * the signature is considered. The signature binds the whole package to its sender's identity key
 * as listed in the ceremony's committee; it is checked FIRST, so that nothing unauthenticated
 * reaches the decryption and a failure names the sender (details.culprits) the way a bad share
 * does in dkg-machine.ts.
 *
 * Wire form (every field unpadded base64url): { from, to, ephemeral, ciphertext, signature }.
 * The committee keys come from dkg.round1; who vouches for them is the caller's concern (for now
 * the coordinator fills them from the nodes' published identities, each node checking its own
 * entry; operator-signed proposals will vouch for the whole committee).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { concat, fromB64, lengthPrefixed, toB64, utf8Bytes } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import type { Rng } from '../shared/shamir.ts';

export const ENVELOPE_LABEL = 'KMaaS-v1 DKG round-2 package';
const SIGNATURE_LABEL = utf8Bytes('KMaaS-v1 DKG round-2 package signature');
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const SIGNATURE_BYTES = 64;
/** A round-2 share is one ristretto255 scalar. */
export const SHARE_BYTES = 32;

/** What one package is about; all of it is bound into the key, the AAD and the signature. */
export interface EnvelopeContext {
  ceremonyId: string;
  tenant: string;
  version: number;
  from: number;
  to: number;
}

/** A sealed round-2 package as it travels: no plaintext share. */
export interface SealedPackage {
  from: number;
  to: number;
  ephemeral: string;
  ciphertext: string;
  signature: string;
}

/** The sender's side: its signing key (NodeIdentity satisfies this). */
export interface EnvelopeSigner {
  sign(msg: Uint8Array): Uint8Array;
}

/** The recipient's side: X25519 with its own secret key (NodeIdentity satisfies this). */
export interface EnvelopeRecipient {
  readonly encryptionPublicKey: Uint8Array;
  sharedSecret(peerPublic: Uint8Array): Uint8Array;
}

function u16(n: number): Uint8Array {
  return Uint8Array.of(n >> 8, n & 0xff);
}

function u32(n: number): Uint8Array {
  return Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/** Canonical, length-prefixed: no two distinct contexts encode alike. */
export function encodeEnvelopeContext(c: EnvelopeContext): Uint8Array {
  return concat(
    lengthPrefixed(utf8Bytes(ENVELOPE_LABEL)),
    lengthPrefixed(utf8Bytes(c.ceremonyId)),
    lengthPrefixed(utf8Bytes(c.tenant)),
    u32(c.version),
    u16(c.from),
    u16(c.to),
  );
}

function boundBytes(c: EnvelopeContext, ephemeral: Uint8Array, recipient: Uint8Array): Uint8Array {
  return concat(encodeEnvelopeContext(c), ephemeral, recipient);
}

function signedBytes(bound: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  return concat(SIGNATURE_LABEL, bound, ciphertext);
}

/**
 * The bytes a package's signature covers: SIG_LABEL || ctx || ephemeral || recipient key ||
 * ciphertext. Exported for tests that play a sender signing something malformed.
 */
export function signedPayload(
  context: EnvelopeContext,
  ephemeral: Uint8Array,
  recipientKey: Uint8Array,
  ciphertext: Uint8Array,
): Uint8Array {
  return signedBytes(boundBytes(context, ephemeral, recipientKey), ciphertext);
}

/** HKDF output split into the AES key and the GCM nonce; the caller zeroes `okm`. */
function deriveKey(dh: Uint8Array, bound: Uint8Array) {
  const okm = hkdf(sha256, dh, utf8Bytes(ENVELOPE_LABEL), bound, KEY_BYTES + NONCE_BYTES);
  return { okm, key: okm.subarray(0, KEY_BYTES), nonce: okm.subarray(KEY_BYTES) };
}

function isZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (const b of bytes) acc |= b;
  return acc === 0;
}

/**
 * Seal `share` (32 bytes) from `context.from` to `context.to`, whose X25519 identity public key is
 * `recipientKey`. `rng` draws the ephemeral secret (default: the crypto RNG).
 *
 * @example
 *   const pkg = sealPackage({ ceremonyId, tenant, version, from: 1, to: 2 }, share,
 *     committeeKeyOf(2).encryption, identity);
 */
export function sealPackage(
  context: EnvelopeContext,
  share: Uint8Array,
  recipientKey: Uint8Array,
  signer: EnvelopeSigner,
  rng: Rng = (n = KEY_BYTES) => randomBytes(n),
): SealedPackage {
  if (share.length !== SHARE_BYTES) {
    throw new KmaasError('ERR_INTERNAL', `a round-2 share is ${SHARE_BYTES} bytes`);
  }
  const ephemeralSecret = new Uint8Array(rng(KEY_BYTES));
  let dh: Uint8Array | undefined;
  let okm: Uint8Array | undefined;
  try {
    const ephemeral = x25519.getPublicKey(ephemeralSecret);
    const lowOrder = () =>
      new KmaasError(
        'ERR_INVALID_POINT',
        `the X25519 key of node ${context.to} is invalid or of low order`,
        { node: context.to },
      );
    try {
      dh = x25519.getSharedSecret(ephemeralSecret, recipientKey);
    } catch {
      throw lowOrder();
    }
    if (isZero(dh)) throw lowOrder();
    const bound = boundBytes(context, ephemeral, recipientKey);
    const derived = deriveKey(dh, bound);
    okm = derived.okm;
    const cipher = createCipheriv('aes-256-gcm', derived.key, derived.nonce, {
      authTagLength: TAG_BYTES,
    });
    cipher.setAAD(bound);
    const ciphertext = concat(cipher.update(share), cipher.final(), cipher.getAuthTag());
    const signature = signer.sign(signedBytes(bound, ciphertext));
    return {
      from: context.from,
      to: context.to,
      ephemeral: toB64(ephemeral),
      ciphertext: toB64(ciphertext),
      signature: toB64(signature),
    };
  } finally {
    ephemeralSecret.fill(0);
    dh?.fill(0);
    okm?.fill(0);
  }
}

function refused(
  code: 'ERR_DKG_PACKAGE_SIGNATURE' | 'ERR_DKG_PACKAGE_DECRYPT',
  context: EnvelopeContext,
  why: string,
): KmaasError {
  return new KmaasError(code, `round-2 package from node ${context.from}: ${why}`, {
    ceremonyId: context.ceremonyId,
    from: context.from,
    to: context.to,
    culprits: [context.from],
  });
}

/** Base64url decoding whose failure is the sender's (it signed, or claims to have signed, it). */
function field(
  text: string,
  name: string,
  context: EnvelopeContext,
  code: Parameters<typeof refused>[0],
): Uint8Array {
  try {
    return new Uint8Array(fromB64(text, name));
  } catch {
    throw refused(code, context, `${name} is not base64url`);
  }
}

/**
 * Open a sealed package addressed to `recipient`: verify the signature against `senderKey` (the
 * committee's Ed25519 key of `context.from`) first, then decrypt. Returns the 32-byte share (the
 * caller zeroes it). ERR_DKG_PACKAGE_SIGNATURE or ERR_DKG_PACKAGE_DECRYPT, naming the sender in
 * details.from and details.culprits, when it does not check out.
 */
export function openPackage(
  context: EnvelopeContext,
  pkg: Pick<SealedPackage, 'ephemeral' | 'ciphertext' | 'signature'>,
  senderKey: Uint8Array,
  recipient: EnvelopeRecipient,
): Uint8Array {
  const signature = field(pkg.signature, 'signature', context, 'ERR_DKG_PACKAGE_SIGNATURE');
  const ephemeral = field(pkg.ephemeral, 'ephemeral', context, 'ERR_DKG_PACKAGE_SIGNATURE');
  const ciphertext = field(pkg.ciphertext, 'ciphertext', context, 'ERR_DKG_PACKAGE_SIGNATURE');
  const bound = boundBytes(context, ephemeral, recipient.encryptionPublicKey);
  let valid = false;
  if (signature.length === SIGNATURE_BYTES) {
    try {
      valid = ed25519.verify(signature, signedBytes(bound, ciphertext), senderKey);
    } catch {
      valid = false;
    }
  }
  if (!valid) {
    throw refused(
      'ERR_DKG_PACKAGE_SIGNATURE',
      context,
      'the signature does not verify against its committee signing key',
    );
  }
  // Signed by the sender: from here on, whatever is wrong with the package is the sender's doing.
  if (ephemeral.length !== KEY_BYTES || ciphertext.length !== SHARE_BYTES + TAG_BYTES) {
    throw refused('ERR_DKG_PACKAGE_DECRYPT', context, 'ephemeral key or ciphertext of bad length');
  }
  let dh: Uint8Array;
  try {
    dh = recipient.sharedSecret(ephemeral);
  } catch {
    throw refused('ERR_DKG_PACKAGE_DECRYPT', context, 'the ephemeral key is invalid');
  }
  const { okm, key, nonce } = deriveKey(dh, bound);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(bound);
    decipher.setAuthTag(ciphertext.subarray(SHARE_BYTES));
    const share = decipher.update(ciphertext.subarray(0, SHARE_BYTES));
    try {
      decipher.final();
    } catch {
      share.fill(0);
      throw refused('ERR_DKG_PACKAGE_DECRYPT', context, 'the ciphertext fails authentication');
    }
    const out = new Uint8Array(share);
    share.fill(0);
    return out;
  } finally {
    dh.fill(0);
    okm.fill(0);
  }
}
