/**
 * One WebSocket link from the coordinator to one share node, protocol v1 of shared/messages.ts:
 *
 *   coordinator -> node  { v: 1, id, type, body }               (upgrade carries Bearer <cluster token>)
 *   node -> coordinator  { v: 1, id, ok: true, body } | { v: 1, id, ok: false, error }
 *
 * The link matches replies to requests by id and gives each request its own deadline. It keeps
 * itself alive: reconnects with capped exponential backoff and jitter, pings every heartbeat and
 * terminates a socket from which nothing (no pong, no reply) has come for MISSED_PONG_LIMIT
 * heartbeats. Whatever happens to the socket, a pending request fails at once with
 * ERR_NODE_UNAVAILABLE; nothing waits on a dead connection.
 *
 * Timers judge the node, but they run on the coordinator's own event loop. When that loop was
 * busy, a timer fires late, and the node's answer may already be waiting, unread, in the socket.
 * So no timer blames a node at once: a request deadline and a heartbeat decide in a setImmediate
 * callback, which runs after the poll phase has read what the sockets hold; and a heartbeat that
 * itself fired much later than its period does not count a missing pong, since the node was not
 * given a fair period to be heard in.
 *
 * A node works through its requests one at a time, in arrival order. Sent all at once, a burst of
 * large evaluations would queue inside the node, and each one's deadline would run while it
 * waited behind the others: the node would look slow, be timed out, and its work be sent again
 * elsewhere. So the link keeps at most EVALUATE_WINDOW blinded elements of evaluations on the
 * wire; the rest wait here, smaller batches first (by a bounded amount), where they can still be
 * cancelled, and a request's deadline starts when it is sent.
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
import { MAX_BATCH } from '../shared/suite.ts';
import type { Logger } from './logger.ts';
import type { Redacted } from '../shared/redacted.ts';
import type { BreakerOptions, Transition } from './circuit-breaker.ts';
import { classifyError, NodeHealth, type HealthView, type Outcome } from './node-health.ts';
import { NodeReplyError } from './node-reply-error.ts';

export { NodeReplyError };

/** Replies are small (256 elements are ~12 KiB); anything far larger is a broken or hostile node. */
const MAX_REPLY_BYTES = 1 << 20;
/** Heartbeats in a row with nothing heard from a node before its socket is declared dead. */
const MISSED_PONG_LIMIT = 2;
/** A heartbeat this many periods after the previous one means our own event loop was stalled. */
const LATE_TICK_PERIODS = 1.5;
/** Blinded elements of evaluations on the wire to one node at once (one full batch). */
const EVALUATE_WINDOW = MAX_BATCH;
/** Waiting handicap per element: a 1-element request overtakes a full batch queued < 0.5 s ago. */
const HANDICAP_MS_PER_ELEMENT = 2;
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
  /** The node's circuit breaker settings (coordinator/circuit-breaker.ts). */
  breaker?: BreakerOptions;
}

export interface NodeLinkState {
  id: number;
  url: string;
  connected: boolean;
  /** When the last pong arrived (ISO 8601), or null before the first one. */
  lastHeartbeat: string | null;
  /** Exponentially weighted average of ping round trips, in milliseconds. */
  latencyMs: number | null;
  /** Requests sent and not yet answered, and requests waiting to be sent. */
  pending: number;
  /** Failures (timeouts, drops, bad answers) since the last good answer, within the memory window. */
  recentFailures: number;
  /** Breaker, latency estimate and heartbeat state (coordinator/node-health.ts). */
  health: HealthView;
}

export interface RequestOptions {
  /** Blinded elements of an evaluation: it is sent only when the window has room for them. */
  elements?: number;
  /** Aborting drops the request if it is still waiting to be sent. */
  signal?: AbortSignal;
  /** Called when the request goes on the wire (at once, unless it had to wait). */
  onSent?: () => void;
}

/** A request waiting for room in the evaluate window. */
interface Waiting {
  type: NodeRequestType;
  body: unknown;
  timeoutMs: number;
  elements: number;
  priority: number;
  opts: RequestOptions;
  resolve: (body: unknown) => void;
  reject: (err: KmaasError) => void;
  onAbort: (() => void) | undefined;
}

interface Pending {
  type: NodeRequestType;
  sentAt: number;
  elements: number;
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
  readonly #waiting: Waiting[] = [];
  /** Blinded elements of the evaluations in #pending. */
  #wireElements = 0;
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
  /** When anything (a pong, a reply, a ping) last came from the node. */
  #heardAt = 0;
  /** When the heartbeat timer last fired. */
  #lastTickAt = 0;
  #lastHeartbeat: number | null = null;
  /**
   * Heartbeats and evaluation outcomes. The link records what it sees of evaluations (timeouts,
   * error replies, drops, cancellations); a good reply only the evaluation path can judge, once
   * it has checked the proof (record()).
   */
  readonly health: NodeHealth;
  readonly #transitionListeners = new Set<(t: Transition) => void>();
  // Logged once per outage, not once per reconnect attempt.
  #downLogged = false;

