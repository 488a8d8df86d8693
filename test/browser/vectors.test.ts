/**
 * The browser SDK bundle, run inside real Chromium:
 *   - RFC 9497 A.1.2 (ristretto255-SHA512, VOPRF mode) through the threshold path, as
 *     test/shared/threshold-voprf.test.ts does it in Node: the vector key is split t-of-n here,
 *     the page blinds the vector inputs with the vector blinds (the bundle's `protocol.blind`),
 *     the "nodes" (this test, with the shares) evaluate, and the page verifies and combines every
 *     t-subset's answers (`protocol.deriveOutputs`); the outputs must be the vector's;
 *   - the envelope in the browser: an envelope the page makes is opened here by an independent
 *     decryption with node:crypto, one made here is opened by the page, and a few MiB go through
 *     the page's encrypting and decrypting streams and come back the same.
 */
import { expect } from 'chai';
import { createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { encryptStream } from '../../client/envelope.ts';
import { decodeElement, encodeScalar, Fn, toB64 } from '../../shared/encoding.ts';
import type { ParsedKeyPackage } from '../../shared/key-package.ts';
import { split, type Share } from '../../shared/shamir.ts';
import { buildBrowserSdk } from '../../scripts/lib/build-sdk.ts';
import { launchChromium, newPage, serveStatic, type StaticServer } from '../helpers/browser.ts';
import { evaluateAt, packageFor, subsets } from '../helpers/threshold.ts';
import { loadVectors, type VoprfVectorFile } from '../helpers/vectors.ts';

const file = loadVectors<VoprfVectorFile>('rfc9497-ristretto255-sha512-voprf.json');
const secret = Fn.fromBytes(hexToBytes(file.skSm));

const PAGE = '<!DOCTYPE html><html><head><meta charset="utf-8"><title>sdk</title></head></html>';

/** The bytes that make @noble's RandomScalar return s (test/helpers/rng.ts): LE(s - 1). */
const rngBytesFor = (s: bigint) => bytesToHex(encodeScalar(Fn.sub(s, 1n)));

/** The page's handle on the bundle (set up by an init script, see before()). */
interface SdkWindow {
  kmaasSdk: () => Promise<typeof import('../../client/browser.ts')>;
}

interface WirePartial {
  node: number;
  evaluated: string[];
  proof: string;
}

/** AES-256-GCM envelope opened with node:crypto alone, from the format in client/envelope.ts. */
function openWithNodeCrypto(envelope: Buffer, key: Uint8Array): Buffer {
  const headerLength = envelope.readUInt16BE(9);
  const prefix = envelope.subarray(0, 11 + headerLength);
  const header = JSON.parse(prefix.subarray(11).toString('utf8')) as {
    chunkSize: number;
    salt: string;
  };
  const chunkKey = Buffer.from(
    hkdfSync(
      'sha256',
      key,
      Buffer.from(header.salt, 'base64url'),
      'KMaaS-v1 envelope chunk key',
      32,
    ),
  );
  const frameSize = header.chunkSize + 16;
  const out: Buffer[] = [];
  for (let off = prefix.length, i = 0; off < envelope.length; off += frameSize, i++) {
    const frame = envelope.subarray(off, Math.min(off + frameSize, envelope.length));
    const nonce = Buffer.alloc(12);
    nonce.writeUInt32BE(i, 7);
    nonce[11] = off + frameSize >= envelope.length ? 1 : 0;
    const d = createDecipheriv('aes-256-gcm', chunkKey, nonce);
    d.setAAD(prefix);
    d.setAuthTag(frame.subarray(frame.length - 16));
    out.push(d.update(frame.subarray(0, frame.length - 16)), d.final());
  }
  return Buffer.concat(out);
}

describe('browser SDK bundle in Chromium', function () {
  let dir: string;
  let browser: Browser;
  let server: StaticServer;
  let page: Page;
  /** The current test's sharing: the package the page checks against, the nodes' shares. */
  let sharing: { pkg: ParsedKeyPackage; shares: Map<number, Share> } | undefined;

  before(async function () {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-sdk-'));
    const bundle = join(dir, 'kmaas-sdk.js');
    await buildBrowserSdk(bundle);
    server = await serveStatic({
      '/': { body: PAGE },
      '/kmaas-sdk.js': { file: bundle },
      '/kmaas-sdk.js.map': { file: `${bundle}.map` },
    });
    browser = await launchChromium();
    page = await newPage(browser);
    await page.addInitScript("globalThis.kmaasSdk = () => import('/kmaas-sdk.js');");
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    // The nodes of this test: node j answers k_j * B_i with its DLEQ proof, in the wire format.
    await page.exposeFunction('kmaasNodes', (ids: number[], blinded: string[]): WirePartial[] => {
      const pkg = sharing?.pkg;
      if (!pkg) throw new Error('no sharing set up');
      const elements = blinded.map((b, i) => decodeElement(hexToBytes(b), `blinded[${i}]`));
      return ids.map((id) => {
        const p = evaluateAt(pkg, sharing!.shares.get(id)!, elements);
        return {
          node: p.node,
          evaluated: p.evaluated.map((e) => toB64(e.toBytes())),
          proof: toB64(p.proof),
        };
      });
    });
    await page.goto(`${server.origin}/`);
    expect(errors).to.deep.equal([]);
  });

  after(async function () {
    await browser?.close();
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the bundle loads as an ES module and exports the documented API', async function () {
    const names = await page.evaluate(async () => {
      const sdk = await (window as unknown as SdkWindow).kmaasSdk();
      return Object.keys(sdk).sort();
    });
    expect(names).to.include.members([
      'KmaasClient',
      'KmaasError',
      'MemoryPinStore',
      'beginLogin',
      'completeLogin',
      'createDpopProof',
      'currentSession',
      'decryptStream',
      'encryptStream',
      'generateDpopKey',
      'logout',
      'protocol',
    ]);
  });
  for (const [t, n] of [
    [2, 3],
    [3, 5],
  ] as const) {
    for (const vector of file.vectors) {
      it(`${vector.name}: in Chromium, every ${t}-subset of a ${t}-of-${n} split gives the vector output`, async function () {
        const ids = Array.from({ length: n }, (_, i) => i + 1);
        const { shares, coefficients } = split(secret, t, ids);
        const pkg = packageFor(shares, coefficients);
        sharing = { pkg, shares: new Map(shares.map((s) => [s.id, s])) };
        const results = await page.evaluate(
          async (args) => {
            const { protocol } = await (window as unknown as SdkWindow).kmaasSdk();
            const hex = (b: Uint8Array) =>
              Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
            const unhex = (h: string) =>
              Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));
            const pkg = protocol.parseKeyPackage(args.pkg);
            const call = (
              window as unknown as {
                kmaasNodes: (ids: number[], b: string[]) => Promise<WirePartial[]>;
              }
            ).kmaasNodes;
            const out = [];
            for (const subset of args.subsets) {
              let i = 0;
              // As test/helpers/rng.ts: `len` bytes whose first 32 are LE(blind - 1).
              const rng = (len = 32) => {
                const out = new Uint8Array(len);
                out.set(unhex(args.rng[i++ % args.rng.length]!));
                return out;
              };
              const state = protocol.blind(args.inputs.map(unhex), rng);
              const blinded = state.blinded.map((b) => hex(b.toBytes()));
              const answers = await call(subset, blinded);
              const { outputs, used } = protocol.deriveOutputs(
                pkg,
                state,
                answers.map(protocol.decodePartial),
              );
              out.push({ blinded, used, outputs: outputs.map(hex) });
            }
            return out;
          },
          {
            pkg: pkg.raw,
            subsets: subsets(ids, t),
            inputs: vector.Input,
            rng: vector.Blind.map((b) => rngBytesFor(Fn.fromBytes(hexToBytes(b)))),
          },
        );
        expect(results).to.have.length(subsets(ids, t).length);
        for (const [i, r] of results.entries()) {
          expect(r.blinded).to.deep.equal(vector.BlindedElement);
          expect(r.used).to.deep.equal(subsets(ids, t)[i]);
          expect(r.outputs).to.deep.equal(vector.Output);
        }
      });
    }
  }

  it('an envelope sealed in Chromium opens with node:crypto alone, to the same bytes', async function () {
    const key = randomBytes(32);
    const plaintext = randomBytes(2500);
    const envelope = await page.evaluate(
      async (args) => {
        const sdk = await (window as unknown as SdkWindow).kmaasSdk();
        const unhex = (h: string) => Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));
        const data = unhex(args.plaintext);
        // A Blob's stream, as a page reads a File: an async iterable of Uint8Array in Chromium.
        const source = () =>
          new Blob([
            data.subarray(0, 1000),
            data.subarray(1000),
          ]).stream() as unknown as AsyncIterable<Uint8Array>;
        const parts: number[] = [];
        const opts = {
          key: unhex(args.key),
          tenant: 'acme',
          keyVersion: 2,
          documentId: 'b.pdf',
          chunkSize: 1024,
        };
        for await (const p of sdk.encryptStream(source(), opts)) parts.push(...p);
        return parts;
      },
      { key: key.toString('hex'), plaintext: plaintext.toString('hex') },
    );
    expect(openWithNodeCrypto(Buffer.from(envelope), key).equals(plaintext)).to.equal(true);
  });

  it('an envelope sealed in Node opens in Chromium, and a wrong key is ERR_DECRYPT_FAILED there', async function () {
    const key = randomBytes(32);
    const plaintext = randomBytes(3000);
    const parts: Uint8Array[] = [];
    for await (const p of encryptStream(Readable.from([plaintext]), {
      key,
      tenant: 'globex',
      keyVersion: 1,
      documentId: 'c.txt',
      chunkSize: 1000,
    })) {
      parts.push(p);
    }
    const envelope = Buffer.concat(parts).toString('hex');
    const opened = await page.evaluate(
      async (args) => {
        const sdk = await (window as unknown as SdkWindow).kmaasSdk();
        const hex = (b: Uint8Array) =>
          Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
        const unhex = (h: string) => Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));
        const source = () =>
          new Blob([unhex(args.envelope)]).stream() as unknown as AsyncIterable<Uint8Array>;
        const open = async (key: string) => {
          let out = '';
          for await (const p of sdk.decryptStream(source(), unhex(key))) out += hex(p);
          return out;
        };
        let wrong = '';
        try {
          await open(args.wrongKey);
        } catch (err) {
          wrong = (err as { code?: string }).code ?? 'no code';
        }
        return { plaintext: await open(args.key), wrong };
      },
      { envelope, key: key.toString('hex'), wrongKey: randomBytes(32).toString('hex') },
    );
    expect(opened.plaintext).to.equal(plaintext.toString('hex'));
    expect(opened.wrong).to.equal('ERR_DECRYPT_FAILED');
  });

  it('4 MiB through the encrypting and decrypting streams in Chromium come back the same', async function () {
    const r = await page.evaluate(async () => {
      const sdk = await (window as unknown as SdkWindow).kmaasSdk();
      const data = new Uint8Array(4 * 1024 * 1024 + 123);
      for (let off = 0; off < data.length; off += 65536) {
        crypto.getRandomValues(data.subarray(off, Math.min(off + 65536, data.length)));
      }
      const key = crypto.getRandomValues(new Uint8Array(32));
      const sealed: Uint8Array<ArrayBuffer>[] = [];
      const streamOf = (parts: Uint8Array<ArrayBuffer>[]) =>
        new Blob(parts).stream() as unknown as AsyncIterable<Uint8Array>;
      const opts = { key, tenant: 'acme', keyVersion: 1, documentId: 'big.bin' };
      for await (const p of sdk.encryptStream(streamOf([data]), opts))
        sealed.push(new Uint8Array(p));
      const opened: Uint8Array<ArrayBuffer>[] = [];
      for await (const p of sdk.decryptStream(streamOf(sealed), key))
        opened.push(new Uint8Array(p));
      const joined = new Uint8Array(await new Blob(opened).arrayBuffer());
      const digest = async (b: Uint8Array<ArrayBuffer>) =>
        Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', b))).join(',');
      return {
        length: joined.length,
        same: (await digest(joined)) === (await digest(data)),
        sealedLength: sealed.reduce((n, p) => n + p.length, 0),
      };
    });
    expect(r.length).to.equal(4 * 1024 * 1024 + 123);
    expect(r.same).to.equal(true);
    // Five chunks of 1 MiB (the last one short), each with a 16-byte tag, after the prefix.
    expect(r.sealedLength).to.be.greaterThan(r.length + 5 * 16);
  });
});
