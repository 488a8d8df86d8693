/**
 * Which key package the coordinator believes when nodes disagree: a table of answers and the
 * verdict (key-quorum.ts).
 */
import { expect } from 'chai';
import { Point } from '../../shared/encoding.ts';
import { buildKeyPackage, type KeyPackage } from '../../shared/key-package.ts';
import {
  agreeOnKeyPackage,
  canonicalKeyPackage,
  type NodeAnswer,
} from '../../coordinator/key-quorum.ts';
import { splitKey } from './helpers.ts';

const committee = new Set([1, 2, 3]);
const rule = { tenant: 'acme', version: 1, committee };
const a = splitKey('acme', 1, 2, [1, 2, 3]).keyPackage;
const b = splitKey('acme', 1, 2, [1, 2, 3]).keyPackage;
const other = splitKey('globex', 1, 2, [1, 2, 3]).keyPackage;
const outsider = splitKey('acme', 1, 2, [1, 2, 9]).keyPackage;
/** A lone node's forgery: threshold 1, a committee of itself. */
const lone = (() => {
  const k = splitKey('acme', 1, 1, [1]);
  return k.keyPackage;
})();
/** A package whose share for node 2 does not match the commitments. */
const tampered: KeyPackage = {
  ...a,
  verificationShares: a.verificationShares.map((v) =>
    v.id === 2 ? { ...v, key: b.verificationShares[1]!.key } : v,
  ),
};
/** The same package with its fields and shares in another order. */
const reordered = JSON.parse(
  JSON.stringify({
    verificationShares: [...a.verificationShares].reverse(),
    commitments: a.commitments,
    groupKey: a.groupKey,
    threshold: a.threshold,
    version: a.version,
    tenant: a.tenant,
    suite: a.suite,
  }),
) as unknown;

const answer = (node: number, keyPackage: unknown): NodeAnswer => ({ node, keyPackage });

describe('coordinator: key package quorum', function () {
  const table: [string, NodeAnswer[], KeyPackage | null, number?][] = [
    ['t identical answers are accepted', [answer(1, a), answer(2, a)], a],
    ['all n identical answers are accepted', [answer(1, a), answer(2, a), answer(3, a)], a],
    ['one answer below t is refused', [answer(1, a)], null],
    ['the t-holder package wins over a lone liar', [answer(1, a), answer(2, a), answer(3, b)], a],
    [
      'three different packages have no quorum',
      [answer(1, a), answer(2, b), answer(3, other)],
      null,
    ],
    [
      'the same package in another key order counts as identical',
      [answer(1, a), answer(2, reordered)],
      a,
    ],
    ['a package for another tenant does not count', [answer(1, other), answer(2, other)], null],
    [
      'a node vouches only for a package it holds a share in',
      [answer(1, outsider), answer(9, outsider)],
      null,
    ],
    ['a lone node cannot get a threshold-1 package accepted', [answer(1, lone)], null],
    [
      'an inconsistent package is refused however many return it',
      [answer(1, tampered), answer(2, tampered), answer(3, tampered)],
      null,
    ],
    ['garbage answers are ignored', [answer(1, 'x'), answer(2, null), answer(3, a)], null],
    ['one node answering twice counts once', [answer(1, a), answer(1, a)], null],
    ['atLeast raises the bar (DKG asks for all n)', [answer(1, a), answer(2, a)], null, 3],
  ];
  for (const [name, answers, want, atLeast] of table) {
    it(name, () => {
      const r = agreeOnKeyPackage(answers, atLeast === undefined ? rule : { ...rule, atLeast });
      if (want === null) {
        expect(r.ok).to.equal(false);
      } else {
        expect(r.ok).to.equal(true);
        if (r.ok) expect(canonicalKeyPackage(r.keyPackage)).to.equal(canonicalKeyPackage(want));
      }
    });
  }

  it('the canonical form sorts verification shares by id', () => {
    const pkg = buildKeyPackage({
      tenant: 't',
      version: 1,
      commitments: [Point.BASE],
      verificationShares: new Map([[1, Point.BASE]]),
    });
    expect(canonicalKeyPackage(pkg)).to.equal(canonicalKeyPackage({ ...pkg }));
    expect(canonicalKeyPackage(a)).to.equal(canonicalKeyPackage(reordered as KeyPackage));
  });
});
