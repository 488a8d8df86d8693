/**
 * The in-memory view of this node's keys, filled from the store at startup and after each DKG or
 * reshare. Evaluation (DESIGN.md section 7, the hot path) reads only this: no database access per
 * request.
 *
 * A key has a share per committee epoch (DESIGN.md section 3). Between a reshare's commit and its
 * finish a node holds two of them at once: the current epoch's, and the retiring one's, which
 * still answers the coordinator while it routes by the old epoch's packages. Lookup of
 * (tenant, version, epoch?):
 *
 *   retired version                                      ERR_KEY_RETIRED
 *   a share at the asked epoch (default: current)        that share
 *   node not in its current committee (a reshare removed it)  ERR_NODE_REMOVED
 *   no share of that tenant / version at any epoch       ERR_UNKNOWN_TENANT / ERR_UNKNOWN_KEY_VERSION
 *   shares at other epochs only                          ERR_EPOCH_MISMATCH { requested, current }
 *
 * Every key is checked on the way in: the package must be self-consistent (shared/key-package.ts),
 * be of the epoch it is filed under, and name this node's verification share K_j = k_j*G for the
 * share held, so a damaged or swapped row is refused at startup instead of producing evaluations
 * that no client can verify.
 */
import { Point, type GroupElement } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import { parseKeyPackage, type KeyPackage } from '../shared/key-package.ts';
import type { SecretShare } from './secret-share.ts';
import type { EpochRecord } from './store.ts';

export interface LoadedKey {
  tenant: string;
  version: number;
  epoch: number;
  threshold: number;
  share: SecretShare;
  verificationShare: GroupElement;
  keyPackage: KeyPackage;
}

/** A key as the store gives it. */
export interface KeyToLoad {
  tenant: string;
  version: number;
  epoch: number;
  share: SecretShare;
  keyPackage: KeyPackage;
}

function byKey(a: LoadedKey, b: LoadedKey): number {
  if (a.tenant !== b.tenant) return a.tenant < b.tenant ? -1 : 1;
  return a.version - b.version || a.epoch - b.epoch;
}

export class Keyring {
  readonly #nodeId: number;
  /** tenant -> version -> epoch -> share. */
  readonly #tenants = new Map<string, Map<number, Map<number, LoadedKey>>>();
  /** `tenant/version` of every retired key: asked for, they answer ERR_KEY_RETIRED. */
  readonly #retired = new Set<string>();
  #epoch: EpochRecord | undefined;

  constructor(nodeId: number, epoch?: EpochRecord) {
    this.#nodeId = nodeId;
    this.#epoch = epoch;
  }

  /** The node's current committed epoch; undefined before its first ceremony. */
  get epoch(): EpochRecord | undefined {
    return this.#epoch;
  }

  /** The current epoch's number: 1 before any is recorded (keys of a version-1 database). */
  get currentEpoch(): number {
    return this.#epoch?.epoch ?? 1;
  }

  /** Follow the store's current epoch (after a genesis adoption or a reshare commit). */
  setEpoch(record: EpochRecord | undefined): void {
    this.#epoch = record;
  }

  /** Whether this node is in its current committee; a node with no epoch record yet is. */
  isMember(): boolean {
    return !this.#epoch || this.#epoch.committee.some((m) => m.node === this.#nodeId);
  }

