/**
 * Coordinator process entry (docs/CONTRACTS.md "Processes and readiness"): configuration from
 * the environment, JSON log lines on stdout, exactly one `listening` line with the real port once
 * connections are accepted, and a graceful close on SIGTERM or SIGINT. Started by a local
 * cluster (KMAAS_EXIT_WITH_PARENT=1), also when its launcher is gone (shared/exit-with-parent.ts).
 *
 *   node --import tsx coordinator/main.ts
 */
import { KmaasError } from '../shared/errors.ts';
import { exitWithParent } from '../shared/exit-with-parent.ts';
import { loadConfig } from './config.ts';
import { createLogger } from './logger.ts';
import { startCoordinator } from './server.ts';

/** A shutdown that takes longer than this is cut short. */
const HARD_EXIT_MS = 20_000;

async function main(): Promise<void> {
  const boot = createLogger(process.env.LOG_LEVEL ?? 'info');
  // Until it listens there is nothing to close: a launcher gone by then ends it at once.
  let onLauncherGone = (): void => process.exit(0);
  exitWithParent(() => onLauncherGone());
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof KmaasError)
      boot.fatal({ code: err.code, details: err.details }, err.message);
    else boot.fatal({ err }, 'cannot read configuration');
    process.exitCode = 1;
    return;
  }
  const log = createLogger(config.logLevel);
  log.info(
    { host: config.host, nodes: config.nodes, prefix: config.redisPrefix },
    'coordinator starting',
  );
  const coordinator = await startCoordinator(config, log);
  log.info({ port: coordinator.port, host: config.host }, 'listening');

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping && signal === 'launcher gone') return;
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    setTimeout(() => {
      log.error('shutdown took too long: exiting');
      process.exit(1);
    }, HARD_EXIT_MS).unref();
    coordinator.close().then(
      () => {
        log.info('stopped');
        // Everything is closed; exit rather than wait on a handle a library forgot to unref.
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown had failures');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  onLauncherGone = () => stop('launcher gone');
}

main().catch((err: unknown) => {
  createLogger('fatal').fatal({ err }, 'coordinator failed to start');
  process.exitCode = 1;
});
