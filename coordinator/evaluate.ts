/**
 * The hot path (DESIGN.md sections 2 and 7): one client request in, t partial evaluations out.
 *
 *   client -> coordinator   POST .../evaluate { blinded: [B_i] }
 *                           Authorization: DPoP <access token>, DPoP: <proof>     (RFC 9449)
 *   coordinator -> node j   evaluate { tenant, version, epoch, blinded, auth: { token, dpop } } (t)
 *   node j -> coordinator   { node: j, epoch, evaluated: [Z_ij], proof }             (RFC 9497 DLEQ)
 *   coordinator -> client   { tenant, version, epoch, threshold, partials }
 *
 * The coordinator learns nothing from this: the blinded elements hide the inputs, and one
 * node's Z_ij is useless without t-1 others and the blinds. It checks each proof against K_j from
 * the key package anyway (shared/voprf-client.ts verifyPartial) so that a lying node is caught
 * here, named, and replaced, instead of failing the client's derivation. The client checks again.
 *
 * Routing (coordinator/node-pool.ts, node-health.ts): ask the t healthiest, least busy share
 * holders whose circuit breaker is closed; when one fails (error, bad proof, drop) ask the next
 * untried one, down to nodes whose breaker is open when nothing else is left; when one is slow by
 * its own standard, ask a backup in parallel (coordinator/hedge.ts); the first t valid answers
 * win. A node past its own timeout is replaced but still waited for beside its replacement, and
 * one that nobody can replace is waited for until the overall deadline: slow is not dead. A node whose breaker is half-open gets the request as well, as an extra probe when
 * t others are routable: its answer is checked even when it comes after the decision, and closes
 * or reopens its breaker. Every outcome (a late answer or timeout included) goes into the node's
 * health, so a node hedged around is still found out.
 *
 * Bounds: the whole request, key package and rate limit included, ends by one deadline (the
 * evaluate deadline plus twice the per-element allowance), except that answers which arrived in
 * time are still checked (when they can still make t). Beyond the t first attempts a request may
 * make at most `retryBudget` more (failovers and hedges, the epoch retry's included). No Redis
 * except on a key-package cache miss and the rate limit.
 *
 * Epochs (a reshare gives every key new shares under the same group key): the coordinator asks
 * for the shares of its cached package's epoch and takes only answers of that epoch, since K_j
 * belongs to one epoch. When the committee has moved on (nodes answer ERR_EPOCH_MISMATCH, or
 * ERR_NODE_REMOVED once removed), the
 * cached package is dropped and the request tried once more with the package Redis now holds,
 * on the nodes not asked yet (the others have seen the DPoP proof, and a node refuses a proof
 * twice); when those are too few, the client gets ERR_EPOCH_MISMATCH and asks again itself.
 * Only nodes with a verification share in the package are asked: spare nodes and removed members
 * have none.
 *
 * Authentication (DESIGN.md section 4): the coordinator checks the access token before it reads
 * the body, and the DPoP proof once it has the blinded elements, to refuse early and to learn the
 * subject its rate limit counts; it does not spend the proof's jti, since every node checks the
 * token and the proof again, replay included, and each decides on its own.
 *
 * Load: a request is admitted only while the blinded elements in flight stay under the limit
 * (coordinator/admission.ts), or refused at once with ERR_OVERLOADED before any node is asked; a
 * hedge is admitted by the same rule or not sent. A node busy with earlier batches gets the
 * request when it has room, and a request still waiting for that when it is decided is never
 * sent (coordinator/node-link.ts). Proofs are checked in worker threads
 * (coordinator/verify-pool.ts), and no timer decides before the sockets have been read, so a
 * busy coordinator neither stalls on its own checks nor blames nodes for its delays.
 */
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import { decodeElement, fromB64 } from '../shared/encoding.ts';
import { dpopToken } from '../shared/dpop-proof.ts';
import { ERROR_CODES, KmaasError, toKmaasError, type ErrorCode } from '../shared/errors.ts';
import type { ParsedKeyPackage } from '../shared/key-package.ts';
import {
  evaluateBody,
  evaluateReply,
  parseMessage,
  type EvaluateResponse,
} from '../shared/messages.ts';
import { checkBatchSize } from '../shared/suite.ts';
import type { EvaluationAuth } from '../shared/evaluation-auth.ts';
import type { VerifiedToken } from '../shared/access-token.ts';
import { overloaded, type Admission, type Lease, type RefusalLog } from './admission.ts';
import type { KeyCache } from './key-cache.ts';
import type { Logger } from './logger.ts';
import { NodeReplyError, type NodeLink } from './node-link.ts';
import type { NodePool } from './node-pool.ts';
import type { RateLimit } from './rate-limit.ts';
import type { VerifyTask } from './verify-answer.ts';
import type { VerifyPool } from './verify-pool.ts';
import { classifyWrongAnswer } from './node-health.ts';
import { decideHedge, hedgeAfter, type HedgeRule } from './hedge.ts';

