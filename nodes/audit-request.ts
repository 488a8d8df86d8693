/**
 * What the node records in its audit log for each request: every evaluation, every DKG message
 * (any `dkg.*` type the node knows), every reshare message (`reshare.*`, its reshare id as the
 * ceremony id) and every proposal.apply, accepted or refused, with the refusal's code. A request
 * that carries a well-formed operator proposal (dkg.round1, reshare.begin, proposal.apply) is
 * recorded with the proposal's id and operation, whether it passed or not.
 *
 * Called by the WebSocket handler (server.ts) with the frame as the dispatcher parsed it and its
 * reply, so that requests refused before any handler ran (bad envelope, bad body) are recorded
 * too. Fields are copied only when they are well-formed (a refused request may carry anything),
 * and the blinded elements, the token and the proof are never copied: only the number of
 * elements, and the subject (`sub`) of the access token once the handler has verified it.
 */
import type { Logger } from 'pino';
import { TENANT_PATTERN } from '../shared/document.ts';
import { nodeRequestBodies, type NodeReply } from '../shared/messages.ts';
import { proposalId, proposalSchema } from '../shared/proposal.ts';
import type { AuditEvent, AuditType } from './audit-log.ts';
import type { NodeContext } from './context.ts';

const CEREMONY_ID = /^[A-Za-z0-9_-]{8,64}$/;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function auditedType(type: unknown): AuditType | undefined {
  if (typeof type !== 'string' || !Object.hasOwn(nodeRequestBodies, type)) return undefined;
  return type === 'evaluate' ||
    type.startsWith('dkg.') ||
    type.startsWith('reshare.') ||
    type === 'proposal.apply'
    ? (type as AuditType)
    : undefined;
}

/**
 * The entry for one request, or undefined when its type is not audited (or unreadable).
 * `subject` is the verified `sub` of the access token, when the handler got that far.
 */
export function requestEvent(
  json: unknown,
  reply: NodeReply,
  subject?: string,
): AuditEvent | undefined {
  if (!isObject(json)) return undefined;
  const type = auditedType(json.type);
  if (type === undefined) return undefined;
  const body = isObject(json.body) ? json.body : {};
  const { tenant, version, blinded } = body;
  // A reshare is a ceremony too: its id is recorded where a DKG's is.
  const ceremonyId = type.startsWith('reshare.') ? body.reshareId : body.ceremonyId;
  const event: AuditEvent = {
    type,
    requestId: reply.id,
    outcome: reply.ok ? 'ok' : reply.error.code,
  };
  if (typeof tenant === 'string' && TENANT_PATTERN.test(tenant)) event.tenant = tenant;
  if (Number.isSafeInteger(version) && (version as number) >= 1) event.version = version as number;
  if (typeof ceremonyId === 'string' && CEREMONY_ID.test(ceremonyId)) event.ceremonyId = ceremonyId;
  const proposal = proposalSchema.safeParse(body.proposal);
  if (proposal.success) {
    event.proposal = proposalId(proposal.data);
    event.operation = proposal.data.operation;
    event.tenant ??= proposal.data.tenant;
    event.version ??= proposal.data.version;
  }
  if (type === 'evaluate') {
    if (Array.isArray(blinded)) event.count = blinded.length;
    // Never read from the request itself: only a subject the handler verified is recorded.
    if (subject !== undefined) event.subject = subject;
  }
  return event;
}

/** Record one request; never throws (a failure to record is logged at error). */
export function auditRequest(
  ctx: NodeContext,
  json: unknown,
  reply: NodeReply,
  log: Logger,
  subject?: string,
): void {
  if (!ctx.audit) return;
  try {
    const event = requestEvent(json, reply, subject);
    if (event) ctx.audit.append(event);
  } catch (err) {
    log.error({ err, requestId: reply.id }, 'audit entry not recorded');
  }
}
