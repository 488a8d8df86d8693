/**
 * The node's own rate limit (DESIGN.md section 4): each node counts, in memory and on its own,
 * the blinded elements that each (tenant, subject) asks it to evaluate, so that a coordinator
 * that forwards too much is refused by the nodes whatever its own limit says. A 256-element
 * request costs 256 points; the budget refills every window (rate-limiter-flexible's fixed
 * window, RateLimiterMemory).
 *
 * The check runs on the raw frame, before the (synchronous) dispatcher: after the end user's
 * credential is checked, before any point is decoded. Frames it cannot read as a well-formed
 * evaluate request with a valid credential pass through untouched, and the dispatcher refuses
 * them with their own code, at no cost to anyone's budget.
 */
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { subjectOf, tokenMatches } from '../shared/bearer.ts';
import { KmaasError } from '../shared/errors.ts';
import { evaluateRequest, nodeRequestEnvelope, PROTOCOL_VERSION } from '../shared/messages.ts';
import type { NodeReply } from '../shared/messages.ts';
import { MAX_BATCH } from '../shared/suite.ts';
import type { NodeContext } from './context.ts';

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
      // The subject is fixed-length hex, so the key is unambiguous whatever the tenant.
      await this.#limiter.consume(`${subject}:${tenant}`, elements);
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

/** The evaluate request a frame holds, when it is one and well-formed; otherwise undefined. */
function evaluateFrame(text: string) {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  const envelope = nodeRequestEnvelope.safeParse(json);
  if (!envelope.success || envelope.data.v !== PROTOCOL_VERSION) return undefined;
  if (envelope.data.type !== 'evaluate') return undefined;
  const body = evaluateRequest.safeParse(envelope.data.body);
  return body.success ? { id: envelope.data.id, body: body.data } : undefined;
}

/**
 * The refusal for a frame that is an authenticated evaluate request over its (tenant, subject)
 * budget; undefined for every other frame, which the dispatcher then handles as usual.
 */
export async function rateLimitFrame(
  ctx: NodeContext,
  text: string,
): Promise<NodeReply | undefined> {
  if (!ctx.rateLimit?.enabled) return undefined;
  const request = evaluateFrame(text);
  if (!request) return undefined;
  const { tenant, blinded, auth } = request.body;
  // Unauthenticated, empty or oversized: the handler refuses it, and it costs nobody anything.
  if (!tokenMatches(auth.token, ctx.clientToken)) return undefined;
  if (blinded.length === 0 || blinded.length > MAX_BATCH) return undefined;
  const refusal = await ctx.rateLimit.take(tenant, subjectOf(auth.token), blinded.length);
  return refusal && { v: PROTOCOL_VERSION, id: request.id, ok: false, error: refusal.toBody() };
}
