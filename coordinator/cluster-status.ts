/**
 * GET /v1/status (docs/CONTRACTS.md "Coordinator"): each node's link state and what it says of
 * itself (identity keys, cluster id, committed epoch, open reshare), the current epoch (committee
 * with identity keys, threshold), and each tenant's key versions with the epoch of their shares.
 * Operators build committee proposals from it (kmaas committee ..., kmaas proposal create), so
 * spare nodes, configured but in no committee, are listed too, with `member: false`.
 *
 * The epoch comes from the coordinator's epoch record when it has one (coordinator/epoch.ts, the
 * reshare job keeps it). Without one it is read from the nodes: the highest epoch that at least
 * its threshold of its own members report identically; its committee's identity keys are then the
 * ones the members report now (which, for a member that lost its data, are its new keys: only the
 * record knows the old ones). None of this is trusted by anyone: nodes check every proposal
 * against their own records.
 */
import { statusReply } from '../shared/messages.ts';
import type { CommitteeMember } from '../shared/proposal.ts';
import type { NodePool } from './node-pool.ts';
import type { NodeLinkState } from './node-link.ts';
import type { Registry } from './registry.ts';

/** The cluster's current committee, as GET /v1/status shows it. */
export interface EpochView {
  epoch: number;
  threshold: number;
  committee: CommitteeMember[];
  /**
   * Every member's id, when `committee` may lack one: read from the nodes, a member that does
   * not answer has no known identity keys.
   */
  members?: number[];
}

/** Where the current epoch is recorded (coordinator/epoch.ts); absent before the first one. */
export interface EpochSource {
  current(): Promise<EpochView | null>;
}

export interface StatusDeps {
  pool: NodePool;
  registry: Registry;
  nodeTimeoutMs: number;
  epochs?: EpochSource;
}

/** Tenants whose key versions are listed; beyond this only the names are. */
const MAX_TENANT_DETAILS = 1000;

type Reported = NonNullable<ReturnType<typeof statusReply.parse>['epoch']>;

interface NodeView extends NodeLinkState {
  identity: { signing: string; encryption: string } | null;
  cluster?: string;
  /** The node's committed epoch, null when it has none or did not answer. */
  epoch: number | null;
  /** In the current epoch's committee. */
  member: boolean;
  /**
   * A member that reports other identity keys than the recorded committee has for it: it lost
   * its data and made new ones, so it holds no share (`kmaas committee repair <id>`).
   */
  lostData?: true;
  reshare: { id: string; state: string } | null;
}

export async function clusterStatus(deps: StatusDeps) {
  // Without Redis the nodes still answer: status says so rather than failing.
  let registry: 'ok' | 'unavailable' = 'ok';
  const [answers, names, recorded] = await Promise.all([
    askNodes(deps),
    deps.registry.tenantNames().catch((): string[] => {
      registry = 'unavailable';
      return [];
    }),
    deps.epochs ? deps.epochs.current().catch(() => null) : Promise.resolve(null),
  ]);
  // Only what operators need: a record may carry more (the reshare's transcript and votes).
  const epoch = recorded
    ? { epoch: recorded.epoch, threshold: recorded.threshold, committee: recorded.committee }
    : epochFromNodes(answers);
  const members = new Set(epoch?.members ?? epoch?.committee.map((m) => m.node) ?? []);
  // Only the record knows a member's keys from before it lost its data (see the module header).
  const recordedKeys = new Map((recorded?.committee ?? []).map((m) => [m.node, m]));
  const nodes: NodeView[] = answers.map(({ view, reported }) => {
    const was = recordedKeys.get(view.id);
    const lost =
      was !== undefined &&
      view.identity !== null &&
      (view.identity.signing !== was.signing || view.identity.encryption !== was.encryption);
    return {
      ...view,
      epoch: reported?.epoch ?? null,
      member: members.has(view.id),
      ...(lost ? { lostData: true as const } : {}),
    };
  });
  // The cluster id the nodes check proposals against, when the connected nodes agree on one.
  const clusters = new Set(nodes.flatMap((n) => (n.cluster === undefined ? [] : [n.cluster])));
  const cluster = clusters.size === 1 ? [...clusters][0]! : null;
  const keys = await Promise.all(
    names.slice(0, MAX_TENANT_DETAILS).map(async (tenant) => {
      const [packages, retired] = await Promise.all([
        deps.registry.readTenant(tenant).catch(() => []),
        deps.registry.retiredVersions(tenant).catch((): number[] => []),
      ]);
      return {
        tenant,
        versions: packages.map((p) => ({
          version: p.version,
          epoch: p.epoch ?? 1,
          threshold: p.threshold,
          ...(retired.includes(p.version) ? { retired: true } : {}),
        })),
      };
    }),
  );
  return { cluster, epoch, nodes, tenants: names, keys, registry };
}

interface Answer {
  view: Omit<NodeView, 'epoch' | 'member'>;
  reported: Reported | null;
}

async function askNodes(deps: StatusDeps): Promise<Answer[]> {
  return Promise.all(
    deps.pool.all().map(async (link): Promise<Answer> => {
      const state = link.state();
      const silent = { view: { ...state, identity: null, reshare: null }, reported: null };
      if (!state.connected) return silent;
      try {
        const reply = statusReply.parse(await link.request('status', {}, deps.nodeTimeoutMs));
        return {
          view: {
            ...state,
            identity: reply.identity ?? null,
            ...(reply.cluster === undefined ? {} : { cluster: reply.cluster }),
            reshare: reply.reshare ?? null,
          },
          reported: reply.epoch ?? null,
        };
      } catch {
        return silent;
      }
    }),
  );
}

/**
 * The highest epoch that at least `threshold` of its own members report with the same threshold
 * and members (and never fewer than 2, the lowest threshold a node accepts): fewer could be a
 * minority left behind or made up. Null when none qualifies.
 */
export function epochFromNodes(answers: readonly Answer[]): EpochView | null {
  const votes = new Map<string, { summary: Reported; voters: Set<number> }>();
  for (const { view, reported } of answers) {
    if (!reported || !reported.members.includes(view.id)) continue;
    const summary = { ...reported, members: [...reported.members].sort((a, b) => a - b) };
    const key = JSON.stringify([summary.epoch, summary.threshold, summary.members]);
    const entry = votes.get(key) ?? { summary, voters: new Set<number>() };
    entry.voters.add(view.id);
    votes.set(key, entry);
  }
  const agreed = [...votes.values()]
    .filter((v) => v.voters.size >= Math.max(2, v.summary.threshold))
    .sort((a, b) => b.summary.epoch - a.summary.epoch)[0];
  if (!agreed) return null;
  const identities = new Map(answers.map((a) => [a.view.id, a.view.identity]));
  const committee = agreed.summary.members.flatMap((node) => {
    const id = identities.get(node);
    return id ? [{ node, signing: id.signing, encryption: id.encryption }] : [];
  });
  return {
    epoch: agreed.summary.epoch,
    threshold: agreed.summary.threshold,
    committee,
    members: agreed.summary.members,
  };
}

/**
 * The cluster id the connected nodes check proposals against, when those that report one agree
 * on it; null when none reports one or they disagree (then only the nodes decide).
 */
export async function agreedClusterId(pool: NodePool, timeoutMs: number): Promise<string | null> {
  const reported = await Promise.all(
    pool.connected().map(async (link) => {
      try {
        return statusReply.parse(await link.request('status', {}, timeoutMs)).cluster;
      } catch {
        return undefined;
      }
    }),
  );
  const ids = new Set(reported.filter((c): c is string => c !== undefined));
  return ids.size === 1 ? [...ids][0]! : null;
}
