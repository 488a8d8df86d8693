/**
 * A stand-in OIDC issuer for tests: keys minted here with jose, served over loopback HTTP (port
 * 0) as a discovery document and a JWKS, so that the verifiers' remote-JWKS path is the real
 * one. Mints DPoP-bound access tokens (RFC 9068 + RFC 9449 section 6.1) and DPoP proofs, honest
 * or tampered with. Not an OIDC provider (there is no login): that is idp/.
 */
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  SignJWT,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from 'jose';
import type { OidcSettings } from '../../shared/access-token.ts';
import { accessTokenHash, evaluateBindingHash, evaluatePath } from '../../shared/dpop-binding.ts';
import { createEvaluateProof, generateDpopKey } from '../../client/dpop.ts';

export const AUDIENCE = 'urn:kmaas:api';

export interface SigningKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

/** An end user: a DPoP key and an access token bound to it. */
export interface TestUser {
  sub: string;
  tenant: string;
  dpopKey: CryptoKeyPair;
  jkt: string;
  token: string;
}

export interface ProofOptions {
  tenant: string;
  version: number;
  blinded: readonly string[];
  /** Default http://coordinator.test + the evaluate path. */
  htu?: string;
  htm?: string;
  /** Seconds since the epoch; default now. */
  iat?: number;
  jti?: string;
  /** Replaces the ath claim. */
  ath?: string;
  /** Replaces the kmaas_bh claim. */
  bh?: string;
  /** Signs with this key (its public jwk in the header) instead of the user's. */
  key?: CryptoKeyPair;
  /** Replaces header members. */
  header?: Record<string, unknown>;
}

export async function signingKey(alg = 'ES256', kid = randomBytes(8).toString('hex')) {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicJwk } satisfies SigningKey;
}

export async function jwkOf(key: CryptoKeyPair): Promise<JWK> {
  const { kty, crv, x, y } = await exportJWK(key.publicKey);
  return { kty: kty!, crv: crv!, x: x!, y: y! };
}

export class TestIssuer {
  readonly keys: SigningKey[] = [];
  /** Times the JWKS was served. */
  jwksFetches = 0;
  /** Times the discovery document was served. */
  discoveryFetches = 0;
  #server: Server;
  #port = 0;

  private constructor(server: Server) {
    this.#server = server;
  }

