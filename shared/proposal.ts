/**
 * Operator proposals (DESIGN.md section 3): every lifecycle change of a tenant key is a document
 * that names the operation, its parameters and the committee, carries a nonce and an expiry, and
 * is signed by a quorum of operator Ed25519 keys (RFC 8032). Each node checks it against the
 * operator keys in its own configuration before it takes part; the coordinator only carries it.
 *
 *   operator  kmaas proposal create -> p.json        (committee from the coordinator's status)
 *   operators kmaas proposal sign p.json --key k     (each adds { operator, signature })
 *   operator  kmaas proposal submit p.json           -> coordinator -> every committee node
 *   node      verifyQuorum + its own checks (nodes/proposals.ts), then acts or refuses
 *
 * Signed bytes: the domain label, then the RFC 8785 canonical JSON of the proposal without
 * `signatures`. The proposal id is the hex SHA-256 of the same bytes, so adding signatures never
 * changes it. Operations:
 *
 *   tenant.create  version 1 of a new tenant, by DKG among the committee (threshold required)
 *   key.rotate     version v+1 of an existing tenant, by DKG; older versions keep serving
 *   key.retire     version v stops serving for good; each node erases its share
 *   committee.reshare  the committee moves from epoch `previous` (committee, threshold) to epoch
 *                  `epoch` (committee, threshold): add or remove nodes, change the threshold,
 *                  refresh every share, or repair a node that lost its data; no key changes
 *   committee.refresh  a standing authorisation of a proactive refresh (same committee and
 *                  threshold, new shares) at most once every `everySeconds`
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, randomBytes } from '@noble/hashes/utils.js';
import { z } from 'zod';
import { canonicalJson } from './canonical-json.ts';
import { TENANT_PATTERN } from './document.ts';
import { concat, fromB64, toB64, utf8Bytes } from './encoding.ts';
import { KmaasError } from './errors.ts';

export const PROPOSAL_FORMAT = 'kmaas-proposal/1';
/** Domain separation: these bytes are never confused with anything else an operator signs. */
export const PROPOSAL_DOMAIN = 'KMaaS-v1 operator proposal\0';
export const OPERATIONS = [
  'tenant.create',
  'key.rotate',
  'key.retire',
  'committee.reshare',
  'committee.refresh',
] as const;
/** Operations on one tenant key; the others act on the committee and every key it holds. */
export const KEY_OPERATIONS = ['tenant.create', 'key.rotate', 'key.retire'] as const;
export const RESHARE_REASONS = ['add', 'remove', 'threshold', 'refresh', 'repair'] as const;
/** The shortest period a standing refresh may ask for. */
export const MIN_REFRESH_SECONDS = 60;
export type Operation = (typeof OPERATIONS)[number];
/** A proposal may live at most this long; nodes keep its nonce until it expires. */
export const MAX_LIFETIME_MS = 30 * 24 * 3600 * 1000;
export const NONCE_BYTES = 16;
const KEY_BYTES = 32;
const SIGNATURE_BYTES = 64;

const b64url = (length: number) =>
  z
    .string()
    .length(Math.ceil((length * 4) / 3))
    .regex(/^[A-Za-z0-9_-]+$/, `expected ${length} bytes of unpadded base64url`);

export const CLUSTER_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const OPERATOR_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

export const committeeMember = z
  .object({
    node: z.number().int().min(1).max(0xffff),
    signing: b64url(KEY_BYTES),
    encryption: b64url(KEY_BYTES),
  })
  .strict();

export const proposalSignature = z
  .object({
    operator: z.string().regex(OPERATOR_ID_PATTERN, 'expected an operator id'),
    signature: b64url(SIGNATURE_BYTES),
  })
  .strict();

