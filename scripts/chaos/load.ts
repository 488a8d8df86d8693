/**
 * The chaos run's load: C concurrent clients, each an end user of the SDK (KmaasClient.deriveKeys
 * with a DPoP-bound access token from the identity provider, renewed as it nears expiry),
 * deriving keys of documents from a fixed set whose right keys were recorded before any fault.
 * Requests go round-robin over the coordinators, as a simple load balancer would send them; on a
 * connection-level error (refused, reset: the coordinator is down) a request is asked once more
 * on the other coordinator, with a new blind and a new proof, and counted as one request that was
 * retried. Every key that comes back is compared with the recorded one: any difference is a
 * wrong key.
 *
 * A client waits a little between requests (`thinkMs` on average), so that the two cores the
 * whole cluster shares are busy but not saturated: latency then measures the faults, not a
 * queue of our own making.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { bytesToHex } from '@noble/hashes/utils.js';
import { KmaasClient, MemoryPinStore, type ClientAuth } from '../../client/index.ts';
import type { FetchLike } from '../../client/http.ts';
import { toKmaasError } from '../../shared/errors.ts';
import { Prng } from './prng.ts';
import type { RequestRecord, Timeline } from './timeline.ts';

export interface LoadUser {
  tenant: string;
  auth: ClientAuth;
  /** Document ids and their recorded keys (hex), index for index. */
  docs: readonly string[];
  keys: readonly string[];
  /** The pinned group key of (tenant, version 1). */
  groupKey: string;
}

export interface LoadOptions {
  coordinators: readonly string[];
  users: readonly LoadUser[];
  clients: number;
  maxBatch: number;
  thinkMs: number;
  seed: string;
  timeline: Timeline;
  /** A request that takes longer than this fails as a client timeout. */
  requestTimeoutMs: number;
}

/** A client of one coordinator, and whether its last fetch failed below HTTP. */
class Endpoint {
  readonly client: KmaasClient;
  /** Set by a connection-level failure; cleared before each request. */
  connectionError: string | undefined;

  constructor(url: string, user: LoadUser, timeoutMs: number) {
    // Connection-level failures (no HTTP answer, and not our own timeout) are what a load
    // balancer retries elsewhere; everything the SDK sends passes through here.
    const tracked: FetchLike = async (input, init) => {
      try {
        return await fetch(input, init);
      } catch (err) {
        const e = err as Error & { cause?: { code?: string } };
        if (e.name !== 'TimeoutError') this.connectionError = e.cause?.code ?? e.message;
        throw err;
      }
    };
    this.client = new KmaasClient({
      baseUrl: url,
      auth: user.auth,
      pins: new MemoryPinStore([{ tenant: user.tenant, version: 1, groupKey: user.groupKey }]),
      fetch: tracked,
      timeoutMs,
    });
  }
}

export class Load {
  readonly #o: LoadOptions;
  #running = false;
  #workers: Promise<void>[] = [];
  /** The round robin over coordinators, shared by every client. */
  #next = 0;

  constructor(o: LoadOptions) {
    this.#o = o;
  }

  start(): void {
    this.#running = true;
    for (let i = 0; i < this.#o.clients; i++) {
      this.#workers.push(this.#worker(i, this.#o.users[i % this.#o.users.length]!));
    }
  }

