/**
 * `npm run build:sdk`: the browser SDK bundle, demo/public/build/kmaas-sdk.js (scripts/lib/
 * build-sdk.ts), and its size. `-- --out <file>` writes it elsewhere.
 */
import { Command } from 'commander';
import { resolve } from 'node:path';
import { buildBrowserSdk, DEFAULT_SDK_FILE } from './lib/build-sdk.ts';

const opts = new Command()
  .name('build:sdk')
  .option('--out <file>', 'output file', DEFAULT_SDK_FILE)
  .parse()
  .opts<{ out: string }>();

const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
try {
  const built = await buildBrowserSdk(resolve(opts.out));
  console.log(`${built.outFile}: ${kib(built.bytes)} (${kib(built.gzipBytes)} gzip)`);
} catch (err) {
  console.error((err as Error).message);
  process.exitCode = 1;
}
