/**
 * Bad input over the real WebSocket (DESIGN.md section 4): each kind gets its own stable error
 * code in a reply that echoes the request id, the connection stays open, and the node still
 * answers `status` afterwards. Plus the HTTP side: upgrade authentication, routes, frame size.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { expect } from 'chai';
import { hexToBytes } from '@noble/hashes/utils.js';
import WebSocket from 'ws';
import { documentInput } from '../../shared/document.ts';
import { toB64 } from '../../shared/encoding.ts';
import type { ErrorCode } from '../../shared/errors.ts';
import type { NodeReply } from '../../shared/messages.ts';
import { MAX_BATCH } from '../../shared/suite.ts';
import { blind } from '../../shared/voprf-client.ts';
import { MAX_PAYLOAD } from '../../nodes/server.ts';
import type { TestUser } from '../helpers/oidc.ts';
import { nodeAuth } from '../helpers/oidc.ts';
import type { CommitteeMember } from '../../shared/proposal.ts';
import { strangerIdentity } from '../helpers/operators.ts';
import {
  ceremonyId,
  CLUSTER_TOKEN,
  Cluster,
  committeeOf,
  ISSUER,
  NodeClient,
  round1Body,
  runDkg,
  type DkgParams,
} from './helpers.ts';

const TENANT = 'acme';

/** A valid blinded element, so that each row breaks exactly one thing. */
const good = toB64(blind([documentInput(TENANT, 1, 'doc')]).blinded[0]!.toBytes());

function evaluate(overrides: Record<string, unknown>): Record<string, unknown> {
  return {
    tenant: TENANT,
    version: 1,
    blinded: [good],
    auth: { token: TOKEN, dpop: DPOP },
    ...overrides,
  };
}

// Placeholders for a valid credential: replaced, when the row runs, by an access token for the
// tenant the body names and a fresh DPoP proof over the body's tenant, version and elements.
const TOKEN = '$TOKEN';
const DPOP = '$DPOP';
const users = new Map<string, TestUser>();

async function withCredential(text: string): Promise<string> {
  if (!text.includes(TOKEN) && !text.includes(DPOP)) return text;
  const { body } = JSON.parse(text) as { body: Record<string, unknown> };
  const tenant = typeof body.tenant === 'string' ? body.tenant : TENANT;
  const version = typeof body.version === 'number' ? body.version : 1;
  const blinded = Array.isArray(body.blinded)
    ? body.blinded.filter((b): b is string => typeof b === 'string')
    : [];
  if (!users.has(tenant)) users.set(tenant, await ISSUER.user(tenant));
  const auth = await nodeAuth(users.get(tenant)!, { tenant, version, blinded });
  return text
    .replace(JSON.stringify(TOKEN), JSON.stringify(auth.token))
    .replace(JSON.stringify(DPOP), JSON.stringify(auth.dpop));
}

function envelope(type: string, body: unknown, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ v: 1, id: 'bad-1', type, body, ...extra });
}

const hex = (h: string) => toB64(hexToBytes(h));

const USER = await ISSUER.user(TENANT);

/** A committee of the right shape for nodes 1..n; these requests fail before its keys matter. */
const placeholderCommittee = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ node: i + 1, signing: 'AA', encryption: 'AA' }));

/** Committee entries of the running nodes (filled once they run), for proposals. */
let lookup: (node: number) => CommitteeMember = strangerIdentity;

/** A dkg.round1 frame with a proposal signed by a quorum, built once the nodes run. */
function round1Frame(params: DkgParams): () => string {
  return () => envelope('dkg.round1', round1Body(params, lookup));
}

interface Row {
  name: string;
  /** A function when the frame needs the running nodes (their identity keys). */
  text: string | (() => string);
  code: ErrorCode;
  /** The id the reply must carry. */
  id?: string;
  details?: Record<string, unknown>;
}

