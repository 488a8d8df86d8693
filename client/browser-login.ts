/**
 * Browser sign-in at an OpenID Connect provider for the KMaaS API, with oauth4webapi:
 *
 *   beginLogin     discovery (OpenID Connect Discovery 1.0 section 4, the issuer must match
 *                  exactly); a fresh non-extractable DPoP key pair (client/dpop.ts) stored in
 *                  IndexedDB; PKCE verifier (RFC 7636 section 4.1) and state kept in
 *                  sessionStorage; the page goes to the authorization endpoint with
 *                  response_type=code, code_challenge (S256), resource (RFC 8707) and dpop_jkt
 *                  (RFC 9449 section 10: the code is bound to the key).
 *   completeLogin  on the redirect URI: state and iss checked (RFC 9207); the code redeemed at the
 *                  token endpoint with the verifier, the resource and a DPoP proof; when the
 *                  provider answers use_dpop_nonce (RFC 9449 section 8) the request goes again,
 *                  once, with its nonce. The token must be token_type DPoP and bound to our key
 *                  (cnf.jkt); subject and tenant are read from its claims (it is a JWT, RFC 9068;
 *                  read, not verified: the nodes verify it, the page only names the user).
 *   currentSession the stored session after a reload, while its token is valid.
 *   logout         forgets token and key.
 *
 * The token lives in sessionStorage (this tab only, gone when it closes); the key pair in
 * IndexedDB, whose CryptoKey objects stay non-extractable (browser-key-store.ts).
 *
 * @example
 *   const opts = { issuer, clientId: 'kmaas-dev', redirectUri: location.origin + '/' };
 *   const session = (await completeLogin(opts)) ?? (await currentSession(opts));
 *   if (!session) await beginLogin(opts); // navigates away
 *   const client = new KmaasClient({ baseUrl, pins, auth: session });
 */
import * as oauth from 'oauth4webapi';
import { decodeJwt, type JWTPayload } from 'jose';
import { KmaasError } from '../shared/errors.ts';
import { dpopThumbprint, generateDpopKey } from './dpop.ts';
import { deleteDpopKey, loadDpopKey, saveDpopKey } from './browser-key-store.ts';

export interface BrowserSession {
  accessToken: string;
  dpopKey: CryptoKeyPair;
  /** When the access token expires, epoch ms (its `exp`). */
  expiresAt: number;
  subject: string;
  tenant: string;
  issuer: string;
}

export interface LoginOptions {
  issuer: string;
  clientId: string;
  redirectUri: string;
  /** Resource indicator (RFC 8707) of the KMaaS API. Default urn:kmaas:api. */
  resource?: string;
  /** The access token claim that names the tenant. Default `tenant`. */
  tenantClaim?: string;
}

/** As idp/config.ts has them (DEFAULT_RESOURCE, API_SCOPE, TENANT_CLAIM). */
export const DEFAULT_RESOURCE = 'urn:kmaas:api';
const SCOPE = 'openid kmaas:evaluate';
const DEFAULT_TENANT_CLAIM = 'tenant';

const PENDING_KEY = 'kmaas.login.pending';
const SESSION_KEY = 'kmaas.session';

interface Pending {
  issuer: string;
  clientId: string;
  redirectUri: string;
  resource: string;
  codeVerifier: string;
  state: string;
  /** The IndexedDB record of this sign-in's DPoP key. */
  keyId: string;
}

type StoredSession = Omit<BrowserSession, 'dpopKey'> & { clientId: string; keyId: string };

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/;

/**
 * oauth4webapi refuses plain http. The development provider runs on http://127.0.0.1 with no
 * certificate, so http is allowed for a loopback issuer only: nothing crosses a network there.
 * Known shortcoming: a provider on plain http on another host (a container name) is refused.
 */
function httpOptions(issuer: URL): { [oauth.allowInsecureRequests]?: boolean } {
  return issuer.protocol === 'http:' && LOOPBACK.test(issuer.hostname)
    ? { [oauth.allowInsecureRequests]: true }
    : {};
}

function storage(): Storage {
  const s = globalThis.sessionStorage as Storage | undefined;
  if (!s) throw new KmaasError('ERR_CONFIG', 'sessionStorage is not available in this context');
  return s;
}

function readJson<T>(key: string): T | undefined {
  const text = storage().getItem(key);
  if (text === null) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    storage().removeItem(key);
    return undefined;
  }
}

function issuerUrl(o: LoginOptions): URL {
  if (!URL.canParse(o.issuer)) {
    throw new KmaasError('ERR_CONFIG', 'issuer: expected an absolute URL', { field: 'issuer' });
  }
  return new URL(o.issuer);
}

function client(o: LoginOptions): oauth.Client {
  return { client_id: o.clientId };
}

