/**
 * Parsed key packages in memory, so that the hot path (DESIGN.md section 7) reads Redis only on
 * a miss and never re-decodes points or re-checks commitments per request. Entries expire after a
 * while so that a package changed by a later lifecycle step (resharing gives new verification
 * shares under the same group key) is picked up; concurrent misses share one load.
 *
 * An expired entry whose reload fails (Redis down and the nodes not agreeing in time, say) is
 * served for up to STALE_MS more, reloaded at most every STALE_RETRY_MS meanwhile, with a
 * warning: the package is public and checked by the nodes' own epochs (a node asked for shares
 * it no longer holds answers ERR_EPOCH_MISMATCH, which drops the entry), so an old copy harms
 * nothing, while failing would fail every evaluation. invalidate() drops entries for good.
 */
import { parseKeyPackage, type ParsedKeyPackage } from '../shared/key-package.ts';
import { toKmaasError } from '../shared/errors.ts';
import type { Logger } from './logger.ts';
import type { Registry } from './registry.ts';

/** How long past its TTL an entry may stand in for a reload that fails. */
export const STALE_MS = 15 * 60_000;
/** While an entry stands in, a reload is tried at most this often. */
export const STALE_RETRY_MS = 1000;
/** getAtLeast forces a reload of one package at most this often. */
export const FORCED_RELOAD_MS = 1000;

export interface KeyCacheOptions {
  ttlMs: number;
  maxEntries: number;
  logger?: Logger;
}

export class KeyCache {
  readonly #registry: Registry;
  readonly #opts: KeyCacheOptions;
  readonly #entries = new Map<
    string,
    { pkg: ParsedKeyPackage; expires: number; loadedAt: number }
  >();
  readonly #loading = new Map<string, Promise<ParsedKeyPackage>>();
  /** When getAtLeast last forced a reload of a package. */
  readonly #forced = new Map<string, number>();
  /** Bumped by invalidate(): a load that began before it does not fill the cache. */
  #generation = 0;

  constructor(registry: Registry, opts: KeyCacheOptions = { ttlMs: 60_000, maxEntries: 10_000 }) {
    this.#registry = registry;
    this.#opts = opts;
  }

  /** The parsed package; throws the registry's ERR_UNKNOWN_* when there is none. */
  get(tenant: string, version: number): Promise<ParsedKeyPackage> {
    const name = `${tenant}/${version}`;
    const hit = this.#entries.get(name);
    if (hit && hit.expires > performance.now()) return Promise.resolve(hit.pkg);
    const loading = this.#loading.get(name);
    if (loading) return loading;
    const load = this.#load(name, tenant, version).finally(() => {
      if (this.#loading.get(name) === load) this.#loading.delete(name);
    });
    this.#loading.set(name, load);
    return load;
  }

  /**
   * The package, reloaded first when the cached one is of an epoch older than `epoch`: a client
   * that already fetched the package of a new epoch (the registry's packages switch one by one
   * before the epoch record and the invalidation) says so, and is not answered with the old one.
   * At most one forced reload per package per FORCED_RELOAD_MS, so a client naming epochs that
   * do not exist cannot turn every request into a Redis read.
   */
  async getAtLeast(tenant: string, version: number, epoch: number): Promise<ParsedKeyPackage> {
    const pkg = await this.get(tenant, version);
    if (pkg.epoch >= epoch) return pkg;
    const name = `${tenant}/${version}`;
    const now = performance.now();
    const last = this.#forced.get(name);
    if (last !== undefined && now - last < FORCED_RELOAD_MS) return pkg;
    if (this.#forced.size >= this.#opts.maxEntries) this.#forced.clear();
    this.#forced.set(name, now);
    this.invalidate(tenant, version);
    return this.get(tenant, version);
  }

  /**
   * Drop cached packages: every one, those of `tenant`, or one (tenant, version). A reshare's
   * switch calls it on every replica (key-invalidation.ts), since the packages of the new epoch
   * carry new verification shares.
   */
  invalidate(tenant?: string, version?: number): void {
    this.#generation++;
    for (const name of [...this.#entries.keys(), ...this.#loading.keys()]) {
      const [t, v] = name.split('/');
      if (tenant !== undefined && t !== tenant) continue;
      if (version !== undefined && v !== String(version)) continue;
      this.#entries.delete(name);
      this.#loading.delete(name);
    }
  }

  async #load(name: string, tenant: string, version: number): Promise<ParsedKeyPackage> {
    const generation = this.#generation;
    let pkg: ParsedKeyPackage;
    try {
      pkg = parseKeyPackage(await this.#registry.keyPackage(tenant, version));
    } catch (err) {
      const stale = this.#entries.get(name);
      const now = performance.now();
      if (!stale || generation !== this.#generation) throw err;
      if (now - stale.loadedAt > this.#opts.ttlMs + STALE_MS) throw err;
      stale.expires = now + STALE_RETRY_MS;
      this.#opts.logger?.warn(
        { tenant, version, code: toKmaasError(err).code, ageMs: Math.round(now - stale.loadedAt) },
        'key package could not be reloaded; serving the cached copy',
      );
      return stale.pkg;
    }
    if (generation !== this.#generation) return pkg;
    this.#entries.delete(name);
    // Maps iterate in insertion order: the first key is the least recently loaded.
    if (this.#entries.size >= this.#opts.maxEntries) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    const now = performance.now();
    this.#entries.set(name, { pkg, expires: now + this.#opts.ttlMs, loadedAt: now });
    return pkg;
  }
}
