/**
 * Every attack on the end-user authentication of an evaluation (DESIGN.md section 4,
 * shared/evaluation-auth.ts): access tokens (RFC 9068) and DPoP proofs (RFC 9449), each refused
 * with its own code. Keys are minted here with jose; the issuer's JWKS is served over loopback
 * HTTP (test/helpers/oidc.ts) so that discovery and the remote key set are the real ones.
 */
import { expect } from 'chai';
import { generateKeyPair, SignJWT } from 'jose';
import { EvaluationAuth } from '../../shared/evaluation-auth.ts';
import { evaluateBindingHash, evaluatePath } from '../../shared/dpop-binding.ts';
import { KmaasError, type ErrorCode } from '../../shared/errors.ts';
import { JtiCache } from '../../shared/jti-cache.ts';
import { generateDpopKey } from '../../client/dpop.ts';
import {
  honestProof,
  jwkOf,
  proof,
  signingKey,
  TestIssuer,
  type TestUser,
} from '../helpers/oidc.ts';

const TENANT = 'acme';
const VERSION = 1;
const BLINDED = ['AAAA', 'BBBB', 'CCCC'];
const TARGET = { tenant: TENANT, version: VERSION, blinded: BLINDED };

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'ok';
  } catch (err) {
    if (err instanceof KmaasError) return err.code;
    throw err;
  }
}

const b64json = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

