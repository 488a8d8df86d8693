/**
 * Share node process entry (docs/CONTRACTS.md, "Processes and readiness"):
 *   node --import tsx nodes/main.ts
 * Logs exactly one `listening` line with the real port once it accepts connections; SIGTERM and
 * SIGINT close gracefully. Exit codes: 0 after a graceful stop, 1 on bad configuration or any
 * other startup failure, 2 when the node secret does not open the existing database.
 */
import { KmaasError } from '../shared/errors.ts';
import { loadConfig, LOG_LEVELS, type LogLevel } from './config.ts';
import { createLogger } from './logger.ts';
import { startNode, type NodeHandle } from './server.ts';

export const EXIT_STARTUP_FAILED = 1;
export const EXIT_WRONG_SECRET = 2;

function envLevel(): LogLevel {
  const level = process.env.LOG_LEVEL;
  return LOG_LEVELS.find((l) => l === level) ?? 'info';
}

async function main(): Promise<void> {
  let logger = createLogger(envLevel());
  let stopping = false;
  let started: Promise<NodeHandle> | undefined;

  // Installed before anything starts: a signal that arrives during startup, or between the
  // `listening` line and the next statement, must still mean a graceful stop, never the default
  // kill. A second signal forces the exit (SQLite in WAL mode survives that too).
  const stop = (signal: NodeJS.Signals) => {
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

  try {
    const config = loadConfig(process.env);
    logger = createLogger(config.logLevel).child({ node: config.nodeId });
    started = startNode(config, logger);
    const handle = await started;
    if (!stopping) logger.info({ port: handle.port, url: handle.url }, 'listening');
  } catch (err) {
    const e = err instanceof KmaasError ? err : undefined;
    if (e) logger.fatal({ code: e.code, details: e.details }, e.message);
    else logger.fatal({ err }, 'node failed to start');
    // Explicit exit: nothing is left to flush (the logger writes stdout synchronously).
    process.exit(e?.code === 'ERR_WRONG_NODE_SECRET' ? EXIT_WRONG_SECRET : EXIT_STARTUP_FAILED);
  }
}

await main();