  /** Start on 127.0.0.1, port 0, with one ES256 signing key. */
  static async start(): Promise<TestIssuer> {
    const server = createServer();
    const issuer = new TestIssuer(server);
    server.on('request', (req, res) => {
      const body =
        req.url === '/.well-known/openid-configuration'
          ? (issuer.discoveryFetches++, { issuer: issuer.issuer, jwks_uri: issuer.jwksUri })
          : req.url === '/jwks'
            ? (issuer.jwksFetches++, { keys: issuer.keys.map((k) => k.publicJwk) })
            : undefined;
      res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body ?? { error: 'not found' }));
    });
    // Neither the server nor its connections keep a finished test run alive.
    server.on('connection', (socket) => socket.unref());
    server.unref();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    issuer.#port = (server.address() as AddressInfo).port;
    await issuer.addKey();
    return issuer;
  }

  get issuer(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  get jwksUri(): string {
    return `${this.issuer}/jwks`;
  }

  /** Settings for nodes and coordinator; the JWKS is discovered unless `jwksUri` is given. */
  settings(overrides: Partial<OidcSettings> = {}): OidcSettings {
    return {
      issuer: this.issuer,
      audience: AUDIENCE,
      tenantClaim: 'tenant',
      clockSkewSeconds: 30,
      dpopMaxAgeSeconds: 60,
      ...overrides,
    };
  }

  /** Environment of a node or coordinator process that trusts this issuer. */
  env(): Record<string, string> {
    return { KMAAS_OIDC_ISSUER: this.issuer, KMAAS_OIDC_AUDIENCE: AUDIENCE };
  }

  /** Rotate a new key into the JWKS (it becomes the signing key of `token` by default). */
  async addKey(alg = 'ES256'): Promise<SigningKey> {
    const key = await signingKey(alg);
    this.keys.push(key);
    return key;
  }

  /** An access token; claims and header can be overridden (undefined removes a claim). */
  async token(
    claims: JWTPayload & { tenant?: string; jkt?: string },
    opts: { key?: SigningKey; header?: Record<string, unknown> } = {},
  ): Promise<string> {
    const key = opts.key ?? this.keys[this.keys.length - 1]!;
    const now = Math.floor(Date.now() / 1000);
    const { jkt, ...rest } = claims;
    const payload: JWTPayload = {
      iss: this.issuer,
      aud: AUDIENCE,
      sub: 'user-1',
      iat: now,
      exp: now + 600,
      ...(jkt === undefined ? {} : { cnf: { jkt } }),
      ...rest,
    };
    for (const [k, v] of Object.entries(payload)) if (v === undefined) delete payload[k];
    return new SignJWT(payload)
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt', ...opts.header })
      .sign(key.privateKey);
  }

  /** A user of `tenant` with a fresh DPoP key and a token bound to it. */
  async user(tenant: string, sub = `user-${randomBytes(4).toString('hex')}`): Promise<TestUser> {
    const dpopKey = await generateDpopKey();
    const jkt = await calculateJwkThumbprint(await jwkOf(dpopKey), 'sha256');
    const token = await this.token({ sub, tenant, jkt });
    return { sub, tenant, dpopKey, jkt, token };
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

let shared: Promise<TestIssuer> | undefined;

/** One issuer for a whole test run (tests that rotate keys start their own). */
export function sharedIssuer(): Promise<TestIssuer> {
  return (shared ??= TestIssuer.start());
}

export const COORDINATOR_URL = 'http://coordinator.test';

/** The proof the SDK makes (client/dpop.ts) for one evaluate request. */
export function honestProof(
  user: TestUser,
  req: { tenant: string; version: number; blinded: readonly string[] },
): Promise<string> {
  return createEvaluateProof({
    dpopKey: user.dpopKey,
    accessToken: user.token,
    url: COORDINATOR_URL + evaluatePath(req.tenant, req.version),
    ...req,
  });
}

/** The SDK's proof for a request to `url` (the coordinator's real address). */
export function honestUserProof(
  user: TestUser,
  url: string,
  req: { tenant: string; version: number; blinded: readonly string[] },
): Promise<string> {
  return createEvaluateProof({ dpopKey: user.dpopKey, accessToken: user.token, url, ...req });
}

/** A DPoP proof built claim by claim, so that tests can get any of them wrong. */
export async function proof(user: TestUser, opts: ProofOptions): Promise<string> {
  const key = opts.key ?? user.dpopKey;
  return new SignJWT({
    htm: opts.htm ?? 'POST',
    htu: opts.htu ?? COORDINATOR_URL + evaluatePath(opts.tenant, opts.version),
    ath: opts.ath ?? accessTokenHash(user.token),
    kmaas_bh: opts.bh ?? evaluateBindingHash(opts.tenant, opts.version, opts.blinded),
  })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await jwkOf(key), ...opts.header })
    .setJti(opts.jti ?? randomBytes(16).toString('base64url'))
    .setIssuedAt(opts.iat ?? Math.floor(Date.now() / 1000))
    .sign(key.privateKey);
}

/** The `auth` of a node evaluate request: the user's token and an honest proof. */
export async function nodeAuth(
  user: TestUser,
  req: { tenant: string; version: number; blinded: readonly string[] },
): Promise<{ token: string; dpop: string }> {
  return { token: user.token, dpop: await honestProof(user, req) };
}

/**
 * A DPoP proof of a request to a resource server (RFC 9449 section 4.2, no kmaas_bh), e.g. the
 * archive's API; any claim can be overridden.
 */
export async function resourceProof(
  user: TestUser,
  htm: string,
  htu: string,
  opts: { iat?: number; jti?: string; ath?: string; key?: CryptoKeyPair } = {},
): Promise<string> {
  const key = opts.key ?? user.dpopKey;
  return new SignJWT({ htm, htu, ath: opts.ath ?? accessTokenHash(user.token) })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await jwkOf(key) })
    .setJti(opts.jti ?? randomBytes(16).toString('base64url'))
    .setIssuedAt(opts.iat ?? Math.floor(Date.now() / 1000))
    .sign(key.privateKey);
}
