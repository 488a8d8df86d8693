/**
 * Test scaffolding for the coordinator: a Redis prefix of its own per cluster (deleted after),
 * fake nodes on port 0, a coordinator on port 0 whose log lines are kept for inspection, an HTTP
 * helper and a poller. Nothing here sleeps for a fixed time; waits poll a condition with a cap.
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { commit } from '../../shared/feldman.ts';
import { Point } from '../../shared/encoding.ts';
import { buildKeyPackage, type KeyPackage } from '../../shared/key-package.ts';
import { randomScalar, split } from '../../shared/shamir.ts';
import { validateConfig, type CoordinatorConfig } from '../../coordinator/config.ts';
import { createLogger } from '../../coordinator/logger.ts';
import type { NodeLinkState } from '../../coordinator/node-link.ts';
import { startCoordinator, type CoordinatorHandle } from '../../coordinator/server.ts';
import {
  newNonce,
  PROPOSAL_FORMAT,
  proposalSchema,
  type CommitteeMember,
  type Operation,
  type Proposal,
} from '../../shared/proposal.ts';
import { signWith, strangerIdentity, TEST_CLUSTER_ID } from '../helpers/operators.ts';
import { FakeNode, type FakeNodeOptions } from './fake-node.ts';
import { honestUserProof, sharedIssuer, type TestUser } from '../helpers/oidc.ts';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** The identity provider the coordinator trusts (test/helpers/oidc.ts). */
export const ISSUER = await sharedIssuer();

export const TOKENS = {
  cluster: `cluster-${randomBytes(12).toString('hex')}`,
  /**
   * Stands for the end user: `http()` replaces it, on evaluate requests, by an access token for
   * the tenant of the path and a fresh DPoP proof over the body (elsewhere it is a bearer token
   * that nothing accepts).
   */
  client: `client-${randomBytes(12).toString('hex')}`,
  admin: `admin-${randomBytes(12).toString('hex')}`,
};

export function testPrefix(): string {
  return `kmaas:test:${randomBytes(6).toString('hex')}:`;
}

/** SCAN + DEL everything under `prefix`. */
export async function deletePrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== '0');
}

export async function keysUnder(redis: Redis, prefix: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out;
}

/** Poll `check` until it returns something other than undefined, null or false; fail after `ms`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  ms = 10_000,
): Promise<T> {
  const until = performance.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== null && value !== false) return value;
    if (performance.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Log lines, parsed, for assertions on what was (and was not) logged. */
export class LogCapture {
  readonly lines: Record<string, unknown>[] = [];
  readonly raw: string[] = [];
  readonly logger = createLogger(
    'debug',
    new Writable({
      write: (chunk: Buffer, _enc, done) => {
        const text = chunk.toString('utf8');
        this.raw.push(text);
        for (const line of text.split('\n').filter(Boolean)) {
          this.lines.push(JSON.parse(line) as Record<string, unknown>);
        }
        done();
      },
    }),
  );

  find(msg: string | RegExp): Record<string, unknown>[] {
    return this.lines.filter((l) =>
      typeof msg === 'string' ? l.msg === msg : msg.test(String(l.msg)),
    );
  }
}

export interface HttpResult<T> {
  status: number;
  /** The parsed JSON body, typed as the caller expects it; the test's assertions check it. */
  body: T;
  headers: Headers;
}

export interface ErrorReply {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

export interface JobReply {
  id: string;
  state: string;
  attemptsMade: number;
  progress: { phase: string; done: number; total: number };
  result?: { tenant: string; version: number; groupKey: string };
  error?: ErrorReply['error'];
}

export interface AcceptedReply {
  jobId: string;
  proposal: string;
  operation: string;
  tenant: string;
  version: number;
}

export interface StatusReply {
  nodes: NodeLinkState[];
  tenants: string[];
}

export interface TenantReply {
  tenant: string;
  versions: { version: number; threshold: number; groupKey: string }[];
}

export async function http<T = ErrorReply>(
  port: number,
  method: string,
  path: string,
  opts: { json?: unknown; raw?: string; token?: string; headers?: Record<string, string> } = {},
): Promise<HttpResult<T>> {
  const headers: Record<string, string> = { ...opts.headers };
  let payload: string | undefined;
  if (opts.json !== undefined) {
    payload = JSON.stringify(opts.json);
    headers['content-type'] = 'application/json';
  } else if (opts.raw !== undefined) {
    payload = opts.raw;
    headers['content-type'] ??= 'application/json';
  }
  const credential = opts.token === TOKENS.client ? await endUser(port, path, opts) : undefined;
  if (credential) Object.assign(headers, credential);
  else if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers, body: payload });
  const text = await res.text();
  const body = (text ? JSON.parse(text) : null) as T;
  return { status: res.status, body, headers: res.headers };
}

