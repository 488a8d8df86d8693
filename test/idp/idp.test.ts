/**
 * The local identity provider as a real process (idp/main.ts) and devLogin against it: discovery
 * and JWKS, DPoP-bound JWT access tokens (RFC 9449, RFC 9068) checked with jose against the
 * served JWKS and with a thumbprint computed here from node:crypto (RFC 7638), refusals, and
 * signing keys that survive a restart.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRemoteJWKSet, exportJWK, jwtVerify, type JWK } from 'jose';
import { ServiceProcess, ROOT } from '../../scripts/lib/child.ts';
import { KmaasError } from '../../shared/errors.ts';
import {
  type AuthorizationResult as Authorization,
  authorize,
  createDpopProof,
  devLogin,
  discover,
  generateDpopKeyPair,
} from '../../idp/dev-login.ts';

const USERS = [
  { username: 'alice', password: 'alice-test-password', tenant: 'acme' },
  { username: 'bob', password: 'bob-test-password', tenant: 'globex' },
];

/** RFC 7638 section 3: SHA-256 over the required members, in lexicographic order, no spaces. */
function thumbprint(jwk: JWK): string {
  const canonical = `{"crv":"${jwk.crv}","kty":"${jwk.kty}","x":"${jwk.x}","y":"${jwk.y}"}`;
  return createHash('sha256').update(canonical, 'utf8').digest('base64url');
}

async function expectCode(p: Promise<unknown>, code: string): Promise<KmaasError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).to.be.instanceOf(KmaasError);
  expect((err as KmaasError).code).to.equal(code);
  return err as KmaasError;
}

