/**
 * The KMaaS SDK: document keys derived by the share nodes through the coordinator, and documents
 * encrypted under them in a streaming envelope. Runs in browsers and in Node 20 (fetch, WebCrypto).
 *
 * Trust: the client believes a key package only when its group key equals the pinned one for
 * that (tenant, version) (pins.ts). Every node's answer is checked against that package; the
 * coordinator is trusted for nothing but liveness (DESIGN.md section 1).
 *
 * @example
 *   const dpopKey = await generateDpopKey(); // the identity provider binds the token to it
 *   const client = new KmaasClient({ baseUrl, auth: { accessToken, dpopKey }, pins });
 *   const sealed = await client.encrypt(file.stream(), { tenant: 'acme', documentId: 'a.pdf' });
 *   for await (const bytes of sealed) upload(bytes);
 *   const opened = await client.decrypt(download());
 *   opened.documentId; // 'a.pdf'
 *   for await (const bytes of opened) show(bytes);
 *   const moved = await client.rewrap(download()); // after key.rotate: under the newest version
 *   for await (const bytes of moved) upload(bytes); // complete only if the old one authenticated
 */
import { z } from 'zod';
import { checkTenant } from '../shared/document.ts';
import { KmaasError } from '../shared/errors.ts';
import type { ParsedKeyPackage } from '../shared/key-package.ts';
import { parseMessage } from '../shared/messages.ts';
import { clusterIdOf, keyCommittee, parseStatusView } from './committee.ts';
import {
  parseProposal,
  proposalId,
  type CommitteeMember,
  type Proposal,
} from '../shared/proposal.ts';
import type { Rng } from '../shared/shamir.ts';
import {
  deriveKeys,
  latestVersion,
  tenantInfo,
  type ClientAuth,
  type DeriveContext,
  type DerivedKeys,
  type TenantInfo,
} from './derive.ts';
import { decryptStream, encryptStream, readHeader, type EnvelopeHeader } from './envelope.ts';
import type { EventHandler } from './events.ts';
import { CoordinatorHttp, errorFromBody, seg, type FetchLike } from './http.ts';
import { KeyPackages } from './key-packages.ts';
import type { PinStore } from './pins.ts';
import { envelopeBytes, planRewraps, rewrapStream, type RewrapPlans } from './rewrap.ts';

export { KmaasError } from '../shared/errors.ts';
export type { ErrorCode } from '../shared/errors.ts';
export type { ClientEvent, EventHandler } from './events.ts';
export type { FetchLike } from './http.ts';
export { MemoryPinStore, type PinStore } from './pins.ts';
export type { ClientAuth, DerivedKeys, TenantInfo } from './derive.ts';
export { createEvaluateProof, dpopThumbprint, generateDpopKey } from './dpop.ts';
export {
  decryptStream,
  encryptStream,
  readHeader,
  EnvelopeReader,
  DEFAULT_CHUNK_SIZE,
  type EnvelopeHeader,
} from './envelope.ts';
export {
  envelopeBytes,
  planRewraps,
  rewrapAction,
  rewrapStream,
  type RewrapPlan,
  type RewrapPlans,
} from './rewrap.ts';

export interface KmaasClientOptions {
  /** The coordinator, e.g. `https://kmaas.example.com`. */
  baseUrl: string;
  /**
   * The end user's credential for evaluate requests: an access token bound to `dpopKey` (RFC
   * 9449), and the key, which signs a fresh proof for every request.
   */
  auth?: ClientAuth;
  /** The operator credential, sent on tenant creation and job queries. */
  adminToken?: string;
  pins: PinStore;
  /** Pin the group key of a (tenant, version) seen for the first time instead of refusing it. */
  trustOnFirstUse?: boolean;
  fetch?: FetchLike;
  /** Deadline for one HTTP request. Default 30 s. */
  timeoutMs?: number;
  onEvent?: EventHandler;
  /** Source of the VOPRF blinds; tests pass a fixed one. */
  rng?: Rng;
  /** Evaluate batches in flight at once. Default 4. */
  concurrency?: number;
}

export interface JobProgress {
  phase?: string;
  done?: number;
  total?: number;
}

