/**
 * The node's side of WebSocket protocol v1 (shared/messages.ts): one request in, one reply out.
 *
 *   coordinator -> node  { v: 1, id, type, body }
 *   node -> coordinator  { v: 1, id, ok: true, body } | { v: 1, id, ok: false, error }
 *
 * Checks, each with its own code: JSON (ERR_MALFORMED_JSON), envelope (ERR_VALIDATION), protocol
 * version (ERR_UNSUPPORTED_VERSION), type (ERR_UNKNOWN_MESSAGE), body against its type's schema
 * (ERR_VALIDATION naming the field). Every failure is a reply, never a dropped connection; an
 * unexpected exception is ERR_INTERNAL on the wire and the details go to the log only.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { KmaasError, toKmaasError } from '../shared/errors.ts';
import {
  nodeRequestBodies,
  nodeRequestEnvelope,
  parseJson,
  parseMessage,
  PROTOCOL_VERSION,
  type NodeReply,
  type NodeRequestType,
} from '../shared/messages.ts';
import type { LogFields, NodeContext } from './context.ts';
import { handleCommit, handleRound1, handleRound2, handleRound3 } from './dkg.ts';
import { handleEvaluate } from './evaluate.ts';
import { handleProposalApply } from './proposals.ts';
import { reshareHandlers } from './reshare.ts';

type Handler<K extends NodeRequestType> = (
  ctx: NodeContext,
  body: z.infer<(typeof nodeRequestBodies)[K]>,
  log: LogFields,
) => unknown;

/**
 * The node's committed epoch (null before its first ceremony) and its keys, each once, at the
 * newest epoch it holds a share of (during a reshare's retiring period the new one).
 */
function status(ctx: NodeContext) {
  const epoch = ctx.keyring.epoch;
  return {
    node: ctx.nodeId,
    keys: ctx.keyring.list().map((k) => ({
      tenant: k.tenant,
      version: k.version,
      groupKey: k.keyPackage.groupKey,
      epoch: k.epoch,
    })),
    epoch: epoch
      ? {
          epoch: epoch.epoch,
          threshold: epoch.threshold,
          members: epoch.committee.map((m) => m.node),
        }
      : null,
    ...(ctx.reshareStatus ? { reshare: ctx.reshareStatus() } : {}),
    ...(ctx.identity ? { identity: ctx.identity.published() } : {}),
    cluster: ctx.policy.clusterId,
  };
}

const handlers: { [K in NodeRequestType]: Handler<K> } = {
  status,
  'dkg.round1': handleRound1,
  'dkg.round2': handleRound2,
  'dkg.round3': handleRound3,
  'dkg.commit': handleCommit,
  'proposal.apply': handleProposalApply,
  evaluate: handleEvaluate,
  keyPackage: (ctx, body, log) => {
    log.tenant = body.tenant;
    log.version = body.version;
    // The current epoch's package: the one clients verify current evaluations against.
    return { keyPackage: ctx.keyring.get(body.tenant, body.version).keyPackage };
  },
  ...reshareHandlers,
};

function isRequestType(type: string): type is NodeRequestType {
  return Object.hasOwn(nodeRequestBodies, type);
}

/** The request id, when one can be read, so that even a refused request gets a matching reply. */
function salvageId(json: unknown): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const id = (json as { id?: unknown }).id;
  return typeof id === 'string' && id.length >= 1 && id.length <= 128 ? id : undefined;
}

function run<K extends NodeRequestType>(
  ctx: NodeContext,
  type: K,
  rawBody: unknown,
  log: LogFields,
): unknown {
  // TypeScript cannot correlate the schema and the handler picked by the same key; the table's
  // type above is what ties them together.
  const body = parseMessage(nodeRequestBodies[type], rawBody, type) as Parameters<Handler<K>>[1];
  return (handlers[type] as Handler<K>)(ctx, body, log);
}

/**
 * The reply, and for the audit log the frame as parsed (undefined when it is not JSON) and the
 * verified subject of an evaluation (undefined when its credential was not verified).
 */
export type Dispatch = (
  text: string,
) => Promise<{ reply: NodeReply; json: unknown; subject: string | undefined }>;

/** A function from one received text frame to its reply. `logger` is bound to the connection. */
export function createDispatcher(ctx: NodeContext, logger: Logger): Dispatch {
  return async (text) => {
    const started = performance.now();
    const fields: LogFields = {};
    let id = 'unknown';
    let type: string | undefined;
    let reply: NodeReply;
    let failure: unknown;
    let json: unknown;
    try {
      json = parseJson(text);
      id = salvageId(json) ?? id;
      const envelope = parseMessage(nodeRequestEnvelope, json, 'message');
      type = envelope.type;
      if (envelope.v !== PROTOCOL_VERSION) {
        throw new KmaasError(
          'ERR_UNSUPPORTED_VERSION',
          `protocol version ${envelope.v} is not supported; this node speaks ${PROTOCOL_VERSION}`,
          { supported: [PROTOCOL_VERSION], received: envelope.v },
        );
      }
      if (!isRequestType(envelope.type)) {
        throw new KmaasError('ERR_UNKNOWN_MESSAGE', `unknown message type ${envelope.type}`, {
          type: envelope.type,
        });
      }
      reply = {
        v: PROTOCOL_VERSION,
        id,
        ok: true,
        body: await run(ctx, envelope.type, envelope.body, fields),
      };
    } catch (err) {
      failure = err;
      const e = toKmaasError(err);
      // Internal errors carry nothing to the wire beyond their code: the log has the rest.
      const error =
        e.code === 'ERR_INTERNAL' ? { code: e.code, message: 'internal error' } : e.toBody();
      reply = { v: PROTOCOL_VERSION, id, ok: false, error };
    }
    const line = {
      requestId: id,
      type,
      ...fields,
      durationMs: Math.round((performance.now() - started) * 1000) / 1000,
      ok: reply.ok,
      ...(reply.ok ? {} : { code: reply.error.code }),
    };
    if (reply.ok) {
      // DKG and resharing are rare and worth a record; evaluations are the hot path and log at debug.
      if (
        type?.startsWith('dkg.') ||
        type?.startsWith('reshare.') ||
        type?.startsWith('proposal.')
      ) {
        logger.info(line, 'request');
      } else logger.debug(line, 'request');
    } else if (reply.error.code === 'ERR_INTERNAL') {
      logger.error({ ...line, err: failure }, 'request failed');
    } else {
      logger.warn({ ...line, message: reply.error.message }, 'request refused');
    }
    const subject = typeof fields.subject === 'string' ? fields.subject : undefined;
    return { reply, json, subject };
  };
}
