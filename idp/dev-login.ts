/**
 * Development sign-in against an OpenID Connect provider, from Node (tests, CLI, bench, demo):
 * what a browser and a user would do, done by a program with a username and password.
 *
 *   1. Discovery (OpenID Connect Discovery 1.0 section 4; the issuer must match exactly).
 *   2. Authorization request, code flow (RFC 6749 section 4.1) with PKCE S256 (RFC 7636
 *      section 4) and `dpop_jkt` binding the code to the DPoP key (RFC 9449 section 10).
 *   3. The login interaction: redirects followed by hand (fetch `redirect: 'manual'`) with a small
 *      cookie jar, the login form posted with username and password; the flow ends at a redirect
 *      to the client's redirect URI with `code`, `state` and `iss` (RFC 9207, checked).
 *   4. Token request with a DPoP proof (RFC 9449 section 5); a provider that asks for a nonce
 *      (400 `use_dpop_nonce` with a DPoP-Nonce header, section 8) gets the request again, once,
 *      with a proof that carries it.
 * The access token must come back as token_type DPoP, bound (cnf.jkt) to the proof's key.
 *
 *   const { accessToken, dpopKey, tenant } = await devLogin({ issuer, username, password });
 *
 * Only for the local identity provider and test setups: a real client never sees the password.
 */
import {
  createDpopProof as createClientDpopProof,
  dpopThumbprint,
  generateDpopKey as generateDpopKeyPair,
} from '../client/dpop.ts';
import { createHash, randomBytes } from 'node:crypto';
import { decodeJwt, type JWTPayload } from 'jose';
import { KmaasError } from '../shared/errors.ts';
import {
  API_SCOPE,
  DEFAULT_REDIRECT_URI,
  DEFAULT_RESOURCE,
  DEV_CLIENT_ID,
  TENANT_CLAIM,
} from './config.ts';

export interface DevLoginOptions {
  issuer: string;
  username: string;
  password: string;
  /** The DPoP key pair (ES256); a non-extractable one is generated when absent. */
  dpopKey?: CryptoKeyPair;
  clientId?: string;
  redirectUri?: string;
  /** Resource indicator (RFC 8707) of the API the token is for. */
  resource?: string;
  /** Claim that carries the tenant. */
  tenantClaim?: string;
}

export interface DevLoginResult {
  /** JWT access token, DPoP-bound: send as `Authorization: DPoP <token>` with a proof. */
  accessToken: string;
  dpopKey: CryptoKeyPair;
  /** When the access token expires, in milliseconds since the epoch (its `exp`). */
  expiresAt: number;
  subject: string;
  tenant: string;
}

export interface ProviderMetadata {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  jwks_uri: string;
}

export interface AuthorizationResult {
  code: string;
  codeVerifier: string;
  redirectUri: string;
  clientId: string;
  resource: string;
  metadata: ProviderMetadata;
}

const REQUEST_TIMEOUT_MS = 10_000;
const MAX_STEPS = 10;

const b64url = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64url');

function protocolError(message: string, details?: Record<string, unknown>): KmaasError {
  return new KmaasError('ERR_IDP_PROTOCOL', message, details);
}

