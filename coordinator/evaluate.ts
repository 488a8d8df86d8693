/**
 * The hot path (DESIGN.md sections 2 and 7): one client request in, t partial evaluations out.
 *
 *   client -> coordinator   POST .../evaluate { blinded: [B_i] }, Bearer <client token>
 *   coordinator -> node j   evaluate { tenant, version, blinded, auth: { token } }   (t of them)
 *   node j -> coordinator   { node: j, evaluated: [Z_ij], proof }                    (RFC 9497 DLEQ)
 *   coordinator -> client   { tenant, version, threshold, partials }
 *
 * The coordinator learns nothing from this: the blinded elements hide the inputs, and one
 * node's Z_ij is useless without t-1 others and the blinds. It checks each proof against K_j from
 * the key package anyway (shared/voprf-client.ts verifyPartial) so that a lying node is caught
 * here, named, and replaced, instead of failing the client's derivation. The client checks again.
 *
 * Routing: ask the t healthiest share holders; when one fails (error, timeout, bad proof, drop)
 * ask the next untried one; when one is slow past the hedge delay ask a backup in parallel; the
 * first t valid answers win. Everything ends by the overall deadline. No queue, no Redis except
 * on a key-package cache miss.
 */
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import { decodeElementB64, fromB64, type GroupElement } from '../shared/encoding.ts';
import { ERROR_CODES, KmaasError, toKmaasError, type ErrorCode } from '../shared/errors.ts';
import type { ParsedKeyPackage } from '../shared/key-package.ts';
import { evaluateReply, parseMessage, type EvaluateResponse } from '../shared/messages.ts';
import { verifyPartial } from '../shared/voprf-client.ts';
import { checkBatchSize } from '../shared/suite.ts';
import { requireBearer } from '../shared/bearer.ts';
import type { KeyCache } from './key-cache.ts';
import type { Logger } from './logger.ts';
import { NodeReplyError, type NodeLink } from './node-link.ts';
import type { NodePool } from './node-pool.ts';
import type { Redacted } from '../shared/redacted.ts';

export interface EvaluateDeps {
  pool: NodePool;
  keys: KeyCache;
  clientToken: Redacted<string>;
  nodeTimeoutMs: number;
  deadlineMs: number;
  hedgeDelayMs: number;
}

export interface EvaluateCall {
  tenant: string;
  version: number;
  body: unknown;
  /** The client's bearer token, as authenticateClient returned it. */
  token: string;
}

type NodePartial = EvaluateResponse['partials'][number];

interface Failure {
  node: number;
  code: ErrorCode;
  message: string;
  /** The node itself answered with this error (as opposed to timing out or answering wrongly). */
  refused: boolean;
}

/**
 * The body's shape only; every element is then decoded on its own so that bad base64, wrong
 * lengths, invalid and identity points each get their own code (shared/encoding.ts).
 */
const evaluateBodyShape = z.object({ blinded: z.array(z.string().max(1024)) }).strict();

/** Long node messages are cut: they end up in a client-facing error. */
const MAX_NODE_MESSAGE = 300;

/** Decode and check the client's blinded elements before any node is bothered. */
export function parseBlinded(body: unknown): { points: GroupElement[]; encoded: string[] } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new KmaasError(
      'ERR_VALIDATION',
      'body: expected a JSON object sent as Content-Type: application/json',
      { field: 'body' },
    );
  }
  const { blinded } = parseMessage(evaluateBodyShape, body, 'body');
  checkBatchSize(blinded.length);
  const points = blinded.map((b, i) => decodeElementB64(b, `blinded[${i}]`));
  return { points, encoded: blinded };
}

/**
 * The client's token from its Authorization header, or ERR_UNAUTHORIZED. Run before the body is
 * even parsed, so that an unauthenticated caller costs nothing. The token is passed on to every
 * node, which checks it again (DESIGN.md section 1).
 */
export function authenticateClient(deps: EvaluateDeps, authorization: string | undefined): string {
  return requireBearer(authorization, deps.clientToken, 'evaluate');
}

/** Check the batch and the key, then gather t verified partial evaluations. */
export async function evaluate(
  deps: EvaluateDeps,
  call: EvaluateCall,
  log: Logger,
): Promise<EvaluateResponse> {
  const { points, encoded } = parseBlinded(call.body);
  const pkg = await deps.keys.get(call.tenant, call.version);
  const started = performance.now();
  const partials = await gatherPartials(
    deps,
    pkg,
    points,
    {
      tenant: call.tenant,
      version: call.version,
      blinded: encoded,
      auth: { token: call.token },
    },
    log,
  );
  log.debug(
    {
      tenant: call.tenant,
      version: call.version,
      batch: points.length,
      nodes: partials.map((p) => p.node),
      ms: Math.round(performance.now() - started),
    },
    'evaluated',
  );
  return {
    tenant: call.tenant,
    version: call.version,
    threshold: pkg.threshold,
    partials,
  };
}

interface NodeEvaluateRequest {
  tenant: string;
  version: number;
  blinded: string[];
  auth: { token: string };
}

