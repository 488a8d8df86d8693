/** Node configuration (docs/CONTRACTS.md, "Share node"): env, JSON file, ERR_CONFIG naming the setting. */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { expect } from 'chai';
import { bytesToHex } from '@noble/hashes/utils.js';
import { loadConfig } from '../../nodes/config.ts';
import { OPERATOR_SET, TEST_CLUSTER_ID } from '../helpers/operators.ts';
import { expectCode, removeDir, tempDir } from './helpers.ts';

const SECRET_HEX = 'a1'.repeat(32);
const BASE = {
  KMAAS_NODE_ID: '3',
  KMAAS_NODE_DATA_DIR: '/var/lib/kmaas/node-3',
  KMAAS_NODE_SECRET: SECRET_HEX,
  KMAAS_CLUSTER_TOKEN: 'cluster-token-0123456789',
  KMAAS_OIDC_ISSUER: 'https://id.example.com',
  KMAAS_CLUSTER_ID: TEST_CLUSTER_ID,
  KMAAS_OPERATORS: JSON.stringify(OPERATOR_SET),
};
const [OP1, OP2] = OPERATOR_SET.operators;

describe('nodes/config: settings from the environment and an optional JSON file', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await removeDir(dir);
  });

  it('reads the environment and applies the defaults', () => {
    const c = loadConfig(BASE);
    expect(c.nodeId).to.equal(3);
    expect(c.host).to.equal('127.0.0.1');
    expect(c.port).to.equal(0);
    expect(c.dataDir).to.equal('/var/lib/kmaas/node-3');
    expect(bytesToHex(c.secret.reveal())).to.equal(SECRET_HEX);
    expect(c.clusterToken.reveal()).to.equal(BASE.KMAAS_CLUSTER_TOKEN);
    expect(c.oidc).to.deep.equal({
      issuer: 'https://id.example.com',
      audience: 'urn:kmaas:api',
      tenantClaim: 'tenant',
      clockSkewSeconds: 30,
      dpopMaxAgeSeconds: 60,
    });
    expect(c.logLevel).to.equal('info');
    expect(c.clusterId).to.equal(TEST_CLUSTER_ID);
    expect(c.operators).to.deep.equal(OPERATOR_SET);
  });

  it('reads the reshare auto-finish delay and the test-only failpoints', () => {
    const d = loadConfig(BASE);
    expect(d.reshareFinishAfterMs).to.equal(600_000);
    expect(d.failpoints).to.deep.equal([]);
    const c = loadConfig({
      ...BASE,
      KMAAS_RESHARE_FINISH_AFTER_MS: '2500',
      KMAAS_FAILPOINTS: 'reshare.commit:before, reshare.deal:corrupt-piece',
    });
    expect(c.reshareFinishAfterMs).to.equal(2500);
    expect(c.failpoints).to.deep.equal(['reshare.commit:before', 'reshare.deal:corrupt-piece']);
    expectCode(() => loadConfig({ ...BASE, KMAAS_FAILPOINTS: 'reshare.nowhere' }), 'ERR_CONFIG', {
      setting: 'KMAAS_FAILPOINTS',
    });
    expectCode(() => loadConfig({ ...BASE, KMAAS_RESHARE_FINISH_AFTER_MS: '-1' }), 'ERR_CONFIG', {
      setting: 'KMAAS_RESHARE_FINISH_AFTER_MS',
    });
  });

  it('reads the operator set from KMAAS_OPERATORS_FILE', async () => {
    const file = join(dir, 'operators.json');
    await writeFile(file, JSON.stringify(OPERATOR_SET));
    const c = loadConfig({ ...BASE, KMAAS_OPERATORS: undefined, KMAAS_OPERATORS_FILE: file });
    expect(c.operators).to.deep.equal(OPERATOR_SET);
  });

  it('prints without its secret or tokens', () => {
    const c = loadConfig(BASE);
    for (const text of [JSON.stringify(c), inspect(c, { depth: 5 })]) {
      expect(text).to.not.contain(SECRET_HEX);
      expect(text).to.not.contain(BASE.KMAAS_CLUSTER_TOKEN);
    }
  });

  const bad: [string, NodeJS.ProcessEnv, string][] = [
    ['node id missing', { ...BASE, KMAAS_NODE_ID: undefined }, 'KMAAS_NODE_ID'],
    ['node id zero', { ...BASE, KMAAS_NODE_ID: '0' }, 'KMAAS_NODE_ID'],
    ['node id too large', { ...BASE, KMAAS_NODE_ID: '65536' }, 'KMAAS_NODE_ID'],
    ['node id not a number', { ...BASE, KMAAS_NODE_ID: 'one' }, 'KMAAS_NODE_ID'],
    ['node id fractional', { ...BASE, KMAAS_NODE_ID: '1.5' }, 'KMAAS_NODE_ID'],
    ['port out of range', { ...BASE, KMAAS_NODE_PORT: '70000' }, 'KMAAS_NODE_PORT'],
    ['data dir missing', { ...BASE, KMAAS_NODE_DATA_DIR: undefined }, 'KMAAS_NODE_DATA_DIR'],
    ['secret missing', { ...BASE, KMAAS_NODE_SECRET: undefined }, 'KMAAS_NODE_SECRET'],
    ['secret too short', { ...BASE, KMAAS_NODE_SECRET: 'ab'.repeat(31) }, 'KMAAS_NODE_SECRET'],
    ['secret not hex', { ...BASE, KMAAS_NODE_SECRET: 'zz'.repeat(32) }, 'KMAAS_NODE_SECRET'],
    ['secret odd length', { ...BASE, KMAAS_NODE_SECRET: SECRET_HEX + 'a' }, 'KMAAS_NODE_SECRET'],
    [
      'secret given twice',
      { ...BASE, KMAAS_NODE_SECRET_FILE: '/run/secrets/node' },
      'KMAAS_NODE_SECRET',
    ],
    ['cluster token missing', { ...BASE, KMAAS_CLUSTER_TOKEN: undefined }, 'KMAAS_CLUSTER_TOKEN'],
    ['cluster token too short', { ...BASE, KMAAS_CLUSTER_TOKEN: 'short' }, 'KMAAS_CLUSTER_TOKEN'],
    ['OIDC issuer missing', { ...BASE, KMAAS_OIDC_ISSUER: undefined }, 'KMAAS_OIDC_ISSUER'],
    [
      'OIDC issuer not a URL',
      { ...BASE, KMAAS_OIDC_ISSUER: 'id.example.com' },
      'KMAAS_OIDC_ISSUER',
    ],
    ['JWKS URI not a URL', { ...BASE, KMAAS_OIDC_JWKS_URI: 'ftp://x/jwks' }, 'KMAAS_OIDC_JWKS_URI'],
    [
      'clock skew negative',
      { ...BASE, KMAAS_CLOCK_SKEW_SECONDS: '-1' },
      'KMAAS_CLOCK_SKEW_SECONDS',
    ],
    [
      'DPoP max age zero',
      { ...BASE, KMAAS_DPOP_MAX_AGE_SECONDS: '0' },
      'KMAAS_DPOP_MAX_AGE_SECONDS',
    ],
    ['log level unknown', { ...BASE, LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    ['cluster id missing', { ...BASE, KMAAS_CLUSTER_ID: undefined }, 'KMAAS_CLUSTER_ID'],
    ['cluster id with a space', { ...BASE, KMAAS_CLUSTER_ID: 'a b' }, 'KMAAS_CLUSTER_ID'],
    ['operators missing', { ...BASE, KMAAS_OPERATORS: undefined }, 'KMAAS_OPERATORS'],
    ['operators not JSON', { ...BASE, KMAAS_OPERATORS: '{quorum' }, 'KMAAS_OPERATORS'],
    [
      'operators: quorum above the operators',
      { ...BASE, KMAAS_OPERATORS: JSON.stringify({ quorum: 3, operators: [OP1, OP2] }) },
      'KMAAS_OPERATORS',
    ],
    [
      'operators: quorum zero',
      { ...BASE, KMAAS_OPERATORS: JSON.stringify({ quorum: 0, operators: [OP1] }) },
      'KMAAS_OPERATORS',
    ],
    [
      'operators: an id twice',
      {
        ...BASE,
        KMAAS_OPERATORS: JSON.stringify({ quorum: 1, operators: [OP1, { ...OP2!, id: OP1!.id }] }),
      },
      'KMAAS_OPERATORS',
    ],
    [
      'operators: a key that is not Ed25519',
      {
        ...BASE,
        KMAAS_OPERATORS: JSON.stringify({
          quorum: 1,
          operators: [{ id: 'x', publicKey: 'A'.repeat(42) + 'w' }],
        }),
      },
      'KMAAS_OPERATORS',
    ],
    [
      'operators given twice',
      { ...BASE, KMAAS_OPERATORS_FILE: '/run/secrets/operators.json' },
      'KMAAS_OPERATORS',
    ],
    [
      'operators file missing',
      { ...BASE, KMAAS_OPERATORS: undefined, KMAAS_OPERATORS_FILE: '/nonexistent.json' },
      'KMAAS_OPERATORS_FILE',
    ],
    [
      'config file missing',
      { ...BASE, KMAAS_NODE_CONFIG: '/nonexistent.json' },
      'KMAAS_NODE_CONFIG',
    ],
  ];
  for (const [name, env, setting] of bad) {
    it(`${name} gives ERR_CONFIG naming ${setting}`, () => {
      const e = expectCode(() => loadConfig(env), 'ERR_CONFIG', { setting });
      expect(e.message).to.contain(setting);
      expect(e.message).to.not.contain(SECRET_HEX.slice(0, 16));
    });
  }

  it('never echoes a secret or token value in its error', () => {
    const e = expectCode(
      () => loadConfig({ ...BASE, KMAAS_CLUSTER_TOKEN: 'has whitespace in it' }),
      'ERR_CONFIG',
    );
    expect(e.message).to.not.contain('has whitespace');
  });

  it('reads the secret from KMAAS_NODE_SECRET_FILE, trimming the newline', async () => {
    const file = join(dir, 'secret');
    await writeFile(file, `${SECRET_HEX}\n`);
    const c = loadConfig({ ...BASE, KMAAS_NODE_SECRET: undefined, KMAAS_NODE_SECRET_FILE: file });
    expect(bytesToHex(c.secret.reveal())).to.equal(SECRET_HEX);
  });

  it('reads the cluster token from KMAAS_CLUSTER_TOKEN_FILE', async () => {
    await writeFile(join(dir, 'cluster'), 'cluster-token-from-file-0001\n');
    const c = loadConfig({
      ...BASE,
      KMAAS_CLUSTER_TOKEN: undefined,
      KMAAS_CLUSTER_TOKEN_FILE: join(dir, 'cluster'),
    });
    expect(c.clusterToken.reveal()).to.equal('cluster-token-from-file-0001');
    expectCode(
      () => loadConfig({ ...BASE, KMAAS_CLUSTER_TOKEN_FILE: join(dir, 'cluster') }),
      'ERR_CONFIG',
      { setting: 'KMAAS_CLUSTER_TOKEN' },
    );
    expectCode(
      () =>
        loadConfig({
          ...BASE,
          KMAAS_CLUSTER_TOKEN: undefined,
          KMAAS_CLUSTER_TOKEN_FILE: join(dir, 'missing'),
        }),
      'ERR_CONFIG',
      { setting: 'KMAAS_CLUSTER_TOKEN_FILE' },
    );
  });

  it('reads the OIDC settings, the JWKS URI optional', () => {
    const c = loadConfig({
      ...BASE,
      KMAAS_OIDC_AUDIENCE: 'urn:other',
      KMAAS_OIDC_TENANT_CLAIM: 'org',
      KMAAS_OIDC_JWKS_URI: 'https://id.example.com/jwks',
      KMAAS_CLOCK_SKEW_SECONDS: '5',
      KMAAS_DPOP_MAX_AGE_SECONDS: '120',
    });
    expect(c.oidc).to.deep.equal({
      issuer: 'https://id.example.com',
      audience: 'urn:other',
      tenantClaim: 'org',
      jwksUri: 'https://id.example.com/jwks',
      clockSkewSeconds: 5,
      dpopMaxAgeSeconds: 120,
    });
  });

  it('reads a JSON file with camelCase keys; the environment wins; paths are file-relative', async () => {
    await mkdir(join(dir, 'conf'));
    const file = join(dir, 'conf', 'node.json');
    await writeFile(join(dir, 'conf', 'secret.hex'), SECRET_HEX);
    await writeFile(
      file,
      JSON.stringify({
        nodeId: 7,
        nodePort: 41007,
        nodeDataDir: 'data',
        nodeSecretFile: 'secret.hex',
        clusterToken: 'file-cluster-token-0123',
        oidcIssuer: 'https://id.example.com',
        logLevel: 'debug',
        clusterId: TEST_CLUSTER_ID,
        // The operator set may be written inline, as an object.
        operators: OPERATOR_SET,
      }),
    );
    const c = loadConfig({ KMAAS_NODE_CONFIG: file, KMAAS_NODE_PORT: '41999' });
    expect(c.operators).to.deep.equal(OPERATOR_SET);
    expect(c.nodeId).to.equal(7);
    expect(c.port).to.equal(41999);
    expect(c.dataDir).to.equal(join(dir, 'conf', 'data'));
    expect(bytesToHex(c.secret.reveal())).to.equal(SECRET_HEX);
    expect(c.clusterToken.reveal()).to.equal('file-cluster-token-0123');
    expect(c.logLevel).to.equal('debug');
    // A secret in the environment replaces the file's secret file instead of clashing with it.
    const other = 'b2'.repeat(32);
    const c2 = loadConfig({ KMAAS_NODE_CONFIG: file, KMAAS_NODE_SECRET: other });
    expect(bytesToHex(c2.secret.reveal())).to.equal(other);
  });

  it('refuses unknown keys and non-JSON in the file, naming KMAAS_NODE_CONFIG', async () => {
    const file = join(dir, 'node.json');
    await writeFile(file, JSON.stringify({ nodeID: 1 }));
    const e = expectCode(() => loadConfig({ KMAAS_NODE_CONFIG: file }), 'ERR_CONFIG', {
      setting: 'KMAAS_NODE_CONFIG',
    });
    expect(e.message).to.contain('nodeID');
    await writeFile(file, '{ nodeId: 1');
    expectCode(() => loadConfig({ KMAAS_NODE_CONFIG: file }), 'ERR_CONFIG', {
      setting: 'KMAAS_NODE_CONFIG',
    });
  });
});