const EVALUATE = /^\/v1\/tenants\/([^/]+)\/keys\/([^/]+)\/evaluate$/;
const users = new Map<string, TestUser>();

/** The end user's access token for `tenant` (one user per tenant, sub `client-user`). */
export async function userFor(tenant: string): Promise<TestUser> {
  if (!users.has(tenant)) users.set(tenant, await ISSUER.user(tenant, 'client-user'));
  return users.get(tenant)!;
}

/**
 * Authorization: DPoP and DPoP headers for an evaluate request to `path` with this body, as the
 * SDK makes them; undefined when `path` is not an evaluate path whose tenant can be read.
 */
export async function endUser(
  port: number,
  path: string,
  opts: { json?: unknown; raw?: string },
): Promise<Record<string, string> | undefined> {
  const m = EVALUATE.exec(path);
  if (!m) return undefined;
  let tenant: string;
  try {
    tenant = decodeURIComponent(m[1]!);
  } catch {
    return undefined;
  }
  let body: unknown = opts.json;
  try {
    if (body === undefined && opts.raw !== undefined) body = JSON.parse(opts.raw);
  } catch {
    body = undefined;
  }
  const list = (body as { blinded?: unknown } | undefined)?.blinded;
  const blinded = Array.isArray(list) ? list.filter((b): b is string => typeof b === 'string') : [];
  const user = await userFor(tenant);
  const url = `http://127.0.0.1:${port}${path}`;
  const dpop = await honestUserProof(user, url, { tenant, version: Number(m[2]), blinded });
  return { authorization: `DPoP ${user.token}`, dpop };
}

/** A key k split t-of-n among `ids` with shared/shamir.ts, and its public key package. */
export function splitKey(
  tenant: string,
  version: number,
  threshold: number,
  ids: readonly number[],
): { secret: bigint; shares: Map<number, bigint>; keyPackage: KeyPackage } {
  const secret = randomScalar();
  const { shares, coefficients } = split(secret, threshold, ids);
  const keyPackage = buildKeyPackage({
    tenant,
    version,
    commitments: commit(coefficients),
    verificationShares: new Map(shares.map((s) => [s.id, Point.BASE.multiply(s.value)])),
  });
  return { secret, shares: new Map(shares.map((s) => [s.id, s.value])), keyPackage };
}

export interface ClusterOptions {
  nodes: number;
  node?: Partial<Omit<FakeNodeOptions, 'id' | 'clusterToken'>>;
  config?: Partial<CoordinatorConfig>;
  prefix?: string;
}

/** Fast settings so that failures show within a test's patience. */
export const FAST = {
  nodeTimeoutMs: 400,
  evaluateDeadlineMs: 2500,
  hedgeDelayMs: 60_000,
  dkgTimeoutMs: 5000,
  dkgAttempts: 1,
  dkgBackoffMs: 50,
  heartbeatMs: 100,
  reconnectBaseMs: 20,
  reconnectMaxMs: 200,
} satisfies Partial<CoordinatorConfig>;

export class Cluster {
  readonly redis: Redis;
  readonly logs = new LogCapture();
  nodes: FakeNode[] = [];
  coordinator: CoordinatorHandle | null = null;
  config!: CoordinatorConfig;

  private constructor(
    readonly prefix: string,
    redisUrl: string,
  ) {
    this.redis = new Redis(redisUrl);
  }

