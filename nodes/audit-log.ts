/**
 * The share node's audit log (DESIGN.md section 5): `<dataDir>/audit.jsonl`, append-only and
 * hash-chained, one JSON object per line.
 *
 *   { seq, time, type, tenant?, version?, subject?, count?, requestId, ceremonyId?, proposal?,
 *     operation?, outcome, repairedTail?, prev, hash }
 *
 *   seq   1 for the first line, then +1 per line
 *   prev  hex SHA-256 of the previous line's bytes (UTF-8, without its newline); 64 zeros first
 *   hash  hex SHA-256 of the canonical JSON (RFC 8785) of the entry without `hash`
 *
 * Entries hold public facts only: never blinded elements, evaluations, tokens or shares. The
 * writer copies the fields named above and nothing else from what it is given.
 *
 * The hot path does not wait on the disk (DESIGN.md section 7): append() builds, hashes and
 * chains the entry in memory and returns; a writer appends the lines queued meanwhile as one
 * batch and fsyncs it. A crash loses at most the entries not yet fsynced, and leaves at worst a
 * torn last line, which the next open() moves aside (audit.jsonl.torn-<time>) before it
 * continues the chain from the last complete line and records that it did (node.start with
 * `repairedTail`). Lines already written are never rewritten.
 *
 * After each batch is fsynced, the writer replaces the signed head (audit-head.ts) with the seq
 * and hash of the batch's last entry, so that lines cut from the end show too. At open, a head
 * ahead of the file stops the start (ERR_AUDIT_TRUNCATED) rather than continuing the chain over
 * the gap, and a head that is not this node's or does not match the file stops it too
 * (ERR_AUDIT_HEAD).
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import { canonicalJson } from '../shared/canonical-json.ts';
import { KmaasError, type ErrorCode } from '../shared/errors.ts';
import {
  AUDIT_HEAD_FILE,
  headSignatureValid,
  readAuditHead,
  signHead,
  syncFolder,
  writeAuditHead,
  type AuditHead,
  type HeadSigner,
} from './audit-head.ts';

export const AUDIT_FILE = 'audit.jsonl';
/** The `prev` of the first line. */
export const GENESIS = '0'.repeat(64);
/** Far above any entry the node writes (under 1 KiB); a longer line is refused unread. */
const MAX_LINE_BYTES = 1024 * 1024;
const NEWLINE = 0x0a;

/** Evaluations, every DKG message type, proposals applied, and the node's own start and stop. */
export type AuditType =
  | 'evaluate'
  | `dkg.${string}`
  | `reshare.${string}`
  | 'proposal.apply'
  | 'node.start'
  | 'node.stop';
const AUDIT_TYPE =
  /^(?:evaluate|dkg\.[a-z0-9]+|reshare\.[a-z]+|proposal\.apply|node\.start|node\.stop)$/;

/** 'ok', or the error code the request was refused with. */
export type AuditOutcome = 'ok' | ErrorCode;

export interface AuditEvent {
  type: AuditType;
  tenant?: string;
  version?: number;
  /** Who the credential names: the shared development token for now, later the OIDC subject. */
  subject?: string;
  /** Number of blinded elements in an evaluation. */
  count?: number;
  /** The request's id; for node.start and node.stop, an id shared by one run of the node. */
  requestId: string;
  ceremonyId?: string;
  /** The id (hex SHA-256) of the operator proposal a dkg.round1 or proposal.apply carried. */
  proposal?: string;
  /** Its operation: tenant.create, key.rotate, key.retire. */
  operation?: string;
  outcome: AuditOutcome;
  /** On node.start only: a torn last line was found and moved to `file`. */
  repairedTail?: { file: string; bytes: number };
}

export interface AuditEntry extends AuditEvent {
  seq: number;
  /** ISO 8601, UTC. */
  time: string;
  prev: string;
  hash: string;
}

const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits');

