/**
 * The node's own rate limit (DESIGN.md section 4): each node counts, in memory and on its own,
 * the blinded elements that each (tenant, subject) asks it to evaluate, so that a coordinator
 * that forwards too much is refused by the nodes whatever its own limit says. A 256-element
 * request costs 256 points; the budget refills every window (rate-limiter-flexible's fixed
 * window, RateLimiterMemory).
 *
 * The evaluate handler (evaluate.ts) charges it to the verified `sub` of the access token, once
 * the credential is checked and the batch well-sized, before any point is decoded; a request
 * refused for its credential or batch size costs nobody anything.
 */
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { KmaasError } from '../shared/errors.ts';

export interface RateLimitOptions {
  /** Blinded elements per (tenant, subject) per window; 0 disables the limit. */
  points: number;
  /** The window, in seconds. */
  durationSeconds: number;
}

/** Blinded elements per (tenant, subject), counted in memory. */
export class ElementRateLimit {
  readonly #limiter: RateLimiterMemory | null;

  constructor({ points, durationSeconds }: RateLimitOptions) {
    this.#limiter =
      points > 0 ? new RateLimiterMemory({ points, duration: durationSeconds }) : null;
  }

  /** KMAAS_NODE_RATE_ELEMENTS_PER_MIN as a limit: `elementsPerMin` per 60 s window. */
  static perMinute(elementsPerMin: number): ElementRateLimit {
    return new ElementRateLimit({ points: elementsPerMin, durationSeconds: 60 });
  }

  get enabled(): boolean {
    return this.#limiter !== null;
  }

  /** Charge `elements`; ERR_RATE_LIMITED, with the wait in its details, when over budget. */
  async take(tenant: string, subject: string, elements: number): Promise<KmaasError | undefined> {
    if (!this.#limiter) return undefined;
    try {
      // Tenants never contain ':', so the key is unambiguous whatever the subject (a token's sub).
      await this.#limiter.consume(`${tenant}:${subject}`, elements);
      return undefined;
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err;
      const retryAfterSeconds = Math.max(1, Math.ceil(err.msBeforeNext / 1000));
      return new KmaasError(
        'ERR_RATE_LIMITED',
        `too many blinded elements for this subject and tenant; retry after ${retryAfterSeconds} s`,
        { retryAfterSeconds },
      );
    }
  }
}
