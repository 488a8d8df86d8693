/**
 * The CLI's side of error messages: what the SDK reports in its own terms (a missing pin, an
 * unreachable coordinator or identity provider, a missing credential, a refused login) gets the
 * next step the user can take with this tool: which option, which variable, which file.
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
function clusterFileHint(config: Config, key: 'url' | 'adminToken'): string {
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

/** Where a setting could come from when the cluster file in use has none, or there is none. */
function clusterHint(config: Config, what: string): string {
  return config.clusterFile
    ? `the cluster file ${config.clusterFile} has no ${what}`
    : `or give a cluster file that has one with --cluster (default ${DEFAULT_CLUSTER} in the current folder)`;
}

export function noIssuerError(config: Config, operation: string): KmaasError {
  return ours(
    new KmaasError(
      'ERR_CONFIG',
      `to ${operation} you sign in at an identity provider, and none is known: pass ` +
        `--issuer <url> or set KMAAS_OIDC_ISSUER (${clusterHint(config, '"issuer"')})`,
      { field: 'issuer' },
    ),
  );
}

export function noUserError(config: Config, tenant: string, operation: string): KmaasError {
  return ours(
    new KmaasError(
      'ERR_CONFIG',
      `to ${operation} a user of tenant ${tenant} signs in: pass --user <name> or set ` +
        'KMAAS_USER, with the password in KMAAS_PASSWORD or a file named by --password-file ' +
        `(${clusterHint(config, `dev user of tenant ${tenant} in "devUsers"`)})`,
      { field: 'user', tenant },
    ),
  );
}

export function noPasswordError(config: Config, username: string): KmaasError {
  return ours(
    new KmaasError(
      'ERR_CONFIG',
      `no password to sign in as ${username}: set KMAAS_PASSWORD or pass --password-file <file> ` +
        `(a password is never taken on the command line; ${clusterHint(config, `dev user ${username} in "devUsers"`)})`,
      { field: 'password', username },
    ),
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
    case 'ERR_LOGIN_FAILED':
      return new KmaasError(
        err.code,
        `the identity provider at ${config.issuer ?? '(unknown)'} refused the login of ` +
          `${typeof details.username === 'string' ? details.username : 'the user'}: check the ` +
          'user (--user, KMAAS_USER) and the password (KMAAS_PASSWORD, --password-file, or the ' +
          "dev users of the cluster file, which are the running cluster's only if it wrote the file)",
        details,
      );
    case 'ERR_IDP_UNAVAILABLE':
      if (config.issuerFrom !== 'cluster') return err;
      return new KmaasError(
        err.code,
        `${err.message}. The issuer comes from the cluster file ${config.clusterFile}, which may ` +
          'be stale: the cluster is not running, or was restarted. Start it with ' +
          '`npm run cluster`, or wait for it, and try again',
        details,
      );
    case 'ERR_CONFIG':
      // The SDK's own words, should a command reach it without the CLI's checks.
      if (details.field === 'adminToken') return noAdminTokenError(config, 'do this');
      if (details.field === 'auth') {
        return new KmaasError(
          err.code,
          'deriving keys needs a signed-in user: pass --user (or KMAAS_USER) and --issuer ' +
            '(or KMAAS_OIDC_ISSUER), with the password in KMAAS_PASSWORD or --password-file',
          details,
        );
      }
      return err;
    default:
      return err;
  }
}
