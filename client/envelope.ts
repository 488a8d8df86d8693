/**
 * The KMaaS envelope, format v1: a document encrypted under its document key, in chunks, so that
 * files of any size stream through in constant memory.
 *
 *   magic        8 bytes  "KMAASENC"
 *   format       1 byte   1
 *   header len   2 bytes  big-endian, 1..65535
 *   header       UTF-8 JSON { tenant, keyVersion, documentId, chunkSize, salt }
 *   chunk 0..n   AES-256-GCM(chunk key, nonce_i, AD = every byte above, plaintext_i) || tag
 *
 * Chunk key = HKDF-SHA-256(ikm = document key, salt = header.salt (32 random bytes), info =
 * "KMaaS-v1 envelope chunk key"). The document key is the same every time a document is
 * encrypted; the fresh salt makes the chunk key fresh, so no (key, nonce) pair is ever reused.
 *
 * Chunks follow the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizar, "Online
 * Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015, section 7):
 * nonce_i = 7 zero bytes || I2OSP(i, 4) || final flag (1 on the last chunk, else 0). Every chunk
 * but the last holds exactly chunkSize plaintext bytes; the last holds 0..chunkSize (an empty
 * document is one empty final chunk). A reader therefore knows a frame is the last one when the
 * input ends after it, and the flag in the nonce makes every way of cutting, reordering or
 * extending the chunk sequence fail authentication.
 *
 * When a chunk fails, the reader tries the other value of the final flag to tell the cases apart:
 * a full frame that opens as non-final where the input ends means the final chunk was cut off,
 * and a frame that opens as final with input after it means bytes were appended. Both are
 * ERR_ENVELOPE_FORMAT; anything else that fails to open is ERR_DECRYPT_FAILED (a tampered or
 * reordered chunk, the wrong key, or a cut inside a chunk, which no framing can tell apart from a
 * short final chunk that was tampered with).
 *
 * Decryption yields each chunk's plaintext once that chunk has authenticated. A stream that is cut
 * short is only detected at its end, so a caller that must not act on a partial document writes
 * the plaintext aside and uses it once the iteration has finished without error (the CLI writes a
 * temporary file and renames it).
 *
 * Only WebCrypto (globalThis.crypto: HKDF, AES-GCM) is used, so this runs in browsers too.
 */
import { z } from 'zod';
import { checkTenant, MAX_DOCUMENT_ID_BYTES, TENANT_PATTERN } from '../shared/document.ts';
import { concat, fromB64, toB64, utf8Bytes } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import { ByteQueue, type Bytes } from './bytes.ts';
import { checkKeyVersion } from './key-packages.ts';

export const MAGIC = utf8Bytes('KMAASENC');
export const FORMAT_VERSION = 1;
/** magic + format byte + header length. */
export const FIXED_PREFIX_BYTES = MAGIC.length + 1 + 2;
export const TAG_BYTES = 16;
export const NONCE_BYTES = 12;
export const SALT_BYTES = 32;
export const KEY_BYTES = 32;
export const DEFAULT_CHUNK_SIZE = 1 << 20;
/** Bounds what a reader buffers for one frame, whatever a header claims. */
export const MAX_CHUNK_SIZE = 1 << 24;
/** The chunk counter is 4 bytes. */
export const MAX_CHUNKS = 2 ** 32;
export const CHUNK_KEY_INFO = utf8Bytes('KMaaS-v1 envelope chunk key');

export interface EnvelopeHeader {
  tenant: string;
  keyVersion: number;
  documentId: string;
  /** Plaintext bytes per chunk. */
  chunkSize: number;
  /** base64url of the 32-byte HKDF salt. */
  salt: string;
}

export interface EncryptOptions {
  /** The 32-byte document key (documentKeyBytes). */
  key: Uint8Array;
  tenant: string;
  keyVersion: number;
  documentId: string;
  /** Plaintext bytes per chunk, 1..MAX_CHUNK_SIZE. Default 1 MiB. */
  chunkSize?: number;
  /** Source of the salt; tests pass a fixed one. Default: crypto.getRandomValues. */
  random?: (length: number) => Uint8Array;
}

