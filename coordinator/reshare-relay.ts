/**
 * The coordinator's side of resharing (DESIGN.md section 3, "Resharing"; the node side is
 * nodes/reshare.ts): the reshare.* messages of shared/messages.ts, sent to the nodes and their
 * answers checked for shape. The coordinator only carries: dealings are public commitments and
 * pieces sealed dealer -> receiver, votes are Ed25519 signatures by the new members.
 *
 *   begin    coordinator -> old and new members  { reshareId, proposal, period?, keys }
 *            node -> coordinator                 { node, epoch, dealer, receiver }
 *   deal     coordinator -> dealer i in S        { reshareId, dealers: S, chunk, keys }
 *            dealer -> coordinator               { dealing (C_i0..C_i(t'-1) per key),
 *                                                  pieces: g_i(x_j) sealed to each receiver j }
 *   prepare  coordinator -> receiver j           { ..., oldPackages, dealings (j's piece each) }
 *            receiver -> coordinator             { node, chunk, digest of its new packages }
 *   vote     coordinator -> receiver j           { reshareId, dealers, chunks }
 *            receiver -> coordinator             { node, transcript, signature }
 *   commit   coordinator -> every node           { reshareId, transcript, votes }
 *   finish   coordinator -> every node           { reshareId }   (erase the old epoch)
 *   abort    coordinator -> every node           { reshareId }   (before a commit only)
 *
 * A reply this side finds malformed makes a dealer the culprit (ERR_RESHARE_DEALER), as in the
 * DKG; a receiver that finds a bad dealing names the dealer itself, in details.culprits.
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { hexToBytes } from '@noble/hashes/utils.js';
import { fromB64, utf8Bytes } from '../shared/encoding.ts';
import { KmaasError, toKmaasError, type ErrorCode } from '../shared/errors.ts';
import {
  parseMessage,
  reshareAbortReply,
  reshareBeginReply,
  reshareCommitReply,
  reshareDealReply,
  reshareFinishReply,
  resharePrepareReply,
  reshareVoteReply,
  type NodeRequestType,
} from '../shared/messages.ts';
import type { CommitteeMember } from '../shared/proposal.ts';
import type { Logger } from './logger.ts';
import { NodeReplyError } from './node-link.ts';
import type { NodePool } from './node-pool.ts';

export type ResharePhase = 'begin' | 'deal' | 'prepare' | 'vote' | 'commit' | 'switch' | 'finish';

export interface ReshareProgress {
  phase: ResharePhase;
  done: number;
  total: number;
}

export interface KeyRef {
  tenant: string;
  version: number;
}

export type BeginAnswer = ReturnType<typeof reshareBeginReply.parse>;
export type DealAnswer = ReturnType<typeof reshareDealReply.parse>;
export type Vote = { node: number; signature: string };

export interface ReshareRelayDeps {
  pool: NodePool;
  /** Deadline of one node's answer to one message. */
  timeoutMs: number;
  logger: Logger;
}

export interface NodeFailure {
  node: number;
  code: ErrorCode;
  message: string;
  /** Dealers a receiver (or this side) found at fault. */
  culprits: number[];
}

/** The label every vote signature starts with (PLAN: reshare.vote). */
const VOTE_DOMAIN = 'KMaaS-v1 reshare vote\0';

/** Send one message to one node and parse its answer; throws what the node or the link said. */
export async function ask(
  deps: ReshareRelayDeps,
  node: number,
  type: NodeRequestType,
  body: unknown,
): Promise<unknown> {
  const link = deps.pool.get(node);
  if (!link) throw new KmaasError('ERR_NODE_UNAVAILABLE', `node ${node} is not configured`);
  return link.request(type, body, deps.timeoutMs);
}

export function describeFailure(node: number, err: unknown): NodeFailure {
  const e = toKmaasError(err);
  const reported = e.details?.culprits;
  const culprits =
    e.code === 'ERR_RESHARE_DEALER' && Array.isArray(reported)
      ? reported.filter((c): c is number => Number.isInteger(c))
      : [];
  return { node, code: e.code, message: e.message, culprits };
}

