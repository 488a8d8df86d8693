/**
 * One tenant creation at a time, across every coordinator replica: a Redis SET NX PX lock whose
 * value is the job that holds it. The job releases it when it ends (stored, or failed for good);
 * the expiry only matters when a coordinator dies in between. Release compares before deleting,
 * so a job can never drop a lock that has since passed to another.
 */
import type { Redis } from 'ioredis';
import type { RedisKeys } from './redis-keys.ts';

const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0`;

/** Take the lock for `jobId`. Returns null on success, or the job id that holds it. */
export async function acquireCreateLock(
  redis: Redis,
  keys: RedisKeys,
  tenant: string,
  jobId: string,
  ttlMs: number,
): Promise<string | null> {
  const key = keys.createLock(tenant);
  if ((await redis.set(key, jobId, 'PX', ttlMs, 'NX')) === 'OK') return null;
  return (await redis.get(key)) ?? 'unknown';
}

export async function releaseCreateLock(
  redis: Redis,
  keys: RedisKeys,
  tenant: string,
  jobId: string,
): Promise<void> {
  await redis.eval(RELEASE, 1, keys.createLock(tenant), jobId);
}