/** oauth4webapi's and the network's failures, as coded errors that name no secret. */
function asKmaasError(err: unknown, step: string): KmaasError {
  if (err instanceof KmaasError) return err;
  if (err instanceof oauth.AuthorizationResponseError || err instanceof oauth.ResponseBodyError) {
    return new KmaasError('ERR_IDP_PROTOCOL', `${step}: the identity provider said ${err.error}`, {
      error: err.error,
      ...(err.error_description === undefined ? {} : { description: err.error_description }),
    });
  }
  if (err instanceof TypeError) {
    // fetch rejects with a TypeError when the provider cannot be reached (or CORS refused it).
    return new KmaasError('ERR_IDP_UNAVAILABLE', `${step}: cannot reach the identity provider`);
  }
  const message = err instanceof Error ? err.message : String(err);
  return new KmaasError('ERR_IDP_PROTOCOL', `${step}: ${message}`);
}

async function discover(o: LoginOptions): Promise<oauth.AuthorizationServer> {
  const issuer = issuerUrl(o);
  try {
    const res = await oauth.discoveryRequest(issuer, {
      algorithm: 'oidc',
      ...httpOptions(issuer),
    });
    return await oauth.processDiscoveryResponse(issuer, res);
  } catch (err) {
    const e = asKmaasError(err, 'discovery');
    throw e.code === 'ERR_IDP_PROTOCOL'
      ? new KmaasError('ERR_IDP_UNAVAILABLE', `no valid discovery document for ${o.issuer}`)
      : e;
  }
}

/**
 * Start the sign-in: store a fresh DPoP key, the PKCE verifier and the state, then navigate to
 * the identity provider. The promise resolves as the navigation starts; the page then unloads.
 */
export async function beginLogin(o: LoginOptions): Promise<void> {
  const as = await discover(o);
  if (as.authorization_endpoint === undefined) {
    throw new KmaasError('ERR_IDP_UNAVAILABLE', 'the provider names no authorization endpoint');
  }
  const dpopKey = await generateDpopKey();
  const keyId = oauth.generateRandomState();
  await forgetSession();
  await saveDpopKey(keyId, dpopKey);
  const pending: Pending = {
    keyId,
    issuer: o.issuer,
    clientId: o.clientId,
    redirectUri: o.redirectUri,
    resource: o.resource ?? DEFAULT_RESOURCE,
    codeVerifier: oauth.generateRandomCodeVerifier(),
    state: oauth.generateRandomState(),
  };
  storage().setItem(PENDING_KEY, JSON.stringify(pending));
  const url = new URL(as.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: o.clientId,
    redirect_uri: o.redirectUri,
    scope: SCOPE,
    resource: pending.resource,
    state: pending.state,
    code_challenge: await oauth.calculatePKCECodeChallenge(pending.codeVerifier),
    code_challenge_method: 'S256',
    dpop_jkt: await dpopThumbprint(dpopKey),
  }).toString();
  globalThis.location.assign(url.href);
}

/** Drop code, state and iss from the address bar, so a reload does not redeem the code again. */
function cleanAddress(url: URL): void {
  for (const p of ['code', 'state', 'iss', 'error', 'error_description', 'session_state']) {
    url.searchParams.delete(p);
  }
  globalThis.history?.replaceState(globalThis.history.state, '', url.href);
}

/**
 * On the redirect URI: finish the sign-in the URL answers. Resolves null when the URL carries
 * neither `code` nor `error` (an ordinary visit); throws ERR_IDP_PROTOCOL when the provider
 * refused or the answer does not belong to a sign-in this tab started, ERR_IDP_UNAVAILABLE when
 * the provider cannot be reached.
 */
export async function completeLogin(o: LoginOptions): Promise<BrowserSession | null> {
  const url = new URL(globalThis.location.href);
  if (!url.searchParams.has('code') && !url.searchParams.has('error')) return null;
  const pending = readJson<Pending>(PENDING_KEY);
  storage().removeItem(PENDING_KEY);
  cleanAddress(new URL(url));
  if (
    !pending ||
    pending.issuer !== o.issuer ||
    pending.clientId !== o.clientId ||
    pending.redirectUri !== o.redirectUri
  ) {
    if (pending) await deleteDpopKey(pending.keyId).catch(() => undefined);
    throw new KmaasError('ERR_IDP_PROTOCOL', 'no sign-in was started in this tab for this answer');
  }
  const dpopKey = await loadDpopKey(pending.keyId);
  if (!dpopKey) throw new KmaasError('ERR_IDP_PROTOCOL', 'the DPoP key of this sign-in is gone');
  try {
    return await redeemAnswer(o, url, pending, dpopKey);
  } catch (err) {
    // A failed sign-in leaves no key behind.
    await deleteDpopKey(pending.keyId).catch(() => undefined);
    throw err;
  }
}