export interface EvaluateDeps {
  pool: NodePool;
  keys: KeyCache;
  /** Access token and DPoP proof verifier, without replay cache (the nodes own replay). */
  auth: EvaluationAuth;
  nodeTimeoutMs: number;
  deadlineMs: number;
  /**
   * Added to the node timeout per blinded element, and twice that to the deadline: a node needs
   * about a millisecond per element on a quiet core and several on a busy one, so a fixed timeout
   * either gives up on full batches that are on their way or waits too long on small ones.
   */
  perElementMs: number;
  hedgeDelayMs: number;
  /** A node is hedged once it has taken this many times its usual latency (hedge.ts). */
  hedgeFactor: number;
  /** Node attempts a request may make beyond its first t: failovers and hedges. */
  retryBudget: number;
  /** Counts outcomes, hedges and probes for GET /metrics; absent: not counted. */
  metrics?: EvaluateMetrics;
  /** Checks node answers, in worker threads or inline. */
  verifier: VerifyPool;
  /** The bound on blinded elements in flight. */
  admission: Admission;
  refusals: RefusalLog;
  /** Blinded elements per (tenant, subject), shared by the replicas; absent means no limit. */
  rateLimit?: RateLimit;
}

/** What the evaluation path reports to the metrics (coordinator/metrics.ts). */
export interface EvaluateMetrics {
  /** One evaluation ended: 'ok' or its error code, after `seconds`. */
  evaluated(outcome: string, seconds: number): void;
  hedged(): void;
  probed(): void;
}

export interface EvaluateCall {
  tenant: string;
  version: number;
  body: unknown;
  /** The access token, verified for this tenant by authenticateClient. */
  token: string;
  verified: VerifiedToken;
  /** The DPoP header, checked here once the blinded elements are known. */
  dpop: string | undefined;
}

type NodePartial = EvaluateResponse['partials'][number];

interface Failure {
  node: number;
  code: ErrorCode;
  message: string;
  /** The node itself answered with this error (as opposed to timing out or answering wrongly). */
  refused: boolean;
  /** The wait a node named with ERR_RATE_LIMITED. */
  retryAfterSeconds?: number;
}

/** The client's blinded elements: as sent (to pass on to the nodes) and as checked bytes. */
export interface Blinded {
  encoded: string[];
  bytes: Uint8Array[];
}

/**
 * The body's shape only; every element is then decoded on its own so that bad base64, wrong
 * lengths, invalid and identity points each get their own code (shared/encoding.ts).
 */
const evaluateBodyShape = z
  .object({
    blinded: z.array(z.string().max(1024)),
    // The epoch of the client's key package: a hint, outside the DPoP binding, that this
    // replica's cached package may be older (see KeyCache.getAtLeast). Ignoring it is safe.
    epoch: evaluateBody.shape.epoch,
  })
  .strict();

/** Long node messages are cut: they end up in a client-facing error. */
const MAX_NODE_MESSAGE = 300;

/**
 * A node's own timeout never ends before the overall deadline it is cut to: when the deadline is
 * the nearer one, it decides, and names the deadline.
 */
const DEADLINE_MARGIN_MS = 10;

/** The body's shape and batch size: all that admission needs to know, and cheap to learn. */
export function parseBatch(body: unknown): string[] {
  return parseEvaluateBody(body).blinded;
}

/** The client's body: its blinded elements and the epoch of its key package, if it sent one. */
export function parseEvaluateBody(body: unknown): { blinded: string[]; epoch?: number } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new KmaasError(
      'ERR_VALIDATION',
      'body: expected a JSON object sent as Content-Type: application/json',
      { field: 'body' },
    );
  }
  const parsed = parseMessage(evaluateBodyShape, body, 'body');
  checkBatchSize(parsed.blinded.length);
  return parsed;
}

