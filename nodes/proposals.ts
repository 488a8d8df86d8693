/**
 * The node's check of operator proposals (shared/proposal.ts, DESIGN.md section 3), made before
 * the node does anything a proposal asks for:
 *
 *   1. cluster id, expiry, a quorum of distinct operators of this node's own configuration
 *      whose signatures verify (verifyQuorum)
 *   2. the committee names this node with this node's own identity public keys
 *   3. the request matches the proposal: operation, tenant, version, threshold, participants,
 *      and for dkg.round1 the committee, entry for entry (node, signing, encryption): round 2 is
 *      sealed to those keys, so they must be the operators' and not the coordinator's
 *   4. the nonce is unused, or used by this very proposal for this very ceremony (a replayed
 *      round of the same ceremony stays idempotent); anything else is ERR_PROPOSAL_REPLAYED
 *   5. for a DKG, the committee epoch (DESIGN.md section 3): a node with a committed epoch makes
 *      keys only with that epoch's committee (node ids and identity keys) and threshold, and a
 *      proposal that names an epoch must name that one. A node with no epoch yet adopts the
 *      first accepted DKG proposal's committee and threshold as epoch 1 (dkg.ts).
 *
 * dkg.round1 carries the proposal of a tenant.create or key.rotate; `proposal.apply` carries a
 * key.retire, which erases this node's share of that version for good.
 */
import type { z } from 'zod';
import { KmaasError } from '../shared/errors.ts';
import type { dkgRound1Request, proposalApplyRequest } from '../shared/messages.ts';
import {
  asKeyProposal,
  verifyQuorum,
  type CommitteeMember,
  type Proposal,
  type VerifiedProposal,
} from '../shared/proposal.ts';
import type { LogFields, NodeContext } from './context.ts';
import type { EpochRecord, ProposalUse } from './store.ts';

function mismatch(id: string, message: string, details: Record<string, unknown> = {}) {
  return new KmaasError('ERR_PROPOSAL_MISMATCH', `proposal ${id.slice(0, 12)}: ${message}`, {
    proposal: id,
    ...details,
  });
}

/** Steps 1 and 2: the proposal is lawful, and it is addressed to this very node. */
export function admitProposal(ctx: NodeContext, p: Proposal, log: LogFields): VerifiedProposal {
  log.operation = p.operation;
  const verified = verifyQuorum(p, ctx.policy, (ctx.now ?? Date.now)());
  log.proposal = verified.id;
  const own = p.committee?.find((m) => m.node === ctx.nodeId);
  if (!own) throw mismatch(verified.id, `node ${ctx.nodeId} is not in the committee`);
  const identity = ctx.identity?.published();
  if (!identity || own.signing !== identity.signing || own.encryption !== identity.encryption) {
    throw mismatch(
      verified.id,
      `the committee entry of node ${ctx.nodeId} does not carry this node's identity keys`,
      { node: ctx.nodeId },
    );
  }
  log.signers = verified.signers.join(',');
  return verified;
}

/** Where this node stands in a committee.reshare or committee.refresh proposal. */
export interface ReshareAdmission extends VerifiedProposal {
  /** In the previous committee with this node's own identity keys: it may deal. */
  oldMember: boolean;
  /** In the new committee (with this node's own keys, or the proposal is refused). */
  newMember: boolean;
}

/**
 * Steps 1 and 2 for a committee operation: the node must be in the new committee or in the
 * previous one (`previous`, the proposal's or, for a refresh, the node's own epoch) with its own
 * identity keys. In the new committee with other keys it is refused outright (pieces sealed to
 * those keys are not its); in the previous committee with other keys (a repaired node whose data
 * and identity were lost) it is simply not an old member.
 */
export function admitReshareProposal(
  ctx: NodeContext,
  p: Proposal,
  previous: readonly CommitteeMember[],
  log: LogFields,
): ReshareAdmission {
  log.operation = p.operation;
  const verified = verifyQuorum(p, ctx.policy, (ctx.now ?? Date.now)());
  log.proposal = verified.id;
  const identity = ctx.identity?.published();
  const mine = (m: CommitteeMember | undefined) =>
    !!m && !!identity && m.signing === identity.signing && m.encryption === identity.encryption;
  const inNew = p.committee?.find((m) => m.node === ctx.nodeId);
  if (inNew && !mine(inNew)) {
    throw mismatch(
      verified.id,
      `the committee entry of node ${ctx.nodeId} does not carry this node's identity keys`,
      { node: ctx.nodeId },
    );
  }
  const oldMember = mine(previous.find((m) => m.node === ctx.nodeId));
  if (!inNew && !oldMember) {
    throw mismatch(verified.id, `node ${ctx.nodeId} is in neither the new nor the old committee`);
  }
  log.signers = verified.signers.join(',');
  return { ...verified, oldMember, newMember: !!inNew };
}