const headerSchema = z
  .object({
    tenant: z.string().regex(TENANT_PATTERN),
    keyVersion: z.number().int().min(1).max(0xffffffff),
    documentId: z
      .string()
      .min(1)
      .refine((d) => utf8Bytes(d).length <= MAX_DOCUMENT_ID_BYTES, 'documentId too long'),
    chunkSize: z.number().int().min(1).max(MAX_CHUNK_SIZE),
    salt: z.string(),
  })
  .strict();

function formatError(message: string, details?: Record<string, unknown>): KmaasError {
  return new KmaasError('ERR_ENVELOPE_FORMAT', message, details);
}

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new KmaasError('ERR_CONFIG', 'WebCrypto (crypto.subtle) is not available');
  return s;
}

function defaultRandom(length: number): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(length));
}

function checkDocumentId(documentId: string): void {
  const n = utf8Bytes(documentId).length;
  if (n === 0 || n > MAX_DOCUMENT_ID_BYTES) {
    throw new KmaasError(
      'ERR_VALIDATION',
      `documentId: 1-${MAX_DOCUMENT_ID_BYTES} bytes of UTF-8`,
      { field: 'documentId' },
    );
  }
}

function checkChunkSize(chunkSize: number): void {
  if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > MAX_CHUNK_SIZE) {
    throw new KmaasError('ERR_VALIDATION', `chunkSize: expected 1..${MAX_CHUNK_SIZE}`, {
      field: 'chunkSize',
    });
  }
}

/** nonce_i = 0^7 || I2OSP(i, 4) || final. */
export function chunkNonce(counter: number, final: boolean): Bytes {
  const nonce = new Uint8Array(NONCE_BYTES);
  new DataView(nonce.buffer).setUint32(7, counter);
  nonce[11] = final ? 1 : 0;
  return nonce;
}

/**
 * HKDF-SHA-256(document key, salt, info) (RFC 5869) as a non-extractable AES-256-GCM key, all in
 * WebCrypto (deriveKey with HKDF): the chunk key never exists as bytes in script memory.
 */
export async function deriveChunkKey(
  documentKey: Uint8Array,
  salt: Uint8Array,
  usage: 'encrypt' | 'decrypt',
): Promise<CryptoKey> {
  if (documentKey.length !== KEY_BYTES) {
    throw new KmaasError('ERR_VALIDATION', `key: expected ${KEY_BYTES} bytes`, { field: 'key' });
  }
  // WebCrypto wants buffers of its own (not views of a shared or pooled one): copies, wiped after.
  const ikm = new Uint8Array(documentKey);
  try {
    const base = await subtle().importKey('raw', ikm, 'HKDF', false, ['deriveKey']);
    return await subtle().deriveKey(
      {
        name: 'HKDF',
        hash: 'SHA-256',
        salt: new Uint8Array(salt),
        info: new Uint8Array(CHUNK_KEY_INFO),
      },
      base,
      { name: 'AES-GCM', length: KEY_BYTES * 8 },
      false,
      [usage],
    );
  } finally {
    ikm.fill(0);
  }
}

function encodePrefix(header: EnvelopeHeader): Bytes {
  // Fixed key order, so the same inputs always give the same header bytes.
  const json = utf8Bytes(
    JSON.stringify({
      tenant: header.tenant,
      keyVersion: header.keyVersion,
      documentId: header.documentId,
      chunkSize: header.chunkSize,
      salt: header.salt,
    }),
  );
  if (json.length > 0xffff) throw new KmaasError('ERR_VALIDATION', 'envelope header too long');
  const fixed = new Uint8Array(FIXED_PREFIX_BYTES);
  fixed.set(MAGIC);
  fixed[MAGIC.length] = FORMAT_VERSION;
  new DataView(fixed.buffer).setUint16(MAGIC.length + 1, json.length);
  return new Uint8Array(concat(fixed, json));
}

/**
 * Encrypt `source` into an envelope. Validation happens on the call; the key is derived and the
 * source read when the result is iterated. The header comes out first, then one frame per chunk.
 *
 * @example
 *   const out = encryptStream(file.stream(), { key, tenant: 'acme', keyVersion: 1, documentId: 'a.pdf' });
 *   for await (const bytes of out) sink.write(bytes);
 */
