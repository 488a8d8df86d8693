/**
 * Bad input of every kind on every endpoint gets a 4xx with its stable code in the one error
 * shape, and the coordinator keeps answering afterwards (DESIGN.md section 4).
 */
import { expect } from 'chai';
import { gzipSync } from 'node:zlib';
import { asKmaasError } from '../../coordinator/api.ts';
import { ERROR_CODES, type ErrorCode } from '../../shared/errors.ts';
import { Point, toB64 } from '../../shared/encoding.ts';
import { MAX_BATCH } from '../../shared/suite.ts';
import { Cluster, endUser, http, proposalBody, splitKey, TOKENS, userFor } from './helpers.ts';

const VALID = toB64(Point.BASE.multiply(12345n).toBytes());
const EVAL = '/v1/tenants/acme/keys/1/evaluate';
const BIG = 'x'.repeat(300 * 1024);

interface Case {
  name: string;
  method: string;
  path: string;
  json?: unknown;
  raw?: string;
  token?: string;
  headers?: Record<string, string>;
  code: keyof typeof ERROR_CODES;
}

const admin = TOKENS.admin;
const client = TOKENS.client;

const cases: Case[] = [
  // POST /v1/proposals
  {
    name: 'proposal: malformed JSON',
    method: 'POST',
    path: '/v1/proposals',
    raw: '{"tenant":',
    token: admin,
    code: 'ERR_MALFORMED_JSON',
  },
  {
    name: 'proposal: no token',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x' }),
    code: 'ERR_UNAUTHORIZED',
  },
  {
    name: 'proposal: client token instead of admin',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x' }),
    token: client,
    code: 'ERR_UNAUTHORIZED',
  },
  {
    name: 'proposal: not a Bearer header',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x' }),
    headers: { authorization: `Basic ${admin}` },
    code: 'ERR_UNAUTHORIZED',
  },
  {
    name: 'proposal: tenant of the wrong type',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x' }, [1, 2, 3], { tenant: 5 }),
    token: admin,
    code: 'ERR_PROPOSAL_INVALID',
  },
  {
    name: 'proposal: tenant name not allowed',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'Bad Name' }),
    token: admin,
    code: 'ERR_PROPOSAL_INVALID',
  },
  {
    name: 'proposal: tenant missing',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x' }, [1, 2, 3], { tenant: undefined }),
    token: admin,
    code: 'ERR_PROPOSAL_INVALID',
  },
  {
    name: 'proposal: unknown field',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x' }, [1, 2, 3], { extra: 1 }),
    token: admin,
    code: 'ERR_PROPOSAL_INVALID',
  },
  {
    name: 'proposal: threshold of the wrong type',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x' }, [1, 2, 3], { threshold: '2' }),
    token: admin,
    code: 'ERR_PROPOSAL_INVALID',
  },
  {
    name: 'proposal: tenant.create without a threshold',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x' }, [1, 2, 3], { threshold: undefined }),
    token: admin,
    code: 'ERR_PROPOSAL_INVALID',
  },
  {
    name: 'proposal: tenant.create of version 2',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x', version: 2 }),
    token: admin,
    code: 'ERR_PROPOSAL_INVALID',
  },
  {
    name: 'proposal: a committee node that is not configured',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x' }, [1, 2, 7]),
    token: admin,
    code: 'ERR_PROPOSAL_INVALID',
  },
  {
    name: 'proposal: expired',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x' }, [1, 2, 3], {
      expiresAt: new Date(Date.now() - 1000).toISOString(),
    }),
    token: admin,
    code: 'ERR_PROPOSAL_EXPIRED',
  },
  {
    name: 'proposal: threshold too low',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x', threshold: 1 }),
    token: admin,
    code: 'ERR_BAD_THRESHOLD',
  },
  {
    name: 'proposal: threshold above n',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'x', threshold: 9 }),
    token: admin,
    code: 'ERR_BAD_THRESHOLD',
  },
  {
    name: 'proposal: body is an array',
    method: 'POST',
    path: '/v1/proposals',
    raw: '[]',
    token: admin,
    code: 'ERR_VALIDATION',
  },
  {
    name: 'proposal: body is not JSON-typed',
    method: 'POST',
    path: '/v1/proposals',
    raw: 'tenant=x',
    headers: { 'content-type': 'text/plain' },
    token: admin,
    code: 'ERR_VALIDATION',
  },
  {
    name: 'proposal: oversized body',
    method: 'POST',
    path: '/v1/proposals',
    json: { tenant: BIG },
    token: admin,
    code: 'ERR_BODY_TOO_LARGE',
  },
  {
    name: 'proposal: existing tenant',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'acme' }),
    token: admin,
    code: 'ERR_TENANT_EXISTS',
  },
  {
    name: 'proposal: rotation of an unknown tenant',
    method: 'POST',
    path: '/v1/proposals',
    json: proposalBody({ tenant: 'nobody', version: 2, operation: 'key.rotate' }),
    token: admin,
    code: 'ERR_UNKNOWN_TENANT',
  },
  {
    name: 'tenant creation without a proposal is gone',
    method: 'POST',
    path: '/v1/tenants',
    json: { tenant: 'x' },
    token: admin,
    code: 'ERR_NOT_FOUND',
  },
  // GET /v1/jobs/:id
  {
    name: 'job: unknown id',
    method: 'GET',
    path: '/v1/jobs/6b1f0c8e-0000-4000-8000-000000000000',
    code: 'ERR_UNKNOWN_JOB',
  },
  {
    name: 'job: id with characters no job has',
    method: 'GET',
    path: '/v1/jobs/a%20b%3Ac',
    code: 'ERR_UNKNOWN_JOB',
  },
  // GET /v1/tenants/:tenant and its keys
  {
    name: 'tenant: unknown',
    method: 'GET',
    path: '/v1/tenants/nobody',
    code: 'ERR_UNKNOWN_TENANT',
  },
  {
    name: 'tenant: invalid name',
    method: 'GET',
    path: '/v1/tenants/No%20Body',
    code: 'ERR_VALIDATION',
  },
  {
    name: 'key: unknown version',
    method: 'GET',
    path: '/v1/tenants/acme/keys/7',
    code: 'ERR_UNKNOWN_KEY_VERSION',
  },
  {
    name: 'key: unknown tenant',
    method: 'GET',
    path: '/v1/tenants/nobody/keys/1',
    code: 'ERR_UNKNOWN_TENANT',
  },
  {
    name: 'key: version not a number',
    method: 'GET',
    path: '/v1/tenants/acme/keys/abc',
    code: 'ERR_VALIDATION',
  },
  {
    name: 'key: version zero',
    method: 'GET',
    path: '/v1/tenants/acme/keys/0',
    code: 'ERR_VALIDATION',
  },
  {
    name: 'key: version above 32 bits',
    method: 'GET',
    path: '/v1/tenants/acme/keys/4294967296',
    code: 'ERR_VALIDATION',
  },
  // POST .../evaluate
  {
    name: 'evaluate: no token',
    method: 'POST',
    path: EVAL,
    json: { blinded: [VALID] },
    code: 'ERR_TOKEN_MISSING',
  },
  {
    name: 'evaluate: wrong token',
    method: 'POST',
    path: EVAL,
    json: { blinded: [VALID] },
    token: 'wrong-token-0123456789',
    code: 'ERR_TOKEN_MISSING',
  },
  {
    name: 'evaluate: admin token',
    method: 'POST',
    path: EVAL,
    json: { blinded: [VALID] },
    token: admin,
    code: 'ERR_TOKEN_MISSING',
  },
  {
    name: 'evaluate: no token is refused before the body is read',
    method: 'POST',
    path: EVAL,
    raw: '{"blinded":[',
    code: 'ERR_TOKEN_MISSING',
  },
  {
    name: 'evaluate: a DPoP header that holds no JWT',
    method: 'POST',
    path: EVAL,
    json: { blinded: [VALID] },
    headers: { authorization: 'DPoP not-a-jwt', dpop: 'not-a-proof' },
    code: 'ERR_TOKEN_MALFORMED',
  },
  {
    name: 'evaluate: malformed JSON',
    method: 'POST',
    path: EVAL,
    raw: '{"blinded":[',
    token: client,
    code: 'ERR_MALFORMED_JSON',
  },
  {
    name: 'evaluate: blinded missing',
    method: 'POST',
    path: EVAL,
    json: {},
    token: client,
    code: 'ERR_VALIDATION',
  },
  {
    name: 'evaluate: blinded not an array',
    method: 'POST',
    path: EVAL,
    json: { blinded: VALID },
    token: client,
    code: 'ERR_VALIDATION',
  },
  {
    name: 'evaluate: element of the wrong type',
    method: 'POST',
    path: EVAL,
    json: { blinded: [1] },
    token: client,
    code: 'ERR_VALIDATION',
  },
  {
    name: 'evaluate: unknown field',
    method: 'POST',
    path: EVAL,
    json: { blinded: [VALID], tenant: 'x' },
    token: client,
    code: 'ERR_VALIDATION',
  },
  {
    name: 'evaluate: bad base64',
    method: 'POST',
    path: EVAL,
    json: { blinded: ['***'] },
    token: client,
    code: 'ERR_BAD_BASE64',
  },
  {
    name: 'evaluate: padded base64',
    method: 'POST',
    path: EVAL,
    json: { blinded: [`${VALID}=`] },
    token: client,
    code: 'ERR_BAD_BASE64',
  },
  {
    name: 'evaluate: wrong length',
    method: 'POST',
    path: EVAL,
    json: { blinded: [toB64(new Uint8Array(16).fill(1))] },
    token: client,
    code: 'ERR_BAD_LENGTH',
  },
  {
    name: 'evaluate: invalid point',
    method: 'POST',
    path: EVAL,
    json: { blinded: [toB64(new Uint8Array(32).fill(0xff))] },
    token: client,
    code: 'ERR_INVALID_POINT',
  },
  {
    name: 'evaluate: identity point',
    method: 'POST',
    path: EVAL,
    json: { blinded: [VALID, toB64(new Uint8Array(32))] },
    token: client,
    code: 'ERR_IDENTITY_POINT',
  },
  {
    name: 'evaluate: empty batch',
    method: 'POST',
    path: EVAL,
    json: { blinded: [] },
    token: client,
    code: 'ERR_EMPTY_BATCH',
  },
  {
    name: 'evaluate: oversized batch',
    method: 'POST',
    path: EVAL,
    json: { blinded: new Array<string>(MAX_BATCH + 1).fill(VALID) },
    token: client,
    code: 'ERR_BATCH_TOO_LARGE',
  },
  {
    name: 'evaluate: oversized body',
    method: 'POST',
    path: EVAL,
    json: { blinded: [BIG] },
    token: client,
    code: 'ERR_BODY_TOO_LARGE',
  },
  {
    name: 'evaluate: unknown tenant',
    method: 'POST',
    path: '/v1/tenants/nobody/keys/1/evaluate',
    json: { blinded: [VALID] },
    token: client,
    code: 'ERR_UNKNOWN_TENANT',
  },
  {
    name: 'evaluate: unknown version',
    method: 'POST',
    path: '/v1/tenants/acme/keys/2/evaluate',
    json: { blinded: [VALID] },
    token: client,
    code: 'ERR_UNKNOWN_KEY_VERSION',
  },
  {
    name: 'evaluate: invalid tenant name',
    method: 'POST',
    path: '/v1/tenants/ACME/keys/1/evaluate',
    json: { blinded: [VALID] },
    token: client,
    code: 'ERR_VALIDATION',
  },
  {
    name: 'evaluate: corrupt gzip body',
    method: 'POST',
    path: EVAL,
    raw: 'notgzip',
    headers: { 'content-encoding': 'gzip' },
    token: client,
    code: 'ERR_MALFORMED_JSON',
  },
  {
    name: 'proposal: corrupt gzip body',
    method: 'POST',
    path: '/v1/proposals',
    raw: 'notgzip',
    headers: { 'content-encoding': 'gzip' },
    token: admin,
    code: 'ERR_MALFORMED_JSON',
  },
  {
    name: 'proposal: corrupt deflate body',
    method: 'POST',
    path: '/v1/proposals',
    raw: 'x',
    headers: { 'content-encoding': 'deflate' },
    token: admin,
    code: 'ERR_MALFORMED_JSON',
  },
  {
    name: 'proposal: unknown content encoding',
    method: 'POST',
    path: '/v1/proposals',
    raw: '{}',
    headers: { 'content-encoding': 'zstd-but-not-really' },
    token: admin,
    code: 'ERR_VALIDATION',
  },
  // Malformed percent-encoding in a path parameter
  {
    name: 'evaluate: tenant %zz',
    method: 'POST',
    path: '/v1/tenants/%zz/keys/1/evaluate',
    json: { blinded: [VALID] },
    token: client,
    code: 'ERR_VALIDATION',
  },
  { name: 'job: id %zz', method: 'GET', path: '/v1/jobs/%zz', code: 'ERR_VALIDATION' },
  { name: 'tenant: a lone %', method: 'GET', path: '/v1/tenants/%', code: 'ERR_VALIDATION' },
  {
    name: 'key: version %E0%A4%A',
    method: 'GET',
    path: '/v1/tenants/acme/keys/%E0%A4%A',
    code: 'ERR_VALIDATION',
  },
  // Routes
  { name: 'unknown route', method: 'GET', path: '/v1/nothing', code: 'ERR_NOT_FOUND' },
  {
    name: 'known path, wrong method',
    method: 'DELETE',
    path: '/v1/tenants/acme',
    code: 'ERR_NOT_FOUND',
  },
  { name: 'root', method: 'GET', path: '/', code: 'ERR_NOT_FOUND' },
];

