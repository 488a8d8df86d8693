/**
 * Strict wire encodings. Every byte string on the wire is unpadded base64url; every group
 * element is a canonical 32-byte ristretto255 encoding (RFC 9496 section 4.3.2) that is not the
 * identity (RFC 9497 section 3.3); every scalar is a canonical little-endian integer below the
 * group order. Decoders throw a KmaasError naming the field, never a library error.
 */
import { ristretto255 } from '@noble/curves/ed25519.js';
import { concatBytes } from '@noble/hashes/utils.js';
import { base64urlnopad } from '@scure/base';
import { KmaasError } from './errors.ts';

export const Point = ristretto255.Point;
export type GroupElement = InstanceType<typeof Point>;
export const Fn = Point.Fn;

export const ELEMENT_BYTES = 32;
export const SCALAR_BYTES = 32;

export function toB64(bytes: Uint8Array): string {
  return base64urlnopad.encode(bytes);
}

export function fromB64(text: string, field: string): Uint8Array {
  try {
    return base64urlnopad.decode(text);
  } catch {
    throw new KmaasError('ERR_BAD_BASE64', `${field}: expected unpadded base64url`, { field });
  }
}

function checkLength(bytes: Uint8Array, length: number, field: string): void {
  if (bytes.length !== length) {
    throw new KmaasError(
      'ERR_BAD_LENGTH',
      `${field}: expected ${length} bytes, got ${bytes.length}`,
      { field, expected: length, actual: bytes.length },
    );
  }
}

/** RFC 9496 section 4.3.1 Decode, then the RFC 9497 section 3.3 identity check. */
export function decodeElement(bytes: Uint8Array, field: string): GroupElement {
  checkLength(bytes, ELEMENT_BYTES, field);
  let point: GroupElement;
  try {
    point = Point.fromBytes(bytes);
  } catch {
    throw new KmaasError('ERR_INVALID_POINT', `${field}: not a canonical ristretto255 encoding`, {
      field,
    });
  }
  if (point.is0()) {
    throw new KmaasError('ERR_IDENTITY_POINT', `${field}: identity element refused`, { field });
  }
  return point;
}

export function decodeElementB64(text: string, field: string): GroupElement {
  return decodeElement(fromB64(text, field), field);
}

/** A nonzero scalar below the group order, little-endian as RFC 9496 and RFC 9497 encode it. */
export function decodeScalar(bytes: Uint8Array, field: string): bigint {
  checkLength(bytes, SCALAR_BYTES, field);
  let scalar: bigint;
  try {
    scalar = Fn.fromBytes(bytes);
  } catch {
    throw new KmaasError('ERR_INVALID_SCALAR', `${field}: not a canonical scalar`, { field });
  }
  if (Fn.is0(scalar)) {
    throw new KmaasError('ERR_INVALID_SCALAR', `${field}: zero scalar refused`, { field });
  }
  return scalar;
}

export function encodeScalar(scalar: bigint): Uint8Array {
  return Fn.toBytes(scalar);
}

const utf8 = new TextEncoder();

export function utf8Bytes(text: string): Uint8Array {
  return utf8.encode(text);
}

export const concat = concatBytes;

/** I2OSP(len, 2) || bytes, the length prefix RFC 9497 section 2 uses for every input. */
export function lengthPrefixed(bytes: Uint8Array): Uint8Array {
  if (bytes.length > 0xffff) {
    throw new KmaasError('ERR_BAD_LENGTH', 'field longer than 65535 bytes');
  }
  return concat(Uint8Array.of(bytes.length >> 8, bytes.length & 0xff), bytes);
}