export function useOf(p: Proposal, id: string, ceremonyId: string): ProposalUse {
  return { nonce: p.nonce, proposalId: id, ceremonyId, expiresAt: Date.parse(p.expiresAt) };
}

/**
 * Step 4: ERR_PROPOSAL_REPLAYED unless the nonce is fresh, or (`sameIsReplay` false) used by
 * exactly this proposal for exactly this ceremony.
 */
export function checkNonce(ctx: NodeContext, use: ProposalUse, sameIsReplay = false): void {
  const seen = ctx.store.proposalUse(use.nonce);
  if (!seen) return;
  const same = seen.proposalId === use.proposalId && seen.ceremonyId === use.ceremonyId;
  if (same && !sameIsReplay) return;
  const where = seen.ceremonyId === '' ? 'was applied' : `started ceremony ${seen.ceremonyId}`;
  throw new KmaasError(
    'ERR_PROPOSAL_REPLAYED',
    `proposal ${use.proposalId.slice(0, 12)}: its nonce already ${where}; a proposal acts once`,
    { proposal: use.proposalId, ceremonyId: use.ceremonyId },
  );
}

/**
 * Everything dkg.round1 must pass before the ceremony exists on this node. Returns the use to
 * record once the ceremony starts.
 */
export function checkDkgProposal(
  ctx: NodeContext,
  body: z.infer<typeof dkgRound1Request>,
  log: LogFields,
): ProposalUse {
  const p = body.proposal;
  const { id } = admitProposal(ctx, p, log);
  if (p.operation !== 'tenant.create' && p.operation !== 'key.rotate') {
    throw mismatch(id, `${p.operation} is not made by a DKG`, { field: 'operation' });
  }
  for (const field of ['tenant', 'version', 'threshold'] as const) {
    if (body[field] !== p[field]) {
      throw mismatch(
        id,
        `${field} is ${String(body[field])}, the proposal says ${String(p[field])}`,
        {
          field,
        },
      );
    }
  }
  const committee = (p.committee ?? []).map((m) => m.node).sort((a, b) => a - b);
  const participants = [...body.participants].sort((a, b) => a - b);
  if (committee.join(',') !== participants.join(',')) {
    throw mismatch(
      id,
      `participants ${participants.join(', ')} are not the committee ${committee.join(', ')}`,
      { field: 'participants' },
    );
  }
  checkCommittee(id, body.committee, p.committee ?? []);
  const use = useOf(p, id, body.ceremonyId);
  checkNonce(ctx, use);
  return use;
}

function memberKey(m: CommitteeMember): string {
  return `${m.node}:${m.signing}:${m.encryption}`;
}

/**
 * The committee dkg.round1 carries must be the proposal's, entry for entry: its keys seal and
 * verify round 2, and only the operators vouch for them. A coordinator that swapped node B's
 * encryption key for its own could otherwise read what this node sends B.
 */
function checkCommittee(
  id: string,
  given: readonly CommitteeMember[],
  signed: readonly CommitteeMember[],
): void {
  const want = new Map(signed.map((m) => [m.node, memberKey(m)]));
  const nodes = new Set(given.map((m) => m.node));
  const differ = given.filter((m) => want.get(m.node) !== memberKey(m)).map((m) => m.node);
  const missing = [...want.keys()].filter((node) => !nodes.has(node));
  if (differ.length > 0 || missing.length > 0 || given.length !== signed.length) {
    const nodesAt = [...new Set([...differ, ...missing])].sort((a, b) => a - b);
    throw mismatch(
      id,
      `committee: the round-1 committee is not the proposal's (node(s) ${nodesAt.join(', ')})`,
      { field: 'committee', nodes: nodesAt },
    );
  }
}

/**
 * Step 5: the DKG's committee (canonical entries, sorted by node, as checkParams returns them) and
 * threshold against this node's committed epoch. Without one, only a proposal epoch other than 1
 * is refused: the ceremony then founds epoch 1. Returns the current epoch record, if any.
 */
