/**
 * The node's own database (DESIGN.md section 5): `node.db` in its data directory, SQLite in WAL
 * mode with synchronous=FULL, so a SIGKILL at any point leaves either the old or the new state.
 *
 *   meta        node id, KEK salt, sealed check value, schema version, sealed identity keys
 *   keys        (tenant, version, epoch) -> sealed share, public key package (of that epoch),
 *               ceremony (DKG) that made the key. A key has one row per committee epoch this node
 *               holds a share of: the current one, and after a reshare the retiring one until
 *               reshare.finish erases it (eraseKeysBefore).
 *   epochs      committed committee epochs: threshold, committee with identity keys, the reshare
 *               and transcript that committed it ('' for the genesis epoch 1, adopted from the
 *               first DKG proposal). The node's current epoch is the highest row.
 *   ceremonies  ceremony id -> sealed DKG state (survives a restart). Kept after the key is
 *               stored, so that every round of the ceremony can be replayed for a participant
 *               that has not finished; erased by dkg.commit (every participant holds the key),
 *               when another ceremony's key for the same (tenant, version) is stored, or by
 *               expireCeremonies once abandoned (no key for its (tenant, version), untouched for
 *               long; see dkg-expiry.ts).
 *   proposals   nonce -> the operator proposal that used it, for which ceremony ('' for one that
 *               acts without a ceremony), until when: a proposal acts once (shared/proposal.ts).
 *               Rows are dropped once their proposal has expired, when it is refused anyway.
 *   retired     (tenant, version) retired by a proposal; its keys row (the sealed share) is gone.
 *
 * Schema versions: 1 had one keys row per (tenant, version) and no epochs; opening such a database
 * migrates it to 2 in one transaction, its keys becoming epoch 1 (their sealing AAD is unchanged:
 * sealing.ts binds the epoch only above 1).
 *
 * Shares and ceremony state are sealed (sealing.ts) before they reach SQLite; nothing secret is
 * ever written in the clear. The check value is sealed at first start; a later start whose secret
 * cannot open it stops with ERR_WRONG_NODE_SECRET before writing anything, or creating any file.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { decodeScalar, encodeScalar, utf8Bytes } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import { epochOf, type KeyPackage } from '../shared/key-package.ts';
import type { CommitteeMember } from '../shared/proposal.ts';
import type { Redacted } from '../shared/redacted.ts';
import { secretShare, type SecretShare } from './secret-share.ts';
import { SALT_BYTES, Sealer, UnsealError, type SealContext } from './sealing.ts';

export const DB_FILE = 'node.db';
const SCHEMA_VERSION = 2;
const CHECK_PLAINTEXT = utf8Bytes('KMaaS-v1 node secret check');

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value ANY NOT NULL
  ) STRICT;
  CREATE TABLE IF NOT EXISTS keys (
    tenant       TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    epoch        INTEGER NOT NULL,
    ceremony_id  TEXT    NOT NULL,
    sealed_share BLOB    NOT NULL,
    key_package  TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant, version, epoch)
  ) STRICT;
  CREATE TABLE IF NOT EXISTS epochs (
    epoch        INTEGER PRIMARY KEY,
    threshold    INTEGER NOT NULL,
    committee    TEXT    NOT NULL,
    reshare_id   TEXT    NOT NULL,
    transcript   TEXT    NOT NULL,
    committed_at INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE IF NOT EXISTS ceremonies (
    ceremony_id  TEXT    PRIMARY KEY,
    tenant       TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    sealed_state BLOB    NOT NULL,
    updated_at   INTEGER NOT NULL
  ) STRICT;
  CREATE INDEX IF NOT EXISTS ceremonies_by_key ON ceremonies (tenant, version);
  CREATE TABLE IF NOT EXISTS proposals (
    nonce        TEXT    PRIMARY KEY,
    proposal_id  TEXT    NOT NULL,
    ceremony_id  TEXT    NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE IF NOT EXISTS retired (
    tenant       TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    proposal_id  TEXT    NOT NULL,
    retired_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant, version)
  ) STRICT;
`;

export interface StoredKey {
  tenant: string;
  version: number;
  /** The committee epoch of this share; its key package carries the same epoch. */
  epoch: number;
  /** The DKG ceremony that made the key (a reshared key keeps the one of its DKG). */
  ceremonyId: string;
  share: SecretShare;
  keyPackage: KeyPackage;
}

/** A key a DKG made: saveKey stores it at the node's current epoch. */
export type NewKey = Omit<StoredKey, 'epoch'>;

/** The public part of a stored key: what a replayed round 3 and dkg.commit need. */
export interface KeyRecord {
  tenant: string;
  version: number;
  epoch: number;
  ceremonyId: string;
  keyPackage: KeyPackage;
}