async function request(url: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(url, {
      ...init,
      redirect: 'manual',
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (err) {
    throw new KmaasError('ERR_IDP_UNAVAILABLE', `cannot reach the identity provider at ${url}`, {
      url,
      reason:
        ((err as Error).cause as NodeJS.ErrnoException | undefined)?.code ?? (err as Error).name,
    });
  }
}

/** The provider's metadata; its `issuer` must be exactly the one asked for (section 4.3). */
export async function discover(issuer: string): Promise<ProviderMetadata> {
  const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  const res = await request(url, { headers: { accept: 'application/json' } });
  const meta = res.ok ? ((await res.json().catch(() => undefined)) as unknown) : undefined;
  const m = meta as Partial<ProviderMetadata> | undefined;
  const urls = [m?.authorization_endpoint, m?.token_endpoint, m?.jwks_uri];
  if (m?.issuer !== issuer || !urls.every((u) => typeof u === 'string' && URL.canParse(u))) {
    throw new KmaasError('ERR_IDP_UNAVAILABLE', `no valid discovery document for ${issuer}`, {
      url,
      status: res.status,
    });
  }
  return m as ProviderMetadata;
}

// One DPoP key helper for the SDK and this login: the key the token is bound to is the key the
// SDK signs evaluate proofs with.
export { generateDpopKey as generateDpopKeyPair, dpopThumbprint } from '../client/dpop.ts';

/**
 * A DPoP proof JWT (RFC 9449 section 4.2): typ dpop+jwt, the public key in the header; jti,
 * htm, htu, iat, and nonce or ath when given. The SDK's (client/dpop.ts), which the browser
 * sign-in uses too.
 */
export function createDpopProof(opts: {
  key: CryptoKeyPair;
  htm: string;
  htu: string;
  nonce?: string;
  accessToken?: string;
}): Promise<string> {
  const { key, ...req } = opts;
  return createClientDpopProof(key, req);
}

/**
 * Cookies of one origin (the provider's), as a browser keeps them: by name and path, sent on the
 * paths they were set for, dropped when the provider expires them.
 */
class CookieJar {
  private readonly cookies = new Map<string, { name: string; value: string; path: string }>();

  store(res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair = '', ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = '/';
      let expired = value === '';
      for (const attr of attrs) {
        const [k = '', v = ''] = attr.split('=').map((s) => s.trim());
        const key = k.toLowerCase();
        if (key === 'path' && v.startsWith('/')) path = v;
        if (key === 'max-age' && Number(v) <= 0) expired = true;
        if (key === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      }
      const id = `${name};${path}`;
      if (expired) this.cookies.delete(id);
      else this.cookies.set(id, { name, value, path });
    }
  }

  header(url: URL): string {
    const matches = (p: string) =>
      url.pathname === p ||
      (url.pathname.startsWith(p) && (p.endsWith('/') || url.pathname[p.length] === '/'));
    return [...this.cookies.values()]
      .filter((c) => matches(c.path))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }
}

function sameEndpoint(a: URL, b: URL): boolean {
  return a.origin === b.origin && a.pathname === b.pathname;
}

/**
 * Steps 1-3: an authorization code for `username`, bound to the DPoP key by `dpop_jkt`. A wrong
 * password is ERR_LOGIN_FAILED; anything else the provider refuses is ERR_IDP_PROTOCOL.
 */
export async function authorize(opts: {
  issuer: string;
  username: string;
  password: string;
  dpopKey: CryptoKeyPair;
  clientId?: string;
  redirectUri?: string;
  resource?: string;
}): Promise<AuthorizationResult> {
  const clientId = opts.clientId ?? DEV_CLIENT_ID;
  const redirectUri = opts.redirectUri ?? DEFAULT_REDIRECT_URI;
  const resource = opts.resource ?? DEFAULT_RESOURCE;
  const metadata = await discover(opts.issuer);
  const origin = new URL(opts.issuer).origin;
  const callback = new URL(redirectUri);

  // RFC 7636 section 4.1-4.2: 32 random octets, challenge = BASE64URL(SHA256(verifier)).
  const codeVerifier = b64url(randomBytes(32));
  const state = b64url(randomBytes(16));
  const auth = new URL(metadata.authorization_endpoint);
  auth.search = new URLSearchParams({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: redirectUri,
    scope: `openid ${API_SCOPE}`,
    resource,
    state,
    code_challenge: createHash('sha256').update(codeVerifier).digest('base64url'),
    code_challenge_method: 'S256',
    dpop_jkt: await dpopThumbprint(opts.dpopKey),
  }).toString();

  const jar = new CookieJar();
  let url = auth;
  let init: RequestInit = {};
  let loggedIn = false;
  for (let step = 0; step < MAX_STEPS; step++) {
    if (url.origin !== origin) {
      throw protocolError(`the provider redirected off its origin to ${url.origin}`);
    }
    const headers = new Headers(init.headers);
    const cookie = jar.header(url);
    if (cookie) headers.set('cookie', cookie);
    const res = await request(url.href, { ...init, headers });
    jar.store(res);
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel();
      const next = new URL(location, url);
      if (sameEndpoint(next, callback)) {
        return {
          code: readCallback(next, state, opts.issuer),
          codeVerifier,
          redirectUri,
          clientId,
          resource,
          metadata,
        };
      }
      url = next;
      init = {};
      continue;
    }
    const body = await res.text();
    if (loggedIn && res.status === 401) {
      throw new KmaasError('ERR_LOGIN_FAILED', `the identity provider refused the login`, {
        username: opts.username,
      });
    }
    const action = /<form[^>]*\saction="([^"]+)"/i.exec(body)?.[1];
    if (res.status !== 200 || loggedIn || action === undefined) {
      throw protocolError(`unexpected answer (${res.status}) from the identity provider`, {
        url: url.origin + url.pathname,
        status: res.status,
      });
    }
    // The login form: post the credentials where it says.
    url = new URL(action.replace(/&amp;/g, '&'), url);
    init = {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username: opts.username, password: opts.password }).toString(),
    };
    loggedIn = true;
  }
  throw protocolError(`the sign-in did not finish within ${MAX_STEPS} steps`);
}

