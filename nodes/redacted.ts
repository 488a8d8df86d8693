/**
 * A box for secret values (node secret, tokens, Shamir shares) that prints as redacted however it
 * is printed: JSON (pino serialises with JSON), util.inspect, template strings. The value comes
 * out only through an explicit `reveal()`, so a secret reaching a log line takes a visible act.
 */
import { inspect } from 'node:util';

export class Redacted<T> {
  readonly #value: T;
  readonly #label: string;

  constructor(value: T, label = 'secret') {
    this.#value = value;
    this.#label = label;
  }

  reveal(): T {
    return this.#value;
  }

  toJSON(): string {
    return `[redacted ${this.#label}]`;
  }

  toString(): string {
    return this.toJSON();
  }

  [inspect.custom](): string {
    return this.toJSON();
  }
}

/** A Shamir share k_j of one (tenant, version) key. */
export type SecretShare = Redacted<bigint>;

export function secretShare(value: bigint): SecretShare {
  return new Redacted(value, 'share');
}
