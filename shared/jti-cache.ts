/**
 * The DPoP proof identifiers a node has seen (RFC 9449 section 11.1, replay): each `jti` is kept
 * until its proof could no longer pass the freshness check anyway (iat + max age + clock skew),
 * then forgotten. In memory, per node, bounded: when the bound is reached with nothing expired,
 * new proofs are refused with ERR_OVERLOADED rather than forgetting one that could be replayed.
 */
import { KmaasError } from './errors.ts';

/** Entries kept at most by default: about 2 000 proofs a second with a 90 s window. */
export const DEFAULT_MAX_ENTRIES = 200_000;

export class JtiCache {
  /** jti -> when it may be forgotten (ms). Insertion order is roughly expiry order. */
  readonly #seen = new Map<string, number>();
  readonly #max: number;
  readonly #now: () => number;

  constructor(opts: { maxEntries?: number; now?: () => number } = {}) {
    this.#max = opts.maxEntries ?? DEFAULT_MAX_ENTRIES;
    this.#now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.#seen.size;
  }

  /**
   * Record `jti` until `forgetAtMs`; throws ERR_DPOP_REPLAY when it is already known, and
   * ERR_OVERLOADED when the cache is full of live entries.
   */
  remember(jti: string, forgetAtMs: number): void {
    const now = this.#now();
    const known = this.#seen.get(jti);
    if (known !== undefined && known > now) {
      throw new KmaasError('ERR_DPOP_REPLAY', 'the DPoP proof was already used (jti seen before)');
    }
    this.#sweep(now, false);
    if (this.#seen.size >= this.#max) this.#sweep(now, true);
    if (this.#seen.size >= this.#max) {
      throw new KmaasError('ERR_OVERLOADED', 'too many DPoP proofs in flight; retry later', {
        retryAfterSeconds: 1,
      });
    }
    this.#seen.delete(jti);
    this.#seen.set(jti, forgetAtMs);
  }

  /** Forget expired entries: from the oldest until a live one, or all of them when `full`. */
  #sweep(now: number, full: boolean): void {
    for (const [jti, forgetAt] of this.#seen) {
      if (forgetAt <= now) this.#seen.delete(jti);
      else if (!full) return;
    }
  }
}
