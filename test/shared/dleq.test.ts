/**
 * RFC 9497 section 2.2.2 VerifyProof as written in shared/dleq.ts: the RFC's own proofs verify,
 * any change to them or to the statement does not, and the verdict agrees with @noble's
 * finalizeBatch (an independent implementation of the same check) on random batches.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { ristretto255_oprf } from '@noble/curves/ed25519.js';
import { hexToBytes } from '@noble/hashes/utils.js';
import { verifyBatchProof } from '../../shared/dleq.ts';
import { Point } from '../../shared/encoding.ts';
import { loadVectors, type VoprfVectorFile } from '../helpers/vectors.ts';

const file = loadVectors<VoprfVectorFile>('rfc9497-ristretto255-sha512-voprf.json');
const pk = Point.fromBytes(hexToBytes(file.pkSm));
const points = (hex: string[]) => hex.map((h) => Point.fromBytes(hexToBytes(h)));

describe('RFC 9497 section 2.2.2 VerifyProof', () => {
  for (const v of file.vectors) {
    it(`${v.name}: the RFC proof verifies`, () => {
      expect(
        verifyBatchProof(
          pk,
          points(v.BlindedElement),
          points(v.EvaluationElement),
          hexToBytes(v.Proof),
        ),
      ).to.equal(true);
    });

    it(`${v.name}: a flipped bit in c or s, another key, or a swapped element fails`, () => {
      const proof = hexToBytes(v.Proof);
      for (const at of [0, 31, 32, 63]) {
        const bad = proof.slice();
        bad[at]! ^= 1;
        expect(
          verifyBatchProof(pk, points(v.BlindedElement), points(v.EvaluationElement), bad),
        ).to.equal(false);
      }
      expect(
        verifyBatchProof(pk.double(), points(v.BlindedElement), points(v.EvaluationElement), proof),
      ).to.equal(false);
      const wrongZ = points(v.EvaluationElement).map((z) => z.add(Point.BASE));
      expect(verifyBatchProof(pk, points(v.BlindedElement), wrongZ, proof)).to.equal(false);
      expect(
        verifyBatchProof(
          pk,
          points(v.BlindedElement),
          points(v.EvaluationElement),
          proof.subarray(0, 63),
        ),
      ).to.equal(false);
    });
  }

  it('a non-canonical scalar in the proof is refused, not reduced', () => {
    const v = file.vectors[0]!;
    const proof = hexToBytes(v.Proof);
    proof.fill(0xff, 32, 64);
    expect(
      verifyBatchProof(pk, points(v.BlindedElement), points(v.EvaluationElement), proof),
    ).to.equal(false);
  });

  it('agrees with @noble finalizeBatch on random honest and dishonest batches', () => {
    const { voprf } = ristretto255_oprf;
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 32 }), { minLength: 1, maxLength: 6 }),
        fc.boolean(),
        fc.nat(5),
        (inputs, lie, which) => {
          const keys = voprf.generateKeyPair();
          const blinds = inputs.map((i) => voprf.blind(i));
          const res = voprf.blindEvaluateBatch(
            keys.secretKey,
            keys.publicKey,
            blinds.map((b) => b.blinded),
          );
          const evaluated = res.evaluated.map((e) => Point.fromBytes(e));
          if (lie) {
            const i = which % evaluated.length;
            evaluated[i] = evaluated[i]!.add(Point.BASE);
          }
          let nobleSays = true;
          try {
            voprf.finalizeBatch(
              inputs.map((input, i) => ({
                input,
                blind: blinds[i]!.blind,
                blinded: blinds[i]!.blinded,
                evaluated: evaluated[i]!.toBytes(),
              })),
              keys.publicKey,
              res.proof,
            );
          } catch {
            nobleSays = false;
          }
          const oursSays = verifyBatchProof(
            Point.fromBytes(keys.publicKey),
            blinds.map((b) => Point.fromBytes(b.blinded)),
            evaluated,
            res.proof,
          );
          expect(oursSays).to.equal(nobleSays);
          expect(oursSays).to.equal(!lie);
        },
      ),
      { numRuns: 30 },
    );
  });
});