export const proposalSchema = z
  .object({
    format: z.literal(PROPOSAL_FORMAT),
    cluster: z.string().regex(CLUSTER_ID_PATTERN, 'expected a cluster id'),
    operation: z.enum(OPERATIONS),
    tenant: z
      .string()
      .regex(TENANT_PATTERN, "1-63 characters of a-z, 0-9, '.', '_', '-'")
      .optional(),
    version: z.number().int().min(1).max(0xffffffff).optional(),
    // The threshold policy (2 <= t <= n, t > n/2) is ERR_BAD_THRESHOLD where it is enforced.
    threshold: z.number().int().min(-64).max(64).optional(),
    committee: z.array(committeeMember).min(1).max(64).optional(),
    /** The epoch the operation acts in (key operations) or makes (committee.reshare). */
    epoch: z.number().int().min(1).max(0xffffffff).optional(),
    /** committee.reshare: the epoch it moves from, as the operators know it. */
    previous: z
      .object({
        epoch: z.number().int().min(1).max(0xffffffff),
        threshold: z.number().int().min(-64).max(64),
        committee: z.array(committeeMember).min(1).max(64),
      })
      .strict()
      .optional(),
    reason: z.enum(RESHARE_REASONS).optional(),
    /** committee.refresh: the period of the proactive refresh it allows. */
    everySeconds: z
      .number()
      .int()
      .min(MIN_REFRESH_SECONDS)
      .max(365 * 86_400)
      .optional(),
    nonce: b64url(NONCE_BYTES),
    expiresAt: z.iso.datetime({ offset: true }),
    signatures: z.array(proposalSignature).max(64),
  })
  .strict();

export type Proposal = z.infer<typeof proposalSchema>;
/** A proposal of one tenant key (tenant.create, key.rotate, key.retire). */
export type KeyProposal = Proposal & { tenant: string; version: number };

export function isKeyProposal(p: Proposal): p is KeyProposal {
  return (
    (KEY_OPERATIONS as readonly string[]).includes(p.operation) &&
    p.tenant !== undefined &&
    p.version !== undefined
  );
}

/** `p` as a key proposal; ERR_PROPOSAL_INVALID when it acts on the committee instead. */
export function asKeyProposal(p: Proposal): KeyProposal {
  if (!isKeyProposal(p)) {
    throw new KmaasError(
      'ERR_PROPOSAL_INVALID',
      `proposal: ${p.operation} does not act on one tenant key`,
      { field: 'operation' },
    );
  }
  return p;
}
export type UnsignedProposal = Omit<Proposal, 'signatures'>;
export type CommitteeMember = z.infer<typeof committeeMember>;

export const operatorSetSchema = z
  .object({
    quorum: z.number().int().min(1),
    /** The lowest threshold the operators allow any committee (default 2). */
    minThreshold: z.number().int().min(2).max(64).optional(),
    operators: z
      .array(
        z
          .object({
            id: z.string().regex(OPERATOR_ID_PATTERN, 'expected an operator id'),
            publicKey: b64url(KEY_BYTES),
          })
          .strict(),
      )
      .min(1)
      .max(64),
  })
  .strict()
  .superRefine((set, ctx) => {
    if (set.quorum > set.operators.length) {
      ctx.addIssue({
        code: 'custom',
        path: ['quorum'],
        message: `quorum ${set.quorum} is more than the ${set.operators.length} operators`,
      });
    }
    const ids = set.operators.map((o) => o.id);
    const keys = set.operators.map((o) => o.publicKey);
    if (new Set(ids).size !== ids.length) {
      ctx.addIssue({ code: 'custom', path: ['operators'], message: 'operator ids repeat' });
    }
    if (new Set(keys).size !== keys.length) {
      ctx.addIssue({ code: 'custom', path: ['operators'], message: 'operator keys repeat' });
    }
  });

export type OperatorSet = z.infer<typeof operatorSetSchema>;

/** What a node checks a proposal against: its own configuration. */
export interface QuorumPolicy extends OperatorSet {
  clusterId: string;
}

function invalid(message: string, details: Record<string, unknown> = {}): KmaasError {
  return new KmaasError('ERR_PROPOSAL_INVALID', `proposal: ${message}`, details);
}

/**
 * What the schema cannot say: the parameters each operation needs, a committee of distinct nodes
 * and keys, and an expiry that parses. ERR_PROPOSAL_INVALID naming the field otherwise.
 */
