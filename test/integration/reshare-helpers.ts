/**
 * Helpers for the resharing tests on real processes: committee.reshare proposals built from the
 * coordinator's status and signed with the cluster's dev operator keys, a background load that
 * keeps deriving document keys and compares every one with the key derived before any change,
 * and a look into each node's SQLite file (read-only) for which epochs it still holds shares of.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { bytesToHex } from '@noble/hashes/utils.js';
import { KmaasClient } from '../../client/index.ts';
import { createEvaluateProof } from '../../client/dpop.ts';
import { MemoryPinStore } from '../../client/pins.ts';
import { devLogin } from '../../idp/dev-login.ts';
import { documentInput } from '../../shared/document.ts';
import { evaluatePath } from '../../shared/dpop-binding.ts';
import { toB64 } from '../../shared/encoding.ts';
import { toKmaasError } from '../../shared/errors.ts';
import { nodeReplyEnvelope } from '../../shared/messages.ts';
import { blind } from '../../shared/voprf-client.ts';
import { draftProposal, type CommitteeMember, type Proposal } from '../../shared/proposal.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import { signWithDevKeys } from '../../scripts/lib/operators.ts';
import { NodeClient } from '../nodes/helpers.ts';

export interface EpochView {
  epoch: number;
  threshold: number;
  committee: CommitteeMember[];
}

interface StatusNode {
  id: number;
  identity?: { signing: string; encryption: string };
}

/** The current epoch and every configured node's identity keys, from GET /v1/status. */
export async function clusterView(
  client: KmaasClient,
): Promise<{ cluster: string; epoch: EpochView; identities: Map<number, CommitteeMember> }> {
  const status = (await client.status()) as unknown as {
    cluster: string;
    epoch: EpochView | null;
    nodes: StatusNode[];
  };
  if (!status.epoch) throw new Error('the coordinator reports no epoch');
  const identities = new Map<number, CommitteeMember>();
  for (const n of status.nodes) {
    if (n.identity) identities.set(n.id, { node: n.id, ...n.identity });
  }
  return { cluster: status.cluster, epoch: status.epoch, identities };
}

export interface Change {
  reason: 'add' | 'remove' | 'threshold' | 'refresh' | 'repair';
  add?: number[];
  remove?: number[];
  threshold?: number;
  /** Members whose identity keys are taken as the node reports them now (repair). */
  renew?: number[];
}

/** A committee.reshare proposal for `change`, signed by a quorum of the dev operators. */
export async function reshareProposal(
  client: KmaasClient,
  cluster: LocalCluster,
  change: Change,
): Promise<Proposal> {
  const view = await clusterView(client);
  const current = view.epoch;
  const keep = current.committee.filter((m) => !(change.remove ?? []).includes(m.node));
  const renewed = keep.map((m) =>
    (change.renew ?? []).includes(m.node) ? view.identities.get(m.node)! : m,
  );
  const added = (change.add ?? []).map((id) => {
    const m = view.identities.get(id);
    if (!m) throw new Error(`node ${id} reports no identity keys`);
    return m;
  });
  const committee = [...renewed, ...added].sort((a, b) => a.node - b.node);
  const p = draftProposal({
    cluster: view.cluster,
    operation: 'committee.reshare',
    committee,
    threshold: change.threshold ?? current.threshold,
    epoch: current.epoch + 1,
    previous: current,
    reason: change.reason,
    expiresAt: new Date(Date.now() + 3_600_000),
  });
  return signWithDevKeys(p, cluster.operators.keyFiles, 2);
}

/** Submit `p` and wait for its job; the job's result. Throws the job's error. */
export async function runProposal(client: KmaasClient, p: Proposal): Promise<unknown> {
  const submitted = await client.submitProposal(p);
  if (submitted.kind !== 'job') throw new Error('expected a job');
  const job = await client.waitForJob(submitted.jobId, { pollIntervalMs: 200, timeoutMs: 240_000 });
  return job.result;
}

/**
 * Derivations of random slices of `docs` in a loop, each compared with `expected`, until
 * stopped. Counts what succeeded, what failed (by code) and what gave another key.
 */
export class DerivationLoad {
  ok = 0;
  readonly failures: string[] = [];
  mismatches = 0;
  #running = true;
  #loop: Promise<void>;

  constructor(
    client: KmaasClient,
    tenant: string,
    version: number,
    docs: readonly string[],
    expected: readonly string[],
    batch = 8,
    fresh?: () => KmaasClient,
  ) {
    this.#loop = (async () => {
      let i = 0;
      while (this.#running) {
        const start = (i * batch) % docs.length;
        const ids = docs.slice(start, start + batch);
        // Every other round a client with nothing cached, as each CLI run is: it fetches the key
        // package from the registry, which switches to the new epoch package by package.
        const by = fresh && i % 2 === 1 ? fresh() : client;
        i++;
        try {
          const { keys } = await by.deriveKeys(tenant, version, ids);
          keys.forEach((k, j) => {
            if (bytesToHex(k) !== expected[start + j]) this.mismatches++;
          });
          this.ok++;
        } catch (err) {
          const e = toKmaasError(err);
          this.failures.push(`${e.code}: ${e.message}`);
        }
      }
    })();
  }

  /** Stop, and the counts since the last call. */
  async stop(): Promise<{ ok: number; failures: string[]; mismatches: number }> {
    this.#running = false;
    await this.#loop;
    return { ok: this.ok, failures: [...this.failures], mismatches: this.mismatches };
  }
}

