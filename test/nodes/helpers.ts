/**
 * Test harness for share nodes: temp folders, configurations, a WebSocket client that matches
 * replies to requests, a cluster of in-process nodes on port 0, and the coordinator's side of
 * the DKG (docs/CONTRACTS.md, "DKG as relayed by the coordinator").
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { expect } from 'chai';
import { pino, type Logger } from 'pino';
import WebSocket from 'ws';
import type { z } from 'zod';
import { KmaasError, type ErrorBody, type ErrorCode } from '../../shared/errors.ts';
import type { KeyPackage } from '../../shared/key-package.ts';
import {
  dkgCommitReply,
  dkgRound1Reply,
  dkgRound2Reply,
  dkgRound3Reply,
  evaluateReply,
  keyPackageReply,
  nodeReplyEnvelope,
  statusReply,
  type NodeReply,
} from '../../shared/messages.ts';
import type { NodeConfig } from '../../nodes/config.ts';
import type { Round1Wire, Round2Wire } from '../../nodes/dkg-machine.ts';
import { Redacted } from '../../shared/redacted.ts';
import { EvaluationAuth } from '../../shared/evaluation-auth.ts';
import { nodeAuth, sharedIssuer, type TestUser } from '../helpers/oidc.ts';
import { startNode, type NodeHandle } from '../../nodes/server.ts';
import type { NodeContext } from '../../nodes/context.ts';
import { NodeIdentity } from '../../nodes/identity.ts';
import { Keyring } from '../../nodes/keyring.ts';
import type { NodeStore } from '../../nodes/store.ts';
import type { CommitteeMember, Proposal } from '../../shared/proposal.ts';
import {
  ceremonyProposal,
  OPERATOR_SET,
  POLICY,
  strangerIdentity,
  TEST_CLUSTER_ID,
} from '../helpers/operators.ts';

export const CLUSTER_TOKEN = 'test-cluster-token-5f1c0a9e';

/** The identity provider the test nodes trust (test/helpers/oidc.ts). */
export const ISSUER = await sharedIssuer();

/** A verifier of the test issuer's tokens, for handlers driven without a server. */
export function testAuth(): EvaluationAuth {
  return new EvaluationAuth(ISSUER.settings());
}

/** An evaluate request body of `user`, with its token and a fresh, honest DPoP proof. */
export async function evaluateBody(
  user: TestUser,
  tenant: string,
  version: number,
  blinded: string[],
): Promise<{
  tenant: string;
  version: number;
  blinded: string[];
  auth: { token: string; dpop: string };
}> {
  return { tenant, version, blinded, auth: await nodeAuth(user, { tenant, version, blinded }) };
}

export async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'kmaas-node-test-'));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export function randomSecret(): Redacted<Uint8Array> {
  return new Redacted(new Uint8Array(randomBytes(32)), 'node secret');
}

export function nodeConfig(
  nodeId: number,
  dataDir: string,
  secret: Redacted<Uint8Array>,
): NodeConfig {
  return {
    nodeId,
    host: '127.0.0.1',
    port: 0,
    dataDir,
    secret,
    clusterToken: new Redacted(CLUSTER_TOKEN),
    oidc: ISSUER.settings(),
    clusterId: TEST_CLUSTER_ID,
    operators: OPERATOR_SET,
    logLevel: 'silent',
  };
}

/**
 * THE handler context for tests, over `store` as startNode builds it: keys and retirements
 * loaded, identity keys made or loaded (DKG rounds need them), a verifier of the test issuer's
 * tokens, the test operator policy. `extra` overrides any of it (a clock, a rate limit, an audit
 * log).
 */
export function testContext(
  nodeId: number,
  store: NodeStore,
  extra: Partial<NodeContext> = {},
): NodeContext {
  const keyring = new Keyring(nodeId, store.currentEpoch());
  for (const k of store.listKeys()) keyring.add(k);
  for (const r of store.listRetired()) keyring.retire(r.tenant, r.version);
  return {
    nodeId,
    store,
    keyring,
    identity: NodeIdentity.loadOrCreate(store),
    auth: testAuth(),
    policy: POLICY,
    ...extra,
  };
}