export function checkProposalShape(p: UnsignedProposal): void {
  if (Number.isNaN(Date.parse(p.expiresAt))) {
    throw invalid('expiresAt: not a date', { field: 'expiresAt' });
  }
  if (!p.committee) throw invalid('committee: required', { field: 'committee' });
  checkCommitteeShape(p.committee, 'committee');
  if (p.operation === 'committee.reshare' || p.operation === 'committee.refresh') {
    checkCommitteeOperation(p);
    return;
  }
  for (const field of ['previous', 'reason', 'everySeconds'] as const) {
    if (p[field] !== undefined) {
      throw invalid(`${field}: ${p.operation} takes none`, { field });
    }
  }
  if (p.tenant === undefined)
    throw invalid(`tenant: ${p.operation} needs one`, { field: 'tenant' });
  if (p.version === undefined) {
    throw invalid(`version: ${p.operation} needs one`, { field: 'version' });
  }
  if (p.operation === 'key.retire') {
    if (p.threshold !== undefined) {
      throw invalid('threshold: key.retire takes none', { field: 'threshold' });
    }
    return;
  }
  if (p.threshold === undefined) {
    throw invalid(`threshold: ${p.operation} needs one`, { field: 'threshold' });
  }
  if (p.operation === 'tenant.create' && p.version !== 1) {
    throw invalid(`version: tenant.create makes version 1, not ${p.version}`, {
      field: 'version',
    });
  }
  if (p.operation === 'key.rotate' && p.version < 2) {
    throw invalid('version: key.rotate makes version 2 or later', { field: 'version' });
  }
}

function checkCommitteeShape(committee: readonly CommitteeMember[], field: string): void {
  const nodes = committee.map((m) => m.node);
  if (new Set(nodes).size !== nodes.length) {
    throw invalid(`${field}: a node appears twice`, { field });
  }
  const keys = committee.flatMap((m) => [m.signing, m.encryption]);
  if (new Set(keys).size !== keys.length) {
    throw invalid(`${field}: two members share a key`, { field });
  }
}

/**
 * committee.reshare needs the new epoch, threshold and committee and the previous ones, the new
 * epoch right after the previous; committee.refresh needs a threshold and a period and names no
 * epoch (each refresh moves from whatever epoch the committee is in). Neither names a key.
 */
function checkCommitteeOperation(p: UnsignedProposal): void {
  for (const field of ['tenant', 'version'] as const) {
    if (p[field] !== undefined) throw invalid(`${field}: ${p.operation} takes none`, { field });
  }
  if (p.threshold === undefined) {
    throw invalid(`threshold: ${p.operation} needs one`, { field: 'threshold' });
  }
  if (p.operation === 'committee.refresh') {
    if (p.everySeconds === undefined) {
      throw invalid('everySeconds: committee.refresh needs one', { field: 'everySeconds' });
    }
    for (const field of ['epoch', 'previous', 'reason'] as const) {
      if (p[field] !== undefined) {
        throw invalid(`${field}: committee.refresh takes none`, { field });
      }
    }
    return;
  }
  if (p.everySeconds !== undefined) {
    throw invalid('everySeconds: committee.reshare takes none', { field: 'everySeconds' });
  }
  if (!p.previous) throw invalid('previous: committee.reshare needs one', { field: 'previous' });
  if (p.epoch === undefined) {
    throw invalid('epoch: committee.reshare needs the new epoch', { field: 'epoch' });
  }
  if (p.epoch !== p.previous.epoch + 1) {
    throw invalid(
      `epoch: a reshare from epoch ${p.previous.epoch} makes epoch ${p.previous.epoch + 1}, not ${p.epoch}`,
      { field: 'epoch' },
    );
  }
  checkCommitteeShape(p.previous.committee, 'previous.committee');
}