describe('end-user authentication of evaluations (access token + DPoP)', () => {
  let issuer: TestIssuer;
  let auth: EvaluationAuth;
  let user: TestUser;

  before(async () => {
    issuer = await TestIssuer.start();
  });
  after(() => issuer.close());

  beforeEach(async () => {
    auth = new EvaluationAuth(issuer.settings(), { jwksCooldownMs: 0 });
    user = await issuer.user(TENANT);
  });

  it('accepts the SDK proof with its token, and returns the verified sub', async () => {
    const dpop = await honestProof(user, TARGET);
    const verified = await auth.verify({ token: user.token, dpop }, TARGET);
    expect(verified).to.include({ subject: user.sub, tenant: TENANT, jkt: user.jkt });
  });

  it('discovers the JWKS from the issuer, or uses the configured one', async () => {
    const before = issuer.discoveryFetches;
    await auth.verify({ token: user.token, dpop: await honestProof(user, TARGET) }, TARGET);
    expect(issuer.discoveryFetches).to.equal(before + 1);
    const direct = new EvaluationAuth(issuer.settings({ jwksUri: issuer.jwksUri }));
    await direct.verify({ token: user.token, dpop: await honestProof(user, TARGET) }, TARGET);
    expect(issuer.discoveryFetches).to.equal(before + 1);
  });

  it('accepts an htu under a path prefix (the coordinator behind a proxy)', async () => {
    const htu = `https://example.com/kmaas${evaluatePath(TENANT, VERSION)}`;
    const dpop = await proof(user, { ...TARGET, htu });
    expect(await codeOf(auth.verify({ token: user.token, dpop }, TARGET))).to.equal('ok');
  });

  type Case = [
    name: string,
    code: ErrorCode,
    make: () => Promise<{ token?: string; dpop?: string }>,
  ];
  const cases: Case[] = [
    ['no token', 'ERR_TOKEN_MISSING', async () => ({ dpop: await honestProof(user, TARGET) })],
    [
      'a token that is not a JWT',
      'ERR_TOKEN_MALFORMED',
      () => Promise.resolve({ token: 'abc.def' }),
    ],
    [
      'alg none',
      'ERR_TOKEN_UNSIGNED',
      () => {
        const header = b64json({ alg: 'none', typ: 'at+jwt' });
        const payload = b64json({
          iss: issuer.issuer,
          aud: 'urn:kmaas:api',
          sub: 'x',
          exp: now() + 60,
          tenant: TENANT,
          cnf: { jkt: user.jkt },
        });
        return Promise.resolve({ token: `${header}.${payload}.` });
      },
    ],
    [
      'HS256 signed with the public key as secret',
      'ERR_TOKEN_ALG',
      async () => {
        const secret = new TextEncoder().encode(JSON.stringify(issuer.keys[0]!.publicJwk));
        const token = await new SignJWT({
          iss: issuer.issuer,
          aud: 'urn:kmaas:api',
          sub: 'x',
          exp: now() + 60,
          tenant: TENANT,
          cnf: { jkt: user.jkt },
        })
          .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: issuer.keys[0]!.kid })
          .sign(secret);
        return { token };
      },
    ],
    [
      'an ID token (typ JWT) instead of an access token',
      'ERR_TOKEN_TYPE',
      async () => ({ token: await issuer.token({ tenant: TENANT }, { header: { typ: 'JWT' } }) }),
    ],
    [
      'signed by a key the issuer never published',
      'ERR_TOKEN_UNKNOWN_KEY',
      async () => ({
        token: await issuer.token({ tenant: TENANT, jkt: user.jkt }, { key: await signingKey() }),
      }),
    ],
    [
      'signed by another key under a published kid',
      'ERR_TOKEN_SIGNATURE',
      async () => {
        const forged = { ...(await signingKey()), kid: issuer.keys[0]!.kid };
        return { token: await issuer.token({ tenant: TENANT, jkt: user.jkt }, { key: forged }) };
      },
    ],
    [
      'expired',
      'ERR_TOKEN_EXPIRED',
      async () => ({
        token: await issuer.token({
          tenant: TENANT,
          jkt: user.jkt,
          iat: now() - 700,
          exp: now() - 100,
        }),
      }),
    ],
    [
      'from another issuer',
      'ERR_TOKEN_ISSUER',
      async () => ({
        token: await issuer.token({ tenant: TENANT, jkt: user.jkt, iss: 'https://evil.test' }),
      }),
    ],
    [
      'for another audience',
      'ERR_TOKEN_AUDIENCE',
      async () => ({ token: await issuer.token({ tenant: TENANT, jkt: user.jkt, aud: 'other' }) }),
    ],
    [
      'for tenant A used for tenant B',
      'ERR_TOKEN_TENANT',
      async () => ({ token: await issuer.token({ tenant: 'globex', jkt: user.jkt }) }),
    ],
    [
      'without a tenant claim',
      'ERR_TOKEN_TENANT',
      async () => ({ token: await issuer.token({ jkt: user.jkt }) }),
    ],
    [
      'not bound to a DPoP key (no cnf.jkt)',
      'ERR_TOKEN_NOT_BOUND',
      async () => ({ token: await issuer.token({ tenant: TENANT }) }),
    ],
    ['no proof', 'ERR_DPOP_MISSING', () => Promise.resolve({ token: user.token })],
    [
      'a proof that is not a dpop+jwt',
      'ERR_DPOP_INVALID',
      async () => ({
        token: user.token,
        dpop: await proof(user, { ...TARGET, header: { typ: 'JWT' } }),
      }),
    ],
    [
      'a proof whose signature is not by its embedded key',
      'ERR_DPOP_INVALID',
      async () => {
        const other = await generateDpopKey();
        const dpop = await proof(user, {
          ...TARGET,
          key: other,
          header: { jwk: await jwkOf(user.dpopKey) },
        });
        return { token: user.token, dpop };
      },
    ],
    [
      'a proof that embeds a private key',
      'ERR_DPOP_INVALID',
      async () => {
        const pair = await generateKeyPair('ES256', { extractable: true });
        const { exportJWK } = await import('jose');
        const jwk = await exportJWK(pair.privateKey);
        const dpop = await proof(user, { ...TARGET, key: pair, header: { jwk } });
        return { token: user.token, dpop };
      },
    ],
    [
      'a proof signed by another key than the token is bound to',
      'ERR_DPOP_KEY_MISMATCH',
      async () => ({
        token: user.token,
        dpop: await proof(user, { ...TARGET, key: await generateDpopKey() }),
      }),
    ],
    [
      'a stale proof (iat 2 minutes ago)',
      'ERR_DPOP_STALE',
      async () => ({ token: user.token, dpop: await proof(user, { ...TARGET, iat: now() - 120 }) }),
    ],
    [
      'a proof dated in the future',
      'ERR_DPOP_STALE',
      async () => ({ token: user.token, dpop: await proof(user, { ...TARGET, iat: now() + 120 }) }),
    ],
    [
      'a proof for another access token (wrong ath)',
      'ERR_DPOP_ATH',
      async () => {
        const other = await issuer.token({ tenant: TENANT, jkt: user.jkt, sub: 'someone' });
        return { token: other, dpop: await proof(user, TARGET) };
      },
    ],
    [
      'a proof for another method',
      'ERR_DPOP_TARGET',
      async () => ({ token: user.token, dpop: await proof(user, { ...TARGET, htm: 'GET' }) }),
    ],
    [
      'a proof for another URL',
      'ERR_DPOP_TARGET',
      async () => ({
        token: user.token,
        dpop: await proof(user, { ...TARGET, htu: 'http://coordinator.test/v1/tenants/acme' }),
      }),
    ],
    [
      'swapped blinded elements (proof for other elements)',
      'ERR_DPOP_BINDING',
      async () => ({
        token: user.token,
        dpop: await proof(user, { ...TARGET, blinded: ['AAAA', 'CCCC', 'BBBB'] }),
      }),
    ],
    [
      'a proof for another key version',
      'ERR_DPOP_BINDING',
      async () => ({
        token: user.token,
        dpop: await proof(user, { ...TARGET, bh: evaluateBindingHash(TENANT, 2, BLINDED) }),
      }),
    ],
  ];

  for (const [name, code, make] of cases) {
    it(`refuses ${name} with ${code}`, async () => {
      expect(await codeOf(auth.verify(await make(), TARGET))).to.equal(code);
    });
  }

  it('refuses a replayed proof with ERR_DPOP_REPLAY', async () => {
    const cred = { token: user.token, dpop: await honestProof(user, TARGET) };
    expect(await codeOf(auth.verify(cred, TARGET))).to.equal('ok');
    expect(await codeOf(auth.verify(cred, TARGET))).to.equal('ERR_DPOP_REPLAY');
  });

  it('does not spend the jti without a replay cache (the coordinator)', async () => {
    const relay = new EvaluationAuth(issuer.settings(), { checkReplay: false });
    const cred = { token: user.token, dpop: await honestProof(user, TARGET) };
    expect(await codeOf(relay.verify(cred, TARGET))).to.equal('ok');
    expect(await codeOf(relay.verify(cred, TARGET))).to.equal('ok');
    expect(await codeOf(auth.verify(cred, TARGET))).to.equal('ok');
  });

  it('does not remember the jti of a proof refused for another reason', async () => {
    const jti = 'a-fixed-jti-0123456789';
    const swapped = await proof(user, { ...TARGET, jti, blinded: ['CCCC'] });
    expect(await codeOf(auth.verify({ token: user.token, dpop: swapped }, TARGET))).to.equal(
      'ERR_DPOP_BINDING',
    );
    const good = await proof(user, { ...TARGET, jti });
    expect(await codeOf(auth.verify({ token: user.token, dpop: good }, TARGET))).to.equal('ok');
  });

  it('accepts a key rotated into the JWKS later, after refetching it', async () => {
    await auth.verify({ token: user.token, dpop: await honestProof(user, TARGET) }, TARGET);
    const fetches = issuer.jwksFetches;
    const rotated = await issuer.addKey();
    const token = await issuer.token(
      { sub: user.sub, tenant: TENANT, jkt: user.jkt },
      { key: rotated },
    );
    const rotatedUser = { ...user, token };
    const dpop = await honestProof(rotatedUser, TARGET);
    expect(await codeOf(auth.verify({ token, dpop }, TARGET))).to.equal('ok');
    expect(issuer.jwksFetches).to.equal(fetches + 1);
  });

  it('refetches an unknown key id at most once per cooldown', async () => {
    const cooled = new EvaluationAuth(issuer.settings(), { jwksCooldownMs: 60_000 });
    await cooled.verify({ token: user.token, dpop: await honestProof(user, TARGET) }, TARGET);
    const fetches = issuer.jwksFetches;
    const stranger = await signingKey();
    for (let i = 0; i < 3; i++) {
      const token = await issuer.token({ tenant: TENANT, jkt: user.jkt }, { key: stranger });
      expect(await codeOf(cooled.verify({ token, dpop: 'x' }, TARGET))).to.equal(
        'ERR_TOKEN_UNKNOWN_KEY',
      );
    }
    expect(issuer.jwksFetches).to.equal(fetches);
  });

  it('answers ERR_ISSUER_UNAVAILABLE, not a crash, while the issuer cannot be reached', async () => {
    const gone = await TestIssuer.start();
    const settings = gone.settings();
    await gone.close();
    const orphan = new EvaluationAuth(settings);
    expect(await codeOf(orphan.prefetch())).to.equal('ERR_ISSUER_UNAVAILABLE');
    const token = await gone.token({ tenant: TENANT, jkt: user.jkt });
    expect(await codeOf(orphan.verify({ token, dpop: 'x' }, TARGET))).to.equal(
      'ERR_ISSUER_UNAVAILABLE',
    );
    const direct = new EvaluationAuth({ ...settings, jwksUri: `${settings.issuer}/jwks` });
    expect(await codeOf(direct.verify({ token, dpop: 'x' }, TARGET))).to.equal(
      'ERR_ISSUER_UNAVAILABLE',
    );
  });

  it('never echoes the token in an error message', async () => {
    const token = await issuer.token({ tenant: 'globex', jkt: user.jkt });
    try {
      await auth.verify({ token, dpop: 'x' }, TARGET);
      expect.fail('accepted');
    } catch (err) {
      const e = err as KmaasError;
      expect(JSON.stringify(e.toBody())).to.not.contain('globex').and.not.contain(token);
    }
  });
});

describe('DPoP jti cache', () => {
  it('refuses a known jti until it may be forgotten, then forgets it', () => {
    let t = 1_000_000;
    const cache = new JtiCache({ now: () => t });
    cache.remember('jti-1', t + 90_000);
    expect(() => cache.remember('jti-1', t + 90_000)).to.throw(KmaasError, /already used/);
    t += 90_001;
    cache.remember('jti-2', t + 90_000);
    expect(cache.size).to.equal(1);
    cache.remember('jti-1', t + 90_000);
    expect(cache.size).to.equal(2);
  });

  it('is bounded: full of live entries, it refuses with ERR_OVERLOADED rather than forget', () => {
    let t = 0;
    const cache = new JtiCache({ now: () => t, maxEntries: 2 });
    cache.remember('a', 100);
    cache.remember('b', 200);
    let code = '';
    try {
      cache.remember('c', 300);
    } catch (err) {
      code = (err as KmaasError).code;
    }
    expect(code).to.equal('ERR_OVERLOADED');
    t = 150;
    cache.remember('c', 300);
    expect(cache.size).to.equal(2);
  });
});
