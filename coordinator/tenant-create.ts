/**
 * POST /v1/tenants: check the request, take the creation lock, make sure neither Redis nor the
 * nodes already know the tenant, and queue its DKG (dkg-job.ts). The answer is the job to follow.
 * Version 1 is the first key of every tenant; later versions come from rotation.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { checkTenant } from '../shared/document.ts';
import { KmaasError } from '../shared/errors.ts';
import { parseMessage } from '../shared/messages.ts';
import type { DkgJobData, DkgQueue } from './dkg-job.ts';
import type { Logger } from './logger.ts';
import type { RedisKeys } from './redis-keys.ts';
import type { Registry } from './registry.ts';
import { acquireCreateLock, releaseCreateLock } from './tenant-lock.ts';

export const FIRST_VERSION = 1;

/**
 * The threshold policy: 2 <= t <= n and t > n/2. An honest majority is needed so that two
 * disjoint sets of nodes can never both reach t, and t >= 2 so that no node alone holds the key.
 * Without `t` the smallest majority, floor(n/2) + 1.
 */
export function checkThreshold(n: number, t?: number): number {
  const threshold = t ?? Math.floor(n / 2) + 1;
  if (!Number.isInteger(threshold) || threshold < 2 || threshold > n || 2 * threshold <= n) {
    throw new KmaasError(
      'ERR_BAD_THRESHOLD',
      `threshold ${threshold} for ${n} nodes: expected an integer with 2 <= t <= ${n} and t > ${n / 2}`,
      { threshold, nodes: n },
    );
  }
  return threshold;
}

// Shared createTenantBody says threshold >= 2 in its schema, which would turn t = 1 into
// ERR_VALIDATION; the threshold gets its own code, so only its type is checked here.
const createBody = z
  .object({ tenant: z.string().max(256), threshold: z.number().int().optional() })
  .strict();

export interface TenantCreatorDeps {
  redis: Redis;
  keys: RedisKeys;
  registry: Registry;
  queue: DkgQueue;
  participants: readonly number[];
  attempts: number;
  backoffMs: number;
  lockTtlMs: number;
  logger: Logger;
}

export interface CreateTenantAccepted {
  jobId: string;
  tenant: string;
  version: number;
}

export async function createTenant(
  deps: TenantCreatorDeps,
  body: unknown,
  log: Logger,
): Promise<CreateTenantAccepted> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new KmaasError(
      'ERR_VALIDATION',
      'body: expected a JSON object sent as Content-Type: application/json',
      { field: 'body' },
    );
  }
  const req = parseMessage(createBody, body, 'body');
  const tenant = checkTenant(req.tenant);
  const threshold = checkThreshold(deps.participants.length, req.threshold);
  const jobId = randomUUID();

  const holder = await acquireCreateLock(deps.redis, deps.keys, tenant, jobId, deps.lockTtlMs);
  if (holder !== null) {
    throw new KmaasError('ERR_TENANT_EXISTS', `tenant ${tenant} is already being created`, {
      tenant,
      jobId: holder,
    });
  }
  try {
    // Checked under the lock: a creation that finished just before stored the tenant first.
    if (await deps.registry.tenantExists(tenant)) {
      throw new KmaasError('ERR_TENANT_EXISTS', `tenant ${tenant} already exists`, { tenant });
    }
    const data: DkgJobData = {
      tenant,
      version: FIRST_VERSION,
      threshold,
      participants: [...deps.participants],
    };
    await deps.queue.add('create-tenant', data, {
      jobId,
      attempts: deps.attempts,
      backoff: { type: 'exponential', delay: deps.backoffMs },
      removeOnComplete: { age: 7 * 24 * 3600, count: 1000 },
      removeOnFail: { age: 30 * 24 * 3600 },
    });
  } catch (err) {
    await releaseCreateLock(deps.redis, deps.keys, tenant, jobId);
    throw err;
  }
  log.info({ tenant, version: FIRST_VERSION, threshold, jobId }, 'tenant creation queued');
  return { jobId, tenant, version: FIRST_VERSION };
}
