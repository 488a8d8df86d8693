/**
 * Settings of the local identity provider (idp/main.ts), read once from the environment and
 * validated here; a bad setting stops the process with ERR_CONFIG naming the variable.
 *
 *   KMAAS_IDP_PORT           port (0 = a free port; the `listening` line names it)
 *   KMAAS_IDP_HOST           bind address (127.0.0.1; a container binds 0.0.0.0)
 *   KMAAS_IDP_ISSUER         the issuer identifier, as browsers, CLI and nodes all reach it
 *                            (default http://<host>:<port>; required when the host is a wildcard)
 *   KMAAS_IDP_USERS_FILE     JSON file of dev users: [{ username, password, tenant }] (required)
 *   KMAAS_IDP_KEYS_FILE      JWKS file of the private signing keys; created (mode 600) when
 *                            missing, so that a restarted provider keeps its key ids (optional:
 *                            without it, keys live as long as the process)
 *   KMAAS_IDP_REDIRECT_URIS  comma-separated redirect URIs of the `kmaas-dev` client
 *   KMAAS_IDP_RESOURCE       resource indicator (RFC 8707) of the KMaaS API (urn:kmaas:api)
 *   LOG_LEVEL                pino level (info)
 */
import { z } from 'zod';
import { KmaasError } from '../shared/errors.ts';

/** The one client of the provider: public (no secret), PKCE S256, DPoP-bound tokens. */
export const DEV_CLIENT_ID = 'kmaas-dev';
/** Registered when KMAAS_IDP_REDIRECT_URIS is not set; a Node client never loads it. */
export const DEFAULT_REDIRECT_URI = 'http://127.0.0.1/callback';
export const DEFAULT_RESOURCE = 'urn:kmaas:api';
/** The scope a client asks for to get an access token for the KMaaS API. */
export const API_SCOPE = 'kmaas:evaluate';
/** Claim of the access token that carries the user's tenant (PLAN section A). */
export const TENANT_CLAIM = 'tenant';
/** Lifetime of an access token for the API, in seconds. */
export const ACCESS_TOKEN_TTL_SECONDS = 600;

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const absoluteUri = z.string().refine((s) => URL.canParse(s), 'expected an absolute URI');

const schema = z.object({
  KMAAS_IDP_PORT: z.coerce.number().int().min(0).max(65535).default(0),
  KMAAS_IDP_HOST: z.string().min(1).default('127.0.0.1'),
  KMAAS_IDP_ISSUER: absoluteUri
    .refine((s) => /^https?:$/.test(new URL(s).protocol), 'expected an http(s) URL')
    .refine((s) => {
      const u = new URL(s);
      return !u.search && !u.hash && !s.endsWith('/');
    }, 'expected no query, fragment or trailing slash')
    .optional(),
  KMAAS_IDP_USERS_FILE: z.string().min(1, 'required: the dev users file'),
  KMAAS_IDP_KEYS_FILE: z.string().min(1).optional(),
  KMAAS_IDP_REDIRECT_URIS: z
    .string()
    .default(DEFAULT_REDIRECT_URI)
    .transform((s) =>
      s
        .split(',')
        .map((u) => u.trim())
        .filter((u) => u !== ''),
    )
    .pipe(z.array(absoluteUri).min(1, 'expected at least one redirect URI')),
  KMAAS_IDP_RESOURCE: absoluteUri.default(DEFAULT_RESOURCE),
  LOG_LEVEL: z.enum(LEVELS).default('info'),
});

export interface IdpConfig {
  port: number;
  host: string;
  /** The issuer identifier; undefined: http://<host>:<port> once the port is known. */
  issuer: string | undefined;
  usersFile: string;
  keysFile: string | undefined;
  redirectUris: string[];
  resource: string;
  logLevel: (typeof LEVELS)[number];
}

export function loadIdpConfig(env: NodeJS.ProcessEnv = process.env): IdpConfig {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = String(issue.path[0] ?? 'environment');
    throw new KmaasError('ERR_CONFIG', `${field}: ${issue.message}`, { field });
  }
  const e = parsed.data;
  if (e.KMAAS_IDP_ISSUER === undefined && ['0.0.0.0', '::', '[::]'].includes(e.KMAAS_IDP_HOST)) {
    throw new KmaasError(
      'ERR_CONFIG',
      'KMAAS_IDP_ISSUER: required when KMAAS_IDP_HOST is a wildcard address: the URL at which ' +
        'browsers, the CLI and the nodes all reach the provider',
      { field: 'KMAAS_IDP_ISSUER' },
    );
  }
  return {
    port: e.KMAAS_IDP_PORT,
    host: e.KMAAS_IDP_HOST,
    issuer: e.KMAAS_IDP_ISSUER,
    usersFile: e.KMAAS_IDP_USERS_FILE,
    keysFile: e.KMAAS_IDP_KEYS_FILE,
    redirectUris: e.KMAAS_IDP_REDIRECT_URIS,
    resource: e.KMAAS_IDP_RESOURCE,
    logLevel: e.LOG_LEVEL,
  };
}
