/**
 * Shamir identifiers. A node's identifier x_j is a small positive integer (its place in the
 * committee), used as the field element x_j in f(x_j). Zero is the secret's own point, so it is
 * never an identifier; two nodes never share one.
 */
import { KmaasError } from './errors.ts';

/** Identifiers are kept small so they fit one byte-pair on the wire and in FROST's encoding. */
export const MAX_IDENTIFIER = 0xffff;

export function checkIdentifier(id: number, field = 'identifier'): number {
  if (!Number.isInteger(id) || id < 1 || id > MAX_IDENTIFIER) {
    throw new KmaasError(
      'ERR_BAD_IDENTIFIER',
      `${field}: expected an integer in 1..${MAX_IDENTIFIER}`,
      {
        field,
        value: id,
      },
    );
  }
  return id;
}

export function checkIdentifierSet(ids: readonly number[], field = 'identifiers'): number[] {
  const seen = new Set<number>();
  for (const id of ids) {
    checkIdentifier(id, field);
    if (seen.has(id)) {
      throw new KmaasError('ERR_BAD_IDENTIFIER', `${field}: identifier ${id} appears twice`, {
        field,
        value: id,
      });
    }
    seen.add(id);
  }
  return [...ids];
}