/** Decode and check the client's blinded elements before any node is bothered. */
export function parseBlinded(body: unknown): Blinded {
  return decodeBlinded(parseBatch(body));
}

function decodeBlinded(encoded: string[]): Blinded {
  const bytes = encoded.map((b, i) => {
    const raw = fromB64(b, `blinded[${i}]`);
    decodeElement(raw, `blinded[${i}]`);
    return raw;
  });
  return { encoded, bytes };
}

/**
 * The client's access token from its Authorization header, verified for `tenant` (ERR_TOKEN_*).
 * Run before the body is even parsed, so that an unauthenticated caller costs little. The token
 * is passed on to every node, which checks it again (DESIGN.md section 1).
 */
export async function authenticateClient(
  deps: EvaluateDeps,
  authorization: string | undefined,
  tenant: string,
): Promise<{ token: string; verified: VerifiedToken }> {
  const token = dpopToken(authorization);
  if (token === undefined) {
    throw new KmaasError(
      'ERR_TOKEN_MISSING',
      'access token: expected Authorization: DPoP <access token> (RFC 9449 section 7.1)',
    );
  }
  return { token, verified: await deps.auth.tokens.verify(token, tenant) };
}

/**
 * Admit the request, check the batch and the key, then gather t verified partial evaluations.
 * Throws ERR_OVERLOADED, before anything else is done, when the work in flight is at its bound;
 * then ERR_RATE_LIMITED, before any element is decoded, when the (tenant, subject) is over its
 * budget (coordinator/rate-limit.ts: one Redis round trip).
 */
export async function evaluate(
  deps: EvaluateDeps,
  call: EvaluateCall,
  log: Logger,
): Promise<EvaluateResponse> {
  const started = performance.now();
  try {
    const response = await evaluateOnce(deps, call, log, started);
    deps.metrics?.evaluated('ok', (performance.now() - started) / 1000);
    return response;
  } catch (err) {
    deps.metrics?.evaluated(toKmaasError(err).code, (performance.now() - started) / 1000);
    throw err;
  }
}

async function evaluateOnce(
  deps: EvaluateDeps,
  call: EvaluateCall,
  log: Logger,
  started: number,
): Promise<EvaluateResponse> {
  const { blinded: encoded, epoch: clientEpoch } = parseEvaluateBody(call.body);
  const deadlineMs = deps.deadlineMs + 2 * encoded.length * deps.perElementMs;
  const deadlineAt = started + deadlineMs;
  const credential = { token: call.token, dpop: call.dpop };
  await deps.auth.verifyProof(credential, call.verified, {
    tenant: call.tenant,
    version: call.version,
    blinded: encoded,
  });
  const lease = deps.admission.tryAcquire(encoded.length);
  if (!lease) {
    deps.refusals.refused(log, {
      tenant: call.tenant,
      version: call.version,
      batch: encoded.length,
      inflight: deps.admission.inflight,
      limit: deps.admission.limit,
    });
    throw overloaded(encoded.length);
  }
  try {
    await deps.rateLimit?.take(call.tenant, call.verified.subject, encoded.length, log);
    const blinded = decodeBlinded(encoded);
    let pkg = await packageBy(deps, call, deadlineAt, clientEpoch);
    // Nodes that were sent the request: they have seen its DPoP proof and refuse it again
    // (ERR_DPOP_REPLAY), so a retry can only go to others.
    const asked = new Set<number>();
    const budget = { left: deps.retryBudget };
    const ask = (p: ParsedKeyPackage): Promise<NodePartial[]> =>
      gatherPartials(
        deps,
        p,
        blinded,
        {
          tenant: call.tenant,
          version: call.version,
          epoch: p.epoch,
          blinded: encoded,
          auth: { token: call.token, dpop: call.dpop! },
        },
        lease,
        log,
        asked,
        { deadlineAt, deadlineMs, budget },
      );
    let partials: NodePartial[];
    try {
      partials = await ask(pkg);
    } catch (err) {
      if (!epochMoved(err)) throw err;
      // The committee moved on (a reshare finished) while this replica still had the old
      // package: drop it; if Redis has a package of another epoch by now, ask the nodes of that
      // epoch that have not seen the proof. When they are too few, the client is told to ask
      // again (with a new proof): by then this replica has the new package.
      deps.keys.invalidate(call.tenant, call.version);
      const reloaded = await packageBy(deps, call, deadlineAt);
      if (reloaded.epoch === pkg.epoch) throw err;
      const moved = new KmaasError(
        'ERR_EPOCH_MISMATCH',
        `the committee moved from epoch ${pkg.epoch} to epoch ${reloaded.epoch} during the request: ask again`,
        { requested: pkg.epoch, current: reloaded.epoch },
      );
      log.info(
        { tenant: call.tenant, version: call.version, from: pkg.epoch, to: reloaded.epoch },
        'epoch moved on: retrying with the reloaded key package',
      );
      pkg = reloaded;
      try {
        partials = await ask(pkg);
      } catch (again) {
        const code = toKmaasError(again).code;
        if (code === 'ERR_TOO_FEW_NODES' || code === 'ERR_DPOP_REPLAY' || epochMoved(again)) {
          throw moved;
        }
        throw again;
      }
    }
    log.debug(
      {
        tenant: call.tenant,
        version: call.version,
        batch: encoded.length,
        nodes: partials.map((p) => p.node),
        ms: Math.round(performance.now() - started),
      },
      'evaluated',
    );
    return {
      tenant: call.tenant,
      version: call.version,
      epoch: pkg.epoch,
      threshold: pkg.threshold,
      partials,
    };
  } finally {
    lease.release();
  }
}