/** Parse and check a proposal from JSON; ERR_PROPOSAL_INVALID naming the first bad field. */
export function parseProposal(input: unknown): Proposal {
  const r = proposalSchema.safeParse(input);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = issue?.path.length ? issue.path.join('.') : 'proposal';
    throw invalid(`${field}: ${issue?.message ?? 'invalid'}`, { field });
  }
  checkProposalShape(r.data);
  return r.data;
}

function unsigned(p: UnsignedProposal | Proposal): UnsignedProposal {
  const rest: Record<string, unknown> = { ...p };
  delete rest.signatures;
  return rest as UnsignedProposal;
}

/** The bytes every operator signs: domain label || RFC 8785 JSON of all but `signatures`. */
export function signingBytes(p: UnsignedProposal | Proposal): Uint8Array {
  return concat(utf8Bytes(PROPOSAL_DOMAIN), utf8Bytes(canonicalJson(unsigned(p))));
}

/** Hex SHA-256 of the signing bytes: the same for every signed copy of one proposal. */
export function proposalId(p: UnsignedProposal | Proposal): string {
  return bytesToHex(sha256(signingBytes(p)));
}

/** A fresh nonce; `random` is a parameter so tests can fix it. */
export function newNonce(random: (n: number) => Uint8Array = randomBytes): string {
  return toB64(random(NONCE_BYTES).slice(0, NONCE_BYTES));
}

/**
 * `p` with the signature of `operator` over its signing bytes (RFC 8032 section 5.1.6) added;
 * a signature of the same operator already there is replaced.
 */
export function signProposal(p: Proposal, operator: string, secretKey: Uint8Array): Proposal {
  if (!OPERATOR_ID_PATTERN.test(operator)) throw invalid('operator id is not allowed');
  const signature = toB64(ed25519.sign(signingBytes(p), secretKey));
  return {
    ...p,
    signatures: [...p.signatures.filter((s) => s.operator !== operator), { operator, signature }],
  };
}

export interface SignatureCheck {
  /** Known operators whose signature verifies, each once, sorted. */
  valid: string[];
  /** Known operators with a signature that does not verify (an edit after signing, or forged). */
  invalid: string[];
  /** Signatures by operators this policy does not know; they count for nothing. */
  unknown: string[];
}

/** Who signed `p` validly, by the operators of `set`; a repeated operator counts once. */
export function checkSignatures(p: Proposal, set: OperatorSet): SignatureCheck {
  const bytes = signingBytes(p);
  const keys = new Map(set.operators.map((o) => [o.id, o.publicKey]));
  const valid = new Set<string>();
  const bad = new Set<string>();
  const unknown = new Set<string>();
  for (const s of p.signatures) {
    const key = keys.get(s.operator);
    if (key === undefined) {
      unknown.add(s.operator);
      continue;
    }
    let ok = false;
    try {
      // zip215: false is RFC 8032's strict verification (canonical encodings only).
      ok = ed25519.verify(fromB64(s.signature, 'signature'), bytes, fromB64(key, 'publicKey'), {
        zip215: false,
      });
    } catch {
      ok = false;
    }
    (ok ? valid : bad).add(s.operator);
  }
  for (const id of valid) bad.delete(id);
  const sorted = (s: Set<string>) => [...s].sort();
  return { valid: sorted(valid), invalid: sorted(bad), unknown: sorted(unknown) };
}

export interface VerifiedProposal {
  id: string;
  signers: string[];
}

/**
 * The checks every node makes before anything else, cheapest first: cluster id
 * (ERR_PROPOSAL_CLUSTER), expiry and lifetime (ERR_PROPOSAL_EXPIRED, ERR_PROPOSAL_INVALID), then a
 * quorum of distinct known operators whose signatures verify (ERR_PROPOSAL_QUORUM, naming who
 * signed validly, who did not, and which signers are unknown). `now` is ms since the epoch.
 * `acceptExpired` skips the expiry check, for a proposal that already acted and is only shown as
 * proof of it (a reshare's catch-up, nodes/reshare-catchup.ts): never for one about to act.
 */