/**
 * A committed committee epoch. `committee` is sorted by node, keys in canonical base64url.
 * `reshareId` and `transcript` are '' for the genesis epoch 1 (adopted from a DKG proposal).
 */
export interface EpochRecord {
  epoch: number;
  threshold: number;
  committee: CommitteeMember[];
  reshareId: string;
  transcript: string;
  /** ms since the epoch; set by the store when the row is written. */
  committedAt: number;
}

/** What commitEpoch is given: the store stamps committedAt. */
export type EpochInput = Omit<EpochRecord, 'committedAt'>;

/** A ceremony state removed by expireCeremonies. */
export interface ExpiredCeremony {
  ceremonyId: string;
  tenant: string;
  version: number;
  /** When its state last changed (ms since the epoch). */
  updatedAt: number;
}

/** One use of an operator proposal, remembered by its nonce. */
export interface ProposalUse {
  nonce: string;
  proposalId: string;
  /** The ceremony it started; '' for an operation without one (key.retire). */
  ceremonyId: string;
  /** ms since the epoch. */
  expiresAt: number;
}

export interface StoreOptions {
  /** The clock that timestamps rows (ms since the epoch); default Date.now. Tests only. */
  now?: () => number;
}

export interface StoredCeremony {
  ceremonyId: string;
  tenant: string;
  version: number;
  /** The unsealed state; the caller parses it and then zeroes it. */
  state: Uint8Array;
}

interface KeyRow {
  tenant: string;
  version: number;
  epoch: number;
  ceremony_id: string;
  sealed_share: Buffer;
  key_package: string;
}

interface EpochRow {
  epoch: number;
  threshold: number;
  committee: string;
  reshare_id: string;
  transcript: string;
  committed_at: number;
}

function toEpoch(row: EpochRow): EpochRecord {
  return {
    epoch: row.epoch,
    threshold: row.threshold,
    committee: JSON.parse(row.committee) as CommitteeMember[],
    reshareId: row.reshare_id,
    transcript: row.transcript,
    committedAt: row.committed_at,
  };
}

function sortedCommittee(committee: readonly CommitteeMember[]): CommitteeMember[] {
  return committee
    .map((m) => ({ node: m.node, signing: m.signing, encryption: m.encryption }))
    .sort((a, b) => a.node - b.node);
}

interface CeremonyRow {
  ceremony_id: string;
  tenant: string;
  version: number;
  sealed_state: Buffer;
}

function toRecord(row: Omit<KeyRow, 'sealed_share'>): KeyRecord {
  return {
    tenant: row.tenant,
    version: row.version,
    epoch: row.epoch,
    ceremonyId: row.ceremony_id,
    keyPackage: JSON.parse(row.key_package) as KeyPackage,
  };
}

function wrongSecret(path: string): KmaasError {
  return new KmaasError(
    'ERR_WRONG_NODE_SECRET',
    `the node secret does not open ${path}: it was created with a different KMAAS_NODE_SECRET. ` +
      'Nothing was changed; start the node again with the secret it was created with.',
    { path },
  );
}

function readMeta(db: Database.Database): Map<string, unknown> {
  const table = db
    .prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'`)
    .get();
  if (!table) return new Map();
  const rows = db.prepare('SELECT name, value FROM meta').all() as {
    name: string;
    value: unknown;
  }[];
  return new Map(rows.map((r) => [r.name, r.value]));
}

/**
 * Check an existing database against this node's id and secret on a read-only connection, so
 * that a wrong secret or a wrong data directory cannot change a byte of it. Returns the KEK salt,
 * or undefined when the database was never initialised (first start, or a crash during it).
 */
function verifyExisting(
  path: string,
  nodeId: number,
  secret: Redacted<Uint8Array>,
): Uint8Array | undefined {
  const db = openForCheck(path);
  if (!db) return undefined;
  try {
    const meta = readMeta(db);
    const check = meta.get('check');
    if (check === undefined) {
      // Initialisation is one transaction, so no check value means no data; keys without one
      // mean the file was altered, and starting afresh would orphan them.
      if (meta.size > 0) throw new KmaasError('ERR_INTERNAL', `${path}: meta table is damaged`);
      return undefined;
    }
    const storedId = meta.get('node_id');
    if (storedId !== nodeId) {
      throw new KmaasError(
        'ERR_CONFIG',
        `KMAAS_NODE_ID (nodeId): ${path} belongs to node ${String(storedId)}, not node ${nodeId}`,
        { setting: 'KMAAS_NODE_ID', path },
      );
    }
    const salt = meta.get('kek_salt');
    if (!(check instanceof Uint8Array) || !(salt instanceof Uint8Array)) {
      throw new KmaasError('ERR_INTERNAL', `${path}: meta table is damaged`);
    }
    const sealer = new Sealer(secret, salt);
    try {
      sealer.open(check, checkContext(nodeId));
    } catch (err) {
      if (err instanceof UnsealError) throw wrongSecret(path);
      throw err;
    } finally {
      sealer.destroy();
    }
    return new Uint8Array(salt);
  } finally {
    db.close();
  }
}

