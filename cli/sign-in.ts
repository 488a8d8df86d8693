/**
 * Signing in before a key is derived (DESIGN.md section 4): every evaluation carries the end
 * user's OIDC access token, bound by DPoP (RFC 9449) to a key of this run. Each run makes a fresh
 * non-extractable ES256 key (client/dpop.ts), signs in at the issuer with the development login
 * (idp/dev-login.ts: authorization code, PKCE, DPoP-bound token) and hands token and key to the
 * SDK, which signs a proof for every evaluate request.
 *
 * Who signs in, strongest first: --user or KMAAS_USER, else the cluster file's dev user of the
 * tenant the command is for. The password: --password-file, KMAAS_PASSWORD, else that dev user's
 * own in the cluster file. The issuer: --issuer, KMAAS_OIDC_ISSUER, the cluster file's `issuer`.
 */
import { readFile } from 'node:fs/promises';
import type { ClientAuth } from '../client/derive.ts';
import { generateDpopKey } from '../client/dpop.ts';
import { devLogin, type DevLoginOptions, type DevLoginResult } from '../idp/dev-login.ts';
import { KmaasError } from '../shared/errors.ts';
import type { Config } from './config.ts';
import { noIssuerError, noPasswordError, noUserError } from './explain.ts';

export interface SignedIn extends ClientAuth {
  issuer: string;
  subject: string;
  tenant: string;
  expiresAt: number;
}

export interface Credentials {
  issuer: string;
  username: string;
  password: string;
}

async function passwordFromFile(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new KmaasError('ERR_CONFIG', `password file ${file} unreadable (${code})`, {
      field: 'password',
      file,
    });
  }
  // One line, as `echo secret > file` writes it.
  const password = text.replace(/\r?\n$/, '');
  if (password === '') {
    throw new KmaasError('ERR_CONFIG', `password file ${file} is empty`, {
      field: 'password',
      file,
    });
  }
  return password;
}

/** Issuer, user and password for `tenant`, or an ERR_CONFIG that says what to give. */
export async function credentialsFor(
  config: Config,
  tenant: string,
  operation: string,
): Promise<Credentials> {
  if (config.issuer === undefined) throw noIssuerError(config, operation);
  const devUser =
    config.user === undefined
      ? config.devUsers.find((u) => u.tenant === tenant)
      : config.devUsers.find((u) => u.username === config.user);
  const username = config.user ?? devUser?.username;
  if (username === undefined) throw noUserError(config, tenant, operation);
  const password =
    config.passwordFile !== undefined
      ? await passwordFromFile(config.passwordFile)
      : (config.password ?? devUser?.password);
  if (password === undefined) throw noPasswordError(config, username);
  return { issuer: config.issuer, username, password };
}

/**
 * Sign in for `tenant` with a new DPoP key. A user whose token names another tenant is refused
 * here (ERR_TOKEN_TENANT), before any request: every node would refuse it.
 */
export async function signIn(
  config: Config,
  tenant: string,
  operation: string,
  login: (opts: DevLoginOptions) => Promise<DevLoginResult> = devLogin,
): Promise<SignedIn> {
  const credentials = await credentialsFor(config, tenant, operation);
  const dpopKey = await generateDpopKey();
  const result = await login({ ...credentials, dpopKey });
  if (result.tenant !== tenant) {
    throw new KmaasError(
      'ERR_TOKEN_TENANT',
      `user ${result.subject} signs in for tenant ${result.tenant}, not ${tenant}: ` +
        'sign in as a user of that tenant with --user (or KMAAS_USER)',
      { tenant, tokenTenant: result.tenant },
    );
  }
  return {
    issuer: credentials.issuer,
    accessToken: result.accessToken,
    dpopKey,
    subject: result.subject,
    tenant: result.tenant,
    expiresAt: result.expiresAt,
  };
}