  constructor(opts: NodeLinkOptions) {
    this.id = opts.id;
    this.url = opts.url;
    this.#opts = opts;
    this.#log = opts.logger.child({ node: opts.id });
    this.health = new NodeHealth(opts.breaker);
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
   * answers with an error, and with ERR_NODE_UNAVAILABLE when the link is down, drops, the node
   * does not answer within `timeoutMs` of the request being sent, or `opts.signal` aborts it
   * before it was sent. An evaluation (`opts.elements`) may wait for room in the window first.
   */
  request(
    type: NodeRequestType,
    body: unknown,
    timeoutMs: number,
    opts: RequestOptions = {},
  ): Promise<unknown> {
    if (!this.#ws || !this.#open) {
      return Promise.reject(unavailable(this.id, 'disconnected', 'is not connected'));
    }
    if (opts.signal?.aborted) {
      return Promise.reject(unavailable(this.id, 'cancelled', `was not sent ${type}: cancelled`));
    }
    const elements = opts.elements ?? 0;
    return new Promise<unknown>((resolve, reject) => {
      const job: Waiting = {
        type,
        body,
        timeoutMs,
        elements,
        priority: performance.now() + HANDICAP_MS_PER_ELEMENT * elements,
        opts,
        resolve,
        reject,
        onAbort: undefined,
      };
      // Nothing overtakes what already waits, except by its place in the queue.
      if (elements === 0 || (this.#waiting.length === 0 && this.#fits(elements))) {
        this.#send(job);
        return;
      }
      if (opts.signal) {
        job.onAbort = () => {
          const at = this.#waiting.indexOf(job);
          if (at === -1) return;
          this.#waiting.splice(at, 1);
          reject(unavailable(this.id, 'cancelled', `was not sent ${type}: cancelled`));
        };
        opts.signal.addEventListener('abort', job.onAbort, { once: true });
      }
      this.#waiting.push(job);
      this.#pump();
    });
  }

  #fits(elements: number): boolean {
    return this.#wireElements === 0 || this.#wireElements + elements <= EVALUATE_WINDOW;
  }

  #send(job: Waiting): void {
    if (job.onAbort) job.opts.signal?.removeEventListener('abort', job.onAbort);
    const ws = this.#ws;
    if (!ws || !this.#open) {
      job.reject(unavailable(this.id, 'disconnected', 'is not connected'));
      return;
    }
    const { type, timeoutMs } = job;
    const id = String(++this.#seq);
    const message: NodeRequest = { v: PROTOCOL_VERSION, id, type, body: job.body };
    const timer = setTimeout(() => {
      // Decided after the poll phase: a reply already in the socket is read first, and wins.
      setImmediate(() => {
        if (this.#pending.get(id) !== entry) return;
        this.#forget(id, entry);
        const err = unavailable(
          this.id,
          'timeout',
          `did not answer ${type} within ${timeoutMs} ms`,
        );
        if (type === 'evaluate') this.record(classifyError(err));
        entry.reject(err);
        this.#pump();
      });
    }, timeoutMs);
    const entry: Pending = {
      type,
      sentAt: performance.now(),
      elements: job.elements,
      resolve: job.resolve,
      reject: job.reject,
      timer,
    };
    this.#pending.set(id, entry);
    this.#wireElements += job.elements;
    job.opts.onSent?.();
    ws.send(JSON.stringify(message), (err) => {
      if (err) this.#settle(id, unavailable(this.id, 'send-failed', `could not be sent ${type}`));
    });
  }

  /** Send what waits, most urgent first, while the window has room. */
  #pump(): void {
    while (this.#waiting.length > 0 && this.#open) {
      let best = 0;
      for (let i = 1; i < this.#waiting.length; i++) {
        if (this.#waiting[i]!.priority < this.#waiting[best]!.priority) best = i;
      }
      // The most urgent waits for room rather than let smaller ones past it for ever.
      if (!this.#fits(this.#waiting[best]!.elements)) return;
      this.#send(this.#waiting.splice(best, 1)[0]!);
    }
  }

  #forget(id: string, entry: Pending): void {
    this.#pending.delete(id);
    clearTimeout(entry.timer);
    this.#wireElements -= entry.elements;
  }

  /**
   * Record an evaluation's outcome in the node's health, and log a breaker that opened or closed.
   * @example link.record({ kind: 'success', latencyMs: 12 })
   */
  record(outcome: Outcome): Transition | null {
    const t = this.health.record(outcome);
    if (t) this.#transition(t);
    return t;
  }

  /** Called with each breaker transition of this node. Returns an unsubscribe function. */
  onTransition(listener: (t: Transition) => void): () => void {
    this.#transitionListeners.add(listener);
    return () => this.#transitionListeners.delete(listener);
  }

  #transition(t: Transition): void {
    if (t.to === 'open') {
      this.#log.warn(
        { from: t.from, reason: t.reason, openMs: t.openMs },
        t.reason === 'lied'
          ? 'circuit breaker opened: the node answered with a wrong evaluation; excluded'
          : 'circuit breaker opened',
      );
    } else {
      this.#log.info({ from: t.from, reason: t.reason }, 'circuit breaker closed');
    }
    for (const listener of this.#transitionListeners) listener(t);
  }

  state(): NodeLinkState {
    return {
      id: this.id,
      url: this.url,
      connected: this.#open,
      lastHeartbeat:
        this.#lastHeartbeat === null ? null : new Date(this.#lastHeartbeat).toISOString(),
      latencyMs: this.health.pingLatency() === null ? null : this.health.view().pingMs,
      pending: this.#pending.size + this.#waiting.length,
      recentFailures: this.health.recentFailures(),
      health: this.health.view(),
    };
  }

  recentFailures(): number {
    return this.health.recentFailures();
  }

  /** The ping round trip average; infinite before the first pong. */
  latency(): number {
    return this.health.pingLatency() ?? Number.POSITIVE_INFINITY;
  }

  /**
   * How busy this node is with our work right now: blinded elements of the evaluations sent or
   * waiting to be sent, plus one for each other request.
   */
  load(): number {
    let load = this.#wireElements;
    for (const entry of this.#pending.values()) if (entry.elements === 0) load++;
    for (const job of this.#waiting) load += job.elements;
    return load;
  }

  /**
   * How long this node usually takes to answer an evaluation (its average round trip), or its
   * ping round trip before it has answered one; null when neither is known yet.
   */
  usualLatency(): number | null {
    return this.health.usualLatency();
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
    ws.on('ping', () => {
      if (this.#ws === ws) this.#heardAt = performance.now();
    });
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
    this.#heardAt = performance.now();
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
    // One failure for the drop, however many evaluations it cut (those are not counted again).
    const cut = this.#pendingEvaluations();
    this.#failAll('disconnected', 'dropped the connection');
    if (this.#closing) return;
    if (wasOpen && cut > 0) {
      this.record({ kind: 'failed', code: 'ERR_NODE_UNAVAILABLE', reason: 'dropped' });
    } else if (wasOpen) {
      this.health.dropped();
    }
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
    const period = this.#opts.heartbeatMs;
    this.#lastTickAt = performance.now();
    this.#heartbeatTimer = setInterval(() => {
      const now = performance.now();
      const sinceLast = now - this.#lastTickAt;
      this.#lastTickAt = now;
      // Judged after the poll phase, so that a pong or reply already in the socket counts.
      setImmediate(() => this.#beat(ws, sinceLast > LATE_TICK_PERIODS * period ? sinceLast : 0));
    }, period);
    this.#heartbeatTimer.unref();
  }

  /**
   * One heartbeat. `lateBy` is the time since the previous one when that was far longer than a
   * period (0 otherwise): our own event loop was stalled, so silence in that period is no
   * evidence against the node.
   */
  #beat(ws: WebSocket, lateBy: number): void {
    if (this.#ws !== ws || !this.#open) return;
    if (this.#heardAt > this.#pingSentAt) {
      // A pong, or any message at all, since the last ping: the node is alive, if busy.
      this.#missedPongs = 0;
    } else if (lateBy > 0) {
      this.#log.debug(
        { sinceLastHeartbeatMs: Math.round(lateBy), missed: this.#missedPongs },
        'heartbeat ran late (coordinator event loop lag); silence not counted',
      );
    } else {
      this.#missedPongs++;
      this.health.missedPong();
    }
    if (this.#missedPongs >= MISSED_PONG_LIMIT) {
      this.#log.warn({ missed: this.#missedPongs }, 'node missed heartbeats, terminating link');
      ws.terminate();
      return;
    }
    this.#pingSentAt = performance.now();
    ws.ping();
  }

  #stopHeartbeat(): void {
    if (this.#heartbeatTimer) clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
  }

  #onPong(ws: WebSocket): void {
    if (this.#ws !== ws) return;
    this.#missedPongs = 0;
    this.#heardAt = performance.now();
    this.#lastHeartbeat = Date.now();
    this.health.pong(performance.now() - this.#pingSentAt);
  }

  #onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    this.#heardAt = performance.now();
    this.health.heard();
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
    if (reply.ok) {
      this.#settle(reply.id, null, reply.body);
      return;
    }
    const err = new NodeReplyError(this.id, reply.error as ErrorBody);
    if (this.#pending.get(reply.id)?.type === 'evaluate') this.record(classifyError(err));
    this.#settle(reply.id, err);
  }

  #settle(id: string, err: KmaasError | null, body?: unknown): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#forget(id, pending);
    if (err) {
      pending.reject(err);
    } else {
      pending.resolve(body);
    }
    this.#pump();
  }

  #pendingEvaluations(): number {
    let n = 0;
    for (const entry of this.#pending.values()) if (entry.type === 'evaluate') n++;
    return n;
  }

  #failAll(reason: string, message: string): void {
    for (const job of this.#waiting.splice(0)) {
      if (job.onAbort) job.opts.signal?.removeEventListener('abort', job.onAbort);
      job.reject(unavailable(this.id, reason, message));
    }
    for (const id of [...this.#pending.keys()]) {
      this.#settle(id, unavailable(this.id, reason, message));
    }
  }
}
