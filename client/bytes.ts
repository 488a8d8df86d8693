/**
 * A FIFO of bytes fed with pieces of any size, from which exact lengths are taken. It lets the
 * envelope code work on fixed-size frames whatever sizes a stream happens to deliver. Pieces are
 * copied on the way in, because a source may reuse its buffer once it has been handed over.
 */
import { KmaasError } from '../shared/errors.ts';

/** Bytes backed by a plain ArrayBuffer, which is what WebCrypto accepts. */
export type Bytes = Uint8Array<ArrayBuffer>;

export class ByteQueue {
  private parts: Uint8Array[] = [];
  /** Index of the first unread part, and read offset into it. */
  private first = 0;
  private offset = 0;
  private size = 0;

  get length(): number {
    return this.size;
  }

  push(piece: unknown): void {
    if (!(piece instanceof Uint8Array)) {
      throw new KmaasError('ERR_VALIDATION', 'source: expected a stream of Uint8Array chunks', {
        field: 'source',
      });
    }
    if (piece.length === 0) return;
    this.parts.push(piece.slice());
    this.size += piece.length;
  }

  /** Remove and return exactly `n` bytes (n <= length) as a fresh array. */
  take(n: number): Bytes {
    if (n > this.size) throw new RangeError(`take(${n}) with ${this.size} bytes queued`);
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const part = this.parts[this.first]!;
      const k = Math.min(part.length - this.offset, n - filled);
      out.set(part.subarray(this.offset, this.offset + k), filled);
      filled += k;
      this.offset += k;
      if (this.offset === part.length) {
        this.first++;
        this.offset = 0;
      }
    }
    this.size -= n;
    // Drop consumed parts now and then, so a stream of tiny pieces stays linear.
    if (this.first > 64 && this.first * 2 > this.parts.length) {
      this.parts = this.parts.slice(this.first);
      this.first = 0;
    }
    return out;
  }
}
