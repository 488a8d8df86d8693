import { expect } from 'chai';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CoordinatorHttp, type FetchLike } from '../../client/http.ts';
import { expectCode } from './helpers/streams.ts';

const answer =
  (status: number, body: string): FetchLike =>
  () =>
    Promise.resolve(new Response(body, { status }));

describe('client/http: coordinator errors become coded KmaasErrors', () => {
  it('an error body keeps its code, message and details', async () => {
    const body = JSON.stringify({
      error: { code: 'ERR_UNKNOWN_TENANT', message: 'no tenant acme', details: { tenant: 'acme' } },
    });
    const http = new CoordinatorHttp({ baseUrl: 'http://coordinator', fetch: answer(404, body) });
    const err = await expectCode(http.get('/v1/tenants/acme'), 'ERR_UNKNOWN_TENANT');
    expect(err.message).to.equal('no tenant acme');
    expect(err.details).to.deep.equal({ tenant: 'acme' });
  });

  it('a code this client does not know becomes ERR_INTERNAL', async () => {
    const body = JSON.stringify({ error: { code: 'ERR_FROM_THE_FUTURE', message: 'later' } });
    const http = new CoordinatorHttp({ baseUrl: 'http://c', fetch: answer(409, body) });
    await expectCode(http.get('/x'), 'ERR_INTERNAL');
  });

  it('answers without an error body are coded from their status', async () => {
    const table: [number, string][] = [
      [401, 'ERR_UNAUTHORIZED'],
      [403, 'ERR_UNAUTHORIZED'],
      [404, 'ERR_NOT_FOUND'],
      [413, 'ERR_BODY_TOO_LARGE'],
      [422, 'ERR_VALIDATION'],
      [500, 'ERR_INTERNAL'],
      [502, 'ERR_NODE_UNAVAILABLE'],
      [503, 'ERR_NODE_UNAVAILABLE'],
      [504, 'ERR_NODE_UNAVAILABLE'],
    ];
    for (const [status, code] of table) {
      const http = new CoordinatorHttp({ baseUrl: 'http://c', fetch: answer(status, '<html>') });
      const err = await expectCode(http.get('/x'), code as never);
      expect(err.details).to.include({ status });
    }
  });

  it('a 2xx answer that is not JSON: ERR_MALFORMED_JSON; an empty one is undefined', async () => {
    await expectCode(
      new CoordinatorHttp({ baseUrl: 'http://c', fetch: answer(200, 'nope') }).get('/x'),
      'ERR_MALFORMED_JSON',
    );
    const empty = new CoordinatorHttp({ baseUrl: 'http://c', fetch: answer(202, '') });
    expect(await empty.post('/x', {})).to.equal(undefined);
  });

  it('a refused connection: ERR_NODE_UNAVAILABLE, with no credential in the error', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((r) => server.close(() => r()));
    const http = new CoordinatorHttp({ baseUrl: `http://127.0.0.1:${port}` });
    const err = await expectCode(
      http.get('/v1/status', { token: 'sekret-token' }),
      'ERR_NODE_UNAVAILABLE',
    );
    expect(JSON.stringify({ m: err.message, d: err.details })).to.not.include('sekret');
  });

  it('no answer within the deadline: ERR_NODE_UNAVAILABLE', async () => {
    const hang: FetchLike = (_url, init) =>
      new Promise((_resolve, reject) => {
        init.signal?.addEventListener('abort', () =>
          reject(new DOMException('The operation timed out.', 'TimeoutError')),
        );
      });
    const http = new CoordinatorHttp({ baseUrl: 'http://c', fetch: hang, timeoutMs: 20 });
    const err = await expectCode(http.get('/x'), 'ERR_NODE_UNAVAILABLE');
    expect(err.details).to.include({ timeoutMs: 20 });
  });

  it('sends the bearer token, JSON bodies and keeps a path prefix of the base URL', async () => {
    const seen: { url: string; init: RequestInit }[] = [];
    const spy: FetchLike = (url, init) => {
      seen.push({ url, init });
      return Promise.resolve(new Response('{"ok":true}', { status: 200 }));
    };
    const http = new CoordinatorHttp({ baseUrl: 'https://c.example/kmaas/', fetch: spy });
    expect(await http.post('/v1/tenants', { tenant: 'a' }, { token: 't0k' })).to.deep.equal({
      ok: true,
    });
    expect(seen[0]!.url).to.equal('https://c.example/kmaas/v1/tenants');
    const headers = seen[0]!.init.headers as Record<string, string>;
    expect(headers.authorization).to.equal('Bearer t0k');
    expect(headers['content-type']).to.equal('application/json');
    expect(seen[0]!.init.body).to.equal('{"tenant":"a"}');
    await http.get('/v1/status');
    expect((seen[1]!.init.headers as Record<string, string>).authorization).to.equal(undefined);
  });

  it('refuses a base URL that is not http(s) or carries credentials: ERR_CONFIG', () => {
    for (const baseUrl of ['not a url', 'ftp://c', 'http://user:pw@c']) {
      expect(() => new CoordinatorHttp({ baseUrl }), baseUrl)
        .to.throw()
        .with.property('code', 'ERR_CONFIG');
    }
  });
});
