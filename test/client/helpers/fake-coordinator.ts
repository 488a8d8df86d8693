/**
 * A stand-in for the coordinator's HTTP API (docs/CONTRACTS.md), for SDK and CLI tests that must
 * not depend on the real coordinator or nodes. It holds real Shamir shares of a known secret per
 * (tenant, version) and answers evaluate with real partial evaluations and DLEQ proofs
 * (shared/voprf-node.ts), from `answering` nodes (default: t of them, chosen at random).
 * Hooks let a test corrupt what it serves. Listens on 127.0.0.1, port 0.
 */
import {
  asKeyProposal,
  parseProposal,
  proposalId,
  type CommitteeMember,
  type Proposal,
} from '../../../shared/proposal.ts';
import { strangerIdentity, TEST_CLUSTER_ID } from '../../helpers/operators.ts';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeElementB64, Point, toB64 } from '../../../shared/encoding.ts';
import { KmaasError, toKmaasError } from '../../../shared/errors.ts';
import { commit } from '../../../shared/feldman.ts';
import { buildKeyPackage, type KeyPackage } from '../../../shared/key-package.ts';
import { evaluateBody, parseJson, parseMessage } from '../../../shared/messages.ts';
import { randomScalar, split, type Share } from '../../../shared/shamir.ts';
import { evaluateBatch } from '../../../shared/voprf-node.ts';
import { checkBatchSize } from '../../../shared/suite.ts';
import { EvaluationAuth } from '../../../shared/evaluation-auth.ts';
import type { ClientAuth } from '../../../client/index.ts';
import type { OidcSettings } from '../../../shared/access-token.ts';
import { sharedIssuer } from '../../helpers/oidc.ts';

const ISSUER = await sharedIssuer();

export interface FakeKey {
  tenant: string;
  version: number;
  secret: bigint;
  threshold: number;
  shares: Share[];
  keyPackage: KeyPackage;
}

export interface WirePartial {
  node: number;
  evaluated: string[];
  proof: string;
}

export interface FakeJob {
  id: string;
  operation: string;
  tenant: string;
  version: number;
  /** States served on successive polls; the last one repeats. */
  script: { state: string; progress?: unknown; result?: unknown; error?: unknown }[];
  polls: number;
}

export class FakeCoordinator {
  /** The end user of tenant `acme` (an access token bound to a DPoP key), set by start(). */
  clientAuth!: ClientAuth;
  /**
   * Each evaluate request's access token and DPoP proof are checked as a node checks them:
   * against the shared TestIssuer, or the issuer given (the CLI tests run the real idp/).
   */
  private readonly verifier: EvaluationAuth;
  /** The DPoP proofs received, in order. */
  readonly proofs: string[] = [];
  readonly adminToken = 'admin-token-' + Math.random().toString(36).slice(2);
  /** The nodes the coordinator knows (tests push spare nodes). */
  readonly nodeIds = [1, 2, 3, 4, 5];
  readonly keys = new Map<string, FakeKey>();
  /** `tenant/version` of the versions retired (key.retire): evaluate answers ERR_KEY_RETIRED. */
  readonly retired = new Set<string>();
  readonly jobs = new Map<string, FakeJob>();
  /** Batch size of every evaluate request received, in order. */
  readonly evaluateSizes: number[] = [];
  /** The `epoch` each evaluate body named (the client's package epoch). */
  readonly evaluateEpochs: (number | undefined)[] = [];
  /** Every request as "METHOD path". */
  readonly requests: string[] = [];
  /** Nodes that answer evaluate requests; default a random t-subset each time. */
  answering: number[] | undefined;
  /** Rewrite the partials before they are sent. */
  tamper: ((partials: WirePartial[]) => WirePartial[]) | undefined;
  /** Rewrite a key package before it is served. */
  servePackage: ((pkg: KeyPackage) => unknown) | undefined;
  /** The epoch evaluate answers name, per key; default the served package's epoch. */
  answerEpoch: ((key: FakeKey) => number) | undefined;
  /**
   * The current epoch GET /v1/status reports; undefined leaves the field out (an older
   * coordinator), null says there is none yet.
   */
  epoch: { epoch: number; threshold: number; committee: CommitteeMember[] } | null | undefined;
  /** Nodes the status reports as not connected (no identity keys, no epoch). */
  readonly down = new Set<number>();
  /** Every proposal submitted, in order. */
  readonly proposals: Proposal[] = [];
  /** The job script of a committee.reshare job; default: every phase, then completed. */
  reshareScript: ((p: Proposal) => FakeJob['script']) | undefined;
  /** The job script used for tenant creation. */
  jobScript: ((key: FakeKey) => FakeJob['script']) | undefined;
  private server: Server | undefined;
  private nextJob = 1;
  url = '';

