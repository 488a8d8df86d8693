/**
 * A TCP proxy that records every byte between a client (the coordinator) and a server (a share
 * node), in both directions, and a decoder that turns a recorded WebSocket connection back into
 * its messages (RFC 6455 section 5.2: HTTP upgrade, then frames, client frames masked). The proxy
 * does not speak WebSocket itself: it sees exactly what an observer on the wire would see.
 */
import { once } from 'node:events';
import {
  createConnection,
  createServer,
  type AddressInfo,
  type Server,
  type Socket,
} from 'node:net';

export interface RecordedConnection {
  /** Client -> server bytes, in order. */
  up: Buffer[];
  /** Server -> client bytes, in order. */
  down: Buffer[];
}

export class RecordingProxy {
  readonly connections: RecordedConnection[] = [];
  /**
   * When set, client -> server bytes that complete a message for which it returns true are held
   * back (recorded, not forwarded) until `release()`: a test can act between two messages.
   */
  holdIf: ((message: string) => boolean) | undefined;
  readonly #held: { upstream: Socket; data: Buffer }[] = [];
  #onHold: (() => void) | undefined;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();

  private constructor(server: Server) {
    this.#server = server;
  }

  /**
   * Listen on a free loopback port and forward every connection to 127.0.0.1:`targetPort` (a
   * function: asked at each connection, so the proxy may start before its target).
   */
  static async start(targetPort: number | (() => number)): Promise<RecordingProxy> {
    const server = createServer();
    const proxy = new RecordingProxy(server);
    server.on('connection', (client) => {
      const port = typeof targetPort === 'number' ? targetPort : targetPort();
      const upstream = createConnection({ host: '127.0.0.1', port });
      const rec: RecordedConnection = { up: [], down: [] };
      proxy.connections.push(rec);
      for (const s of [client, upstream]) {
        proxy.#sockets.add(s);
        s.on('close', () => proxy.#sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      let seen = 0;
      client.on('data', (d: Buffer) => {
        rec.up.push(Buffer.from(d));
        if (proxy.#held.length === 0 && proxy.holdIf) {
          const messages = decodeWebSocket(rec.up);
          const fresh = messages.slice(seen);
          seen = messages.length;
          if (fresh.some(proxy.holdIf)) {
            proxy.#held.push({ upstream, data: d });
            proxy.#onHold?.();
            return;
          }
        }
        if (proxy.#held.length > 0) proxy.#held.push({ upstream, data: d });
        else upstream.write(d);
      });
      upstream.on('data', (d: Buffer) => {
        rec.down.push(Buffer.from(d));
        client.write(d);
      });
      client.on('end', () => upstream.end());
      upstream.on('end', () => client.end());
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return proxy;
  }

  /** Resolves once bytes are held back by `holdIf`. */
  held(): Promise<void> {
    if (this.#held.length > 0) return Promise.resolve();
    return new Promise((resolve) => (this.#onHold = resolve));
  }

  /** Forward what was held back, and stop holding. */
  release(): void {
    this.holdIf = undefined;
    for (const { upstream, data } of this.#held.splice(0)) upstream.write(data);
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/**
 * The messages of one direction of a recorded WebSocket connection: the HTTP head is skipped,
 * frames are unmasked and fragments joined. Text and binary messages are returned as text
 * (binary as latin1, so no byte is lost). Throws on a compressed frame (RSV1), which would hide
 * its content from a byte scan.
 */
export function decodeWebSocket(chunks: readonly Buffer[]): string[] {
  const bytes = Buffer.concat(chunks);
  const head = bytes.indexOf('\r\n\r\n');
  if (head < 0) return [];
  let at = head + 4;
  const messages: string[] = [];
  let partial: Buffer[] = [];
  let partialOpcode = 0;
  while (at + 2 <= bytes.length) {
    const b0 = bytes[at]!;
    const b1 = bytes[at + 1]!;
    const fin = (b0 & 0x80) !== 0;
    if ((b0 & 0x40) !== 0) throw new Error('compressed WebSocket frame (RSV1) in the recording');
    const opcode = b0 & 0x0f;
    const masked = (b1 & 0x80) !== 0;
    let length = b1 & 0x7f;
    let p = at + 2;
    if (length === 126) {
      if (p + 2 > bytes.length) break;
      length = bytes.readUInt16BE(p);
      p += 2;
    } else if (length === 127) {
      if (p + 8 > bytes.length) break;
      length = Number(bytes.readBigUInt64BE(p));
      p += 8;
    }
    const mask = masked ? bytes.subarray(p, p + 4) : undefined;
    if (masked) p += 4;
    if (p + length > bytes.length) break; // cut off when the connection closed
    const payload = Buffer.from(bytes.subarray(p, p + length));
    if (mask) for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i % 4]!;
    at = p + length;
    if (opcode >= 0x8) continue; // close, ping, pong: control frames carry no message
    if (opcode !== 0) {
      partial = [];
      partialOpcode = opcode;
    }
    partial.push(payload);
    if (fin) {
      const data = Buffer.concat(partial);
      messages.push(data.toString(partialOpcode === 1 ? 'utf8' : 'latin1'));
      partial = [];
    }
  }
  return messages;
}
