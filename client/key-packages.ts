/**
 * Key packages as the client trusts them (DESIGN.md section 1). A package comes from
 * `GET /v1/tenants/:tenant/keys/:version`, but what the coordinator says counts only after
 * shared/key-package.ts parseKeyPackage has checked it against the anchor:
 *
 *   1. the package is well formed, its group key is C_0 and every K_j is the commitments at x_j;
 *   2. it names the tenant and version that were asked for;
 *   3. its group key equals the pinned one (ERR_PINNED_KEY_MISMATCH otherwise). With no pin the
 *      package is refused (ERR_KEY_NOT_PINNED) unless the client trusts on first use; then the
 *      key is pinned and an event says so.
 *
 * Parsed packages are cached per (tenant, version); concurrent callers share one fetch, and a
 * failed fetch is not cached. A reshare gives a key new verification shares (a new epoch) under
 * the same group key: `refresh` fetches the package again, and the pin, on the group key, still
 * holds it to the key that was pinned.
 */
import { checkTenant } from '../shared/document.ts';
import { KmaasError } from '../shared/errors.ts';
import { parseKeyPackage, type ParsedKeyPackage } from '../shared/key-package.ts';
import type { EventHandler } from './events.ts';
import { seg, type CoordinatorHttp } from './http.ts';
import { pinKey, type PinStore } from './pins.ts';

export interface KeyPackagesOptions {
  http: CoordinatorHttp;
  pins: PinStore;
  /** Pin the group key of a (tenant, version) seen for the first time instead of refusing it. */
  trustOnFirstUse?: boolean;
  onEvent?: EventHandler;
}

export function checkKeyVersion(version: number, field = 'version'): number {
  if (!Number.isInteger(version) || version < 1 || version > 0xffffffff) {
    throw new KmaasError('ERR_VALIDATION', `${field}: expected a positive 32-bit integer`, {
      field,
    });
  }
  return version;
}

export class KeyPackages {
  private readonly cache = new Map<string, Promise<ParsedKeyPackage>>();

  constructor(private readonly opts: KeyPackagesOptions) {}

  /** The verified package of (tenant, version), from the cache when it was verified before. */
  get(tenant: string, version: number): Promise<ParsedKeyPackage> {
    checkTenant(tenant);
    checkKeyVersion(version);
    const key = pinKey(tenant, version);
    let entry = this.cache.get(key);
    if (!entry) {
      entry = this.load(tenant, version);
      this.cache.set(key, entry);
      const mine = entry;
      mine.catch(() => {
        if (this.cache.get(key) === mine) this.cache.delete(key);
      });
    }
    return entry;
  }

  /**
   * Fetch the package of (tenant, version) again, because `stale` (the one the caller holds) is of
   * another epoch than the coordinator's answer. Callers that hold the same stale package share
   * one fetch; one that already holds a newer one gets it without a fetch. The pin must exist by
   * now (the stale package was checked against it) and the new package must carry it.
   */
  refresh(stale: ParsedKeyPackage): Promise<ParsedKeyPackage> {
    const key = pinKey(stale.tenant, stale.version);
    const current = this.cache.get(key);
    const fresh = (async () => {
      const held = current === undefined ? undefined : await current.catch(() => undefined);
      if (held !== undefined && held !== stale) return held;
      return this.load(stale.tenant, stale.version);
    })();
    // Only the first caller for this stale package replaces the entry; the others await it.
    if (this.cache.get(key) === current) {
      this.cache.set(key, fresh);
      fresh.catch(() => {
        if (this.cache.get(key) === fresh) this.cache.delete(key);
      });
    }
    return fresh;
  }

  /**
   * Pin the group key the coordinator serves for (tenant, version) now, e.g. right after the
   * operator created the tenant. An existing pin is kept and must match. `expectedGroupKey`
   * (from the creation job's result, when it names one) must match too.
   */
  async pin(
    tenant: string,
    version: number,
    expectedGroupKey?: string,
  ): Promise<{ groupKey: string; newlyPinned: boolean }> {
    checkTenant(tenant);
    checkKeyVersion(version);
    const pinned = await this.opts.pins.get(tenant, version);
    const pkg = await this.fetch(tenant, version, pinned);
    const groupKey = pkg.raw.groupKey;
    if (expectedGroupKey !== undefined && expectedGroupKey !== groupKey) {
      throw new KmaasError(
        'ERR_PINNED_KEY_MISMATCH',
        'the key package does not carry the group key the key generation reported',
        { tenant, version },
      );
    }
    if (pinned === undefined) {
      await this.opts.pins.set(tenant, version, groupKey);
      this.opts.onEvent?.({ type: 'key-pinned', tenant, version, groupKey, reason: 'explicit' });
    }
    this.cache.set(pinKey(tenant, version), Promise.resolve(pkg));
    return { groupKey, newlyPinned: pinned === undefined };
  }

  private async load(tenant: string, version: number): Promise<ParsedKeyPackage> {
    const pinned = await this.opts.pins.get(tenant, version);
    if (pinned === undefined && !this.opts.trustOnFirstUse) {
      throw new KmaasError(
        'ERR_KEY_NOT_PINNED',
        `no pinned group key for ${tenant} version ${version}`,
        { tenant, version },
      );
    }
    const pkg = await this.fetch(tenant, version, pinned);
    if (pinned === undefined) {
      const groupKey = pkg.raw.groupKey;
      await this.opts.pins.set(tenant, version, groupKey);
      this.opts.onEvent?.({
        type: 'key-pinned',
        tenant,
        version,
        groupKey,
        reason: 'trust-on-first-use',
      });
    }
    return pkg;
  }

  private async fetch(
    tenant: string,
    version: number,
    pinned: string | undefined,
  ): Promise<ParsedKeyPackage> {
    const raw = await this.opts.http.get(`/v1/tenants/${seg(tenant)}/keys/${seg(version)}`);
    const pkg = parseKeyPackage(raw, pinned);
    // Step 2: under trust on first use nothing else would stop the package of another tenant.
    if (pkg.tenant !== tenant || pkg.version !== version) {
      throw new KmaasError(
        'ERR_KEY_PACKAGE_INVALID',
        `asked for the key package of ${tenant} version ${version}, got ${pkg.tenant} version ${pkg.version}`,
        { tenant, version },
      );
    }
    return pkg;
  }
}
