/**
 * The browser login and the key path in real Chromium, against a real LocalCluster (identity
 * provider, 5 node processes, coordinator; t = 3): a test page on its own origin (listed in the
 * coordinator's KMAAS_CORS_ORIGINS and as the IdP client's redirect URI) signs alice@acme in
 * through the IdP's form with PKCE and a DPoP-bound token (client/browser-login.ts), derives a
 * document key in the page through the coordinator, and this test derives the same key on its own
 * in Node (devLogin + KmaasClient): they must be equal. The session survives a reload (token in
 * sessionStorage, non-extractable key in IndexedDB), and an envelope sealed in the page opens in
 * Node.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Browser, Page } from 'playwright-core';
import { bytesToHex } from '@noble/hashes/utils.js';
import { KmaasClient } from '../../client/index.ts';
import { MemoryPinStore } from '../../client/pins.ts';
import { devLogin } from '../../idp/dev-login.ts';
import { buildBrowserSdk } from '../../scripts/lib/build-sdk.ts';
import { ROOT } from '../../scripts/lib/child.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import {
  launchChromium,
  newPage,
  serveStatic,
  type StaticEntry,
  type StaticServer,
} from '../helpers/browser.ts';

const DOC = 'contracts/2026/browser-001.pdf';

/**
 * The test page: finishes a sign-in when the URL carries its answer, else picks up the tab's
 * session, and says what it found in window.kmaasState; the button starts a sign-in.
 */
