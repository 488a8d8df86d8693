/**
 * `kmaas status` as lines a person reads: the cluster id, the current epoch (its number,
 * threshold and committee), one line per node (member of the committee, spare or removed, the
 * epoch a member reports, whether the coordinator reaches it, how it fares) and one per tenant with its key
 * versions, their thresholds and the epoch of their shares. The whole status is in --json.
 */
import type { ErrorCode } from '../shared/errors.ts';
import type { TenantInfo } from '../client/index.ts';
import type { StatusView } from '../client/committee.ts';

/** What `status` says of one tenant: its key versions, or why they could not be read. */
export type TenantStatus =
  | { tenant: string; versions: (TenantInfo['versions'][number] & { epoch?: number })[] }
  | { tenant: string; error: { code: ErrorCode; message: string } };

type NodeEntry = StatusView['nodes'][number] & {
  url?: unknown;
  latencyMs?: unknown;
  pending?: unknown;
  recentFailures?: unknown;
  reshare?: unknown;
};

export function epochLines(view: StatusView): string[] {
  const lines = typeof view.cluster === 'string' ? [`cluster ${view.cluster}`] : [];
  const e = view.epoch;
  // An older coordinator says nothing of epochs.
  if (e === undefined) return lines;
  if (e === null) {
    lines.push('epoch   none yet: the first key generation makes epoch 1');
    return lines;
  }
  const members = e.members ?? e.committee.map((m) => m.node);
  lines.push(
    `epoch   ${e.epoch}  threshold ${e.threshold} of ${members.length}  committee ${members.join(',')}`,
  );
  return lines;
}

/**
 * What a node is once there is a committee: a member, a spare (in no committee yet), or removed
 * (in no committee now, but it reports one it was in: it erased its shares when it left).
 */
function role(n: NodeEntry): string {
  if (n.member) return 'member';
  return n.epoch === null || n.epoch === undefined ? 'spare' : 'removed';
}

export function nodeLine(n: NodeEntry, hasEpoch: boolean): string {
  const parts = [`node ${n.id}`];
  if (hasEpoch) parts.push(role(n));
  parts.push(n.connected === false ? 'DOWN' : 'up');
  // The epoch only of a node that holds shares of it: not of a spare, a removed node, or a
  // member that lost its data (said below).
  if (!hasEpoch || (n.member && n.lostData !== true)) parts.push(`epoch ${n.epoch ?? '-'}`);
  if (typeof n.latencyMs === 'number') parts.push(`latency ${n.latencyMs}ms`);
  if (typeof n.pending === 'number') parts.push(`pending ${n.pending}`);
  if (typeof n.recentFailures === 'number' && n.recentFailures > 0) {
    parts.push(`failures ${n.recentFailures}`);
  }
  const r = n.reshare as { id?: unknown; state?: unknown } | null | undefined;
  if (r && typeof r.id === 'string') parts.push(`reshare ${r.id} ${String(r.state)}`);
  if (typeof n.url === 'string') parts.push(n.url);
  if (n.lostData === true) {
    parts.push(`LOST ITS DATA (new identity keys, no shares): kmaas committee repair ${n.id}`);
  }
  return parts.join('  ');
}

export function tenantLine(t: TenantStatus): string {
  if ('error' in t) {
    return `tenant ${t.tenant}  key versions unknown (${t.error.code}: ${t.error.message})`;
  }
  if (t.versions.length === 0) return `tenant ${t.tenant}  no key versions`;
  const versions = t.versions.map((v) => {
    if (v.retired === true) return `${v.version} (retired)`;
    const threshold = `threshold ${v.threshold === undefined ? '?' : v.threshold}`;
    return `${v.version} (${threshold}${v.epoch === undefined ? '' : `, epoch ${v.epoch}`})`;
  });
  return `tenant ${t.tenant}  key version${t.versions.length > 1 ? 's' : ''} ${versions.join(', ')}`;
}

/** The epoch of each (tenant, version) as the status lists it (`keys`), when it does. */
export function keyEpochs(status: Record<string, unknown>): Map<string, number> {
  const out = new Map<string, number>();
  const keys = Array.isArray(status.keys) ? (status.keys as unknown[]) : [];
  for (const entry of keys) {
    const e = entry as { tenant?: unknown; versions?: unknown };
    if (typeof e.tenant !== 'string' || !Array.isArray(e.versions)) continue;
    for (const v of e.versions as { version?: unknown; epoch?: unknown }[]) {
      if (typeof v.version === 'number' && typeof v.epoch === 'number') {
        out.set(`${e.tenant}/${v.version}`, v.epoch);
      }
    }
  }
  return out;
}

/** Every line of `kmaas status`. */
export function statusLines(view: StatusView, tenants: readonly TenantStatus[]): string[] {
  const lines = epochLines(view);
  // Member or spare only means something once there is a committee.
  const hasEpoch = view.epoch !== undefined && view.epoch !== null;
  for (const n of view.nodes) lines.push(nodeLine(n, hasEpoch));
  if (view.nodes.length === 0) lines.push('no nodes configured');
  for (const t of tenants) lines.push(tenantLine(t));
  if (tenants.length === 0) {
    lines.push('no tenants yet: create one with `kmaas tenant create <tenant>`');
  }
  return lines;
}
