/**
 * Share node process entry (docs/CONTRACTS.md, "Processes and readiness"):
 *   node --import tsx nodes/main.ts
 * Logs exactly one `listening` line with the real port once it accepts connections; SIGTERM and
 * SIGINT close gracefully. Exit codes: 0 after a graceful stop, 1 on bad configuration or any
 * other startup failure, 2 when the node secret does not open the existing database or another
 * live node process holds the data folder (ERR_DATA_DIR_LOCKED; shared/data-lock.ts).
 *
 * Started by a local cluster (KMAAS_EXIT_WITH_PARENT=1), it also stops gracefully when its
 * launcher is gone, however it died (shared/exit-with-parent.ts).
 */
import { mkdirSync } from 'node:fs';
import { acquireDataLock, type DataLock } from '../shared/data-lock.ts';
import { KmaasError } from '../shared/errors.ts';
import { exitWithParent } from '../shared/exit-with-parent.ts';
import { loadConfig, LOG_LEVELS, type LogLevel } from './config.ts';
import { createLogger } from './logger.ts';
import { startNode, type NodeHandle } from './server.ts';

export const EXIT_STARTUP_FAILED = 1;
export const EXIT_WRONG_SECRET = 2;
/** Another live node process holds the data folder: the same code, nothing was touched either. */
export const EXIT_DATA_DIR_LOCKED = 2;

function envLevel(): LogLevel {
  const level = process.env.LOG_LEVEL;
  return LOG_LEVELS.find((l) => l === level) ?? 'info';
}

async function main(): Promise<void> {
  let logger = createLogger(envLevel());
  let stopping = false;
  let started: Promise<NodeHandle> | undefined;
  let lock: DataLock | undefined;
  // However the process ends (a failed start, process.exit after a stop), the lock goes with it.
  process.once('exit', () => lock?.release());

  // Installed before anything starts: a signal that arrives during startup, or between the
  // `listening` line and the next statement, must still mean a graceful stop, never the default
  // kill. A second signal forces the exit (SQLite in WAL mode survives that too).
  const stop = (signal: NodeJS.Signals | 'launcher gone') => {
    // The launcher exiting after it asked for this stop is no reason to cut it short.
    if (stopping && signal === 'launcher gone') return;
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(EXIT_STARTUP_FAILED);
    }
    stopping = true;
    logger.info({ signal }, 'stopping');
    if (!started) process.exit(0);
    started.then(
      (handle) =>
        handle.close().then(
          // Exit explicitly so that a stray handle can never keep a stopped node alive.
          () => process.exit(0),
          (err: unknown) => {
            logger.error({ err }, 'close failed');
            process.exit(EXIT_STARTUP_FAILED);
          },
        ),
      // A failed start is reported, with its exit code, below.
      () => undefined,
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  exitWithParent(() => stop('launcher gone'));

  try {
    const config = loadConfig(process.env);
    logger = createLogger(config.logLevel).child({ node: config.nodeId });
    // Before the store is opened: a second process on this folder must change nothing in it.
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    lock = acquireDataLock(config.dataDir, `node ${config.nodeId}`);
    if (lock.tookOver) {
      logger.warn(
        { lock: lock.file, pid: lock.tookOver.pid, since: lock.tookOver.started },
        'taking over the data folder lock of a process that is gone',
      );
    }
    started = startNode(config, logger);
    const handle = await started;
    if (!stopping) logger.info({ port: handle.port, url: handle.url }, 'listening');
  } catch (err) {
    const e = err instanceof KmaasError ? err : undefined;
    if (e) logger.fatal({ code: e.code, details: e.details }, e.message);
    else logger.fatal({ err }, 'node failed to start');
    // Explicit exit: nothing is left to flush (the logger writes stdout synchronously).
    process.exit(
      e?.code === 'ERR_WRONG_NODE_SECRET'
        ? EXIT_WRONG_SECRET
        : e?.code === 'ERR_DATA_DIR_LOCKED'
          ? EXIT_DATA_DIR_LOCKED
          : EXIT_STARTUP_FAILED,
    );
  }
}

await main();
