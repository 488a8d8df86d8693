/**
 * A box for secret values (node secrets, tokens, Shamir shares) that prints as redacted however
 * it is printed: JSON (and so pino), util.inspect, template strings. The value comes out only
 * through an explicit `reveal()`, so a secret reaching a log line takes a visible act. No Node
 * import: Node finds the inspect hook by its registered symbol.
 */
const inspectCustom = Symbol.for('nodejs.util.inspect.custom');

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

  [inspectCustom](): string {
    return this.toJSON();
  }
}