/**
 * A read-only view of an existing database that adds no file beside it. After a clean stop there
 * is no WAL and node.db holds everything: it is read into memory (its header's bytes 18 and 19,
 * 2 for WAL, are set to 1 in the copy, as memory databases cannot use a WAL). After a crash the
 * WAL holds committed data, so the file itself is opened read-only, and SQLite may add the -shm
 * index next to the WAL. Undefined for an empty file (a crash before the first write).
 */
function openForCheck(path: string): Database.Database | undefined {
  const wal = `${path}-wal`;
  if (existsSync(wal) && statSync(wal).size > 0) {
    return new Database(path, { readonly: true, fileMustExist: true });
  }
  const copy = readFileSync(path);
  if (copy.length === 0) return undefined;
  if (copy.length >= 20) copy.fill(1, 18, 20);
  return new Database(copy, { readonly: true });
}

/**
 * The schema version of an open database: meta's, else 1 when a keys table without an epoch
 * column is there (a version-1 first start that crashed before its meta was written), else
 * undefined (nothing yet).
 */
function schemaVersion(db: Database.Database): number | undefined {
  const stored = readMeta(db).get('schema_version');
  if (typeof stored === 'number' || typeof stored === 'bigint') return Number(stored);
  const columns = db.prepare(`SELECT name FROM pragma_table_info('keys')`).all() as {
    name: string;
  }[];
  if (columns.length === 0) return undefined;
  return columns.some((c) => c.name === 'epoch') ? SCHEMA_VERSION : 1;
}

/**
 * Version 1 -> 2 in one transaction (a crash leaves version 1 whole, migrated again at the next
 * start): the keys table gains the epoch in its primary key, every existing row becoming epoch 1.
 * SQLite cannot change a primary key in place, so the table is copied and the old one dropped
 * (secure_delete overwrites its pages). No epochs row is made: the committee of those keys is not
 * known here; the next DKG proposal supplies it, or a reshare commits a later epoch.
 */
function migrate(db: Database.Database, path: string): void {
  const version = schemaVersion(db);
  if (version === undefined || version === SCHEMA_VERSION) return;
  if (version !== 1) {
    throw new KmaasError(
      'ERR_CONFIG',
      `${path} has schema version ${version}; this node knows versions 1 to ${SCHEMA_VERSION}`,
      { path, schemaVersion: version },
    );
  }
  db.transaction(() => {
    db.exec(`
      CREATE TABLE keys_v2 (
        tenant       TEXT    NOT NULL,
        version      INTEGER NOT NULL,
        epoch        INTEGER NOT NULL,
        ceremony_id  TEXT    NOT NULL,
        sealed_share BLOB    NOT NULL,
        key_package  TEXT    NOT NULL,
        created_at   INTEGER NOT NULL,
        PRIMARY KEY (tenant, version, epoch)
      ) STRICT;
      INSERT INTO keys_v2 (tenant, version, epoch, ceremony_id, sealed_share, key_package,
                           created_at)
        SELECT tenant, version, 1, ceremony_id, sealed_share, key_package, created_at FROM keys;
      DROP TABLE keys;
      ALTER TABLE keys_v2 RENAME TO keys;
    `);
    // Only a database that has a meta row records its version (a crashed first start has none).
    db.prepare(`UPDATE meta SET value = ? WHERE name = 'schema_version'`).run(SCHEMA_VERSION);
  })();
}

function checkContext(nodeId: number): SealContext {
  return { purpose: 'check', nodeId, tenant: '', version: 0 };
}

export class NodeStore {
  readonly path: string;
  readonly #db: Database.Database;
  readonly #sealer: Sealer;
  readonly #nodeId: number;
  readonly #now: () => number;
  #closed = false;

  private constructor(
    path: string,
    db: Database.Database,
    sealer: Sealer,
    nodeId: number,
    now: () => number,
  ) {
    this.path = path;
    this.#db = db;
    this.#sealer = sealer;
    this.#nodeId = nodeId;
    this.#now = now;
  }