const PAGE = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>KMaaS SDK login test</title></head>
<body><button id="login" type="button">Sign in</button>
<script type="module">
import * as sdk from '/kmaas-sdk.js';
const config = await (await fetch('/config.json')).json();
const login = { issuer: config.issuer, clientId: 'kmaas-dev', redirectUri: location.origin + '/' };
let state;
try {
  const session = (await sdk.completeLogin(login)) ?? (await sdk.currentSession(login));
  window.kmaasSession = session;
  state = session
    ? { subject: session.subject, tenant: session.tenant, issuer: session.issuer,
        expiresAt: session.expiresAt, extractable: session.dpopKey.privateKey.extractable }
    : { subject: null };
} catch (err) {
  state = { error: err.code ?? String(err), ...(err.details?.error ? { oauthError: err.details.error } : {}) };
}
window.kmaas = { sdk, config, login };
window.kmaasState = state;
document.getElementById('login').onclick = () => sdk.beginLogin(login);
document.body.dataset.ready = 'yes';
</script></body></html>`;

interface PageState {
  subject?: string | null;
  tenant?: string;
  issuer?: string;
  expiresAt?: number;
  extractable?: boolean;
  error?: string;
  oauthError?: string;
}

interface TestWindow {
  kmaas: {
    sdk: typeof import('../../client/browser.ts');
    config: { coordinator: string; pins: { tenant: string; version: number; groupKey: string }[] };
    login: import('../../client/browser.ts').LoginOptions;
  };
  kmaasSession: import('../../client/browser.ts').BrowserSession | null;
  kmaasState: PageState;
}

describe('browser login (PKCE + DPoP) and key derivation in Chromium against a LocalCluster', function () {
  this.timeout(180_000);
  let dir: string;
  let cluster: LocalCluster;
  let server: StaticServer;
  let browser: Browser;
  let page: Page;
  let groupKey: string;
  const routes: Record<string, StaticEntry> = { '/': { body: PAGE } };

  async function ready(on: Page = page): Promise<PageState> {
    await on.waitForSelector('body[data-ready="yes"]');
    return on.evaluate(() => (window as unknown as TestWindow).kmaasState);
  }

  /** Derive the document's key in the page with the page's session; hex and the nodes. */
  function deriveInPage(): Promise<{ key: string; nodes: number[] }> {
    return page.evaluate(async (doc) => {
      const w = window as unknown as TestWindow;
      const { sdk, config } = w.kmaas;
      const client = new sdk.KmaasClient({
        baseUrl: config.coordinator,
        pins: new sdk.MemoryPinStore(config.pins),
        auth: w.kmaasSession!,
      });
      const { keys, nodes } = await client.deriveKeys('acme', 1, [doc]);
      const key = Array.from(keys[0]!, (b) => b.toString(16).padStart(2, '0')).join('');
      return { key, nodes };
    }, DOC);
  }

  async function deriveInNode(documentId: string): Promise<string> {
    const alice = cluster.devUsers.find((u) => u.username === 'alice')!;
    const login = await devLogin({ issuer: cluster.issuer, ...alice });
    const client = new KmaasClient({
      baseUrl: cluster.url,
      pins: new MemoryPinStore([{ tenant: 'acme', version: 1, groupKey }]),
      auth: { accessToken: login.accessToken, dpopKey: login.dpopKey },
    });
    const { keys } = await client.deriveKeys('acme', 1, [documentId]);
    return bytesToHex(keys[0]!);
  }

  before(async function () {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-browser-login-'));
    const bundle = join(dir, 'kmaas-sdk.js');
    await buildBrowserSdk(bundle);
    routes['/kmaas-sdk.js'] = { file: bundle };
    routes['/kmaas-sdk.js.map'] = { file: `${bundle}.map` };
    server = await serveStatic(routes);
    cluster = new LocalCluster({
      dataDir: join(dir, 'cluster'),
      redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      redisPrefix: `kmaas:test:${randomBytes(6).toString('hex')}:`,
      cleanRedisOnStop: true,
      idpRedirectUris: [`${server.origin}/`],
      corsOrigins: [server.origin],
    });
    await cluster.start();
    const r = spawnSync(
      process.execPath,
      [
        join(ROOT, 'cli', 'kmaas.mjs'),
        '--cluster',
        cluster.clusterFile,
        'tenant',
        'create',
        'acme',
        '--threshold',
        '3',
      ],
      { encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(`tenant create failed: ${r.stderr}`);
    const pins = JSON.parse(readFileSync(cluster.pinsFile, 'utf8')) as {
      pins: Record<string, Record<string, string>>;
    };
    groupKey = pins.pins.acme!['1']!;
    routes['/config.json'] = {
      body: JSON.stringify({
        issuer: cluster.issuer,
        coordinator: cluster.url,
        pins: [{ tenant: 'acme', version: 1, groupKey }],
      }),
    };
    browser = await launchChromium();
    page = await newPage(browser);
  });

  after(async function () {
    await browser?.close();
    await server?.close();
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a fresh page has no session', async function () {
    await page.goto(`${server.origin}/`);
    expect(await ready()).to.deep.equal({ subject: null });
  });

  it('signs alice in through the IdP form and comes back with a DPoP-bound session for acme', async function () {
    const alice = cluster.devUsers.find((u) => u.username === 'alice')!;
    await page.click('#login');
    await page.waitForURL((url) => url.origin === cluster.issuer);
    await page.getByLabel('Username').fill(alice.username);
    await page.getByLabel('Password').fill(alice.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL((url) => url.origin === server.origin);
    const state = await ready();
    expect(state).to.include({
      subject: 'alice',
      tenant: 'acme',
      issuer: cluster.issuer,
      extractable: false,
    });
    expect(state.expiresAt).to.be.greaterThan(Date.now());
    // The code and state are gone from the address bar: a reload cannot redeem them again.
    expect(new URL(page.url()).search).to.equal('');
  });

  it('the page derives the document key, equal to the one derived independently in Node', async function () {
    const inPage = await deriveInPage();
    expect(inPage.nodes).to.have.length(3);
    expect(inPage.key).to.match(/^[0-9a-f]{64}$/);
    expect(inPage.key).to.equal(await deriveInNode(DOC));
  });

  it('after a reload the session is still there, its key still not extractable, and derives the same key', async function () {
    const before = await deriveInPage();
    await page.reload();
    expect(await ready()).to.include({ subject: 'alice', tenant: 'acme', extractable: false });
    const exported = await page.evaluate(async () => {
      const key = (window as unknown as TestWindow).kmaasSession!.dpopKey.privateKey;
      return crypto.subtle.exportKey('jwk', key).then(
        () => 'exported',
        (err: Error) => err.name,
      );
    });
    expect(exported).to.equal('InvalidAccessError');
    expect((await deriveInPage()).key).to.equal(before.key);
  });

  it('an envelope sealed in the page with KmaasClient.encrypt opens in Node as alice', async function () {
    const sealed = await page.evaluate(async () => {
      const w = window as unknown as TestWindow;
      const { sdk, config } = w.kmaas;
      const client = new sdk.KmaasClient({
        baseUrl: config.coordinator,
        pins: new sdk.MemoryPinStore(config.pins),
        auth: w.kmaasSession!,
      });
      const text = new TextEncoder().encode('sealed in Chromium, opened in Node');
      const source = new Blob([text]).stream() as unknown as AsyncIterable<Uint8Array>;
      const out = await client.encrypt(source, { tenant: 'acme', documentId: 'notes/b.txt' });
      const bytes: number[] = [];
      for await (const p of out) bytes.push(...p);
      return bytes;
    });
    const alice = cluster.devUsers.find((u) => u.username === 'alice')!;
    const login = await devLogin({ issuer: cluster.issuer, ...alice });
    const client = new KmaasClient({
      baseUrl: cluster.url,
      pins: new MemoryPinStore([{ tenant: 'acme', version: 1, groupKey }]),
      auth: { accessToken: login.accessToken, dpopKey: login.dpopKey },
    });
    const opened = await client.decrypt(Readable.from([Buffer.from(sealed)]), {
      documentId: 'notes/b.txt',
    });
    const parts: Uint8Array[] = [];
    for await (const p of opened) parts.push(p);
    expect(Buffer.concat(parts).toString('utf8')).to.equal('sealed in Chromium, opened in Node');
  });

  it('createDpopProof signs a proof with the session key that names the request and the token', async function () {
    const claims = await page.evaluate(async () => {
      const w = window as unknown as TestWindow;
      const session = w.kmaasSession!;
      const proof = await w.kmaas.sdk.createDpopProof(session.dpopKey, {
        htm: 'GET',
        htu: 'https://archive.example.com/api/documents?x=1#y',
        accessToken: session.accessToken,
      });
      const [header, payload] = proof
        .split('.')
        .slice(0, 2)
        .map(
          (p) =>
            JSON.parse(atob(p.replace(/-/g, '+').replace(/_/g, '/'))) as Record<string, unknown>,
        );
      return {
        header,
        payload,
        jkt: await w.kmaas.sdk.dpopThumbprint(session.dpopKey),
        token: session.accessToken,
      };
    });
    expect(claims.header).to.include({ typ: 'dpop+jwt', alg: 'ES256' });
    expect(claims.payload).to.include({
      htm: 'GET',
      htu: 'https://archive.example.com/api/documents',
    });
    // ath = base64url(SHA-256(access token)), computed here on its own.
    expect(claims.payload?.ath).to.equal(
      createHash('sha256').update(claims.token).digest('base64url'),
    );
    // The token is bound to this very key.
    const cnf = JSON.parse(Buffer.from(claims.token.split('.')[1]!, 'base64url').toString()) as {
      cnf: { jkt: string };
    };
    expect(cnf.cnf.jkt).to.equal(claims.jkt);
  });

  it('an answer that no sign-in of this tab started is refused with ERR_IDP_PROTOCOL', async function () {
    await page.goto(
      `${server.origin}/?code=forged&state=forged&iss=${encodeURIComponent(cluster.issuer)}`,
    );
    expect(await ready()).to.deep.equal({ error: 'ERR_IDP_PROTOCOL' });
  });

  it('a refusal by the provider comes back as ERR_IDP_PROTOCOL with its OAuth error', async function () {
    // A browser of its own: the provider's login cookie of the tab above would sign in at once.
    const context = await browser.newContext();
    try {
      const other = await newPage(context);
      await other.goto(`${server.origin}/`);
      await ready(other);
      // Start a sign-in, note its state on the way to the provider, and come back as a provider
      // that refused would (RFC 6749 section 4.1.2.1).
      const authorize = other.waitForRequest((r) => r.url().startsWith(`${cluster.issuer}/auth`));
      await other.click('#login');
      const state = new URL((await authorize).url()).searchParams.get('state')!;
      await other.waitForURL((url) => url.origin === cluster.issuer);
      const answer = new URLSearchParams({ error: 'access_denied', state, iss: cluster.issuer });
      await other.goto(`${server.origin}/?${answer.toString()}`);
      expect(await ready(other)).to.deep.equal({
        error: 'ERR_IDP_PROTOCOL',
        oauthError: 'access_denied',
      });
    } finally {
      await context.close();
    }
  });

  it('logout forgets the session: after a reload there is none', async function () {
    await page.goto(`${server.origin}/`);
    await ready();
    await page.evaluate(() => (window as unknown as TestWindow).kmaas.sdk.logout());
    await page.reload();
    expect(await ready()).to.deep.equal({ subject: null });
  });
});
