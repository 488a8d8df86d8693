/**
 * Telling every coordinator replica that key packages changed (a reshare's switch to a new
 * epoch), over Redis pub/sub on `<prefix>keys:invalidate`. Each replica drops its cached copies
 * (key-cache.ts) and reads the new ones from Redis on the next request. A replica that misses a
 * message (it was reconnecting) still drops its copies when their TTL ends, and a node that is
 * asked for an epoch it no longer serves answers ERR_EPOCH_MISMATCH, which drops the copy too.
 *
 *   message  JSON { tenant?, version? }   (none: every package)
 */
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { Logger } from './logger.ts';
import type { RedisKeys } from './redis-keys.ts';

const messageSchema = z.object({
  tenant: z.string().optional(),
  version: z.number().int().optional(),
});

export type Invalidation = z.infer<typeof messageSchema>;

export async function publishInvalidation(
  redis: Redis,
  keys: RedisKeys,
  what: Invalidation = {},
): Promise<void> {
  await redis.publish(keys.invalidateChannel, JSON.stringify(what));
}

/**
 * Subscribe `subscriber` (a connection of its own: a subscribed connection takes no other
 * commands) and call `onInvalidate` for each message. Resolves once subscribed.
 */
export async function subscribeInvalidations(
  subscriber: Redis,
  keys: RedisKeys,
  onInvalidate: (what: Invalidation) => void,
  logger: Logger,
): Promise<void> {
  subscriber.on('message', (channel: string, text: string) => {
    if (channel !== keys.invalidateChannel) return;
    let what: Invalidation = {};
    try {
      what = messageSchema.parse(JSON.parse(text));
    } catch {
      // Unreadable: dropping everything is the safe reading.
      logger.warn('unreadable key invalidation message; dropping every cached package');
    }
    onInvalidate(what);
  });
  await subscriber.subscribe(keys.invalidateChannel);
}
