/**
 * The client's DPoP key and proofs (RFC 9449). Browser-safe: WebCrypto through jose, and
 * shared/dpop-binding.ts for what a proof covers.
 *
 * The key is made non-extractable (WebCrypto `extractable: false`), so that script running in
 * the page later can sign with it but never copy it away. The identity provider binds the access
 * token to its thumbprint (cnf.jkt); every evaluate request then carries a fresh proof:
 *
 *   header  { typ: 'dpop+jwt', alg: 'ES256', jwk: <public key> }
 *   claims  { jti, htm: 'POST', htu, iat, ath: b64url(SHA-256(token)), kmaas_bh }
 *
 * where kmaas_bh hashes the tenant, key version and blinded elements of that request, so that
 * nobody relaying it (the coordinator) can reuse the proof for other elements.
 *
 * @example
 *   const dpopKey = await generateDpopKey();
 *   // log in at the identity provider with dpopKey (DPoP-bound token), then:
 *   const client = new KmaasClient({ baseUrl, pins, auth: { accessToken, dpopKey } });
 */
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { randomBytes } from '@noble/hashes/utils.js';
import { accessTokenHash, evaluateBindingHash } from '../shared/dpop-binding.ts';
import { toB64 } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';

/** A fresh ES256 key pair whose private key cannot be exported. */
export async function generateDpopKey(): Promise<CryptoKeyPair> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: false });
  return { privateKey, publicKey };
}

const publicJwks = new WeakMap<CryptoKey, Promise<JWK>>();

function publicJwk(key: CryptoKeyPair): Promise<JWK> {
  let jwk = publicJwks.get(key.publicKey);
  if (!jwk) {
    // Public keys are always exportable in WebCrypto, whatever `extractable` said.
    jwk = exportJWK(key.publicKey).then(({ kty, crv, x, y, n, e }) =>
      Object.fromEntries(Object.entries({ kty, crv, x, y, n, e }).filter(([, v]) => v)),
    );
    publicJwks.set(key.publicKey, jwk);
  }
  return jwk;
}

/** The JWS algorithm of a DPoP key: ES256, ES384 or EdDSA. */
function algorithmOf(key: CryptoKey): string {
  const { name, namedCurve } = key.algorithm as EcKeyAlgorithm;
  if (name === 'ECDSA' && namedCurve === 'P-256') return 'ES256';
  if (name === 'ECDSA' && namedCurve === 'P-384') return 'ES384';
  if (name === 'Ed25519') return 'EdDSA';
  throw new KmaasError('ERR_CONFIG', 'dpopKey: expected an ECDSA P-256, P-384 or Ed25519 key', {
    field: 'dpopKey',
  });
}

/**
 * The key's RFC 7638 thumbprint (SHA-256, base64url): the `jkt` that the identity provider puts
 * in the token's cnf claim (RFC 9449 section 6.1).
 */
export async function dpopThumbprint(key: CryptoKeyPair): Promise<string> {
  return calculateJwkThumbprint(await publicJwk(key), 'sha256');
}

export interface EvaluateProofRequest {
  dpopKey: CryptoKeyPair;
  accessToken: string;
  /** The full URL the request goes to. */
  url: string;
  tenant: string;
  version: number;
  /** The blinded elements exactly as sent (base64url). */
  blinded: readonly string[];
  /** Seconds since the epoch; default now. */
  iat?: number;
}

/** The DPoP proof of one evaluate request (RFC 9449 section 4.2, plus kmaas_bh). */
export async function createEvaluateProof(req: EvaluateProofRequest): Promise<string> {
  const alg = algorithmOf(req.dpopKey.privateKey);
  const htu = new URL(req.url);
  // Section 4.2: htu without query and fragment.
  htu.search = '';
  htu.hash = '';
  return new SignJWT({
    htm: 'POST',
    htu: htu.href,
    ath: accessTokenHash(req.accessToken),
    kmaas_bh: evaluateBindingHash(req.tenant, req.version, req.blinded),
  })
    .setProtectedHeader({ alg, typ: 'dpop+jwt', jwk: await publicJwk(req.dpopKey) })
    .setJti(toB64(randomBytes(16)))
    .setIssuedAt(req.iat ?? Math.floor(Date.now() / 1000))
    .sign(req.dpopKey.privateKey);
}

export interface DpopProofRequest {
  /** The HTTP method of the request, e.g. 'GET'. */
  htm: string;
  /** The URL the request goes to; query and fragment are dropped (section 4.2). */
  htu: string;
  /** The access token the request carries: adds `ath` (section 4.2). */
  accessToken?: string;
  /** A nonce the server handed out in a DPoP-Nonce header (section 8). */
  nonce?: string;
}

/**
 * A DPoP proof for any request (RFC 9449 section 4.2), so that an app can call its own
 * DPoP-protected API with the key its access token is bound to. The KMaaS evaluate requests use
 * createEvaluateProof instead, which also covers the blinded elements.
 *
 * @example
 *   const proof = await createDpopProof(session.dpopKey, { htm: 'GET', htu, accessToken });
 *   fetch(htu, { headers: { authorization: `DPoP ${accessToken}`, dpop: proof } });
 */
export async function createDpopProof(
  dpopKey: CryptoKeyPair,
  req: DpopProofRequest,
): Promise<string> {
  const alg = algorithmOf(dpopKey.privateKey);
  const htu = new URL(req.htu);
  htu.search = '';
  htu.hash = '';
  return new SignJWT({
    htm: req.htm,
    htu: htu.href,
    ...(req.accessToken === undefined ? {} : { ath: accessTokenHash(req.accessToken) }),
    ...(req.nonce === undefined ? {} : { nonce: req.nonce }),
  })
    .setProtectedHeader({ alg, typ: 'dpop+jwt', jwk: await publicJwk(dpopKey) })
    .setJti(toB64(randomBytes(16)))
    .setIssuedAt(Math.floor(Date.now() / 1000))
    .sign(dpopKey.privateKey);
}
