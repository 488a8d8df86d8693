/**
 * Every Redis key the coordinator touches, in one place, all under the configured prefix so that
 * several deployments (and test runs) can share one Redis and be removed with one SCAN.
 *
 *   <p>tenants                  SET   tenant names
 *   <p>tenant:<tenant>          HASH  key version -> key package (canonical JSON)
 *   <p>retired:<tenant>         SET   key versions retired by a key.retire proposal
 *   <p>nodes                    HASH  node id -> what the node last reported (JSON)
 *   <p>registry                 STR   written by each full rebuild from the nodes; its absence
 *                                     means Redis lost the registry (registry-watch.ts)
 *   <p>lock:create:<tenant>     STR   job id of the creation in progress (SET NX PX)
 *   <p>epoch                    STR   the committee's current epoch (coordinator/epoch.ts, JSON)
 *   <p>keys:invalidate          pub/sub channel: a key package changed, drop cached copies
 *   <p>dkg:*                    BullMQ's own keys for the ceremony queue (DKG and reshare jobs)
 *
 * Tenant names cannot contain ':' (shared/document.ts TENANT_PATTERN), so no two keys collide.
 */

/** The one ceremony queue: DKG jobs (tenant.create, key.rotate) and committee.reshare jobs. */
export const DKG_QUEUE_NAME = 'dkg';

export interface RedisKeys {
  prefix: string;
  tenants: string;
  tenant(tenant: string): string;
  /** The key versions of `tenant` that operators retired (their packages stay, for numbering). */
  retired(tenant: string): string;
  nodes: string;
  /** The registry marker: present once a full rebuild from the nodes has run on this Redis. */
  registry: string;
  createLock(tenant: string): string;
  epoch: string;
  /** Pub/sub channel on which a replica that changed key packages tells the others. */
  invalidateChannel: string;
  /** BullMQ's `prefix` option: it appends ':' and the queue name itself. */
  bullPrefix: string;
}

export function redisKeys(prefix: string): RedisKeys {
  if (!prefix.endsWith(':')) throw new Error('redis prefix must end with ":"');
  return {
    prefix,
    tenants: `${prefix}tenants`,
    tenant: (tenant) => `${prefix}tenant:${tenant}`,
    retired: (tenant) => `${prefix}retired:${tenant}`,
    nodes: `${prefix}nodes`,
    registry: `${prefix}registry`,
    createLock: (tenant) => `${prefix}lock:create:${tenant}`,
    epoch: `${prefix}epoch`,
    invalidateChannel: `${prefix}keys:invalidate`,
    bullPrefix: prefix.slice(0, -1),
  };
}