/** The code from the redirect back to the client; state and iss (RFC 9207) must match. */
function readCallback(url: URL, state: string, issuer: string): string {
  const p = url.searchParams;
  const error = p.get('error');
  if (error !== null) {
    throw protocolError(`authorization refused: ${error}`, {
      error,
      description: p.get('error_description') ?? undefined,
    });
  }
  if (p.get('state') !== state) throw protocolError('state mismatch in the authorization response');
  if (p.get('iss') !== issuer) throw protocolError('iss mismatch in the authorization response');
  const code = p.get('code');
  if (!code) throw protocolError('no code in the authorization response');
  return code;
}

interface TokenResponse {
  access_token?: unknown;
  token_type?: unknown;
  error?: unknown;
  error_description?: unknown;
}

/**
 * Step 4: redeem the code for a DPoP-bound access token (RFC 9449 section 5), retrying once with
 * the provider's nonce when it asks for one (section 8).
 */
export async function redeemCode(
  auth: AuthorizationResult,
  dpopKey: CryptoKeyPair,
): Promise<string> {
  const tokenUrl = auth.metadata.token_endpoint;
  const body = new URLSearchParams({
    grant_type: 'authorization_code',
    code: auth.code,
    redirect_uri: auth.redirectUri,
    code_verifier: auth.codeVerifier,
    client_id: auth.clientId,
    resource: auth.resource,
  }).toString();
  let nonce: string | undefined;
  for (let attempt = 0; ; attempt++) {
    const proof = await createDpopProof({ key: dpopKey, htm: 'POST', htu: tokenUrl, nonce });
    const res = await request(tokenUrl, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
        dpop: proof,
      },
      body,
    });
    const json = (await res.json().catch(() => ({}))) as TokenResponse;
    const nextNonce = res.headers.get('dpop-nonce');
    if (json.error === 'use_dpop_nonce' && nextNonce && attempt === 0) {
      nonce = nextNonce;
      continue;
    }
    if (!res.ok || typeof json.access_token !== 'string') {
      throw protocolError(`token request refused (${res.status})`, {
        status: res.status,
        error: typeof json.error === 'string' ? json.error : undefined,
        description:
          typeof json.error_description === 'string' ? json.error_description : undefined,
      });
    }
    if (typeof json.token_type !== 'string' || json.token_type.toLowerCase() !== 'dpop') {
      throw protocolError('the access token is not DPoP-bound', { tokenType: json.token_type });
    }
    return json.access_token;
  }
}

/**
 * Sign in as a dev user and get a DPoP-bound JWT access token for the KMaaS API. The token's
 * claims are read, not verified: the nodes verify it; here they only name the user and tenant.
 */
export async function devLogin(opts: DevLoginOptions): Promise<DevLoginResult> {
  const dpopKey = opts.dpopKey ?? (await generateDpopKeyPair());
  const auth = await authorize({ ...opts, dpopKey });
  const accessToken = await redeemCode(auth, dpopKey);
  let claims: JWTPayload;
  try {
    claims = decodeJwt(accessToken);
  } catch {
    throw protocolError('the access token is not a JWT');
  }
  const tenant = claims[opts.tenantClaim ?? TENANT_CLAIM];
  const cnf = claims.cnf as { jkt?: unknown } | undefined;
  if (
    typeof claims.sub !== 'string' ||
    typeof tenant !== 'string' ||
    typeof claims.exp !== 'number'
  ) {
    throw protocolError('the access token lacks sub, tenant or exp');
  }
  if (cnf?.jkt !== (await dpopThumbprint(dpopKey))) {
    throw protocolError('the access token is not bound to the DPoP key (cnf.jkt)');
  }
  return { accessToken, dpopKey, expiresAt: claims.exp * 1000, subject: claims.sub, tenant };
}
