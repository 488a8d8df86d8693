/**
 * End-user access tokens (DESIGN.md section 4): JWTs issued by the configured OIDC provider in
 * the RFC 9068 profile, bound to a DPoP key (RFC 9449 section 6.1), checked by every node on its
 * own and by the coordinator for early refusal. Node-side (jose's remote JWKS uses fetch); never
 * imported by the client.
 *
 *   header  { typ: 'at+jwt', alg: ES256 | ES384 | EdDSA | RS256 | PS256, kid }
 *   claims  { iss, aud, sub, exp, iat, <tenant claim>, cnf: { jkt } }
 *
 * Keys come from the issuer's JWKS: `jwks_uri` of <issuer>/.well-known/openid-configuration
 * (OpenID Connect Discovery 1.0 section 4) unless configured. jose's remote key set caches it and
 * fetches it again when a token names a key id it does not hold (at most once per cooldown).
 * Nothing is fetched until the first token (or prefetch), so the issuer may start after us; an
 * issuer that cannot be reached is ERR_ISSUER_UNAVAILABLE, never a crash.
 *
 * Each failure has its own code; messages say what was wrong, never what the token contained.
 */
import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type JWTPayload,
  type JWTHeaderParameters,
  type FlattenedJWSInput,
  type ProtectedHeaderParameters,
} from 'jose';
import { KmaasError, type ErrorCode } from './errors.ts';

/** Asymmetric signature algorithms only: a shared-secret (HS*) or unsigned token never passes. */
export const ALLOWED_ALGORITHMS = ['ES256', 'ES384', 'EdDSA', 'RS256', 'PS256'] as const;

export const DEFAULT_AUDIENCE = 'urn:kmaas:api';
export const DEFAULT_TENANT_CLAIM = 'tenant';
export const DEFAULT_CLOCK_SKEW_SECONDS = 30;
export const DEFAULT_DPOP_MAX_AGE_SECONDS = 60;

/** The KMAAS_OIDC_* settings, shared by nodes and coordinator. */
export interface OidcSettings {
  /** KMAAS_OIDC_ISSUER: the exact `iss` of accepted tokens. */
  issuer: string;
  /** KMAAS_OIDC_AUDIENCE (default urn:kmaas:api). */
  audience: string;
  /** KMAAS_OIDC_TENANT_CLAIM (default tenant). */
  tenantClaim: string;
  /** KMAAS_OIDC_JWKS_URI; default: discovered from the issuer. */
  jwksUri?: string;
  /** KMAAS_CLOCK_SKEW_SECONDS (default 30). */
  clockSkewSeconds: number;
  /** KMAAS_DPOP_MAX_AGE_SECONDS (default 60). */
  dpopMaxAgeSeconds: number;
}

export interface AccessTokenOptions {
  /** The clock, in ms since the epoch; tests pass a fixed one. Default Date.now. */
  now?: () => number;
  /** Minimum time between two JWKS fetches caused by unknown key ids. Default 30 s. */
  jwksCooldownMs?: number;
  /** Deadline of one discovery or JWKS fetch. Default 2 s. */
  fetchTimeoutMs?: number;
}

export interface VerifiedToken {
  /** The verified `sub`: the rate-limit and audit subject. */
  subject: string;
  tenant: string;
  /** The DPoP key thumbprint the token is bound to (RFC 7638, SHA-256, base64url). */
  jkt: string;
  /** `exp`, in seconds since the epoch. */
  expiresAt: number;
}

/** After a failed discovery, requests within this long get the same error without a fetch. */
const DISCOVERY_RETRY_MS = 1000;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const THUMBPRINT = /^[A-Za-z0-9_-]{43}$/;
const ACCESS_TOKEN_TYPES = new Set(['at+jwt', 'application/at+jwt']);

type RemoteKeySet = ReturnType<typeof createRemoteJWKSet>;

function tokenError(code: ErrorCode, msg: string): KmaasError {
  return new KmaasError(code, `access token: ${msg}`);
}

function unavailable(what: string): KmaasError {
  return new KmaasError('ERR_ISSUER_UNAVAILABLE', `identity provider: ${what}`);
}

export function isAllowedAlgorithm(alg: unknown): boolean {
  return typeof alg === 'string' && (ALLOWED_ALGORITHMS as readonly string[]).includes(alg);
}

/**
 * The token's header, checked before any key is looked up: well-formed, signed, with an allowed
 * algorithm and the access-token type. A token made with HS256 and the issuer's public key as
 * the secret stops here, as does `alg: none`.
 */
