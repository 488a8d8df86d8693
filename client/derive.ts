/**
 * Document keys, derived through the coordinator (DESIGN.md section 2). For each batch of at most
 * MAX_BATCH documents:
 *
 *   1. input_i = documentInput(tenant, version, documentId_i)          (shared/document.ts)
 *   2. B_i = Blind(input_i)                                           (RFC 9497 section 3.3.1)
 *   3. POST /v1/tenants/:tenant/keys/:version/evaluate { blinded }, with the user's access token
 *      and a fresh DPoP proof covering these blinded elements (client/dpop.ts)
 *      -> { partials: [{ node, evaluated, proof }] } from t or more nodes
 *   4. each partial is decoded and its batched DLEQ proof checked against K_j from the pinned key
 *      package (never from the answer); the first t valid ones are combined with Lagrange
 *      coefficients and finalized (shared/voprf-client.ts deriveOutputs)
 *   5. key_i = HKDF-SHA-256(output_i) -> 32 bytes for AES-256-GCM       (documentKeyBytes)
 *
 * The answer names the committee epoch of its partials; when that is not the epoch of the cached
 * package (a reshare gave the key new verification shares), the package is fetched again, still
 * under the pinned group key, and the batch asked once more if it still differs
 * (ERR_EPOCH_MISMATCH after that).
 *
 * A node whose answer does not decode or does not verify is named in a Rejection; the derivation
 * still succeeds while t valid answers remain, and fails with ERR_TOO_FEW_NODES listing every
 * rejected node otherwise. Blinds and VOPRF outputs are zeroed once used.
 */
import { z } from 'zod';
import { randomBytes } from '@noble/hashes/utils.js';
import { documentInput, documentKeyBytes, checkTenant } from '../shared/document.ts';
import { decodeElementB64, fromB64, toB64 } from '../shared/encoding.ts';
import { KmaasError, toKmaasError } from '../shared/errors.ts';
import type { ParsedKeyPackage } from '../shared/key-package.ts';
import { evaluateResponse, parseMessage, type EvaluateResponse } from '../shared/messages.ts';
import type { Rng } from '../shared/shamir.ts';
import { MAX_BATCH } from '../shared/suite.ts';
import {
  blind,
  deriveOutputs,
  type BlindState,
  type PartialEvaluation,
  type Rejection,
} from '../shared/voprf-client.ts';
import { createEvaluateProof } from './dpop.ts';
import type { EventHandler } from './events.ts';
import { seg, type CoordinatorHttp } from './http.ts';
import { checkKeyVersion, type KeyPackages } from './key-packages.ts';

export interface DeriveContext {
  http: CoordinatorHttp;
  packages: KeyPackages;
  /** The end user's access token and DPoP key, for evaluate requests. */
  auth: ClientAuth | undefined;
  onEvent?: EventHandler;
  /** Batches in flight at once. Default 4. */
  concurrency?: number;
  /** Source of the blinds; tests pass a fixed one. */
  rng?: Rng;
  /** Largest batch per request. Default (and maximum) MAX_BATCH. */
  maxBatch?: number;
}

/** The end user's credential: a DPoP-bound access token and the key it is bound to. */
export interface ClientAuth {
  /** The token, or a function that returns a current one (called once per request). */
  accessToken: string | (() => string | Promise<string>);
  /** The key the token is bound to (cnf.jkt); see generateDpopKey. */
  dpopKey: CryptoKeyPair;
}

async function accessToken(auth: ClientAuth): Promise<string> {
  const token =
    typeof auth.accessToken === 'function' ? await auth.accessToken() : auth.accessToken;
  if (typeof token !== 'string' || token === '') {
    throw new KmaasError('ERR_CONFIG', 'auth.accessToken: expected a non-empty string', {
      field: 'auth',
    });
  }
  return token;
}

export interface DerivedKeys {
  /** One 32-byte AES-256-GCM key per document id, in order. The caller zeroes them after use. */
  keys: Uint8Array[];
  /** The nodes whose partial evaluations were combined, over all batches, ascending. */
  nodes: number[];
  /** Answers that were refused although t others were valid. */
  rejected: Rejection[];
}

