/**
 * What the coordinator knows of one share node's health, from its heartbeats and from the
 * outcome of every evaluation sent to it: a pure tracker over an injected clock, with the node's
 * circuit breaker (coordinator/circuit-breaker.ts) inside. The node link feeds it heartbeats,
 * the evaluation path feeds it outcomes, the pool ranks nodes by it and hedging reads its usual
 * latency.
 *
 * Only the node's own fault counts against it. A node that refuses a request for the client's
 * reasons (a bad token, a rate limit, an unknown tenant: any 4xx) is alive and well; so is one
 * that answers with another epoch's share while a reshare moves on. A timeout, a dropped
 * connection, a server error, a malformed answer or an invalid proof is the node's own.
 *
 *   heartbeat  pong(rtt) | missedPong()            ping latency; a node silent right now ranks last
 *   outcome    success(latency) | answered(latency) latency estimate; success closes the breaker
 *              refused(code) | void                 alive, or nothing learned: no change
 *              failed(reason) | lied                recent failures; the breaker counts them
 */
import { ERROR_CODES, KmaasError, type ErrorCode } from '../shared/errors.ts';
import {
  CircuitBreaker,
  DEFAULT_BREAKER,
  type BreakerOptions,
  type BreakerView,
  type Transition,
} from './circuit-breaker.ts';
import { NodeReplyError } from './node-reply-error.ts';

/**
 * Weight of the newest sample in the latency averages.
 * Shortcoming: the evaluation average mixes batch sizes (1 element or 256), so a full batch to a
 * node used to small ones looks slow and may be hedged needlessly (bounded by admission and the
 * retry budget); a per-element model would fix it.
 */
export const EWMA_ALPHA = 0.2;
/** Failures lower a node's rank for this long after the last one; then it gets a fresh chance. */
export const FAILURE_MEMORY_MS = 30_000;

export type FailureReason = 'timeout' | 'dropped' | 'error' | 'malformed';

export type Outcome =
  /** A verified answer, `latencyMs` after the request was sent. */
  | { kind: 'success'; latencyMs: number }
  /** An answer that came after the request was decided, so was not checked. */
  | { kind: 'answered'; latencyMs: number }
  /** The node refused for the client's reasons: it is alive. */
  | { kind: 'refused'; code: ErrorCode }
  /** The node's own failure. */
  | { kind: 'failed'; code: ErrorCode; reason: FailureReason }
  /** An invalid proof (or an answer that cannot be one): the node lied. */
  | { kind: 'lied'; code: ErrorCode }
  /** Nothing learned: never sent, or the check itself failed. */
  | { kind: 'void' };

/**
 * 4xx answers that do say something is wrong with the node: it speaks another protocol, or it
 * does not know a key that the key package says it holds a share of (evaluations go only to the
 * package's share holders, and an unknown tenant or version is refused before any node is
 * asked): it lost its data, and is routed around until it is repaired.
 */
const NODE_FAULT_4XX = new Set<ErrorCode>([
  'ERR_UNSUPPORTED_VERSION',
  'ERR_UNKNOWN_MESSAGE',
  'ERR_UNKNOWN_TENANT',
  'ERR_UNKNOWN_KEY_VERSION',
]);

/** What a rejected node request tells of the node (the link's errors, or the node's reply). */
export function classifyError(err: unknown): Outcome {
  if (err instanceof NodeReplyError) {
    const status = ERROR_CODES[err.code].status;
    if (status < 500 && !NODE_FAULT_4XX.has(err.code)) return { kind: 'refused', code: err.code };
    return { kind: 'failed', code: err.code, reason: 'error' };
  }
  if (!(err instanceof KmaasError))
    return { kind: 'failed', code: 'ERR_INTERNAL', reason: 'error' };
  if (err.code !== 'ERR_NODE_UNAVAILABLE')
    return { kind: 'failed', code: err.code, reason: 'error' };
  const reason = err.details?.reason;
  if (reason === 'timeout') return { kind: 'failed', code: err.code, reason: 'timeout' };
  if (reason === 'cancelled' || reason === 'closed') return { kind: 'void' };
  return { kind: 'failed', code: err.code, reason: 'dropped' };
}