  static async start(opts: ClusterOptions): Promise<Cluster> {
    const redisUrl = opts.config?.redisUrl ?? REDIS_URL;
    const cluster = new Cluster(opts.prefix ?? testPrefix(), redisUrl);
    for (let id = 1; id <= opts.nodes; id++) {
      cluster.nodes.push(
        await FakeNode.start({
          ...opts.node,
          id,
          clusterToken: TOKENS.cluster,
        }),
      );
    }
    cluster.config = validateConfig({
      port: 0,
      redisUrl,
      redisPrefix: cluster.prefix,
      nodes: cluster.nodes.map((n) => ({ id: n.id, url: n.url })),
      clusterToken: TOKENS.cluster,
      oidcIssuer: ISSUER.issuer,
      adminToken: TOKENS.admin,
      ...FAST,
      ...opts.config,
    });
    await cluster.startCoordinator();
    return cluster;
  }

  get port(): number {
    if (!this.coordinator) throw new Error('coordinator not running');
    return this.coordinator.port;
  }

  node(id: number): FakeNode {
    return this.nodes.find((n) => n.id === id)!;
  }

  async startCoordinator(): Promise<void> {
    this.coordinator = await startCoordinator(this.config, this.logs.logger);
  }

  async stopCoordinator(): Promise<void> {
    await this.coordinator?.close();
    this.coordinator = null;
  }

  /** GET /v1/status until `ready` holds for every node entry. */
  async waitForNodes(ready: (n: NodeLinkState) => boolean = (n) => n.connected): Promise<void> {
    await waitFor('nodes to be ready', async () => {
      const res = await http<StatusReply>(this.port, 'GET', '/v1/status');
      return res.body.nodes.every(ready);
    });
  }

  /** Close the coordinator and the nodes, delete the prefix, check nothing was left behind. */
  async close(): Promise<void> {
    await this.stopCoordinator();
    await Promise.all(this.nodes.map((n) => n.stop()));
    await deletePrefix(this.redis, this.prefix);
    this.redis.disconnect();
  }
}

/**
 * A proposal body as an operator would submit it, for the coordinator's own checks: a committee
 * of `nodes` (fake nodes check no identity keys), signed by a quorum of the test operators, with
 * any field replaced by `overrides` (also to something invalid, unchecked here).
 */
export function proposalBody(
  fields: { tenant: string; threshold?: number; version?: number; operation?: Operation },
  nodes: readonly number[] = [1, 2, 3],
  overrides: Record<string, unknown> = {},
  member: (node: number) => CommitteeMember = strangerIdentity,
): Record<string, unknown> {
  const operation = fields.operation ?? 'tenant.create';
  const base = {
    format: PROPOSAL_FORMAT,
    cluster: TEST_CLUSTER_ID,
    operation,
    tenant: fields.tenant,
    version: fields.version ?? 1,
    ...(operation === 'key.retire'
      ? {}
      : { threshold: fields.threshold ?? Math.floor(nodes.length / 2) + 1 }),
    committee: nodes.map((n) => member(n)),
    nonce: newNonce(),
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    signatures: [] as Proposal['signatures'],
  };
  let body: Record<string, unknown> = base;
  if (proposalSchema.safeParse(base).success) body = signWith(base as Proposal);
  return { ...body, ...overrides };
}

/** POST /v1/proposals of a tenant.create of `tenant` among every node of `cluster`. */
export function createTenant(
  cluster: Cluster,
  tenant: string,
  opts: { threshold?: number; token?: string } = {},
) {
  return http<AcceptedReply & ErrorReply>(cluster.port, 'POST', '/v1/proposals', {
    // The committee of the nodes' real identity keys: the coordinator sends it as signed, and
    // each node checks its own entry.
    json: proposalBody(
      { tenant, ...(opts.threshold === undefined ? {} : { threshold: opts.threshold }) },
      cluster.nodes.map((n) => n.id),
      {},
      (node) => ({ node, ...cluster.nodes.find((n) => n.id === node)!.identity }),
    ),
    token: opts.token ?? TOKENS.admin,
  });
}