export async function deriveKeys(
  ctx: DeriveContext,
  tenant: string,
  version: number,
  documentIds: readonly string[],
): Promise<DerivedKeys> {
  checkTenant(tenant);
  checkKeyVersion(version);
  // Step 1 for every document first: a bad id fails before anything goes on the wire.
  const inputs = documentIds.map((id) => documentInput(tenant, version, id));
  if (inputs.length === 0) return { keys: [], nodes: [], rejected: [] };
  if (ctx.auth === undefined) {
    throw new KmaasError(
      'ERR_CONFIG',
      'an access token and DPoP key (auth) are required to derive keys',
      { field: 'auth' },
    );
  }
  const auth = ctx.auth;
  const pkg = await ctx.packages.get(tenant, version);

  const size = Math.min(ctx.maxBatch ?? MAX_BATCH, MAX_BATCH);
  const batches: Uint8Array[][] = [];
  for (let i = 0; i < inputs.length; i += size) batches.push(inputs.slice(i, i + size));

  const results = await mapPool(batches, ctx.concurrency ?? 4, (batch) =>
    deriveBatch(ctx, auth, pkg, batch),
  );
  const nodes = new Set<number>();
  const rejected: Rejection[] = [];
  for (const r of results) {
    for (const n of r.used) nodes.add(n);
    rejected.push(...r.rejected);
  }
  if (rejected.length > 0) ctx.onEvent?.({ type: 'nodes-rejected', tenant, version, rejected });
  return {
    keys: results.flatMap((r) => r.keys),
    nodes: [...nodes].sort((a, b) => a - b),
    rejected,
  };
}

interface BatchResult {
  keys: Uint8Array[];
  used: number[];
  rejected: Rejection[];
}

async function deriveBatch(
  ctx: DeriveContext,
  auth: ClientAuth,
  initial: ParsedKeyPackage,
  inputs: Uint8Array[],
): Promise<BatchResult> {
  const { tenant, version } = initial;
  // Step 2.
  const state = blind(inputs, ctx.rng ?? randomBytes);
  try {
    const blinded = state.blinded.map((b) => toB64(b.toBytes()));
    let pkg = initial;
    // Epochs: the partials must be checked against the package of their epoch. When the answer's
    // epoch is not the cached package's, a reshare happened: fetch the package again (the pin on
    // the group key still holds it). When even that does not match (the coordinator was between
    // the two), ask once more, then give up.
    for (let attempt = 1; ; attempt++) {
      let res: EvaluateResponse;
      try {
        res = await requestBatch(ctx, auth, tenant, version, blinded);
      } catch (err) {
        if (attempt > 1 || toKmaasError(err).code !== 'ERR_EPOCH_MISMATCH') throw err;
        pkg = await ctx.packages.refresh(pkg);
        continue;
      }
      const epoch = res.epoch ?? 1;
      if (epoch !== pkg.epoch) pkg = await ctx.packages.refresh(pkg);
      if (epoch !== pkg.epoch) {
        if (attempt === 1) continue;
        throw new KmaasError(
          'ERR_EPOCH_MISMATCH',
          `evaluate answered with epoch ${epoch}, but the key package of ${tenant} version ${version} is of epoch ${pkg.epoch}`,
          { tenant, version, requested: pkg.epoch, current: epoch },
        );
      }
      return combineBatch(pkg, state, res, epoch);
    }
  } finally {
    for (const b of state.blinds) b.fill(0);
  }
}

/** Step 3: one request, with one DPoP proof over exactly the elements it sends. */
async function requestBatch(
  ctx: DeriveContext,
  auth: ClientAuth,
  tenant: string,
  version: number,
  blinded: string[],
): Promise<EvaluateResponse> {
  const path = `/v1/tenants/${seg(tenant)}/keys/${seg(version)}/evaluate`;
  const token = await accessToken(auth);
  const proof = await createEvaluateProof({
    dpopKey: auth.dpopKey,
    accessToken: token,
    url: ctx.http.url(path),
    tenant,
    version,
    blinded,
  });
  const raw = await ctx.http.post(path, { blinded }, { dpop: { token, proof } });
  const res = parseMessage(evaluateResponse, raw, 'evaluate response');
  if (res.tenant !== tenant || res.version !== version) {
    throw new KmaasError(
      'ERR_VALIDATION',
      `evaluate response: names ${res.tenant} version ${res.version}, expected ${tenant} version ${version}`,
      { field: 'tenant' },
    );
  }
  return res;
}