  add(key: KeyToLoad): LoadedKey {
    const pkg = parseKeyPackage(key.keyPackage);
    const where = `${key.tenant} v${key.version} epoch ${key.epoch}`;
    if (pkg.tenant !== key.tenant || pkg.version !== key.version || pkg.epoch !== key.epoch) {
      throw new KmaasError(
        'ERR_KEY_PACKAGE_INVALID',
        `key package stored under ${where} names another key or epoch`,
        { tenant: key.tenant, version: key.version, epoch: key.epoch },
      );
    }
    const verificationShare = pkg.verificationShares.get(this.#nodeId);
    // The share is secret: constant-time multiply here, unlike the public checks elsewhere.
    if (!verificationShare?.equals(Point.BASE.multiply(key.share.reveal()))) {
      throw new KmaasError(
        'ERR_KEY_PACKAGE_INVALID',
        `key package of ${where} does not match the share node ${this.#nodeId} holds`,
        { tenant: key.tenant, version: key.version, epoch: key.epoch },
      );
    }
    const loaded: LoadedKey = {
      tenant: key.tenant,
      version: key.version,
      epoch: key.epoch,
      threshold: pkg.threshold,
      share: key.share,
      verificationShare,
      keyPackage: pkg.raw,
    };
    const versions = this.#tenants.get(key.tenant) ?? new Map<number, Map<number, LoadedKey>>();
    const epochs = versions.get(key.version) ?? new Map<number, LoadedKey>();
    epochs.set(key.epoch, loaded);
    versions.set(key.version, epochs);
    this.#tenants.set(key.tenant, versions);
    return loaded;
  }

  /** A retired version stops serving at once; its shares (every epoch) are dropped from memory. */
  retire(tenant: string, version: number): void {
    this.#retired.add(`${tenant}/${version}`);
    const versions = this.#tenants.get(tenant);
    versions?.delete(version);
    if (versions?.size === 0) this.#tenants.delete(tenant);
  }

  /**
   * Drop every share of an epoch below `epoch` (reshare.finish, once the store erased them).
   * Returns how many were dropped.
   */
  dropBefore(epoch: number): number {
    let dropped = 0;
    for (const [tenant, versions] of this.#tenants) {
      for (const [version, epochs] of versions) {
        for (const e of [...epochs.keys()]) {
          if (e < epoch) {
            epochs.delete(e);
            dropped++;
          }
        }
        if (epochs.size === 0) versions.delete(version);
      }
      if (versions.size === 0) this.#tenants.delete(tenant);
    }
    return dropped;
  }

  /** The share of (tenant, version) at `epoch` (default: the current one); see the table above. */
  get(tenant: string, version: number, epoch?: number): LoadedKey {
    if (this.#retired.has(`${tenant}/${version}`)) {
      throw new KmaasError(
        'ERR_KEY_RETIRED',
        `${tenant} v${version} was retired by an operator proposal`,
        { tenant, version },
      );
    }
    const requested = epoch ?? this.currentEpoch;
    const epochs = this.#tenants.get(tenant)?.get(version);
    const key = epochs?.get(requested);
    if (key) return key;
    // A removed node still serves a retiring epoch it holds (above), and nothing else.
    if (!this.isMember()) {
      throw new KmaasError(
        'ERR_NODE_REMOVED',
        `node ${this.#nodeId} is not in the committee of epoch ${this.currentEpoch}`,
        { node: this.#nodeId, current: this.currentEpoch },
      );
    }
    if (!this.#tenants.has(tenant)) {
      throw new KmaasError('ERR_UNKNOWN_TENANT', `tenant ${tenant} does not exist`, { tenant });
    }
    if (!epochs) {
      throw new KmaasError(
        'ERR_UNKNOWN_KEY_VERSION',
        `tenant ${tenant} has no key version ${version}`,
        { tenant, version },
      );
    }
    throw new KmaasError(
      'ERR_EPOCH_MISMATCH',
      `node ${this.#nodeId} holds no share of ${tenant} v${version} for epoch ${requested}; ` +
        `its epoch is ${this.currentEpoch}`,
      { tenant, version, requested, current: this.currentEpoch },
    );
  }

  /** One entry per (tenant, version): the share of the newest epoch held. */
  list(): LoadedKey[] {
    const out: LoadedKey[] = [];
    for (const versions of this.#tenants.values()) {
      for (const epochs of versions.values()) {
        const newest = Math.max(...epochs.keys());
        out.push(epochs.get(newest)!);
      }
    }
    return out.sort(byKey);
  }

  /** Every share held, of every epoch. */
  listAll(): LoadedKey[] {
    return [...this.#tenants.values()]
      .flatMap((versions) => [...versions.values()].flatMap((epochs) => [...epochs.values()]))
      .sort(byKey);
  }

  /** The shares of one epoch, by tenant then version. */
  keysAt(epoch: number): LoadedKey[] {
    return this.listAll().filter((k) => k.epoch === epoch);
  }

  /** How many (tenant, version) keys this node holds a share of, at any epoch. */
  get size(): number {
    let n = 0;
    for (const versions of this.#tenants.values()) n += versions.size;
    return n;
  }
}
