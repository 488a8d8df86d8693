/** A Shamir share k_j of one (tenant, version) key: a scalar that prints as redacted. */
import { Redacted } from '../shared/redacted.ts';

export type SecretShare = Redacted<bigint>;

export function secretShare(value: bigint): SecretShare {
  return new Redacted(value, 'share');
}
