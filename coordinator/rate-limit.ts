/**
 * The coordinator's rate limit (DESIGN.md section 4): blinded elements per (tenant, subject),
 * counted in Redis so that every replica draws on the same budget (rate-limiter-flexible's
 * RateLimiterRedis, a fixed window, keys under the configured prefix). A 256-element request
 * costs 256 points. This is the one Redis round trip the hot path may make (DESIGN.md section 7).
 *
 * When Redis fails, is not connected, or takes longer than `timeoutMs` to answer, the limit falls
 * back to an in-memory limiter of the same budget on this replica (the library's insurance
 * limiter, behind its timeout wrapper), with a warning at most once a second: evaluations go on
 * and are still limited, and nothing waits on a dead Redis. A circuit breaker on Redis itself
 * (coordinator/circuit-breaker.ts) then sends requests straight to memory for a while, so that a
 * hung Redis costs one timeout per cool-down rather than one per request. While Redis is out each replica
 * counts on its own, so m replicas let up to m budgets through; the nodes still limit each on
 * their own.
 */
import type { Redis } from 'ioredis';
import {
  RateLimiterMemory,
  RateLimiterRedis,
  RateLimiterRes,
  RLWrapperTimeouts,
  type RateLimiterAbstract,
} from 'rate-limiter-flexible';
import { KmaasError } from '../shared/errors.ts';
import { CircuitBreaker } from './circuit-breaker.ts';
import type { Logger } from './logger.ts';

/** At most one fallback warning per this many milliseconds. */
const WARN_EVERY_MS = 1000;
/** After Redis failed, it is skipped for 1 s, doubling while it keeps failing, up to 10 s. */
const REDIS_BREAKER = {
  failures: 1,
  failureRate: 1,
  openMs: 1000,
  maxOpenMs: 10_000,
  liarOpenMs: 10_000,
  probeTimeoutMs: 10_000,
};

export interface RateLimitOptions {
  redis: Redis;
  /** The configured Redis prefix; the limit's keys live under `<prefix>ratelimit:`. */
  prefix: string;
  /** Blinded elements per (tenant, subject) per window; 0 disables the limit. */
  points: number;
  /** The window, in seconds (60 for KMAAS_RATE_ELEMENTS_PER_MIN). */
  durationSeconds: number;
  /** The longest wait for Redis before counting in memory instead; default 500. */
  timeoutMs?: number;
  /** Called each time a request is counted in memory because Redis failed. */
  onFallback?: () => void;
}

/** The insurance limiter, which tells when it is used (it is only used when Redis failed). */
class FallbackLimiter extends RateLimiterMemory {
  used = 0;

  override consume(
    key: string | number,
    points?: number,
    options?: Record<string, unknown>,
  ): Promise<RateLimiterRes> {
    this.used++;
    return super.consume(key, points, options);
  }
}

export class RateLimit {
  readonly #limiter: RateLimiterAbstract | null;
  readonly #fallback: FallbackLimiter | null;
  readonly #onFallback: (() => void) | undefined;
  readonly #redisBreaker = new CircuitBreaker(REDIS_BREAKER);
  #warnedAt = -Infinity;
  #suppressed = 0;

  constructor({
    redis,
    prefix,
    points,
    durationSeconds,
    timeoutMs = 500,
    onFallback,
  }: RateLimitOptions) {
    this.#onFallback = onFallback;
    if (points <= 0) {
      this.#limiter = null;
      this.#fallback = null;
      return;
    }
    this.#fallback = new FallbackLimiter({ points, duration: durationSeconds });
    this.#limiter = new RLWrapperTimeouts({
      limiter: new RateLimiterRedis({
        storeClient: redis,
        keyPrefix: `${prefix}ratelimit`,
        points,
        duration: durationSeconds,
        // A Redis that is not connected fails at once (to the insurance), instead of stalling.
        rejectIfRedisNotReady: true,
        insuranceLimiter: this.#fallback,
      }),
      timeoutMs,
      insuranceLimiter: this.#fallback,
    });
  }

  /**
   * Charge `elements` to (tenant, subject), the subject being the verified `sub` of the access
   * token; throws ERR_RATE_LIMITED, with the wait in its details, when that is over budget.
   */
  async take(tenant: string, subject: string, elements: number, log: Logger): Promise<void> {
    if (!this.#limiter || !this.#fallback) return;
    const before = this.#fallback.used;
    // Redis failed a moment ago: straight to memory, but for one probe once the cool-down ends.
    const breaker = this.#redisBreaker;
    const skip = breaker.routable() === 'no' || (breaker.state !== 'closed' && !breaker.tryProbe());
    const limiter = skip ? this.#fallback : this.#limiter;
    try {
      // Tenants never contain ':', so the key is unambiguous whatever the subject.
      await limiter.consume(`${tenant}:${subject}`, elements);
      if (!skip && this.#fallback.used === before) breaker.success();
    } catch (err) {
      if (err instanceof RateLimiterRes && !skip && this.#fallback.used === before) {
        breaker.success();
      }
      if (err instanceof RateLimiterRes) throw rateLimited(err.msBeforeNext);
      // Both Redis and memory failed: let the request through, the nodes still limit it.
      this.#warn(tenant, log, err);
      return;
    } finally {
      if (this.#fallback.used !== before) {
        if (!skip) breaker.failure();
        this.#onFallback?.();
        this.#warn(tenant, log);
      }
    }
  }

  #warn(tenant: string, log: Logger, err?: unknown): void {
    const now = performance.now();
    if (now - this.#warnedAt < WARN_EVERY_MS) {
      this.#suppressed++;
      return;
    }
    log.warn(
      {
        tenant,
        suppressed: this.#suppressed,
        ...(err === undefined ? {} : { err: err instanceof Error ? err.message : 'unknown error' }),
      },
      err === undefined
        ? 'rate limit unavailable in Redis; counted in memory on this replica'
        : 'rate limit unavailable; request let through',
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
