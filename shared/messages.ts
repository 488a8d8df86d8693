/**
 * Message schemas, one per message, for the coordinator <-> node WebSocket protocol and the
 * coordinator's HTTP API. Both sides validate with these at the boundary; `parseMessage` turns a
 * schema failure into ERR_VALIDATION naming the field.
 *
 * WebSocket protocol v1 (the coordinator connects to each node, authenticating the upgrade with
 * `Authorization: Bearer <cluster credential>`):
 *   coordinator -> node  { v: 1, id, type, body }
 *   node -> coordinator  { v: 1, id, ok: true, body } | { v: 1, id, ok: false, error }
 * `id` is the request id the reply echoes. Types: status, dkg.round1, dkg.round2, dkg.round3,
 * dkg.commit, proposal.apply, evaluate, keyPackage, and the reshare messages reshare.begin, .deal,
 * .prepare, .vote, .commit, .finish, .abort (nodes/reshare.ts has the flow). dkg.round1 and proposal.apply carry the
 * operator proposal (shared/proposal.ts) that every node checks itself before it acts. All byte
 * strings are unpadded base64url.
 */
import { z } from 'zod';
import { KmaasError, type ErrorBody } from './errors.ts';
import { keyPackageSchema } from './key-package.ts';
import { TENANT_PATTERN } from './document.ts';
import { proposalSchema } from './proposal.ts';

export const PROTOCOL_VERSION = 1;

/** Decoded (and so checked as base64url) where it is used, so that bad base64 has its own code. */
const b64 = z.string().max(4096);
const tenant = z.string().regex(TENANT_PATTERN, "1-63 characters of a-z, 0-9, '.', '_', '-'");
const version = z.number().int().min(1).max(0xffffffff);
const nodeId = z.number().int().min(1).max(0xffff);
const ceremonyId = z.string().regex(/^[A-Za-z0-9_-]{8,64}$/);

/**
 * Blinded elements. Batch bounds (ERR_EMPTY_BATCH, ERR_BATCH_TOO_LARGE) and element decoding get
 * their own codes where they are enforced; the body and frame size limits bound the array here.
 */
export const blindedBatch = z.array(b64);

// --- WebSocket requests (coordinator -> node) ---

export const statusRequest = z.object({}).strict();

/**
 * One committee member's identity public keys (nodes/identity.ts), as `status` and /healthz
 * publish them: Ed25519 `signing` (verifies its round-2 packages) and X25519 `encryption`
 * (receives them).
 */
export const committeeMember = z.object({ node: nodeId, signing: b64, encryption: b64 }).strict();

export const dkgRound1Request = z
  .object({
    ceremonyId,
    tenant,
    version,
    threshold: z.number().int().min(2),
    participants: z.array(nodeId).min(2).max(64),
    /**
     * One entry per participant. It must equal `proposal.committee` entry for entry (node,
     * signing, encryption): the keys that seal round 2 are the ones the operators signed, never
     * the coordinator's (ERR_PROPOSAL_MISMATCH otherwise).
     */
    committee: z.array(committeeMember).min(2).max(64),
    /** The signed tenant.create or key.rotate proposal this ceremony carries out. */
    proposal: proposalSchema,
  })
  .strict();

export const dkgRound1Package = z
  .object({ node: nodeId, commitment: z.array(b64).min(1).max(64), proofOfKnowledge: b64 })
  .strict();

export const dkgRound2Request = z
  .object({ ceremonyId, round1: z.array(dkgRound1Package).min(1).max(64) })
  .strict();

/**
 * One round-2 package: the sender's polynomial evaluated at the recipient, sealed to the
 * recipient's X25519 identity key and signed by the sender (nodes/round2-envelope.ts). Nothing
 * in it is readable by the coordinator.
 */
export const dkgRound2Package = z
  .object({ from: nodeId, to: nodeId, ephemeral: b64, ciphertext: b64, signature: b64 })
  .strict();

export const dkgRound3Request = z
  .object({ ceremonyId, round2: z.array(dkgRound2Package).min(1).max(64) })
  .strict();

/** Every participant returned the same key package: the node may erase the ceremony's state. */
export const dkgCommitRequest = z.object({ ceremonyId }).strict();

/** A proposal that acts without a ceremony: key.retire. */
export const proposalApplyRequest = z.object({ proposal: proposalSchema }).strict();

/**
 * `auth` is the end user's credential, passed through untouched so that every node checks it
 * itself (DESIGN.md section 4): the OIDC access token and the DPoP proof (RFC 9449) the client
 * sent. Each may be absent so that the node can answer ERR_TOKEN_MISSING or ERR_DPOP_MISSING.
 */
export const evaluateAuth = z
  .object({ token: z.string().max(8192).optional(), dpop: z.string().max(8192).optional() })
  .strict();

const epoch = z.number().int().min(1).max(0xffffffff);

