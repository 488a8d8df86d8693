/**
 * Every error code is defined once (shared/errors.ts), documented in the README's table, and
 * every code the source uses is a defined one. Fails when a code drifts out of any of the three.
 */
import { expect } from 'chai';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES, KmaasError, toKmaasError } from '../../shared/errors.ts';
import { ROOT } from '../../scripts/lib/child.ts';

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return /\.(ts|mjs|js)$/.test(name) ? [path] : [];
  });
}

describe('error codes', () => {
  const defined = Object.keys(ERROR_CODES);
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');

  it('every defined code has a row in the README error table with its HTTP status', () => {
    for (const [code, { status }] of Object.entries(ERROR_CODES)) {
      expect(readme, code).to.match(new RegExp(`\\|\\s*\`${code}\`\\s*\\|\\s*${status}\\s*\\|`));
    }
  });

  it('the README documents no code that does not exist', () => {
    const documented = [...readme.matchAll(/\|\s*`(ERR_[A-Z0-9_]+)`\s*\|/g)].map((m) => m[1]);
    for (const code of documented) expect(defined, code).to.include(code);
  });

  it('every ERR_ code used in the source is defined', () => {
    const dirs = ['shared', 'nodes', 'coordinator', 'client', 'cli', 'scripts', 'idp', 'demo'];
    for (const dir of dirs) {
      for (const file of sourceFiles(join(ROOT, dir))) {
        for (const m of readFileSync(file, 'utf8').matchAll(/'(ERR_[A-Z0-9_]+)'/g)) {
          expect(defined, `${m[1]} in ${file}`).to.include(m[1]);
        }
      }
    }
  });

  it('unknown failures are hidden behind ERR_INTERNAL without their message', () => {
    const e = toKmaasError(new Error('secret detail'));
    expect(e.code).to.equal('ERR_INTERNAL');
    expect(e.message).to.not.contain('secret');
    expect(new KmaasError('ERR_UNKNOWN_TENANT', 'x').status).to.equal(404);
  });
});
