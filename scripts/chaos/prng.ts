/**
 * A seeded pseudo-random generator for the chaos run: the same seed gives the same fault schedule
 * and the same load pattern, so that a failing run can be replayed. xoshiro128** (Blackman and
 * Vigna), its 128-bit state taken from SHA-256 of the seed and a stream label, so that each part
 * of the run (schedule, each load client) draws from a stream of its own and adding draws to one
 * never shifts another.
 *
 * NOT for secrets: it is predictable by design. Keys, blinds, nonces and proofs always come from
 * the crypto RNG; this only decides when a fault happens and which document a client asks for.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { utf8ToBytes } from '@noble/hashes/utils.js';

export class Prng {
  readonly #s: Uint32Array;

  private constructor(state: Uint32Array) {
    this.#s = state;
  }

  /** The generator of `seed` for the stream `stream` (e.g. 'schedule', 'client-3'). */
  static from(seed: string | number, stream = ''): Prng {
    const digest = sha256(utf8ToBytes(`kmaas-chaos\0${String(seed)}\0${stream}`));
    const state = new Uint32Array(digest.buffer, digest.byteOffset, 4).slice();
    // The all-zero state is the one state xoshiro cannot leave.
    if (state.every((w) => w === 0)) state[0] = 1;
    return new Prng(state);
  }

  /** The next 32 random bits, as an unsigned integer. */
  nextU32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 2 ** 32;
  }

  /** Uniform in [min, max). */
  between(min: number, max: number): number {
    return min + (max - min) * this.next();
  }

  /** A whole number in [min, max], both included. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick: no items');
    return items[this.int(0, items.length - 1)]!;
  }

  /** One of `weights`' keys, each with probability proportional to its weight. */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const entries = Object.entries(weights) as [K, number][];
    const total = entries.reduce((sum, [, w]) => sum + w, 0);
    let x = this.next() * total;
    for (const [key, w] of entries) {
      x -= w;
      if (x < 0) return key;
    }
    return entries[entries.length - 1]![0];
  }

  /** A shuffled copy (Fisher-Yates). */
  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
