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