function gatherPartials(
  deps: EvaluateDeps,
  pkg: ParsedKeyPackage,
  points: readonly GroupElement[],
  request: NodeEvaluateRequest,
  log: Logger,
): Promise<NodePartial[]> {
  const t = pkg.threshold;
  const context = { tenant: request.tenant, version: request.version };
  const candidates = deps.pool.healthy().filter((l) => pkg.verificationShares.has(l.id));
  const failures: Failure[] = [];
  for (const id of pkg.verificationShares.keys()) {
    if (!candidates.some((l) => l.id === id)) {
      failures.push({
        node: id,
        code: 'ERR_NODE_UNAVAILABLE',
        message: `node ${id} is not connected`,
        refused: false,
      });
    }
  }
  if (candidates.length < t) return Promise.reject(tooFewError(t, 0, failures));

  const deadlineAt = performance.now() + deps.deadlineMs;
  const valid: NodePartial[] = [];
  const inflight = new Set<number>();
  let next = 0;
  let done = false;

  return new Promise<NodePartial[]>((resolve, reject) => {
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      clearTimeout(hedge);
      if (valid.length >= t) {
        resolve(valid.slice(0, t).sort((a, b) => a.node - b.node));
      } else {
        reject(tooFewError(t, valid.length, failures));
      }
    };

    const settle = (node: number): void => {
      inflight.delete(node);
      if (done) return;
      if (valid.length >= t) return finish();
      topUp();
      if (inflight.size === 0) finish();
    };

    const launch = (link: NodeLink): void => {
      const remaining = deadlineAt - performance.now();
      if (remaining <= 0) return;
      inflight.add(link.id);
      void link
        .request('evaluate', request, Math.min(deps.nodeTimeoutMs, Math.ceil(remaining)))
        .then(
          (body) => {
            if (!done) accept(link, body);
          },
          (err: unknown) => {
            if (!done) fail(link, err);
          },
        )
        .finally(() => settle(link.id));
    };

    const accept = (link: NodeLink, body: unknown): void => {
      try {
        valid.push(checkAnswer(pkg, points, link.id, body));
      } catch (err) {
        const e = toKmaasError(err);
        link.recordFailure();
        failures.push({ node: link.id, code: e.code, message: e.message, refused: false });
        // Named at warn: a node that answers wrongly is either broken or lying.
        log.warn(
          { ...context, node: link.id, code: e.code },
          e.code === 'ERR_PROOF_INVALID'
            ? 'node returned an evaluation with an invalid proof; excluded'
            : 'node returned a malformed evaluation; excluded',
        );
      }
    };

    const fail = (link: NodeLink, err: unknown): void => {
      const e = toKmaasError(err);
      const refused = err instanceof NodeReplyError;
      failures.push({
        node: link.id,
        code: e.code,
        message: cut(refused ? `node ${link.id}: ${e.message}` : e.message),
        refused,
      });
      log.warn({ ...context, node: link.id, code: e.code }, 'node failed to evaluate');
    };

    /** Keep t requests going while untried holders remain. */
    const topUp = (): void => {
      while (!done && valid.length + inflight.size < t && next < candidates.length) {
        launch(candidates[next++]!);
      }
    };

    // Hedge: every request still open after the delay gets one backup, if any holder is left.
    const hedge = setTimeout(() => {
      let backups = inflight.size;
      while (!done && backups-- > 0 && next < candidates.length) launch(candidates[next++]!);
    }, deps.hedgeDelayMs);

    const deadline = setTimeout(() => {
      for (const node of inflight) {
        failures.push({
          node,
          code: 'ERR_NODE_UNAVAILABLE',
          message: `node ${node} did not answer before the ${deps.deadlineMs} ms deadline`,
          refused: false,
        });
      }
      finish();
    }, deps.deadlineMs);

    topUp();
  });
}

/** Parse and verify one node's answer; throws a KmaasError naming the node when it is wrong. */
function checkAnswer(
  pkg: ParsedKeyPackage,
  points: readonly GroupElement[],
  node: number,
  body: unknown,
): NodePartial {
  const reply = parseMessage(evaluateReply, body, `node ${node} evaluate reply`);
  if (reply.node !== node) {
    throw new KmaasError('ERR_PROOF_INVALID', `node ${node} answered as node ${reply.node}`, {
      node,
    });
  }
  if (reply.evaluated.length !== points.length) {
    throw new KmaasError(
      'ERR_PROOF_INVALID',
      `node ${node} returned ${reply.evaluated.length} elements for ${points.length}`,
      { node },
    );
  }
  const evaluated = reply.evaluated.map((e, i) =>
    decodeElementB64(e, `node ${node} evaluated[${i}]`),
  );
  const proof = fromB64(reply.proof, `node ${node} proof`);
  verifyPartial(pkg, points, { node, evaluated, proof });
  return { node, evaluated: reply.evaluated, proof: reply.proof };
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
      return new KmaasError(code, `${list.length} nodes refused the request: ${list[0]!.message}`, {
        nodes: list.map((f) => f.node).sort((a, b) => a - b),
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
