/**
 * Key packages against RFC 9591 E.3: its dealer sharing is a 2-of-3 sharing of a known key, so it
 * checks the Feldman and Lagrange code against the RFC's own numbers.
 */
import { expect } from 'chai';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { Fn, Point, toB64 } from '../../shared/encoding.ts';
import { KmaasError } from '../../shared/errors.ts';
import { commit } from '../../shared/feldman.ts';
import { buildKeyPackage, parseKeyPackage } from '../../shared/key-package.ts';
import { interpolateAtZero } from '../../shared/shamir.ts';
import { blind, deriveOutputs } from '../../shared/voprf-client.ts';
import { evaluateAt, singleKeyOutput } from '../helpers/threshold.ts';
import { loadVectors } from '../helpers/vectors.ts';

interface Frost {
  inputs: {
    share_polynomial_coefficients: string[];
    group_secret_key: string;
    group_public_key: string;
  };
  participant_shares: Record<string, string>;
}
const f = loadVectors<Frost>('rfc9591-frost-ristretto255-sha512.json');
const secret = Fn.fromBytes(hexToBytes(f.inputs.group_secret_key));
const coefficients = [
  secret,
  ...f.inputs.share_polynomial_coefficients.map((c) => Fn.fromBytes(hexToBytes(c))),
];
const shares = Object.entries(f.participant_shares).map(([id, hex]) => ({
  id: Number(id),
  value: Fn.fromBytes(hexToBytes(hex)),
}));

function rfcPackage() {
  return buildKeyPackage({
    tenant: 'rfc9591',
    version: 1,
    commitments: commit(coefficients),
    verificationShares: new Map(shares.map((s) => [s.id, Point.BASE.multiply(s.value)])),
  });
}

describe('RFC 9591 E.3 dealer sharing as a key package', () => {
  it('the package checks out and its group key is the RFC group public key', () => {
    const pkg = parseKeyPackage(rfcPackage());
    expect(bytesToHex(pkg.groupKey.toBytes())).to.equal(f.inputs.group_public_key);
    expect(pkg.threshold).to.equal(2);
  });

  it('any 2 of the RFC shares recombine to the RFC group secret', () => {
    for (const pair of [
      [0, 1],
      [0, 2],
      [1, 2],
    ]) {
      expect(interpolateAtZero(pair.map((i) => shares[i]!))).to.equal(secret);
    }
  });

  it('threshold evaluation with the RFC shares equals single-key evaluation with the RFC secret', () => {
    const pkg = parseKeyPackage(rfcPackage());
    const input = new TextEncoder().encode('document-7');
    const state = blind([input]);
    const { outputs } = deriveOutputs(pkg, state, [
      evaluateAt(pkg, shares[2]!, state.blinded),
      evaluateAt(pkg, shares[0]!, state.blinded),
    ]);
    expect(bytesToHex(outputs[0]!)).to.equal(bytesToHex(singleKeyOutput(secret, input)));
  });

  it('a verification share that does not match the commitments is refused, naming the node', () => {
    const raw = rfcPackage();
    raw.verificationShares[1] = { id: 2, key: toB64(Point.BASE.multiply(5n).toBytes()) };
    try {
      parseKeyPackage(raw);
      expect.fail('accepted');
    } catch (e) {
      expect(e).to.be.instanceOf(KmaasError);
      expect((e as KmaasError).code).to.equal('ERR_KEY_PACKAGE_INVALID');
      expect((e as KmaasError).details).to.deep.equal({ node: 2 });
    }
  });

  it('a group key other than C_0, a pinned key mismatch, or zero/duplicate ids are refused', () => {
    const codeOf = (raw: unknown, pin?: string) => {
      try {
        parseKeyPackage(raw, pin);
      } catch (e) {
        return (e as KmaasError).code;
      }
      return undefined;
    };
    expect(codeOf({ ...rfcPackage(), groupKey: toB64(Point.BASE.toBytes()) })).to.equal(
      'ERR_KEY_PACKAGE_INVALID',
    );
    expect(codeOf(rfcPackage(), toB64(Point.BASE.toBytes()))).to.equal('ERR_PINNED_KEY_MISMATCH');
    expect(codeOf(rfcPackage(), rfcPackage().groupKey)).to.equal(undefined);
    const dup = rfcPackage();
    dup.verificationShares[1] = { ...dup.verificationShares[0]! };
    expect(codeOf(dup)).to.equal('ERR_BAD_IDENTIFIER');
    const zero = rfcPackage();
    zero.verificationShares[0] = { ...zero.verificationShares[0]!, id: 0 };
    expect(codeOf(zero)).to.equal('ERR_BAD_IDENTIFIER');
    expect(codeOf({ ...rfcPackage(), suite: 'P256-SHA256' })).to.equal('ERR_KEY_PACKAGE_INVALID');
  });
});
