/**
 * One WebSocket link from the coordinator to one share node, protocol v1 of shared/messages.ts:
 *
 *   coordinator -> node  { v: 1, id, type, body }               (upgrade carries Bearer <cluster token>)
 *   node -> coordinator  { v: 1, id, ok: true, body } | { v: 1, id, ok: false, error }
 *
 * The link matches replies to requests by id and gives each request its own deadline. It keeps
 * itself alive: reconnects with capped exponential backoff and jitter, pings every heartbeat and
 * terminates a socket whose pongs stop coming. Whatever happens to the socket, a pending request
 * fails at once with ERR_NODE_UNAVAILABLE; nothing waits on a dead connection.
 */
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { KmaasError, type ErrorBody } from '../shared/errors.ts';
import {
  nodeReplyEnvelope,
  PROTOCOL_VERSION,
  type NodeRequest,
  type NodeRequestType,
} from '../shared/messages.ts';
import type { Logger } from './logger.ts';
import type { Redacted } from '../shared/redacted.ts';

/** Replies are small (256 elements are ~12 KiB); anything far larger is a broken or hostile node. */
const MAX_REPLY_BYTES = 1 << 20;
/** Weight of the newest round trip in the latency average. */
const EWMA_ALPHA = 0.2;
/** A failure lowers a node's rank for this long; after it the node gets a fresh chance. */
const FAILURE_MEMORY_MS = 30_000;
/** Pongs a node may miss in a row before its socket is declared dead. */
const MISSED_PONG_LIMIT = 2;
/** How long a polite close may take before the socket is cut. */
const CLOSE_GRACE_MS = 1000;

export interface NodeLinkOptions {
  id: number;
  url: string;
  clusterToken: Redacted<string>;
  heartbeatMs: number;
  reconnectBaseMs: number;
  reconnectMaxMs: number;
  logger: Logger;
}

export interface NodeLinkState {
  id: number;
  url: string;
  connected: boolean;
  /** When the last pong arrived (ISO 8601), or null before the first one. */
  lastHeartbeat: string | null;
  /** Exponentially weighted average of ping round trips, in milliseconds. */
  latencyMs: number | null;
  /** Failures (timeouts, drops, bad answers) since the last good answer, within the memory window. */
  recentFailures: number;
}

/** A node answered, and its answer was an error: the node is alive, and this is what it said. */
export class NodeReplyError extends KmaasError {
  readonly node: number;

  constructor(node: number, body: ErrorBody) {
    const e = KmaasError.fromBody(body);
    super(e.code, e.message, e.details);
    this.node = node;
  }
}

interface Pending {
  resolve(body: unknown): void;
  reject(err: KmaasError): void;
  timer: NodeJS.Timeout;
}

function unavailable(node: number, reason: string, message: string): KmaasError {
  return new KmaasError('ERR_NODE_UNAVAILABLE', `node ${node} ${message}`, { node, reason });
}

