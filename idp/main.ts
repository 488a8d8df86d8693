/**
 * Local OpenID Connect identity provider for development and tests, standing in for a national
 * eID provider (DESIGN.md sections 1 and 4):
 *   node --import tsx idp/main.ts
 * Settings in idp/config.ts. Logs one `listening` line with { port, issuer } once it accepts
 * requests; SIGTERM and SIGINT close it. Exit codes: 0 after a graceful stop, 1 on bad
 * configuration or any other startup failure, 2 when another live identity provider holds the
 * folder of its keys file (ERR_DATA_DIR_LOCKED; `idp.lock` there, shared/data-lock.ts).
 * Started by a local cluster (KMAAS_EXIT_WITH_PARENT=1), it also stops when its launcher is gone
 * (shared/exit-with-parent.ts).
 *
 * oidc-provider 9 prints "Unsupported runtime" on stderr under Node 20 (it wants Node 22 LTS);
 * the features used here work on Node 20, and the warning is harmless.
 */
import { dirname } from 'node:path';
import { pino } from 'pino';
import { acquireDataLock, IDP_LOCK_FILE, type DataLock } from '../shared/data-lock.ts';
import { KmaasError } from '../shared/errors.ts';
import { exitWithParent } from '../shared/exit-with-parent.ts';
import { loadIdpConfig } from './config.ts';
import { startIdp, type IdpHandle } from './server.ts';

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

function createLogger(level: string) {
  return pino(
    {
      level: LEVELS.has(level) ? level : 'info',
      base: { service: 'kmaas-idp' },
      redact: { paths: ['password', '*.password', 'token', '*.token'], censor: '[redacted]' },
    },
    pino.destination({ dest: 1, sync: true }),
  );
}

async function main(): Promise<void> {
  const logger = createLogger(process.env.LOG_LEVEL ?? 'info');
  let stopping = false;
  let started: Promise<IdpHandle> | undefined;
  let lock: DataLock | undefined;
  process.once('exit', () => lock?.release());

  const stop = (signal: NodeJS.Signals | 'launcher gone') => {
    if (stopping && signal === 'launcher gone') return;
    if (stopping) process.exit(1);
    stopping = true;
    logger.info({ signal }, 'stopping');
    if (!started) process.exit(0);
    started.then(
      (idp) =>
        idp.close().then(
          () => process.exit(0),
          (err: unknown) => {
            logger.error({ err }, 'close failed');
            process.exit(1);
          },
        ),
      () => undefined,
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  exitWithParent(() => stop('launcher gone'));

  try {
    const config = loadIdpConfig(process.env);
    if (config.keysFile !== undefined) {
      lock = acquireDataLock(dirname(config.keysFile), 'identity provider', IDP_LOCK_FILE);
      if (lock.tookOver) {
        logger.warn(
          { lock: lock.file, pid: lock.tookOver.pid, since: lock.tookOver.started },
          'taking over the lock of an identity provider that is gone',
        );
      }
    }
    started = startIdp(config, logger);
    const idp = await started;
    if (!stopping) logger.info({ port: idp.port, issuer: idp.issuer, kids: idp.kids }, 'listening');
  } catch (err) {
    if (err instanceof KmaasError)
      logger.fatal({ code: err.code, details: err.details }, err.message);
    else logger.fatal({ err }, 'identity provider failed to start');
    process.exit(err instanceof KmaasError && err.code === 'ERR_DATA_DIR_LOCKED' ? 2 : 1);
  }
}

await main();