describe('local identity provider (idp/main.ts)', () => {
  let dir: string;
  let idp: ServiceProcess;
  let issuer: string;

  const logLines = () =>
    readFileSync(join(dir, 'idp.log'), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  /** The launcher writes the log file through a stream: wait (a little) for a line to land. */
  async function waitForLog(match: (line: Record<string, unknown>) => boolean) {
    for (let i = 0; i < 100 && !logLines().some(match); i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return logLines().filter(match);
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-idp-'));
    writeFileSync(join(dir, 'users.json'), JSON.stringify(USERS), { mode: 0o600 });
    idp = new ServiceProcess({
      name: 'idp',
      entry: join(ROOT, 'idp', 'main.ts'),
      logFile: join(dir, 'idp.log'),
      env: {
        KMAAS_IDP_PORT: '0',
        KMAAS_IDP_USERS_FILE: join(dir, 'users.json'),
        KMAAS_IDP_KEYS_FILE: join(dir, 'keys.json'),
        KMAAS_IDP_REDIRECT_URIS: 'http://127.0.0.1/callback,http://127.0.0.1:5173/callback',
        LOG_LEVEL: 'info',
      },
    });
    const port = await idp.start();
    issuer = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    await idp?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('logs one `listening` line with its port and issuer', async () => {
    const listening = await waitForLog((l) => l.msg === 'listening');
    expect(listening).to.have.length(1);
    expect(listening[0]).to.include({ port: idp.port, issuer });
  });

  it('serves discovery and a JWKS of public ES256 keys only', async () => {
    const meta = await discover(issuer);
    expect(meta.issuer).to.equal(issuer);
    expect(meta.token_endpoint).to.equal(`${issuer}/token`);
    const raw = (await (await fetch(`${issuer}/.well-known/openid-configuration`)).json()) as {
      code_challenge_methods_supported: string[];
      dpop_signing_alg_values_supported: string[];
    };
    expect(raw.code_challenge_methods_supported).to.deep.equal(['S256']);
    expect(raw.dpop_signing_alg_values_supported).to.include('ES256');
    const jwks = (await (await fetch(meta.jwks_uri)).json()) as { keys: JWK[] };
    expect(jwks.keys).to.have.length(1);
    const [key] = jwks.keys;
    expect(key).to.include({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
    expect(key).to.not.have.property('d');
    expect(key!.kid).to.equal(thumbprint(key!));
  });

  for (const user of USERS) {
    it(`devLogin(${user.username}) gives a DPoP-bound JWT for tenant ${user.tenant}`, async () => {
      const dpopKey = await generateDpopKeyPair();
      expect(dpopKey.privateKey.extractable).to.equal(false);
      const before = Math.floor(Date.now() / 1000);
      const login = await devLogin({ issuer, ...user, dpopKey });
      const meta = await discover(issuer);
      const { payload, protectedHeader } = await jwtVerify(
        login.accessToken,
        createRemoteJWKSet(new URL(meta.jwks_uri)),
        { issuer, audience: 'urn:kmaas:api', typ: 'at+jwt', algorithms: ['ES256'] },
      );
      expect(protectedHeader.kid).to.be.a('string');
      expect(payload).to.include({
        sub: user.username,
        tenant: user.tenant,
        client_id: 'kmaas-dev',
      });
      expect(payload.exp! - payload.iat!).to.equal(600);
      expect(payload.iat).to.be.within(before - 5, before + 60);
      const jkt = thumbprint(await exportJWK(dpopKey.publicKey));
      expect(payload.cnf).to.deep.equal({ jkt });
      expect(login).to.include({ subject: user.username, tenant: user.tenant, dpopKey });
      expect(login.expiresAt).to.equal(payload.exp! * 1000);
    });
  }

  it('generates a non-extractable DPoP key when none is given', async () => {
    const login = await devLogin({ issuer, ...USERS[0]! });
    expect(login.dpopKey.privateKey.extractable).to.equal(false);
    expect(login.dpopKey.privateKey.algorithm.name).to.equal('ECDSA');
  });

  describe('the token endpoint', () => {
    const tokenRequest = (auth: Authorization, headers: Record<string, string> = {}) =>
      fetch(auth.metadata.token_endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: new URLSearchParams({
          grant_type: 'authorization_code',
          code: auth.code,
          redirect_uri: auth.redirectUri,
          code_verifier: auth.codeVerifier,
          client_id: auth.clientId,
          resource: auth.resource,
        }),
      });

    /** A token request with a proof of `key`, answering the provider's nonce challenge. */
    async function redeemWithProof(auth: Authorization, key: CryptoKeyPair) {
      const htu = auth.metadata.token_endpoint;
      const first = await tokenRequest(auth, {
        dpop: await createDpopProof({ key, htm: 'POST', htu }),
      });
      expect(first.status).to.equal(400);
      expect(((await first.json()) as { error: string }).error).to.equal('use_dpop_nonce');
      const nonce = first.headers.get('dpop-nonce');
      expect(nonce).to.be.a('string');
      return tokenRequest(auth, {
        dpop: await createDpopProof({ key, htm: 'POST', htu, nonce: nonce! }),
      });
    }

    it('answers token_type DPoP, 600 s, after a DPoP-Nonce challenge (RFC 9449 section 8)', async () => {
      const dpopKey = await generateDpopKeyPair();
      const auth = await authorize({ issuer, ...USERS[1]!, dpopKey });
      const res = await redeemWithProof(auth, dpopKey);
      expect(res.status).to.equal(200);
      const body = (await res.json()) as Record<string, unknown>;
      expect(body).to.include({ token_type: 'DPoP', expires_in: 600, scope: 'kmaas:evaluate' });
    });

    it('refuses a token request without a DPoP proof; the same request with one passes', async () => {
      const dpopKey = await generateDpopKeyPair();
      const auth = await authorize({ issuer, ...USERS[0]!, dpopKey });
      const res = await tokenRequest(auth);
      expect(res.status).to.equal(400);
      expect(((await res.json()) as { error: string }).error).to.equal('invalid_grant');
      const refused = await waitForLog((l) => l.detail === 'DPoP proof JWT not provided');
      expect(refused).to.have.length(1);
      expect((await redeemWithProof(auth, dpopKey)).status).to.equal(200);
    });

    it('refuses a DPoP proof made with another key than the code is bound to (dpop_jkt)', async () => {
      const auth = await authorize({ issuer, ...USERS[0]!, dpopKey: await generateDpopKeyPair() });
      const res = await redeemWithProof(auth, await generateDpopKeyPair());
      expect(res.status).to.equal(400);
      expect(((await res.json()) as { error: string }).error).to.equal('invalid_grant');
    });
  });

  describe('refusals keep the process up', () => {
    it('a wrong password or an unknown user is ERR_LOGIN_FAILED (401 page with the form)', async () => {
      const err = await expectCode(
        devLogin({ issuer, username: 'alice', password: 'not-the-password' }),
        'ERR_LOGIN_FAILED',
      );
      expect(err.message).to.not.contain('not-the-password');
      await expectCode(
        devLogin({ issuer, username: 'mallory', password: 'whatever-password' }),
        'ERR_LOGIN_FAILED',
      );
      expect(idp.running).to.equal(true);
      expect((await devLogin({ issuer, ...USERS[0]! })).subject).to.equal('alice');
    });

    it('an oversized login form is refused with 413', async () => {
      const res = await fetch(`${issuer}/interaction/abc/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `username=alice&password=${'x'.repeat(10_000)}`,
      });
      expect(res.status).to.equal(413);
      expect(idp.running).to.equal(true);
    });

    it('an interaction without its cookie gets a clear error page', async () => {
      const res = await fetch(`${issuer}/interaction/abc`);
      expect(res.status).to.equal(400);
      expect(await res.text()).to.contain('Sign-in expired');
    });

    it('an unregistered redirect URI ends in ERR_IDP_PROTOCOL, not a redirect', async () => {
      await expectCode(
        devLogin({ issuer, ...USERS[0]!, redirectUri: 'http://127.0.0.1:9/elsewhere' }),
        'ERR_IDP_PROTOCOL',
      );
    });

    it('another resource than urn:kmaas:api is refused (invalid_target)', async () => {
      const err = await expectCode(
        devLogin({ issuer, ...USERS[0]!, resource: 'urn:other:api' }),
        'ERR_IDP_PROTOCOL',
      );
      expect(err.details).to.include({ error: 'invalid_target' });
    });
  });

  describe('restart', () => {
    it('keeps its signing keys (mode 600) across a restart: the same kid is served', async () => {
      expect(statSync(join(dir, 'keys.json')).mode & 0o777).to.equal(0o600);
      const meta = await discover(issuer);
      const kids = async (uri: string) =>
        ((await (await fetch(uri)).json()) as { keys: JWK[] }).keys.map((k) => k.kid);
      const before = await kids(meta.jwks_uri);
      await idp.stop();
      const port = await idp.start();
      const after = await kids(`http://127.0.0.1:${port}/jwks`);
      expect(after).to.deep.equal(before);
    });
  });
});
