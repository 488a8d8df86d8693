/**
 * Wires the coordinator together and takes it apart again. A replica holds no state of its own:
 * Redis has the routing state and the ceremony queue, the nodes have the keys, so any number of
 * replicas can run behind a load balancer (DESIGN.md section 6).
 *
 * close() is idempotent and runs every step even when one fails, in an order that lets work in
 * flight end cleanly: stop taking requests, stop the proof-checking workers, let a running
 * ceremony finish (bounded), stop the queue and the registry's background work, drop the node
 * links, and last close Redis.
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis, type RedisOptions } from 'ioredis';
import { Admission, RefusalLog } from './admission.ts';
import { createApi } from './api.ts';
import type { CoordinatorConfig } from './config.ts';
import { createCeremonyQueue, createCeremonyWorker } from './ceremony-queue.ts';
import { agreedClusterId } from './cluster-status.ts';
import { EpochStore } from './epoch.ts';
import { KeyCache } from './key-cache.ts';
import { publishInvalidation, subscribeInvalidations } from './key-invalidation.ts';
import { createLogger, type Logger } from './logger.ts';
import { NodePool } from './node-pool.ts';
import { RateLimit } from './rate-limit.ts';
import { CoordinatorMetrics } from './metrics.ts';
import { RegistryWatch } from './registry-watch.ts';
import { MAX_BATCH } from '../shared/suite.ts';
import { EvaluationAuth } from '../shared/evaluation-auth.ts';
import { oidcSettings } from '../shared/oidc-config.ts';
import { KmaasError, toKmaasError } from '../shared/errors.ts';
import { parseProposal, type Proposal } from '../shared/proposal.ts';
import { queueReshare, scheduleRefresh } from './reshare-job.ts';
import { CatchUpSweep } from './reshare-catchup.ts';
import { redisKeys } from './redis-keys.ts';
import { Registry } from './registry.ts';
import { VerifyPool } from './verify-pool.ts';
import { answerParseErrors } from '../shared/http-parse-errors.ts';

export interface CoordinatorHandle {
  /** The port the HTTP server listens on (the real one when 0 was asked for). */
  port: number;
  close(): Promise<void>;
}

/** How long shutdown waits for a running ceremony and open HTTP requests. */
const SHUTDOWN_GRACE_MS = 5000;
const REDIS_READY_TIMEOUT_MS = 10_000;

type Step = [name: string, run: () => Promise<unknown>];

/**
 * Start a coordinator and resolve once it accepts connections.
 * @example const { port, close } = await startCoordinator(loadConfig());
 */