export function checkTokenHeader(token: string): ProtectedHeaderParameters {
  if (!COMPACT_JWS.test(token)) throw tokenError('ERR_TOKEN_MALFORMED', 'not a compact JWS');
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    throw tokenError('ERR_TOKEN_MALFORMED', 'the header is not base64url JSON');
  }
  if (typeof header.alg === 'string' && header.alg.toLowerCase() === 'none') {
    throw tokenError('ERR_TOKEN_UNSIGNED', 'unsigned (alg none) tokens are refused');
  }
  if (!isAllowedAlgorithm(header.alg)) {
    throw tokenError(
      'ERR_TOKEN_ALG',
      `algorithm not allowed; expected one of ${ALLOWED_ALGORITHMS.join(', ')}`,
    );
  }
  if (typeof header.typ !== 'string' || !ACCESS_TOKEN_TYPES.has(header.typ.toLowerCase())) {
    throw tokenError('ERR_TOKEN_TYPE', 'expected typ at+jwt (RFC 9068 section 2.1)');
  }
  return header;
}

/** A jose failure of jwtVerify as our code. Key-set fetch failures are mapped in #getKey. */
function fromJose(err: unknown): unknown {
  if (err instanceof KmaasError) return err;
  if (err instanceof errors.JWTExpired) return tokenError('ERR_TOKEN_EXPIRED', 'expired');
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'iss')
      return tokenError('ERR_TOKEN_ISSUER', 'not from the configured issuer');
    if (err.claim === 'aud') return tokenError('ERR_TOKEN_AUDIENCE', 'not meant for this service');
    if (err.claim === 'nbf' || (err.claim === 'iat' && err.reason === 'check_failed')) {
      return tokenError('ERR_TOKEN_EXPIRED', 'not valid yet');
    }
    const why = err.reason === 'missing' ? 'lacks' : 'has an invalid';
    return tokenError('ERR_TOKEN_MALFORMED', `${why} ${err.claim} claim`);
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) {
    return tokenError('ERR_TOKEN_SIGNATURE', 'the signature does not verify');
  }
  if (err instanceof errors.JOSEAlgNotAllowed) {
    return tokenError('ERR_TOKEN_ALG', 'algorithm not allowed');
  }
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) {
    return tokenError('ERR_TOKEN_UNKNOWN_KEY', "signed with a key the issuer's JWKS does not hold");
  }
  if (
    err instanceof errors.JWSInvalid ||
    err instanceof errors.JWTInvalid ||
    err instanceof errors.JWKInvalid ||
    err instanceof errors.JOSENotSupported
  ) {
    return tokenError('ERR_TOKEN_MALFORMED', 'not a valid signed JWT');
  }
  return err;
}

/**
 * Verifies access tokens against one issuer.
 * @example
 *   const verifier = new AccessTokenVerifier({ issuer, audience: 'urn:kmaas:api', ... });
 *   const { subject, jkt } = await verifier.verify(token, 'acme');
 */
export class AccessTokenVerifier {
  readonly #settings: OidcSettings;
  readonly #now: () => number;
  readonly #cooldownMs: number;
  readonly #timeoutMs: number;
  #keys: RemoteKeySet | undefined;
  #discovering: Promise<RemoteKeySet> | undefined;
  #failed: { at: number; error: KmaasError } | undefined;

  constructor(settings: OidcSettings, opts: AccessTokenOptions = {}) {
    this.#settings = settings;
    this.#now = opts.now ?? Date.now;
    this.#cooldownMs = opts.jwksCooldownMs ?? 30_000;
    this.#timeoutMs = opts.fetchTimeoutMs ?? 2000;
    if (settings.jwksUri !== undefined) this.#keys = this.#remote(settings.jwksUri);
  }

  get settings(): Readonly<OidcSettings> {
    return this.#settings;
  }

  /**
   * Discover and fetch the JWKS now rather than on the first token; rejects with
   * ERR_ISSUER_UNAVAILABLE when the issuer cannot be reached (the caller logs it and goes on).
   */
  async prefetch(): Promise<void> {
    const keys = await this.#keySet();
    await keys.reload().catch(() => {
      throw unavailable('the JWKS cannot be fetched');
    });
  }

  /** Verify `token` for an evaluation of `tenant`; throws the ERR_TOKEN_* code of the failure. */
  verify(token: string | undefined, tenant: string): Promise<VerifiedToken> {
    return this.#verify(token, tenant);
  }

  /**
   * Verify `token` for a service that serves every tenant (the archive, demo/): the same checks
   * as verify, and the tenant is whatever the token's tenant claim says.
   */
  verifyAnyTenant(token: string | undefined): Promise<VerifiedToken> {
    return this.#verify(token, undefined);
  }

