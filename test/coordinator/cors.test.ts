/**
 * KMAAS_CORS_ORIGINS (coordinator/cors.ts): a listed origin gets its preflight answered and may
 * read the answers; any other origin gets no CORS header at all; without the setting nothing
 * changes. Over real HTTP against a coordinator.
 */
import { expect } from 'chai';
import { loadConfig } from '../../coordinator/config.ts';
import { KmaasError } from '../../shared/errors.ts';
import { Cluster } from './helpers.ts';

const APP = 'http://127.0.0.1:8123';
const BASE_ENV = {
  KMAAS_NODES: '[{"id":1,"url":"ws://127.0.0.1:41001/v1/ws"}]',
  KMAAS_CLUSTER_TOKEN: 'cluster-token-0123456789',
  KMAAS_OIDC_ISSUER: 'https://id.example.com',
  KMAAS_ADMIN_TOKEN: 'admin-token-0123456789',
};

function preflight(port: number, origin: string, path = '/v1/tenants/acme/keys/1/evaluate') {
  return fetch(`http://127.0.0.1:${port}${path}`, {
    method: 'OPTIONS',
    headers: {
      origin,
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization,dpop,content-type',
    },
  });
}

describe('coordinator: CORS for browser pages (KMAAS_CORS_ORIGINS)', function () {
  describe('configuration', function () {
    it('is empty by default and reads a comma-separated list of exact origins', () => {
      expect(loadConfig(BASE_ENV).corsOrigins).to.deep.equal([]);
      const c = loadConfig({
        ...BASE_ENV,
        KMAAS_CORS_ORIGINS: ' https://archive.example.com, http://127.0.0.1:8080 ',
      });
      expect(c.corsOrigins).to.deep.equal(['https://archive.example.com', 'http://127.0.0.1:8080']);
    });

    for (const bad of ['*', 'https://a.example.com/', 'https://a.example.com/app', 'ftp://a.b']) {
      it(`refuses ${bad} with ERR_CONFIG naming KMAAS_CORS_ORIGINS`, () => {
        let err: unknown;
        try {
          loadConfig({ ...BASE_ENV, KMAAS_CORS_ORIGINS: bad });
        } catch (e) {
          err = e;
        }
        expect(err).to.be.instanceOf(KmaasError);
        expect((err as KmaasError).code).to.equal('ERR_CONFIG');
        expect((err as KmaasError).details).to.deep.equal({ setting: 'KMAAS_CORS_ORIGINS' });
      });
    }
  });

  describe('with one origin listed', function () {
    let cluster: Cluster;
    before(async () => {
      cluster = await Cluster.start({ nodes: 1, config: { corsOrigins: [APP] } });
    });
    after(() => cluster?.close());
    const port = () => cluster.coordinator!.port;

    it('answers its preflight with the methods and headers the SDK sends, and no credentials', async () => {
      const res = await preflight(port(), APP);
      expect(res.status).to.equal(204);
      expect(res.headers.get('access-control-allow-origin')).to.equal(APP);
      expect(res.headers.get('access-control-allow-methods')).to.equal('GET, POST');
      const allowed = res.headers.get('access-control-allow-headers')!.toLowerCase().split(', ');
      expect(allowed).to.include.members(['authorization', 'dpop', 'content-type']);
      expect(res.headers.get('access-control-allow-credentials')).to.equal(null);
      expect(res.headers.get('vary')).to.match(/origin/i);
    });

    it('marks its GET answers, errors too, as readable by it', async () => {
      const ok = await fetch(`http://127.0.0.1:${port()}/healthz`, { headers: { origin: APP } });
      expect(ok.status).to.equal(200);
      expect(ok.headers.get('access-control-allow-origin')).to.equal(APP);
      expect(ok.headers.get('access-control-expose-headers')).to.include('X-Request-Id');
      const missing = await fetch(`http://127.0.0.1:${port()}/v1/nothing`, {
        headers: { origin: APP },
      });
      expect(missing.status).to.equal(404);
      expect(missing.headers.get('access-control-allow-origin')).to.equal(APP);
    });

    it('gives another origin, or the same host on another port, no CORS header', async () => {
      for (const other of ['http://127.0.0.1:8124', 'https://evil.example.com', 'null']) {
        const pre = await preflight(port(), other);
        expect(pre.headers.get('access-control-allow-origin')).to.equal(null);
        expect(pre.headers.get('access-control-allow-methods')).to.equal(null);
        const get = await fetch(`http://127.0.0.1:${port()}/healthz`, {
          headers: { origin: other },
        });
        expect(get.headers.get('access-control-allow-origin')).to.equal(null);
      }
    });
  });

  describe('without the setting', function () {
    let cluster: Cluster;
    before(async () => {
      cluster = await Cluster.start({ nodes: 1 });
    });
    after(() => cluster?.close());

    it('sends no CORS header to any origin', async () => {
      const port = cluster.coordinator!.port;
      const pre = await preflight(port, APP);
      expect(pre.headers.get('access-control-allow-origin')).to.equal(null);
      const get = await fetch(`http://127.0.0.1:${port}/healthz`, { headers: { origin: APP } });
      expect(get.headers.get('access-control-allow-origin')).to.equal(null);
    });
  });
});
