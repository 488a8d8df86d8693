/**
 * Expiry of abandoned DKG ceremonies. A ceremony's sealed state stays on the node after its key
 * is stored, until the coordinator's dkg.commit (dkg.ts). A ceremony that never produced a key
 * on this node (the job failed for good, the coordinator went away) would keep its secret
 * polynomial forever: its state is erased once its (tenant, version) has no key and the state
 * has not changed for CEREMONY_MAX_AGE_MS, at node start and every CEREMONY_EXPIRY_INTERVAL_MS.
 * The state of a ceremony whose key this node holds is never expired: another participant may
 * still need this node to replay its rounds.
 */
import type { Logger } from 'pino';
import type { ExpiredCeremony, NodeStore } from './store.ts';

/** Far beyond any job's retries (attempts * (rounds + backoff) is minutes, not hours). */
export const CEREMONY_MAX_AGE_MS = 24 * 60 * 60 * 1000;
export const CEREMONY_EXPIRY_INTERVAL_MS = 60 * 60 * 1000;

/** Erase every abandoned ceremony older than `maxAgeMs` at `now`; one info line for each. */
export function expireAbandonedCeremonies(
  store: NodeStore,
  logger: Logger,
  now: number,
  maxAgeMs: number = CEREMONY_MAX_AGE_MS,
): ExpiredCeremony[] {
  const expired = store.expireCeremonies(now - maxAgeMs);
  for (const c of expired) {
    logger.info(
      {
        ceremonyId: c.ceremonyId,
        tenant: c.tenant,
        version: c.version,
        lastChanged: new Date(c.updatedAt).toISOString(),
        maxAgeMs,
      },
      'abandoned DKG ceremony expired; its state is erased',
    );
  }
  return expired;
}

export interface CeremonyExpiryOptions {
  /** ms since the epoch; default Date.now. */
  now?: () => number;
  maxAgeMs?: number;
  intervalMs?: number;
  /** Runs `task` every `ms` until the returned function is called; default an unref'd interval. */
  every?: (task: () => void, ms: number) => () => void;
}

function everyInterval(task: () => void, ms: number): () => void {
  const timer = setInterval(task, ms);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * Expire now, then periodically. A failure is logged, never thrown: expiry is housekeeping and
 * must not keep a node from starting or serving. Returns the function that stops it.
 */
export function startCeremonyExpiry(
  store: NodeStore,
  logger: Logger,
  options: CeremonyExpiryOptions = {},
): () => void {
  const now = options.now ?? Date.now;
  const run = () => {
    try {
      expireAbandonedCeremonies(store, logger, now(), options.maxAgeMs);
    } catch (err) {
      logger.error({ err }, 'expiring abandoned DKG ceremonies failed');
    }
  };
  run();
  return (options.every ?? everyInterval)(run, options.intervalMs ?? CEREMONY_EXPIRY_INTERVAL_MS);
}
