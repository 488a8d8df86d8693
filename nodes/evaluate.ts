/**
 * The hot path (DESIGN.md section 7): one node's part of a threshold VOPRF evaluation,
 * RFC 9497 section 3.3.2 BlindEvaluate in verifiable mode with this node's share as the key.
 *
 *   coordinator -> node  { tenant, version, epoch?, blinded: [B_i], auth }
 *   node -> coordinator  { node, epoch, evaluated: [Z_i = k_j*B_i], proof }   (one batched DLEQ proof)
 *
 * `epoch` picks the committee epoch whose share answers (keyring.ts: the current one when absent,
 * or a retiring one the node still holds after a reshare); the DLEQ proof is against that epoch's
 * verification share K_j, which the client finds in that epoch's key package.
 *
 * Checks, cheapest first where the order does not matter: the end user's access token and DPoP
 * proof (shared/evaluation-auth.ts; first, so that an unauthenticated caller learns nothing),
 * the node's rate limit for the token's subject, the key (in memory: no database on this path), the batch size, then each
 * element's encoding (RFC 9496 section 4.3.1 decode, RFC 9497 section 3.3 identity check).
 *
 * Test only: with the failpoint `evaluate.lie` set (KMAAS_FAILPOINTS) and the file LIE_FILE in
 * its data folder, the node evaluates with k_j + 1 instead of k_j, so that a chaos run has a
 * Byzantine node: its points are valid encodings and its proof is well-formed, but the proof
 * fails against K_j and the points are not k_j*B. A file rather than a signal, so that the lie
 * can be switched on and off at run time and survives a restart of the node, as the chaos
 * schedule expects.
 */
import type { z } from 'zod';
import { decodeElementB64, Fn, toB64 } from '../shared/encoding.ts';
import type { evaluateReply, evaluateRequest } from '../shared/messages.ts';
import { evaluateBatch } from '../shared/voprf-node.ts';
import { checkBatchSize, MAX_BATCH } from '../shared/suite.ts';
import type { LogFields, NodeContext } from './context.ts';

/** The file in a node's data folder that makes it lie, when the `evaluate.lie` failpoint is set. */
export const LIE_FILE = 'failpoint-evaluate.lie';

export async function handleEvaluate(
  ctx: NodeContext,
  body: z.infer<typeof evaluateRequest>,
  log: LogFields,
): Promise<z.infer<typeof evaluateReply>> {
  log.tenant = body.tenant;
  log.version = body.version;
  log.batch = body.blinded.length;
  // Before anything else, so that an unauthenticated caller learns nothing (not even which
  // tenants exist). DESIGN.md section 4: each node decides this on its own.
  // The token must be for this tenant, and the proof must cover these very blinded elements, so
  // that a coordinator can neither replay a user's request nor swap in elements of its own.
  const { subject } = await ctx.auth.verify(body.auth, body);
  log.subject = subject;
  // DESIGN.md section 4: this node's own limit per (tenant, subject), charged in elements once
  // the credential is known good and the batch well-sized, before the key is looked up or any
  // point decoded; an empty or oversized batch is refused below and costs nothing.
  const count = body.blinded.length;
  if (ctx.rateLimit && count >= 1 && count <= MAX_BATCH) {
    const refusal = await ctx.rateLimit.take(body.tenant, subject, count).catch(() => {
      // The in-memory limiter does not fail in practice; if it does, serve rather than refuse all.
      log.rateLimit = 'failed; let through';
      return undefined;
    });
    if (refusal) throw refusal;
  }
  const key = ctx.keyring.get(body.tenant, body.version, body.epoch);
  log.epoch = key.epoch;
  checkBatchSize(count);
  const blinded = body.blinded.map((b, i) => decodeElementB64(b, `blinded[${i}]`));
  const lying = ctx.lying?.() ?? false;
  if (lying) log.failpoint = 'evaluate.lie';
  const { evaluated, proof } = evaluateBatch(
    lying ? Fn.add(key.share.reveal(), 1n) : key.share.reveal(),
    key.verificationShare,
    blinded,
    ctx.rng,
  );
  return {
    node: ctx.nodeId,
    epoch: key.epoch,
    evaluated: evaluated.map((e) => toB64(e)),
    proof: toB64(proof),
  };
}