/** Run `work` with the load going; the load must see no failure and no wrong key. */
export async function underLoad<T>(
  client: KmaasClient,
  tenant: string,
  docs: readonly string[],
  expected: readonly string[],
  work: () => Promise<T>,
  fresh?: () => KmaasClient,
): Promise<T> {
  const load = new DerivationLoad(client, tenant, 1, docs, expected, 8, fresh);
  let result: T;
  try {
    result = await work();
  } finally {
    const seen = await load.stop();
    expect(seen.failures, 'derivations that failed during the ceremony').to.deep.equal([]);
    expect(seen.mismatches, 'derivations that gave another key').to.equal(0);
    expect(seen.ok, 'derivations that ran during the ceremony').to.be.greaterThan(0);
  }
  return result!;
}

/** node.db of node `id` in the cluster's data folder. */
export function nodeDb(dataDir: string, id: number): string {
  return join(dataDir, `node-${id}`, 'node.db');
}

/** The epochs of the shares a node's database holds, per (tenant, version). */
export function shareEpochs(dbPath: string): { tenant: string; version: number; epoch: number }[] {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    return db
      .prepare('SELECT tenant, version, epoch FROM keys ORDER BY tenant, version, epoch')
      .all() as { tenant: string; version: number; epoch: number }[];
  } finally {
    db.close();
  }
}

/** Every sealed share blob of a node's database, as hex. */
export function sealedShares(dbPath: string): string[] {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    return (db.prepare('SELECT sealed_share FROM keys').all() as { sealed_share: Buffer }[]).map(
      (r) => r.sealed_share.toString('hex'),
    );
  } finally {
    db.close();
  }
}

/** True when `hex` occurs in the database file or its WAL or shared-memory file. */
export function bytesOnDisk(dbPath: string, hex: string): boolean {
  const needle = Buffer.from(hex, 'hex');
  return [dbPath, `${dbPath}-wal`, `${dbPath}-shm`].some(
    (f) => existsSync(f) && readFileSync(f).includes(needle),
  );
}

/** A dev user signed in: its access token and the DPoP key it is bound to. */
export type Login = Awaited<ReturnType<typeof devLogin>>;

/**
 * A LocalCluster of 5 nodes (plus `spareNodes`) in `dir` with its own Redis prefix, alice of
 * `tenant` signed in, a client trusting on first use, and `tenant` created at t = 3 by the dev
 * operators: epoch 1 with nodes 1-5.
 */
export async function startReshareCluster(
  dir: string,
  tenant: string,
  options: { spareNodes?: number; finishDelayMs: number },
): Promise<{
  cluster: LocalCluster;
  login: Login;
  client: KmaasClient;
  /** A new client of the same user and pins, with no key package cached. */
  fresh: () => KmaasClient;
}> {
  const cluster = new LocalCluster({
    dataDir: dir,
    nodes: 5,
    spareNodes: options.spareNodes ?? 0,
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    redisPrefix: `kmaas:test:${randomBytes(6).toString('hex')}:`,
    cleanRedisOnStop: true,
    nodeTimeoutMs: 3000,
    coordinatorEnv: { KMAAS_RESHARE_FINISH_DELAY_MS: String(options.finishDelayMs) },
  });
  await cluster.start();
  const alice = cluster.devUsers.find((u) => u.tenant === tenant)!;
  const login = await devLogin({ issuer: cluster.issuer, ...alice });
  const pins = new MemoryPinStore();
  const fresh = () =>
    new KmaasClient({
      baseUrl: cluster.url,
      auth: { accessToken: login.accessToken, dpopKey: login.dpopKey },
      adminToken: cluster.secrets.adminToken,
      pins,
      trustOnFirstUse: true,
    });
  const client = fresh();
  const { cluster: id, committee } = await client.committee([1, 2, 3, 4, 5]);
  const create = draftProposal({
    cluster: id,
    operation: 'tenant.create',
    tenant,
    version: 1,
    threshold: 3,
    committee,
    expiresAt: new Date(Date.now() + 600_000),
  });
  await runProposal(client, signWithDevKeys(create, cluster.operators.keyFiles, 2));
  return { cluster, login, client, fresh };
}

/**
 * An evaluate request for `doc` (key version 1) straight to node `id`, past the coordinator, with
 * the user's valid token and proof: 'ok', or the code the node refused it with.
 */
export async function evaluateAt(
  cluster: LocalCluster,
  login: Login,
  tenant: string,
  doc: string,
  id: number,
): Promise<string> {
  const node = cluster.secrets.nodes.find((n) => n.id === id)!;
  const link = await NodeClient.connect(
    `ws://127.0.0.1:${node.port}/v1/ws`,
    cluster.secrets.clusterToken,
  );
  try {
    const blinded = blind([documentInput(tenant, 1, doc)]).blinded.map((b) => toB64(b.toBytes()));
    const dpop = await createEvaluateProof({
      dpopKey: login.dpopKey,
      accessToken: login.accessToken,
      url: cluster.url + evaluatePath(tenant, 1),
      tenant,
      version: 1,
      blinded,
    });
    const reply = nodeReplyEnvelope.parse(
      await link.request('evaluate', {
        tenant,
        version: 1,
        blinded,
        auth: { token: login.accessToken, dpop },
      }),
    );
    return reply.ok ? 'ok' : reply.error.code;
  } finally {
    await link.close();
  }
}