describe('coordinator: bad input over HTTP', function () {
  let cluster: Cluster;

  before(async () => {
    cluster = await Cluster.start({ nodes: 3 });
    const key = splitKey('acme', 1, 2, [1, 2, 3]);
    for (const n of cluster.nodes) n.install(key.keyPackage, key.shares.get(n.id)!);
    await cluster.waitForNodes();
    expect((await http(cluster.port, 'GET', '/v1/tenants/acme')).status).to.equal(200);
  });

  after(async () => {
    await cluster.close();
  });

  for (const c of cases) {
    it(`${c.name} -> ${ERROR_CODES[c.code].status} ${c.code}`, async () => {
      const opts = {
        ...(c.json !== undefined ? { json: c.json } : {}),
        ...(c.raw !== undefined ? { raw: c.raw } : {}),
        ...(c.token !== undefined ? { token: c.token } : {}),
        ...(c.headers !== undefined ? { headers: c.headers } : {}),
      };
      const res = await http(cluster.port, c.method, c.path, opts);
      expect(res.status, JSON.stringify(res.body)).to.equal(ERROR_CODES[c.code].status);
      expect(res.body.error.code).to.equal(c.code);
      expect(res.body.error.message).to.be.a('string').and.not.empty;
      expect(Object.keys(res.body)).to.deep.equal(['error']);
      expect(res.headers.get('x-request-id')).to.be.a('string');

      const health = await http<{ ok: boolean }>(cluster.port, 'GET', '/healthz');
      expect(health.status).to.equal(200);
      expect(health.body.ok).to.equal(true);
    });
  }

  it('checks the access token and the DPoP proof, but leaves the jti to the nodes', async () => {
    const send = (headers: Record<string, string>, blinded = [VALID]) =>
      http(cluster.port, 'POST', EVAL, { json: { blinded }, headers });
    const good = (await endUser(cluster.port, EVAL, { json: { blinded: [VALID] } }))!;
    const other = (await userFor('globex')).token;
    const cases: [Record<string, string>, string][] = [
      [{ ...good, authorization: `DPoP ${other}` }, 'ERR_TOKEN_TENANT'],
      [{ authorization: good.authorization! }, 'ERR_DPOP_MISSING'],
      [{ ...good, authorization: `Bearer ${good.authorization!.slice(5)}` }, 'ERR_TOKEN_MISSING'],
    ];
    for (const [headers, code] of cases) {
      const res = await send(headers);
      expect(res.body.error.code, code).to.equal(code);
      expect(res.status).to.equal(ERROR_CODES[code as ErrorCode].status);
    }
    const swapped = await send(good, [VALID, VALID]);
    expect(swapped.body.error.code).to.equal('ERR_DPOP_BINDING');
    // The same proof twice: the coordinator passes both on (the nodes own replay), untouched.
    const before = cluster.nodes.map((n) => n.auths.length);
    for (let i = 0; i < 2; i++) expect((await send(good)).status).to.equal(200);
    const forwarded = cluster.nodes.flatMap((n, i) => n.auths.slice(before[i]));
    expect(forwarded).to.have.length.of.at.least(4);
    for (const auth of forwarded) {
      expect(auth).to.deep.equal({ token: good.authorization!.slice(5), dpop: good.dpop });
    }
  });

  it('names the offending field in ERR_VALIDATION and the element in point errors', async () => {
    const res = await http(cluster.port, 'POST', EVAL, {
      json: { blinded: [VALID, toB64(new Uint8Array(32).fill(0xff))] },
      token: client,
    });
    expect(res.body.error.details).to.deep.equal({ field: 'blinded[1]' });
    const bad = await http(cluster.port, 'POST', '/v1/proposals', {
      json: proposalBody({ tenant: 'x' }, [1, 2, 3], { threshold: '2' }),
      token: admin,
    });
    expect(bad.body.error.details).to.deep.equal({ field: 'threshold' });
  });

  it('names the path with a malformed percent-encoding, and logs no internal error', async () => {
    const res = await http(cluster.port, 'GET', '/v1/tenants/%zz');
    expect(res.body.error.message).to.include('/v1/tenants/%zz');
    expect(res.body.error.details).to.deep.equal({ field: 'path' });
    await http(cluster.port, 'POST', '/v1/proposals', {
      raw: 'notgzip',
      headers: { 'content-encoding': 'gzip' },
      token: admin,
    });
    expect(cluster.logs.lines.filter((l) => (l.level as number) >= 50)).to.deep.equal([]);
  });

  it('reads a well-formed gzip body', async () => {
    const res = await fetch(`http://127.0.0.1:${cluster.port}${EVAL}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'content-encoding': 'gzip',
        ...(await endUser(cluster.port, EVAL, { json: { blinded: [VALID] } })),
      },
      body: gzipSync(JSON.stringify({ blinded: [VALID] })),
    });
    expect(res.status, await res.text()).to.equal(200);
  });

  it('answers HEAD errors with the status and the JSON content type', async () => {
    for (const [path, status] of [
      ['/v1/nothing', 404],
      ['/v1/tenants/%zz', 400],
      ['/v1/tenants/nobody', 404],
    ] as const) {
      const res = await fetch(`http://127.0.0.1:${cluster.port}${path}`, { method: 'HEAD' });
      expect(res.status, path).to.equal(status);
      expect(res.headers.get('content-type'), path).to.match(/^application\/json/);
    }
  });

  it('maps any exposed 4xx from express to a client code, never ERR_INTERNAL', () => {
    const exposed = (status: number) =>
      Object.assign(new Error('unsupported thing'), { status, expose: true });
    const at = { path: '/v1/tenants' };
    expect(asKmaasError(exposed(415), at).code).to.equal('ERR_VALIDATION');
    expect(asKmaasError(exposed(413), at).code).to.equal('ERR_BODY_TOO_LARGE');
    expect(asKmaasError(exposed(404), at).code).to.equal('ERR_NOT_FOUND');
    const statusCode = Object.assign(new Error('bad'), { statusCode: 400, expose: true });
    expect(asKmaasError(statusCode, at).code).to.equal('ERR_VALIDATION');
    // Not exposed, or not a client status: ours, and internal.
    expect(asKmaasError(Object.assign(new Error('x'), { status: 400 }), at).code).to.equal(
      'ERR_INTERNAL',
    );
    expect(asKmaasError(exposed(500), at).code).to.equal('ERR_INTERNAL');
    expect(asKmaasError(new Error('boom'), at).code).to.equal('ERR_INTERNAL');
  });

  it('echoes a well-formed X-Request-Id and replaces a malformed one', async () => {
    const given = await http(cluster.port, 'GET', '/healthz', {
      headers: { 'x-request-id': 'abc-123' },
    });
    expect(given.headers.get('x-request-id')).to.equal('abc-123');
    const replaced = await http(cluster.port, 'GET', '/healthz', {
      headers: { 'x-request-id': 'no spaces allowed' },
    });
    expect(replaced.headers.get('x-request-id')).to.match(/^[0-9a-f-]{36}$/);
  });
});
