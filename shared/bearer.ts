/**
 * Bearer credentials (RFC 6750 section 2.1) for the server processes. Tokens are compared through
 * their SHA-256 digests with timingSafeEqual, so neither the content nor the length of the
 * expected token leaks through timing. Node-only (node:crypto): never imported by the client.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { KmaasError } from './errors.ts';
import type { Redacted } from './redacted.ts';

// The scheme name is case-insensitive (RFC 7235 section 2.1).
const BEARER = /^Bearer +([\x21-\x7e]{1,8192}) *$/i;

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  const m = header === undefined ? null : BEARER.exec(header);
  return m ? m[1] : undefined;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

export function tokenMatches(presented: string | undefined, expected: Redacted<string>): boolean {
  // Hash even when nothing was presented, so a missing credential costs the same as a wrong one.
  const ok = timingSafeEqual(digest(presented ?? ''), digest(expected.reveal()));
  return ok && presented !== undefined;
}

/** Returns the presented token; throws ERR_UNAUTHORIZED when it is missing or wrong. */
export function requireBearer(
  header: string | undefined,
  expected: Redacted<string>,
  what: string,
): string {
  const presented = bearerToken(header);
  if (presented === undefined) {
    throw new KmaasError('ERR_UNAUTHORIZED', `${what}: expected Authorization: Bearer <token>`);
  }
  if (!tokenMatches(presented, expected)) {
    throw new KmaasError('ERR_UNAUTHORIZED', `${what}: token not accepted`);
  }
  return presented;
}
