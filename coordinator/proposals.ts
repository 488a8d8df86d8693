/**
 * POST /v1/proposals: the only way a lifecycle change starts (DESIGN.md section 3). The
 * coordinator cannot start one of its own: it carries an operator proposal (shared/proposal.ts)
 * to the nodes, and every node checks the signatures against its own operator keys before it
 * acts. The coordinator checks only what spares the nodes pointless work: the shape, the expiry,
 * a committee of configured nodes, the threshold policy, the cluster id the nodes report, and
 * whether the tenant and version fit.
 *
 *   tenant.create, key.rotate  -> a DKG job (dkg-job.ts) among the committee, carrying the
 *                                 proposal in dkg.round1; 202 { jobId, ... }
 *   key.retire                 -> proposal.apply to every committee node; 200 with each node's
 *                                 answer
 *   committee.reshare,         -> a reshare job (reshare-job.ts); 202 { jobId, ..., epoch }
 *   committee.refresh
 *
 * Once the coordinator knows the committee's epoch (epoch.ts), a DKG proposal must name exactly
 * that epoch's committee and threshold (and its epoch, when it names one): the nodes refuse
 * anything else, so it is refused here first. KMAAS_NODES may list spare nodes outside it.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { KmaasError, toKmaasError, type ErrorBody, type ErrorCode } from '../shared/errors.ts';
import { parseMessage, proposalApplyReply } from '../shared/messages.ts';
import {
  isKeyProposal,
  parseProposal,
  proposalId,
  type KeyProposal,
  type Operation,
  type Proposal,
} from '../shared/proposal.ts';
import type { DkgJobData, DkgQueue } from './dkg-job.ts';
import { sameCommittee, type EpochSource } from './epoch.ts';
import type { Logger } from './logger.ts';
import type { NodePool } from './node-pool.ts';
import type { RedisKeys } from './redis-keys.ts';
import type { Registry } from './registry.ts';
import { acquireCreateLock, releaseCreateLock } from './tenant-lock.ts';

export const FIRST_VERSION = 1;

/**
 * Refusals of a ceremony's proposal or parameters by the nodes that no retry can fix: the
 * proposal, its quorum, cluster, expiry or nonce, the threshold, or another ceremony holding the
 * committee. Every ceremony job fails at once on these.
 */
export const PERMANENT_REFUSALS: ReadonlySet<string> = new Set([
  'ERR_BAD_THRESHOLD',
  'ERR_CEREMONY_CONFLICT',
  'ERR_PROPOSAL_INVALID',
  'ERR_PROPOSAL_QUORUM',
  'ERR_PROPOSAL_CLUSTER',
  'ERR_PROPOSAL_EXPIRED',
  'ERR_PROPOSAL_REPLAYED',
  'ERR_PROPOSAL_MISMATCH',
]);

/**
 * The threshold policy: 2 <= t <= n and t > n/2. An honest majority is needed so that two
 * disjoint sets of nodes can never both reach t, and t >= 2 so that no node alone holds the key.
 * Without `t` the smallest majority, floor(n/2) + 1.
 */
export function checkThreshold(n: number, t?: number): number {
  const threshold = t ?? Math.floor(n / 2) + 1;
  if (!Number.isInteger(threshold) || threshold < 2 || threshold > n || 2 * threshold <= n) {
    throw new KmaasError(
      'ERR_BAD_THRESHOLD',
      `threshold ${threshold} for ${n} nodes: expected an integer with 2 <= t <= ${n} and t > ${n / 2}`,
      { threshold, nodes: n },
    );
  }
  return threshold;
}

export interface ProposalDeps {
  redis: Redis;
  keys: RedisKeys;
  registry: Registry;
  queue: DkgQueue;
  pool: NodePool;
  attempts: number;
  backoffMs: number;
  lockTtlMs: number;
  /** Deadline of one node's answer to proposal.apply. */
  nodeTimeoutMs: number;
  logger: Logger;
  /** ms since the epoch; default Date.now. Tests only. */
  now?: () => number;
  /** The committee's current epoch; without it DKG proposals are checked by the nodes only. */
  epochs?: EpochSource;
  /**
   * The cluster id the nodes check proposals against, when they agree on one
   * (cluster-status.ts agreedClusterId); without it the nodes alone refuse another cluster's.
   */
  clusterId?: () => Promise<string | null>;
  /** committee.reshare and committee.refresh: queue the ceremony (reshare-job.ts). */
  queueReshare?: (p: Proposal, log: Logger) => Promise<ProposalJobAccepted>;
}