  /**
   * Open (or create) the database of node `nodeId` in `dataDir`. Throws ERR_WRONG_NODE_SECRET
   * when `secret` is not the one the database was created with, ERR_CONFIG when the database
   * belongs to another node id; in both cases the file is left untouched.
   */
  static open(
    dataDir: string,
    nodeId: number,
    secret: Redacted<Uint8Array>,
    options: StoreOptions = {},
  ): NodeStore {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const path = join(dataDir, DB_FILE);
    const existingSalt = existsSync(path) ? verifyExisting(path, nodeId, secret) : undefined;
    const db = new Database(path);
    try {
      chmodSync(path, 0o600);
      db.pragma('journal_mode = WAL');
      // FULL: a committed key survives power loss, not only a process crash. Writes are rare.
      db.pragma('synchronous = FULL');
      // Deleted rows (committed or expired ceremonies) are overwritten, not left in free pages.
      // They were sealed anyway; this keeps even their ciphertext from outliving the ceremony.
      db.pragma('secure_delete = ON');
      migrate(db, path);
      db.exec(SCHEMA);
      const salt = existingSalt ?? NodeStore.#initialise(db, nodeId, secret);
      return new NodeStore(path, db, new Sealer(secret, salt), nodeId, options.now ?? Date.now);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** First start: salt and check value in one transaction, so a crash leaves no half state. */
  static #initialise(db: Database.Database, nodeId: number, secret: Redacted<Uint8Array>) {
    const salt = new Uint8Array(randomBytes(SALT_BYTES));
    const sealer = new Sealer(secret, salt);
    const check = sealer.seal(CHECK_PLAINTEXT, checkContext(nodeId));
    sealer.destroy();
    const insert = db.prepare('INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)');
    db.transaction(() => {
      insert.run('schema_version', SCHEMA_VERSION);
      insert.run('node_id', nodeId);
      insert.run('kek_salt', salt);
      insert.run('check', check);
    })();
    return salt;
  }

  #identityContext(): SealContext {
    return { purpose: 'identity', nodeId: this.#nodeId, tenant: '', version: 0 };
  }

  /**
   * The node's identity private keys (identity.ts), unsealed; undefined before they were made.
   * The caller boxes them and zeroes this array.
   */
  loadIdentity(): Uint8Array | undefined {
    const row = this.#db.prepare(`SELECT value FROM meta WHERE name = 'identity'`).get() as
      { value: unknown } | undefined;
    if (!row) return undefined;
    if (!(row.value instanceof Uint8Array)) {
      throw new KmaasError('ERR_INTERNAL', `${this.path}: meta table is damaged`);
    }
    return this.#unseal(Buffer.from(row.value), this.#identityContext());
  }

  /**
   * Seal and store the identity private keys unless some are stored already (first writer wins);
   * returns what is stored afterwards, unsealed, so every caller ends up with the same keys.
   */
  saveIdentityOnce(keys: Uint8Array): Uint8Array {
    const sealed = this.#sealer.seal(keys, this.#identityContext());
    this.#db
      .prepare(`INSERT INTO meta (name, value) VALUES ('identity', ?) ON CONFLICT DO NOTHING`)
      .run(sealed);
    const stored = this.loadIdentity();
    if (!stored) throw new KmaasError('ERR_INTERNAL', `${this.path}: identity keys not stored`);
    return stored;
  }

  #shareContext(tenant: string, version: number, epoch: number): SealContext {
    return { purpose: 'share', nodeId: this.#nodeId, tenant, version, epoch };
  }

  #ceremonyContext(ceremonyId: string, tenant: string, version: number): SealContext {
    return { purpose: 'ceremony', nodeId: this.#nodeId, tenant, version, ceremonyId };
  }

  #unseal(sealed: Buffer, ctx: SealContext): Uint8Array {
    try {
      return this.#sealer.open(sealed, ctx);
    } catch (err) {
      if (!(err instanceof UnsealError)) throw err;
      // The check value opened, so the key is right: the row itself was altered or moved.
      throw new KmaasError(
        'ERR_INTERNAL',
        `sealed ${ctx.purpose} of ${ctx.tenant} v${ctx.version} in ${this.path} failed authentication`,
        { tenant: ctx.tenant, version: ctx.version },
      );
    }
  }