/**
 * `epoch`: the committee epoch whose share must answer (the coordinator's key package's); absent
 * means the node's current one. A node without that epoch's share answers ERR_EPOCH_MISMATCH.
 */
export const evaluateRequest = z
  .object({ tenant, version, epoch: epoch.optional(), blinded: blindedBatch, auth: evaluateAuth })
  .strict();

export const keyPackageRequest = z.object({ tenant, version }).strict();

// --- Resharing (DESIGN.md section 3; nodes/reshare*.ts, coordinator/reshare-*.ts) ---

/** Keys travel in chunks of at most this many, so that every message stays far below 1 MiB. */
export const RESHARE_CHUNK = 64;
/** The most keys one committee may hold (every one is reshared). */
export const MAX_RESHARE_KEYS = 20_000;

const reshareId = z.string().regex(/^r[A-Za-z0-9_-]{31}$/);
const keyRef = z.object({ tenant, version }).strict();
const dealers = z.array(nodeId).min(1).max(64);
const chunk = z
  .number()
  .int()
  .min(0)
  .max(Math.ceil(MAX_RESHARE_KEYS / RESHARE_CHUNK));
const hex32 = z.string().regex(/^[0-9a-f]{64}$/);

/** Every non-retired key of the old epoch, sorted by tenant then version. */
export const reshareBeginRequest = z
  .object({
    reshareId,
    proposal: proposalSchema,
    /** committee.refresh only: the period this refresh belongs to. */
    period: z.number().int().min(0).optional(),
    keys: z.array(keyRef).max(MAX_RESHARE_KEYS),
  })
  .strict();

export const reshareBeginReply = z.object({
  node: nodeId,
  /** The node's committed epoch before this reshare; 0 when it has none. */
  epoch: z.number().int().min(0),
  /** An old member holding every listed key at the old epoch: it can deal. */
  dealer: z.boolean(),
  /** A member of the new committee. */
  receiver: z.boolean(),
});

export const reshareDealRequest = z
  .object({ reshareId, dealers, chunk, keys: z.array(keyRef).min(1).max(RESHARE_CHUNK) })
  .strict();

/** One key of a dealing: the digest of the old key package the dealer holds, and C_i0..C_i(t'-1). */
export const reshareDealt = z
  .object({ tenant, version, oldPackage: hex32, commitments: z.array(b64).min(1).max(64) })
  .strict();

/** The chunk's pieces g_i(x_to), one 32-byte scalar per key, sealed to `to` and signed. */
export const resharePiece = z
  .object({ from: nodeId, to: nodeId, ephemeral: b64, ciphertext: b64, signature: b64 })
  .strict();

export const reshareDealReply = z.object({
  dealer: nodeId,
  chunk,
  dealing: z.array(reshareDealt).min(1).max(RESHARE_CHUNK),
  pieces: z.array(resharePiece).max(64),
  /** The dealer's Ed25519 signature over the dealing (nodes/reshare-transcript.ts). */
  signature: b64,
});

export const reshareDealingForReceiver = z
  .object({
    dealer: nodeId,
    dealing: z.array(reshareDealt).min(1).max(RESHARE_CHUNK),
    piece: resharePiece,
    signature: b64,
  })
  .strict();

export const resharePrepareRequest = z
  .object({
    reshareId,
    dealers,
    chunk,
    keys: z.array(keyRef).min(1).max(RESHARE_CHUNK),
    oldPackages: z.array(keyPackageSchema).min(1).max(RESHARE_CHUNK),
    dealings: z.array(reshareDealingForReceiver).min(1).max(64),
  })
  .strict();

export const resharePrepareReply = z.object({ node: nodeId, chunk, digest: hex32 });

export const reshareVoteRequest = z
  .object({
    reshareId,
    dealers,
    chunks: z
      .number()
      .int()
      .min(0)
      .max(chunk.maxValue ?? 0),
  })
  .strict();

export const reshareVote = z.object({ node: nodeId, signature: b64 }).strict();

export const reshareVoteReply = z.object({ node: nodeId, transcript: hex32, signature: b64 });

/**
 * `proposal`: the committee.reshare the commit belongs to, sent by the coordinator's catch-up to
 * a node that never began that reshare (it was down throughout): with it the node can check the
 * votes and learn that it was removed (nodes/reshare-catchup.ts).
 */
export const reshareCommitRequest = z
  .object({
    reshareId,
    transcript: hex32,
    votes: z.array(reshareVote).min(1).max(64),
    proposal: proposalSchema.optional(),
  })
  .strict();

export const reshareCommitReply = z.object({
  node: nodeId,
  epoch,
  role: z.enum(['member', 'removed']),
});

export const reshareFinishRequest = z.object({ reshareId }).strict();
export const reshareFinishReply = z.object({ node: nodeId, erased: z.number().int().min(0) });