export function encryptStream(
  source: AsyncIterable<Uint8Array>,
  opts: EncryptOptions,
): AsyncIterable<Uint8Array> {
  checkTenant(opts.tenant);
  checkKeyVersion(opts.keyVersion, 'keyVersion');
  checkDocumentId(opts.documentId);
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  checkChunkSize(chunkSize);
  if (opts.key.length !== KEY_BYTES) {
    throw new KmaasError('ERR_VALIDATION', `key: expected ${KEY_BYTES} bytes`, { field: 'key' });
  }
  const key = opts.key;
  const salt = (opts.random ?? defaultRandom)(SALT_BYTES);
  if (salt.length !== SALT_BYTES) throw new KmaasError('ERR_INTERNAL', 'salt source failed');
  const prefix = encodePrefix({
    tenant: opts.tenant,
    keyVersion: opts.keyVersion,
    documentId: opts.documentId,
    chunkSize,
    salt: toB64(salt),
  });

  return (async function* () {
    const chunkKey = await deriveChunkKey(key, salt, 'encrypt');
    const seal = async (plaintext: Bytes, counter: number, final: boolean): Promise<Bytes> => {
      if (counter >= MAX_CHUNKS) {
        throw new KmaasError('ERR_VALIDATION', 'document too large for one envelope');
      }
      const iv = chunkNonce(counter, final);
      const params = { name: 'AES-GCM', iv, additionalData: prefix, tagLength: 128 };
      const sealed = new Uint8Array(await subtle().encrypt(params, chunkKey, plaintext));
      plaintext.fill(0);
      return sealed;
    };

    yield prefix.slice();
    const queue = new ByteQueue();
    let counter = 0;
    for await (const piece of source) {
      queue.push(piece);
      // Strictly more than a chunk queued: this one is full and not the last.
      while (queue.length > chunkSize) yield await seal(queue.take(chunkSize), counter++, false);
    }
    yield await seal(queue.take(queue.length), counter, true);
  })();
}

/**
 * An envelope whose header has been read and checked, and whose chunks are still unread. Get one
 * from readHeader, look at `header` (to know which key to derive), then pass it to decryptStream.
 */
export class EnvelopeReader {
  private consumed = false;

  /** @internal Use readHeader. */
  constructor(
    readonly header: EnvelopeHeader,
    /** magic through header: the additional data of every chunk. */
    readonly prefix: Bytes,
    private readonly salt: Uint8Array,
    private readonly iterator: AsyncIterator<Uint8Array>,
    private readonly queue: ByteQueue,
  ) {}

  /** Stop reading the source (when the caller will not decrypt after all). */
  async close(): Promise<void> {
    this.consumed = true;
    await this.iterator.return?.();
  }

  /** @internal */
  take(): { salt: Uint8Array; iterator: AsyncIterator<Uint8Array>; queue: ByteQueue } {
    if (this.consumed) throw new KmaasError('ERR_VALIDATION', 'envelope already read');
    this.consumed = true;
    return { salt: this.salt, iterator: this.iterator, queue: this.queue };
  }
}

/** Read and check magic, format version and header; the chunks stay in the source. */
export async function readHeader(source: AsyncIterable<Uint8Array>): Promise<EnvelopeReader> {
  const iterator = source[Symbol.asyncIterator]();
  const queue = new ByteQueue();
  const fill = async (n: number): Promise<boolean> => {
    while (queue.length < n) {
      const r = await iterator.next();
      if (r.done) return false;
      queue.push(r.value);
    }
    return true;
  };
  try {
    if (!(await fill(FIXED_PREFIX_BYTES)))
      throw formatError('truncated: no complete envelope prefix');
    const fixed = queue.take(FIXED_PREFIX_BYTES);
    if (!MAGIC.every((b, i) => fixed[i] === b))
      throw formatError('not a KMaaS envelope (bad magic)');
    const format = fixed[MAGIC.length]!;
    if (format !== FORMAT_VERSION) {
      throw formatError(`unknown envelope format version ${format}`, { format });
    }
    const length = new DataView(fixed.buffer).getUint16(MAGIC.length + 1);
    if (length === 0) throw formatError('empty envelope header');
    if (!(await fill(length))) throw formatError('truncated: incomplete envelope header');
    const json = queue.take(length);
    const { header, salt } = parseHeader(json);
    return new EnvelopeReader(header, new Uint8Array(concat(fixed, json)), salt, iterator, queue);
  } catch (err) {
    await iterator.return?.();
    throw err;
  }
}

