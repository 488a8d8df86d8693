/** Byte-stream helpers for the envelope and client tests. */
import { expect } from 'chai';
import { Readable } from 'node:stream';
import { KmaasError, type ErrorCode } from '../../../shared/errors.ts';

export async function collect(source: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const p of source) {
    parts.push(p);
    n += p.length;
  }
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function* slices(bytes: Uint8Array, sizes: readonly number[]): Generator<Uint8Array> {
  let off = 0;
  let i = 0;
  do {
    const n = sizes[i++ % sizes.length]!;
    yield bytes.slice(off, off + n);
    off += n;
  } while (off < bytes.length);
}

/**
 * `bytes` delivered in pieces of the given sizes, cycled (0 gives an empty piece), so a test
 * controls exactly where a stream is split.
 */
export function pieces(
  bytes: Uint8Array,
  sizes: readonly number[] = [bytes.length || 1],
): AsyncIterable<Uint8Array> {
  return Readable.from(slices(bytes, sizes));
}

/** Pieces of random sizes in 0..max. */
export function randomPieces(bytes: Uint8Array, max: number): AsyncIterable<Uint8Array> {
  const sizes = Array.from({ length: 64 }, () => Math.floor(Math.random() * (max + 1)));
  if (!sizes.some((s) => s > 0)) sizes.push(1);
  return pieces(bytes, sizes);
}

export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    globalThis.crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

/** Await `promise` and check that it fails with a KmaasError carrying one of `codes`. */
export async function expectCode(
  promise: Promise<unknown>,
  ...codes: ErrorCode[]
): Promise<KmaasError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected a failure with ${codes.join(' or ')}`).to.be.instanceOf(KmaasError);
  const err = caught as KmaasError;
  expect(codes, `got ${err.code}: ${err.message}`).to.include(err.code);
  return err;
}