/** What every line must hold; further fields are allowed (the hash covers them too). */
const entrySchema = z.looseObject({
  seq: z.number().int().min(1),
  time: z.string().min(1),
  type: z
    .string()
    .regex(
      AUDIT_TYPE,
      'expected evaluate, dkg.<round>, reshare.<step>, proposal.apply, node.start or node.stop',
    ),
  requestId: z.string().min(1),
  outcome: z.string().min(1),
  prev: hex64,
  hash: hex64,
});

function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The `hash` an entry must carry: over everything in it but `hash` itself. */
export function entryHash(entry: Record<string, unknown>): string {
  const rest = { ...entry };
  delete rest.hash;
  return sha256Hex(canonicalJson(rest));
}

/** What the next line's `prev` must be. */
export function lineHash(line: string | Uint8Array): string {
  return sha256Hex(line);
}

function short(hash: string): string {
  return `${hash.slice(0, 12)}...`;
}

type LineCheck =
  { entry: z.infer<typeof entrySchema>; seq: number } | { reason: string; seq: number | undefined };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** One line (without its newline) against the chain so far. */
function checkLine(bytes: Uint8Array, expectedSeq: number, expectedPrev: string): LineCheck {
  if (bytes.length > MAX_LINE_BYTES) {
    return { reason: `line longer than ${MAX_LINE_BYTES} bytes`, seq: undefined };
  }
  let json: unknown;
  try {
    json = JSON.parse(utf8.decode(bytes));
  } catch {
    return { reason: 'not a JSON line', seq: undefined };
  }
  const parsed = entrySchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.join('.') || '(top level)';
    const seq = (json as { seq?: unknown } | null)?.seq;
    return {
      reason: `field ${where}: ${issue?.message ?? 'invalid'}`,
      seq: Number.isSafeInteger(seq) ? (seq as number) : undefined,
    };
  }
  const entry = parsed.data;
  if (entry.seq !== expectedSeq) {
    return {
      reason: `seq is ${entry.seq}, expected ${expectedSeq} (a line is missing, moved or repeated)`,
      seq: entry.seq,
    };
  }
  if (entry.prev !== expectedPrev) {
    const what = expectedSeq === 1 ? 'the genesis value' : 'the hash of the previous line';
    return {
      reason: `prev is ${short(entry.prev)}, expected ${what} ${short(expectedPrev)}`,
      seq: entry.seq,
    };
  }
  const computed = entryHash(entry);
  if (entry.hash !== computed) {
    return {
      reason: `hash is ${short(entry.hash)} but the entry hashes to ${short(computed)} (edited)`,
      seq: entry.seq,
    };
  }
  return { entry, seq: entry.seq };
}

export interface AuditVerification {
  ok: boolean;
  /** Entries that verified: all of them when `ok`, else those before the first broken one. */
  entries: number;
  /** seq of the last entry that verified (0 when none did). */
  lastSeq: number;
  /** `hash` of the last entry that verified (GENESIS when none did). */
  head: string;
  /**
   * The first line that fails, 1-based; `seq` is the one it carries, or the one it should carry
   * when it has none that can be read.
   */
  firstBroken?: { line: number; seq: number; reason: string };
  /** The signed head checked against the log, when one was given. */
  signedHead?: AuditHead & { signatureChecked: boolean };
  /** The log ends before the signed head: entries from `firstMissing` to `headSeq` were cut. */
  truncated?: { firstMissing: number; headSeq: number };
  /** The signed head does not verify, or does not match the log. */
  headProblem?: string;
}

export interface VerifyOptions {
  /** The signed head (audit-head.ts) that the log must reach. */
  head?: AuditHead | undefined;
  /** The node's Ed25519 signing public key; when given, the head's signature is checked. */
  signingKey?: Uint8Array | undefined;
}

interface Scan {
  entries: number;
  lastSeq: number;
  head: string;
  firstBroken?: { line: number; seq: number; reason: string };
  /** The last line has no newline: the file was cut mid-line, or a write was torn. */
  torn?: boolean;
  /** The `hash` of the entry whose seq is the one asked for, when the scan reached it. */
  hashAt?: string;
}