export function verifyQuorum(
  p: Proposal,
  policy: QuorumPolicy,
  now: number,
  opts: { acceptExpired?: boolean } = {},
): VerifiedProposal {
  checkProposalShape(p);
  const id = proposalId(p);
  if (p.cluster !== policy.clusterId) {
    throw new KmaasError(
      'ERR_PROPOSAL_CLUSTER',
      `proposal ${id.slice(0, 12)} is for cluster ${p.cluster}, not ${policy.clusterId}`,
      { proposal: id, cluster: p.cluster, expected: policy.clusterId },
    );
  }
  const expires = Date.parse(p.expiresAt);
  if (now >= expires && !opts.acceptExpired) {
    throw new KmaasError(
      'ERR_PROPOSAL_EXPIRED',
      `proposal ${id.slice(0, 12)} expired at ${p.expiresAt}`,
      { proposal: id, expiresAt: p.expiresAt },
    );
  }
  if (expires - now > MAX_LIFETIME_MS) {
    throw invalid(`expiresAt: more than ${MAX_LIFETIME_MS / 86_400_000} days ahead`, {
      field: 'expiresAt',
      proposal: id,
    });
  }
  const check = checkSignatures(p, policy);
  if (check.valid.length < policy.quorum) {
    throw new KmaasError(
      'ERR_PROPOSAL_QUORUM',
      `proposal ${id.slice(0, 12)} has ${check.valid.length} valid operator signature(s), ` +
        `${policy.quorum} required`,
      { proposal: id, required: policy.quorum, ...check },
    );
  }
  return { id, signers: check.valid };
}

/** A new unsigned proposal's fields, for the CLI and tests. */
export interface ProposalDraft {
  cluster: string;
  operation: Operation;
  tenant?: string;
  version?: number;
  threshold?: number;
  committee: CommitteeMember[];
  epoch?: number;
  previous?: { epoch: number; threshold: number; committee: CommitteeMember[] };
  reason?: (typeof RESHARE_REASONS)[number];
  everySeconds?: number;
  expiresAt: Date;
  nonce?: string;
}

/** A proposal with no signatures yet, its committee sorted by node; checked like any other. */
export function draftProposal(d: ProposalDraft): Proposal {
  const p: Proposal = {
    format: PROPOSAL_FORMAT,
    cluster: d.cluster,
    operation: d.operation,
    ...(d.tenant === undefined ? {} : { tenant: d.tenant }),
    ...(d.version === undefined ? {} : { version: d.version }),
    ...(d.threshold === undefined ? {} : { threshold: d.threshold }),
    committee: [...d.committee].sort((a, b) => a.node - b.node),
    ...(d.epoch === undefined ? {} : { epoch: d.epoch }),
    ...(d.previous === undefined
      ? {}
      : {
          previous: {
            ...d.previous,
            committee: [...d.previous.committee].sort((a, b) => a.node - b.node),
          },
        }),
    ...(d.reason === undefined ? {} : { reason: d.reason }),
    ...(d.everySeconds === undefined ? {} : { everySeconds: d.everySeconds }),
    nonce: d.nonce ?? newNonce(),
    expiresAt: d.expiresAt.toISOString(),
    signatures: [],
  };
  return parseProposal(p);
}

/** An operator key file: { id, secretKey } (b64url Ed25519 secret key), and its public key. */
export const operatorKeyFileSchema = z
  .object({ id: z.string().regex(OPERATOR_ID_PATTERN), secretKey: b64url(KEY_BYTES) })
  .strict();

export function operatorPublicKey(secretKey: Uint8Array): string {
  return toB64(ed25519.getPublicKey(secretKey));
}

const RESHARE_DOMAIN = 'KMaaS-v1 reshare\0';

/**
 * The reshare a proposal starts: the same id on every node and every attempt, so that a retried
 * ceremony resumes. A standing committee.refresh gives one id per period.
 */
export function reshareIdOf(proposalIdHex: string, period?: number): string {
  const input = RESHARE_DOMAIN + proposalIdHex + (period === undefined ? '' : `\0${period}`);
  return `r${toB64(sha256(utf8Bytes(input))).slice(0, 31)}`;
}