export function checkDkgEpoch(
  ctx: NodeContext,
  proposal: Proposal,
  id: string,
  dkg: { threshold: number; committee: readonly CommitteeMember[] },
  log: LogFields,
): EpochRecord | undefined {
  const current = ctx.store.currentEpoch();
  const epoch = current?.epoch ?? 1;
  log.epoch = epoch;
  if (proposal.epoch !== undefined && proposal.epoch !== epoch) {
    throw mismatch(id, `epoch: node ${ctx.nodeId} is at epoch ${epoch}, not ${proposal.epoch}`, {
      field: 'epoch',
      epoch,
    });
  }
  if (!current) return undefined;
  if (dkg.threshold !== current.threshold) {
    throw mismatch(
      id,
      `threshold: epoch ${epoch} has threshold ${current.threshold}, not ${dkg.threshold}`,
      { field: 'threshold', epoch, threshold: current.threshold },
    );
  }
  const differ = committeeDifference(dkg.committee, current.committee);
  if (differ.length > 0) {
    throw mismatch(
      id,
      `committee: not the committee of epoch ${epoch} (node(s) ${differ.join(', ')})`,
      { field: 'committee', epoch, nodes: differ },
    );
  }
  return current;
}

/** Nodes whose entries differ between two committees, or that only one of them has; sorted. */
export function committeeDifference(
  a: readonly CommitteeMember[],
  b: readonly CommitteeMember[],
): number[] {
  const inA = new Map(a.map((m) => [m.node, memberKey(m)]));
  const inB = new Map(b.map((m) => [m.node, memberKey(m)]));
  const nodes = new Set([...inA.keys(), ...inB.keys()]);
  return [...nodes].filter((n) => inA.get(n) !== inB.get(n)).sort((x, y) => x - y);
}

/**
 * What a new ceremony may make on this node: tenant.create only for a tenant it has never held,
 * key.rotate only the version right after one it holds or held.
 */
export function checkLifecycle(ctx: NodeContext, proposal: Proposal, id: string): void {
  const p = asKeyProposal(proposal);
  const versions = ctx.store.tenantVersions(p.tenant);
  if (p.operation === 'tenant.create' && versions.length > 0) {
    throw new KmaasError('ERR_TENANT_EXISTS', `tenant ${p.tenant} exists on node ${ctx.nodeId}`, {
      tenant: p.tenant,
      proposal: id,
    });
  }
  if (p.operation === 'key.rotate') {
    if (versions.length === 0) {
      throw new KmaasError('ERR_UNKNOWN_TENANT', `tenant ${p.tenant} does not exist`, {
        tenant: p.tenant,
        proposal: id,
      });
    }
    const latest = versions[versions.length - 1]!;
    if (p.version !== latest + 1) {
      throw mismatch(
        id,
        `version: node ${ctx.nodeId} holds ${p.tenant} up to v${latest}; rotation makes v${latest + 1}`,
        { field: 'version', latest },
      );
    }
  }
}

/** `proposal.apply`: a key.retire. The share of that version is erased; irreversible. */
export function handleProposalApply(
  ctx: NodeContext,
  body: z.infer<typeof proposalApplyRequest>,
  log: LogFields,
): { node: number; proposal: string; operation: 'key.retire'; tenant: string; version: number } {
  const p = asKeyProposal(body.proposal);
  log.tenant = p.tenant;
  log.version = p.version;
  const { id } = admitProposal(ctx, p, log);
  if (p.operation !== 'key.retire') {
    throw mismatch(id, `${p.operation} is made by a DKG, not applied`, { field: 'operation' });
  }
  const use = useOf(p, id, '');
  checkNonce(ctx, use, true);
  // ERR_KEY_RETIRED, ERR_UNKNOWN_TENANT or ERR_UNKNOWN_KEY_VERSION when there is nothing to retire.
  ctx.keyring.get(p.tenant, p.version);
  if (!ctx.store.retireKey(p.tenant, p.version, use)) {
    throw new KmaasError('ERR_UNKNOWN_KEY_VERSION', `no stored key ${p.tenant} v${p.version}`, {
      tenant: p.tenant,
      version: p.version,
    });
  }
  ctx.store.scrubLog();
  ctx.keyring.retire(p.tenant, p.version);
  log.retired = true;
  return {
    node: ctx.nodeId,
    proposal: id,
    operation: 'key.retire',
    tenant: p.tenant,
    version: p.version,
  };
}
