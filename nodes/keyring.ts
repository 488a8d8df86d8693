/**
 * The in-memory view of this node's keys, filled from the store at startup and after each DKG.
 * Evaluation (DESIGN.md section 7, the hot path) reads only this: no database access per request.
 *
 * Every key is checked on the way in: the package must be self-consistent (shared/key-package.ts)
 * and name this node's verification share K_j = k_j*G for the share held, so a damaged or swapped
 * row is refused at startup instead of producing evaluations that no client can verify.
 */
import { Point, type GroupElement } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import { parseKeyPackage, type KeyPackage } from '../shared/key-package.ts';
import type { SecretShare } from './secret-share.ts';

export interface LoadedKey {
  tenant: string;
  version: number;
  threshold: number;
  share: SecretShare;
  verificationShare: GroupElement;
  keyPackage: KeyPackage;
}

export class Keyring {
  readonly #nodeId: number;
  readonly #tenants = new Map<string, Map<number, LoadedKey>>();
  /** `tenant/version` of every retired key: asked for, they answer ERR_KEY_RETIRED. */
  readonly #retired = new Set<string>();

  constructor(nodeId: number) {
    this.#nodeId = nodeId;
  }

  add(key: { tenant: string; version: number; share: SecretShare; keyPackage: KeyPackage }) {
    const pkg = parseKeyPackage(key.keyPackage);
    const where = `${key.tenant} v${key.version}`;
    if (pkg.tenant !== key.tenant || pkg.version !== key.version) {
      throw new KmaasError(
        'ERR_KEY_PACKAGE_INVALID',
        `key package stored under ${where} names another key`,
      );
    }
    const verificationShare = pkg.verificationShares.get(this.#nodeId);
    // The share is secret: constant-time multiply here, unlike the public checks elsewhere.
    if (!verificationShare?.equals(Point.BASE.multiply(key.share.reveal()))) {
      throw new KmaasError(
        'ERR_KEY_PACKAGE_INVALID',
        `key package of ${where} does not match the share node ${this.#nodeId} holds`,
        { tenant: key.tenant, version: key.version },
      );
    }
    const loaded: LoadedKey = {
      tenant: key.tenant,
      version: key.version,
      threshold: pkg.threshold,
      share: key.share,
      verificationShare,
      keyPackage: pkg.raw,
    };
    const versions = this.#tenants.get(key.tenant) ?? new Map<number, LoadedKey>();
    versions.set(key.version, loaded);
    this.#tenants.set(key.tenant, versions);
    return loaded;
  }

  /** A retired version stops serving at once; its share is dropped from memory. */
  retire(tenant: string, version: number): void {
    this.#retired.add(`${tenant}/${version}`);
    const versions = this.#tenants.get(tenant);
    versions?.delete(version);
    if (versions?.size === 0) this.#tenants.delete(tenant);
  }

  /** ERR_KEY_RETIRED, ERR_UNKNOWN_TENANT or ERR_UNKNOWN_KEY_VERSION when absent. */
  get(tenant: string, version: number): LoadedKey {
    if (this.#retired.has(`${tenant}/${version}`)) {
      throw new KmaasError(
        'ERR_KEY_RETIRED',
        `${tenant} v${version} was retired by an operator proposal`,
        { tenant, version },
      );
    }
    const versions = this.#tenants.get(tenant);
    if (!versions) {
      throw new KmaasError('ERR_UNKNOWN_TENANT', `tenant ${tenant} does not exist`, { tenant });
    }
    const key = versions.get(version);
    if (!key) {
      throw new KmaasError(
        'ERR_UNKNOWN_KEY_VERSION',
        `tenant ${tenant} has no key version ${version}`,
        {
          tenant,
          version,
        },
      );
    }
    return key;
  }

  list(): LoadedKey[] {
    return [...this.#tenants.values()]
      .flatMap((versions) => [...versions.values()])
      .sort((a, b) =>
        a.tenant === b.tenant ? a.version - b.version : a.tenant < b.tenant ? -1 : 1,
      );
  }

  get size(): number {
    let n = 0;
    for (const versions of this.#tenants.values()) n += versions.size;
    return n;
  }
}