const rows: Row[] = [
  // Envelope
  { name: 'malformed JSON', text: '{"v":1,"id":"x",', code: 'ERR_MALFORMED_JSON', id: 'unknown' },
  { name: 'a JSON array, not an object', text: '[1,2,3]', code: 'ERR_VALIDATION', id: 'unknown' },
  {
    name: 'no id',
    text: JSON.stringify({ v: 1, type: 'status', body: {} }),
    code: 'ERR_VALIDATION',
    id: 'unknown',
    details: { field: 'id' },
  },
  {
    name: 'v is a string',
    text: envelope('status', {}, { v: '1' }),
    code: 'ERR_VALIDATION',
    details: { field: 'v' },
  },
  {
    name: 'protocol version 2',
    text: envelope('status', {}, { v: 2 }),
    code: 'ERR_UNSUPPORTED_VERSION',
    details: { received: 2 },
  },
  {
    name: 'protocol version 0',
    text: envelope('status', {}, { v: 0 }),
    code: 'ERR_UNSUPPORTED_VERSION',
  },
  {
    name: 'unknown message type',
    text: envelope('frobnicate', {}),
    code: 'ERR_UNKNOWN_MESSAGE',
    details: { type: 'frobnicate' },
  },
  {
    name: 'an inherited property name as type',
    text: envelope('constructor', {}),
    code: 'ERR_UNKNOWN_MESSAGE',
  },
  // Body schema
  {
    name: 'status with an unexpected field',
    text: envelope('status', { x: 1 }),
    code: 'ERR_VALIDATION',
  },
  {
    name: 'version as a string',
    text: envelope('evaluate', evaluate({ version: '1' })),
    code: 'ERR_VALIDATION',
    details: { field: 'version' },
  },
  {
    name: 'version zero',
    text: envelope('evaluate', evaluate({ version: 0 })),
    code: 'ERR_VALIDATION',
    details: { field: 'version' },
  },
  {
    name: 'blinded not an array',
    text: envelope('evaluate', evaluate({ blinded: good })),
    code: 'ERR_VALIDATION',
    details: { field: 'blinded' },
  },
  {
    name: 'blinded element a number',
    text: envelope('evaluate', evaluate({ blinded: [good, 7] })),
    code: 'ERR_VALIDATION',
    details: { field: 'blinded.1' },
  },
  {
    name: 'tenant with capitals',
    text: envelope('evaluate', evaluate({ tenant: 'ACME' })),
    code: 'ERR_VALIDATION',
    details: { field: 'tenant' },
  },
  {
    name: 'auth missing',
    text: envelope('evaluate', evaluate({ auth: undefined })),
    code: 'ERR_VALIDATION',
    details: { field: 'auth' },
  },
  {
    name: 'an extra field',
    text: envelope('evaluate', evaluate({ admin: true })),
    code: 'ERR_VALIDATION',
  },
  // Encodings (RFC 9496 section 4.3.1, RFC 9497 section 3.3)
  {
    name: 'base64 with characters outside the alphabet',
    text: envelope('evaluate', evaluate({ blinded: ['!!!!'] })),
    code: 'ERR_BAD_BASE64',
    details: { field: 'blinded[0]' },
  },
  {
    name: 'base64 with padding',
    text: envelope('evaluate', evaluate({ blinded: [good + '='] })),
    code: 'ERR_BAD_BASE64',
  },
  {
    name: 'non-canonical base64 (non-zero trailing bits)',
    text: envelope('evaluate', evaluate({ blinded: [good, 'AB'] })),
    code: 'ERR_BAD_BASE64',
    details: { field: 'blinded[1]' },
  },
  {
    name: 'base64 of impossible length',
    text: envelope('evaluate', evaluate({ blinded: ['A'] })),
    code: 'ERR_BAD_BASE64',
    details: { field: 'blinded[0]' },
  },
  {
    name: 'a 31-byte point',
    text: envelope('evaluate', evaluate({ blinded: [toB64(new Uint8Array(31).fill(1))] })),
    code: 'ERR_BAD_LENGTH',
    details: { field: 'blinded[0]', expected: 32, actual: 31 },
  },
  {
    name: 'a 33-byte point',
    text: envelope('evaluate', evaluate({ blinded: [good, toB64(new Uint8Array(33))] })),
    code: 'ERR_BAD_LENGTH',
    details: { field: 'blinded[1]' },
  },
  {
    name: 'the identity (32 zero bytes)',
    text: envelope('evaluate', evaluate({ blinded: [toB64(new Uint8Array(32))] })),
    code: 'ERR_IDENTITY_POINT',
    details: { field: 'blinded[0]' },
  },
  {
    name: 'non-canonical encoding (s = p)',
    text: envelope(
      'evaluate',
      evaluate({
        blinded: [hex('edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f')],
      }),
    ),
    code: 'ERR_INVALID_POINT',
  },
  {
    name: 'non-canonical encoding (s >= 2^255)',
    text: envelope('evaluate', evaluate({ blinded: [toB64(new Uint8Array(32).fill(0xff))] })),
    code: 'ERR_INVALID_POINT',
  },
  {
    name: 'negative field element (RFC 9496 A.2)',
    text: envelope(
      'evaluate',
      evaluate({
        blinded: [hex('0100000000000000000000000000000000000000000000000000000000000000')],
      }),
    ),
    code: 'ERR_INVALID_POINT',
  },
  {
    name: 'not a valid ristretto encoding (RFC 9496 A.2)',
    text: envelope(
      'evaluate',
      evaluate({
        blinded: [hex('26948d35ca62e643e26a83177332e6b6afeb9d08e4268b650f1f5bbd8d81d371')],
      }),
    ),
    code: 'ERR_INVALID_POINT',
  },
  // Batch bounds
  {
    name: 'an empty batch',
    text: envelope('evaluate', evaluate({ blinded: [] })),
    code: 'ERR_EMPTY_BATCH',
  },
  {
    name: `a batch of MAX_BATCH+1 (${MAX_BATCH + 1})`,
    text: envelope('evaluate', evaluate({ blinded: Array<string>(MAX_BATCH + 1).fill(good) })),
    code: 'ERR_BATCH_TOO_LARGE',
    details: { max: MAX_BATCH, actual: MAX_BATCH + 1 },
  },
  // Keys and credentials
  {
    name: 'an unknown tenant',
    text: envelope('evaluate', evaluate({ tenant: 'globex' })),
    code: 'ERR_UNKNOWN_TENANT',
  },
  {
    name: 'an unknown key version',
    text: envelope('evaluate', evaluate({ version: 2 })),
    code: 'ERR_UNKNOWN_KEY_VERSION',
  },
  {
    name: 'a wrong end-user token',
    text: envelope('evaluate', evaluate({ auth: { token: 'wrong', dpop: DPOP } })),
    code: 'ERR_TOKEN_MALFORMED',
  },
  {
    name: 'an empty end-user token',
    text: envelope('evaluate', evaluate({ auth: { token: '', dpop: DPOP } })),
    code: 'ERR_TOKEN_MISSING',
  },
  {
    name: 'no end-user token',
    text: envelope('evaluate', evaluate({ auth: { dpop: DPOP } })),
    code: 'ERR_TOKEN_MISSING',
  },
  {
    name: 'a wrong token for an unknown tenant (no tenant oracle)',
    text: envelope('evaluate', evaluate({ tenant: 'globex', auth: { token: 'wrong' } })),
    code: 'ERR_TOKEN_MALFORMED',
  },
  {
    name: 'the cluster token as end-user token',
    text: envelope('evaluate', evaluate({ auth: { token: CLUSTER_TOKEN, dpop: DPOP } })),
    code: 'ERR_TOKEN_MALFORMED',
  },
  {
    name: 'no DPoP proof',
    text: envelope('evaluate', evaluate({ auth: { token: TOKEN } })),
    code: 'ERR_DPOP_MISSING',
  },
  {
    name: 'a DPoP proof that is not a JWT',
    text: envelope('evaluate', evaluate({ auth: { token: TOKEN, dpop: 'not-a-jwt' } })),
    code: 'ERR_DPOP_INVALID',
  },
  {
    name: 'auth with an unknown member',
    text: envelope('evaluate', evaluate({ auth: { token: TOKEN, dpop: DPOP, extra: 1 } })),
    code: 'ERR_VALIDATION',
    details: { field: 'auth' },
  },
  {
    name: 'keyPackage of an unknown tenant',
    text: envelope('keyPackage', { tenant: 'globex', version: 1 }),
    code: 'ERR_UNKNOWN_TENANT',
  },
  {
    name: 'dkg.round2 of an unknown ceremony',
    text: envelope('dkg.round2', {
      ceremonyId: 'never-started',
      round1: [{ node: 1, commitment: [good], proofOfKnowledge: good }],
    }),
    code: 'ERR_UNKNOWN_CEREMONY',
  },
  {
    name: 'dkg.round1 with a threshold of 1',
    text: envelope('dkg.round1', {
      ceremonyId: ceremonyId(),
      tenant: 'new',
      version: 1,
      threshold: 1,
      participants: [1, 2, 3],
      committee: placeholderCommittee(3),
    }),
    code: 'ERR_VALIDATION',
    details: { field: 'threshold' },
  },
  {
    name: 'dkg.round1 with 33 participants',
    text: round1Frame({
      ceremonyId: ceremonyId(),
      tenant: 'new',
      version: 1,
      threshold: 17,
      participants: Array.from({ length: 33 }, (_, i) => i + 1),
    }),
    code: 'ERR_VALIDATION',
    details: { field: 'participants' },
  },
  {
    name: 'dkg.commit of an unknown ceremony',
    text: envelope('dkg.commit', { ceremonyId: 'never-started' }),
    code: 'ERR_UNKNOWN_CEREMONY',
  },
  {
    name: 'dkg.commit without a ceremony id',
    text: envelope('dkg.commit', {}),
    code: 'ERR_VALIDATION',
    details: { field: 'ceremonyId' },
  },
  {
    name: 'dkg.round1 for an existing key',
    text: round1Frame({
      ceremonyId: ceremonyId(),
      tenant: TENANT,
      version: 1,
      threshold: 2,
      participants: [1, 2, 3],
    }),
    code: 'ERR_CEREMONY_CONFLICT',
  },
];