/** Read the chain line by line; stops at the first broken line. */
async function scanChain(path: string, seqOfInterest: number | undefined): Promise<Scan> {
  const scan: Scan = { entries: 0, lastSeq: 0, head: GENESIS };
  let prev = GENESIS;
  const broken = (seq: number | undefined, reason: string, torn = false): Scan => ({
    ...scan,
    firstBroken: { line: scan.entries + 1, seq: seq ?? scan.lastSeq + 1, reason },
    ...(torn ? { torn } : {}),
  });

  const stream = createReadStream(path);
  let rest: Buffer = Buffer.alloc(0);
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const buf = rest.length === 0 ? chunk : Buffer.concat([rest, chunk]);
      let start = 0;
      for (let nl = buf.indexOf(NEWLINE); nl !== -1; nl = buf.indexOf(NEWLINE, start)) {
        const line = buf.subarray(start, nl);
        const checked = checkLine(line, scan.lastSeq + 1, prev);
        if ('reason' in checked) return broken(checked.seq, checked.reason);
        scan.entries += 1;
        scan.lastSeq = checked.seq;
        scan.head = checked.entry.hash;
        if (checked.seq === seqOfInterest) scan.hashAt = checked.entry.hash;
        prev = lineHash(line);
        start = nl + 1;
      }
      rest = buf.subarray(start);
      if (rest.length > MAX_LINE_BYTES) {
        return broken(undefined, `line longer than ${MAX_LINE_BYTES} bytes`);
      }
    }
  } finally {
    stream.destroy();
  }
  if (rest.length > 0) {
    const checked = checkLine(rest, scan.lastSeq + 1, prev);
    return broken(
      checked.seq,
      'last line has no newline (a torn write, or the file was cut)',
      true,
    );
  }
  return scan;
}

/**
 * Check a whole audit log, reading it as a stream: every line parses, seq goes up by one from
 * 1, prev is the hash of the previous line and hash matches the entry. Stops at the first
 * broken line. A chain alone cannot show lines cut from its end: with `options.head` (the signed
 * head, audit-head.ts), a log that ends before the head's seq is `truncated`, naming the first
 * missing seq, and a log whose entry at that seq has another hash is a `headProblem`. With
 * `options.signingKey` the head's signature is checked first; a bad one is a `headProblem`.
 */
export async function verifyAuditLog(
  path: string,
  options: VerifyOptions = {},
): Promise<AuditVerification> {
  const { head: signed, signingKey } = options;
  if (signed && signingKey && !headSignatureValid(signed, signingKey)) {
    const scan = await scanChain(path, undefined);
    return {
      ...result(scan),
      ok: false,
      signedHead: { ...signed, signatureChecked: true },
      headProblem: `the signature of the head (seq ${signed.seq}) does not verify with the node's signing key`,
    };
  }
  const scan = await scanChain(path, signed?.seq);
  const out = result(scan);
  if (!signed) return out;
  out.signedHead = { ...signed, signatureChecked: signingKey !== undefined };
  // A line edited or removed before the end is named as such; a cut end is a truncation, also
  // when the cut fell in the middle of a line.
  if (scan.firstBroken && !scan.torn) return out;
  if (signed.seq > scan.lastSeq) {
    delete out.firstBroken;
    out.ok = false;
    out.truncated = { firstMissing: scan.lastSeq + 1, headSeq: signed.seq };
    return out;
  }
  if (scan.hashAt !== signed.hash) {
    out.ok = false;
    out.headProblem =
      `the head signs hash ${short(signed.hash)} for seq ${signed.seq}, but the log's entry ` +
      `${signed.seq} has hash ${short(scan.hashAt ?? '')} (the log was rewritten at or before it)`;
  }
  return out;
}

function result(scan: Scan): AuditVerification {
  const { entries, lastSeq, head, firstBroken } = scan;
  return firstBroken
    ? { ok: false, entries, lastSeq, head, firstBroken }
    : { ok: true, entries, lastSeq, head };
}

