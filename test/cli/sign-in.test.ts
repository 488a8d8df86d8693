/**
 * Who the CLI signs in as, with which password and at which issuer (cli/sign-in.ts), in process
 * with a stand-in for devLogin; the real login against the real identity provider is in
 * cli.test.ts and the end-to-end test.
 */
import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../../cli/config.ts';
import { credentialsFor, signIn } from '../../cli/sign-in.ts';
import type { DevLoginOptions } from '../../idp/dev-login.ts';
import { KmaasError } from '../../shared/errors.ts';

const DEV_USERS = [
  { username: 'alice', password: 'pw-alice', tenant: 'acme' },
  { username: 'bob', password: 'pw-bob', tenant: 'globex' },
];

function config(over: Partial<Config> = {}): Config {
  return {
    url: 'http://coordinator',
    urlFrom: 'cluster',
    issuer: 'http://idp',
    issuerFrom: 'cluster',
    user: undefined,
    passwordFile: undefined,
    password: undefined,
    devUsers: DEV_USERS,
    adminToken: undefined,
    pinsFile: 'pins.json',
    clusterPins: undefined,
    clusterFile: '/c/cluster.json',
    operatorsFile: undefined,
    operatorKeys: [],
    cwd: '/',
    json: false,
    trustOnFirstUse: false,
    ...over,
  };
}

async function refusal(p: Promise<unknown>): Promise<KmaasError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(KmaasError);
    return err as KmaasError;
  }
  throw new Error('expected a refusal');
}

describe('cli sign-in', () => {
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'kmaas-signin-'))));
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it("defaults to the cluster file's dev user of the tenant, with its password", async () => {
    expect(await credentialsFor(config(), 'globex', 'x')).to.deep.equal({
      issuer: 'http://idp',
      username: 'bob',
      password: 'pw-bob',
    });
  });

  it('--user picks the user; --password-file wins over KMAAS_PASSWORD, which wins over the cluster file', async () => {
    const file = join(dir, 'pw');
    await writeFile(file, 'from-file\n');
    const c = config({ user: 'alice', password: 'from-env' });
    expect((await credentialsFor(c, 'acme', 'x')).password).to.equal('from-env');
    expect((await credentialsFor({ ...c, passwordFile: file }, 'acme', 'x')).password).to.equal(
      'from-file',
    );
    expect(
      await credentialsFor(config({ user: 'carol', password: 'p' }), 'acme', 'x'),
    ).to.deep.include({ username: 'carol', password: 'p' });
  });

  it('nothing to sign in with: ERR_CONFIG naming the setting to give', async () => {
    const noIssuer = await refusal(credentialsFor(config({ issuer: undefined }), 'acme', 'x'));
    expect(noIssuer.code).to.equal('ERR_CONFIG');
    expect(noIssuer.details).to.include({ field: 'issuer' });
    expect(noIssuer.message).to.include('--issuer <url> or set KMAAS_OIDC_ISSUER');

    const noUser = await refusal(credentialsFor(config(), 'initech', 'x'));
    expect(noUser.details).to.include({ field: 'user', tenant: 'initech' });
    expect(noUser.message).to.include('pass --user <name> or set KMAAS_USER');
    expect(noUser.message).to.include('has no dev user of tenant initech');

    const noPassword = await refusal(credentialsFor(config({ user: 'carol' }), 'acme', 'x'));
    expect(noPassword.details).to.include({ field: 'password', username: 'carol' });
    expect(noPassword.message).to.include('set KMAAS_PASSWORD or pass --password-file <file>');

    const empty = join(dir, 'empty');
    await writeFile(empty, '\n');
    const blank = await refusal(
      credentialsFor(config({ user: 'carol', passwordFile: empty }), 'acme', 'x'),
    );
    expect(blank.details).to.include({ field: 'password' });
  });

  it('signs in with a new non-extractable DPoP key each time; another tenant is refused', async () => {
    const keys: CryptoKeyPair[] = [];
    const login = (opts: DevLoginOptions) => {
      keys.push(opts.dpopKey!);
      return Promise.resolve({
        accessToken: 'at',
        dpopKey: opts.dpopKey!,
        expiresAt: Date.now() + 600_000,
        subject: opts.username,
        tenant: DEV_USERS.find((u) => u.username === opts.username)!.tenant,
      });
    };
    const a = await signIn(config(), 'acme', 'x', login);
    const b = await signIn(config(), 'acme', 'x', login);
    expect(a).to.include({ subject: 'alice', tenant: 'acme', accessToken: 'at' });
    expect(keys).to.have.length(2);
    expect(keys[0]).to.not.equal(keys[1]);
    expect(a.dpopKey).to.equal(keys[0]);
    expect(b.dpopKey).to.equal(keys[1]);
    for (const k of keys) expect(k.privateKey.extractable).to.equal(false);

    const wrong = await refusal(signIn(config({ user: 'bob' }), 'acme', 'x', login));
    expect(wrong.code).to.equal('ERR_TOKEN_TENANT');
    expect(wrong.message).to.include('user bob signs in for tenant globex, not acme');
  });
});
