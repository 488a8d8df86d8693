/**
 * The coordinator's routing state in Redis: which tenants exist, their key versions and public
 * key packages, and what each node last said it holds. None of it is secret and none of it is
 * authoritative: the nodes are the source of truth (DESIGN.md section 5), so every entry can be
 * rebuilt from them. That happens when nodes connect (which covers a coordinator starting on an
 * empty Redis) and when a lookup misses; a package is restored only when a quorum of share
 * holders returns it identically (key-quorum.ts). A full rebuild ends by writing the registry
 * marker (redis-keys.ts), whose absence tells coordinator/registry-watch.ts that Redis lost it all.
 *
 * Redis failing is not the end of a lookup: every Redis error becomes ERR_REGISTRY_UNAVAILABLE,
 * and a key package that cannot be read from Redis is asked of the nodes straight away (the same
 * quorum rule), so evaluations keep working while Redis is down or restarting.
 */
import type { Redis } from 'ioredis';
import { KmaasError } from '../shared/errors.ts';
import { keyPackageSchema, type KeyPackage } from '../shared/key-package.ts';
import { keyPackageReply, parseMessage, statusReply } from '../shared/messages.ts';
import { agreeOnKeyPackage, canonicalKeyPackage, type NodeAnswer } from './key-quorum.ts';
import type { Logger } from './logger.ts';
import type { NodePool } from './node-pool.ts';
import type { RedisKeys } from './redis-keys.ts';

/** A miss asks the nodes at most this often per tenant, so unknown names cannot flood them. */
const MISS_RETRY_MS = 2000;
const MAX_MISS_ENTRIES = 10_000;
/** Connections tend to arrive in bursts; one rebuild covers the burst. */
const REBUILD_DEBOUNCE_MS = 250;

/** Anything Redis (or ioredis) throws, as the coded error a caller can tell apart. */
export function registryUnavailable(err: unknown): KmaasError {
  if (err instanceof KmaasError) return err;
  const why = err instanceof Error ? err.message : String(err);
  return new KmaasError(
    'ERR_REGISTRY_UNAVAILABLE',
    `the registry (Redis) cannot be reached: ${why.slice(0, 200)}`,
  );
}

/** Await a Redis command, turning its failure into ERR_REGISTRY_UNAVAILABLE. */
async function viaRedis<T>(command: Promise<T>): Promise<T> {
  try {
    return await command;
  } catch (err) {
    throw registryUnavailable(err);
  }
}

function isUnavailable(err: unknown): boolean {
  return err instanceof KmaasError && err.code === 'ERR_REGISTRY_UNAVAILABLE';
}

export type StoreOutcome = 'stored' | 'same' | 'replaced' | 'stale';

/**
 * registry.store in one step, so that two writers cannot interleave between the read and the
 * write. Packages are canonical JSON (canonicalKeyPackage), which always carries `epoch`; one
 * stored before epochs existed has none and is epoch 1.
 */
const STORE_PACKAGE = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
  return 'stored'