export const reshareAbortRequest = z.object({ reshareId }).strict();
export const reshareAbortReply = z.object({ node: nodeId, aborted: z.boolean() });

export const nodeRequestBodies = {
  status: statusRequest,
  'dkg.round1': dkgRound1Request,
  'dkg.round2': dkgRound2Request,
  'dkg.round3': dkgRound3Request,
  'dkg.commit': dkgCommitRequest,
  'proposal.apply': proposalApplyRequest,
  evaluate: evaluateRequest,
  keyPackage: keyPackageRequest,
  'reshare.begin': reshareBeginRequest,
  'reshare.deal': reshareDealRequest,
  'reshare.prepare': resharePrepareRequest,
  'reshare.vote': reshareVoteRequest,
  'reshare.commit': reshareCommitRequest,
  'reshare.finish': reshareFinishRequest,
  'reshare.abort': reshareAbortRequest,
} as const;

export type NodeRequestType = keyof typeof nodeRequestBodies;

export const nodeRequestEnvelope = z.object({
  v: z.number().int(),
  id: z.string().min(1).max(128),
  type: z.string().min(1).max(64),
  body: z.unknown(),
});

// --- WebSocket replies (node -> coordinator) ---

/** A node's committed epoch as it reports it. */
export const epochSummary = z.object({
  epoch,
  threshold: z.number().int(),
  members: z.array(nodeId),
});

export const statusReply = z.object({
  node: nodeId,
  keys: z.array(z.object({ tenant, version, groupKey: b64, epoch: epoch.optional() })),
  /** The node's committed epoch; null before its first ceremony. Optional for older nodes. */
  epoch: epochSummary.nullable().optional(),
  /** The reshare open on the node, if any. */
  reshare: z.object({ id: z.string(), state: z.string() }).nullable().optional(),
  /** The node's identity public keys (Ed25519, X25519); optional for older nodes. */
  identity: z.object({ signing: b64, encryption: b64 }).optional(),
  /** The cluster id the node checks proposals against; optional for older nodes. */
  cluster: z.string().optional(),
});

export const dkgRound1Reply = dkgRound1Package;

export const dkgRound2Reply = z.object({ packages: z.array(dkgRound2Package) });

export const dkgRound3Reply = z.object({ keyPackage: keyPackageSchema });

export const proposalApplyReply = z.object({
  node: nodeId,
  proposal: z.string(),
  operation: z.literal('key.retire'),
  tenant,
  version,
});

/** `erased` is false when the state was already gone (a repeated commit). */
export const dkgCommitReply = z.object({ ceremonyId, erased: z.boolean() });

export const keyPackageReply = z.object({ keyPackage: keyPackageSchema });

/** `epoch`: whose share answered; optional for older nodes (epoch 1). */
export const evaluateReply = z.object({
  node: nodeId,
  epoch: epoch.optional(),
  evaluated: z.array(b64),
  proof: b64,
});

export const errorBodySchema = z.object({
  code: z.string(),
  message: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
});

export const nodeReplyEnvelope = z.union([
  z.object({ v: z.number().int(), id: z.string(), ok: z.literal(true), body: z.unknown() }),
  z.object({ v: z.number().int(), id: z.string(), ok: z.literal(false), error: errorBodySchema }),
]);

export interface NodeRequest {
  v: number;
  id: string;
  type: NodeRequestType;
  body: unknown;
}

export type NodeReply =
  | { v: number; id: string; ok: true; body: unknown }
  | { v: number; id: string; ok: false; error: ErrorBody };

// --- HTTP API (client/operator -> coordinator) ---

/**
 * The client's evaluate body. `epoch`, the epoch of the client's key package, is a hint outside
 * the DPoP binding: a coordinator whose cached package is older reloads it (KeyCache.getAtLeast).
 */
export const evaluateBody = z.object({ blinded: blindedBatch, epoch: epoch.optional() }).strict();

/** Partial evaluations as the coordinator returns them to the client, who verifies each one. */
export const evaluateResponse = z.object({
  tenant,
  version,
  /** The epoch of every partial: the client checks them against that epoch's key package. */
  epoch: epoch.optional(),
  threshold: z.number().int(),
  partials: z.array(evaluateReply),
});

export type EvaluateResponse = z.infer<typeof evaluateResponse>;

/** Validate `input` against `schema`; failures become ERR_VALIDATION naming the first bad field. */
export function parseMessage<T extends z.ZodType>(
  schema: T,
  input: unknown,
  what: string,
): z.infer<T> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = issue?.path.length ? issue.path.join('.') : what;
  throw new KmaasError('ERR_VALIDATION', `${what}: ${field}: ${issue?.message ?? 'invalid'}`, {
    field,
  });
}

/** JSON.parse with a coded error instead of a SyntaxError. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new KmaasError('ERR_MALFORMED_JSON', 'body is not valid JSON');
  }
}
