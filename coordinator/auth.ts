/**
 * Bearer tokens on the HTTP API (RFC 6750 section 2.1). Tokens are compared through their
 * SHA-256 digests with timingSafeEqual, so neither the content nor the length of the expected
 * token leaks through timing. The coordinator's check is a first filter only: every node checks
 * the end user's credential again (DESIGN.md section 1).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { KmaasError } from '../shared/errors.ts';
import type { Redacted } from './redacted.ts';

const BEARER = /^Bearer ([\x21-\x7e]{1,8192})$/;

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(header: string | undefined): string | null {
  const m = header === undefined ? null : BEARER.exec(header);
  return m ? m[1]! : null;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

export function tokenMatches(presented: string, expected: string): boolean {
  return timingSafeEqual(digest(presented), digest(expected));
}

/** Returns the presented token; throws ERR_UNAUTHORIZED when it is missing or wrong. */
export function requireBearer(
  header: string | undefined,
  expected: Redacted<string>,
  what: string,
): string {
  const presented = bearerToken(header);
  if (presented === null) {
    throw new KmaasError('ERR_UNAUTHORIZED', `${what}: expected Authorization: Bearer <token>`);
  }
  if (!tokenMatches(presented, expected.value)) {
    throw new KmaasError('ERR_UNAUTHORIZED', `${what}: token not accepted`);
  }
  return presented;
}