end
redis.call('SADD', KEYS[2], ARGV[3])
if cur == ARGV[2] then return 'same' end
local ok, old = pcall(cjson.decode, cur)
local new = cjson.decode(ARGV[2])
if not ok or type(old) ~= 'table' or old.groupKey ~= new.groupKey then return 'conflict' end
local oldEpoch = tonumber(old.epoch) or 1
local newEpoch = tonumber(new.epoch) or 1
if newEpoch > oldEpoch then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 'replaced'
end
if newEpoch < oldEpoch then return 'stale' end
return 'conflict'
`;

export interface RegistryDeps {
  redis: Redis;
  keys: RedisKeys;
  pool: NodePool;
  nodeTimeoutMs: number;
  logger: Logger;
}

export interface RestoreOptions {
  /** Nodes that must agree beyond the package's own threshold (the DKG asks for all). */
  atLeast?: number;
}

export class Registry {
  readonly #d: RegistryDeps;
  readonly #log: Logger;
  readonly #committee: ReadonlySet<number>;
  readonly #missAt = new Map<string, number>();
  readonly #inflight = new Map<string, Promise<unknown>>();
  #rebuildTimer: NodeJS.Timeout | null = null;
  #rebuildAgain = false;
  #stopped = false;

  constructor(deps: RegistryDeps) {
    this.#d = deps;
    this.#log = deps.logger.child({ component: 'registry' });
    this.#committee = new Set(deps.pool.ids());
  }

  // --- Redis only ---

  async readKeyPackage(tenant: string, version: number): Promise<KeyPackage | null> {
    const json = await viaRedis(this.#d.redis.hget(this.#d.keys.tenant(tenant), String(version)));
    return json === null ? null : this.#decode(json, tenant);
  }

  /** Every stored version of `tenant`, ascending; empty when there is none. */
  async readTenant(tenant: string): Promise<KeyPackage[]> {
    const all = await viaRedis(this.#d.redis.hgetall(this.#d.keys.tenant(tenant)));
    return Object.values(all)
      .map((json) => this.#decode(json, tenant))
      .sort((a, b) => a.version - b.version);
  }

  /** The versions of `tenant` retired by an operator proposal, ascending. */
  async retiredVersions(tenant: string): Promise<number[]> {
    const members = await viaRedis(this.#d.redis.smembers(this.#d.keys.retired(tenant)));
    return members.map(Number).sort((a, b) => a - b);
  }

  /**
   * Record that (tenant, version) was retired. Its package stays in the registry, so that the
   * next key.rotate never reuses its number and old envelopes still name a known version; it is
   * listed as retired and its key package is refused with ERR_KEY_RETIRED.
   */
  async markRetired(tenant: string, version: number): Promise<void> {
    await viaRedis(this.#d.redis.sadd(this.#d.keys.retired(tenant), String(version)));
  }

  async tenantNames(): Promise<string[]> {
    return (await viaRedis(this.#d.redis.smembers(this.#d.keys.tenants))).sort();
  }

  /**
   * Store a package. A (tenant, version) has one group key for ever: storing the identical
   * package again is a no-op ('same'); a package of a later epoch with the same group key
   * replaces the stored one ('replaced': a reshare gave new commitments and verification shares,
   * DESIGN.md section 3); one of an earlier epoch is ignored ('stale'); anything else (another
   * group key, or another package of the same epoch) is ERR_CEREMONY_CONFLICT.
   */
  async store(pkg: KeyPackage): Promise<StoreOutcome> {
    const { redis, keys } = this.#d;
    const outcome = await viaRedis(
      redis.eval(
        STORE_PACKAGE,
        2,
        keys.tenant(pkg.tenant),
        keys.tenants,
        String(pkg.version),
        canonicalKeyPackage(pkg),
        pkg.tenant,
      ),
    );
    if (outcome === 'conflict') {
      throw new KmaasError(
        'ERR_CEREMONY_CONFLICT',
        `the registry already holds a different key package for ${pkg.tenant} v${pkg.version}`,
        { tenant: pkg.tenant, version: pkg.version },
      );
    }
    this.#forgetMisses(pkg.tenant);
    return outcome as StoreOutcome;
  }

  // --- Lookups that fall back to the nodes ---

  /**
   * The package of (tenant, version); ERR_UNKNOWN_TENANT or ERR_UNKNOWN_KEY_VERSION otherwise.
   * When Redis cannot be read, the package t share holders agree on, or ERR_REGISTRY_UNAVAILABLE.
   */
  async keyPackage(tenant: string, version: number): Promise<KeyPackage> {
    let stored: KeyPackage | null;
    try {
      stored = await this.readKeyPackage(tenant, version);
      if ((await this.retiredVersions(tenant)).includes(version)) {
        throw new KmaasError(
          'ERR_KEY_RETIRED',
          `${tenant} v${version} was retired by an operator proposal`,
          { tenant, version },
        );
      }
    } catch (err) {
      if (!isUnavailable(err)) throw err;
      return this.#withoutRedis(tenant, version, err as KmaasError);
    }
    if (stored) return stored;
    const restored = await this.#onMiss(`${tenant}/${version}`, () =>
      this.restoreKeyPackage(tenant, version),
    );
    if (restored) return restored;
    if ((await viaRedis(this.#d.redis.exists(this.#d.keys.tenant(tenant)))) === 1) {
      throw new KmaasError('ERR_UNKNOWN_KEY_VERSION', `tenant ${tenant} has no key v${version}`, {
        tenant,
        version,
      });
    }
    throw unknownTenant(tenant);
  }

  /** Every version of `tenant`; ERR_UNKNOWN_TENANT when neither Redis nor the nodes know it. */
  async tenant(tenant: string): Promise<KeyPackage[]> {
    const stored = await this.readTenant(tenant);
    if (stored.length > 0) return stored;
    await this.#onMiss(tenant, () => this.rebuild(tenant));
    const rebuilt = await this.readTenant(tenant);
    if (rebuilt.length === 0) throw unknownTenant(tenant);
    return rebuilt;
  }

  /** True when Redis or, failing that, the nodes know the tenant. */
  async tenantExists(tenant: string): Promise<boolean> {
    try {
      await this.tenant(tenant);
      return true;
    } catch (err) {
      if (err instanceof KmaasError && err.code === 'ERR_UNKNOWN_TENANT') return false;
      throw err;
    }
  }

  // --- Rebuilding from the nodes ---

  /**
   * Ask every connected node for (tenant, version) and store the package a quorum agrees on.
   * Returns it, or null when there is no quorum (the reason is logged).
   */
  async restoreKeyPackage(
    tenant: string,
    version: number,
    opts: RestoreOptions = {},
  ): Promise<KeyPackage | null> {
    const links = this.#d.pool.connected();
    const settled = await Promise.allSettled(
      links.map(async (link): Promise<NodeAnswer> => {
        const body = await link.request('keyPackage', { tenant, version }, this.#d.nodeTimeoutMs);
        const reply = parseMessage(keyPackageReply, body, 'keyPackage reply');
        return { node: link.id, keyPackage: reply.keyPackage };
      }),
    );
    const answers = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    if (answers.length === 0) return null;
    const result = agreeOnKeyPackage(answers, {
      tenant,
      version,
      committee: this.#committee,
      ...(opts.atLeast === undefined ? {} : { atLeast: opts.atLeast }),
    });
    if (!result.ok) {
      this.#log.warn(
        { tenant, version, answered: answers.map((a) => a.node), reason: result.reason },
        'key package not restored from nodes',
      );
      return null;
    }
    try {
      await this.store(result.keyPackage);
    } catch (err) {
      // Served all the same: the nodes agree on it. Redis gets it on a later miss or rebuild.
      if (!isUnavailable(err)) throw err;
      this.#log.debug(
        { tenant, version },
        'key package from the nodes not stored: redis unavailable',
      );
      return result.keyPackage;
    }
    this.#log.info({ tenant, version, nodes: result.nodes }, 'key package restored from nodes');
    return result.keyPackage;
  }

  /**
   * Redis cannot be read: ask the nodes, one request at a time per package. A name the nodes
   * had no quorum for is not asked again for MISS_RETRY_MS.
   */
  async #withoutRedis(tenant: string, version: number, cause: KmaasError): Promise<KeyPackage> {
    const name = `direct:${tenant}/${version}`;
    const unavailable = () =>
      new KmaasError(
        'ERR_REGISTRY_UNAVAILABLE',
        `${cause.message}; and the nodes gave no key package of ${tenant} v${version} that t of them agree on`,
        { tenant, version },
      );
    const failedAt = this.#missAt.get(name);
    if (this.#stopped || (failedAt !== undefined && performance.now() - failedAt < MISS_RETRY_MS)) {
      throw unavailable();
    }
    let running = this.#inflight.get(name) as Promise<KeyPackage | null> | undefined;
    if (!running) {
      running = this.restoreKeyPackage(tenant, version).finally(() => this.#inflight.delete(name));
      this.#inflight.set(name, running);
    }
    const pkg = await running;
    if (pkg) return pkg;
    if (this.#missAt.size >= MAX_MISS_ENTRIES) this.#missAt.clear();
    this.#missAt.set(name, performance.now());
    throw unavailable();
  }

  /**
   * Ask every connected node what it holds and restore each (tenant, version) missing from Redis
   * (only those of `tenant` when given). Returns the restored entries as "tenant/version".
   */
  async rebuild(tenant?: string): Promise<string[]> {
    const links = this.#d.pool.connected();
    const settled = await Promise.allSettled(
      links.map(async (link) => {
        const body = await link.request('status', {}, this.#d.nodeTimeoutMs);
        const status = parseMessage(statusReply, body, 'status reply');
        if (status.node !== link.id) {
          throw new KmaasError(
            'ERR_VALIDATION',
            `node ${link.id} reports itself as ${status.node}`,
          );
        }
        return { link, status };
      }),
    );
    const wanted = new Map<string, { tenant: string; version: number }>();
    const seenAt = new Date().toISOString();
    const nodeEntries: string[] = [];
    for (const s of settled) {
      if (s.status === 'rejected') continue;
      const { link, status } = s.value;
      nodeEntries.push(
        String(link.id),
        JSON.stringify({ id: link.id, url: link.url, keys: status.keys.length, seenAt }),
      );
      for (const k of status.keys) {
        if (tenant === undefined || k.tenant === tenant) {
          wanted.set(`${k.tenant}/${k.version}`, { tenant: k.tenant, version: k.version });
        }
      }
    }
    if (nodeEntries.length > 0) {
      await viaRedis(this.#d.redis.hset(this.#d.keys.nodes, ...nodeEntries));
    }
    const restored: string[] = [];
    // One entry at a time: a rebuild is background work and must not flood the nodes.
    for (const [name, entry] of wanted) {
      if (this.#stopped) break;
      if (await this.readKeyPackage(entry.tenant, entry.version)) continue;
      if (await this.restoreKeyPackage(entry.tenant, entry.version)) restored.push(name);
    }
    // Everything the answering nodes hold is in Redis now: a later check that finds the marker
    // gone knows that Redis lost the registry (coordinator/registry-watch.ts).
    if (tenant === undefined && nodeEntries.length > 0 && !this.#stopped) {
      await viaRedis(
        this.#d.redis.set(
          this.#d.keys.registry,
          JSON.stringify({ rebuiltAt: seenAt, nodes: nodeEntries.length / 2 }),
        ),
      );
    }
    return restored;
  }

  /** Whether Redis still holds the registry marker a full rebuild writes. */
  async hasMarker(): Promise<boolean> {
    return (await viaRedis(this.#d.redis.exists(this.#d.keys.registry))) === 1;
  }

  /** Rebuild everything soon (debounced); errors are logged, never thrown. */
  scheduleRebuild(): void {
    if (this.#stopped) return;
    if (this.#inflight.has('*')) {
      this.#rebuildAgain = true;
      return;
    }
    if (this.#rebuildTimer) clearTimeout(this.#rebuildTimer);
    this.#rebuildTimer = setTimeout(() => {
      this.#rebuildTimer = null;
      const run = this.rebuild()
        .then((restored) => {
          if (restored.length > 0) this.#log.info({ restored }, 'registry rebuilt from nodes');
        })
        .catch((err: unknown) => this.#log.error({ err }, 'registry rebuild failed'))
        .finally(() => {
          this.#inflight.delete('*');
          if (this.#rebuildAgain) {
            this.#rebuildAgain = false;
            this.scheduleRebuild();
          }
        });
      this.#inflight.set('*', run);
    }, REBUILD_DEBOUNCE_MS);
  }

  /** Stop scheduling and wait for work in flight (call after the node links are closed). */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#rebuildTimer) clearTimeout(this.#rebuildTimer);
    this.#rebuildTimer = null;
    await Promise.allSettled([...this.#inflight.values()]);
  }

  /** Run `fn` for a miss, once at a time per name and at most once per MISS_RETRY_MS. */
  async #onMiss<T>(name: string, fn: () => Promise<T>): Promise<T | null> {
    const running = this.#inflight.get(name) as Promise<T> | undefined;
    if (running) return running;
    const last = this.#missAt.get(name);
    const now = performance.now();
    if (this.#stopped || (last !== undefined && now - last < MISS_RETRY_MS)) return null;
    if (this.#missAt.size >= MAX_MISS_ENTRIES) this.#missAt.clear();
    this.#missAt.set(name, now);
    const run = fn().finally(() => this.#inflight.delete(name));
    this.#inflight.set(name, run);
    return run;
  }

  #forgetMisses(tenant: string): void {
    this.#missAt.delete(tenant);
    for (const name of this.#missAt.keys()) {
      if (name.startsWith(`${tenant}/`)) this.#missAt.delete(name);
    }
  }

  #decode(json: string, tenant: string): KeyPackage {
    try {
      return keyPackageSchema.parse(JSON.parse(json));
    } catch {
      this.#log.error({ tenant }, 'corrupt key package in redis');
      throw new KmaasError('ERR_INTERNAL', 'internal error');
    }
  }
}

function unknownTenant(tenant: string): KmaasError {
  return new KmaasError('ERR_UNKNOWN_TENANT', `no tenant ${tenant}`, { tenant });
}
