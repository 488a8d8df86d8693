/**
 * When to hedge (DESIGN.md section 5: "extra nodes asked when one is slow, first t valid answers
 * win"): a node that has not answered gets a backup node asked in parallel once it is slower than
 * `factor` times its own usual latency (coordinator/node-health.ts), and never sooner than
 * `hedgeDelayMs`, so that a node that is always slow is not hedged on every request and a fast
 * node's jitter is not either. A hedge is extra work: it is sent only when an untried node that
 * is routable is left, the request's retry budget has an attempt left, the deadline has not
 * passed, and the coordinator's admission limit has room for it (coordinator/admission.ts).
 *
 * Pure: the evaluation path asks at the time hedgeAfter() gave, and again after `wait` when the
 * node's usual latency grew meanwhile.
 */

export interface HedgeRule {
  /** The least time before a hedge. */
  hedgeDelayMs: number;
  /** A node is slow once it has taken this many times its usual latency. */
  factor: number;
}

/** What hedging reads of a node's health tracker. */
export interface LatencySource {
  usualLatency(): number | null;
}

export interface HedgeQuestion {
  rule: HedgeRule;
  /** The node asked, whose answer is awaited. */
  node: LatencySource;
  /** Milliseconds since the request went to the node. */
  elapsedMs: number;
  /** Milliseconds until the request's deadline. */
  remainingMs: number;
  /** An untried node that may be routed to is left. */
  spare: boolean;
  /** Extra node attempts the request may still make. */
  budget: number;
  /** The admission limit has room for one more copy of the batch. */
  fits: boolean;
}

export type HedgeDecision =
  | { hedge: true }
  | { hedge: false; wait: number }
  | { hedge: false; reason: 'deadline' | 'no spare' | 'budget' | 'admission' };

/** How long after sending a node is slow enough to be hedged. */
export function hedgeAfter(rule: HedgeRule, node: LatencySource): number {
  return Math.max(rule.hedgeDelayMs, rule.factor * (node.usualLatency() ?? 0));
}

/**
 * Whether to ask a backup node now, wait (the node is not slow yet by its own standard), or not
 * hedge at all, and why.
 * @example decideHedge({ rule, node: link.health, elapsedMs: 900, remainingMs: 4000, spare: true, budget: 2, fits: true })
 */
export function decideHedge(q: HedgeQuestion): HedgeDecision {
  const wait = hedgeAfter(q.rule, q.node) - q.elapsedMs;
  if (wait > 0) return { hedge: false, wait };
  if (q.remainingMs <= 0) return { hedge: false, reason: 'deadline' };
  if (!q.spare) return { hedge: false, reason: 'no spare' };
  if (q.budget <= 0) return { hedge: false, reason: 'budget' };
  if (!q.fits) return { hedge: false, reason: 'admission' };
  return { hedge: true };
}
