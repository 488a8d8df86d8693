/**
 * Catch-up of a node that missed a whole reshare (PLAN "Coordinator", catch-up): it was down from
 * before reshare.begin to after the commit, so it has no state for that reshare id. When the
 * reshare removed it (or gave its node id new identity keys, a repair), nobody else will ever
 * tell it to erase its old-epoch shares; the coordinator's catch-up sends it reshare.commit with
 * the reshare's proposal, and this module decides whether that commit may stand:
 *
 *   1. the proposal is a committee.reshare with a quorum of this node's operators, for this
 *      cluster (verifyQuorum); its expiry is NOT checked: the reshare happened in the past, and
 *      the votes below prove that it did
 *   2. reshareId == reshareIdOf(proposal id)
 *   3. this node is not in the new committee with its own identity keys: a member takes part
 *      from begin (its shares come from prepare), so it is refused with ERR_RESHARE_STATE as
 *      before
 *   4. proposal.epoch is above this node's epoch (several missed epochs: only the latest
 *      reshare is needed, since its committee is the one that counts now)
 *   5. one valid vote of every new member over the transcript (reshare-machine.ts catchUpCommit)
 *
 * Then the node commits the new epoch with no keys, role 'removed'; the following finish erases
 * every older epoch's shares. No nonce is checked or used: the proposal already acted.
 */
import type { z } from 'zod';
import { KmaasError } from '../shared/errors.ts';
import type { reshareCommitRequest } from '../shared/messages.ts';
import { reshareIdOf, verifyQuorum, type CommitteeMember } from '../shared/proposal.ts';
import type { LogFields, NodeContext } from './context.ts';
import { stateError, type ReshareParams } from './reshare-machine.ts';

function mismatch(id: string, message: string, details: Record<string, unknown>) {
  return new KmaasError('ERR_PROPOSAL_MISMATCH', `proposal ${id.slice(0, 12)}: ${message}`, {
    proposal: id,
    ...details,
  });
}

const byNode = (a: CommitteeMember, b: CommitteeMember) => a.node - b.node;

/**
 * Checks 1 to 4 for a commit of a reshare this node has no state for; returns the parameters of
 * the reshare as a node that is neither dealer nor receiver. Without a proposal, ERR_RESHARE_STATE
 * (state none), as for any message out of order.
 */
export function catchUpParams(
  ctx: NodeContext,
  body: z.infer<typeof reshareCommitRequest>,
  log: LogFields,
): ReshareParams {
  const p = body.proposal;
  if (!p) throw stateError(body.reshareId, 'none', 'commit');
  log.operation = p.operation;
  log.catchUp = true;
  const { id } = verifyQuorum(p, ctx.policy, (ctx.now ?? Date.now)(), { acceptExpired: true });
  log.proposal = id;
  if (p.operation !== 'committee.reshare') {
    throw mismatch(id, `${p.operation} cannot catch a node up`, { field: 'operation' });
  }
  if (body.reshareId !== reshareIdOf(id)) {
    throw mismatch(id, 'reshareId: not the one of this proposal', { field: 'reshareId' });
  }
  const identity = ctx.identity?.published();
  const own = p.committee!.find((m) => m.node === ctx.nodeId);
  if (
    own &&
    identity &&
    own.signing === identity.signing &&
    own.encryption === identity.encryption
  ) {
    throw stateError(
      body.reshareId,
      'none',
      'commit',
      `node ${ctx.nodeId} is in its committee and takes part from begin`,
    );
  }
  const current = ctx.store.currentEpoch()?.epoch ?? 0;
  if (p.epoch! <= current) {
    throw mismatch(id, `epoch: node ${ctx.nodeId} is at epoch ${current}, not before ${p.epoch}`, {
      field: 'epoch',
      epoch: current,
    });
  }
  const previous = p.previous!;
  return {
    reshareId: body.reshareId,
    proposalId: id,
    proposal: p,
    oldEpoch: previous.epoch,
    oldThreshold: previous.threshold,
    oldCommittee: [...previous.committee].sort(byNode),
    epoch: p.epoch!,
    threshold: p.threshold!,
    committee: [...p.committee!].sort(byNode),
    keys: [],
    dealer: false,
    receiver: false,
  };
}
