/**
 * Parsed key packages in memory, so that the hot path (DESIGN.md section 7) reads Redis only on
 * a miss and never re-decodes points or re-checks commitments per request. Entries expire after a
 * while so that a package changed by a later lifecycle step (resharing gives new verification
 * shares under the same group key) is picked up; concurrent misses share one load.
 */
import { parseKeyPackage, type ParsedKeyPackage } from '../shared/key-package.ts';
import type { Registry } from './registry.ts';

export interface KeyCacheOptions {
  ttlMs: number;
  maxEntries: number;
}

export class KeyCache {
  readonly #registry: Registry;
  readonly #opts: KeyCacheOptions;
  readonly #entries = new Map<string, { pkg: ParsedKeyPackage; expires: number }>();
  readonly #loading = new Map<string, Promise<ParsedKeyPackage>>();
  /** Bumped by every invalidation: a load that started before one does not fill the cache. */
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
   * Forget cached packages: one (tenant, version), every version of a tenant, or everything. A
   * load in flight is no longer shared with later callers, and what it read is not kept: it may
   * have read Redis before the change. Called when nodes answer ERR_EPOCH_MISMATCH
   * (a reshare moved the committee on) and when a reshare switches the packages.
   */
  invalidate(tenant?: string, version?: number): void {
    this.#generation++;
    const prefix = tenant === undefined ? '' : `${tenant}/`;
    for (const name of [...this.#loading.keys()]) {
      if (name.startsWith(prefix) && (version === undefined || name === `${prefix}${version}`)) {
        this.#loading.delete(name);
      }
    }
    if (tenant === undefined) {
      this.#entries.clear();
      return;
    }
    if (version !== undefined) {
      this.#entries.delete(`${tenant}/${version}`);
      return;
    }
    for (const name of [...this.#entries.keys()]) {
      if (name.startsWith(`${tenant}/`)) this.#entries.delete(name);
    }
  }

  async #load(name: string, tenant: string, version: number): Promise<ParsedKeyPackage> {
    const generation = this.#generation;
    const pkg = parseKeyPackage(await this.#registry.keyPackage(tenant, version));
    if (generation !== this.#generation) return pkg;
    this.#entries.delete(name);
    // Maps iterate in insertion order: the first key is the least recently loaded.
    if (this.#entries.size >= this.#opts.maxEntries) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(name, { pkg, expires: performance.now() + this.#opts.ttlMs });
    return pkg;
  }
}