  #toKey(row: KeyRow): StoredKey {
    const ctx = this.#shareContext(row.tenant, row.version, row.epoch);
    const bytes = this.#unseal(row.sealed_share, ctx);
    try {
      return {
        tenant: row.tenant,
        version: row.version,
        epoch: row.epoch,
        ceremonyId: row.ceremony_id,
        share: secretShare(decodeScalar(bytes, 'share')),
        keyPackage: JSON.parse(row.key_package) as KeyPackage,
      };
    } finally {
      bytes.fill(0);
    }
  }

  /** Every key row, of every epoch held, by tenant, version, then epoch. */
  listKeys(): StoredKey[] {
    const rows = this.#db
      .prepare('SELECT * FROM keys ORDER BY tenant, version, epoch')
      .all() as KeyRow[];
    return rows.map((r) => this.#toKey(r));
  }

  /** The keys of one epoch, by tenant then version. */
  keysAtEpoch(epoch: number): StoredKey[] {
    const rows = this.#db
      .prepare('SELECT * FROM keys WHERE epoch = ? ORDER BY tenant, version')
      .all(epoch) as KeyRow[];
    return rows.map((r) => this.#toKey(r));
  }

  /** The public records of one epoch's keys (or of every row), nothing unsealed. */
  keyRecords(epoch?: number): KeyRecord[] {
    const rows = (
      epoch === undefined
        ? this.#db
            .prepare(
              'SELECT tenant, version, epoch, ceremony_id, key_package FROM keys ' +
                'ORDER BY tenant, version, epoch',
            )
            .all()
        : this.#db
            .prepare(
              'SELECT tenant, version, epoch, ceremony_id, key_package FROM keys ' +
                'WHERE epoch = ? ORDER BY tenant, version',
            )
            .all(epoch)
    ) as Omit<KeyRow, 'sealed_share'>[];
    return rows.map((r) => toRecord(r));
  }

  /** The share of (tenant, version) at `epoch`; without one, at the newest epoch held. */
  getKey(tenant: string, version: number, epoch?: number): StoredKey | undefined {
    const row = (
      epoch === undefined
        ? this.#db
            .prepare(
              'SELECT * FROM keys WHERE tenant = ? AND version = ? ORDER BY epoch DESC LIMIT 1',
            )
            .get(tenant, version)
        : this.#db
            .prepare('SELECT * FROM keys WHERE tenant = ? AND version = ? AND epoch = ?')
            .get(tenant, version, epoch)
    ) as KeyRow | undefined;
    return row && this.#toKey(row);
  }

  /** Whether this node holds a share of (tenant, version): at `epoch`, or at any epoch. */
  hasKey(tenant: string, version: number, epoch?: number): boolean {
    const row =
      epoch === undefined
        ? this.#db
            .prepare('SELECT 1 FROM keys WHERE tenant = ? AND version = ?')
            .get(tenant, version)
        : this.#db
            .prepare('SELECT 1 FROM keys WHERE tenant = ? AND version = ? AND epoch = ?')
            .get(tenant, version, epoch);
    return row !== undefined;
  }

  /** The key `ceremonyId` made, at the newest epoch held. */
  findKeyByCeremony(ceremonyId: string): StoredKey | undefined {
    const row = this.#db
      .prepare('SELECT * FROM keys WHERE ceremony_id = ? ORDER BY epoch DESC LIMIT 1')
      .get(ceremonyId) as KeyRow | undefined;
    return row && this.#toKey(row);
  }

  /** The ceremony that made the key of (tenant, version), if there is one; nothing is unsealed. */
  keyCeremonyId(tenant: string, version: number): string | undefined {
    const row = this.#db
      .prepare('SELECT ceremony_id FROM keys WHERE tenant = ? AND version = ? LIMIT 1')
      .get(tenant, version) as { ceremony_id: string } | undefined;
    return row?.ceremony_id;
  }

  /**
   * The public record of the key `ceremonyId` made, if it made one, at the newest epoch held;
   * nothing is unsealed.
   */
  keyRecordByCeremony(ceremonyId: string): KeyRecord | undefined {
    const row = this.#db
      .prepare(
        'SELECT tenant, version, epoch, ceremony_id, key_package FROM keys ' +
          'WHERE ceremony_id = ? ORDER BY epoch DESC LIMIT 1',
      )
      .get(ceremonyId) as Omit<KeyRow, 'sealed_share'> | undefined;
    return row && toRecord(row);
  }

  #sealShare(key: StoredKey): Uint8Array {
    const shareBytes = encodeScalar(key.share.reveal());
    try {
      return this.#sealer.seal(shareBytes, this.#shareContext(key.tenant, key.version, key.epoch));
    } finally {
      shareBytes.fill(0);
    }
  }

  /** A key row whose package names another key or epoch would serve the wrong verification share. */
  #checkPackage(key: StoredKey): void {
    const pkg = key.keyPackage;
    if (pkg.tenant !== key.tenant || pkg.version !== key.version || epochOf(pkg) !== key.epoch) {
      throw new KmaasError(
        'ERR_INTERNAL',
        `key package of ${pkg.tenant} v${pkg.version} epoch ${epochOf(pkg)} stored as ` +
          `${key.tenant} v${key.version} epoch ${key.epoch}`,
        { tenant: key.tenant, version: key.version, epoch: key.epoch },
      );
    }
  }

  #insertKey(key: StoredKey): void {
    this.#checkPackage(key);
    const r = this.#db
      .prepare(
        `INSERT INTO keys (tenant, version, epoch, ceremony_id, sealed_share, key_package,
                           created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
      )
      .run(
        key.tenant,
        key.version,
        key.epoch,
        key.ceremonyId,
        this.#sealShare(key),
        JSON.stringify(key.keyPackage),
        this.#now(),
      );
    if (r.changes !== 1) {
      throw new KmaasError(
        'ERR_CEREMONY_CONFLICT',
        `a key for ${key.tenant} v${key.version} at epoch ${key.epoch} already exists`,
        { tenant: key.tenant, version: key.version, epoch: key.epoch },
      );
    }
  }

  /**
   * Store a key a DKG finished, at the node's current epoch (1 before any epoch is recorded); its
   * package must carry that epoch. Its own ceremony's state is kept (dkg.commit erases it once
   * every participant holds the key: until then a participant that has not finished needs the
   * others to replay their rounds); the state of any other ceremony of that (tenant, version) can
   * never finish any more and is erased in the same transaction. Refuses a (tenant, version) that
   * has a key at any epoch (ERR_CEREMONY_CONFLICT). Returns the key as stored.
   */
  saveKey(key: NewKey): StoredKey {
    const eraseOthers = this.#db.prepare(
      'DELETE FROM ceremonies WHERE tenant = ? AND version = ? AND ceremony_id <> ?',
    );
    return this.#db.transaction(() => {
      const stored: StoredKey = { ...key, epoch: this.currentEpoch()?.epoch ?? 1 };
      if (this.hasKey(key.tenant, key.version)) {
        throw new KmaasError(
          'ERR_CEREMONY_CONFLICT',
          `a key for ${key.tenant} v${key.version} already exists`,
          { tenant: key.tenant, version: key.version },
        );
      }
      this.#insertKey(stored);
      eraseOthers.run(key.tenant, key.version, key.ceremonyId);
      return stored;
    })();
  }

  // --- Epochs ---

  /** The node's current committed epoch: the highest row; undefined before the first. */
  currentEpoch(): EpochRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM epochs ORDER BY epoch DESC LIMIT 1').get() as
      EpochRow | undefined;
    return row && toEpoch(row);
  }

  getEpoch(epoch: number): EpochRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM epochs WHERE epoch = ?').get(epoch) as
      EpochRow | undefined;
    return row && toEpoch(row);
  }

  /** Every committed epoch, ascending. */
  listEpochs(): EpochRecord[] {
    const rows = this.#db.prepare('SELECT * FROM epochs ORDER BY epoch').all() as EpochRow[];
    return rows.map(toEpoch);
  }

  /**
   * Adopt the genesis epoch 1 (the committee and threshold of the first accepted DKG proposal),
   * only when the node has no epoch yet. Returns the epoch now current: the new one, or the one
   * that was there (the caller compares it; nothing is overwritten).
   */
  saveGenesisEpoch(genesis: { threshold: number; committee: readonly CommitteeMember[] }): {
    record: EpochRecord;
    created: boolean;
  } {
    return this.#db.transaction(() => {
      const current = this.currentEpoch();
      if (current) return { record: current, created: false };
      const record: EpochRecord = {
        epoch: 1,
        threshold: genesis.threshold,
        committee: sortedCommittee(genesis.committee),
        reshareId: '',
        transcript: '',
        committedAt: this.#now(),
      };
      this.#insertEpoch(record);
      return { record, created: true };
    })();
  }

  #insertEpoch(r: EpochRecord): void {
    this.#db
      .prepare(
        `INSERT INTO epochs (epoch, threshold, committee, reshare_id, transcript, committed_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
      )
      .run(
        r.epoch,
        r.threshold,
        JSON.stringify(r.committee),
        r.reshareId,
        r.transcript,
        r.committedAt,
      );
  }

  /**
   * Commit epoch `record.epoch` and this node's shares of it (every one at that epoch, package
   * included), in one transaction: after a crash either both are there or neither. Shares of
   * older epochs are kept (retiring) until eraseKeysBefore. Idempotent: the same epoch already
   * committed with the same reshare id and transcript returns false and writes nothing; any other
   * epoch at or below the current one is ERR_CEREMONY_CONFLICT. True when committed now.
   */
  commitEpoch(record: EpochInput, keys: readonly StoredKey[]): boolean {
    return this.#db.transaction(() => {
      const existing = this.getEpoch(record.epoch);
      if (
        existing &&
        existing.reshareId === record.reshareId &&
        existing.transcript === record.transcript
      ) {
        return false;
      }
      const current = this.currentEpoch();
      if (existing || (current && record.epoch <= current.epoch)) {
        throw new KmaasError(
          'ERR_CEREMONY_CONFLICT',
          `epoch ${record.epoch} cannot be committed on node ${this.#nodeId}: ` +
            (existing
              ? 'it was committed by another transcript'
              : `it is at epoch ${current!.epoch}`),
          { epoch: record.epoch, current: current?.epoch ?? 0 },
        );
      }
      for (const key of keys) {
        if (key.epoch !== record.epoch) {
          throw new KmaasError(
            'ERR_INTERNAL',
            `key ${key.tenant} v${key.version} of epoch ${key.epoch} committed with epoch ${record.epoch}`,
          );
        }
        this.#insertKey(key);
      }
      this.#insertEpoch({
        ...record,
        committee: sortedCommittee(record.committee),
        committedAt: this.#now(),
      });
      return true;
    })();
  }

  /**
   * Erase every key row of an epoch below `epoch` (the shares of retired committees; secure_delete
   * overwrites them). Returns how many rows were erased.
   */
  eraseKeysBefore(epoch: number): number {
    return this.#db.prepare('DELETE FROM keys WHERE epoch < ?').run(epoch).changes;
  }

  /**
   * Checkpoint the WAL into node.db and truncate it to zero bytes. secure_delete zeroes deleted
   * rows in their pages, but the WAL still holds earlier images of those pages (the sealed shares
   * as they were written) until its frames are reused: after an erasure (reshare.finish,
   * key.retire, reshare.abort) they must go too. Outside any transaction.
   */
  scrubLog(): void {
    this.#db.pragma('wal_checkpoint(TRUNCATE)');
  }

  /**
   * Run `fn` in one SQLite transaction (a savepoint when one is open already): the store's own
   * methods nest, so a caller can group them with statements of its own.
   */
  transaction<T>(fn: () => T): T {
    return this.#db.transaction(fn)();
  }

  /**
   * @internal The database itself, for the resharing store (nodes/reshare*.ts), which keeps its
   * own tables here (CREATE TABLE IF NOT EXISTS) so that they commit atomically with the keys.
   * Nothing else may use it.
   */
  get db(): Database.Database {
    return this.#db;
  }

  /** @internal Seal a record of this node (for nodes/reshare*.ts); the AAD binds `ctx`. */
  seal(plaintext: Uint8Array, ctx: Omit<SealContext, 'nodeId'>): Uint8Array {
    return this.#sealer.seal(plaintext, { ...ctx, nodeId: this.#nodeId });
  }

  /**
   * @internal Open what `seal` sealed under the same `ctx`; ERR_INTERNAL when it fails
   * authentication (the row was altered or moved). The caller zeroes the result.
   */
  open(sealed: Uint8Array, ctx: Omit<SealContext, 'nodeId'>): Uint8Array {
    return this.#unseal(Buffer.from(sealed), { ...ctx, nodeId: this.#nodeId });
  }

  /** The store's clock (ms since the epoch). */
  now(): number {
    return this.#now();
  }

  loadCeremony(ceremonyId: string): StoredCeremony | undefined {
    const row = this.#db
      .prepare('SELECT * FROM ceremonies WHERE ceremony_id = ?')
      .get(ceremonyId) as CeremonyRow | undefined;
    if (!row) return undefined;
    const ctx = this.#ceremonyContext(row.ceremony_id, row.tenant, row.version);
    return {
      ceremonyId: row.ceremony_id,
      tenant: row.tenant,
      version: row.version,
      state: this.#unseal(row.sealed_state, ctx),
    };
  }

  /** Which key a stored ceremony is for, without unsealing its state. */
  ceremonyKey(ceremonyId: string): { tenant: string; version: number } | undefined {
    return this.#db
      .prepare('SELECT tenant, version FROM ceremonies WHERE ceremony_id = ?')
      .get(ceremonyId) as { tenant: string; version: number } | undefined;
  }

  saveCeremony(c: StoredCeremony): void {
    const sealed = this.#sealer.seal(
      c.state,
      this.#ceremonyContext(c.ceremonyId, c.tenant, c.version),
    );
    this.#db
      .prepare(
        `INSERT INTO ceremonies (ceremony_id, tenant, version, sealed_state, updated_at)
         VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (ceremony_id) DO UPDATE SET
           sealed_state = excluded.sealed_state, updated_at = excluded.updated_at
         WHERE tenant = excluded.tenant AND version = excluded.version`,
      )
      .run(c.ceremonyId, c.tenant, c.version, sealed, this.#now());
  }

  /** Erase the state of `ceremonyId`; true when there was one. */
  deleteCeremony(ceremonyId: string): boolean {
    return (
      this.#db.prepare('DELETE FROM ceremonies WHERE ceremony_id = ?').run(ceremonyId).changes > 0
    );
  }

  /**
   * Erase every abandoned ceremony: its (tenant, version) has no key, and its state has not
   * changed since before `cutoff` (ms since the epoch). Returns what was erased.
   */
  expireCeremonies(cutoff: number): ExpiredCeremony[] {
    const abandoned = `FROM ceremonies c WHERE c.updated_at < ? AND NOT EXISTS
      (SELECT 1 FROM keys k WHERE k.tenant = c.tenant AND k.version = c.version)`;
    const select = this.#db.prepare(
      `SELECT c.ceremony_id, c.tenant, c.version, c.updated_at ${abandoned} ORDER BY c.updated_at`,
    );
    const erase = this.#db.prepare('DELETE FROM ceremonies WHERE ceremony_id = ?');
    return this.#db.transaction(() => {
      const rows = select.all(cutoff) as (Omit<CeremonyRow, 'sealed_state'> & {
        updated_at: number;
      })[];
      for (const r of rows) erase.run(r.ceremony_id);
      return rows.map((r) => ({
        ceremonyId: r.ceremony_id,
        tenant: r.tenant,
        version: r.version,
        updatedAt: r.updated_at,
      }));
    })();
  }

  /** The recorded use of `nonce`, if any. */
  proposalUse(nonce: string): ProposalUse | undefined {
    const row = this.#db
      .prepare('SELECT nonce, proposal_id, ceremony_id, expires_at FROM proposals WHERE nonce = ?')
      .get(nonce) as
      { nonce: string; proposal_id: string; ceremony_id: string; expires_at: number } | undefined;
    return (
      row && {
        nonce: row.nonce,
        proposalId: row.proposal_id,
        ceremonyId: row.ceremony_id,
        expiresAt: row.expires_at,
      }
    );
  }

  #recordUse = (use: ProposalUse): void => {
    const now = this.#now();
    // Expired proposals are refused whatever their nonce: their rows are no longer needed.
    this.#db.prepare('DELETE FROM proposals WHERE expires_at < ?').run(now);
    const r = this.#db
      .prepare(
        `INSERT INTO proposals (nonce, proposal_id, ceremony_id, expires_at, used_at)
         VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
      )
      .run(use.nonce, use.proposalId, use.ceremonyId, use.expiresAt, now);
    if (r.changes !== 1) {
      throw new KmaasError('ERR_PROPOSAL_REPLAYED', `proposal nonce ${use.nonce} was used before`, {
        proposal: use.proposalId,
      });
    }
  };

  /** Record that a proposal was used; ERR_PROPOSAL_REPLAYED when its nonce already was. */
  recordProposalUse(use: ProposalUse): void {
    this.#db.transaction(this.#recordUse)(use);
  }

  /**
   * Retire (tenant, version) for `use`'s proposal, in one transaction: record the proposal, erase
   * the key row (the sealed share; secure_delete overwrites it) and any ceremony state of that
   * version, remember the retirement. False when there was no key to retire.
   */
  retireKey(tenant: string, version: number, use: ProposalUse): boolean {
    return this.#db.transaction(() => {
      // Every epoch's share of that version (a retiring one too).
      const erased = this.#db
        .prepare('DELETE FROM keys WHERE tenant = ? AND version = ?')
        .run(tenant, version).changes;
      if (erased < 1) return false;
      this.#recordUse(use);
      this.#db
        .prepare('DELETE FROM ceremonies WHERE tenant = ? AND version = ?')
        .run(tenant, version);
      this.#db
        .prepare(
          'INSERT INTO retired (tenant, version, proposal_id, retired_at) VALUES (?, ?, ?, ?)',
        )
        .run(tenant, version, use.proposalId, this.#now());
      return true;
    })();
  }

  isRetired(tenant: string, version: number): boolean {
    return (
      this.#db
        .prepare('SELECT 1 FROM retired WHERE tenant = ? AND version = ?')
        .get(tenant, version) !== undefined
    );
  }

  listRetired(): { tenant: string; version: number }[] {
    return this.#db
      .prepare('SELECT tenant, version FROM retired ORDER BY tenant, version')
      .all() as { tenant: string; version: number }[];
  }

  /** Every version of `tenant` this node holds or has retired, ascending. */
  tenantVersions(tenant: string): number[] {
    const rows = this.#db
      .prepare(
        `SELECT version FROM keys WHERE tenant = ?
         UNION SELECT version FROM retired WHERE tenant = ? ORDER BY version`,
      )
      .all(tenant, tenant) as { version: number }[];
    return rows.map((r) => r.version);
  }

  /** Idempotent. Closing checkpoints the WAL into node.db. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#db.close();
    } finally {
      this.#sealer.destroy();
    }
  }

  toJSON(): string {
    return `[NodeStore ${this.path}]`;
  }
}