export interface Job {
  id: string;
  /** What the job does: the proposal's operation (tenant.create, committee.reshare, ...). */
  operation?: string;
  /** Attempts made so far (retries after failures). */
  attemptsMade?: number;
  /** BullMQ's states: waiting, active, delayed, completed, failed, ... */
  state: string;
  progress: JobProgress;
  result?: unknown;
  error?: unknown;
}

export interface WaitOptions {
  onProgress?: (job: Job) => void;
  /** Give up after this long. Default 10 minutes. */
  timeoutMs?: number;
  /** Pause between polls. Default 500 ms. */
  pollIntervalMs?: number;
  /**
   * How long polls may fail in a row because the coordinator does not answer (a restart, Redis
   * reconnecting: ERR_NODE_UNAVAILABLE, ERR_REGISTRY_UNAVAILABLE) before following gives up with
   * ERR_NODE_UNAVAILABLE. The job goes on in the coordinator meanwhile. Default 30 s.
   */
  outageMs?: number;
  /** Called with the error of the first failed poll of each such outage. */
  onOutage?: (err: KmaasError) => void;
}

/** An envelope on its way in or out: what it is, who helped, and the bytes when iterated. */
export interface EnvelopeStream extends AsyncIterable<Uint8Array> {
  tenant: string;
  keyVersion: number;
  documentId: string;
  /** The nodes whose partial evaluations made the document key. */
  nodes: number[];
}

/** A rewrapped envelope on its way out; `keyVersion` is the version it is under now. */
export interface RewrapStream extends EnvelopeStream {
  /** The key version of the envelope that was read. */
  fromVersion: number;
  /** false: it already was under the target version, and the stream gives it unchanged. */
  rewrapped: boolean;
}

const jobSchema = z.object({
  id: z.union([z.string(), z.number()]),
  operation: z.string().optional(),
  attemptsMade: z.number().int().nonnegative().optional(),
  state: z.string(),
  progress: z.unknown().optional(),
  result: z.unknown().optional(),
  error: z.unknown().optional(),
});

const proposalResponse = z.union([
  // committee.reshare names no tenant or version.
  z.object({
    jobId: z.union([z.string(), z.number()]),
    proposal: z.string().optional(),
    operation: z.string().optional(),
    tenant: z.string().optional(),
    version: z.number().int().optional(),
  }),
  z.object({
    proposal: z.string(),
    operation: z.string(),
    tenant: z.string(),
    version: z.number().int(),
    complete: z.boolean(),
    nodes: z.array(
      z.object({
        node: z.number().int(),
        ok: z.boolean(),
        error: z.object({ code: z.string(), message: z.string() }).optional(),
      }),
    ),
  }),
]);

/** What POST /v1/proposals answered: a DKG job to follow, or each node's answer (key.retire). */
export type ProposalSubmitted =
  | {
      kind: 'job';
      jobId: string;
      /** Absent when the coordinator does not say (the proposal's own id and fields hold). */
      proposal?: string;
      operation?: string;
      /** Key operations only: committee.reshare names none. */
      tenant?: string;
      version?: number;
    }
  | {
      kind: 'applied';
      proposal: string;
      operation: string;
      tenant: string;
      version: number;
      complete: boolean;
      nodes: { node: number; ok: boolean; error?: { code: string; message: string } }[];
    };

const statusSchema = z
  .object({
    cluster: z.string().nullable().optional(),
    nodes: z.array(z.object({ id: z.number() }).passthrough()),
  })
  .passthrough();

export type Status = z.infer<typeof statusSchema>;

function normalizeProgress(p: unknown): JobProgress {
  if (typeof p === 'number') return { done: p, total: 100 };
  if (typeof p !== 'object' || p === null) return {};
  const o = p as Record<string, unknown>;
  return {
    ...(typeof o.phase === 'string' ? { phase: o.phase } : {}),
    ...(typeof o.done === 'number' ? { done: o.done } : {}),
    ...(typeof o.total === 'number' ? { total: o.total } : {}),
  };
}

function jobFailure(job: Job): KmaasError {
  const coded = errorFromBody(job.error);
  if (coded) return coded;
  const message = typeof job.error === 'string' ? job.error : 'no reason given';
  return new KmaasError('ERR_DKG_FAILED', `job ${job.id} failed: ${message}`, { jobId: job.id });
}

