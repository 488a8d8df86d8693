/**
 * DPoP proofs of evaluate requests (RFC 9449 section 4), checked by every node (with a replay
 * cache) and by the coordinator (without: the nodes own replay, section 11.1). Node-side.
 *
 *   header  { typ: 'dpop+jwt', alg, jwk }      (section 4.2; jwk public, never private)
 *   claims  { jti, htm: 'POST', htu, iat, ath, kmaas_bh }
 *
 * Checks in the order of section 4.3, each failure with its own code: well-formed header and
 * signature by the embedded key (steps 2-8: ERR_DPOP_INVALID), that key is the one the access
 * token is bound to (section 6.1: ERR_DPOP_KEY_MISMATCH), iat within max age and skew (step 11:
 * ERR_DPOP_STALE), ath is the token's hash (step 12: ERR_DPOP_ATH), htm and the PATH of htu
 * (steps 9-10: ERR_DPOP_TARGET; departure from the RFC: nodes cannot know the coordinator's
 * public origin or the path prefix it may be served under, so they check that the path ends with
 * the evaluate path, and kmaas_bh and ath bind the proof to the request), kmaas_bh is the hash
 * of this request's tenant, version and blinded elements (shared/dpop-binding.ts:
 * ERR_DPOP_BINDING), and last, once everything else holds, the jti is new (ERR_DPOP_REPLAY).
 *
 * verifyResource checks the proof of any other request (the archive's API, demo/) as section
 * 4.3 says, with the same codes: htm and the whole htu must match, and there is no kmaas_bh.
 */
import {
  calculateJwkThumbprint,
  decodeProtectedHeader,
  EmbeddedJWK,
  jwtVerify,
  type JWK,
  type JWTPayload,
  type ProtectedHeaderParameters,
} from 'jose';
import { ALLOWED_ALGORITHMS, isAllowedAlgorithm } from './access-token.ts';
import { accessTokenHash, evaluateBindingHash, evaluatePath } from './dpop-binding.ts';
import { KmaasError, type ErrorCode } from './errors.ts';
import type { JtiCache } from './jti-cache.ts';

/** RFC 9449 section 4.2: jti has enough entropy; 16 characters is 96 bits of base64url. */
export const MIN_JTI_LENGTH = 16;

// The scheme name is case-insensitive (RFC 7235 section 2.1); RFC 9449 section 7.1.
const DPOP_SCHEME = /^DPoP +([\x21-\x7e]{1,8192}) *$/i;

/** The access token of an `Authorization: DPoP <token>` header, or undefined. */
export function dpopToken(authorization: string | undefined): string | undefined {
  const m = authorization === undefined ? null : DPOP_SCHEME.exec(authorization);
  return m ? m[1] : undefined;
}
const MAX_JTI_LENGTH = 256;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

export interface DpopOptions {
  maxAgeSeconds: number;
  clockSkewSeconds: number;
  /** Where seen jtis are kept; absent: replay is not checked here (the coordinator). */
  replay?: JtiCache;
  /** The clock, in ms since the epoch. Default Date.now. */
  now?: () => number;
}

/** What the proof must cover: the access token and the request it came with. */
export interface DpopRequest {
  proof: string | undefined;
  token: string;
  /** The access token's cnf.jkt. */
  jkt: string;
  tenant: string;
  version: number;
  blinded: readonly string[];
}

function proofError(code: ErrorCode, msg: string): KmaasError {
  return new KmaasError(code, `DPoP proof: ${msg}`);
}

function checkHeader(proof: string): JWK {
  if (!COMPACT_JWS.test(proof)) throw proofError('ERR_DPOP_INVALID', 'not a compact JWS');
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(proof);
  } catch {
    throw proofError('ERR_DPOP_INVALID', 'the header is not base64url JSON');
  }
  if (header.typ !== 'dpop+jwt') throw proofError('ERR_DPOP_INVALID', 'expected typ dpop+jwt');
  if (!isAllowedAlgorithm(header.alg)) {
    throw proofError(
      'ERR_DPOP_INVALID',
      `algorithm not allowed; expected one of ${ALLOWED_ALGORITHMS.join(', ')}`,
    );
  }
  const jwk = header.jwk;
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) {
    throw proofError('ERR_DPOP_INVALID', 'the header carries no jwk');
  }
  if (PRIVATE_MEMBERS.some((m) => Object.hasOwn(jwk, m))) {
    throw proofError('ERR_DPOP_INVALID', 'the jwk header must be a public key');
  }
  return jwk;
}