export async function startCoordinator(
  config: CoordinatorConfig,
  logger: Logger = createLogger(config.logLevel),
): Promise<CoordinatorHandle> {
  const log = logger;
  // Cleanup steps, pushed as each resource comes to life and run last-in first-out, so that a
  // failed start releases exactly what it had already opened.
  const teardown: Step[] = [];
  const close = memo(() => runSteps([...teardown].reverse(), log));
  try {
    const keys = redisKeys(config.redisPrefix);
    // The hot path must not stall on Redis: with Redis down a command fails at once (no offline
    // queue) and with Redis hung it fails after the command timeout, rather than waiting out an
    // outage. The callers fall back: the rate limit to memory, key packages to the cache or the
    // nodes. (BullMQ's worker and the subscriber keep their own connections, which wait.)
    const redis = connectRedis(
      config.redisUrl,
      {
        maxRetriesPerRequest: 1,
        enableOfflineQueue: false,
        commandTimeout: config.redisCommandTimeoutMs,
      },
      log,
      'main',
    );
    teardown.push(['redis', () => quitRedis(redis)]);
    const workerRedis = connectRedis(
      config.redisUrl,
      { maxRetriesPerRequest: null },
      log,
      'worker',
    );
    teardown.push(['worker redis', () => quitRedis(workerRedis)]);
    // A subscribed connection takes no other commands: one of its own for key invalidations.
    const subscriber = connectRedis(
      config.redisUrl,
      { maxRetriesPerRequest: null },
      log,
      'subscriber',
    );
    teardown.push(['subscriber redis', () => quitRedis(subscriber)]);
    await withTimeout(ready(redis), REDIS_READY_TIMEOUT_MS, 'redis did not answer');
    const refresh = config.refreshProposalFile
      ? readRefreshProposal(config.refreshProposalFile)
      : null;

    const pool = new NodePool(
      config.nodes,
      {
        clusterToken: config.clusterToken,
        heartbeatMs: config.heartbeatMs,
        reconnectBaseMs: config.reconnectBaseMs,
        reconnectMaxMs: config.reconnectMaxMs,
        breaker: {
          failures: config.breakerFailures,
          failureRate: 0.5,
          openMs: config.breakerOpenMs,
          maxOpenMs: config.breakerMaxOpenMs,
          liarOpenMs: config.breakerLiarOpenMs,
          // Longer than any evaluation may take, so a probe's slot is freed only when lost.
          probeTimeoutMs: config.nodeTimeoutMs + MAX_BATCH * config.perElementMs + 1000,
        },
      },
      log,
    );
    const metrics = new CoordinatorMetrics(pool);
    teardown.push(['node links', () => pool.close()]);
    const registry = new Registry({
      redis,
      keys,
      pool,
      nodeTimeoutMs: config.nodeTimeoutMs,
      logger: log,
    });
    teardown.push(['registry', () => registry.stop()]);
    const epochs = new EpochStore({
      redis,
      keys,
      pool,
      nodeTimeoutMs: config.nodeTimeoutMs,
      logger: log,
    });
    // Every replica drops its cached key packages when a reshare switches epochs.
    const keyCache = new KeyCache(registry, { ttlMs: 60_000, maxEntries: 10_000, logger: log });
    await withTimeout(
      subscribeInvalidations(
        subscriber,
        keys,
        (what) => keyCache.invalidate(what.tenant, what.version),
        log,
      ),
      REDIS_READY_TIMEOUT_MS,
      'redis did not subscribe',
    );
    const queue = await createCeremonyQueue(redis, keys);
    queue.on('error', (err) => log.error({ err }, 'ceremony queue error'));
    teardown.push(['queue', () => queue.close()]);
    // Reshares (and the scheduled refresh) retry longer than key generations; see config.ts.
    const jobOptions = { attempts: config.reshareAttempts, backoffMs: config.dkgBackoffMs };
    if (refresh) {
      await scheduleRefresh(queue, refresh, jobOptions);
      log.info({ everySeconds: refresh.everySeconds }, 'proactive refresh scheduled');
    }
    const worker = createCeremonyWorker({
      connection: workerRedis,
      redis,
      keys,
      pool,
      registry,
      roundTimeoutMs: config.dkgTimeoutMs,
      logger: log,
      epochs,
      finishDelayMs: config.reshareFinishDelayMs,
      invalidate: () => publishInvalidation(redis, keys),
      lockDurationMs: config.ceremonyLockMs,
      stalledIntervalMs: config.ceremonyStalledIntervalMs,
    });
    teardown.push([
      'worker',
      async () => {
        // A running ceremony gets a grace period; then dropping the links makes it fail fast,
        // and its job is retried later by this replica or another.
        const closing = worker.close();
        if (!(await settlesWithin(closing, SHUTDOWN_GRACE_MS))) {
          log.warn('shutdown: a DKG ceremony is still running; it will be retried');
          await pool.close();
        }
        await closing;
      },
    ]);

    // The issuer may start after the coordinator: its keys are fetched in the background, and
    // again on each evaluation until they arrive (ERR_ISSUER_UNAVAILABLE meanwhile).
    const auth = new EvaluationAuth(oidcSettings(config), { checkReplay: false });
    auth.prefetch().then(
      () => log.debug({ issuer: config.oidcIssuer }, 'identity provider keys fetched'),
      (err: unknown) =>
        log.warn(
          { issuer: config.oidcIssuer, code: toKmaasError(err).code },
          'identity provider not reachable yet; evaluations wait for it',
        ),
    );

    const verifier = new VerifyPool({ size: config.verifyWorkers, logger: log });
    teardown.push(['verify workers', () => verifier.close()]);

    const app = createApi({
      adminToken: config.adminToken,
      pool,
      registry,
      queue,
      epochs,
      metrics,
      logger: log,
      corsOrigins: config.corsOrigins,
      redisReady: () => redis.status === 'ready',
      evaluate: {
        pool,
        keys: keyCache,
        auth,
        nodeTimeoutMs: config.nodeTimeoutMs,
        deadlineMs: config.evaluateDeadlineMs,
        perElementMs: config.perElementMs,
        hedgeDelayMs: config.hedgeDelayMs,
        hedgeFactor: config.hedgeFactor,
        retryBudget: config.retryBudget,
        metrics,
        verifier,
        admission: new Admission(config.maxInflightElements),
        refusals: new RefusalLog(),
        rateLimit: new RateLimit({
          redis,
          prefix: config.redisPrefix,
          points: config.rateElementsPerMin,
          durationSeconds: 60,
          timeoutMs: config.redisCommandTimeoutMs,
          onFallback: () => metrics.rateLimitFallback(),
        }),
      },
      proposals: {
        redis,
        keys,
        registry,
        queue,
        pool,
        nodeTimeoutMs: config.nodeTimeoutMs,
        attempts: config.dkgAttempts,
        backoffMs: config.dkgBackoffMs,
        lockTtlMs: creationLockTtl(config),
        logger: log,
        epochs,
        clusterId: () => agreedClusterId(pool, config.nodeTimeoutMs),
        queueReshare: (p, l) => queueReshare({ queue, epochs, ...jobOptions }, p, l),
      },
    });
    const server = createServer(app);
    answerParseErrors(server);
    server.keepAliveTimeout = 5000;
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    teardown.push(['http', () => closeHttp(server)]);

    // Restore whatever Redis lacks each time a node (re)connects, which includes startup, and
    // bring a node that missed a reshare's commit to the current epoch.
    const catchUps = new CatchUpSweep({
      epochs,
      timeoutMs: config.nodeTimeoutMs,
      logger: log,
      links: () => pool.connected(),
      everyMs: config.catchUpCheckMs,
    });
    pool.onUp((link) => {
      registry.scheduleRebuild();
      catchUps.one(link);
    });
    pool.start();
    catchUps.start();
    teardown.push(['catch-up sweep', () => Promise.resolve(catchUps.stop())]);
    // Redis flushed or restarted empty while running: rebuilt from the nodes, and the queue's
    // own settings set up again.
    const watch = new RegistryWatch({
      redis,
      registry,
      epochs,
      pool,
      everyMs: config.registryCheckMs,
      logger: log,
      restore: async () => {
        await queue.setGlobalConcurrency(1);
        if (refresh) await scheduleRefresh(queue, refresh, jobOptions);
      },
      onRebuilt: () => metrics.registryRebuilt(),
    });
    teardown.push(['registry watch', () => watch.stop()]);
    watch.start();

    server.listen(config.port, config.host);
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    return { port, close };
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}

/** KMAAS_REFRESH_PROPOSAL_FILE: a signed committee.refresh proposal; ERR_CONFIG otherwise. */
function readRefreshProposal(path: string): Proposal {
  const setting = 'KMAAS_REFRESH_PROPOSAL_FILE';
  let p: Proposal;
  try {
    p = parseProposal(JSON.parse(readFileSync(path, 'utf8')));
  } catch (err) {
    const why = err instanceof KmaasError ? err.message : 'the file cannot be read as JSON';
    throw new KmaasError('ERR_CONFIG', `${setting}: ${why}`, { setting });
  }
  if (p.operation !== 'committee.refresh') {
    throw new KmaasError('ERR_CONFIG', `${setting}: expected a committee.refresh proposal`, {
      setting,
    });
  }
  return p;
}

function connectRedis(url: string, options: RedisOptions, log: Logger, role: string): Redis {
  const redis = new Redis(url, { ...options, connectionName: `kmaas-coordinator-${role}` });
  let lastError = '';
  redis.on('error', (err: Error) => {
    // ioredis repeats the same error on every reconnect attempt; once is enough.
    if (err.message === lastError) return;
    lastError = err.message;
    log.warn({ role, err: err.message }, 'redis connection error');
  });
  redis.on('ready', () => {
    lastError = '';
  });
  return redis;
}

/** Resolves once the connection is ready for commands (none are queued before that). */
function ready(redis: Redis): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onReady = () => {
      redis.off('end', onEnd);
      resolve();
    };
    const onEnd = () => {
      redis.off('ready', onReady);
      reject(new Error('redis connection ended'));
    };
    redis.once('ready', onReady);
    redis.once('end', onEnd);
  });
}