/** A poll that failed with one of these is tried again (WaitOptions.outageMs). */
const OUTAGE_CODES: ReadonlySet<string> = new Set([
  'ERR_NODE_UNAVAILABLE',
  'ERR_REGISTRY_UNAVAILABLE',
]);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function withInfo(
  stream: AsyncIterable<Uint8Array>,
  info: Omit<EnvelopeStream, typeof Symbol.asyncIterator>,
  cleanup: () => void,
): EnvelopeStream {
  return {
    ...info,
    async *[Symbol.asyncIterator]() {
      try {
        yield* stream;
      } finally {
        cleanup();
      }
    },
  };
}

export class KmaasClient {
  readonly http: CoordinatorHttp;
  private readonly packages: KeyPackages;
  private readonly derive: DeriveContext;

  constructor(private readonly opts: KmaasClientOptions) {
    this.http = new CoordinatorHttp({
      baseUrl: opts.baseUrl,
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
      ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}),
    });
    this.packages = new KeyPackages({
      http: this.http,
      pins: opts.pins,
      trustOnFirstUse: opts.trustOnFirstUse ?? false,
      ...(opts.onEvent ? { onEvent: opts.onEvent } : {}),
    });
    this.derive = {
      http: this.http,
      packages: this.packages,
      auth: opts.auth,
      ...(opts.onEvent ? { onEvent: opts.onEvent } : {}),
      ...(opts.rng ? { rng: opts.rng } : {}),
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
    };
  }

  private adminToken(): string {
    if (this.opts.adminToken === undefined) {
      throw new KmaasError('ERR_CONFIG', 'an admin token is required for this operation', {
        field: 'adminToken',
      });
    }
    return this.opts.adminToken;
  }

  /** `GET /v1/status`: the coordinator's view of the nodes and tenants. */
  async status(): Promise<Status> {
    const token = this.opts.adminToken;
    const raw = await this.http.get('/v1/status', token === undefined ? {} : { token });
    return parseMessage(statusSchema, raw, 'status');
  }

  /**
   * The cluster id and the committee a key generation must use, from GET /v1/status: the current
   * epoch's (with its threshold and number) when there is one, else `firstCommittee` (the nodes
   * of the first committee, when the caller knows them: spare nodes are in none), else every
   * configured node. ERR_NODE_UNAVAILABLE when a member did not report its identity keys;
   * ERR_CONFIG when the nodes report no single cluster id.
   */
  async committee(firstCommittee?: readonly number[]): Promise<{
    cluster: string;
    committee: CommitteeMember[];
    threshold?: number;
    epoch?: number;
  }> {
    const view = parseStatusView(await this.status());
    return { cluster: clusterIdOf(view), ...keyCommittee(view, firstCommittee) };
  }

  /**
   * `POST /v1/proposals` (operator): submit a signed operator proposal. tenant.create and
   * key.rotate answer with a DKG job to follow (waitForJob); key.retire with each node's answer.
   * The nodes check the signatures; the coordinator cannot act without them.
   */
  async submitProposal(proposal: Proposal): Promise<ProposalSubmitted> {
    const body = parseProposal(proposal);
    const raw = await this.http.post('/v1/proposals', body, { token: this.adminToken() });
    const res = parseMessage(proposalResponse, raw, 'proposal response');
    if ('jobId' in res) {
      return {
        kind: 'job',
        jobId: String(res.jobId),
        proposal: res.proposal ?? proposalId(body),
        operation: res.operation ?? body.operation,
        ...(res.tenant === undefined ? {} : { tenant: res.tenant }),
        ...(res.version === undefined ? {} : { version: res.version }),
      };
    }
    return { kind: 'applied', ...res };
  }

  async job(jobId: string): Promise<Job> {
    const token = this.opts.adminToken;
    const raw = await this.http.get(`/v1/jobs/${seg(jobId)}`, token === undefined ? {} : { token });
    const j = parseMessage(jobSchema, raw, 'job');
    return {
      id: String(j.id),
      ...(j.operation === undefined ? {} : { operation: j.operation }),
      ...(j.attemptsMade === undefined ? {} : { attemptsMade: j.attemptsMade }),
      state: j.state,
      progress: normalizeProgress(j.progress),
      ...(j.result === undefined ? {} : { result: j.result }),
      ...(j.error === undefined ? {} : { error: j.error }),
    };
  }

  /**
   * Poll a job until it completes (resolves with it) or fails (throws its error, or
   * ERR_DKG_FAILED when it names none). ERR_NODE_UNAVAILABLE after `timeoutMs`.
   */
  async waitForJob(jobId: string, opts: WaitOptions = {}): Promise<Job> {
    const timeoutMs = opts.timeoutMs ?? 600_000;
    const outageMs = opts.outageMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    let outageSince: number | undefined;
    for (;;) {
      let job: Job;
      try {
        job = await this.job(jobId);
        outageSince = undefined;
      } catch (err) {
        if (!(err instanceof KmaasError && OUTAGE_CODES.has(err.code))) throw err;
        const now = Date.now();
        if (outageSince === undefined) {
          outageSince = now;
          opts.onOutage?.(err);
        }
        if (now - outageSince >= outageMs) {
          throw new KmaasError(
            'ERR_NODE_UNAVAILABLE',
            `no answer about job ${jobId} for ${outageMs / 1000} s (${err.message}); ` +
              'the job goes on in the coordinator',
            { ...err.details, jobId, outageMs },
          );
        }
        await sleep(opts.pollIntervalMs ?? 500);
        continue;
      }
      opts.onProgress?.(job);
      if (job.state === 'completed') return job;
      if (job.state === 'failed') throw jobFailure(job);
      if (Date.now() >= deadline) {
        throw new KmaasError(
          'ERR_NODE_UNAVAILABLE',
          `job ${jobId} still ${job.state} after ${timeoutMs} ms`,
          { jobId, state: job.state, timeoutMs },
        );
      }
      await sleep(opts.pollIntervalMs ?? 500);
    }
  }

  /** The verified key package of (tenant, version). */
  keyPackage(tenant: string, version: number): Promise<ParsedKeyPackage> {
    return this.packages.get(tenant, version);
  }

  /**
   * Pin the group key served now for (tenant, version), e.g. right after creating the tenant.
   * An existing pin must match. `expectedGroupKey` (from the job's result) must match too.
   */
  pinKeyPackage(
    tenant: string,
    version: number,
    expectedGroupKey?: string,
  ): Promise<{ groupKey: string; newlyPinned: boolean }> {
    return this.packages.pin(tenant, version, expectedGroupKey);
  }

  tenant(tenant: string): Promise<TenantInfo> {
    return tenantInfo(this.http, tenant);
  }

  latestVersion(tenant: string): Promise<number> {
    return latestVersion(this.http, tenant);
  }

  /** One 32-byte key per document id, in order, and the nodes that made them. */
  deriveKeys(
    tenant: string,
    version: number,
    documentIds: readonly string[],
  ): Promise<DerivedKeys> {
    return deriveKeys(this.derive, tenant, version, documentIds);
  }

  /**
   * Encrypt `source` as document `documentId` of `tenant`, under `keyVersion` or the latest one.
   * The key is derived before this resolves; the bytes come when the result is iterated.
   */
  async encrypt(
    source: AsyncIterable<Uint8Array>,
    opts: { tenant: string; documentId: string; keyVersion?: number; chunkSize?: number },
  ): Promise<EnvelopeStream> {
    checkTenant(opts.tenant);
    const keyVersion = opts.keyVersion ?? (await this.latestVersion(opts.tenant));
    const { keys, nodes } = await this.deriveKeys(opts.tenant, keyVersion, [opts.documentId]);
    const key = keys[0]!;
    let stream: AsyncIterable<Uint8Array>;
    try {
      stream = encryptStream(source, {
        key,
        tenant: opts.tenant,
        keyVersion,
        documentId: opts.documentId,
        ...(opts.chunkSize === undefined ? {} : { chunkSize: opts.chunkSize }),
      });
    } catch (err) {
      key.fill(0);
      throw err;
    }
    return withInfo(
      stream,
      { tenant: opts.tenant, keyVersion, documentId: opts.documentId, nodes },
      () => key.fill(0),
    );
  }

  /**
   * Open an envelope: read its header, derive the key of the document it names, and stream the
   * plaintext. With `expect`, an envelope for another tenant or document is refused before any
   * key is derived (ERR_VALIDATION), so a server cannot hand over one document for another.
   */
  async decrypt(
    source: AsyncIterable<Uint8Array>,
    expect: { tenant?: string; documentId?: string } = {},
  ): Promise<EnvelopeStream> {
    const reader = await readHeader(source);
    const header: EnvelopeHeader = reader.header;
    let key: Uint8Array;
    let nodes: number[];
    try {
      for (const field of ['tenant', 'documentId'] as const) {
        if (expect[field] !== undefined && expect[field] !== header[field]) {
          throw new KmaasError(
            'ERR_VALIDATION',
            `${field}: the envelope is for ${header[field]}, expected ${expect[field]}`,
            { field },
          );
        }
      }
      const derived = await this.deriveKeys(header.tenant, header.keyVersion, [header.documentId]);
      key = derived.keys[0]!;
      nodes = derived.nodes;
    } catch (err) {
      await reader.close();
      throw err;
    }
    const k = key;
    return withInfo(
      decryptStream(reader, k),
      {
        tenant: header.tenant,
        keyVersion: header.keyVersion,
        documentId: header.documentId,
        nodes,
      },
      () => k.fill(0),
    );
  }

  /**
   * Plan the rewrap of many envelopes (their headers, from readHeader): for each, whether it is
   * rewrapped, already at the target version, or cannot be (and why), with the keys of those to
   * rewrap, derived in batches: one deriveKeys per (tenant, version). The target is `toVersion`,
   * else each tenant's latest version. Call dispose() when done.
   */
  planRewrap(
    headers: readonly EnvelopeHeader[],
    opts: { toVersion?: number } = {},
  ): Promise<RewrapPlans> {
    return planRewraps(this, headers, opts.toVersion);
  }

  /**
   * Re-seal an envelope under `toVersion` or its tenant's latest key version, keeping tenant and
   * document id: one evaluate request per version. The result's bytes end without error only when
   * the old envelope authenticated to its end, and its final chunk comes only then, so a cut or
   * tampered input never gives a complete new envelope. An envelope already under the target
   * version comes back unchanged (`rewrapped: false`); a target older than it is ERR_VALIDATION.
   * `expect` refuses an envelope of another tenant or document, as in decrypt.
   */
  async rewrap(
    source: AsyncIterable<Uint8Array>,
    opts: {
      toVersion?: number;
      chunkSize?: number;
      expect?: { tenant?: string; documentId?: string };
    } = {},
  ): Promise<RewrapStream> {
    const reader = await readHeader(source);
    const { header } = reader;
    let planned: RewrapPlans;
    try {
      for (const field of ['tenant', 'documentId'] as const) {
        const expected = opts.expect?.[field];
        if (expected !== undefined && expected !== header[field]) {
          throw new KmaasError(
            'ERR_VALIDATION',
            `${field}: the envelope is for ${header[field]}, expected ${expected}`,
            { field },
          );
        }
      }
      planned = await this.planRewrap([header], opts);
    } catch (err) {
      await reader.close();
      throw err;
    }
    const plan = planned.plans[0]!;
    const info = {
      tenant: header.tenant,
      documentId: header.documentId,
      fromVersion: header.keyVersion,
    };
    if (plan.action === 'failed') {
      await reader.close();
      throw plan.error;
    }
    if (plan.action === 'current') {
      return {
        ...withInfo(
          envelopeBytes(reader),
          { ...info, keyVersion: plan.toVersion, nodes: [] },
          () => {},
        ),
        fromVersion: header.keyVersion,
        rewrapped: false,
      };
    }
    let stream: AsyncIterable<Uint8Array>;
    try {
      stream = rewrapStream(reader, {
        fromKey: plan.fromKey,
        toKey: plan.toKey,
        toVersion: plan.toVersion,
        ...(opts.chunkSize === undefined ? {} : { chunkSize: opts.chunkSize }),
      });
    } catch (err) {
      planned.dispose();
      await reader.close();
      throw err;
    }
    return {
      ...withInfo(stream, { ...info, keyVersion: plan.toVersion, nodes: plan.nodes }, () =>
        planned.dispose(),
      ),
      fromVersion: header.keyVersion,
      rewrapped: true,
    };
  }
}