/** Committee entries from the contexts under test; other nodes get keys of their own. */
export function committeeLookup(
  ctxs: Iterable<Pick<NodeContext, 'nodeId' | 'identity'>>,
): (node: number) => CommitteeMember {
  const known = new Map<number, CommitteeMember>();
  for (const c of ctxs)
    if (c.identity) known.set(c.nodeId, { node: c.nodeId, ...c.identity.published() });
  return (node) => {
    let m = known.get(node);
    if (!m) {
      m = strangerIdentity(node);
      known.set(node, m);
    }
    return m;
  };
}

/**
 * The dkg.round1 body for `params`: the params, the ceremony's proposal (`params.proposal`, or
 * one signed by a quorum with `identityOf` giving the committee) and, as a coordinator sends it,
 * the proposal's committee.
 */
export function round1Body(
  params: DkgParams,
  identityOf: (node: number) => CommitteeMember,
): DkgParams & { committee: CommitteeMember[]; proposal: Proposal } {
  const proposal = params.proposal ?? ceremonyProposal(params, identityOf);
  return { ...params, committee: proposal.committee ?? [], proposal };
}

/** A logger whose every line (at trace level and up) lands in `lines`, for leak checks. */
export function capturingLogger(lines: string[]): Logger {
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString('utf8'));
      done();
    },
  });
  return pino({ level: 'trace' }, sink);
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** Run `fn` and check that it throws a KmaasError with `code` (and the given details). */
export function expectCode(fn: () => unknown, code: ErrorCode, details?: object): KmaasError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown, `expected ${code}`).to.be.instanceOf(KmaasError);
  const e = thrown as KmaasError;
  expect(e.code, e.message).to.equal(code);
  if (details) expect(e.details).to.deep.include(details);
  return e;
}

/** expectCode for work that fails by rejecting: the KmaasError it rejects with. */
export async function expectRejection(
  fn: () => Promise<unknown>,
  code: ErrorCode,
  details?: object,
): Promise<KmaasError> {
  let thrown: unknown;
  try {
    await fn();
  } catch (err) {
    thrown = err;
  }
  return expectCode(
    () => {
      throw thrown;
    },
    code,
    details,
  );
}

const REPLY_SCHEMAS: Record<string, z.ZodType> = {
  status: statusReply,
  'dkg.round1': dkgRound1Reply,
  'dkg.round2': dkgRound2Reply,
  'dkg.round3': dkgRound3Reply,
  'dkg.commit': dkgCommitReply,
  evaluate: evaluateReply,
  keyPackage: keyPackageReply,
};

/** A coordinator-side WebSocket connection: each request gets the reply with its id. */
export class NodeClient {
  readonly #ws: WebSocket;
  readonly #pending = new Map<string, (reply: NodeReply) => void>();
  #next = 0;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.on('message', (data: Buffer) => {
      const reply = JSON.parse(data.toString('utf8')) as NodeReply;
      const resolve = this.#pending.get(reply.id);
      this.#pending.delete(reply.id);
      resolve?.(reply);
    });
  }

  static connect(url: string, token = CLUSTER_TOKEN): Promise<NodeClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
      ws.once('open', () => resolve(new NodeClient(ws)));
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) =>
        reject(new Error(`upgrade refused with ${res.statusCode}`)),
      );
    });
  }

  /** Send raw text; the reply is awaited under `id` ("unknown" when the text has none). */
  sendRaw(text: string, id = 'unknown'): Promise<NodeReply> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply to ${id}`)), 10_000);
      this.#pending.set(id, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
      this.#ws.send(text);
    });
  }

  request(type: string, body: unknown, v = 1): Promise<NodeReply> {
    const id = `req-${++this.#next}`;
    return this.sendRaw(JSON.stringify({ v, id, type, body }), id);
  }

  /** The body of a successful reply; fails the test on an error reply. */
  async call<T>(type: string, body: unknown): Promise<T> {
    const reply = nodeReplyEnvelope.parse(await this.request(type, body));
    if (!reply.ok) throw KmaasError.fromBody(reply.error as ErrorBody);
    // Every successful reply must match its schema in shared/messages.ts, exactly as sent.
    const schema = REPLY_SCHEMAS[type];
    if (schema) expect(schema.parse(reply.body)).to.deep.equal(reply.body);
    return reply.body as T;
  }

  get socket(): WebSocket {
    return this.#ws;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.#ws.readyState === WebSocket.CLOSED) return resolve();
      this.#ws.once('close', () => resolve());
      this.#ws.close();
    });
  }
}

