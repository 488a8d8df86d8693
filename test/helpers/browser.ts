/**
 * Real Chromium for the browser tests (playwright-core drives the Debian `chromium` package; no
 * browser is downloaded), and a tiny static server on 127.0.0.1 port 0 for a test page and the
 * SDK bundle. A missing browser fails the test with the way to install it; it is never a skip.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

export const CHROMIUM_PATH = process.env.KMAAS_CHROMIUM ?? '/usr/bin/chromium';

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `Chromium not found at ${CHROMIUM_PATH}: install it (apt-get install -y chromium, as ` +
        '.ci/run does) or set KMAAS_CHROMIUM to its executable',
    );
  }
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    // Root in CI and containers: Chromium's sandbox needs user namespaces it may not have there.
    args: ['--no-sandbox'],
  });
}

/**
 * A new page (in a context of its own when none is given) on which functions passed to
 * page.evaluate work: tsx compiles the tests with esbuild's keepNames, which wraps named
 * functions in a `__name(fn, "name")` helper that exists in Node but not in the page.
 */
export async function newPage(from: Browser | BrowserContext): Promise<Page> {
  const page = await from.newPage();
  await page.addInitScript('globalThis.__name = (fn) => fn;');
  return page;
}

/** A route: a file on disk, or content made in the test. */
export type StaticEntry = { file: string } | { body: string | Uint8Array };

export interface StaticServer {
  /** http://127.0.0.1:<port> */
  origin: string;
  close(): Promise<void>;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.json': 'application/json',
  '.css': 'text/css',
};

function contentType(path: string): string {
  const ext = /\.[a-z]+$/.exec(path)?.[0] ?? '';
  return TYPES[ext] ?? 'application/octet-stream';
}

/**
 * Serve `routes` (exact paths, e.g. '/', '/kmaas-sdk.js') on 127.0.0.1 port 0; everything else is
 * 404. A path routed to '/' also answers with its query string (a redirect URI comes back with
 * `?code=...`). Files are read at each request, so a rebuilt bundle is served as it is.
 */
export async function serveStatic(routes: Record<string, StaticEntry>): Promise<StaticServer> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    const entry = routes[path];
    if (req.method !== 'GET' || !entry) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    const body = 'file' in entry ? readFileSync(entry.file) : entry.body;
    const type = contentType('file' in entry ? entry.file : path === '/' ? '.html' : path);
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
