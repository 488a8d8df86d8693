/**
 * Bundles the browser SDK (client/browser.ts) into one ES module with esbuild: format esm,
 * platform browser, target es2022, minified, with a source map beside it. A page imports it as
 * it is (`import { KmaasClient } from '/build/kmaas-sdk.js'`).
 *
 * The bundle must not reach for Node: any `node:` import (or a bare Node built-in such as
 * `crypto`) in the module graph fails the build, naming the module that asked for it, instead of
 * leaving a bundle that breaks in the browser at run time.
 *
 *   npm run build:sdk                   -> demo/public/build/kmaas-sdk.js (+ .map)
 *   await buildBrowserSdk('/tmp/x.js')  -> the same, elsewhere
 */
import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { build, type Plugin } from 'esbuild';
import { KmaasError } from '../../shared/errors.ts';
import { ROOT } from './child.ts';

export const DEFAULT_SDK_FILE = join(ROOT, 'demo', 'public', 'build', 'kmaas-sdk.js');
export const SDK_ENTRY = join(ROOT, 'client', 'browser.ts');

export interface SdkBuild {
  outFile: string;
  /** Size of the bundle, raw and gzip-compressed, in bytes. */
  bytes: number;
  gzipBytes: number;
}

const NODE_BUILTINS = new Set(builtinModules);

/** Refuses every import of a Node built-in, with the importer named. */
const noNodeModules: Plugin = {
  name: 'no-node-modules',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      const bare = args.path.replace(/^node:/, '').split('/')[0]!;
      if (args.path.startsWith('node:') || NODE_BUILTINS.has(bare)) {
        return { errors: [{ text: `the browser SDK must not import ${args.path}` }] };
      }
      return undefined;
    });
  },
};

/**
 * zod re-exports every translation of its error messages (`z.locales`, about 200 KiB minified)
 * from one index module, which no tree shaking can drop because `z` is one namespace object. The
 * SDK's messages are English (zod's default, imported on its own by zod), so the index is
 * replaced by an empty module.
 */
const noZodLocales: Plugin = {
  name: 'no-zod-locales',
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      /[\\/]zod[\\/]/.test(args.importer) ? { path: 'zod-locales', namespace: 'empty' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'empty' }, () => ({ contents: 'export {};' }));
  },
};

/** Build the bundle; rejects with ERR_CONFIG naming every offending import when one is found. */
export async function buildBrowserSdk(
  outFile: string = DEFAULT_SDK_FILE,
  /** Another entry module (a test checks the refusal of Node imports with one). */
  entry: string = SDK_ENTRY,
): Promise<SdkBuild> {
  try {
    await build({
      entryPoints: [entry],
      outfile: outFile,
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      minify: true,
      sourcemap: true,
      legalComments: 'linked',
      logLevel: 'silent',
      plugins: [noNodeModules, noZodLocales],
    });
  } catch (err) {
    const errors = (err as { errors?: { text: string; location?: { file: string } | null }[] })
      .errors;
    const reasons = (errors ?? []).map((e) =>
      e.location ? `${e.location.file}: ${e.text}` : e.text,
    );
    throw new KmaasError(
      'ERR_CONFIG',
      `browser SDK build failed: ${reasons.join('; ') || String(err)}`,
      { errors: reasons },
    );
  }
  const code = readFileSync(outFile);
  return { outFile, bytes: code.length, gzipBytes: gzipSync(code).length };
}