/** Steps 4 and 5, against the package of the answer's epoch. */
function combineBatch(
  pkg: ParsedKeyPackage,
  state: BlindState,
  res: EvaluateResponse,
  epoch: number,
): BatchResult {
  // Step 4: an answer that does not even decode, or is of another epoch than the response says,
  // is that node's fault, not the request's.
  const partials: PartialEvaluation[] = [];
  const undecodable: Rejection[] = [];
  for (const p of res.partials) {
    try {
      if (p.epoch !== undefined && p.epoch !== epoch) {
        throw new KmaasError(
          'ERR_EPOCH_MISMATCH',
          `node ${p.node}: partial of epoch ${p.epoch} in an answer of epoch ${epoch}`,
          { node: p.node },
        );
      }
      partials.push(decodePartial(p));
    } catch (err) {
      const e = toKmaasError(err);
      undecodable.push({ node: p.node, code: e.code, message: e.message });
    }
  }
  const { outputs, used, rejected } = combineOrExplain(pkg, state, partials, undecodable);
  // Step 5.
  const keys = outputs.map((o) => {
    const key = documentKeyBytes(o);
    o.fill(0);
    return key;
  });
  return { keys, used, rejected: [...undecodable, ...rejected] };
}

/** One node's answer as the coordinator relays it (base64url), decoded for deriveOutputs. */
export function decodePartial(p: {
  node: number;
  evaluated: string[];
  proof: string;
}): PartialEvaluation {
  const field = `partials[node ${p.node}]`;
  return {
    node: p.node,
    evaluated: p.evaluated.map((e, i) => decodeElementB64(e, `${field}.evaluated[${i}]`)),
    proof: fromB64(p.proof, `${field}.proof`),
  };
}

/** deriveOutputs, with the nodes refused before it in the ERR_TOO_FEW_NODES details too. */
function combineOrExplain(
  pkg: ParsedKeyPackage,
  state: BlindState,
  partials: PartialEvaluation[],
  undecodable: Rejection[],
): ReturnType<typeof deriveOutputs> {
  try {
    return deriveOutputs(pkg, state, partials);
  } catch (err) {
    if (err instanceof KmaasError && err.code === 'ERR_TOO_FEW_NODES') {
      const seen = (err.details?.failed as Rejection[] | undefined) ?? [];
      const rejected = [...undecodable, ...seen];
      const names = rejected.map((r) => `node ${r.node}: ${r.code}`).join(', ');
      throw new KmaasError(
        'ERR_TOO_FEW_NODES',
        `${err.message}${names ? ` (refused ${names})` : ''}`,
        { ...err.details, failed: rejected },
      );
    }
    throw err;
  }
}

/**
 * Run `fn` over `items` with at most `limit` in flight. On the first failure no new item starts;
 * the keys of batches that did finish are zeroed and the first error is thrown.
 */
async function mapPool(
  items: Uint8Array[][],
  limit: number,
  fn: (item: Uint8Array[]) => Promise<BatchResult>,
): Promise<BatchResult[]> {
  const out: BatchResult[] = [];
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure !== undefined) {
    for (const r of out) for (const k of r?.keys ?? []) k.fill(0);
    throw failure.err;
  }
  return out;
}

const tenantInfoSchema = z.object({
  tenant: z.string(),
  versions: z.array(
    z.object({
      version: z.number().int().min(1).max(0xffffffff),
      threshold: z.number().int().optional(),
      groupKey: z.string().optional(),
      /** Retired by an operator proposal: it no longer derives keys. */
      retired: z.boolean().optional(),
    }),
  ),
});

export type TenantInfo = z.infer<typeof tenantInfoSchema>;

/**
 * `GET /v1/tenants/:tenant`. What it says about group keys is not trusted: key packages are
 * checked against the pins.
 */
export async function tenantInfo(http: CoordinatorHttp, tenant: string): Promise<TenantInfo> {
  checkTenant(tenant);
  const info = parseMessage(
    tenantInfoSchema,
    await http.get(`/v1/tenants/${seg(tenant)}`),
    'tenant',
  );
  if (info.tenant !== tenant) {
    throw new KmaasError('ERR_VALIDATION', `tenant: asked for ${tenant}, got ${info.tenant}`, {
      field: 'tenant',
    });
  }
  return info;
}

/** The highest key version the tenant has that is not retired. */
export async function latestVersion(http: CoordinatorHttp, tenant: string): Promise<number> {
  const info = await tenantInfo(http, tenant);
  const live = info.versions.filter((v) => v.retired !== true);
  if (live.length === 0) {
    const why = info.versions.length === 0 ? 'has no key yet' : 'has only retired key versions';
    throw new KmaasError('ERR_UNKNOWN_KEY_VERSION', `tenant ${tenant} ${why}`, { tenant });
  }
  return Math.max(...live.map((v) => v.version));
}