  async #verify(token: string | undefined, tenant: string | undefined): Promise<VerifiedToken> {
    if (token === undefined || token === '') {
      throw tokenError('ERR_TOKEN_MISSING', 'expected Authorization: DPoP <access token>');
    }
    checkTokenHeader(token);
    const s = this.#settings;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, (header, jws) => this.#getKey(header, jws), {
        issuer: s.issuer,
        audience: s.audience,
        algorithms: [...ALLOWED_ALGORITHMS],
        clockTolerance: s.clockSkewSeconds,
        currentDate: new Date(this.#now()),
        requiredClaims: ['sub', 'exp'],
      }));
    } catch (err) {
      throw fromJose(err);
    }
    if (typeof payload.sub !== 'string' || payload.sub === '' || payload.sub.length > 255) {
      throw tokenError('ERR_TOKEN_MALFORMED', 'sub must be a string of 1 to 255 characters');
    }
    const claimed = payload[s.tenantClaim];
    if (typeof claimed !== 'string') {
      throw new KmaasError('ERR_TOKEN_TENANT', `access token: no ${s.tenantClaim} claim`);
    }
    if (tenant !== undefined && claimed !== tenant) {
      throw new KmaasError('ERR_TOKEN_TENANT', 'access token: issued for another tenant', {
        tenant,
      });
    }
    const cnf = payload.cnf as { jkt?: unknown } | undefined;
    const jkt = typeof cnf === 'object' && cnf !== null ? cnf.jkt : undefined;
    if (typeof jkt !== 'string' || !THUMBPRINT.test(jkt)) {
      throw tokenError('ERR_TOKEN_NOT_BOUND', 'not bound to a DPoP key (cnf.jkt)');
    }
    return { subject: payload.sub, tenant: claimed, jkt, expiresAt: payload.exp! };
  }

  #remote(uri: string): RemoteKeySet {
    let url: URL;
    try {
      url = new URL(uri);
    } catch {
      throw new KmaasError('ERR_CONFIG', 'KMAAS_OIDC_JWKS_URI: expected an http(s) URL');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new KmaasError('ERR_CONFIG', 'KMAAS_OIDC_JWKS_URI: expected an http(s) URL');
    }
    return createRemoteJWKSet(url, {
      cooldownDuration: this.#cooldownMs,
      timeoutDuration: this.#timeoutMs,
    });
  }

  async #getKey(header: JWTHeaderParameters, jws: FlattenedJWSInput) {
    const keys = await this.#keySet();
    try {
      return await keys(header, jws);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey) throw err;
      if (err instanceof errors.JWKSMultipleMatchingKeys) throw err;
      throw unavailable(
        err instanceof errors.JWKSTimeout
          ? 'the JWKS fetch timed out'
          : 'the JWKS cannot be fetched',
      );
    }
  }

  #keySet(): Promise<RemoteKeySet> {
    if (this.#keys) return Promise.resolve(this.#keys);
    const failed = this.#failed;
    if (failed && this.#now() - failed.at < DISCOVERY_RETRY_MS) return Promise.reject(failed.error);
    this.#discovering ??= this.#discover().then(
      (keys) => {
        this.#keys = keys;
        this.#discovering = undefined;
        return keys;
      },
      (err: unknown) => {
        const error = err instanceof KmaasError ? err : unavailable('discovery failed');
        this.#failed = { at: this.#now(), error };
        this.#discovering = undefined;
        throw error;
      },
    );
    return this.#discovering;
  }

  /** OpenID Connect Discovery 1.0 section 4: the document must name this very issuer. */
  async #discover(): Promise<RemoteKeySet> {
    const issuer = this.#settings.issuer;
    const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    let doc: unknown;
    try {
      const res = await fetch(url, {
        headers: { accept: 'application/json' },
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      if (res.status !== 200) throw unavailable(`discovery answered HTTP ${res.status}`);
      doc = await res.json();
    } catch (err) {
      if (err instanceof KmaasError) throw err;
      throw unavailable('the discovery document cannot be fetched');
    }
    const { issuer: named, jwks_uri: jwksUri } = (doc ?? {}) as Record<string, unknown>;
    if (named !== issuer) throw unavailable('the discovery document names another issuer');
    if (typeof jwksUri !== 'string') throw unavailable('the discovery document has no jwks_uri');
    try {
      return this.#remote(jwksUri);
    } catch {
      throw unavailable('the discovery document has an invalid jwks_uri');
    }
  }
}
