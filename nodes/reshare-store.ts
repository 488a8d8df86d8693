/**
 * Where a reshare lives on the node, beside the store's own tables (store.ts; same database, same
 * sealer, same transactions):
 *
 *   reshares        reshare id -> its state (reshare-machine.ts; public JSON: proposal, committees,
 *                   key list, vote, step) and the dealer's sealed per-reshare seed (made at its
 *                   first deal; erased by finish and abort)
 *   reshare_chunks  (reshare id, dealer set, chunk) -> the receiver's new shares of the chunk's
 *                   keys (sealed, purpose 'reshare-chunk'), their new key packages (public) and
 *                   the chunk digest; kept per dealer set, since a dealer named as a culprit is
 *                   replaced and the chunk dealt again; erased by commit's finish and by abort
 *
 * Every write happens before the reply that reports it (reshare.ts), in WAL mode with
 * synchronous=FULL: a node killed at any point restarts in a state it has answered for.
 */
import type Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { decodeScalar, encodeScalar, concat } from '../shared/encoding.ts';
import type { KeyPackage } from '../shared/key-package.ts';
import { SEED_BYTES } from './reshare-dealing.ts';
import { isOpen, type ReshareState, type ReshareStep } from './reshare-machine.ts';
import type { NodeStore } from './store.ts';

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS reshares (
    reshare_id   TEXT    PRIMARY KEY,
    step         TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    sealed_seed  BLOB,
    updated_at   INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE IF NOT EXISTS reshare_chunks (
    reshare_id    TEXT    NOT NULL,
    dealers       TEXT    NOT NULL,
    chunk         INTEGER NOT NULL,
    digest        TEXT    NOT NULL,
    input         TEXT    NOT NULL,
    packages      TEXT    NOT NULL,
    sealed_shares BLOB    NOT NULL,
    PRIMARY KEY (reshare_id, dealers, chunk)
  ) STRICT;
`;

export interface StoredChunk {
  digest: string;
  /** What the chunk was made from (reshare.ts dealingsDigest): a replay must match it. */
  input: string;
  packages: KeyPackage[];
  /** Unsealed new shares, one per key; the caller boxes them. */
  shares: bigint[];
}

const stores = new WeakMap<NodeStore, ReshareStore>();

export class ReshareStore {
  readonly #store: NodeStore;
  readonly #db: Database.Database;

  private constructor(store: NodeStore) {
    this.#store = store;
    this.#db = store.db;
    this.#db.exec(SCHEMA);
  }

  /** The reshare tables of `store`, made on first use. */
  static of(store: NodeStore): ReshareStore {
    let r = stores.get(store);
    if (!r) {
      r = new ReshareStore(store);
      stores.set(store, r);
    }
    return r;
  }

  load(reshareId: string): ReshareState | undefined {
    const row = this.#db
      .prepare('SELECT state FROM reshares WHERE reshare_id = ?')
      .get(reshareId) as { state: string } | undefined;
    return row && (JSON.parse(row.state) as ReshareState);
  }

  save(state: ReshareState): void {
    this.#db
      .prepare(
        `INSERT INTO reshares (reshare_id, step, state, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (reshare_id) DO UPDATE SET
           step = excluded.step, state = excluded.state, updated_at = excluded.updated_at`,
      )
      .run(state.params.reshareId, state.step, JSON.stringify(state), this.#store.now());
  }

  /** Every reshare in `steps`, oldest change first. */
  inSteps(steps: readonly ReshareStep[]): ReshareState[] {
    const rows = this.#db
      .prepare(
        `SELECT state FROM reshares WHERE step IN (${steps.map(() => '?').join(',')})
         ORDER BY updated_at`,
      )
      .all(...steps) as { state: string }[];
    return rows.map((r) => JSON.parse(r.state) as ReshareState);
  }

  /** The reshare open on this node (begun or voted), if any. */
  open(): ReshareState | undefined {
    return this.inSteps(['begun', 'voted']).find((s) => isOpen(s.step));
  }

  /** The most recent reshare not yet finished or aborted, for `status`. */
  latest(): { id: string; state: string } | null {
    const row = this.#db
      .prepare(
        `SELECT reshare_id, step FROM reshares WHERE step IN ('begun', 'voted', 'committed')
         ORDER BY updated_at DESC LIMIT 1`,
      )
      .get() as { reshare_id: string; step: string } | undefined;
    return row ? { id: row.reshare_id, state: row.step } : null;
  }

  #seedContext(reshareId: string) {
    return { purpose: 'reshare-seed' as const, tenant: '', version: 0, ceremonyId: reshareId };
  }

  /** The dealer's seed of `reshareId`, made and stored sealed on first use. Zero it after use. */
  seed(reshareId: string): Uint8Array {
    const row = this.#db
      .prepare('SELECT sealed_seed FROM reshares WHERE reshare_id = ?')
      .get(reshareId) as { sealed_seed: Buffer | null } | undefined;
    if (row?.sealed_seed) return this.#store.open(row.sealed_seed, this.#seedContext(reshareId));
    const fresh = new Uint8Array(randomBytes(SEED_BYTES));
    const sealed = this.#store.seal(fresh, this.#seedContext(reshareId));
    this.#db
      .prepare('UPDATE reshares SET sealed_seed = ? WHERE reshare_id = ?')
      .run(sealed, reshareId);
    return fresh;
  }

  #chunkContext(reshareId: string, dealers: readonly number[], chunk: number, epoch: number) {
    return {
      purpose: 'reshare-chunk' as const,
      tenant: '',
      version: chunk,
      ceremonyId: `${reshareId}/${dealers.join(',')}`,
      epoch,
    };
  }

  saveChunk(
    reshareId: string,
    dealers: readonly number[],
    chunk: number,
    epoch: number,
    prepared: StoredChunk,
  ): void {
    const plain = concat(...prepared.shares.map(encodeScalar));
    const sealed = this.#store.seal(plain, this.#chunkContext(reshareId, dealers, chunk, epoch));
    plain.fill(0);
    this.#db
      .prepare(
        `INSERT OR REPLACE INTO reshare_chunks
         (reshare_id, dealers, chunk, digest, input, packages, sealed_shares)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        reshareId,
        dealers.join(','),
        chunk,
        prepared.digest,
        prepared.input,
        JSON.stringify(prepared.packages),
        sealed,
      );
  }

  /** The digest of every chunk prepared for this dealer set, by chunk number. */
  chunkDigests(reshareId: string, dealers: readonly number[]): Map<number, string> {
    return new Map(
      [...this.chunkInputs(reshareId, dealers)].map(([chunk, r]) => [chunk, r.digest]),
    );
  }

  /** Digest and input of every chunk prepared for this dealer set, by chunk number. */
  chunkInputs(
    reshareId: string,
    dealers: readonly number[],
  ): Map<number, { digest: string; input: string }> {
    const rows = this.#db
      .prepare(
        'SELECT chunk, digest, input FROM reshare_chunks WHERE reshare_id = ? AND dealers = ?',
      )
      .all(reshareId, dealers.join(',')) as { chunk: number; digest: string; input: string }[];
    return new Map(rows.map((r) => [r.chunk, { digest: r.digest, input: r.input }]));
  }

  loadChunk(
    reshareId: string,
    dealers: readonly number[],
    chunk: number,
    epoch: number,
  ): StoredChunk | undefined {
    const row = this.#db
      .prepare(
        `SELECT digest, input, packages, sealed_shares FROM reshare_chunks
         WHERE reshare_id = ? AND dealers = ? AND chunk = ?`,
      )
      .get(reshareId, dealers.join(','), chunk) as
      { digest: string; input: string; packages: string; sealed_shares: Buffer } | undefined;
    if (!row) return undefined;
    const plain = this.#store.open(
      row.sealed_shares,
      this.#chunkContext(reshareId, dealers, chunk, epoch),
    );
    try {
      const shares: bigint[] = [];
      for (let i = 0; i < plain.length; i += 32) {
        shares.push(decodeScalar(plain.subarray(i, i + 32), 'share'));
      }
      return {
        digest: row.digest,
        input: row.input,
        packages: JSON.parse(row.packages) as KeyPackage[],
        shares,
      };
    } finally {
      plain.fill(0);
    }
  }

  /** Erase the seed and every prepared chunk of `reshareId` (secure_delete overwrites them). */
  erasePending(reshareId: string): void {
    this.#db.prepare('DELETE FROM reshare_chunks WHERE reshare_id = ?').run(reshareId);
    this.#db.prepare('UPDATE reshares SET sealed_seed = NULL WHERE reshare_id = ?').run(reshareId);
  }
}
