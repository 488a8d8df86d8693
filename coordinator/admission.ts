/**
 * Admission control for the hot path (DESIGN.md section 7). An evaluation costs the coordinator
 * and every node it asks work in proportion to its blinded elements, so the work in flight is
 * bounded by a count of elements (KMAAS_MAX_INFLIGHT_ELEMENTS). A request that would pass the
 * bound is refused at once with ERR_OVERLOADED, before any node is asked: a quick, coded refusal
 * the client can retry, instead of a pile-up in which every request times out.
 *
 * Large batches may not take the last eighth of the budget: it is kept for batches of at most
 * SMALL_BATCH elements, so that interactive single derivations still get through while bulk
 * requests fill the rest. A hedge (a backup node asked for an open request) is extra work of the
 * same size and is admitted by the same rule, or not sent.
 *
 * Shortcoming: the bound is a fixed setting, not derived from the nodes' measured speed, so on
 * slow nodes a full budget of large batches can still run past the per-node timeouts
 * (ERR_TOO_FEW_NODES under overload in `npm run bench`, batch 32 x concurrency 32).
 */
import { KmaasError } from '../shared/errors.ts';
import { MAX_BATCH } from '../shared/suite.ts';
import type { Logger } from './logger.ts';

/** Batches this small may use the whole budget; larger ones leave the reserve free. */
export const SMALL_BATCH = 16;
/** What a refused client is told to wait before retrying, in seconds (the Retry-After header). */
export const RETRY_AFTER_SECONDS = 1;
/** At most one refusal log line per tenant per this many milliseconds. */
const LOG_EVERY_MS = 1000;
/** Tenants remembered by the log limiter before it starts afresh. */
const LOG_MEMORY = 1000;

/** Elements reserved for one request and its hedges; release() is idempotent. */
export class Lease {
  readonly #admission: Admission;
  #held: number;

  constructor(admission: Admission, elements: number) {
    this.#admission = admission;
    this.#held = elements;
  }

  /** Reserve `elements` more (a hedge); false, and nothing reserved, when that would overload. */
  extend(elements: number): boolean {
    if (this.#held === 0 || !this.#admission.fits(elements)) return false;
    this.#admission.take(elements);
    this.#held += elements;
    return true;
  }

  release(): void {
    this.#admission.give(this.#held);
    this.#held = 0;
  }
}

export class Admission {
  readonly limit: number;
  readonly #reserve: number;
  #inflight = 0;

  constructor(limit: number) {
    this.limit = limit;
    // Never so large that a full batch could not be admitted when nothing else runs.
    this.#reserve = Math.max(0, Math.min(Math.floor(limit / 8), limit - MAX_BATCH));
  }

  /** Blinded elements of the requests (and hedges) now admitted. */
  get inflight(): number {
    return this.#inflight;
  }

  /** Whether `elements` more fit now. */
  fits(elements: number): boolean {
    const ceiling = elements <= SMALL_BATCH ? this.limit : this.limit - this.#reserve;
    return this.#inflight + elements <= ceiling;
  }

  /** A lease on `elements`, or null when they do not fit. */
  tryAcquire(elements: number): Lease | null {
    if (!this.fits(elements)) return null;
    this.take(elements);
    return new Lease(this, elements);
  }

  /** @internal for Lease */
  take(elements: number): void {
    this.#inflight += elements;
  }

  /** @internal for Lease */
  give(elements: number): void {
    this.#inflight = Math.max(0, this.#inflight - elements);
  }
}

/** ERR_OVERLOADED, with the wait also in the body for clients that cannot read the header. */
export function overloaded(elements: number): KmaasError {
  return new KmaasError(
    'ERR_OVERLOADED',
    `the coordinator is at its limit of blinded elements in flight and cannot take ${elements} more; retry after ${RETRY_AFTER_SECONDS} s`,
    { retryAfterSeconds: RETRY_AFTER_SECONDS },
  );
}

/**
 * Logs refusals at warn, at most once per tenant per second, counting the ones it left out, so
 * that a flood of refused requests cannot become a flood of log lines.
 */
export class RefusalLog {
  readonly #last = new Map<string, { at: number; suppressed: number }>();

  refused(
    log: Logger,
    fields: { tenant: string; version: number; batch: number; inflight: number; limit: number },
  ): void {
    const now = performance.now();
    const entry = this.#last.get(fields.tenant);
    if (entry && now - entry.at < LOG_EVERY_MS) {
      entry.suppressed++;
      return;
    }
    if (this.#last.size >= LOG_MEMORY) this.#last.clear();
    this.#last.set(fields.tenant, { at: now, suppressed: 0 });
    log.warn(
      { ...fields, code: 'ERR_OVERLOADED', suppressed: entry?.suppressed ?? 0 },
      'overloaded: evaluation refused',
    );
  }
}
