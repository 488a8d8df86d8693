/**
 * Receiving an uploaded envelope: the request body is streamed to a file (never held in
 * memory), counted against the limit, and looked at only as far as the server can without a
 * key: the fixed prefix and the header (client/envelope.ts, format v1) must parse, and the
 * framing must add up (every frame at least a tag long), from which the plaintext size follows.
 * Whether the chunks authenticate only a key holder can tell; the browser checks that on open.
 */
import { Readable } from 'node:stream';
import { open, rm } from 'node:fs/promises';
import {
  FIXED_PREFIX_BYTES,
  MAGIC,
  TAG_BYTES,
  readHeader,
  type EnvelopeHeader,
} from '../client/envelope.ts';
import { KmaasError } from '../shared/errors.ts';

export interface ReceivedEnvelope {
  header: EnvelopeHeader;
  /** Bytes written. */
  envelopeSize: number;
  /** Plaintext bytes the envelope holds. */
  plaintextSize: number;
}

export interface ReceiveOptions {
  /** Where to write; the caller renames it (store.commit) or it is removed on failure. */
  path: string;
  /** Envelope bytes accepted at most. */
  maxEnvelopeBytes: number;
  /** Plaintext bytes accepted at most. */
  maxPlaintextBytes: number;
  /** Called once the header has been read, before the rest is written: may refuse it. */
  onHeader?: (header: EnvelopeHeader) => void;
}

const notEnvelope = (why: string) =>
  new KmaasError('ERR_ENVELOPE_FORMAT', `body: not a KMaaS envelope (${why})`, { field: 'body' });

const tooLarge = (limit: number, what: string) =>
  new KmaasError('ERR_BODY_TOO_LARGE', `body: ${what} exceeds ${limit} bytes`, {
    field: 'body',
    limit,
  });

/** Stream `body` into `opts.path`, fsync it, and describe it; removes the file on any failure. */
export async function receiveEnvelope(
  body: Readable,
  opts: ReceiveOptions,
): Promise<ReceivedEnvelope> {
  const file = await open(opts.path, 'wx', 0o600);
  let header: EnvelopeHeader | undefined;
  let prefixBytes = 0;
  let head: Buffer = Buffer.alloc(0);
  let total = 0;
  try {
    try {
      for await (const piece of body as AsyncIterable<Buffer>) {
        total += piece.length;
        if (total > opts.maxEnvelopeBytes) throw tooLarge(opts.maxEnvelopeBytes, 'the envelope');
        if (header === undefined) {
          head = Buffer.concat([head, piece]);
          const parsed = await parsePrefix(head);
          if (parsed) {
            ({ header, prefixBytes } = parsed);
            opts.onHeader?.(header);
            head = Buffer.alloc(0);
          }
        }
        await file.write(piece);
      }
      if (header === undefined) throw notEnvelope('it ends before its header does');
      await file.sync();
    } finally {
      await file.close();
    }
    const plaintextSize = plaintextLength(total - prefixBytes, header.chunkSize);
    if (plaintextSize > opts.maxPlaintextBytes) {
      throw tooLarge(opts.maxPlaintextBytes, 'the document');
    }
    return { header, envelopeSize: total, plaintextSize };
  } catch (err) {
    await rm(opts.path, { force: true });
    throw err;
  }
}

/**
 * The header, once `head` holds all of it; undefined while more bytes are needed. A wrong magic
 * is refused as soon as its 8 bytes are in, before anything more is read.
 */
async function parsePrefix(
  head: Buffer,
): Promise<{ header: EnvelopeHeader; prefixBytes: number } | undefined> {
  const magic = head.subarray(0, MAGIC.length);
  if (!magic.equals(Buffer.from(MAGIC).subarray(0, magic.length))) throw notEnvelope('bad magic');
  if (head.length < FIXED_PREFIX_BYTES) return undefined;
  const prefixBytes = FIXED_PREFIX_BYTES + head.readUInt16BE(MAGIC.length + 1);
  if (head.length < prefixBytes) return undefined;
  // readHeader checks the format version and the header's schema; given exactly the prefix, it
  // reads nothing else.
  const reader = await readHeader(Readable.from([new Uint8Array(head.subarray(0, prefixBytes))]));
  await reader.close();
  return { header: reader.header, prefixBytes };
}

/**
 * Plaintext bytes of an envelope whose chunks take `body` bytes: frames of chunkSize + tag, the
 * last one shorter or equal, and at least one frame (an empty document is one empty final
 * chunk). Refuses a body that cannot be such a sequence.
 */
export function plaintextLength(body: number, chunkSize: number): number {
  const frame = chunkSize + TAG_BYTES;
  const frames = Math.max(1, Math.ceil(body / frame));
  const last = body - (frames - 1) * frame;
  if (last < TAG_BYTES) throw notEnvelope('its last chunk is shorter than a tag');
  return body - frames * TAG_BYTES;
}
