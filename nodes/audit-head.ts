/**
 * The signed head of a node's audit log: `<dataDir>/audit.head`, one JSON object
 *
 *   { seq, hash, time, node, signature }
 *
 *   seq        seq of the last entry on disk when the head was written
 *   hash       that entry's `hash` (64 lowercase hex digits)
 *   time       when the head was written (ISO 8601, UTC); informational, not signed
 *   node       the node id
 *   signature  unpadded base64url Ed25519 signature (RFC 8032) of the node's identity signing key
 *              (identity.ts) over headMessage(node, seq, hash)
 *
 * A hash chain shows an edited or removed line, but not lines cut from its end: what is left is
 * still a valid chain. The head closes that gap. The writer (audit-log.ts) rewrites it after each
 * batch of lines is fsynced, never before, so a crash leaves the head at or behind the file,
 * never ahead of it; a log that ends before the head's seq was cut (ERR_AUDIT_TRUNCATED). The
 * head is replaced atomically: written to `audit.head.tmp`, fsynced, renamed over the old one.
 *
 * Only the node's identity key can sign a head, so whoever edits the file cannot move the head
 * back with it. Deleting the head altogether is not detectable from the data folder alone;
 * `kmaas audit verify` with the node's signing key requires one.
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { hexToBytes } from '@noble/hashes/utils.js';
import { open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { concat, fromB64, toB64, utf8Bytes } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import { MAX_IDENTIFIER } from '../shared/identifiers.ts';

export const AUDIT_HEAD_FILE = 'audit.head';
/** Domain separation: the identity key signs other things too (DKG transcripts, packages). */
export const AUDIT_HEAD_LABEL = 'KMaaS-v1 audit head';
/** A head file is about 250 bytes; anything far bigger is not one. */
const MAX_HEAD_BYTES = 4096;

export interface AuditHead {
  seq: number;
  hash: string;
  time: string;
  node: number;
  signature: string;
}

const headSchema = z.strictObject({
  seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  hash: z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits'),
  time: z.string().min(1).max(64),
  node: z.number().int().min(1).max(MAX_IDENTIFIER),
  signature: z.string().regex(/^[A-Za-z0-9_-]{86}$/, 'expected 64 bytes of base64url'),
});

/** Signs head messages: the node's identity (identity.ts) in production. */
export interface HeadSigner {
  node: number;
  sign(message: Uint8Array): Uint8Array;
  /** Ed25519 public key of `sign`, used to check an existing head at open. */
  publicKey: Uint8Array;
}

/** label || u32be(node) || u64be(seq) || hash (32 bytes): fixed lengths, so unambiguous. */
export function headMessage(node: number, seq: number, hash: string): Uint8Array {
  const numbers = new Uint8Array(12);
  const view = new DataView(numbers.buffer);
  view.setUint32(0, node);
  view.setBigUint64(4, BigInt(seq));
  return concat(utf8Bytes(AUDIT_HEAD_LABEL), numbers, hexToBytes(hash));
}

export function signHead(
  signer: Pick<HeadSigner, 'node' | 'sign'>,
  seq: number,
  hash: string,
  time: string,
): AuditHead {
  const signature = toB64(signer.sign(headMessage(signer.node, seq, hash)));
  return { seq, hash, time, node: signer.node, signature };
}

/** Whether `publicKey` signed this head; false for any malformed key or signature. */
export function headSignatureValid(head: AuditHead, publicKey: Uint8Array): boolean {
  try {
    const signature = fromB64(head.signature, 'signature');
    return ed25519.verify(signature, headMessage(head.node, head.seq, head.hash), publicKey);
  } catch {
    return false;
  }
}

function headError(path: string, problem: string): KmaasError {
  return new KmaasError('ERR_AUDIT_HEAD', `audit head ${path}: ${problem}`, { path });
}

/** Parse a head file's text; ERR_AUDIT_HEAD when it is not one. */
export function parseAuditHead(text: string, path: string): AuditHead {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw headError(path, 'not valid JSON');
  }
  const parsed = headSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.join('.') || '(top level)';
    throw headError(path, `field ${where}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

/** The head at `path`, or undefined when there is no such file; ERR_AUDIT_HEAD when unreadable. */
export async function readAuditHead(path: string): Promise<AuditHead | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  if (bytes.length > MAX_HEAD_BYTES) throw headError(path, `longer than ${MAX_HEAD_BYTES} bytes`);
  return parseAuditHead(bytes.toString('utf8'), path);
}

/**
 * Replace `<dir>/audit.head` atomically: a reader sees the old head or the new one, whole. The
 * temporary file is fsynced before the rename, so the name never points at unwritten bytes. The
 * folder is not fsynced here (the writer does it at close): a rename lost to a power cut leaves
 * the older head, which is behind the file, never ahead of it.
 */
export async function writeAuditHead(dir: string, head: AuditHead): Promise<void> {
  const path = join(dir, AUDIT_HEAD_FILE);
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(head)}\n`, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** fsync a folder, so that a rename in it survives a power loss. */
export async function syncFolder(dir: string): Promise<void> {
  const folder = await open(dir, 'r');
  try {
    await folder.sync();
  } finally {
    await folder.close();
  }
}
