/**
 * Property tests over random thresholds, committees, subsets and batch sizes. The expected value
 * is @noble's single-key RFC 9497 Evaluate with the whole key, an independent computation.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { bytesToHex } from '@noble/hashes/utils.js';
import { interpolateAtZero, randomScalar, split } from '../../shared/shamir.ts';
import { blind, deriveOutputs } from '../../shared/voprf-client.ts';
import { documentInput } from '../../shared/document.ts';
import { evaluateAt, packageFor, singleKeyOutput } from '../helpers/threshold.ts';

const committee = fc
  .integer({ min: 2, max: 9 })
  .chain((n) => fc.record({ n: fc.constant(n), t: fc.integer({ min: 1, max: n }) }))
  .chain(({ n, t }) =>
    fc.record({
      n: fc.constant(n),
      t: fc.constant(t),
      ids: fc.uniqueArray(fc.integer({ min: 1, max: 0xffff }), { minLength: n, maxLength: n }),
      order: fc.shuffledSubarray(
        Array.from({ length: n }, (_, i) => i),
        { minLength: t, maxLength: t },
      ),
      inputs: fc.array(fc.uint8Array({ minLength: 0, maxLength: 64 }), {
        minLength: 1,
        maxLength: 8,
      }),
    }),
  );

describe('threshold VOPRF properties', () => {
  it('any t of n shares derive the single-key RFC 9497 output', () => {
    fc.assert(
      fc.property(committee, ({ t, ids, order, inputs }) => {
        const k = randomScalar();
        const { shares, coefficients } = split(k, t, ids);
        const pkg = packageFor(shares, coefficients);
        const state = blind(inputs);
        const partials = order.map((i) => evaluateAt(pkg, shares[i]!, state.blinded));
        const { outputs } = deriveOutputs(pkg, state, partials);
        const expected = inputs.map((x) => bytesToHex(singleKeyOutput(k, x)));
        expect(outputs.map(bytesToHex)).to.deep.equal(expected);
      }),
      { numRuns: 40 },
    );
  });

  it('shares recombine to the secret from any t of them, and t-1 do not', () => {
    fc.assert(
      fc.property(committee, ({ t, ids, order }) => {
        const k = randomScalar();
        const { shares } = split(k, t, ids);
        const chosen = order.map((i) => shares[i]!);
        expect(interpolateAtZero(chosen)).to.equal(k);
        if (t > 1) expect(interpolateAtZero(chosen.slice(1))).to.not.equal(k);
      }),
      { numRuns: 100 },
    );
  });

  it('document inputs are injective: distinct (tenant, version, doc) never encode alike', () => {
    const triple = fc.record({
      tenant: fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,10}$/),
      version: fc.integer({ min: 1, max: 5 }),
      doc: fc.string({ minLength: 1, maxLength: 12 }),
    });
    fc.assert(
      fc.property(triple, triple, (a, b) => {
        const same = a.tenant === b.tenant && a.version === b.version && a.doc === b.doc;
        const ea = bytesToHex(documentInput(a.tenant, a.version, a.doc));
        const eb = bytesToHex(documentInput(b.tenant, b.version, b.doc));
        expect(ea === eb).to.equal(same);
      }),
      { numRuns: 300 },
    );
  });
});
