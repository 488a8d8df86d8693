/**
 * DESIGN.md sections 1 and 4 on real processes: the local identity provider, five share nodes
 * and a coordinator. The test stands in for a dishonest coordinator on the wire: it connects to
 * every node with the cluster credential, as the coordinator does, and tries to use what it can
 * capture. Each node must refuse on its own, with its own code.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose';
import { KmaasClient } from '../../client/index.ts';
import { generateDpopKey } from '../../client/dpop.ts';
import { MemoryPinStore } from '../../client/pins.ts';
import { devLogin } from '../../idp/dev-login.ts';
import { documentInput } from '../../shared/document.ts';
import { toB64 } from '../../shared/encoding.ts';
import { KmaasError } from '../../shared/errors.ts';
import { evaluatePath } from '../../shared/dpop-binding.ts';
import type { NodeReply } from '../../shared/messages.ts';
import { blind } from '../../shared/voprf-client.ts';
import { ROOT } from '../../scripts/lib/child.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import { NodeClient } from '../nodes/helpers.ts';
import { createEvaluateProof } from '../../client/dpop.ts';

const NODES = 5;
/** Low at the nodes, high at the coordinator: the nodes' own limit is what refuses the burst. */
const NODE_RATE = 256;

interface Login {
  accessToken: string;
  dpopKey: CryptoKeyPair;
}

