/**
 * Sealed reshare pieces (DESIGN.md section 3): the scalars g_i(x_j) dealer i owes receiver j for
 * one chunk of keys travel encrypted to j's X25519 identity key and signed with i's Ed25519
 * identity key, in the same seal as DKG round-2 packages (sealed-box.ts: HPKE-shaped, RFC 9180
 * section 4.1, with an outer signature). Only the labels, the context and the plaintext differ:
 *
 *   ctx        = lp(LABEL) || lp(reshareId) || u16(chunk) || u16(dealer) || u16(to) ||
 *                u16(|S|) || u16(s) for each s in S (the dealer set, ascending)
 *   plaintext  = g_i(x_j) of each key of the chunk (32 bytes each, little-endian)
 *
 * Binding the dealer set means a piece dealt for one set S (whose Lagrange weights the receiver
 * applies) is never combined under another. The signature is checked first; any failure is the
 * dealer's: ERR_RESHARE_DEALER with details.culprits = [dealer].
 */
import { concat, fromB64, lengthPrefixed, toB64, utf8Bytes } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import type { Rng } from '../shared/shamir.ts';
import type { EnvelopeRecipient, EnvelopeSigner, SealedPackage } from './round2-envelope.ts';
import { openBox, sealBox, type BoxLabels } from './sealed-box.ts';

export const PIECE_LABEL = 'KMaaS-v1 reshare piece';
const LABELS: BoxLabels = { key: PIECE_LABEL, signature: 'KMaaS-v1 reshare piece signature' };
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

/**
 * Seal `scalars` (a multiple of 32 bytes) from `c.dealer` to `c.to`, whose X25519 identity key is
 * `recipientKey`. `rng` draws the ephemeral secret (default: the crypto RNG).
 */
export function sealPieces(
  c: PieceContext,
  scalars: Uint8Array,
  recipientKey: Uint8Array,
  signer: EnvelopeSigner,
  rng?: Rng,
): SealedPackage {
  if (scalars.length === 0 || scalars.length % SCALAR_BYTES !== 0) {
    throw new KmaasError('ERR_INTERNAL', 'reshare pieces are whole 32-byte scalars');
  }
  const box = sealBox(LABELS, encodePieceContext(c), scalars, recipientKey, c.to, signer, rng);
  return {
    from: c.dealer,
    to: c.to,
    ephemeral: toB64(box.ephemeral),
    ciphertext: toB64(box.ciphertext),
    signature: toB64(box.signature),
  };
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
 * decodes and zeroes them). Every failure is the dealer's: ERR_RESHARE_DEALER.
 */
export function openPieces(
  c: PieceContext,
  piece: Pick<SealedPackage, 'ephemeral' | 'ciphertext' | 'signature'>,
  count: number,
  dealerKey: Uint8Array,
  recipient: EnvelopeRecipient,
): Uint8Array {
  const box = {
    signature: decode(piece.signature, 'signature', c),
    ephemeral: decode(piece.ephemeral, 'ephemeral', c),
    ciphertext: decode(piece.ciphertext, 'ciphertext', c),
  };
  return openBox(
    LABELS,
    encodePieceContext(c),
    box,
    count * SCALAR_BYTES,
    dealerKey,
    recipient,
    (_stage, why) => culprit(c, why),
  );
}
