/** scripts/lib/build-sdk.ts: the bundle builds, and a Node import anywhere in it fails the build. */
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KmaasError } from '../../shared/errors.ts';
import { buildBrowserSdk } from '../../scripts/lib/build-sdk.ts';

describe('browser SDK build', function () {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'kmaas-build-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('bundles client/browser.ts into one ES module with a source map and no node: import', async function () {
    const out = join(dir, 'sdk.js');
    const built = await buildBrowserSdk(out);
    const code = readFileSync(out, 'utf8');
    expect(built.bytes).to.equal(Buffer.byteLength(code));
    expect(built.gzipBytes).to.be.lessThan(built.bytes);
    expect(code).to.match(/export\s*\{/);
    expect(code).not.to.match(/["']node:/);
    expect(JSON.parse(readFileSync(`${out}.map`, 'utf8'))).to.have.property('mappings');
  });

  for (const spec of ['node:crypto', 'fs']) {
    it(`an import of ${spec} anywhere in the graph fails the build with ERR_CONFIG naming it`, async function () {
      const inner = join(dir, `inner-${spec.replace(':', '-')}.ts`);
      writeFileSync(inner, `import * as m from '${spec}';\nexport const x = Object.keys(m);\n`);
      const entry = join(dir, `entry-${spec.replace(':', '-')}.ts`);
      writeFileSync(entry, `export { x } from './${inner.split('/').pop()}';\n`);
      const err = await buildBrowserSdk(join(dir, 'bad.js'), entry).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(KmaasError);
      expect((err as KmaasError).code).to.equal('ERR_CONFIG');
      expect((err as KmaasError).message)
        .to.include(spec)
        .and.include('inner-');
    });
  }
});
