/**
 * Notices that Redis lost the coordinator's state (FLUSHALL, FLUSHDB, a Redis restarted without
 * persistence, or the prefix's keys deleted) and rebuilds it from the nodes, which are the source
 * of truth (DESIGN.md section 5), while the coordinator keeps serving from memory and the nodes.
 *
 * Every `everyMs`, and each time the Redis connection is ready again after an outage, it checks
 * for the registry marker that each full rebuild writes (registry.ts). When the marker is gone
 * and nodes are connected it rebuilds, in this order: the node and tenant registries with every
 * key package (registry.rebuild), the epoch record when it is missing too (epoch.ts; a rebuilt
 * record has no reshare proposal or votes, see there), and then whatever else lived in Redis that
 * the coordinator itself sets up (`restore`: the ceremony queue's global concurrency, the proactive
 * refresh schedule). Checks run one at a time; a Redis that does not answer is tried again later.
 * Not on the hot path: evaluations never wait for it.
 *
 * Shortcoming: what only Redis held is not rebuilt: a ceremony job queued or running when Redis
 * was flushed is lost (the nodes keep their state; the operator submits it again), and a rebuilt
 * epoch record has no reshare proposal or votes, so a node that missed that reshare's commit
 * cannot be caught up from it.
 */
import type { Redis } from 'ioredis';
import { toKmaasError } from '../shared/errors.ts';
import type { EpochStore } from './epoch.ts';
import type { Logger } from './logger.ts';
import type { NodePool } from './node-pool.ts';
import type { Registry } from './registry.ts';

export interface RegistryWatchDeps {
  redis: Redis;
  registry: Registry;
  epochs: EpochStore;
  pool: NodePool;
  everyMs: number;
  logger: Logger;
  /** Set up again what the coordinator keeps in Redis besides the registry. */
  restore?: () => Promise<void>;
  /** Called after each rebuild this watch ran. */
  onRebuilt?: () => void;
}

export class RegistryWatch {
  readonly #d: RegistryWatchDeps;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<boolean> | null = null;
  #stopped = false;
  readonly #onReady = (): void => void this.check();

  constructor(deps: RegistryWatchDeps) {
    this.#d = deps;
    this.#log = deps.logger.child({ component: 'registry-watch' });
  }

  start(): void {
    if (this.#timer || this.#stopped) return;
    this.#timer = setInterval(() => void this.check(), this.#d.everyMs);
    this.#timer.unref();
    this.#d.redis.on('ready', this.#onReady);
  }

  /** Check once (or join the check running); true when it found the registry lost and rebuilt it. */
  check(): Promise<boolean> {
    this.#running ??= this.#check().finally(() => (this.#running = null));
    return this.#running;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#d.redis.off('ready', this.#onReady);
    await this.#running?.catch(() => undefined);
  }

  async #check(): Promise<boolean> {
    if (this.#stopped || this.#d.pool.connected().length === 0) return false;
    const { registry, epochs } = this.#d;
    try {
      if (await registry.hasMarker()) return false;
      this.#log.warn(
        'the registry is missing from redis (flushed, or a new or restarted redis): rebuilding it from the nodes',
      );
      const restored = await registry.rebuild();
      const epoch = (await epochs.read()) ?? (await epochs.rebuild());
      await this.#d.restore?.();
      this.#log.info(
        { restored: restored.length, epoch: epoch?.epoch ?? null },
        'registry rebuilt from the nodes',
      );
      this.#d.onRebuilt?.();
      return true;
    } catch (err) {
      this.#log.warn({ code: toKmaasError(err).code }, 'registry check failed; trying again later');
      return false;
    }
  }
}