function htuPath(htu: string): string | undefined {
  try {
    const url = new URL(htu);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.pathname : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What a proof of any other request must cover (a resource server such as the archive, demo/):
 * RFC 9449 section 4.3 as written, htm and the whole htu compared (query and fragment ignored,
 * step 9), and no kmaas_bh.
 */
export interface DpopResourceRequest {
  proof: string | undefined;
  token: string;
  /** The access token's cnf.jkt. */
  jkt: string;
  /** The request's method, e.g. 'GET'. */
  htm: string;
  /** The request's URL as the client addressed it (the service's public origin + path). */
  htu: string;
}

/** scheme://host:port/path of an http(s) URL: what section 4.3 step 9 compares. */
function targetOf(url: string): string | undefined {
  try {
    const u = new URL(url);
    return u.protocol === 'https:' || u.protocol === 'http:'
      ? `${u.protocol}//${u.host}${u.pathname}`
      : undefined;
  } catch {
    return undefined;
  }
}

export class DpopVerifier {
  readonly #opts: DpopOptions;
  readonly #now: () => number;

  constructor(opts: DpopOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
  }

  /** Check the proof of one evaluate request; resolves with its jti, or throws its ERR_DPOP_*. */
  async verify(req: DpopRequest): Promise<{ jti: string; iat: number }> {
    const payload = await this.#check(req.proof, req.token, req.jkt, ['kmaas_bh']);
    // Section 4.3 steps 9 and 10 (the path only; see the module header).
    if (payload.htm !== 'POST') {
      throw proofError('ERR_DPOP_TARGET', 'made for another method (htm)');
    }
    if (!htuPath(payload.htu as string)?.endsWith(evaluatePath(req.tenant, req.version))) {
      throw proofError('ERR_DPOP_TARGET', 'made for another URL (htu)');
    }
    if (payload.kmaas_bh !== evaluateBindingHash(req.tenant, req.version, req.blinded)) {
      throw proofError('ERR_DPOP_BINDING', 'made for other blinded elements (kmaas_bh)');
    }
    return this.#remember(payload);
  }

  /** Check the proof of a request to a resource server; the same codes as verify. */
  async verifyResource(req: DpopResourceRequest): Promise<{ jti: string; iat: number }> {
    const payload = await this.#check(req.proof, req.token, req.jkt, []);
    // Section 4.3 steps 9 and 10, whole URL.
    if (payload.htm !== req.htm) {
      throw proofError('ERR_DPOP_TARGET', 'made for another method (htm)');
    }
    const want = targetOf(req.htu);
    if (want === undefined || targetOf(payload.htu as string) !== want) {
      throw proofError('ERR_DPOP_TARGET', 'made for another URL (htu)');
    }
    return this.#remember(payload);
  }

  /**
   * Steps 2-8, the key binding, claims present, freshness (step 11) and ath (step 12): what every
   * proof must pass whatever request it came with.
   */
  async #check(
    proof: string | undefined,
    token: string,
    jkt: string,
    extraClaims: readonly string[],
  ): Promise<JWTPayload> {
    if (proof === undefined || proof === '') {
      throw proofError('ERR_DPOP_MISSING', 'expected a DPoP header');
    }
    const jwk = checkHeader(proof);
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(proof, EmbeddedJWK, {
        typ: 'dpop+jwt',
        algorithms: [...ALLOWED_ALGORITHMS],
      }));
    } catch {
      throw proofError('ERR_DPOP_INVALID', 'not a valid JWS signed by its embedded jwk');
    }
    let thumbprint: string;
    try {
      thumbprint = await calculateJwkThumbprint(jwk, 'sha256');
    } catch {
      throw proofError('ERR_DPOP_INVALID', 'the jwk header is not a valid key');
    }
    if (thumbprint !== jkt) {
      throw proofError('ERR_DPOP_KEY_MISMATCH', 'signed by another key than the token is bound to');
    }

    const { jti, iat, ath } = payload;
    if (typeof jti !== 'string' || jti.length < MIN_JTI_LENGTH || jti.length > MAX_JTI_LENGTH) {
      throw proofError('ERR_DPOP_INVALID', `jti must be ${MIN_JTI_LENGTH}-${MAX_JTI_LENGTH} chars`);
    }
    for (const name of ['htm', 'htu', 'ath', ...extraClaims]) {
      if (typeof payload[name] !== 'string') {
        throw proofError('ERR_DPOP_INVALID', `lacks the ${name} claim`);
      }
    }
    if (typeof iat !== 'number' || !Number.isFinite(iat)) {
      throw proofError('ERR_DPOP_INVALID', 'lacks the iat claim');
    }

    // Section 4.3 step 11 and section 11.1: fresh, within the max age and the clock skew.
    const { maxAgeSeconds, clockSkewSeconds } = this.#opts;
    const now = this.#now() / 1000;
    if (iat > now + clockSkewSeconds) throw proofError('ERR_DPOP_STALE', 'iat is in the future');
    if (iat < now - maxAgeSeconds - clockSkewSeconds) {
      throw proofError('ERR_DPOP_STALE', `older than ${maxAgeSeconds} s`);
    }
    // Section 4.3 step 12.
    if (ath !== accessTokenHash(token)) {
      throw proofError('ERR_DPOP_ATH', 'made for another access token (ath)');
    }
    return payload;
  }

  /** Section 11.1: last, so that a proof refused for anything else is not remembered. */
  #remember(payload: JWTPayload): { jti: string; iat: number } {
    const jti = payload.jti as string;
    const iat = payload.iat as number;
    const { maxAgeSeconds, clockSkewSeconds } = this.#opts;
    this.#opts.replay?.remember(jti, (iat + maxAgeSeconds + clockSkewSeconds) * 1000);
    return { jti, iat };
  }
}