describe('nodes over WebSocket: bad input gets a specific error and the node keeps serving', () => {
  let cluster: Cluster;
  let client: NodeClient;

  before(async () => {
    cluster = await Cluster.start(3);
    await runDkg(cluster, {
      ceremonyId: ceremonyId(),
      tenant: TENANT,
      version: 1,
      threshold: 2,
      participants: [1, 2, 3],
    });
    client = cluster.node(1).client;
    const members = await committeeOf([1, 2, 3].map((id) => cluster.node(id)));
    lookup = (node) => members.find((m) => m.node === node) ?? strangerIdentity(node);
  });

  after(async () => {
    await cluster?.close();
  });

  async function expectStatusOk(c: NodeClient = client): Promise<void> {
    const reply = await c.request('status', {});
    expect(reply.ok, JSON.stringify(reply)).to.equal(true);
  }

  for (const row of rows) {
    it(`${row.name} -> ${row.code}`, async () => {
      const text = await withCredential(typeof row.text === 'string' ? row.text : row.text());
      const reply: NodeReply = await client.sendRaw(text, row.id ?? 'bad-1');
      expect(reply.v).to.equal(1);
      expect(reply.id).to.equal(row.id ?? 'bad-1');
      expect(reply.ok).to.equal(false);
      if (reply.ok) return;
      expect(reply.error.code, reply.error.message).to.equal(row.code);
      expect(reply.error.message).to.be.a('string').and.not.empty;
      if (row.details) expect(reply.error.details).to.deep.include(row.details);
      await expectStatusOk();
    });
  }

  it('a valid evaluation still succeeds after all of that', async () => {
    const { body } = JSON.parse(await withCredential(envelope('evaluate', evaluate({})))) as {
      body: unknown;
    };
    const reply = await client.request('evaluate', body);
    expect(reply.ok, JSON.stringify(reply)).to.equal(true);
  });

  it('a binary frame holding a valid request is answered like a text frame', async () => {
    const reply = await new Promise<NodeReply>((resolve) => {
      client.socket.once('message', (d: Buffer) => resolve(JSON.parse(d.toString()) as NodeReply));
      client.socket.send(Buffer.from(envelope('status', {})), { binary: true });
    });
    expect(reply).to.include({ id: 'bad-1', ok: true });
  });

  describe('HTTP and the WebSocket upgrade', () => {
    const base = () => `127.0.0.1:${cluster.node(1).handle.port}`;

    function upgradeStatus(path: string, headers: Record<string, string>): Promise<number> {
      return new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${base()}${path}`, { headers });
        ws.once('open', () => {
          ws.close();
          resolve(101);
        });
        ws.once('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0);
          res.resume();
        });
        ws.once('error', reject);
      });
    }

    const upgrades: [string, string, Record<string, string>, number][] = [
      ['no Authorization header', '/v1/ws', {}, 401],
      ['a wrong cluster token', '/v1/ws', { authorization: 'Bearer wrong-token' }, 401],
      ['an access token instead', '/v1/ws', { authorization: `Bearer ${USER.token}` }, 401],
      ['another scheme', '/v1/ws', { authorization: `Basic ${CLUSTER_TOKEN}` }, 401],
      ['the token with a suffix', '/v1/ws', { authorization: `Bearer ${CLUSTER_TOKEN}x` }, 401],
      ['another path', '/ws', { authorization: `Bearer ${CLUSTER_TOKEN}` }, 404],
      ['the right token', '/v1/ws', { authorization: `Bearer ${CLUSTER_TOKEN}` }, 101],
      [
        'the right token, lower-case scheme, query string',
        '/v1/ws?x=1',
        { authorization: `bearer ${CLUSTER_TOKEN}` },
        101,
      ],
    ];
    for (const [name, path, headers, status] of upgrades) {
      it(`upgrade with ${name} -> ${status}`, async () => {
        expect(await upgradeStatus(path, headers)).to.equal(status);
      });
    }

    it('a refused upgrade is a plain 401 with an ERR_UNAUTHORIZED body and WWW-Authenticate', async () => {
      const { status, headers, body } = await new Promise<{
        status: number;
        headers: IncomingHttpHeaders;
        body: string;
      }>((resolve, reject) => {
        const req = httpRequest(`http://${base()}/v1/ws`, {
          headers: {
            connection: 'Upgrade',
            upgrade: 'websocket',
            'sec-websocket-version': '13',
            'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
            authorization: 'Bearer nope',
          },
        });
        req.once('response', (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () =>
            resolve({ status: res.statusCode!, headers: res.headers, body: text }),
          );
        });
        req.once('error', reject);
        req.end();
      });
      expect(status).to.equal(401);
      expect(headers['www-authenticate']).to.equal('Bearer');
      expect(JSON.parse(body)).to.deep.equal({
        error: { code: 'ERR_UNAUTHORIZED', message: 'a valid cluster bearer token is required' },
      });
    });

    it('GET /healthz answers without credentials; unknown routes are ERR_NOT_FOUND', async () => {
      const ok = await fetch(`http://${base()}/healthz`);
      expect(await ok.json()).to.deep.include({ ok: true, node: 1, keys: 1 });
      const missing = await fetch(`http://${base()}/nope`);
      expect(missing.status).to.equal(404);
      expect(((await missing.json()) as { error: { code: string } }).error.code).to.equal(
        'ERR_NOT_FOUND',
      );
      const post = await fetch(`http://${base()}/healthz`, { method: 'POST' });
      expect(post.status).to.equal(404);
    });

    it(`a frame above ${MAX_PAYLOAD} bytes closes that socket (1009); others keep working`, async () => {
      const victim = await NodeClient.connect(cluster.node(1).handle.url);
      const code = await new Promise<number>((resolve) => {
        victim.socket.once('close', (c: number) => resolve(c));
        victim.socket.send('x'.repeat(MAX_PAYLOAD + 1));
      });
      expect(code).to.equal(1009);
      await expectStatusOk();
      const fresh = await NodeClient.connect(cluster.node(1).handle.url);
      await expectStatusOk(fresh);
      await fresh.close();
    });
  });
});