async function quitRedis(redis: Redis): Promise<void> {
  if (redis.status === 'end') return;
  try {
    await withTimeout(redis.quit(), 2000, 'redis quit timed out');
  } catch {
    redis.disconnect();
  }
}

async function closeHttp(server: Server): Promise<void> {
  if (!server.listening) return;
  const closed = new Promise<void>((resolve, reject) =>
    server.close((err) => (err ? reject(err) : resolve())),
  );
  server.closeIdleConnections();
  const cut = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS);
  try {
    await closed;
  } finally {
    clearTimeout(cut);
  }
}

/** Long enough for every attempt of a ceremony and the backoff between them. */
function creationLockTtl(config: CoordinatorConfig): number {
  const perAttempt = 4 * config.dkgTimeoutMs + 2 * config.nodeTimeoutMs;
  const backoff = config.dkgBackoffMs * (2 ** config.dkgAttempts - 1);
  return config.dkgAttempts * perAttempt + backoff + 60_000;
}

/** Run every step, log each failure, throw them together at the end. */
async function runSteps(steps: readonly Step[], log: Logger): Promise<void> {
  const errors: unknown[] = [];
  for (const [name, run] of steps) {
    try {
      await run();
    } catch (err) {
      log.error({ err, step: name }, 'shutdown step failed');
      errors.push(err);
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, 'coordinator shutdown had failures');
}

function memo(fn: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | null = null;
  return () => (running ??= fn());
}

async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return withTimeout(promise, ms, 'timeout').then(
    () => true,
    () => false,
  );
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
