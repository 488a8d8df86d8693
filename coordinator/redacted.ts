/**
 * A secret value that prints as "[redacted]" however it is printed: JSON.stringify (and so pino),
 * util.inspect, template strings. The value itself is only reachable through `.value`, so that
 * every use of a token is a visible, deliberate one.
 */
import { inspect } from 'node:util';

export class Redacted<T> {
  readonly #value: T;
  readonly #label: string;

  constructor(value: T, label = 'secret') {
    this.#value = value;
    this.#label = label;
  }

  get value(): T {
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
