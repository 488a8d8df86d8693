import { inspect } from 'node:util';
import { expect } from 'chai';
import { Redacted } from '../../shared/redacted.ts';
import { secretShare } from '../../nodes/secret-share.ts';

describe('nodes/redacted: secret values print redacted', () => {
  const share = secretShare(0x1234567890abcdefn);
  const token = new Redacted('super-secret-token', 'token');

  for (const [name, print] of [
    ['JSON.stringify', (v: unknown) => JSON.stringify({ v })],
    ['util.inspect', (v: unknown) => inspect({ v }, { depth: 5 })],
    ['template string', (v: unknown) => `${String(v)}`],
  ] as const) {
    it(`${name} shows neither a share nor a token`, () => {
      expect(print(share))
        .to.contain('[redacted share]')
        .and.not.match(/1234567890abcdef|1311768467294899695/i);
      expect(print(token)).to.contain('[redacted token]').and.not.contain('super-secret-token');
    });
  }

  it('reveal() is the only way out', () => {
    expect(share.reveal()).to.equal(0x1234567890abcdefn);
    expect(token.reveal()).to.equal('super-secret-token');
  });
});