/**
 * The key package, from the cache or (on a miss) Redis or the nodes, within the request's
 * deadline: a registry that cannot answer in time is ERR_REGISTRY_UNAVAILABLE.
 */
async function packageBy(
  deps: EvaluateDeps,
  call: EvaluateCall,
  deadlineAt: number,
  atLeastEpoch?: number,
): Promise<ParsedKeyPackage> {
  const load =
    atLeastEpoch === undefined
      ? deps.keys.get(call.tenant, call.version)
      : deps.keys.getAtLeast(call.tenant, call.version, atLeastEpoch);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new KmaasError(
            'ERR_REGISTRY_UNAVAILABLE',
            `the key package of ${call.tenant} v${call.version} could not be loaded before the deadline`,
            { tenant: call.tenant, version: call.version },
          ),
        ),
      Math.max(0, deadlineAt - performance.now()),
    );
  });
  try {
    return await Promise.race([load, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** What one request may still spend, shared by its first round and its epoch retry. */
interface Bounds {
  deadlineAt: number;
  /** The whole deadline, as the client's errors name it. */
  deadlineMs: number;
  /** Node attempts left beyond each round's first t. */
  budget: { left: number };
}

interface NodeEvaluateRequest {
  tenant: string;
  version: number;
  /** The epoch of the key package the answers are checked against. */
  epoch: number;
  blinded: string[];
  auth: { token: string; dpop: string };
}

/** One node asked: waiting for its answer, then having its answer checked. */
interface Attempt {
  link: NodeLink;
  phase: 'asked' | 'checking';
  /** The request went on the wire; until then it waits for room at a busy node. */
  sent: boolean;
  /** When it went on the wire (performance.now()). */
  sentAt: number;
  /** It holds the node's half-open probe slot: its answer is checked even if it comes late. */
  probe: boolean;
  /** Sent beside the t it needs (a probe), so not counted among them. */
  extra: boolean;
  hedge: NodeJS.Timeout | null;
  /** The node's own timeout, counted from the send (see `overdue` in gatherPartials). */
  overdue: NodeJS.Timeout | null;
  /** Drops the request if it has not been sent yet. */
  cancel: AbortController;
}

function gatherPartials(
  deps: EvaluateDeps,
  pkg: ParsedKeyPackage,
  blinded: Blinded,
  request: NodeEvaluateRequest,
  lease: Lease,
  log: Logger,
  asked: Set<number>,
  bounds: Bounds,
): Promise<NodePartial[]> {
  const t = pkg.threshold;
  const batch = blinded.bytes.length;
  const nodeTimeoutMs = deps.nodeTimeoutMs + batch * deps.perElementMs;
  const { deadlineAt, deadlineMs, budget } = bounds;
  const rule: HedgeRule = { hedgeDelayMs: deps.hedgeDelayMs, factor: deps.hedgeFactor };
  const context = { tenant: request.tenant, version: request.version, epoch: request.epoch };
  const route = deps.pool.route((l) => pkg.verificationShares.has(l.id) && !asked.has(l.id));
  // A half-open node gets this request as an extra probe when t others can carry it and the
  // admission limit has room, so that its recovery costs the client nothing; otherwise it is
  // just a candidate after the others.
  const extraProbe =
    route.ready.length >= t && route.probes.length > 0 && lease.extend(batch)
      ? route.probes.shift()!
      : undefined;
  const candidates = [...route.ready, ...route.probes, ...route.held];
  // Open breakers are asked only when the others cannot make t: not as hedges.
  const routable = route.ready.length + route.probes.length;
  const failures: Failure[] = [];
  for (const id of pkg.verificationShares.keys()) {
    if (asked.has(id)) {
      failures.push({
        node: id,
        code: 'ERR_DPOP_REPLAY',
        message: `node ${id} was asked already, with this very proof`,
        refused: false,
      });
    } else if (!candidates.some((l) => l.id === id) && extraProbe?.id !== id) {
      failures.push({
        node: id,
        code: 'ERR_NODE_UNAVAILABLE',
        message: `node ${id} is not connected`,
        refused: false,
      });
    }
  }
  if (candidates.length + (extraProbe ? 1 : 0) < t) {
    return Promise.reject(tooFewError(t, 0, failures));
  }

  const valid: NodePartial[] = [];
  // Open attempts by node: asked and not yet answered, or answered and being checked.
  const attempts = new Map<number, Attempt>();
  // Drops the checks still queued once the request is decided (and, per attempt, node requests
  // still waiting to be sent). A probe's check is not dropped: it decides the node's breaker.
  const decided = new AbortController();
  let next = 0;
  let launched = 0;
  let extras = 0;
  let done = false;
  let pastDeadline = false;

  return new Promise<NodePartial[]>((resolve, reject) => {
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      for (const attempt of attempts.values()) drop(attempt);
      decided.abort();
      if (valid.length >= t) {
        resolve(valid.slice(0, t).sort((a, b) => a.node - b.node));
      } else {
        reject(tooFewError(t, valid.length, failures));
      }
    };

    const isOpen = (attempt: Attempt): boolean =>
      !done && attempts.get(attempt.link.id) === attempt;

    /** An attempt ended, well or badly: decide, or ask someone else. */
    const close = (attempt: Attempt): void => {
      drop(attempt);
      attempts.delete(attempt.link.id);
      if (attempt.extra) extras--;
      if (valid.length >= t) return finish();
      if (!pastDeadline) topUp();
      if (attempts.size === 0 || (pastDeadline && valid.length + attempts.size < t)) finish();
    };

    const launch = (link: NodeLink, hedgeable: boolean, extra = false): void => {
      const remaining = deadlineAt - performance.now();
      if (remaining <= 0) return;
      // Beyond the first t, each attempt is a retry or a hedge, paid from the budget.
      if (!extra && ++launched > t) budget.left--;
      const attempt: Attempt = {
        link,
        phase: 'asked',
        sent: false,
        sentAt: 0,
        probe: link.health.routable() === 'probe' && link.health.breaker.tryProbe(),
        extra,
        hedge: null,
        overdue: null,
        cancel: new AbortController(),
      };
      if (attempt.probe) deps.metrics?.probed();
      if (extra) extras++;
      attempts.set(link.id, attempt);
      // The hedge clock starts when the node has the request, not while it waits its turn here.
      const onSent = (): void => {
        attempt.sent = true;
        attempt.sentAt = performance.now();
        asked.add(link.id);
        if (!isOpen(attempt)) return;
        const left = deadlineAt - attempt.sentAt;
        if (nodeTimeoutMs < left) {
          attempt.overdue = setTimeout(() => setImmediate(() => overdue(attempt)), nodeTimeoutMs);
        }
        if (hedgeable) scheduleHedge(attempt, hedgeAfter(rule, link.health));
      };
      // The link waits until the overall deadline; the node's own timeout is `overdue` below, so
      // that a slow node nobody can replace is waited for rather than given up on.
      const timeoutMs = Math.ceil(remaining) + DEADLINE_MARGIN_MS;
      const opts = { elements: batch, signal: attempt.cancel.signal, onSent };
      link.request('evaluate', request, timeoutMs, opts).then(
        (body) => onAnswer(attempt, body),
        (err: unknown) => onError(attempt, err),
      );
    };

    const onAnswer = (attempt: Attempt, body: unknown): void => {
      const { link } = attempt;
      const latencyMs = performance.now() - attempt.sentAt;
      if (!isOpen(attempt) || attempt.phase !== 'asked') {
        // Decided without it. Its latency still counts; a probe's answer is still checked.
        if (attempt.probe) checkLateProbe(link, body, latencyMs);
        else link.record({ kind: 'answered', latencyMs });
        return;
      }
      stopHedge(attempt);
      attempt.phase = 'checking';
      let answer: { partial: NodePartial; task: VerifyTask };
      try {
        answer = readAnswer(pkg, blinded, link.id, body);
      } catch (err) {
        wrongAnswer(link, err);
        return close(attempt);
      }
      deps.verifier.verify(answer.task, attempt.probe ? undefined : decided.signal).then(
        () => {
          link.record({ kind: 'success', latencyMs });
          if (!isOpen(attempt)) return;
          valid.push(answer.partial);
          close(attempt);
        },
        (err: unknown) => {
          if (!isOpen(attempt)) {
            // Dropped once decided: says nothing of the node, unless it was a probe.
            if (attempt.probe) link.record(classifyWrongAnswer(err));
            return;
          }
          if (toKmaasError(err).code === 'ERR_INTERNAL') uncheckable(link, err);
          else wrongAnswer(link, err);
          close(attempt);
        },
      );
    };

    /** A probe answered after the request was decided: check it, for the breaker's sake. */
    const checkLateProbe = (link: NodeLink, body: unknown, latencyMs: number): void => {
      let task: VerifyTask;
      try {
        task = readAnswer(pkg, blinded, link.id, body).task;
      } catch (err) {
        link.record(classifyWrongAnswer(err));
        return;
      }
      deps.verifier.verify(task).then(
        () => link.record({ kind: 'success', latencyMs }),
        (err: unknown) => {
          const outcome = classifyWrongAnswer(err);
          if (outcome.kind === 'lied') {
            log.warn(
              { ...context, node: link.id },
              'node returned an evaluation with an invalid proof; excluded',
            );
          }
          link.record(outcome);
        },
      );
    };

    // The link has recorded this in the node's health already (timeout, refusal, drop).
    const onError = (attempt: Attempt, err: unknown): void => {
      if (!isOpen(attempt) || attempt.phase !== 'asked') return;
      const e = toKmaasError(err);
      const node = attempt.link.id;
      const refused = err instanceof NodeReplyError;
      const wait = e.details?.retryAfterSeconds;
      failures.push({
        node,
        code: e.code,
        message: cut(refused ? `node ${node}: ${e.message}` : e.message),
        refused,
        ...(typeof wait === 'number' && Number.isFinite(wait) ? { retryAfterSeconds: wait } : {}),
      });
      log.warn({ ...context, node, code: e.code }, 'node failed to evaluate');
      close(attempt);
    };

    /**
     * The answer is wrong: the node is broken or lying. Named at warn; its health records it
     * (an invalid proof opens its breaker at once).
     */
    const wrongAnswer = (link: NodeLink, err: unknown): void => {
      const e = toKmaasError(err);
      link.record(classifyWrongAnswer(err));
      failures.push({ node: link.id, code: e.code, message: e.message, refused: false });
      log.warn(
        { ...context, node: link.id, code: e.code },
        e.code === 'ERR_PROOF_INVALID'
          ? 'node returned an evaluation with an invalid proof; excluded'
          : e.code === 'ERR_EPOCH_MISMATCH'
            ? 'node answered with the share of another epoch; excluded'
            : 'node returned a malformed evaluation; excluded',
      );
    };

    /** The check itself failed (a verify worker died): not the node's fault. */
    const uncheckable = (link: NodeLink, err: unknown): void => {
      failures.push({
        node: link.id,
        code: 'ERR_INTERNAL',
        message: `node ${link.id} answered, but its answer could not be checked`,
        refused: false,
      });
      log.error({ ...context, node: link.id, err }, 'could not check a node answer');
    };

    /**
     * The node took its whole timeout. When another holder can be asked, it is (the timeout is
     * recorded in the node's health), and the slow one is kept waiting beside it as an extra, so
     * that whichever answers first counts; when none can, the slow one is the last hope and is
     * waited for until the deadline.
     */
    const overdue = (attempt: Attempt): void => {
      attempt.overdue = null;
      if (!isOpen(attempt) || attempt.phase !== 'asked' || pastDeadline) return;
      const node = attempt.link.id;
      const replaceable = next < candidates.length && (launched < t || budget.left > 0);
      if (!replaceable) {
        log.debug({ ...context, node }, 'node slow and no one left to ask: waiting for it');
        return;
      }
      attempt.link.record({ kind: 'failed', code: 'ERR_NODE_UNAVAILABLE', reason: 'timeout' });
      log.warn(
        { ...context, node, code: 'ERR_NODE_UNAVAILABLE', timeoutMs: nodeTimeoutMs },
        'node failed to evaluate',
      );
      if (!attempt.extra && lease.extend(batch)) {
        attempt.extra = true;
        extras++;
        topUp();
        return;
      }
      failures.push({
        node,
        code: 'ERR_NODE_UNAVAILABLE',
        message: `node ${node} did not answer evaluate within ${nodeTimeoutMs} ms`,
        refused: false,
      });
      close(attempt);
    };

    /** Keep t requests going while untried holders remain and the budget allows. */
    const topUp = (): void => {
      while (!done && valid.length + attempts.size - extras < t && next < candidates.length) {
        if (launched >= t && budget.left <= 0) {
          log.debug({ ...context, launched }, 'retry budget spent: no more nodes asked');
          return;
        }
        launch(candidates[next++]!, true);
      }
    };

    const scheduleHedge = (attempt: Attempt, delayMs: number): void => {
      attempt.hedge = setTimeout(() => setImmediate(() => hedge(attempt)), delayMs);
    };

    // The node is slow by its own standard: ask one backup, if a routable holder is left, the
    // budget allows and the coordinator has room for the extra work. Backups are not hedged.
    const hedge = (attempt: Attempt): void => {
      attempt.hedge = null;
      if (!isOpen(attempt) || attempt.phase !== 'asked' || pastDeadline) return;
      const decision = decideHedge({
        rule,
        node: attempt.link.health,
        elapsedMs: performance.now() - attempt.sentAt,
        remainingMs: deadlineAt - performance.now(),
        spare: next < routable,
        budget: budget.left,
        fits: deps.admission.fits(batch),
      });
      if (!decision.hedge) {
        if ('wait' in decision) scheduleHedge(attempt, decision.wait);
        else if (decision.reason === 'admission') {
          log.debug(
            { ...context, node: attempt.link.id, batch },
            'node slow, but not hedging: the coordinator is at its admission limit',
          );
        }
        return;
      }
      if (!lease.extend(batch)) return;
      const backup = candidates[next++]!;
      log.debug({ ...context, node: attempt.link.id, backup: backup.id }, 'node slow: hedging');
      deps.metrics?.hedged();
      launch(backup, false);
    };

    // Decided after the poll phase, so that answers already in the sockets count. Nodes still
    // silent then have failed; answers that came in time are still checked, and decide, unless
    // they are too few to make t.
    const deadline = setTimeout(
      () =>
        setImmediate(() => {
          if (done) return;
          pastDeadline = true;
          for (const attempt of [...attempts.values()]) {
            if (attempt.phase !== 'asked') continue;
            drop(attempt);
            attempts.delete(attempt.link.id);
            if (attempt.extra) extras--;
            const node = attempt.link.id;
            failures.push({
              node,
              code: 'ERR_NODE_UNAVAILABLE',
              message: attempt.sent
                ? `node ${node} did not answer before the ${deadlineMs} ms deadline`
                : `node ${node} was busy and could not be asked before the ${deadlineMs} ms deadline`,
              refused: false,
            });
          }
          if (valid.length + attempts.size < t) finish();
        }),
      Math.max(0, deadlineAt - performance.now()),
    );

    if (extraProbe) launch(extraProbe, false, true);
    topUp();
  });
}

function stopHedge(attempt: Attempt): void {
  if (attempt.hedge) clearTimeout(attempt.hedge);
  attempt.hedge = null;
  if (attempt.overdue) clearTimeout(attempt.overdue);
  attempt.overdue = null;
}

/**
 * No hedge, and no sending if it has not been sent yet: the attempt is over. A probe never sent
 * frees its node's probe slot.
 */
function drop(attempt: Attempt): void {
  stopHedge(attempt);
  if (attempt.sent) return;
  attempt.cancel.abort();
  if (attempt.probe) {
    attempt.probe = false;
    attempt.link.record({ kind: 'void' });
  }
}

/**
 * Parse one node's answer and turn it into the bytes its check needs; throws a KmaasError naming
 * the node when its shape is wrong. The proof itself is checked by the verify pool.
 */
function readAnswer(
  pkg: ParsedKeyPackage,
  blinded: Blinded,
  node: number,
  body: unknown,
): { partial: NodePartial; task: VerifyTask } {
  const reply = parseMessage(evaluateReply, body, `node ${node} evaluate reply`);
  if (reply.node !== node) {
    throw new KmaasError('ERR_PROOF_INVALID', `node ${node} answered as node ${reply.node}`, {
      node,
    });
  }
  // K_j below is the epoch's: a share of another epoch cannot pass, and is not this request's.
  const epoch = reply.epoch ?? 1;
  if (epoch !== pkg.epoch) {
    throw new KmaasError(
      'ERR_EPOCH_MISMATCH',
      `node ${node} answered with its epoch ${epoch} share, asked for epoch ${pkg.epoch}`,
      { node, requested: pkg.epoch, current: epoch },
    );
  }
  if (reply.evaluated.length !== blinded.bytes.length) {
    throw new KmaasError(
      'ERR_PROOF_INVALID',
      `node ${node} returned ${reply.evaluated.length} elements for ${blinded.bytes.length}`,
      { node },
    );
  }
  const evaluated = reply.evaluated.map((e, i) => fromB64(e, `node ${node} evaluated[${i}]`));
  const proof = fromB64(reply.proof, `node ${node} proof`);
  const key = pkg.verificationShares.get(node);
  if (!key) {
    throw new KmaasError('ERR_PROOF_INVALID', `node ${node} is not in the key package`, { node });
  }
  return {
    partial: { node, epoch, evaluated: reply.evaluated, proof: reply.proof },
    task: { node, key: key.toBytes(), blinded: blinded.bytes, evaluated, proof },
  };
}

/** What nodes answer once a reshare finished: not that epoch any more, or not a member. */
const MOVED_ON = new Set<string>(['ERR_EPOCH_MISMATCH', 'ERR_NODE_REMOVED']);

/**
 * Whether the request failed because nodes no longer hold the package's epoch: t of them said so
 * (tooFewError passes their refusal on), or some did among other failures.
 */
function epochMoved(err: unknown): boolean {
  if (!(err instanceof KmaasError)) return false;
  if (MOVED_ON.has(err.code)) return true;
  if (err.code !== 'ERR_TOO_FEW_NODES') return false;
  const failed = err.details?.failed;
  return (
    Array.isArray(failed) &&
    failed.some((f) => MOVED_ON.has(String((f as { code?: unknown }).code)))
  );
}

/**
 * ERR_TOO_FEW_NODES naming every node that failed and why. One exception: when t or more nodes
 * refused the request with the same client error (401, 404, ...), at least one of them is honest
 * (at most t-1 can lie), so that error is the true answer and the client gets it instead.
 */
function tooFewError(t: number, valid: number, failures: readonly Failure[]): KmaasError {
  const refusals = new Map<ErrorCode, Failure[]>();
  for (const f of failures) {
    const status = ERROR_CODES[f.code].status;
    if (f.refused && status >= 400 && status < 500) {
      refusals.set(f.code, [...(refusals.get(f.code) ?? []), f]);
    }
  }
  for (const [code, list] of refusals) {
    if (list.length >= t) {
      // A rate limit passes on the longest wait the nodes named, for the Retry-After header.
      const waits = list.flatMap((f) =>
        f.retryAfterSeconds === undefined ? [] : [f.retryAfterSeconds],
      );
      const wait = code === 'ERR_RATE_LIMITED' ? Math.ceil(Math.max(1, ...waits)) : undefined;
      return new KmaasError(code, `${list.length} nodes refused the request: ${list[0]!.message}`, {
        nodes: list.map((f) => f.node).sort((a, b) => a - b),
        ...(wait === undefined ? {} : { retryAfterSeconds: wait }),
      });
    }
  }
  return new KmaasError('ERR_TOO_FEW_NODES', `need ${t} valid node answers, got ${valid}`, {
    needed: t,
    valid,
    failed: [...failures]
      .sort((a, b) => a.node - b.node)
      .map(({ node, code, message }) => ({ node, code, message })),
  });
}

function cut(text: string): string {
  return text.length > MAX_NODE_MESSAGE ? `${text.slice(0, MAX_NODE_MESSAGE)}...` : text;
}