export interface ClusterNode {
  id: number;
  dataDir: string;
  secret: Redacted<Uint8Array>;
  handle: NodeHandle;
  client: NodeClient;
}

/** n nodes in-process, each with its own temp folder and secret, listening on port 0. */
export class Cluster {
  readonly nodes = new Map<number, ClusterNode>();
  readonly #logger: Logger;

  private constructor(logger: Logger) {
    this.#logger = logger;
  }

  static async start(n: number, logger: Logger = silentLogger()): Promise<Cluster> {
    const cluster = new Cluster(logger);
    try {
      for (let id = 1; id <= n; id++) {
        const dataDir = await tempDir();
        const secret = randomSecret();
        const handle = await startNode(nodeConfig(id, dataDir, secret), logger);
        const client = await NodeClient.connect(handle.url);
        cluster.nodes.set(id, { id, dataDir, secret, handle, client });
      }
    } catch (err) {
      await cluster.close();
      throw err;
    }
    return cluster;
  }

  node(id: number): ClusterNode {
    const node = this.nodes.get(id);
    if (!node) throw new Error(`no node ${id}`);
    return node;
  }

  /** Stop one node and start it again on the same folder and secret (a new port). */
  async restart(id: number): Promise<void> {
    const node = this.node(id);
    await node.client.close();
    await node.handle.close();
    node.handle = await startNode(nodeConfig(id, node.dataDir, node.secret), this.#logger);
    node.client = await NodeClient.connect(node.handle.url);
  }

  async close(): Promise<void> {
    for (const node of this.nodes.values()) {
      await node.client.close();
      await node.handle.close();
      await removeDir(node.dataDir);
    }
    this.nodes.clear();
  }
}

export interface DkgParams {
  ceremonyId: string;
  tenant: string;
  version: number;
  threshold: number;
  participants: number[];
  /** Made (signed by a quorum, with the nodes' identities) when absent. */
  proposal?: Proposal;
}

export interface DkgResult {
  packages: Map<number, KeyPackage>;
  /** Every round-2 package relayed (sealed: tests check that they reach no log). */
  relayed: Round2Wire[];
  /** Each node's answer to the final dkg.commit. */
  committed: Map<number, { ceremonyId: string; erased: boolean }>;
}

/**
 * The coordinator's relay of the three DKG rounds, then dkg.commit to every node (all returned
 * a package; runDkg's callers check that they are identical); returns each node's key package.
 */
export async function runDkg(cluster: Cluster, params: DkgParams): Promise<DkgResult> {
  const nodes = params.participants.map((id) => cluster.node(id));
  const committee = await committeeOf(nodes);
  const body = round1Body(params, (node) => committee.find((m) => m.node === node)!);
  const round1 = await Promise.all(nodes.map((n) => n.client.call<Round1Wire>('dkg.round1', body)));
  const round2 = await Promise.all(
    nodes.map((n) =>
      n.client.call<{ packages: Round2Wire[] }>('dkg.round2', {
        ceremonyId: params.ceremonyId,
        round1,
      }),
    ),
  );
  const relayed = round2.flatMap((r) => r.packages);
  const round3 = await Promise.all(
    nodes.map((n) =>
      n.client.call<{ keyPackage: KeyPackage }>('dkg.round3', {
        ceremonyId: params.ceremonyId,
        round2: relayed.filter((p) => p.to === n.id),
      }),
    ),
  );
  const committed = await Promise.all(
    nodes.map((n) =>
      n.client.call<{ ceremonyId: string; erased: boolean }>('dkg.commit', {
        ceremonyId: params.ceremonyId,
      }),
    ),
  );
  return {
    packages: new Map(nodes.map((n, i) => [n.id, round3[i]!.keyPackage])),
    relayed,
    committed: new Map(nodes.map((n, i) => [n.id, committed[i]!])),
  };
}

/** The committee of a dkg.round1 request, from each node's published identity (`status`). */
export async function committeeOf(nodes: readonly ClusterNode[]): Promise<CommitteeMember[]> {
  return Promise.all(
    nodes.map(async (n) => {
      const status = await n.client.call<z.infer<typeof statusReply>>('status', {});
      if (!status.identity) throw new Error(`node ${n.id} publishes no identity`);
      return { node: n.id, ...status.identity };
    }),
  );
}

/** A fresh ceremony id of the allowed alphabet. */
export function ceremonyId(): string {
  return randomBytes(12).toString('base64url');
}