  constructor(opts: { oidc?: OidcSettings } = {}) {
    this.verifier = new EvaluationAuth(opts.oidc ?? ISSUER.settings());
  }

  addKey(tenant: string, version = 1, threshold = 3, secret = randomScalar()): FakeKey {
    const { shares, coefficients } = split(secret, threshold, this.nodeIds);
    const keyPackage = buildKeyPackage({
      tenant,
      version,
      commitments: commit(coefficients),
      verificationShares: new Map(shares.map((s) => [s.id, Point.BASE.multiply(s.value)])),
    });
    const key = { tenant, version, secret, threshold, shares, keyPackage };
    this.keys.set(`${tenant}/${version}`, key);
    return key;
  }

  /** An end user of `tenant`: a user's token is for one tenant only. */
  async authFor(tenant: string): Promise<ClientAuth> {
    const user = await ISSUER.user(tenant, 'client-user');
    return { accessToken: user.token, dpopKey: user.dpopKey };
  }

  async start(): Promise<string> {
    const user = await ISSUER.user('acme', 'client-user');
    this.clientAuth = { accessToken: user.token, dpopKey: user.dpopKey };
    const port = await this.listen(0);
    this.url = `http://127.0.0.1:${port}`;
    return this.url;
  }

  private async listen(port: number): Promise<number> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => this.send(res, toKmaasError(err)));
    });
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', resolve));
    return (this.server.address() as AddressInfo).port;
  }

  /** A restart: connections refused until resume(), which listens on the same port again. */
  pause(): Promise<void> {
    return this.close();
  }

  async resume(): Promise<void> {
    await this.listen(Number(new URL(this.url).port));
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private send(res: ServerResponse, body: unknown, status = 200): void {
    if (body instanceof KmaasError) {
      status = body.status;
      body = { error: body.toBody() };
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private async body(req: IncomingMessage): Promise<unknown> {
    const parts: Buffer[] = [];
    for await (const p of req) parts.push(p as Buffer);
    return parseJson(Buffer.concat(parts).toString('utf8'));
  }

  private key(tenant: string, version: number): FakeKey {
    const key = this.keys.get(`${tenant}/${version}`);
    if (key) return key;
    if ([...this.keys.values()].some((k) => k.tenant === tenant)) {
      throw new KmaasError('ERR_UNKNOWN_KEY_VERSION', `no version ${version}`);
    }
    throw new KmaasError('ERR_UNKNOWN_TENANT', `no tenant ${tenant}`);
  }

  private requireToken(req: IncomingMessage, token: string): void {
    if (req.headers.authorization !== `Bearer ${token}`) {
      throw new KmaasError('ERR_UNAUTHORIZED', 'missing or wrong credential');
    }
  }

  readonly #identities = new Map<number, { signing: string; encryption: string }>();

  /** Made-up identity keys, the same for a node every time. */
  identity(node: number): { signing: string; encryption: string } {
    let id = this.#identities.get(node);
    if (!id) {
      const { signing, encryption } = strangerIdentity(node);
      id = { signing, encryption };
      this.#identities.set(node, id);
    }
    return id;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    this.requests.push(`${req.method} ${path}`);
    let m: RegExpMatchArray | null;

    if (req.method === 'GET' && path === '/v1/status') {
      const epoch = this.epoch;
      const members = new Set(epoch?.committee.map((m) => m.node) ?? []);
      return this.send(res, {
        cluster: TEST_CLUSTER_ID,
        ...(epoch === undefined ? {} : { epoch }),
        nodes: this.nodeIds.map((id) => ({
          id,
          url: `ws://node-${id}`,
          connected: !this.down.has(id),
          identity: this.down.has(id) ? null : this.identity(id),
          ...(epoch === undefined
            ? {}
            : {
                epoch: epoch === null || this.down.has(id) || !members.has(id) ? null : epoch.epoch,
                member: members.has(id),
              }),
        })),
        ...(epoch === undefined
          ? {}
          : {
              keys: [...this.keys.values()].map((k) => ({
                tenant: k.tenant,
                versions: [
                  { version: k.version, epoch: k.keyPackage.epoch ?? 1, threshold: k.threshold },
                ],
              })),
            }),
        tenants: [...new Set([...this.keys.values()].map((k) => k.tenant))],
      });
    }

    if (req.method === 'POST' && path === '/v1/proposals') {
      this.requireToken(req, this.adminToken);
      const proposal = parseProposal(await this.body(req));
      this.proposals.push(proposal);
      if (proposal.operation === 'committee.reshare') {
        const id = String(this.nextJob++);
        const script = this.reshareScript?.(proposal) ?? [
          { state: 'waiting' },
          ...['begin', 'deal', 'prepare', 'vote', 'commit', 'switch', 'finish'].map((phase) => ({
            state: 'active',
            progress: { phase, done: 1, total: 2 },
          })),
          { state: 'completed', result: { epoch: proposal.epoch } },
        ];
        this.jobs.set(id, {
          id,
          operation: proposal.operation,
          tenant: '',
          version: 0,
          script,
          polls: 0,
        });
        return this.send(res, { jobId: id }, 202);
      }
      const body = asKeyProposal(proposal);
      if (body.operation === 'key.retire') {
        this.retired.add(`${body.tenant}/${body.version}`);
        return this.send(res, {
          proposal: proposalId(body),
          operation: body.operation,
          tenant: body.tenant,
          version: body.version,
          complete: true,
          nodes: (body.committee ?? []).map((m) => ({ node: m.node, ok: true })),
        });
      }
      const exists = [...this.keys.values()].some((k) => k.tenant === body.tenant);
      if (body.operation === 'tenant.create' && exists) {
        throw new KmaasError('ERR_TENANT_EXISTS', `tenant ${body.tenant} exists`);
      }
      const key = this.addKey(body.tenant, body.version, body.threshold ?? 3);
      const id = String(this.nextJob++);
      // As coordinator/dkg-job.ts reports it: the three DKG rounds (done counts the nodes that
      // answered), then the store of the key package.
      const n = this.nodeIds.length;
      const script = this.jobScript?.(key) ?? [
        { state: 'waiting' },
        { state: 'active', progress: { phase: 'round1', done: 0, total: n } },
        { state: 'active', progress: { phase: 'round2', done: 3, total: n } },
        { state: 'active', progress: { phase: 'round3', done: n, total: n } },
        { state: 'active', progress: { phase: 'store', done: 0, total: 1 } },
        {
          state: 'completed',
          progress: { phase: 'store', done: 1, total: 1 },
          result: { tenant: key.tenant, version: key.version, groupKey: key.keyPackage.groupKey },
        },
      ];
      this.jobs.set(id, {
        id,
        operation: body.operation,
        tenant: key.tenant,
        version: key.version,
        script,
        polls: 0,
      });
      return this.send(
        res,
        {
          jobId: id,
          proposal: proposalId(body),
          operation: body.operation,
          tenant: key.tenant,
          version: key.version,
        },
        202,
      );
    }

    if (req.method === 'GET' && (m = path.match(/^\/v1\/jobs\/([^/]+)$/))) {
      const job = this.jobs.get(decodeURIComponent(m[1]!));
      if (!job) throw new KmaasError('ERR_UNKNOWN_JOB', 'no such job');
      const step = job.script[Math.min(job.polls++, job.script.length - 1)]!;
      // Before any progress, the coordinator shows round 1 with no node done.
      const progress = { phase: 'round1', done: 0, total: this.nodeIds.length };
      return this.send(res, {
        id: job.id,
        operation: job.operation,
        tenant: job.tenant,
        version: job.version,
        progress,
        ...step,
      });
    }

    if (req.method === 'GET' && (m = path.match(/^\/v1\/tenants\/([^/]+)$/))) {
      const tenant = decodeURIComponent(m[1]!);
      const versions = [...this.keys.values()]
        .filter((k) => k.tenant === tenant)
        .map((k) => ({
          version: k.version,
          threshold: k.threshold,
          groupKey: k.keyPackage.groupKey,
          ...(this.retired.has(`${tenant}/${k.version}`) ? { retired: true } : {}),
        }));
      if (versions.length === 0) throw new KmaasError('ERR_UNKNOWN_TENANT', 'no such tenant');
      return this.send(res, { tenant, versions });
    }

    if (req.method === 'GET' && (m = path.match(/^\/v1\/tenants\/([^/]+)\/keys\/(\d+)$/))) {
      const key = this.key(decodeURIComponent(m[1]!), Number(m[2]));
      const pkg = structuredClone(key.keyPackage);
      return this.send(res, this.servePackage ? this.servePackage(pkg) : pkg);
    }

    if (
      req.method === 'POST' &&
      (m = path.match(/^\/v1\/tenants\/([^/]+)\/keys\/(\d+)\/evaluate$/))
    ) {
      const tenant = decodeURIComponent(m[1]!);
      const version = Number(m[2]);
      const authorization = req.headers.authorization ?? '';
      const token = authorization.startsWith('DPoP ') ? authorization.slice(5) : undefined;
      const dpop = typeof req.headers.dpop === 'string' ? req.headers.dpop : undefined;
      const key = this.key(tenant, version);
      if (this.retired.has(`${tenant}/${version}`)) {
        throw new KmaasError('ERR_KEY_RETIRED', `${tenant} version ${version} is retired`);
      }
      const body = parseMessage(evaluateBody, await this.body(req), 'body');
      if (dpop !== undefined) this.proofs.push(dpop);
      await this.verifier.verify({ token, dpop }, { tenant, version, blinded: body.blinded });
      checkBatchSize(body.blinded.length);
      this.evaluateSizes.push(body.blinded.length);
      this.evaluateEpochs.push(body.epoch);
      const blinded = body.blinded.map((b, i) => decodeElementB64(b, `blinded[${i}]`));
      // Only holders of a share of the served epoch answer (spares and removed nodes have none).
      const ids = this.answering ?? shuffle(key.shares.map((s) => s.id)).slice(0, key.threshold);
      let partials: WirePartial[] = ids.map((id) => {
        const share = key.shares.find((s) => s.id === id)!;
        const r = evaluateBatch(share.value, Point.BASE.multiply(share.value), blinded);
        return { node: id, evaluated: r.evaluated.map(toB64), proof: toB64(r.proof) };
      });
      if (this.tamper) partials = this.tamper(partials);
      return this.send(res, {
        tenant: key.tenant,
        version: key.version,
        epoch: this.answerEpoch?.(key) ?? key.keyPackage.epoch ?? 1,
        threshold: key.threshold,
        partials,
      });
    }

    throw new KmaasError('ERR_NOT_FOUND', `no route ${req.method} ${path}`);
  }
}

function shuffle<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
