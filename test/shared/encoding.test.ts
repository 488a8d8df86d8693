/** Strict decoding against RFC 9496 A.1-A.2 and the refusals RFC 9497 section 3.3 requires. */
import { expect } from 'chai';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import {
  decodeElement,
  decodeElementB64,
  decodeScalar,
  Fn,
  fromB64,
  Point,
  toB64,
} from '../../shared/encoding.ts';
import { KmaasError, type ErrorCode } from '../../shared/errors.ts';
import { checkIdentifierSet } from '../../shared/identifiers.ts';
import { lagrangeAtZero } from '../../shared/shamir.ts';
import { loadVectors } from '../helpers/vectors.ts';

interface Ristretto {
  multiplesOfGenerator: { k: number; hex: string }[];
  invalidEncodings: { class: string; encodings: string[] }[];
}
const r = loadVectors<Ristretto>('rfc9496-ristretto255.json');

function codeOf(fn: () => unknown): ErrorCode | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof KmaasError) return e.code;
    throw e;
  }
  return undefined;
}

describe('RFC 9496 element decoding', () => {
  it('A.1: multiples of the generator decode to k*G; k = 0 (the identity) is refused', () => {
    for (const { k, hex } of r.multiplesOfGenerator) {
      if (k === 0) {
        expect(codeOf(() => decodeElement(hexToBytes(hex), 'B'))).to.equal('ERR_IDENTITY_POINT');
        continue;
      }
      const p = decodeElement(hexToBytes(hex), 'B');
      expect(p.equals(Point.BASE.multiply(BigInt(k)))).to.equal(true);
      expect(bytesToHex(p.toBytes())).to.equal(hex);
    }
  });

  for (const group of r.invalidEncodings) {
    it(`A.2: ${group.class} are refused with ERR_INVALID_POINT`, () => {
      for (const hex of group.encodings) {
        expect(
          codeOf(() => decodeElement(hexToBytes(hex), 'B')),
          hex,
        ).to.equal('ERR_INVALID_POINT');
      }
    });
  }

  it('wrong lengths and bad base64 get their own codes, naming the field', () => {
    const e = (() => {
      try {
        decodeElement(new Uint8Array(31), 'blinded[2]');
      } catch (err) {
        return err as KmaasError;
      }
      throw new Error('no error');
    })();
    expect(e.code).to.equal('ERR_BAD_LENGTH');
    expect(e.details).to.deep.include({ field: 'blinded[2]', expected: 32, actual: 31 });
    expect(codeOf(() => decodeElement(new Uint8Array(33), 'B'))).to.equal('ERR_BAD_LENGTH');
    expect(codeOf(() => fromB64('ab+/', 'B'))).to.equal('ERR_BAD_BASE64');
    expect(codeOf(() => fromB64('AQID=', 'B'))).to.equal('ERR_BAD_BASE64');
    expect(codeOf(() => decodeElementB64('!!!', 'B'))).to.equal('ERR_BAD_BASE64');
  });

  it('base64url round-trips', () => {
    const b = Point.BASE.toBytes();
    expect(decodeElementB64(toB64(b), 'B').equals(Point.BASE)).to.equal(true);
  });
});

describe('scalars and identifiers', () => {
  it('scalars at or above the group order, and zero, are refused', () => {
    const order = Fn.ORDER;
    const le = (n: bigint) => {
      const out = new Uint8Array(32);
      for (let i = 0; i < 32; i++) out[i] = Number((n >> BigInt(8 * i)) & 0xffn);
      return out;
    };
    expect(codeOf(() => decodeScalar(le(order), 's'))).to.equal('ERR_INVALID_SCALAR');
    expect(codeOf(() => decodeScalar(le(order + 1n), 's'))).to.equal('ERR_INVALID_SCALAR');
    expect(codeOf(() => decodeScalar(new Uint8Array(32), 's'))).to.equal('ERR_INVALID_SCALAR');
    expect(decodeScalar(le(order - 1n), 's')).to.equal(order - 1n);
  });

  it('zero, negative, fractional, too large and duplicate identifiers are refused', () => {
    for (const ids of [
      [0, 1],
      [-1, 2],
      [1.5, 2],
      [1, 65536],
      [1, 2, 1],
    ]) {
      expect(
        codeOf(() => checkIdentifierSet(ids)),
        String(ids),
      ).to.equal('ERR_BAD_IDENTIFIER');
      expect(
        codeOf(() => lagrangeAtZero(ids)),
        String(ids),
      ).to.equal('ERR_BAD_IDENTIFIER');
    }
  });
});
