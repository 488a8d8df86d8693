/**
 * Sealed DKG round-2 packages (DESIGN.md section 3): the share f_i(x_j) that node i owes node j
 * travels encrypted to j's X25519 identity key and signed with i's Ed25519 identity key, in the
 * node-to-node seal of sealed-box.ts (HPKE-shaped, RFC 9180 section 4.1, with an outer signature),
 * so the coordinator relaying it sees only ciphertext and cannot alter, swap or forge a package.
 *
 *   ctx        = lp(LABEL) || lp(ceremonyId) || lp(tenant) || u32(version) || u16(from) || u16(to)
 *   plaintext  = the share (32 bytes)
 *
 * The context in HKDF info and in the AAD means a package for another ceremony, tenant, version or
 * recipient (or one with from and to swapped) derives another key and fails to open even before
 * the signature is considered. The signature binds the whole package to its sender's identity key
 * as listed in the ceremony's committee; it is checked first, so that nothing unauthenticated
 * reaches the decryption and a failure names the sender (details.culprits) the way a bad share
 * does in dkg-machine.ts.
 *
 * Wire form (every field unpadded base64url): { from, to, ephemeral, ciphertext, signature }.
 * The committee keys come from dkg.round1, vouched for by the operators' signed proposal.
 */
import { fromB64, lengthPrefixed, concat, toB64, utf8Bytes } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import type { Rng } from '../shared/shamir.ts';
import {
  openBox,
  sealBox,
  signedBytes,
  type BoxLabels,
  type BoxRecipient,
  type BoxSigner,
} from './sealed-box.ts';

export const ENVELOPE_LABEL = 'KMaaS-v1 DKG round-2 package';
const LABELS: BoxLabels = {
  key: ENVELOPE_LABEL,
  signature: 'KMaaS-v1 DKG round-2 package signature',
};
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
export type EnvelopeSigner = BoxSigner;

/** The recipient's side: X25519 with its own secret key (NodeIdentity satisfies this). */
export type EnvelopeRecipient = BoxRecipient;

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
  return signedBytes(LABELS, encodeEnvelopeContext(context), ephemeral, recipientKey, ciphertext);
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
  rng?: Rng,
): SealedPackage {
  if (share.length !== SHARE_BYTES) {
    throw new KmaasError('ERR_INTERNAL', `a round-2 share is ${SHARE_BYTES} bytes`);
  }
  const ctx = encodeEnvelopeContext(context);
  const box = sealBox(LABELS, ctx, share, recipientKey, context.to, signer, rng);
  return {
    from: context.from,
    to: context.to,
    ephemeral: toB64(box.ephemeral),
    ciphertext: toB64(box.ciphertext),
    signature: toB64(box.signature),
  };
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
function field(text: string, name: string, context: EnvelopeContext): Uint8Array {
  try {
    return new Uint8Array(fromB64(text, name));
  } catch {
    throw refused('ERR_DKG_PACKAGE_SIGNATURE', context, `${name} is not base64url`);
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
  const box = {
    signature: field(pkg.signature, 'signature', context),
    ephemeral: field(pkg.ephemeral, 'ephemeral', context),
    ciphertext: field(pkg.ciphertext, 'ciphertext', context),
  };
  return openBox(
    LABELS,
    encodeEnvelopeContext(context),
    box,
    SHARE_BYTES,
    senderKey,
    recipient,
    (stage, why) =>
      refused(
        stage === 'signature' ? 'ERR_DKG_PACKAGE_SIGNATURE' : 'ERR_DKG_PACKAGE_DECRYPT',
        context,
        why,
      ),
  );
}
