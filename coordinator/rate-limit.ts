/**
 * The coordinator's rate limit (DESIGN.md section 4): blinded elements per (tenant, subject),
 * counted in Redis so that every replica draws on the same budget (rate-limiter-flexible's
 * RateLimiterRedis, a fixed window, keys under the configured prefix). A 256-element request
 * costs 256 points. This is the one Redis round trip the hot path may make (DESIGN.md section 7).
 *
 * When Redis fails the limit fails open: the request goes on (the nodes still limit on their
 * own) and a warning is logged, at most once a second, rather than refusing all traffic.
 */
import type { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { KmaasError } from '../shared/errors.ts';
import type { Logger } from './logger.ts';

/** At most one fail-open warning per this many milliseconds. */
const WARN_EVERY_MS = 1000;

export interface RateLimitOptions {
  redis: Redis;
  /** The configured Redis prefix; the limit's keys live under `<prefix>ratelimit:`. */
  prefix: string;
  /** Blinded elements per (tenant, subject) per window; 0 disables the limit. */
  points: number;
  /** The window, in seconds (60 for KMAAS_RATE_ELEMENTS_PER_MIN). */
  durationSeconds: number;
}

export class RateLimit {
  readonly #limiter: RateLimiterRedis | null;
  #warnedAt = -Infinity;
  #suppressed = 0;

  constructor({ redis, prefix, points, durationSeconds }: RateLimitOptions) {
    this.#limiter =
      points > 0
        ? new RateLimiterRedis({
            storeClient: redis,
            keyPrefix: `${prefix}ratelimit`,
            points,
            duration: durationSeconds,
            // A Redis that is not connected fails at once (and open), instead of stalling.
            rejectIfRedisNotReady: true,
          })
        : null;
  }

  /**
   * Charge `elements` to (tenant, subject), the subject being the verified `sub` of the access
   * token; throws ERR_RATE_LIMITED, with the wait in its details, when that is over budget.
   */
  async take(tenant: string, subject: string, elements: number, log: Logger): Promise<void> {
    if (!this.#limiter) return;
    try {
      // Tenants never contain ':', so the key is unambiguous whatever the subject.
      await this.#limiter.consume(`${tenant}:${subject}`, elements);
    } catch (err) {
      if (err instanceof RateLimiterRes) throw rateLimited(err.msBeforeNext);
      this.#failOpen(err, tenant, log);
    }
  }

  #failOpen(err: unknown, tenant: string, log: Logger): void {
    const now = performance.now();
    if (now - this.#warnedAt < WARN_EVERY_MS) {
      this.#suppressed++;
      return;
    }
    const message = err instanceof Error ? err.message : String(err);
    log.warn(
      { tenant, err: message, suppressed: this.#suppressed },
      'rate limit unavailable (Redis failed); request let through',
    );
    this.#warnedAt = now;
    this.#suppressed = 0;
  }
}

/** ERR_RATE_LIMITED, with the wait (whole seconds, rounded up) in the body for the header. */
export function rateLimited(msBeforeNext: number): KmaasError {
  const retryAfterSeconds = Math.max(1, Math.ceil(msBeforeNext / 1000));
  return new KmaasError(
    'ERR_RATE_LIMITED',
    `too many blinded elements for this subject and tenant; retry after ${retryAfterSeconds} s`,
    { retryAfterSeconds },
  );
}
