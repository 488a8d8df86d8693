/**
 * `npm run bench:browser`: how long the archive page takes to open a document in Chromium:
 * download the envelope, derive its key from 3 of the 5 share nodes, decrypt it in the page and
 * hold the plaintext as a Blob (the page's own measurement, `data-open-ms` of the viewer), for a
 * 1 MB and a 50 MB document. Real processes on loopback (scripts/lib/archive-stack.ts) and
 * Debian's Chromium (KMAAS_CHROMIUM); `--runs N` opens each document N times (default 5) and
 * prints min, median and max. Also the upload (encrypt + send) time of each, once.
 */
import { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { launchChromium, newPage } from '../test/helpers/browser.ts';
import { buildBrowserSdk } from './lib/build-sdk.ts';
import { startArchiveStack } from './lib/archive-stack.ts';
import { stopOnSignal } from './lib/signals.ts';

const opts = new Command()
  .name('bench:browser')
  .option('--runs <n>', 'opens per document', '5')
  .parse()
  .opts<{ runs: string }>();
const runs = Math.max(1, Number(opts.runs));

const MB = 1024 * 1024;
const SIZES = [1 * MB, 50 * MB];

const dir = mkdtempSync(join(tmpdir(), 'kmaas-bench-browser-'));
const sdk = await buildBrowserSdk(join(dir, 'sdk', 'kmaas-sdk.js'));
console.log('starting an identity provider, 5 share nodes, a coordinator and the archive...');
const stack = await startArchiveStack({ dir, sdkBundle: sdk.outFile });
const browser = await launchChromium();
const stop = async () => {
  await browser.close().catch(() => undefined);
  await stack.close();
  rmSync(dir, { recursive: true, force: true });
};
stopOnSignal(stop);

async function openOnce(page: Page, name: string): Promise<number> {
  const before = Number((await page.getAttribute('#viewer', 'data-opens')) ?? 0);
  await page.getByRole('button', { name: `Open ${name}` }).press('Enter');
  await page.waitForSelector(
    `#viewer[data-opens="${before + 1}"]:is([data-state="open"], [data-state="refused"])`,
    { timeout: 300_000 },
  );
  if ((await page.getAttribute('#viewer', 'data-state')) !== 'open') {
    throw new Error(`${name} did not open: ${await page.textContent('#problem')}`);
  }
  return Number(await page.getAttribute('#viewer', 'data-open-ms'));
}

let failed = false;
try {
  const alice = stack.cluster.devUsers.find((u) => u.tenant === 'acme')!;
  const page = await newPage(await browser.newContext());
  await page.goto(stack.archive.url);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByLabel('Username').fill(alice.username);
  await page.getByLabel('Password').fill(alice.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('#who-text[data-tenant="acme"]');

  mkdirSync(join(dir, 'files'));
  const rows: string[] = [];
  for (const size of SIZES) {
    const name = `bench-${size / MB}MB.bin`;
    const file = join(dir, 'files', name);
    writeFileSync(file, randomBytes(size));
    await page.setInputFiles('#files', file);
    const t0 = performance.now();
    await page.getByRole('button', { name: 'Encrypt and upload' }).press('Enter');
    // Listed once it is stored.
    await page.getByRole('button', { name: `Open ${name}` }).waitFor({ timeout: 300_000 });
    const upload = Math.round(performance.now() - t0);
    const times: number[] = [];
    for (let i = 0; i < runs; i++) times.push(await openOnce(page, name));
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)]!;
    rows.push(
      `${String(size / MB).padStart(3)} MB   open: median ${median} ms (min ${times[0]}, ` +
        `max ${times[times.length - 1]}, ${runs} runs)   upload (encrypt + send): ${upload} ms`,
    );
    console.log(rows[rows.length - 1]);
  }
  console.log('');
  console.log('open = download the envelope + derive the key (3 of 5 nodes) + decrypt in the page');
} catch (err) {
  console.error(`bench:browser failed: ${(err as Error).message}`);
  failed = true;
} finally {
  await stop();
}
process.exit(failed ? 1 : 0);
