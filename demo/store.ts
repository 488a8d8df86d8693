/**
 * The archive's storage: metadata in SQLite (better-sqlite3, the engine the share nodes use:
 * one process, nothing else to run), envelopes as files beside it. Only what the browser sent is
 * kept: the envelope (ciphertext) and the metadata it declared (name, type); the archive never
 * holds a key nor a plaintext byte.
 *
 *   <dataDir>/archive.sqlite   one row per document
 *   <dataDir>/blobs/<id>       the envelope, exactly as uploaded
 *   <dataDir>/tmp/             uploads in progress; emptied at open
 *
 * An upload is written to tmp/, fsynced, renamed into blobs/ (and the folder fsynced), and only
 * then gets its row: a crash leaves either nothing visible or the whole document. A crash
 * between the rename and the insert leaves a blob without a row, which nobody can list; open()
 * removes those.
 *
 * Known shortcoming: the metadata is in clear (file name, type, size, uploader), as the shared
 * list needs it; a name can say as much as a document.
 */
import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { KmaasError } from '../shared/errors.ts';

/** What the list shows of a document. */
export interface DocumentMeta {
  id: string;
  /** The file name the uploader gave. */
  name: string;
  /** Its MIME type, as the uploader declared it. */
  type: string;
  /** Plaintext bytes, computed from the envelope's length and chunk size. */
  size: number;
  /** Envelope bytes as stored. */
  envelopeSize: number;
  tenant: string;
  /** The uploader's `sub`. */
  owner: string;
  /** The envelope header's document id and key version: what the key is derived from. */
  documentId: string;
  keyVersion: number;
  /** ISO 8601. */
  createdAt: string;
}

interface Row {
  id: string;
  name: string;
  type: string;
  size: number;
  envelope_size: number;
  tenant: string;
  owner: string;
  document_id: string;
  key_version: number;
  created_at: string;
}

const ID = /^[0-9a-f-]{36}$/;

const fromRow = (r: Row): DocumentMeta => ({
  id: r.id,
  name: r.name,
  type: r.type,
  size: r.size,
  envelopeSize: r.envelope_size,
  tenant: r.tenant,
  owner: r.owner,
  documentId: r.document_id,
  keyVersion: r.key_version,
  createdAt: r.created_at,
});

export class ArchiveStore {
  readonly #db: Database.Database;
  readonly #blobs: string;
  readonly #tmp: string;

  private constructor(readonly dataDir: string) {
    this.#blobs = join(dataDir, 'blobs');
    this.#tmp = join(dataDir, 'tmp');
    mkdirSync(this.#blobs, { recursive: true });
    rmSync(this.#tmp, { recursive: true, force: true });
    mkdirSync(this.#tmp, { recursive: true });
    this.#db = new Database(join(dataDir, 'archive.sqlite'));
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = FULL');
    this.#db.exec(`CREATE TABLE IF NOT EXISTS documents (
      id TEXT PRIMARY KEY,
      name TEXT NOT NULL,
      type TEXT NOT NULL,
      size INTEGER NOT NULL,
      envelope_size INTEGER NOT NULL,
      tenant TEXT NOT NULL,
      owner TEXT NOT NULL,
      document_id TEXT NOT NULL,
      key_version INTEGER NOT NULL,
      created_at TEXT NOT NULL
    ) STRICT`);
  }

  /** Open (or create) the archive in `dataDir`, dropping unfinished uploads and orphan blobs. */
  static open(dataDir: string): ArchiveStore {
    const store = new ArchiveStore(dataDir);
    const known = new Set(
      (store.#db.prepare('SELECT id FROM documents').all() as { id: string }[]).map((r) => r.id),
    );
    for (const name of readdirSync(store.#blobs)) {
      if (!known.has(name)) rmSync(join(store.#blobs, name), { force: true });
    }
    return store;
  }

  /** A fresh path for an upload in progress. */
  tempPath(): string {
    return join(this.#tmp, `${randomUUID()}.part`);
  }

  /**
   * Make the upload at `tempPath` (already written and fsynced) a document: rename it into
   * place, fsync the folder, insert its row. Returns its metadata.
   */
  async commit(
    tempPath: string,
    meta: Omit<DocumentMeta, 'id' | 'createdAt'>,
  ): Promise<DocumentMeta> {
    const doc: DocumentMeta = { ...meta, id: randomUUID(), createdAt: new Date().toISOString() };
    await rename(tempPath, this.blobPath(doc.id));
    const dir = await open(this.#blobs, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    this.#db
      .prepare(
        `INSERT INTO documents (id, name, type, size, envelope_size, tenant, owner, document_id,
           key_version, created_at)
         VALUES (@id, @name, @type, @size, @envelopeSize, @tenant, @owner, @documentId,
           @keyVersion, @createdAt)`,
      )
      .run(doc);
    return doc;
  }

  /** Every document, newest first (the platform's shared archive: every tenant's). */
  list(): DocumentMeta[] {
    const rows = this.#db
      .prepare('SELECT * FROM documents ORDER BY created_at DESC, id')
      .all() as Row[];
    return rows.map(fromRow);
  }

  /** One document's metadata; ERR_UNKNOWN_DOCUMENT when there is none with that id. */
  get(id: string): DocumentMeta {
    const row = ID.test(id)
      ? (this.#db.prepare('SELECT * FROM documents WHERE id = ?').get(id) as Row | undefined)
      : undefined;
    if (!row) throw new KmaasError('ERR_UNKNOWN_DOCUMENT', 'no document with that id');
    return fromRow(row);
  }

  blobPath(id: string): string {
    if (!ID.test(id)) throw new KmaasError('ERR_UNKNOWN_DOCUMENT', 'no document with that id');
    return join(this.#blobs, id);
  }

  /** Remove a document: its row first (so it is gone from the list at once), then its blob. */
  async delete(id: string): Promise<void> {
    this.#db.prepare('DELETE FROM documents WHERE id = ?').run(id);
    await rm(this.blobPath(id), { force: true });
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}
