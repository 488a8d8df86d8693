/**
 * The identity provider's settings, dev users and signing keys files: what is accepted, what is
 * refused with ERR_CONFIG naming the setting, and passwords checked without early exits.
 */
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KmaasError } from '../../shared/errors.ts';
import { loadIdpConfig } from '../../idp/config.ts';
import { loadOrCreateSigningKeys } from '../../idp/keys.ts';
import { loadUsers, UserDirectory } from '../../idp/users.ts';

function configError(fn: () => unknown): KmaasError {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(KmaasError);
    expect((err as KmaasError).code).to.equal('ERR_CONFIG');
    return err as KmaasError;
  }
  throw new Error('expected ERR_CONFIG');
}

describe('idp configuration', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'kmaas-idp-config-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('reads defaults and a comma-separated list of redirect URIs', () => {
    const c = loadIdpConfig({
      KMAAS_IDP_USERS_FILE: 'users.json',
      KMAAS_IDP_REDIRECT_URIS: 'http://127.0.0.1/callback, http://127.0.0.1:5173/cb',
    });
    expect(c).to.deep.include({
      port: 0,
      resource: 'urn:kmaas:api',
      redirectUris: ['http://127.0.0.1/callback', 'http://127.0.0.1:5173/cb'],
      keysFile: undefined,
      host: '127.0.0.1',
      issuer: undefined,
    });
  });

  it('a container binds a wildcard address and names its issuer (the URL everyone uses)', () => {
    const c = loadIdpConfig({
      KMAAS_IDP_USERS_FILE: 'u',
      KMAAS_IDP_HOST: '0.0.0.0',
      KMAAS_IDP_ISSUER: 'http://idp:9000',
    });
    expect(c).to.deep.include({ host: '0.0.0.0', issuer: 'http://idp:9000' });
  });

  const refusals: [string, NodeJS.ProcessEnv, string][] = [
    ['no users file', {}, 'KMAAS_IDP_USERS_FILE'],
    [
      'a port out of range',
      { KMAAS_IDP_USERS_FILE: 'u', KMAAS_IDP_PORT: '70000' },
      'KMAAS_IDP_PORT',
    ],
    [
      'a wildcard host without an issuer',
      { KMAAS_IDP_USERS_FILE: 'u', KMAAS_IDP_HOST: '0.0.0.0' },
      'KMAAS_IDP_ISSUER',
    ],
    [
      'an issuer with a trailing slash',
      { KMAAS_IDP_USERS_FILE: 'u', KMAAS_IDP_ISSUER: 'http://idp:9000/' },
      'KMAAS_IDP_ISSUER',
    ],
    [
      'a relative redirect URI',
      { KMAAS_IDP_USERS_FILE: 'u', KMAAS_IDP_REDIRECT_URIS: '/cb' },
      'KMAAS_IDP_REDIRECT_URIS',
    ],
  ];
  for (const [name, env, field] of refusals) {
    it(`refuses ${name}, naming ${field}`, () => {
      expect(configError(() => loadIdpConfig(env)).details).to.include({ field });
    });
  }

  it('refuses a users file with a duplicate username, a short password or a bad tenant', () => {
    const bad = [
      [
        { username: 'a', password: 'password-1', tenant: 'acme' },
        { username: 'a', password: 'password-2', tenant: 'acme' },
      ],
      [{ username: 'a', password: 'short', tenant: 'acme' }],
      [{ username: 'a', password: 'password-1', tenant: 'Not A Tenant' }],
      [{ username: 'a', password: 'password-1', tenant: 'acme', admin: true }],
      [],
    ];
    for (const users of bad) {
      const file = join(dir, 'users.json');
      writeFileSync(file, JSON.stringify(users));
      const err = configError(() => loadUsers(file));
      expect(err.message).to.not.match(/password-\d/);
    }
    configError(() => loadUsers(join(dir, 'missing.json')));
  });

  it('authenticates the right password only, for known users only', () => {
    const users = new UserDirectory([
      { username: 'alice', password: 'secret-one', tenant: 'acme' },
    ]);
    expect(users.authenticate('alice', 'secret-one')).to.deep.equal({
      sub: 'alice',
      tenant: 'acme',
    });
    expect(users.authenticate('alice', 'secret-onf')).to.equal(undefined);
    expect(users.authenticate('alice', 'secret-one ')).to.equal(undefined);
    expect(users.authenticate('bob', 'secret-one')).to.equal(undefined);
    expect(users.tenantOf('alice')).to.equal('acme');
  });

  it('creates a keys file (mode 600) once and reads the same keys back', async () => {
    const file = join(dir, 'keys.json');
    const created = await loadOrCreateSigningKeys(file);
    expect(statSync(file).mode & 0o777).to.equal(0o600);
    expect(created.keys[0]).to.include({ kty: 'EC', crv: 'P-256', alg: 'ES256' });
    expect(await loadOrCreateSigningKeys(file)).to.deep.equal(created);
    const pub = { ...created.keys[0], d: undefined };
    writeFileSync(file, JSON.stringify({ keys: [JSON.parse(JSON.stringify(pub)) as unknown] }));
    await loadOrCreateSigningKeys(file).then(
      () => expect.fail('a public key alone was accepted'),
      (err: KmaasError) => expect(err.code).to.equal('ERR_CONFIG'),
    );
    expect(readFileSync(file, 'utf8')).to.not.contain('"d"');
  });
});