/**
 * Ask every node in `nodes` at once; never throws. `check` turns a reply into a result or throws.
 * `onAnswer` is told after each good answer (progress).
 */
export async function askAll<T>(
  deps: ReshareRelayDeps,
  type: NodeRequestType,
  nodes: readonly number[],
  bodyFor: (node: number) => unknown,
  check: (node: number, body: unknown) => T,
  onAnswer?: () => void,
): Promise<{ answers: Map<number, T>; failures: NodeFailure[] }> {
  const answers = new Map<number, T>();
  const failures: NodeFailure[] = [];
  await Promise.all(
    nodes.map(async (node) => {
      try {
        answers.set(node, check(node, await ask(deps, node, type, bodyFor(node))));
        onAnswer?.();
      } catch (err) {
        failures.push(describeFailure(node, err));
      }
    }),
  );
  failures.sort((a, b) => a.node - b.node);
  return { answers, failures };
}

/**
 * One error for the failures of one phase: ERR_RESHARE_DEALER naming the culprits when any node
 * named one, else the common code when every node failed the same way, else ERR_RESHARE_STATE.
 */
export function phaseFailed(phase: ResharePhase, failures: readonly NodeFailure[]): KmaasError {
  const list = failures.map(({ node, code, message }) => ({ node, code, message }));
  const culprits = [...new Set(failures.flatMap((f) => f.culprits))].sort((a, b) => a - b);
  const summary = list.map((f) => `node ${f.node}: ${f.code}`).join('; ');
  if (culprits.length > 0) {
    return new KmaasError(
      'ERR_RESHARE_DEALER',
      `reshare ${phase}: dealer(s) ${culprits.join(', ')} at fault (${summary})`,
      { phase, culprits, failures: list },
    );
  }
  const codes = new Set(failures.map((f) => f.code));
  const [only] = codes;
  const code = codes.size === 1 && only !== undefined ? only : 'ERR_RESHARE_STATE';
  return new KmaasError(code, `reshare ${phase} failed: ${summary}`, {
    phase,
    culprits: [],
    failures: list,
  });
}

function malformed(node: number, what: string, err: unknown, dealer: boolean): KmaasError {
  const why = err instanceof Error ? err.message : 'invalid';
  const message = `node ${node} sent a malformed ${what}: ${why}`;
  return dealer
    ? new KmaasError('ERR_RESHARE_DEALER', message, { culprits: [node] })
    : new KmaasError('ERR_RESHARE_STATE', message, { node });
}

/** Keep NodeReplyErrors (the node's own word) as they are; wrap what this side found wrong. */
function checked<T>(node: number, what: string, dealer: boolean, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof NodeReplyError) throw err;
    throw malformed(node, what, err, dealer);
  }
}

export function checkBegin(node: number, body: unknown): BeginAnswer {
  return checked(node, 'reshare.begin reply', false, () => {
    const reply = parseMessage(reshareBeginReply, body, 'reshare.begin reply');
    if (reply.node !== node) throw new Error(`claims to be node ${reply.node}`);
    return reply;
  });
}

/**
 * A dealing for exactly this chunk: one entry per key, in order, with t' commitments each, and
 * one sealed piece from this dealer to each receiver. Whether the content is right is for the
 * receivers to check (signatures, old package digest, C_i0 = K_i, Feldman).
 */
