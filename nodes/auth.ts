/**
 * Credential comparison. Both sides are hashed first so that timingSafeEqual always compares 32
 * bytes: the time taken reveals neither the token's content nor its length.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Redacted } from './redacted.ts';

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

export function tokenMatches(presented: string | undefined, expected: Redacted<string>): boolean {
  // Hash even when nothing was presented, so a missing credential costs the same as a wrong one.
  const ok = timingSafeEqual(digest(presented ?? ''), digest(expected.reveal()));
  return ok && presented !== undefined;
}

/** The token of an `Authorization: Bearer <token>` header (RFC 6750 section 2.1), if any. */
export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer +(\S+) *$/i.exec(header ?? '');
  return match?.[1];
}