async function redeemAnswer(
  o: LoginOptions,
  url: URL,
  pending: Pending,
  dpopKey: CryptoKeyPair,
): Promise<BrowserSession> {
  const as = await discover(o);
  const c = client(o);
  let params: URLSearchParams;
  try {
    params = oauth.validateAuthResponse(as, c, url, pending.state);
  } catch (err) {
    throw asKmaasError(err, 'authorization');
  }

  const dpop = oauth.DPoP(c, dpopKey);
  const redeem = async () => {
    const res = await oauth.authorizationCodeGrantRequest(
      as,
      c,
      oauth.None(),
      params,
      pending.redirectUri,
      pending.codeVerifier,
      {
        DPoP: dpop,
        additionalParameters: { resource: pending.resource },
        ...httpOptions(issuerUrl(o)),
      },
    );
    return oauth.processAuthorizationCodeResponse(as, c, res);
  };
  let token: oauth.TokenEndpointResponse;
  try {
    try {
      token = await redeem();
    } catch (err) {
      // RFC 9449 section 8: the handle has kept the nonce the provider sent; one more try.
      if (!oauth.isDPoPNonceError(err)) throw err;
      token = await redeem();
    }
  } catch (err) {
    throw asKmaasError(err, 'token request');
  }
  if (token.token_type !== 'dpop') {
    throw new KmaasError('ERR_IDP_PROTOCOL', 'the access token is not DPoP-bound', {
      tokenType: token.token_type,
    });
  }
  const session = await sessionFromToken(o, token.access_token, dpopKey);
  const stored: StoredSession = {
    ...withoutKey(session),
    clientId: o.clientId,
    keyId: pending.keyId,
  };
  storage().setItem(SESSION_KEY, JSON.stringify(stored));
  return session;
}

function withoutKey(s: Omit<BrowserSession, 'dpopKey'>): Omit<BrowserSession, 'dpopKey'> {
  const { accessToken, expiresAt, subject, tenant, issuer } = s;
  return { accessToken, expiresAt, subject, tenant, issuer };
}

async function sessionFromToken(
  o: LoginOptions,
  accessToken: string,
  dpopKey: CryptoKeyPair,
): Promise<BrowserSession> {
  let claims: JWTPayload;
  try {
    claims = decodeJwt(accessToken);
  } catch {
    throw new KmaasError('ERR_IDP_PROTOCOL', 'the access token is not a JWT');
  }
  const tenant = claims[o.tenantClaim ?? DEFAULT_TENANT_CLAIM];
  if (
    typeof claims.sub !== 'string' ||
    typeof tenant !== 'string' ||
    typeof claims.exp !== 'number'
  ) {
    throw new KmaasError('ERR_IDP_PROTOCOL', 'the access token lacks sub, tenant or exp');
  }
  const cnf = claims.cnf as { jkt?: unknown } | undefined;
  if (cnf?.jkt !== (await dpopThumbprint(dpopKey))) {
    throw new KmaasError('ERR_IDP_PROTOCOL', 'the access token is not bound to the DPoP key');
  }
  return {
    accessToken,
    dpopKey,
    expiresAt: claims.exp * 1000,
    subject: claims.sub,
    tenant,
    issuer: o.issuer,
  };
}

/**
 * The session of this tab after a reload: null when there is none, it is for another provider
 * or client, its token has expired, or its key is gone. Known shortcoming: there is no refresh
 * token, so a session ends with its access token (10 minutes at the development provider) and
 * needs beginLogin again (the provider's own session cookie usually makes that a redirect with no
 * form).
 */
export async function currentSession(o: LoginOptions): Promise<BrowserSession | null> {
  const stored = readJson<StoredSession>(SESSION_KEY);
  if (!stored || stored.issuer !== o.issuer || stored.clientId !== o.clientId) return null;
  if (!(typeof stored.expiresAt === 'number' && stored.expiresAt > Date.now())) return null;
  if (typeof stored.keyId !== 'string' || typeof stored.accessToken !== 'string') return null;
  const dpopKey = await loadDpopKey(stored.keyId);
  return dpopKey ? { ...withoutKey(stored), dpopKey } : null;
}

/**
 * Forget this tab's session: the token and the DPoP key. Known shortcoming: the provider's own
 * login session (its cookie) is left alone (no RP-initiated logout), so the next beginLogin may
 * not ask for the password again.
 */
export async function logout(): Promise<void> {
  await forgetSession();
}

/** Remove this tab's session and pending sign-in, and their keys. */
async function forgetSession(): Promise<void> {
  const ids = [readJson<StoredSession>(SESSION_KEY)?.keyId, readJson<Pending>(PENDING_KEY)?.keyId];
  storage().removeItem(SESSION_KEY);
  storage().removeItem(PENDING_KEY);
  for (const id of ids) if (typeof id === 'string') await deleteDpopKey(id);
}