function parseHeader(json: Uint8Array): { header: EnvelopeHeader; salt: Uint8Array } {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
  } catch {
    throw formatError('envelope header is not UTF-8 JSON');
  }
  const r = headerSchema.safeParse(value);
  if (!r.success) {
    const field = r.error.issues[0]?.path.join('.') || 'header';
    throw formatError(`envelope header: ${field}: ${r.error.issues[0]?.message ?? 'invalid'}`, {
      field,
    });
  }
  let salt: Uint8Array;
  try {
    salt = fromB64(r.data.salt, 'salt');
  } catch {
    throw formatError('envelope header: salt: expected base64url', { field: 'salt' });
  }
  if (salt.length !== SALT_BYTES) {
    throw formatError(`envelope header: salt: expected ${SALT_BYTES} bytes`, { field: 'salt' });
  }
  return { header: r.data, salt };
}

/**
 * Decrypt an envelope with its document key. `input` is the raw envelope or what readHeader
 * returned for it. Each chunk's plaintext is yielded once it has authenticated; the iteration
 * ends without error only when the final chunk authenticated and nothing follows it.
 */
export function decryptStream(
  input: AsyncIterable<Uint8Array> | EnvelopeReader,
  key: Uint8Array,
): AsyncIterable<Uint8Array> {
  if (key.length !== KEY_BYTES) {
    throw new KmaasError('ERR_VALIDATION', `key: expected ${KEY_BYTES} bytes`, { field: 'key' });
  }
  return (async function* () {
    const reader = input instanceof EnvelopeReader ? input : await readHeader(input);
    const { salt, iterator, queue } = reader.take();
    const { prefix } = reader;
    let ended = false;
    try {
      const chunkKey = await deriveChunkKey(key, salt, 'decrypt');
      const open = async (frame: Bytes, counter: number, final: boolean) => {
        const iv = chunkNonce(counter, final);
        const params = { name: 'AES-GCM', iv, additionalData: prefix, tagLength: 128 };
        try {
          return new Uint8Array(await subtle().decrypt(params, chunkKey, frame));
        } catch {
          return undefined;
        }
      };
      const frameSize = reader.header.chunkSize + TAG_BYTES;
      for (let counter = 0; ; counter++) {
        if (counter >= MAX_CHUNKS) throw formatError('more chunks than the counter allows');
        // A full frame is the last one exactly when the input ends after it: read one byte past.
        while (!ended && queue.length <= frameSize) {
          const r = await iterator.next();
          if (r.done) ended = true;
          else queue.push(r.value);
        }

        if (queue.length > frameSize) {
          const frame = queue.take(frameSize);
          const plaintext = await open(frame, counter, false);
          if (plaintext) {
            yield plaintext;
            continue;
          }
          const asFinal = await open(frame, counter, true);
          if (asFinal) {
            asFinal.fill(0);
            throw formatError(`trailing bytes after the final chunk (chunk ${counter})`, {
              chunk: counter,
            });
          }
          throw decryptError(counter);
        }

        if (queue.length < TAG_BYTES) {
          throw formatError(`truncated: chunk ${counter} is shorter than its tag`, {
            chunk: counter,
          });
        }
        const frame = queue.take(queue.length);
        const plaintext = await open(frame, counter, true);
        if (plaintext) {
          yield plaintext;
          return;
        }
        if (frame.length === frameSize) {
          const asInner = await open(frame, counter, false);
          if (asInner) {
            asInner.fill(0);
            throw formatError(`truncated: the final chunk is missing after chunk ${counter}`, {
              chunk: counter,
            });
          }
        }
        throw decryptError(counter);
      }
    } finally {
      if (!ended) await iterator.return?.();
    }
  })();
}

function decryptError(counter: number): KmaasError {
  return new KmaasError(
    'ERR_DECRYPT_FAILED',
    `chunk ${counter} does not authenticate: the envelope was modified or the key is wrong`,
    { chunk: counter },
  );
}

/** Envelope size for a plaintext of `length` bytes. */
export function envelopeLength(header: EnvelopeHeader, length: number): number {
  const prefix = encodePrefix(header).length;
  const chunks = Math.max(1, Math.ceil(length / header.chunkSize));
  return prefix + length + chunks * TAG_BYTES;
}
