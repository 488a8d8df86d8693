/**
 * Configuration: each bad setting stops the process with ERR_CONFIG naming the variable (and not
 * echoing its value); defaults and the optional JSON file behave as CONTRACTS.md says.
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { loadConfig } from '../../coordinator/config.ts';
import { KmaasError } from '../../shared/errors.ts';

const BASE = {
  KMAAS_NODES:
    '[{"id":1,"url":"ws://127.0.0.1:41001/v1/ws"},{"id":2,"url":"ws://127.0.0.1:41002/v1/ws"}]',
  KMAAS_CLUSTER_TOKEN: 'cluster-token-0123456789',
  KMAAS_OIDC_ISSUER: 'https://id.example.com',
  KMAAS_ADMIN_TOKEN: 'admin-token-0123456789',
};

function configError(env: Record<string, string | undefined>): KmaasError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).to.be.instanceOf(KmaasError);
    return err as KmaasError;
  }
  throw new Error('expected ERR_CONFIG');
}

describe('coordinator: configuration', function () {
  it('applies the documented defaults', () => {
    const c = loadConfig(BASE);
    expect(c).to.deep.include({
      host: '127.0.0.1',
      port: 8080,
      redisUrl: 'redis://127.0.0.1:6379',
      redisPrefix: 'kmaas:',
      nodeTimeoutMs: 2000,
      hedgeDelayMs: 1000,
      verifyWorkers: 1,
      maxInflightElements: 1024,
      perElementMs: 10,
      logLevel: 'info',
    });
    expect(c.nodes).to.deep.equal([
      { id: 1, url: 'ws://127.0.0.1:41001/v1/ws' },
      { id: 2, url: 'ws://127.0.0.1:41002/v1/ws' },
    ]);
  });

  it('reads numbers from strings and ends the prefix with a colon', () => {
    const c = loadConfig({
      ...BASE,
      KMAAS_COORDINATOR_PORT: '0',
      KMAAS_REDIS_PREFIX: 'kmaas:blue',
      KMAAS_NODE_TIMEOUT_MS: '750',
    });
    expect(c).to.deep.include({ port: 0, redisPrefix: 'kmaas:blue:', nodeTimeoutMs: 750 });
  });

  it('reads the load settings; 0 verify workers means checking inline', () => {
    const c = loadConfig({
      ...BASE,
      KMAAS_VERIFY_WORKERS: '0',
      KMAAS_MAX_INFLIGHT_ELEMENTS: '256',
    });
    expect(c).to.deep.include({ verifyWorkers: 0, maxInflightElements: 256 });
  });

  const table: [string, Record<string, string | undefined>, string][] = [
    [
      'missing nodes returns an error naming KMAAS_NODES',
      { ...BASE, KMAAS_NODES: undefined },
      'KMAAS_NODES',
    ],
    ['nodes that are not JSON', { ...BASE, KMAAS_NODES: '[{id:1' }, 'KMAAS_NODES'],
    ['an empty node list', { ...BASE, KMAAS_NODES: '[]' }, 'KMAAS_NODES'],
    [
      'duplicate node ids',
      { ...BASE, KMAAS_NODES: '[{"id":1,"url":"ws://a/v1/ws"},{"id":1,"url":"ws://b/v1/ws"}]' },
      'KMAAS_NODES',
    ],
    [
      'a node id out of range',
      { ...BASE, KMAAS_NODES: '[{"id":0,"url":"ws://a/v1/ws"}]' },
      'KMAAS_NODES',
    ],
    [
      'a node URL that is not ws://',
      { ...BASE, KMAAS_NODES: '[{"id":1,"url":"http://a/v1/ws"}]' },
      'KMAAS_NODES',
    ],
    ['a missing cluster token', { ...BASE, KMAAS_CLUSTER_TOKEN: undefined }, 'KMAAS_CLUSTER_TOKEN'],
    ['a short admin token', { ...BASE, KMAAS_ADMIN_TOKEN: 'short' }, 'KMAAS_ADMIN_TOKEN'],
    [
      'a port that is not a number',
      { ...BASE, KMAAS_COORDINATOR_PORT: 'eighty' },
      'KMAAS_COORDINATOR_PORT',
    ],
    ['a port out of range', { ...BASE, KMAAS_COORDINATOR_PORT: '70000' }, 'KMAAS_COORDINATOR_PORT'],
    ['a node timeout of zero', { ...BASE, KMAAS_NODE_TIMEOUT_MS: '0' }, 'KMAAS_NODE_TIMEOUT_MS'],
    ['a Redis URL of another scheme', { ...BASE, REDIS_URL: 'http://127.0.0.1:6379' }, 'REDIS_URL'],
    ['a prefix with spaces', { ...BASE, KMAAS_REDIS_PREFIX: 'my prefix' }, 'KMAAS_REDIS_PREFIX'],
    ['an unknown log level', { ...BASE, LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    ['negative verify workers', { ...BASE, KMAAS_VERIFY_WORKERS: '-1' }, 'KMAAS_VERIFY_WORKERS'],
    ['fractional verify workers', { ...BASE, KMAAS_VERIFY_WORKERS: '1.5' }, 'KMAAS_VERIFY_WORKERS'],
    [
      'an element limit below one full batch',
      { ...BASE, KMAAS_MAX_INFLIGHT_ELEMENTS: '255' },
      'KMAAS_MAX_INFLIGHT_ELEMENTS',
    ],
    [
      'an element limit that is not a number',
      { ...BASE, KMAAS_MAX_INFLIGHT_ELEMENTS: 'lots' },
      'KMAAS_MAX_INFLIGHT_ELEMENTS',
    ],
  ];
  for (const [name, env, setting] of table) {
    it(`${name} -> ERR_CONFIG naming ${setting}`, () => {
      const err = configError(env);
      expect(err.code).to.equal('ERR_CONFIG');
      expect(err.details).to.deep.equal({ setting });
      expect(err.message.startsWith(`${setting}:`), err.message).to.equal(true);
    });
  }

  it('keeps tokens redacted in every printed form', () => {
    const c = loadConfig(BASE);
    expect(c.adminToken.reveal()).to.equal(BASE.KMAAS_ADMIN_TOKEN);
    const printed = [JSON.stringify(c), inspect(c, { depth: 5 }), String(c.adminToken)].join();
    for (const t of [BASE.KMAAS_ADMIN_TOKEN, BASE.KMAAS_CLUSTER_TOKEN]) {
      expect(printed).to.not.include(t);
    }
  });

  it('says how to give a missing token', () => {
    const err = configError({ ...BASE, KMAAS_ADMIN_TOKEN: undefined });
    expect(err.message).to.equal(
      'KMAAS_ADMIN_TOKEN: required: set KMAAS_ADMIN_TOKEN or KMAAS_ADMIN_TOKEN_FILE',
    );
  });

  it('requires the OIDC issuer and reads the other OIDC settings', () => {
    expect(configError({ ...BASE, KMAAS_OIDC_ISSUER: undefined }).details).to.deep.equal({
      setting: 'KMAAS_OIDC_ISSUER',
    });
    const c = loadConfig(BASE);
    expect(c).to.deep.include({
      oidcIssuer: 'https://id.example.com',
      oidcAudience: 'urn:kmaas:api',
      oidcTenantClaim: 'tenant',
      clockSkewSeconds: 30,
      dpopMaxAgeSeconds: 60,
    });
    expect(c.oidcJwksUri).to.equal(undefined);
    const jwks = loadConfig({ ...BASE, KMAAS_OIDC_JWKS_URI: 'https://id.example.com/jwks' });
    expect(jwks.oidcJwksUri).to.equal('https://id.example.com/jwks');
  });

  it('never echoes a token in its error', () => {
    const err = configError({ ...BASE, KMAAS_ADMIN_TOKEN: 'tiny-secret' });
    expect(err.message).to.not.include('tiny-secret');
  });

  describe('with KMAAS_COORDINATOR_CONFIG', function () {
    let dir: string;
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'kmaas-coordinator-config-'));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('reads camelCase settings from the file, and the environment wins', () => {
      const file = join(dir, 'ok.json');
      writeFileSync(file, JSON.stringify({ port: 9000, redisPrefix: 'file:', nodeTimeoutMs: 900 }));
      const c = loadConfig({
        ...BASE,
        KMAAS_COORDINATOR_CONFIG: file,
        KMAAS_NODE_TIMEOUT_MS: '100',
      });
      expect(c).to.deep.include({ port: 9000, redisPrefix: 'file:', nodeTimeoutMs: 100 });
    });

    it('reads tokens from *_FILE settings, trimmed, and refuses both forms at once', () => {
      const file = join(dir, 'admin-token');
      writeFileSync(file, 'admin-token-from-a-file-0123\n');
      const env = { ...BASE, KMAAS_ADMIN_TOKEN: undefined, KMAAS_ADMIN_TOKEN_FILE: file };
      expect(loadConfig(env).adminToken.reveal()).to.equal('admin-token-from-a-file-0123');
      const both = configError({ ...BASE, KMAAS_ADMIN_TOKEN_FILE: file });
      expect(both.details).to.deep.equal({ setting: 'KMAAS_ADMIN_TOKEN' });
      const missing = configError({
        ...env,
        KMAAS_ADMIN_TOKEN_FILE: join(dir, 'no-such-token'),
      });
      expect(missing.details).to.deep.equal({ setting: 'KMAAS_ADMIN_TOKEN_FILE' });
    });

    it('takes a token file named in the config file, unless the environment gives the token', () => {
      const tokenFile = join(dir, 'admin-token-2');
      writeFileSync(tokenFile, 'admin-token-from-a-file-4567');
      const file = join(dir, 'with-token-file.json');
      writeFileSync(file, JSON.stringify({ adminTokenFile: tokenFile }));
      const env = { ...BASE, KMAAS_ADMIN_TOKEN: undefined, KMAAS_COORDINATOR_CONFIG: file };
      expect(loadConfig(env).adminToken.reveal()).to.equal('admin-token-from-a-file-4567');
      const overridden = loadConfig({ ...env, KMAAS_ADMIN_TOKEN: BASE.KMAAS_ADMIN_TOKEN });
      expect(overridden.adminToken.reveal()).to.equal(BASE.KMAAS_ADMIN_TOKEN);
    });

    it('refuses a file that is missing, not JSON, or has unknown settings', () => {
      const bad = join(dir, 'bad.json');
      writeFileSync(bad, '{ nope');
      const unknown = join(dir, 'unknown.json');
      writeFileSync(unknown, '{"nodeTimeout": 5}');
      for (const file of [join(dir, 'missing.json'), bad, unknown]) {
        const err = configError({ ...BASE, KMAAS_COORDINATOR_CONFIG: file });
        expect(err.details).to.deep.equal({ setting: 'KMAAS_COORDINATOR_CONFIG' });
      }
    });
  });
});
