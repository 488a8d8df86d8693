/**
 * A fault-injecting TCP proxy for one coordinator -> node link of the chaos run: the
 * coordinator's KMAAS_NODES URL names the proxy, which forwards bytes to the node and back, in
 * one of four modes that the chaos runner switches in-process:
 *
 *   pass     bytes flow as they come
 *   latency  every chunk, each way, waits `ms` plus up to `jitterMs` more; order is kept
 *   drop     a black hole: nothing is forwarded either way and nothing is lost. Sockets are
 *            paused, so bytes wait in the kernel buffers as unacknowledged TCP data would wait
 *            for retransmission; new connections are accepted and left hanging. Back in pass,
 *            everything flows again, unless a side gave up and closed meanwhile.
 *   cut      every connection is reset (RST) at once, and new ones are reset as they arrive,
 *            until the mode changes
 *
 * Bytes are never altered: the proxy breaks timing and connectivity, not content. The Byzantine
 * node (a node that lies with valid-looking answers) is the node's own failpoint, not this.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export type ProxyMode =
  | { kind: 'pass' }
  | { kind: 'latency'; ms: number; jitterMs: number }
  | { kind: 'drop' }
  | { kind: 'cut' };

export interface ProxyOptions {
  /** The node's port on 127.0.0.1; retarget() moves it. */
  targetPort: number;
  targetHost?: string;
  /** Source of the jitter (the chaos run's seeded PRNG); default Math.random. */
  random?: () => number;
}

export interface ProxyStats {
  accepted: number;
  /** Connections reset on arrival while cut. */
  refused: number;
  /** Connections reset by a cut. */
  reset: number;
  open: number;
}

/** One direction of one connection: chunks from `from` to `to`, delayed in latency mode. */
class Pipe {
  readonly #queue: { due: number; chunk: Buffer }[] = [];
  #timer: NodeJS.Timeout | null = null;
  #lastDue = 0;
  #ended = false;

  constructor(
    readonly from: Socket,
    readonly to: Socket,
    private readonly delay: () => number,
  ) {
    from.on('data', (chunk: Buffer) => this.#push(chunk));
    from.on('end', () => {
      this.#ended = true;
      this.#flush();
    });
  }

  #push(chunk: Buffer): void {
    const delay = this.delay();
    if (delay === 0 && this.#queue.length === 0) {
      this.#write(chunk);
      return;
    }
    // Never before a chunk that came earlier: order is the stream's.
    const due = Math.max(this.#lastDue, Date.now() + delay);
    this.#lastDue = due;
    this.#queue.push({ due, chunk });
    this.#arm();
  }

  #write(chunk: Buffer): void {
    if (this.to.destroyed) return;
    if (!this.to.write(chunk)) {
      this.from.pause();
      this.to.once('drain', () => this.from.resume());
    }
  }

  #arm(): void {
    if (this.#timer || this.#queue.length === 0) return;
    const wait = Math.max(0, this.#queue[0]!.due - Date.now());
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#flush();
    }, wait);
  }

  #flush(): void {
    const now = Date.now();
    while (this.#queue.length > 0 && this.#queue[0]!.due <= now) {
      this.#write(this.#queue.shift()!.chunk);
    }
    if (this.#queue.length > 0) return this.#arm();
    if (this.#ended && !this.to.destroyed) this.to.end();
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#queue.length = 0;
  }
}

/** A client connection and, once connected, its upstream connection to the node. */
interface Link {
  client: Socket;
  upstream: Socket | null;
  pipes: Pipe[];
}

export class FaultProxy {
  readonly #server: Server;
  readonly #links = new Set<Link>();
  readonly #random: () => number;
  readonly #host: string;
  #targetPort: number;
  #mode: ProxyMode = { kind: 'pass' };
  readonly stats: ProxyStats = { accepted: 0, refused: 0, reset: 0, open: 0 };

  constructor(opts: ProxyOptions) {
    this.#targetPort = opts.targetPort;
    this.#host = opts.targetHost ?? '127.0.0.1';
    this.#random = opts.random ?? Math.random;
    this.#server = createServer({ pauseOnConnect: true }, (socket) => this.#accept(socket));
  }

  /** Listen on 127.0.0.1 (port 0: any free one); resolves with the port. */
  listen(port = 0): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, '127.0.0.1', () => {
        this.#server.off('error', reject);
        resolve(this.port);
      });
    });
  }

  get port(): number {
    const addr = this.#server.address();
    return typeof addr === 'object' && addr ? addr.port : 0;
  }

  get mode(): ProxyMode {
    return this.#mode;
  }

  /** Forward new connections to another port (a node that came back on a new one). */
  retarget(port: number): void {
    this.#targetPort = port;
  }

  setMode(mode: ProxyMode): void {
    const was = this.#mode.kind;
    this.#mode = mode;
    if (mode.kind === 'cut') {
      for (const link of [...this.#links]) {
        this.stats.reset++;
        this.#destroy(link, true);
      }
    } else if (mode.kind === 'drop') {
      for (const link of this.#links) {
        link.client.pause();
        link.upstream?.pause();
      }
    } else if (was === 'drop') {
      for (const link of [...this.#links]) this.#flow(link);
    }
  }

  async close(): Promise<void> {
    for (const link of [...this.#links]) this.#destroy(link, false);
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(client: Socket): void {
    if (this.#mode.kind === 'cut') {
      this.stats.refused++;
      client.resetAndDestroy();
      return;
    }
    this.stats.accepted++;
    const link: Link = { client, upstream: null, pipes: [] };
    this.#links.add(link);
    this.stats.open = this.#links.size;
    client.setNoDelay(true);
    client.on('error', () => this.#destroy(link, false));
    client.on('close', () => this.#destroy(link, false));
    // In drop mode the connection waits, accepted and silent, until the mode changes.
    if (this.#mode.kind !== 'drop') this.#flow(link);
  }

  /** Connect upstream if not yet, and let bytes move. */
  #flow(link: Link): void {
    if (!this.#links.has(link)) return;
    if (!link.upstream) {
      const upstream = connect({ host: this.#host, port: this.#targetPort });
      link.upstream = upstream;
      upstream.setNoDelay(true);
      upstream.on('error', () => this.#destroy(link, false));
      upstream.on('close', () => this.#destroy(link, false));
      const delay = (): number => {
        const m = this.#mode;
        return m.kind === 'latency' ? m.ms + Math.floor(this.#random() * (m.jitterMs + 1)) : 0;
      };
      link.pipes = [new Pipe(link.client, upstream, delay), new Pipe(upstream, link.client, delay)];
    }
    link.client.resume();
    link.upstream.resume();
  }

  #destroy(link: Link, reset: boolean): void {
    if (!this.#links.delete(link)) return;
    this.stats.open = this.#links.size;
    for (const pipe of link.pipes) pipe.stop();
    for (const socket of [link.client, link.upstream]) {
      if (!socket || socket.destroyed) continue;
      if (reset) socket.resetAndDestroy();
      else socket.destroy();
    }
  }
}