  async stop(): Promise<void> {
    this.#running = false;
    await Promise.all(this.#workers);
  }

  async #worker(index: number, user: LoadUser): Promise<void> {
    const rng = Prng.from(this.#o.seed, `client-${index}`);
    const endpoints = this.#o.coordinators.map(
      (url) => new Endpoint(url, user, this.#o.requestTimeoutMs),
    );
    const tl = this.#o.timeline;
    // Spread the clients' first requests over a think time.
    await sleep(rng.between(0, this.#o.thinkMs));
    while (this.#running) {
      const first = this.#next++ % endpoints.length;
      const size = rng.int(1, this.#o.maxBatch);
      const picks = Array.from({ length: size }, () => rng.int(0, user.docs.length - 1));
      const record: RequestRecord = {
        at: tl.now(),
        end: 0,
        coordinator: first,
        tenant: user.tenant,
        docs: size,
        ok: false,
        wrong: 0,
        retried: false,
      };
      try {
        const derived = await this.#derive(endpoints, first, user, picks, record);
        record.nodes = derived.nodes;
        // Partials the coordinator passed on but the SDK refused: a lie it should have caught.
        if (derived.rejected.length > 0) record.rejectedByClient = derived.rejected.length;
        derived.keys.forEach((key, j) => {
          if (bytesToHex(key) !== user.keys[picks[j]!]) record.wrong++;
          key.fill(0);
        });
        record.ok = record.wrong === 0;
        if (!record.ok) record.cause = 'WRONG_KEY';
      } catch (err) {
        const e = toKmaasError(err);
        record.code = e.code;
        record.cause = causeOf(e.code, e.message, e.details);
        const failedNodes = nodesOf(e.details);
        if (failedNodes) record.failedNodes = failedNodes;
        record.message = e.message.slice(0, 300);
      }
      record.end = tl.now();
      tl.requests.push(record);
      await sleep(rng.between(0, 2 * this.#o.thinkMs));
    }
  }

  /** One request: the coordinator in turn, and once the other one on a connection error. */
  async #derive(
    endpoints: Endpoint[],
    first: number,
    user: LoadUser,
    picks: number[],
    record: RequestRecord,
  ) {
    const ids = picks.map((i) => user.docs[i]!);
    const a = endpoints[first]!;
    a.connectionError = undefined;
    try {
      return await a.client.deriveKeys(user.tenant, 1, ids);
    } catch (err) {
      if (a.connectionError === undefined || endpoints.length < 2) throw err;
      record.retried = true;
      const b = endpoints[(first + 1) % endpoints.length]!;
      b.connectionError = undefined;
      return await b.client.deriveKeys(user.tenant, 1, ids);
    }
  }
}

/**
 * A failure's cause, for grouping: the code, and for ERR_TOO_FEW_NODES what the nodes it names
 * failed with (node ids left out, so that the same behaviour groups together).
 */
export function causeOf(
  code: string,
  message: string,
  details: Record<string, unknown> | undefined,
): string {
  if (code === 'ERR_NODE_UNAVAILABLE' && /^coordinator .* (unreachable|no answer)/.test(message)) {
    return /no answer/.test(message)
      ? 'client timeout (no answer from the coordinator)'
      : 'coordinators unreachable';
  }
  const failed = details?.failed;
  if (code !== 'ERR_TOO_FEW_NODES' || !Array.isArray(failed)) return code;
  const reasons = new Map<string, number>();
  for (const f of failed as { code?: unknown; message?: unknown }[]) {
    const reason = nodeReason(String(f.code), typeof f.message === 'string' ? f.message : '');
    reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
  }
  const parts = [...reasons.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([r, n]) => `${n}x ${r}`);
  return `${code} (${parts.join(', ')})`;
}

function nodeReason(code: string, message: string): string {
  if (code !== 'ERR_NODE_UNAVAILABLE') return code;
  if (/not connected/.test(message)) return 'node not connected';
  if (/deadline/.test(message)) return 'node past the deadline';
  if (/did not answer/.test(message)) return 'node timeout';
  return 'node unavailable';
}

/** ERR_TOO_FEW_NODES: each node it names and why, e.g. "1: node not connected". */
export function nodesOf(details: Record<string, unknown> | undefined): string[] | undefined {
  const failed = details?.failed;
  if (!Array.isArray(failed)) return undefined;
  return (failed as { node?: unknown; code?: unknown; message?: unknown }[]).map(
    (f) =>
      `${String(f.node)}: ${nodeReason(String(f.code), typeof f.message === 'string' ? f.message : '')}`,
  );
}
