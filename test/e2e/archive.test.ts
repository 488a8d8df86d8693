/**
 * The archive demo end to end, as its users meet it (issue 5): real processes (identity
 * provider, 5 share nodes, coordinator; LocalCluster), the archive server, and Debian's Chromium
 * driven by playwright-core through the page (demo/public). Alice of acme signs in through the
 * identity provider's form, uploads a real PDF of a few MB, reloads, opens it and downloads it:
 * the bytes equal the original; with 2 of the 5 nodes SIGKILLed it opens again; Bob of globex
 * tries and is refused, and the page says who he is, whose document it is and the code.
 *
 * Afterwards the archive's whole data folder (SQLite database with its WAL, envelope files,
 * anything else) is searched for the plaintext and for the document key, derived on its own in
 * Node (devLogin + KmaasClient) and checked to open the stored envelope: neither is found.
 *
 * Screenshots of the main screens go to test-artifacts/screenshots/.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { PDFDocument, PDFName, PDFString, StandardFonts } from 'pdf-lib';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { generateDpopKey, KmaasClient, MemoryPinStore } from '../../client/index.ts';
import { decryptStream } from '../../client/envelope.ts';
import { pinsFromFile } from '../../demo/server.ts';
import { devLogin } from '../../idp/dev-login.ts';
import { buildBrowserSdk } from '../../scripts/lib/build-sdk.ts';
import { ROOT } from '../../scripts/lib/child.ts';
import { startArchiveStack, type ArchiveStack } from '../../scripts/lib/archive-stack.ts';
import { launchChromium, newPage } from '../helpers/browser.ts';

const SHOTS = join(ROOT, 'test-artifacts', 'screenshots');

/** A real PDF with a visible marker, the marker also as a raw string, and ~3 MB of payload. */
async function makePdf(marker: string): Promise<Buffer> {
  const doc = await PDFDocument.create();
  const font = await doc.embedFont(StandardFonts.Helvetica);
  const page = doc.addPage();
  page.drawText('KMaaS archive test document', { x: 50, y: 740, size: 18, font });
  page.drawText(marker, { x: 50, y: 700, size: 12, font });
  // The page's text is compressed; this copy is not, so that the search below can find it.
  doc.catalog.set(PDFName.of('KmaasTestMarker'), PDFString.of(marker));
  await doc.attach(randomBytes(3 * 1024 * 1024), 'payload.bin', {
    mimeType: 'application/octet-stream',
  });
  return Buffer.from(await doc.save({ useObjectStreams: false }));
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

describe('archive demo end to end in Chromium (demo/, issue 5)', function () {
  this.timeout(300_000);
  let dir: string;
  let stack: ArchiveStack;
  let browser: Browser;
  let alice: BrowserContext;
  let page: Page;
  let pdf: Buffer;
  const marker = `KMAAS-MARKER-${randomBytes(16).toString('hex')}`;
  const NAME = 'contract-2026-001.pdf';

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    dir = mkdtempSync(join(tmpdir(), 'kmaas-archive-e2e-'));
    const sdk = await buildBrowserSdk(join(dir, 'sdk', 'kmaas-sdk.js'));
    stack = await startArchiveStack({ dir, sdkBundle: sdk.outFile });
    browser = await launchChromium();
    pdf = await makePdf(marker);
    expect(pdf.includes(Buffer.from(marker)), 'the marker is in the plaintext').to.equal(true);
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    await stack?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const user = (tenant: string) => stack.cluster.devUsers.find((u) => u.tenant === tenant)!;

  async function signIn(context: BrowserContext, tenant: string): Promise<Page> {
    const p = await newPage(context);
    const u = user(tenant);
    await p.goto(stack.archive.url);
    await p.getByRole('button', { name: 'Sign in' }).click();
    // The identity provider's own form.
    await p.getByLabel('Username').fill(u.username);
    await p.getByLabel('Password').fill(u.password);
    await p.getByRole('button', { name: 'Sign in' }).click();
    await p.waitForSelector(`#who-text[data-tenant="${tenant}"]`);
    return p;
  }

  /** Open the document from the list; resolves with the viewer's state once this open ended. */
  async function open(p: Page): Promise<string> {
    const before = Number((await p.getAttribute('#viewer', 'data-opens')) ?? 0);
    // By keyboard, as the page must allow. (A mouse click was lost now and then once a PDF was
    // shown: headless Chromium's PDF viewer in the frame below seems to keep the pointer.)
    await p.getByRole('button', { name: `Open ${NAME}` }).press('Enter');
    await p.waitForSelector(
      `#viewer[data-opens="${before + 1}"]:is([data-state="open"], [data-state="refused"])`,
      { timeout: 60_000 },
    );
    return (await p.getAttribute('#viewer', 'data-state'))!;
  }

  async function download(p: Page): Promise<Buffer> {
    const [file] = await Promise.all([p.waitForEvent('download'), p.click('#download')]);
    return readFileSync(await file.path());
  }

  /** The share nodes the page says made the key of the document shown. */
  async function nodesShown(p: Page): Promise<number[]> {
    const info = (await p.textContent('#viewer-info')) ?? '';
    const m = /share nodes ([\d, ]+)\./.exec(info);
    expect(m, info).to.not.equal(null);
    return m![1]!.split(',').map((s) => Number(s.trim()));
  }

  it('alice signs in, uploads a PDF of a few MB, reloads, opens it: the bytes are the same', async () => {
    alice = await browser.newContext({ acceptDownloads: true });
    page = await signIn(alice, 'acme');
    await page.screenshot({ path: join(SHOTS, '1-signed-in.png'), fullPage: true });

    await page.setInputFiles('#files', { name: NAME, mimeType: 'application/pdf', buffer: pdf });
    await page.click('#upload');
    await page.waitForFunction(
      () => document.getElementById('status')?.textContent === '1 of 1 document uploaded.',
      null,
      { timeout: 60_000 },
    );
    await page.screenshot({ path: join(SHOTS, '2-uploaded.png'), fullPage: true });
    const stored = stack.archive.store.list();
    expect(stored.map((d) => [d.name, d.size, d.tenant, d.owner])).to.deep.equal([
      [NAME, pdf.length, 'acme', 'alice'],
    ]);

    await page.reload();
    await page.waitForSelector('#who-text[data-tenant="acme"]');
    expect(await open(page)).to.equal('open');
    expect((await nodesShown(page)).length).to.equal(3);
    await page.screenshot({ path: join(SHOTS, '3-opened.png'), fullPage: true });
    expect((await download(page)).equals(pdf)).to.equal(true);
  });

  it('with 2 of the 5 share nodes SIGKILLed, it opens again, from the other nodes', async () => {
    // Kill two of the nodes that made the key last time, so the coordinator must go around.
    const [a, b] = await nodesShown(page);
    await stack.cluster.killNode(a!);
    await stack.cluster.killNode(b!);
    expect(await open(page)).to.equal('open');
    const nodes = await nodesShown(page);
    expect(nodes).to.have.length(3);
    expect(
      nodes.some((n) => n === a || n === b),
      `${nodes.join()} after killing ${a}, ${b}`,
    ).to.equal(false);
    expect((await download(page)).equals(pdf)).to.equal(true);
  });

  it('bob of globex tries to open it: refused, and the page says who he is, whose it is and the code', async () => {
    const bobContext = await browser.newContext();
    const bob = await signIn(bobContext, 'globex');
    expect(await open(bob)).to.equal('refused');
    expect(await bob.getAttribute('#viewer', 'data-error-code')).to.equal('ERR_TOKEN_TENANT');
    const text = (await bob.textContent('#problem')) ?? '';
    expect(text).to.contain('You are bob of tenant globex.');
    expect(text).to.contain(`"${NAME}" belongs to tenant acme.`);
    expect(text).to.contain('ERR_TOKEN_TENANT');
    // The viewer, where focus went, says so too; the status line is an error, no bar is left.
    const info = (await bob.textContent('#viewer-info')) ?? '';
    expect(info).to.contain('You are bob of tenant globex.');
    expect(info).to.contain('ERR_TOKEN_TENANT');
    expect(await bob.getAttribute('#status', 'class')).to.contain('error');
    expect(await bob.isVisible('#open-progress')).to.equal(false);
    expect(await bob.isVisible('#download')).to.equal(false);
    await bob.screenshot({ path: join(SHOTS, '4-refused.png'), fullPage: true });
    // The same screen on a phone: one column.
    await bob.setViewportSize({ width: 375, height: 812 });
    await bob.screenshot({ path: join(SHOTS, '5-refused-phone.png'), fullPage: true });
    // Signing out clears the error box and leaves focus on the status line.
    await bob.getByRole('button', { name: 'Sign out' }).press('Enter');
    await bob.waitForFunction(
      () => document.getElementById('status')?.textContent === 'Signed out.',
    );
    expect(await bob.isVisible('#problem')).to.equal(false);
    expect(await bob.evaluate(() => document.activeElement?.id)).to.equal('status');
    await bobContext.close();
  });

  it("the archive's storage holds neither the plaintext nor the document key", async () => {
    const [doc] = stack.archive.store.list();
    // The key, derived independently in Node as alice would.
    const u = user('acme');
    const { accessToken, dpopKey } = await devLogin({
      issuer: stack.cluster.issuer,
      username: u.username,
      password: u.password,
      dpopKey: await generateDpopKey(),
    });
    const pins = await pinsFromFile(stack.cluster.pinsFile);
    const client = new KmaasClient({
      baseUrl: stack.cluster.url,
      auth: { accessToken, dpopKey },
      pins: new MemoryPinStore(pins),
    });
    const { keys } = await client.deriveKeys('acme', doc!.keyVersion, [doc!.documentId]);
    const key = Buffer.from(keys[0]!);
    // It is the key: it opens the stored envelope to the original.
    const envelope = readFileSync(stack.archive.store.blobPath(doc!.id));
    const parts: Uint8Array[] = [];
    for await (const part of decryptStream(Readable.from([envelope]), key)) parts.push(part);
    expect(Buffer.concat(parts).equals(pdf)).to.equal(true);

    const needles: [string, Buffer][] = [
      ['marker', Buffer.from(marker)],
      ['marker (UTF-16)', Buffer.from(marker, 'utf16le')],
      ['PDF bytes', pdf.subarray(pdf.length - 4096)],
      ['payload bytes', pdf.subarray(pdf.length >> 1, (pdf.length >> 1) + 64)],
      ['key', key],
      ['key hex', Buffer.from(key.toString('hex'))],
      ['key HEX', Buffer.from(key.toString('hex').toUpperCase())],
      ['key base64', Buffer.from(key.toString('base64'))],
      ['key base64url', Buffer.from(key.toString('base64url'))],
    ];
    const files = filesUnder(stack.archiveDir);
    expect(files.some((f) => f.endsWith('archive.sqlite'))).to.equal(true);
    expect(files.some((f) => f.endsWith(doc!.id))).to.equal(true);
    for (const file of files) {
      const bytes = readFileSync(file);
      for (const [what, needle] of needles) {
        expect(bytes.includes(needle), `${what} in ${file}`).to.equal(false);
      }
    }
  });

  it('a second Open while the first is under way shows the second only; focus and bars follow the work', async () => {
    const NOTE = 'notes.txt';
    const note = `NOTE-${randomBytes(8).toString('hex')}`;
    await page.setInputFiles('#files', {
      name: NOTE,
      mimeType: 'text/plain',
      buffer: Buffer.from(note),
    });
    await page.getByRole('button', { name: 'Encrypt and upload' }).press('Enter');
    await page.waitForFunction(
      () => document.getElementById('status')?.textContent === '1 of 1 document uploaded.',
      null,
      { timeout: 60_000 },
    );
    expect(await page.evaluate(() => document.activeElement?.id)).to.equal('status');
    expect(await page.locator('#uploads progress').count(), 'bars left after upload').to.equal(0);
    await page.waitForSelector(`#documents button[aria-label^="Open ${NOTE}, uploaded by alice"]`);

    // The PDF (3 MB) first, then at once the note: the note wins, whatever ends first.
    const before = Number((await page.getAttribute('#viewer', 'data-opens')) ?? 0);
    await page.getByRole('button', { name: `Open ${NAME}` }).press('Enter');
    await page.getByRole('button', { name: `Open ${NOTE}` }).press('Enter');
    await page.waitForSelector(`#viewer[data-opens="${before + 2}"][data-state="open"]`, {
      timeout: 60_000,
    });
    // Time for the PDF's open to finish, had it not been cancelled.
    await page.waitForTimeout(2000);
    expect(await page.textContent('#viewer-title')).to.equal(NOTE);
    expect(await page.textContent('#viewer-body')).to.contain(note);
    expect(await page.getAttribute('#download', 'download')).to.equal(NOTE);
    expect(await page.locator('#viewer-body iframe').count()).to.equal(0);
    expect(await page.isVisible('#open-progress')).to.equal(false);
    expect(await page.textContent('#status')).to.equal(`Opened ${NOTE}.`);

    // Deleting the document shown empties the viewer; focus goes to the list's heading.
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: `Delete ${NOTE}` }).press('Enter');
    await page.waitForFunction(
      () => document.getElementById('status')?.textContent === 'Deleted notes.txt.',
    );
    await page.waitForSelector('#viewer', { state: 'hidden' });
    expect(await page.evaluate(() => document.activeElement?.id)).to.equal('docs-title');
  });

  it('with too few share nodes, the page says the key service could not reach enough of them', async () => {
    const running = [...stack.cluster.nodes].filter(([, n]) => n.running).map(([id]) => id);
    // Leave 2 of the 5 (the threshold is 3).
    const killed = running.slice(0, running.length - 2);
    for (const id of killed) await stack.cluster.killNode(id);
    try {
      expect(await open(page)).to.equal('refused');
      expect(await page.getAttribute('#viewer', 'data-error-code')).to.equal('ERR_TOO_FEW_NODES');
      const text = (await page.textContent('#problem')) ?? '';
      expect(text).to.contain('could not reach enough share nodes: try again in a few seconds');
      // Alice's own tenant: no "x belongs to tenant acme" beside "you are of tenant acme".
      expect(text).to.not.contain('belongs to tenant');
      expect(await page.textContent('#viewer-info')).to.contain(
        'could not reach enough share nodes',
      );
      expect(await page.getAttribute('#status', 'class')).to.contain('error');
      expect(await page.isVisible('#open-progress')).to.equal(false);
    } finally {
      for (const id of [...stack.cluster.nodes.keys()]) {
        if (!stack.cluster.nodes.get(id)!.running) await stack.cluster.startNode(id);
      }
    }
  });

  it('when the 10-minute session expires, the page shows the signed-out state and says so', async () => {
    await page.clock.install();
    await page.reload();
    await page.waitForSelector('#who-text[data-tenant="acme"]');
    await page.clock.fastForward('11:00');
    await page.waitForFunction(
      () =>
        document.getElementById('who-text')?.textContent ===
        'Your session has expired: sign in again.',
    );
    expect(await page.isVisible('#sign-in')).to.equal(true);
    expect(await page.isVisible('#sign-out')).to.equal(false);
    expect(await page.isVisible('#app')).to.equal(false);
    expect(await page.textContent('#status')).to.equal('Your session has expired: sign in again.');
  });
});