function rawToText(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

export class NodeLink {
  readonly id: number;
  readonly url: string;
  readonly #opts: NodeLinkOptions;
  readonly #log: Logger;
  readonly #pending = new Map<string, Pending>();
  readonly #upListeners = new Set<() => void>();
  #ws: WebSocket | null = null;
  #open = false;
  #seq = 0;
  #closing: Promise<void> | null = null;
  #reconnectAttempt = 0;
  #reconnectTimer: NodeJS.Timeout | null = null;
  #heartbeatTimer: NodeJS.Timeout | null = null;
  #missedPongs = 0;
  #pingSentAt = 0;
  #lastHeartbeat: number | null = null;
  #latencyMs: number | null = null;
  #failures = 0;
  #lastFailureAt = 0;
  // Logged once per outage, not once per reconnect attempt.
  #downLogged = false;

  constructor(opts: NodeLinkOptions) {
    this.id = opts.id;
    this.url = opts.url;
    this.#opts = opts;
    this.#log = opts.logger.child({ node: opts.id });
  }

  get connected(): boolean {
    return this.#open;
  }

  /** Open the connection; from here on the link reconnects by itself until close(). */
  start(): void {
    if (this.#closing || this.#ws || this.#reconnectTimer) return;
    this.#connect();
  }

  /** Called with no arguments each time the link (re)connects. Returns an unsubscribe function. */
  onUp(listener: () => void): () => void {
    this.#upListeners.add(listener);
    return () => this.#upListeners.delete(listener);
  }

  /**
   * Send one request and wait for its reply body. Rejects with a NodeReplyError when the node
   * answers with an error, and with ERR_NODE_UNAVAILABLE when the link is down, drops, or the
   * node does not answer within `timeoutMs`.
   */
  request(type: NodeRequestType, body: unknown, timeoutMs: number): Promise<unknown> {
    const ws = this.#ws;
    if (!ws || !this.#open) {
      return Promise.reject(unavailable(this.id, 'disconnected', 'is not connected'));
    }
    const id = String(++this.#seq);
    const message: NodeRequest = { v: PROTOCOL_VERSION, id, type, body };
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        this.recordFailure();
        reject(unavailable(this.id, 'timeout', `did not answer ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify(message), (err) => {
        if (err) this.#settle(id, unavailable(this.id, 'send-failed', `could not be sent ${type}`));
      });
    });
  }

  /** Lower this node's rank for a while: it answered, but wrongly (bad proof, malformed reply). */
  recordFailure(): void {
    this.#failures++;
    this.#lastFailureAt = performance.now();
  }

  state(): NodeLinkState {
    return {
      id: this.id,
      url: this.url,
      connected: this.#open,
      lastHeartbeat:
        this.#lastHeartbeat === null ? null : new Date(this.#lastHeartbeat).toISOString(),
      latencyMs: this.#latencyMs === null ? null : Math.round(this.#latencyMs * 100) / 100,
      recentFailures: this.recentFailures(),
    };
  }

  recentFailures(): number {
    return performance.now() - this.#lastFailureAt < FAILURE_MEMORY_MS ? this.#failures : 0;
  }

  latency(): number {
    return this.#latencyMs ?? Number.POSITIVE_INFINITY;
  }

  /** Stop for good: no more reconnects, pending requests fail, the socket closes. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#stopHeartbeat();
    this.#failAll('closed', 'link is closing');
    const ws = this.#ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      const cut = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
      cut.unref();
      ws.close(1001, 'coordinator shutting down');
    });
  }

  #connect(): void {
    this.#reconnectTimer = null;
    const ws = new WebSocket(this.url, {
      headers: { authorization: `Bearer ${this.#opts.clusterToken.reveal()}` },
      handshakeTimeout: Math.max(this.#opts.heartbeatMs * MISSED_PONG_LIMIT, 1000),
      maxPayload: MAX_REPLY_BYTES,
      perMessageDeflate: false,
    });
    this.#ws = ws;
    ws.on('open', () => this.#onOpen(ws));
    ws.on('message', (data, isBinary) => this.#onMessage(data, isBinary));
    ws.on('pong', () => this.#onPong(ws));
    ws.on('error', (err) => {
      // The 'close' event that follows does the work; this only says why.
      if (this.#downLogged) this.#log.debug({ err: err.message }, 'node link error');
      else this.#log.warn({ err: err.message }, 'node link error');
    });
    ws.on('close', (code) => this.#onClose(ws, code));
  }

  #onOpen(ws: WebSocket): void {
    if (this.#ws !== ws) return;
    this.#open = true;
    this.#reconnectAttempt = 0;
    this.#downLogged = false;
    this.#missedPongs = 0;
    this.#log.info({ url: this.url }, 'node connected');
    this.#startHeartbeat(ws);
    for (const listener of this.#upListeners) listener();
  }

  #onClose(ws: WebSocket, code: number): void {
    if (this.#ws !== ws) return;
    const wasOpen = this.#open;
    this.#ws = null;
    this.#open = false;
    this.#stopHeartbeat();
    this.#failAll('disconnected', 'dropped the connection');
    if (this.#closing) return;
    if (wasOpen) this.recordFailure();
    if (wasOpen || !this.#downLogged) {
      this.#log.warn({ code, url: this.url }, 'node disconnected');
      this.#downLogged = true;
    }
    this.#scheduleReconnect();
  }

  /** Full-jitter-in-the-upper-half backoff: base * 2^attempt capped, then drawn from [d/2, d]. */
  #scheduleReconnect(): void {
    const { reconnectBaseMs, reconnectMaxMs } = this.#opts;
    const ceiling = Math.min(
      reconnectMaxMs,
      reconnectBaseMs * 2 ** Math.min(this.#reconnectAttempt, 30),
    );
    const half = Math.floor(ceiling / 2);
    const delay = half + randomInt(0, ceiling - half + 1);
    this.#reconnectAttempt++;
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  #startHeartbeat(ws: WebSocket): void {
    this.#stopHeartbeat();
    this.#heartbeatTimer = setInterval(() => {
      if (this.#missedPongs >= MISSED_PONG_LIMIT) {
        this.#log.warn({ missed: this.#missedPongs }, 'node missed heartbeats, terminating link');
        ws.terminate();
        return;
      }
      this.#missedPongs++;
      this.#pingSentAt = performance.now();
      ws.ping();
    }, this.#opts.heartbeatMs);
    this.#heartbeatTimer.unref();
  }

  #stopHeartbeat(): void {
    if (this.#heartbeatTimer) clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
  }

  #onPong(ws: WebSocket): void {
    if (this.#ws !== ws) return;
    this.#missedPongs = 0;
    this.#lastHeartbeat = Date.now();
    const rtt = performance.now() - this.#pingSentAt;
    this.#latencyMs =
      this.#latencyMs === null ? rtt : this.#latencyMs + EWMA_ALPHA * (rtt - this.#latencyMs);
  }

  #onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    if (isBinary) {
      this.#log.warn('node sent a binary frame; ignored');
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(rawToText(data));
    } catch {
      this.#log.warn('node sent malformed JSON; ignored');
      return;
    }
    const parsed = nodeReplyEnvelope.safeParse(json);
    if (!parsed.success) {
      this.#log.warn('node sent a reply that is not a protocol envelope; ignored');
      return;
    }
    const reply = parsed.data;
    if (!this.#pending.has(reply.id)) {
      // A late answer to a request that already timed out: harmless.
      this.#log.debug({ requestId: reply.id }, 'reply to no pending request');
      return;
    }
    if (reply.v !== PROTOCOL_VERSION) {
      this.#settle(
        reply.id,
        new KmaasError('ERR_UNSUPPORTED_VERSION', `node ${this.id} speaks protocol v${reply.v}`, {
          node: this.id,
        }),
      );
      return;
    }
    this.#failures = 0;
    if (reply.ok) this.#settle(reply.id, null, reply.body);
    else this.#settle(reply.id, new NodeReplyError(this.id, reply.error as ErrorBody));
  }

  #settle(id: string, err: KmaasError | null, body?: unknown): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    if (err) pending.reject(err);
    else pending.resolve(body);
  }

  #failAll(reason: string, message: string): void {
    for (const id of [...this.#pending.keys()]) {
      this.#settle(id, unavailable(this.id, reason, message));
    }
  }
}
