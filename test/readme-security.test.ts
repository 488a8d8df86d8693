/**
 * The README's security table promises that every row is backed by a test it names. This keeps
 * the promise checkable: each row names at least one test by its exact `it(...)` title, and each
 * title named exists in the test tree, so a renamed or deleted test breaks the build instead of
 * leaving the README pointing at nothing.
 */
import { expect } from 'chai';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../scripts/lib/child.ts';

function testFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return testFiles(path);
    return name.endsWith('.test.ts') ? [path] : [];
  });
}

/** The rows of the table under "## Security" whose last column is "tested by". */
function securityRows(readme: string): { row: string; titles: string[] }[] {
  const section = readme.split(/^## Security$/m)[1]?.split(/^## /m)[0] ?? '';
  const lines = section.split('\n').filter((l) => l.startsWith('|'));
  const header = lines[0]?.split('|').map((c) => c.trim()) ?? [];
  expect(header, 'security table header').to.include('tested by');
  return lines.slice(2).map((line) => {
    const cells = line.split('|').map((c) => c.trim());
    const tested = cells[header.indexOf('tested by')] ?? '';
    return { row: cells[1] ?? line, titles: [...tested.matchAll(/`([^`]+)`/g)].map((m) => m[1]!) };
  });
}

describe('README security table', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const titles = testFiles(join(ROOT, 'test')).flatMap((f) =>
    titlePatterns(readFileSync(f, 'utf8')),
  );
  const rows = securityRows(readme);

  it('has rows, and every row names at least one test', () => {
    expect(rows.length).to.be.greaterThan(5);
    for (const { row, titles } of rows) expect(titles, `row "${row}"`).to.not.be.empty;
  });

  it('every test it names exists under test/ with that title', () => {
    const missing = rows
      .flatMap((r) => r.titles)
      .filter((title) => !titles.some((pattern) => pattern.test(title)));
    expect(missing).to.deep.equal([]);
  });
});

/**
 * Every `it(...)` title of a test file, as a pattern: literal titles match themselves, and a
 * template title (a table test, `it(\`${name}: refused\`)`) matches any text in place of each
 * `${...}`.
 */
function titlePatterns(source: string): RegExp[] {
  const escape = (t: string) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const found: RegExp[] = [];
  for (const m of source.matchAll(/\bit\(\s*(['"])((?:(?!\1)[^\\]|\\.)*)\1/g)) {
    found.push(new RegExp(`^${escape(m[2]!.replace(/\\(.)/g, '$1'))}$`));
  }
  for (const m of source.matchAll(/\bit\(\s*`([^`]*)`/g)) {
    const parts = m[1]!.split(/\$\{[^}]*\}/).map(escape);
    found.push(new RegExp(`^${parts.join('.+')}$`));
  }
  return found;
}
