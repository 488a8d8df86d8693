/**
 * The CLI's side of error messages: what the SDK reports in its own terms (a missing pin, an
 * unreachable coordinator, a missing credential) gets the next step the user can take with this
 * tool: which option, which variable, which file.
 */
import { KmaasError } from '../shared/errors.ts';
import { DEFAULT_CLUSTER_FILE, type Config } from './config.ts';

const DEFAULT_CLUSTER = `./${DEFAULT_CLUSTER_FILE}`;

/** Errors made here already say what to do; explain() leaves them as they are. */
const explained = new WeakSet<KmaasError>();

function ours(err: KmaasError): KmaasError {
  explained.add(err);
  return err;
}

/** What a cluster file in use does not say, or where to find one when none is. */
function clusterFileHint(config: Config, key: 'url' | 'token' | 'adminToken'): string {
  return config.clusterFile
    ? `the cluster file ${config.clusterFile} has no "${key}"`
    : `or give a cluster file that has one with --cluster (default ${DEFAULT_CLUSTER} in the current folder)`;
}

export function noUrlError(config: Config): KmaasError {
  const message = config.clusterFile
    ? `no coordinator URL: pass --url or set KMAAS_URL; ${clusterFileHint(config, 'url')}`
    : 'no coordinator URL: pass --url, set KMAAS_URL, or give a cluster file with --cluster. ' +
      `There is no ${DEFAULT_CLUSTER} in this folder (${config.cwd}): \`npm run cluster\` ` +
      'writes it once the cluster is up, so start the cluster or wait for it (and run kmaas ' +
      'from the folder it was started in)';
  return ours(new KmaasError('ERR_CONFIG', message, { field: 'url' }));
}

export function noAdminTokenError(config: Config, operation: string): KmaasError {
  const where = config.clusterFile
    ? `pass --admin-token <token> or set KMAAS_ADMIN_TOKEN (${clusterFileHint(config, 'adminToken')})`
    : `pass --admin-token <token>, set KMAAS_ADMIN_TOKEN, ${clusterFileHint(config, 'adminToken')}`;
  return ours(
    new KmaasError('ERR_CONFIG', `an admin token is required to ${operation}: ${where}`, {
      field: 'adminToken',
    }),
  );
}

export function noTokenError(config: Config, operation: string): KmaasError {
  const where = config.clusterFile
    ? `pass --token <token> or set KMAAS_TOKEN (${clusterFileHint(config, 'token')})`
    : `pass --token <token>, set KMAAS_TOKEN, ${clusterFileHint(config, 'token')}`;
  return ours(
    new KmaasError('ERR_CONFIG', `a client token is required to ${operation}: ${where}`, {
      field: 'token',
    }),
  );
}

function notPinnedHint(config: Config, tenant: string, version: number): string {
  let where = '';
  if (config.clusterPins === undefined) {
    where = ` (a local cluster's pins are in the file named by "pins" in its cluster file, ${DEFAULT_CLUSTER} by default)`;
  } else if (config.clusterPins !== config.pinsFile) {
    where = ` (the cluster file ${config.clusterFile} names ${config.clusterPins})`;
  }
  return (
    `no pinned group key for ${tenant} version ${version} in ${config.pinsFile}: ` +
    `pin the one the coordinator serves now with \`kmaas tenant pin ${tenant} ` +
    `--key-version ${version}\`, or pass --trust-on-first-use to pin it on this first use, ` +
    `or read another pins file with --pins <file>${where}`
  );
}

export interface SessionFacts {
  config: Config;
  /** A request to the coordinator got no answer at all (refused, reset, unknown host). */
  unreachable: boolean;
}

/** `err` with a message that says what to do next, when the CLI knows; else `err` itself. */
export function explain(err: unknown, facts: SessionFacts | undefined): unknown {
  if (!(err instanceof KmaasError) || !facts || explained.has(err)) return err;
  const { config } = facts;
  const details = err.details ?? {};
  switch (err.code) {
    case 'ERR_KEY_NOT_PINNED': {
      const { tenant, version } = details;
      if (typeof tenant !== 'string' || typeof version !== 'number') return err;
      return new KmaasError(err.code, notPinnedHint(config, tenant, version), details);
    }
    case 'ERR_NODE_UNAVAILABLE':
      if (!facts.unreachable || config.urlFrom !== 'cluster') return err;
      return new KmaasError(
        err.code,
        `${err.message}. Its URL comes from the cluster file ${config.clusterFile}, which may ` +
          'be stale: the cluster is not running, or was restarted (the file is rewritten at ' +
          'each start, once the cluster is up). Start it with `npm run cluster`, or wait for ' +
          'it, and try again',
        details,
      );
    case 'ERR_CONFIG':
      // The SDK's own words, should a command reach it without the CLI's checks.
      if (details.field === 'adminToken') return noAdminTokenError(config, 'do this');
      if (details.field === 'token') return noTokenError(config, 'derive keys');
      return err;
    default:
      return err;
  }
}