/** The index of the last newline before `end`, reading backwards; -1 when there is none. */
async function lastNewline(fh: FileHandle, end: number, limit = Infinity): Promise<number> {
  const chunk = Buffer.alloc(64 * 1024);
  let pos = end;
  while (pos > 0 && end - pos < limit) {
    const length = Math.min(chunk.length, pos);
    pos -= length;
    const { bytesRead } = await fh.read(chunk, 0, length, pos);
    const at = chunk.subarray(0, bytesRead).lastIndexOf(NEWLINE);
    if (at !== -1) return pos + at;
  }
  return -1;
}

async function readAt(fh: FileHandle, start: number, end: number): Promise<Buffer> {
  const buf = Buffer.alloc(end - start);
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, start + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return buf.subarray(0, done);
}

/** Write `bytes` to a new file next to `path`, named after the time, and fsync it. */
async function moveAside(path: string, bytes: Buffer, time: string): Promise<string> {
  const stamp = time.replace(/[:.]/g, '-');
  for (let n = 0; ; n++) {
    const aside = `${path}.torn-${stamp}${n === 0 ? '' : `-${n}`}`;
    let fh: FileHandle;
    try {
      fh = await open(aside, 'wx', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw err;
    }
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    return aside;
  }
}

/** The entry on a line, when it is one whose hash matches; else undefined. */
function lastEntry(line: Uint8Array): z.infer<typeof entrySchema> | undefined {
  try {
    const parsed = entrySchema.safeParse(JSON.parse(utf8.decode(line)));
    return parsed.success && parsed.data.hash === entryHash(parsed.data) ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

interface ChainHead {
  seq: number;
  prev: string;
  head: string;
  repairedTail?: { file: string; bytes: number };
}

/**
 * Where the chain continues: the last complete line. A torn tail (bytes after the last newline,
 * left by a crash mid-write) is copied aside, then cut off; nothing before it is touched.
 */
async function recover(
  fh: FileHandle,
  path: string,
  time: string,
  log: Logger,
): Promise<ChainHead> {
  const size = (await fh.stat()).size;
  let end = size;
  let repairedTail: ChainHead['repairedTail'];
  let nl = await lastNewline(fh, end);
  if (nl !== size - 1) {
    const torn = await readAt(fh, nl + 1, size);
    const file = await moveAside(path, torn, time);
    await fh.truncate(nl + 1);
    await fh.sync();
    end = nl + 1;
    repairedTail = { file: basename(file), bytes: torn.length };
    log.warn(
      { path, bytes: torn.length, movedTo: file },
      'audit log: torn last line moved aside; the chain continues from the last complete line',
    );
  }
  const fresh = { seq: 0, prev: GENESIS, head: GENESIS };
  if (end === 0) return repairedTail ? { ...fresh, repairedTail } : fresh;

  nl = end - 1;
  const start = (await lastNewline(fh, nl, MAX_LINE_BYTES)) + 1;
  const line = nl - start > MAX_LINE_BYTES ? undefined : await readAt(fh, start, nl);
  // Only its own integrity can be checked here; `kmaas audit verify` checks the whole chain.
  const entry = line && lastEntry(line);
  if (!line || !entry) {
    throw new KmaasError(
      'ERR_AUDIT_BROKEN',
      `the last line of ${path} is not a valid audit entry; the chain cannot continue from it. ` +
        `Run \`kmaas audit verify ${path}\`, keep the file as evidence and move it away to start a new log`,
      { path },
    );
  }
  return {
    seq: entry.seq,
    prev: lineHash(line),
    head: entry.hash,
    ...(repairedTail ? { repairedTail } : {}),
  };
}

export interface AuditLogOptions {
  logger: Logger;
  /** Milliseconds since the epoch; default Date.now. Tests pass a fixed clock. */
  now?: () => number;
  /** Signs `audit.head` after each batch (audit-head.ts); without one, no head is kept. */
  signer?: HeadSigner;
}

/**
 * An existing head against the chain just recovered: it must be this node's, signed by it, and
 * not ahead of the file. Refusing here keeps a restart from continuing the chain over a cut and
 * then signing a head that hides it.
 */
async function checkExistingHead(dir: string, start: ChainHead, signer: HeadSigner): Promise<void> {
  const path = join(dir, AUDIT_HEAD_FILE);
  const head = await readAuditHead(path);
  if (!head) return;
  const evidence =
    `keep ${AUDIT_FILE} and ${AUDIT_HEAD_FILE} as evidence and move both away to start a new log; ` +
    `\`kmaas audit verify\` names what is wrong`;
  if (head.node !== signer.node || !headSignatureValid(head, signer.publicKey)) {
    throw new KmaasError(
      'ERR_AUDIT_HEAD',
      `${path} is not signed by this node (node ${signer.node}); ${evidence}`,
      { path },
    );
  }
  if (head.seq > start.seq) {
    throw new KmaasError(
      'ERR_AUDIT_TRUNCATED',
      `${join(dir, AUDIT_FILE)} ends at seq ${start.seq} but its signed head is at seq ${head.seq}: ` +
        `entries from seq ${start.seq + 1} were cut; ${evidence}`,
      { path: join(dir, AUDIT_FILE), firstMissing: start.seq + 1, headSeq: head.seq },
    );
  }
  if (head.seq === start.seq && head.hash !== start.head) {
    throw new KmaasError(
      'ERR_AUDIT_HEAD',
      `the last entry (seq ${start.seq}) of ${join(dir, AUDIT_FILE)} is not the one its signed ` +
        `head names; ${evidence}`,
      { path },
    );
  }
}

/** Only the fields of the format, in its order: nothing else reaches the file. */
function pick(event: AuditEvent): AuditEvent {
  return {
    type: event.type,
    ...(event.tenant === undefined ? {} : { tenant: event.tenant }),
    ...(event.version === undefined ? {} : { version: event.version }),
    ...(event.subject === undefined ? {} : { subject: event.subject }),
    ...(event.count === undefined ? {} : { count: event.count }),
    requestId: event.requestId,
    ...(event.ceremonyId === undefined ? {} : { ceremonyId: event.ceremonyId }),
    ...(event.proposal === undefined ? {} : { proposal: event.proposal }),
    ...(event.operation === undefined ? {} : { operation: event.operation }),
    outcome: event.outcome,
    ...(event.repairedTail === undefined
      ? {}
      : { repairedTail: { file: event.repairedTail.file, bytes: event.repairedTail.bytes } }),
  };
}

export class AuditLog {
  readonly path: string;
  /** Shared by this run's node.start and node.stop entries. */
  readonly runId = randomUUID();
  readonly #fh: FileHandle;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #signer: HeadSigner | undefined;
  #seq: number;
  #prev: string;
  #head: string;
  /** Lines appended but not yet handed to a batch. */
  #pending: string[] = [];
  /** seq and hash of the last of the pending lines: what the head says once they are on disk. */
  #pendingHead: { seq: number; hash: string } | undefined;
  #scheduled = false;
  /** Settles when the last batch scheduled is on disk (or failed); never rejects. */
  #tail: Promise<void> = Promise.resolve();
  #failed = false;
  #failure: unknown;
  #lost = 0;
  #closed = false;
  #closing: Promise<void> | undefined;

  private constructor(path: string, fh: FileHandle, start: ChainHead, options: AuditLogOptions) {
    this.path = path;
    this.#fh = fh;
    this.#log = options.logger;
    this.#now = options.now ?? Date.now;
    this.#signer = options.signer;
    this.#seq = start.seq;
    this.#prev = start.prev;
    this.#head = start.head;
  }

  /**
   * Open `<dataDir>/audit.jsonl` (created when missing), repair a torn tail, and record
   * node.start (with `repairedTail` when there was one). Throws ERR_AUDIT_BROKEN when the last
   * complete line is not a valid entry: that is tampering or corruption, not a crash. With a
   * signer, throws ERR_AUDIT_TRUNCATED when the file ends before its signed head, ERR_AUDIT_HEAD
   * when the head is not this node's or names another last entry.
   */
  static async open(dataDir: string, options: AuditLogOptions): Promise<AuditLog> {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const path = join(dataDir, AUDIT_FILE);
    const fh = await open(path, 'a+', 0o600);
    let start: ChainHead;
    try {
      const time = new Date((options.now ?? Date.now)()).toISOString();
      start = await recover(fh, path, time, options.logger);
      if (options.signer) await checkExistingHead(dataDir, start, options.signer);
    } catch (err) {
      await fh.close();
      throw err;
    }
    const audit = new AuditLog(path, fh, start, options);
    const { repairedTail } = start;
    audit.append({
      type: 'node.start',
      requestId: audit.runId,
      outcome: 'ok',
      ...(repairedTail ? { repairedTail } : {}),
    });
    return audit;
  }

  /** seq of the last entry appended (0 for an empty log). */
  get seq(): number {
    return this.#seq;
  }

  /** `hash` of the last entry appended. */
  get head(): string {
    return this.#head;
  }

  /**
   * Chain one entry and queue its line; returns at once, without waiting for the disk. Throws
   * only when the log is closed.
   */
  append(event: AuditEvent): AuditEntry {
    if (this.#closed) throw new Error('audit log is closed');
    const body = {
      seq: this.#seq + 1,
      time: new Date(this.#now()).toISOString(),
      ...pick(event),
      prev: this.#prev,
    };
    const entry: AuditEntry = { ...body, hash: entryHash(body) };
    const line = JSON.stringify(entry);
    this.#seq = entry.seq;
    this.#prev = lineHash(line);
    this.#head = entry.hash;
    this.#pending.push(`${line}\n`);
    this.#pendingHead = { seq: entry.seq, hash: entry.hash };
    if (!this.#scheduled) {
      this.#scheduled = true;
      this.#tail = this.#tail.then(() => this.#writeBatch());
    }
    return entry;
  }

  /** Group commit: everything queued since the last batch started, in one write and one fsync. */
  async #writeBatch(): Promise<void> {
    this.#scheduled = false;
    const lines = this.#pending;
    const head = this.#pendingHead;
    this.#pending = [];
    this.#pendingHead = undefined;
    // After a failed write the file may end in a torn line: appending after it would bury it in
    // the middle, so nothing more is written until a restart repairs it.
    if (this.#failed) {
      this.#lost += lines.length;
      return;
    }
    try {
      await this.#fh.appendFile(lines.join(''), 'utf8');
      await this.#fh.sync();
    } catch (err) {
      this.#failed = true;
      this.#failure = err;
      this.#lost += lines.length;
      this.#log.error(
        { err, path: this.path, lost: lines.length },
        'audit log write failed: no further entries are written until the node restarts',
      );
      return;
    }
    // Only now, with the lines on disk: a crash before this line leaves the head behind them.
    if (this.#signer && head) await this.#writeHead(head);
  }

  async #writeHead(last: { seq: number; hash: string }): Promise<void> {
    const signer = this.#signer!;
    const time = new Date(this.#now()).toISOString();
    try {
      await writeAuditHead(dirname(this.path), signHead(signer, last.seq, last.hash, time));
    } catch (err) {
      // The lines are safe; only the proof against truncation lags until a later batch.
      this.#log.error({ err, path: this.path, seq: last.seq }, 'audit head write failed');
    }
  }

  /** Resolves when every entry appended so far is on disk; rejects if a write failed. */
  async flush(): Promise<void> {
    await this.#tail;
    if (this.#failed) throw this.#failure;
  }

  /**
   * Record node.stop with `outcome`, write everything and close the file. Idempotent; rejects
   * (after closing) if any entry could not be written.
   */
  close(outcome: AuditOutcome = 'ok'): Promise<void> {
    return (this.#closing ??= this.#close(outcome));
  }

  async #close(outcome: AuditOutcome): Promise<void> {
    this.append({ type: 'node.stop', requestId: this.runId, outcome });
    this.#closed = true;
    try {
      await this.flush();
      if (this.#signer) await syncFolder(dirname(this.path));
    } finally {
      await this.#fh.close();
      if (this.#lost > 0) {
        this.#log.error({ path: this.path, lost: this.#lost }, 'audit entries were not written');
      }
    }
  }
}
