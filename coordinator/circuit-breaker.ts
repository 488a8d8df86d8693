/**
 * A circuit breaker for one share node, as a pure state machine over an injected clock. The
 * evaluation path reports what each request to the node gave; the breaker says whether the node
 * may be routed to.
 *
 *   closed     routed to. Opens after `failures` failures in a row, or when at least
 *              `failureRate` of the last WINDOW outcomes (and MIN_SAMPLES or more) failed.
 *   open       not routed to, for a cool-down that doubles each time the breaker opens again
 *              without having closed in between (openMs, 2*openMs, ... up to maxOpenMs).
 *   half-open  the cool-down is over: ONE request may go to the node as a probe. A success
 *              closes the breaker; a failure opens it again with the next, longer cool-down. A
 *              probe that reports nothing within probeTimeoutMs frees the slot for another.
 *
 * A node whose proof did not verify lied (DESIGN.md section 2: it is caught and excluded): the
 * breaker opens at once, whatever its state, for liarOpenMs, doubled for each lie remembered
 * (up to 16 times). The lies are remembered until the node has answered correctly for
 * LIE_MEMORY_MS, so a node that keeps lying stays out longer each time.
 *
 * The caller decides what is a failure: only the node's own fault counts (coordinator/node-health.ts).
 * Each method that changes the state returns the transition, so that the caller can log it.
 */

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerOptions {
  /** Failures in a row that open a closed breaker. */
  failures: number;
  /** Share of failed outcomes, among the last WINDOW, that opens a closed breaker. */
  failureRate: number;
  /** First cool-down; it doubles each time the breaker opens again before closing. */
  openMs: number;
  maxOpenMs: number;
  /** Cool-down after a lie (an invalid proof), doubled per remembered lie. */
  liarOpenMs: number;
  /** A probe that reports no outcome this long frees the half-open slot. */
  probeTimeoutMs: number;
}

export const DEFAULT_BREAKER: BreakerOptions = {
  failures: 3,
  failureRate: 0.5,
  openMs: 1000,
  maxOpenMs: 30_000,
  liarOpenMs: 300_000,
  probeTimeoutMs: 10_000,
};

/** Outcomes the failure rate is measured over, and the fewest that make a rate. */
export const WINDOW = 20;
export const MIN_SAMPLES = 10;
/** A node that answers correctly this long after its last lie is trusted afresh. */
export const LIE_MEMORY_MS = 3_600_000;
/** At most this many doublings of the liar cool-down. */
const MAX_LIE_DOUBLINGS = 4;

export interface Transition {
  from: BreakerState;
  to: BreakerState;
  /** Why: 'failures', 'failure rate', 'probe failed', 'lied', 'success'. */
  reason: string;
  /** For `to: 'open'`: how long it stays open. */
  openMs?: number;
}

export interface BreakerView {
  state: BreakerState;
  /** Milliseconds until an open breaker lets a probe through; null unless open. */
  reopensInMs: number | null;
  consecutiveFailures: number;
  /** Times it opened since it was last closed (the backoff step). */
  opens: number;
  /** Lies remembered (invalid proofs). */
  lies: number;
}

export class CircuitBreaker {
  readonly #o: BreakerOptions;
  readonly #now: () => number;
  #state: 'closed' | 'open' = 'closed';
  #openUntil = 0;
  #opens = 0;
  #consecutive = 0;
  /** The last WINDOW outcomes, true for a failure. */
  readonly #window: boolean[] = [];
  /** When the half-open probe was let through; null when no probe is out. */
  #probeAt: number | null = null;
  #lies = 0;
  #lastLieAt = -Infinity;

  constructor(
    options: BreakerOptions = DEFAULT_BREAKER,
    now: () => number = () => performance.now(),
  ) {
    this.#o = options;
    this.#now = now;
  }

  /** The state as routing sees it: an open breaker whose cool-down has passed is half-open. */
  get state(): BreakerState {
    if (this.#state === 'closed') return 'closed';
    return this.#now() >= this.#openUntil ? 'half-open' : 'open';
  }

  /**
   * 'yes': closed. 'probe': half-open and its probe slot is free (take it with tryProbe()).
   * 'no': open, or half-open with a probe out. Asks only; changes nothing.
   */
  routable(): 'yes' | 'probe' | 'no' {
    const state = this.state;
    if (state === 'closed') return 'yes';
    if (state === 'open') return 'no';
    return this.#probeFree() ? 'probe' : 'no';
  }

  /** Take the half-open probe slot; false when the breaker is not half-open or it is taken. */
  tryProbe(): boolean {
    if (this.state !== 'half-open' || !this.#probeFree()) return false;
    this.#probeAt = this.#now();
    return true;
  }

  /** The probe was never sent, or told nothing about the node: free its slot. */
  release(): void {
    this.#probeAt = null;
  }

  /** The node answered correctly. Closes the breaker from any state. */
  success(): Transition | null {
    const from = this.state;
    this.#consecutive = 0;
    this.#push(false);
    this.#probeAt = null;
    if (this.#lies > 0 && this.#now() - this.#lastLieAt >= LIE_MEMORY_MS) this.#lies = 0;
    if (this.#state === 'closed') return null;
    this.#state = 'closed';
    this.#opens = 0;
    return { from, to: 'closed', reason: 'success' };
  }

  /** The node failed a request by its own fault (timeout, drop, server error, bad answer). */
  failure(): Transition | null {
    const from = this.state;
    this.#consecutive++;
    this.#push(true);
    if (from === 'half-open') {
      this.#probeAt = null;
      return this.#open(from, 'probe failed', this.#backoff());
    }
    if (from === 'open') return null;
    if (this.#consecutive >= this.#o.failures) {
      return this.#open(from, 'failures', this.#backoff());
    }
    const failed = this.#window.filter(Boolean).length;
    if (this.#window.length >= MIN_SAMPLES && failed >= this.#o.failureRate * this.#window.length) {
      return this.#open(from, 'failure rate', this.#backoff());
    }
    return null;
  }

  /** The node's proof did not verify: out at once, for longer the more it has lied. */
  lied(): Transition {
    const from = this.state;
    this.#consecutive++;
    this.#push(true);
    this.#probeAt = null;
    const doublings = Math.min(this.#lies, MAX_LIE_DOUBLINGS);
    this.#lies++;
    this.#lastLieAt = this.#now();
    return this.#open(from, 'lied', this.#o.liarOpenMs * 2 ** doublings);
  }

  view(): BreakerView {
    const state = this.state;
    return {
      state,
      reopensInMs: state === 'open' ? Math.ceil(this.#openUntil - this.#now()) : null,
      consecutiveFailures: this.#consecutive,
      opens: this.#opens,
      lies: this.#lies,
    };
  }

  #probeFree(): boolean {
    return this.#probeAt === null || this.#now() - this.#probeAt >= this.#o.probeTimeoutMs;
  }

  #backoff(): number {
    return Math.min(this.#o.maxOpenMs, this.#o.openMs * 2 ** Math.min(this.#opens, 30));
  }

  #open(from: BreakerState, reason: string, openMs: number): Transition {
    this.#state = 'open';
    this.#openUntil = this.#now() + openMs;
    this.#opens++;
    // A fresh start for the rate once the node is back: old failures do not reopen it at once.
    this.#window.length = 0;
    return { from, to: 'open', reason, openMs };
  }

  #push(failed: boolean): void {
    this.#window.push(failed);
    if (this.#window.length > WINDOW) this.#window.shift();
  }
}
