/**
 * RFC 9497 A.1.2 (ristretto255-SHA512, VOPRF mode) through the threshold path: the vector's key
 * is split t-of-n, every subset of t nodes evaluates with its share, and the combination must give
 * exactly the vector's Output. The expected values are the RFC's; nothing here is computed by the
 * code under test.
 */
import { expect } from 'chai';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { Fn, Point } from '../../shared/encoding.ts';
import { KmaasError } from '../../shared/errors.ts';
import { split } from '../../shared/shamir.ts';
import { blind, deriveOutputs } from '../../shared/voprf-client.ts';
import { fixedScalarRng } from '../helpers/rng.ts';
import { evaluateAt, packageFor, subsets, singleKeyOutput } from '../helpers/threshold.ts';
import { loadVectors, type VoprfVectorFile } from '../helpers/vectors.ts';

const file = loadVectors<VoprfVectorFile>('rfc9497-ristretto255-sha512-voprf.json');
const secret = Fn.fromBytes(hexToBytes(file.skSm));

describe('RFC 9497 A.1.2 VOPRF vectors through t-of-n threshold evaluation', () => {
  it('the vector key pair is consistent (skSm * G = pkSm)', () => {
    expect(bytesToHex(Point.BASE.multiply(secret).toBytes())).to.equal(file.pkSm);
  });

  for (const [t, n] of [
    [2, 3],
    [3, 5],
  ] as const) {
    for (const vector of file.vectors) {
      it(`${vector.name}: every ${t}-subset of a ${t}-of-${n} split gives the vector output`, () => {
        const ids = Array.from({ length: n }, (_, i) => i + 1);
        const { shares, coefficients } = split(secret, t, ids);
        const pkg = packageFor(shares, coefficients);
        expect(bytesToHex(pkg.groupKey.toBytes())).to.equal(file.pkSm);
        const blinds = vector.Blind.map((b) => Fn.fromBytes(hexToBytes(b)));
        const inputs = vector.Input.map((i) => hexToBytes(i));
        for (const subset of subsets(shares, t)) {
          const state = blind(inputs, fixedScalarRng(blinds));
          expect(state.blinded.map((b) => bytesToHex(b.toBytes()))).to.deep.equal(
            vector.BlindedElement,
          );
          const partials = subset.map((s) => evaluateAt(pkg, s, state.blinded));
          const { outputs, used } = deriveOutputs(pkg, state, partials);
          expect(used).to.deep.equal(subset.map((s) => s.id));
          expect(outputs.map((o) => bytesToHex(o))).to.deep.equal(vector.Output);
        }
      });
    }
  }

  it('fewer than t valid partials give ERR_TOO_FEW_NODES, not an output', () => {
    const { shares, coefficients } = split(secret, 3, [1, 2, 3, 4, 5]);
    const pkg = packageFor(shares, coefficients);
    const state = blind([hexToBytes('00')]);
    const partials = shares.slice(0, 2).map((s) => evaluateAt(pkg, s, state.blinded));
    expect(() => deriveOutputs(pkg, state, partials))
      .to.throw(KmaasError)
      .with.property('code', 'ERR_TOO_FEW_NODES');
  });

  it('a share from a different sharing (another epoch) is caught by its proof', () => {
    const ids = [1, 2, 3, 4, 5];
    const a = split(secret, 3, ids);
    const b = split(secret, 3, ids);
    const pkg = packageFor(a.shares, a.coefficients);
    const state = blind([hexToBytes('00')]);
    const mixed = [a.shares[0]!, a.shares[1]!, b.shares[2]!].map((s) =>
      evaluateAt(pkg, s, state.blinded),
    );
    expect(() => deriveOutputs(pkg, state, mixed))
      .to.throw(KmaasError)
      .with.property('code', 'ERR_TOO_FEW_NODES');
  });
});

describe('a wrong partial evaluation', () => {
  const { shares, coefficients } = split(secret, 3, [1, 2, 3, 4, 5]);
  const pkg = packageFor(shares, coefficients);
  const inputs = [hexToBytes('00'), hexToBytes('5a5a')];

  it('right length, wrong point: rejected by its proof, the node named, the others still derive', () => {
    const state = blind(inputs);
    const partials = shares.slice(0, 4).map((s) => evaluateAt(pkg, s, state.blinded));
    // Node 2 lies: a valid encoding of a different element.
    partials[1] = {
      ...partials[1]!,
      evaluated: [Point.BASE.multiply(7n), partials[1]!.evaluated[1]!],
    };
    const { outputs, used, rejected } = deriveOutputs(pkg, state, partials);
    expect(rejected.map((r) => [r.node, r.code])).to.deep.equal([[2, 'ERR_PROOF_INVALID']]);
    expect(used).to.deep.equal([1, 3, 4]);
    const expected = inputs.map((i) => singleKeyOutput(secret, i));
    expect(outputs.map(bytesToHex)).to.deep.equal(expected.map(bytesToHex));
  });

  it('a proof replayed from another node is rejected', () => {
    const state = blind(inputs);
    const p1 = evaluateAt(pkg, shares[0]!, state.blinded);
    const p2 = evaluateAt(pkg, shares[1]!, state.blinded);
    const forged = { ...p2, proof: p1.proof };
    const { rejected } = deriveOutputs(pkg, state, [
      forged,
      p1,
      evaluateAt(pkg, shares[2]!, state.blinded),
      evaluateAt(pkg, shares[3]!, state.blinded),
    ]);
    expect(rejected).to.have.length(1);
    expect(rejected[0]).to.include({ node: 2, code: 'ERR_PROOF_INVALID' });
  });

  it('an answer from a node outside the key package is rejected, naming it', () => {
    const state = blind(inputs);
    const stranger = { ...evaluateAt(pkg, shares[0]!, state.blinded), node: 9 };
    const good = shares.slice(0, 3).map((s) => evaluateAt(pkg, s, state.blinded));
    const { rejected, used } = deriveOutputs(pkg, state, [stranger, ...good]);
    expect(rejected[0]).to.include({ node: 9, code: 'ERR_PROOF_INVALID' });
    expect(used).to.deep.equal([1, 2, 3]);
  });

  it('a node answering twice counts once', () => {
    const state = blind(inputs);
    const p1 = evaluateAt(pkg, shares[0]!, state.blinded);
    const p2 = evaluateAt(pkg, shares[1]!, state.blinded);
    expect(() => deriveOutputs(pkg, state, [p1, p1, p2]))
      .to.throw(KmaasError)
      .with.property('code', 'ERR_TOO_FEW_NODES');
  });
});
