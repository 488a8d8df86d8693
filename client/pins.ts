/**
 * Pinned group keys: the client's trust anchor (DESIGN.md section 1). For each (tenant, key
 * version) the store remembers the base64url group key K the client accepted once; every key
 * package served later must carry exactly that key, so a coordinator cannot swap in a key of its
 * own. Stores hold public keys only, never secrets.
 *
 * @example
 *   const pins = new MemoryPinStore();
 *   await pins.set('acme', 1, 'jC8ZKl...');
 *   await pins.get('acme', 1); // 'jC8ZKl...'
 */

export interface PinStore {
  get(tenant: string, version: number): Promise<string | undefined>;
  set(tenant: string, version: number, groupKey: string): Promise<void>;
}

/** Tenants never contain '/' (shared/document.ts TENANT_PATTERN), so this key is unambiguous. */
export function pinKey(tenant: string, version: number): string {
  return `${tenant}/${version}`;
}

/** Pins held in memory: for tests, and for browsers that seed it from their configuration. */
export class MemoryPinStore implements PinStore {
  private readonly pins = new Map<string, string>();

  constructor(initial: Iterable<{ tenant: string; version: number; groupKey: string }> = []) {
    for (const p of initial) this.pins.set(pinKey(p.tenant, p.version), p.groupKey);
  }

  get(tenant: string, version: number): Promise<string | undefined> {
    return Promise.resolve(this.pins.get(pinKey(tenant, version)));
  }

  set(tenant: string, version: number, groupKey: string): Promise<void> {
    this.pins.set(pinKey(tenant, version), groupKey);
    return Promise.resolve();
  }
}