/** 202: the DKG job that carries the proposal out. */
export interface ProposalJobAccepted {
  jobId: string;
  proposal: string;
  operation: Operation;
  /** Key operations only. */
  tenant?: string;
  version?: number;
  /** committee.reshare: the epoch it makes. */
  epoch?: number;
}

export type NodeOutcome =
  { node: number; ok: true } | { node: number; ok: false; error: ErrorBody };

/** 200: what each committee node answered to proposal.apply. */
export interface ProposalApplied {
  proposal: string;
  operation: Operation;
  tenant: string;
  version: number;
  /** True when every committee node applied it. */
  complete: boolean;
  nodes: NodeOutcome[];
}

/** The checks the coordinator can make without operator keys. */
function checkSubmitted(deps: ProposalDeps, body: unknown): Proposal {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new KmaasError(
      'ERR_VALIDATION',
      'body: expected a proposal as a JSON object sent as Content-Type: application/json',
      { field: 'body' },
    );
  }
  const p = parseProposal(body);
  const id = proposalId(p);
  if ((deps.now ?? Date.now)() >= Date.parse(p.expiresAt)) {
    throw new KmaasError('ERR_PROPOSAL_EXPIRED', `proposal expired at ${p.expiresAt}`, {
      proposal: id,
      expiresAt: p.expiresAt,
    });
  }
  const known = new Set(deps.pool.ids());
  const strangers = (p.committee ?? []).map((m) => m.node).filter((n) => !known.has(n));
  if (strangers.length > 0) {
    throw new KmaasError(
      'ERR_PROPOSAL_INVALID',
      `proposal: committee: node(s) ${strangers.join(', ')} are not configured here`,
      { field: 'committee', nodes: strangers },
    );
  }
  if (p.operation !== 'key.retire') checkThreshold(p.committee!.length, p.threshold);
  return p;
}

export async function submitProposal(
  deps: ProposalDeps,
  body: unknown,
  log: Logger,
): Promise<ProposalJobAccepted | ProposalApplied> {
  const p = checkSubmitted(deps, body);
  await checkCluster(deps, p);
  if (!isKeyProposal(p)) {
    if (!deps.queueReshare) {
      throw new KmaasError('ERR_PROPOSAL_INVALID', `proposal: ${p.operation} is not supported`, {
        field: 'operation',
      });
    }
    return deps.queueReshare(p, log);
  }
  return p.operation === 'key.retire' ? applyRetire(deps, p, log) : queueDkg(deps, p, log);
}

/**
 * A proposal for another cluster (ERR_PROPOSAL_CLUSTER), refused here rather than queued as a
 * job every node would fail. The nodes still check it themselves.
 */
async function checkCluster(deps: ProposalDeps, p: Proposal): Promise<void> {
  const cluster = await deps.clusterId?.();
  if (cluster === undefined || cluster === null || p.cluster === cluster) return;
  const id = proposalId(p);
  throw new KmaasError(
    'ERR_PROPOSAL_CLUSTER',
    `proposal ${id.slice(0, 12)} is for cluster ${p.cluster}, but the nodes here belong to ` +
      `cluster ${cluster}: create it against this coordinator (kmaas proposal create)`,
    { proposal: id, cluster: p.cluster, expected: cluster },
  );
}