describe('security: every node decides for itself, on real processes', function () {
  this.timeout(240_000);
  let dir: string;
  let cluster: LocalCluster;
  let links: NodeClient[];
  let alice: Login;
  let bob: Login;

  function kmaas(...args: string[]) {
    return spawnSync(
      process.execPath,
      [join(ROOT, 'cli', 'kmaas.mjs'), '--cluster', cluster.clusterFile, ...args],
      { encoding: 'utf8' },
    );
  }

  const login = (username: string): Promise<Login> => {
    const user = cluster.devUsers.find((u) => u.username === username)!;
    return devLogin({ issuer: cluster.issuer, username, password: user.password });
  };

  /** Fresh blinded elements of `count` documents, as the SDK would send them. */
  const blinded = (tenant: string, count = 1): string[] =>
    blind(
      Array.from({ length: count }, () =>
        documentInput(tenant, 1, `doc-${randomBytes(6).toString('hex')}`),
      ),
    ).blinded.map((b) => toB64(b.toBytes()));

  /** The DPoP proof the SDK makes for an evaluate request through the real coordinator. */
  const proofFor = (who: Login, tenant: string, elements: string[], key = who.dpopKey) =>
    createEvaluateProof({
      dpopKey: key,
      accessToken: who.accessToken,
      url: cluster.url + evaluatePath(tenant, 1),
      tenant,
      version: 1,
      blinded: elements,
    });

  /** What the coordinator would send every node; each reply, in node order. */
  async function toEveryNode(body: unknown): Promise<NodeReply[]> {
    return Promise.all(links.map((link) => link.request('evaluate', body)));
  }

  const codes = (replies: NodeReply[]) => replies.map((r) => (r.ok ? 'ok' : r.error.code));
  const every = (code: string) => Array.from({ length: NODES }, () => code);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-security-'));
    cluster = new LocalCluster({
      dataDir: dir,
      nodes: NODES,
      redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      redisPrefix: `kmaas:test:${randomBytes(6).toString('hex')}:`,
      cleanRedisOnStop: true,
      nodeEnv: { KMAAS_NODE_RATE_ELEMENTS_PER_MIN: String(NODE_RATE) },
      coordinatorEnv: { KMAAS_RATE_ELEMENTS_PER_MIN: '1000000' },
    });
    await cluster.start();
    for (const tenant of ['acme', 'globex']) {
      const r = kmaas('tenant', 'create', tenant, '--threshold', '3');
      expect(r.status, r.stderr).to.equal(0);
    }
    [alice, bob] = await Promise.all([login('alice'), login('bob')]);
    links = await Promise.all(
      cluster.secrets.nodes.map((n) =>
        NodeClient.connect(`ws://127.0.0.1:${n.port}/v1/ws`, cluster.secrets.clusterToken),
      ),
    );
  });

  after(async () => {
    await Promise.all((links ?? []).map((link) => link.close()));
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a token and DPoP proof replayed by the coordinator are refused by every node (ERR_DPOP_REPLAY)', async () => {
    const elements = blinded('acme');
    const auth = { token: alice.accessToken, dpop: await proofFor(alice, 'acme', elements) };
    const body = { tenant: 'acme', version: 1, blinded: elements, auth };
    // The honest request: a hedging coordinator may send it to every node, and each serves it.
    expect(codes(await toEveryNode(body))).to.deep.equal(every('ok'));
    expect(codes(await toEveryNode(body))).to.deep.equal(every('ERR_DPOP_REPLAY'));
  });

  it('blinded elements the coordinator chose, sent with a captured token and proof, are refused by every node (ERR_DPOP_BINDING)', async () => {
    const auth = { token: alice.accessToken, dpop: await proofFor(alice, 'acme', blinded('acme')) };
    const body = { tenant: 'acme', version: 1, blinded: blinded('acme'), auth };
    expect(codes(await toEveryNode(body))).to.deep.equal(every('ERR_DPOP_BINDING'));
  });

  it('a captured token with a DPoP proof signed by another key is refused by every node (ERR_DPOP_KEY_MISMATCH)', async () => {
    const elements = blinded('acme');
    const mallory = await generateDpopKey();
    const dpop = await proofFor(alice, 'acme', elements, mallory);
    const body = {
      tenant: 'acme',
      version: 1,
      blinded: elements,
      auth: { token: alice.accessToken, dpop },
    };
    expect(codes(await toEveryNode(body))).to.deep.equal(every('ERR_DPOP_KEY_MISMATCH'));
  });

  it('a token of tenant acme used for tenant globex is refused by every node (ERR_TOKEN_TENANT)', async () => {
    const elements = blinded('globex');
    const dpop = await proofFor(alice, 'globex', elements);
    const body = {
      tenant: 'globex',
      version: 1,
      blinded: elements,
      auth: { token: alice.accessToken, dpop },
    };
    expect(codes(await toEveryNode(body))).to.deep.equal(every('ERR_TOKEN_TENANT'));
  });

  /** Alice's real claims, re-signed by `sign`: only what the test changes differs. */
  async function forged(
    header: { alg: string; kid?: string },
    claims: Record<string, unknown>,
    key: CryptoKey | Uint8Array,
  ): Promise<string> {
    const real = decodeJwt(alice.accessToken);
    return new SignJWT({ ...real, ...claims })
      .setProtectedHeader({ typ: 'at+jwt', ...header })
      .sign(key);
  }

  async function refusedEverywhere(token: string, code: string): Promise<void> {
    const elements = blinded('acme');
    const dpop = await proofFor({ ...alice, accessToken: token }, 'acme', elements);
    const body = { tenant: 'acme', version: 1, blinded: elements, auth: { token, dpop } };
    expect(codes(await toEveryNode(body))).to.deep.equal(every(code));
  }

  /** The identity provider's own signing key, read from its keys file in the data folder. */
  function issuerKey(): JWK {
    const file = JSON.parse(readFileSync(join(dir, 'idp-keys.json'), 'utf8')) as { keys: JWK[] };
    return file.keys[0]!;
  }

  it('an expired token, signed by the real issuer key, is refused by every node (ERR_TOKEN_EXPIRED)', async () => {
    const jwk = issuerKey();
    const key = (await importJWK(jwk, 'ES256')) as CryptoKey;
    const now = Math.floor(Date.now() / 1000);
    const token = await forged(
      { alg: 'ES256', kid: jwk.kid },
      { iat: now - 3600, exp: now - 1800 },
      key,
    );
    await refusedEverywhere(token, 'ERR_TOKEN_EXPIRED');
  });

  it('a token signed with a key the issuer never published is refused by every node (ERR_TOKEN_UNKNOWN_KEY)', async () => {
    const { privateKey } = await generateKeyPair('ES256');
    const token = await forged({ alg: 'ES256', kid: 'not-a-published-key' }, {}, privateKey);
    await refusedEverywhere(token, 'ERR_TOKEN_UNKNOWN_KEY');
  });

  it('an unsigned token (alg none) is refused by every node (ERR_TOKEN_UNSIGNED)', async () => {
    const real = alice.accessToken.split('.');
    const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString(
      'base64url',
    );
    await refusedEverywhere(`${header}.${real[1]}.`, 'ERR_TOKEN_UNSIGNED');
  });

  it('an HS256 token made with the issuer public key as secret is refused by every node (ERR_TOKEN_ALG)', async () => {
    const publicJwk = { ...issuerKey() };
    delete publicJwk.d;
    const secret = new TextEncoder().encode(JSON.stringify(publicJwk));
    const token = await forged({ alg: 'HS256', kid: publicJwk.kid }, {}, secret);
    await refusedEverywhere(token, 'ERR_TOKEN_ALG');
  });

  it('the SDK derives through the coordinator with a real login, and the audit log names the subject', async () => {
    const client = new KmaasClient({
      baseUrl: cluster.url,
      pins: new MemoryPinStore(),
      trustOnFirstUse: true,
      auth: alice,
    });
    const one = await client.deriveKeys('acme', 1, ['contracts/1.pdf']);
    const again = await client.deriveKeys('acme', 1, ['contracts/1.pdf']);
    expect(Buffer.from(one.keys[0]!).equals(Buffer.from(again.keys[0]!))).to.equal(true);
    const audit = readFileSync(join(dir, 'node-1', 'audit.jsonl'), 'utf8');
    expect(audit).to.include('"subject":"alice"');
    expect(audit).to.not.include(alice.accessToken.split('.')[2]!);
  });

  it('a burst over the node rate limit gets 429 ERR_RATE_LIMITED from the nodes while the coordinator lets it through', async () => {
    const client = new KmaasClient({
      baseUrl: cluster.url,
      pins: new MemoryPinStore(),
      trustOnFirstUse: true,
      auth: bob,
    });
    const docs = Array.from({ length: 128 }, (_, i) => `burst/${i}.pdf`);
    const outcomes: { code: string; nodes?: unknown }[] = [];
    for (let i = 0; i < 4; i++) {
      outcomes.push(
        await client.deriveKeys('globex', 1, docs).then(
          () => ({ code: 'ok' }),
          (err: unknown) =>
            err instanceof KmaasError
              ? { code: err.code, nodes: err.details?.nodes }
              : { code: String(err) },
        ),
      );
    }
    // 128 elements a request against a budget of 256 a minute at each node, and a coordinator
    // budget far above it: the first request passes, and what refuses later is t nodes at once.
    expect(outcomes[0]!.code).to.equal('ok');
    const refused = outcomes.filter((o) => o.code !== 'ok');
    expect(refused).to.not.be.empty;
    for (const r of refused) {
      expect(r.code).to.equal('ERR_RATE_LIMITED');
      expect(r.nodes).to.be.an('array').with.length.of.at.least(3);
    }
  });
});