/** What an answer that failed its checks tells of the node (evaluate.ts readAnswer, verify). */
export function classifyWrongAnswer(err: unknown): Outcome {
  const code = err instanceof KmaasError ? err.code : 'ERR_INTERNAL';
  if (code === 'ERR_PROOF_INVALID') return { kind: 'lied', code };
  // Another epoch's share: the node moved on (or not yet) with a reshare; not an illness.
  if (code === 'ERR_EPOCH_MISMATCH') return { kind: 'refused', code };
  // The check itself could not run (a verify worker died): not the node's doing.
  if (code === 'ERR_INTERNAL') return { kind: 'void' };
  return { kind: 'failed', code, reason: 'malformed' };
}

export interface HealthView {
  breaker: BreakerView;
  /** Average evaluation round trip (ms), null before the first answer. */
  evaluateMs: number | null;
  /** Average ping round trip (ms), null before the first pong. */
  pingMs: number | null;
  /** Heartbeats in a row without a pong or any message. */
  missedPongs: number;
  /** Failures since the last good answer, within FAILURE_MEMORY_MS of the last one. */
  recentFailures: number;
}

export class NodeHealth {
  readonly breaker: CircuitBreaker;
  readonly #now: () => number;
  #evaluateMs: number | null = null;
  #pingMs: number | null = null;
  #missedPongs = 0;
  #failures = 0;
  #lastFailureAt = -Infinity;

  constructor(
    breaker: BreakerOptions = DEFAULT_BREAKER,
    now: () => number = () => performance.now(),
  ) {
    this.#now = now;
    this.breaker = new CircuitBreaker(breaker, now);
  }

  // --- Heartbeats ---

  pong(rttMs: number): void {
    this.#missedPongs = 0;
    this.#pingMs = ewma(this.#pingMs, rttMs);
  }

  /** A heartbeat period passed with nothing heard from the node. */
  missedPong(): void {
    this.#missedPongs++;
  }

  /** Something (a reply, a ping) came from the node. */
  heard(): void {
    this.#missedPongs = 0;
  }

  /** The connection dropped: the node ranks lower for a while once it is back. */
  dropped(): void {
    this.#fail();
  }

  // --- Outcomes ---

  /** Record one evaluation's outcome; the breaker's transition when it changed state. */
  record(outcome: Outcome): Transition | null {
    switch (outcome.kind) {
      case 'success':
        this.#answered(outcome.latencyMs);
        return this.breaker.success();
      case 'answered':
        this.#answered(outcome.latencyMs);
        return null;
      case 'refused':
        this.heard();
        this.#failures = 0;
        this.breaker.release();
        return null;
      case 'void':
        this.breaker.release();
        return null;
      case 'failed':
        if (outcome.reason !== 'timeout' && outcome.reason !== 'dropped') this.heard();
        this.#fail();
        return this.breaker.failure();
      case 'lied':
        this.heard();
        this.#fail();
        return this.breaker.lied();
    }
  }

  // --- What routing and hedging read ---

  /** How long an evaluation usually takes: its average, or the ping's before the first one. */
  usualLatency(): number | null {
    return this.#evaluateMs ?? this.#pingMs;
  }

  pingLatency(): number | null {
    return this.#pingMs;
  }

  get missedPongs(): number {
    return this.#missedPongs;
  }

  recentFailures(): number {
    return this.#now() - this.#lastFailureAt < FAILURE_MEMORY_MS ? this.#failures : 0;
  }

  /** 'yes' closed, 'probe' half-open with its probe slot free, 'no' open. */
  routable(): 'yes' | 'probe' | 'no' {
    return this.breaker.routable();
  }

  view(): HealthView {
    return {
      breaker: this.breaker.view(),
      evaluateMs: round(this.#evaluateMs),
      pingMs: round(this.#pingMs),
      missedPongs: this.#missedPongs,
      recentFailures: this.recentFailures(),
    };
  }

  #answered(latencyMs: number): void {
    this.heard();
    this.#failures = 0;
    this.#evaluateMs = ewma(this.#evaluateMs, latencyMs);
  }

  #fail(): void {
    if (this.recentFailures() === 0) this.#failures = 0;
    this.#failures++;
    this.#lastFailureAt = this.#now();
  }
}

function ewma(average: number | null, sample: number): number {
  return average === null ? sample : average + EWMA_ALPHA * (sample - average);
}

function round(ms: number | null): number | null {
  return ms === null ? null : Math.round(ms * 100) / 100;
}