async function queueDkg(
  deps: ProposalDeps,
  p: KeyProposal,
  log: Logger,
): Promise<ProposalJobAccepted> {
  const { tenant, version, operation } = p;
  const id = proposalId(p);
  await checkEpoch(deps, p);
  const jobId = randomUUID();
  // One lifecycle change per tenant at a time, across replicas.
  const holder = await acquireCreateLock(deps.redis, deps.keys, tenant, jobId, deps.lockTtlMs);
  if (holder !== null) {
    throw new KmaasError('ERR_TENANT_EXISTS', `tenant ${tenant} has a key being generated`, {
      tenant,
      jobId: holder,
    });
  }
  try {
    // Checked under the lock: a ceremony that finished just before stored its key first.
    if (operation === 'tenant.create') {
      if (await deps.registry.tenantExists(tenant)) {
        throw new KmaasError('ERR_TENANT_EXISTS', `tenant ${tenant} already exists`, { tenant });
      }
    } else {
      const versions = (await deps.registry.tenant(tenant)).map((k) => k.version);
      const latest = Math.max(...versions);
      if (versions.includes(version) || version !== latest + 1) {
        throw new KmaasError(
          'ERR_PROPOSAL_INVALID',
          `proposal: version: ${tenant} has versions up to ${latest}; rotation makes ${latest + 1}`,
          { field: 'version', latest },
        );
      }
    }
    const data: DkgJobData = {
      tenant,
      version,
      threshold: p.threshold!,
      participants: p.committee!.map((m) => m.node).sort((a, b) => a - b),
      proposal: p,
    };
    await deps.queue.add(operation, data, {
      jobId,
      attempts: deps.attempts,
      backoff: { type: 'exponential', delay: deps.backoffMs },
      removeOnComplete: { age: 7 * 24 * 3600, count: 1000 },
      removeOnFail: { age: 30 * 24 * 3600 },
    });
  } catch (err) {
    await releaseCreateLock(deps.redis, deps.keys, tenant, jobId);
    throw err;
  }
  log.info({ tenant, version, operation, proposal: id, jobId }, 'proposal queued');
  return { jobId, proposal: id, operation, tenant, version };
}

/** A DKG acts in the current epoch: its committee, its threshold (ERR_PROPOSAL_MISMATCH). */
async function checkEpoch(deps: ProposalDeps, p: KeyProposal): Promise<void> {
  const record = await deps.epochs?.current();
  if (!record) return;
  const id = proposalId(p);
  const mismatch = (field: string, message: string) =>
    new KmaasError('ERR_PROPOSAL_MISMATCH', `proposal: ${field}: ${message}`, {
      field,
      proposal: id,
      epoch: record.epoch,
    });
  if (p.epoch !== undefined && p.epoch !== record.epoch) {
    throw mismatch('epoch', `the committee is in epoch ${record.epoch}, not ${p.epoch}`);
  }
  if (p.threshold !== record.threshold) {
    throw mismatch('threshold', `epoch ${record.epoch} has threshold ${record.threshold}`);
  }
  if (!sameCommittee(p.committee ?? [], record.committee)) {
    const nodes = record.committee.map((m) => m.node).join(', ');
    throw mismatch(
      'committee',
      `epoch ${record.epoch}'s committee is nodes ${nodes} with their identity keys`,
    );
  }
}

/**
 * key.retire: proposal.apply to every committee node at once. When not one node applied it and
 * they all refused for the same reason, that refusal is the answer (a bad quorum, say).
 */
async function applyRetire(
  deps: ProposalDeps,
  p: KeyProposal,
  log: Logger,
): Promise<ProposalApplied> {
  const id = proposalId(p);
  const nodes = await Promise.all(
    p.committee!.map(async ({ node }): Promise<NodeOutcome> => {
      try {
        const link = deps.pool.get(node);
        if (!link) throw new KmaasError('ERR_NODE_UNAVAILABLE', `node ${node} is not configured`);
        const body = await link.request('proposal.apply', { proposal: p }, deps.nodeTimeoutMs);
        const reply = parseMessage(proposalApplyReply, body, 'proposal.apply reply');
        if (reply.proposal !== id || reply.node !== node) {
          throw new KmaasError(
            'ERR_NODE_UNAVAILABLE',
            `node ${node} answered for another proposal`,
          );
        }
        return { node, ok: true };
      } catch (err) {
        return { node, ok: false, error: toKmaasError(err).toBody() };
      }
    }),
  );
  const failed = nodes.filter((n): n is Extract<NodeOutcome, { ok: false }> => !n.ok);
  const codes = new Set<ErrorCode>(failed.map((f) => f.error.code));
  const [only] = codes;
  if (failed.length === nodes.length && codes.size === 1 && only !== undefined) {
    throw new KmaasError(only, `every committee node refused: ${failed[0]!.error.message}`, {
      proposal: id,
      nodes: failed.map((f) => f.node),
    });
  }
  // The operators' decision stands once any node acted on it: listed as retired from now on (a
  // node that missed it applies it when the proposal is submitted again).
  await deps.registry.markRetired(p.tenant, p.version);
  const result: ProposalApplied = {
    proposal: id,
    operation: p.operation,
    tenant: p.tenant,
    version: p.version,
    complete: failed.length === 0,
    nodes,
  };
  log.info(
    { proposal: id, tenant: p.tenant, version: p.version, failed: failed.map((f) => f.node) },
    'key.retire applied',
  );
  return result;
}
