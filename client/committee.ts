/**
 * The committee as GET /v1/status reports it (coordinator/cluster-status.ts), read for building
 * operator proposals: the cluster id, the current epoch (committee with identity keys,
 * threshold), and each node's identity keys as it reports them now (spare nodes included). A key
 * generation (tenant.create, key.rotate) must use the current epoch's committee and threshold;
 * before the first epoch it uses the first committee when the caller knows it (the local
 * cluster's file names it), else every node. Nothing here is trusted: the nodes check every
 * proposal against their own records.
 */
import { z } from 'zod';
import { KmaasError } from '../shared/errors.ts';
import { committeeMember, type CommitteeMember } from '../shared/proposal.ts';

const nodeId = z.number().int().min(1).max(0xffff);

/** What the committee commands read of GET /v1/status (coordinator/cluster-status.ts). */
const statusView = z
  .object({
    cluster: z.string().nullable().optional(),
    epoch: z
      .object({
        epoch: z.number().int().min(1),
        threshold: z.number().int(),
        committee: z.array(committeeMember),
        members: z.array(nodeId).optional(),
      })
      .nullable()
      .optional(),
    nodes: z.array(
      z
        .object({
          id: nodeId,
          connected: z.boolean().optional(),
          identity: z.object({ signing: z.string(), encryption: z.string() }).nullable().optional(),
          epoch: z.number().int().nullable().optional(),
          member: z.boolean().optional(),
        })
        .passthrough(),
    ),
  })
  .passthrough();

export type StatusView = z.infer<typeof statusView>;
export type EpochView = NonNullable<StatusView['epoch']>;

/** GET /v1/status as proposals are built from it; ERR_VALIDATION naming the bad field. */
export function parseStatusView(raw: unknown): StatusView {
  const r = statusView.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new KmaasError(
      'ERR_VALIDATION',
      `status: ${issue?.path.join('.') || '(top level)'}: ${issue?.message ?? 'invalid'}`,
      { field: 'status' },
    );
  }
  return r.data;
}

export function clusterIdOf(view: StatusView): string {
  if (typeof view.cluster !== 'string') {
    throw new KmaasError('ERR_CONFIG', 'the nodes report no single cluster id', {
      field: 'cluster',
    });
  }
  return view.cluster;
}

/** A node's identity keys as it reports them now; ERR_NODE_UNAVAILABLE when it reports none. */
export function reportedIdentity(view: StatusView, node: number, why: string): CommitteeMember {
  const entry = view.nodes.find((n) => n.id === node);
  if (!entry) {
    throw new KmaasError(
      'ERR_VALIDATION',
      `node ${node} is not configured in the coordinator (KMAAS_NODES); known nodes: ${view.nodes.map((n) => n.id).join(', ')}`,
      { field: 'nodes', node },
    );
  }
  if (!entry.identity) {
    throw new KmaasError(
      'ERR_NODE_UNAVAILABLE',
      `node ${node} did not report its identity keys (${why}): is it running and connected?`,
      { node },
    );
  }
  return committeeMember.parse({ node, ...entry.identity });
}

/** The current epoch, with every member's identity keys; the way out when there is none. */
export function currentEpoch(view: StatusView): EpochView {
  const epoch = view.epoch;
  if (!epoch) {
    throw new KmaasError(
      'ERR_VALIDATION',
      'the cluster has no committee epoch yet: it starts with the first key (kmaas tenant create)',
      { field: 'epoch' },
    );
  }
  const known = new Set(epoch.committee.map((m) => m.node));
  const missing = (epoch.members ?? []).filter((id) => !known.has(id));
  if (missing.length > 0) {
    throw new KmaasError(
      'ERR_NODE_UNAVAILABLE',
      `the identity keys of committee member(s) ${missing.join(', ')} of epoch ${epoch.epoch} are unknown: they did not answer`,
      { nodes: missing },
    );
  }
  return epoch;
}

/**
 * A new key is made by every member of the committee; a member that reports other identity keys
 * than the committee records has lost its data (it made new ones) and every node would refuse
 * the proposal (ERR_PROPOSAL_MISMATCH). Said here first, with the way out.
 */
export function checkMembersIntact(view: StatusView, committee: readonly CommitteeMember[]): void {
  const changed = committee
    .filter((m) => {
      const now = view.nodes.find((n) => n.id === m.node)?.identity;
      return now != null && (now.signing !== m.signing || now.encryption !== m.encryption);
    })
    .map((m) => m.node);
  if (changed.length === 0) return;
  const nodes = changed.join(', ');
  throw new KmaasError(
    'ERR_PROPOSAL_MISMATCH',
    `${changed.length > 1 ? 'nodes' : 'node'} ${nodes} of the committee ${changed.length > 1 ? 'report' : 'reports'} other identity keys than the committee records: ` +
      `${changed.length > 1 ? 'they lost their' : 'it lost its'} data, and a new key needs every member; ` +
      changed.map((n) => `kmaas committee repair ${n}`).join(', then ') +
      ' first',
    { nodes: changed },
  );
}

/**
 * The committee and threshold a key generation (tenant.create, key.rotate) must use: the current
 * epoch's when there is one (the nodes refuse any other), else the first committee of the cluster
 * file (spare nodes are in none), else every node the coordinator knows.
 */
export function keyCommittee(
  view: StatusView,
  firstCommittee: readonly number[] | undefined,
): { committee: CommitteeMember[]; threshold?: number; epoch?: number } {
  if (view.epoch) {
    const epoch = currentEpoch(view);
    return { committee: epoch.committee, threshold: epoch.threshold, epoch: epoch.epoch };
  }
  const ids = view.nodes
    .map((n) => n.id)
    .filter((id) => firstCommittee === undefined || firstCommittee.includes(id));
  const committee = ids.map((id) => reportedIdentity(view, id, 'the committee needs every member'));
  return { committee: committee.sort((a, b) => a.node - b.node) };
}