export function checkDeal(
  dealer: number,
  body: unknown,
  expected: { chunk: number; keys: readonly KeyRef[]; threshold: number; receivers: number[] },
): DealAnswer {
  return checked(dealer, 'dealing', true, () => {
    const reply = parseMessage(reshareDealReply, body, 'reshare.deal reply');
    if (reply.dealer !== dealer) throw new Error(`claims to come from node ${reply.dealer}`);
    if (reply.chunk !== expected.chunk) throw new Error(`is for chunk ${reply.chunk}`);
    if (reply.dealing.length !== expected.keys.length) {
      throw new Error(`${reply.dealing.length} keys dealt for ${expected.keys.length}`);
    }
    reply.dealing.forEach((d, i) => {
      const k = expected.keys[i]!;
      if (d.tenant !== k.tenant || d.version !== k.version) {
        throw new Error(`entry ${i} is ${d.tenant} v${d.version}, not ${k.tenant} v${k.version}`);
      }
      if (d.commitments.length !== expected.threshold) {
        throw new Error(`${d.commitments.length} commitments for threshold ${expected.threshold}`);
      }
    });
    const to = reply.pieces.map((p) => p.to).sort((a, b) => a - b);
    if (reply.pieces.some((p) => p.from !== dealer)) throw new Error('a piece from another node');
    if (to.join() !== expected.receivers.join()) throw new Error(`pieces for ${to.join(', ')}`);
    return reply;
  });
}

export function checkPrepare(node: number, chunk: number, body: unknown): string {
  return checked(node, 'reshare.prepare reply', false, () => {
    const reply = parseMessage(resharePrepareReply, body, 'reshare.prepare reply');
    if (reply.node !== node) throw new Error(`claims to be node ${reply.node}`);
    if (reply.chunk !== chunk) throw new Error(`is for chunk ${reply.chunk}`);
    return reply.digest;
  });
}

/**
 * A vote: the transcript and the node's Ed25519 signature over "KMaaS-v1 reshare vote\0" ||
 * transcript (RFC 8032, strict), checked with the signing key the operators signed for it.
 */
export function checkVote(
  member: CommitteeMember,
  body: unknown,
): { transcript: string; signature: string } {
  const { node } = member;
  const reply = checked(node, 'reshare.vote reply', false, () =>
    parseMessage(reshareVoteReply, body, 'reshare.vote reply'),
  );
  if (reply.node !== node) {
    throw new KmaasError('ERR_RESHARE_VOTE', `node ${node} sent a vote as node ${reply.node}`, {
      nodes: [node],
    });
  }
  let ok = false;
  try {
    const message = new Uint8Array([...utf8Bytes(VOTE_DOMAIN), ...hexToBytes(reply.transcript)]);
    ok = ed25519.verify(
      fromB64(reply.signature, 'signature'),
      message,
      fromB64(member.signing, 'signing'),
      { zip215: false },
    );
  } catch {
    ok = false;
  }
  if (!ok) {
    throw new KmaasError('ERR_RESHARE_VOTE', `node ${node} sent a vote that does not verify`, {
      nodes: [node],
    });
  }
  return { transcript: reply.transcript, signature: reply.signature };
}

export function checkCommit(
  node: number,
  body: unknown,
): ReturnType<typeof reshareCommitReply.parse> {
  return checked(node, 'reshare.commit reply', false, () => {
    const reply = parseMessage(reshareCommitReply, body, 'reshare.commit reply');
    if (reply.node !== node) throw new Error(`claims to be node ${reply.node}`);
    return reply;
  });
}

export function checkFinish(node: number, body: unknown): number {
  return checked(node, 'reshare.finish reply', false, () => {
    const reply = parseMessage(reshareFinishReply, body, 'reshare.finish reply');
    if (reply.node !== node) throw new Error(`claims to be node ${reply.node}`);
    return reply.erased;
  });
}

export function checkAbort(node: number, body: unknown): boolean {
  return checked(node, 'reshare.abort reply', false, () => {
    const reply = parseMessage(reshareAbortReply, body, 'reshare.abort reply');
    if (reply.node !== node) throw new Error(`claims to be node ${reply.node}`);
    return reply.aborted;
  });
}

/** Split `keys` into the chunks every reshare message carries (RESHARE_CHUNK keys at most). */
export function chunked<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
