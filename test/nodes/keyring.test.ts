/**
 * nodes/keyring.ts: which share answers (tenant, version, epoch?) as a node moves through a
 * reshare. A table of node states (before, between commit and finish, after finish, removed
 * before and after finish) and lookups, each giving a share of one epoch or an error code.
 */
import { expect } from 'chai';
import { Point } from '../../shared/encoding.ts';
import type { ErrorCode } from '../../shared/errors.ts';
import { commit } from '../../shared/feldman.ts';
import { buildKeyPackage } from '../../shared/key-package.ts';
import { randomScalar, split } from '../../shared/shamir.ts';
import { Keyring, type KeyToLoad } from '../../nodes/keyring.ts';
import { secretShare } from '../../nodes/secret-share.ts';
import type { EpochRecord } from '../../nodes/store.ts';
import { strangerIdentity } from '../helpers/operators.ts';
import { expectCode } from './helpers.ts';

const NODE = 2;
const SECRET = randomScalar();

/** Node 2's share of one sharing of SECRET among `members`, 2 of them needed, at `epoch`. */
function keyAt(epoch: number, members: number[], tenant = 'acme', version = 1): KeyToLoad {
  const { shares, coefficients } = split(SECRET, 2, members);
  const own = shares.find((s) => s.id === NODE)!;
  return {
    tenant,
    version,
    epoch,
    share: secretShare(own.value),
    keyPackage: buildKeyPackage({
      tenant,
      version,
      epoch,
      commitments: commit(coefficients),
      verificationShares: new Map(shares.map((s) => [s.id, Point.BASE.multiply(s.value)])),
    }),
  };
}

function epochRecord(epoch: number, members: number[]): EpochRecord {
  return {
    epoch,
    threshold: 2,
    committee: members.map((n) => strangerIdentity(n)),
    reshareId: epoch === 1 ? '' : `r${'a'.repeat(31)}`,
    transcript: epoch === 1 ? '' : 'ab'.repeat(32),
    committedAt: 0,
  };
}

const OLD = [1, 2, 3];
const NEW_WITH = [2, 3, 4];
const NEW_WITHOUT = [1, 3, 4];

/** Keyrings of node 2 in each state it can be in around a reshare from epoch 1 to epoch 2. */
const states: Record<string, () => Keyring> = {
  'no epoch record (a version-1 database)': () => {
    const k = new Keyring(NODE);
    k.add(keyAt(1, OLD));
    return k;
  },
  'epoch 1 only': () => {
    const k = new Keyring(NODE, epochRecord(1, OLD));
    k.add(keyAt(1, OLD));
    return k;
  },
  'epoch 2 committed, epoch 1 retiring': () => {
    const k = new Keyring(NODE, epochRecord(1, OLD));
    k.add(keyAt(1, OLD));
    k.add(keyAt(2, NEW_WITH));
    k.setEpoch(epochRecord(2, NEW_WITH));
    return k;
  },
  'epoch 2 finished': () => {
    const k = states['epoch 2 committed, epoch 1 retiring']!();
    expect(k.dropBefore(2)).to.equal(1);
    return k;
  },
  'removed by epoch 2, before finish': () => {
    const k = new Keyring(NODE, epochRecord(1, OLD));
    k.add(keyAt(1, OLD));
    k.setEpoch(epochRecord(2, NEW_WITHOUT));
    return k;
  },
  'removed by epoch 2, after finish': () => {
    const k = states['removed by epoch 2, before finish']!();
    k.dropBefore(2);
    return k;
  },
};

type Expect = number | [ErrorCode, Record<string, unknown>?];

/** [state, epoch asked (undefined: none), share epoch served or error]. */
const table: [string, number | undefined, Expect][] = [
  ['no epoch record (a version-1 database)', undefined, 1],
  ['no epoch record (a version-1 database)', 1, 1],
  [
    'no epoch record (a version-1 database)',
    2,
    ['ERR_EPOCH_MISMATCH', { requested: 2, current: 1 }],
  ],
  ['epoch 1 only', undefined, 1],
  ['epoch 1 only', 1, 1],
  ['epoch 1 only', 2, ['ERR_EPOCH_MISMATCH', { requested: 2, current: 1 }]],
  ['epoch 2 committed, epoch 1 retiring', undefined, 2],
  ['epoch 2 committed, epoch 1 retiring', 2, 2],
  ['epoch 2 committed, epoch 1 retiring', 1, 1],
  ['epoch 2 committed, epoch 1 retiring', 3, ['ERR_EPOCH_MISMATCH', { requested: 3, current: 2 }]],
  ['epoch 2 finished', undefined, 2],
  ['epoch 2 finished', 1, ['ERR_EPOCH_MISMATCH', { requested: 1, current: 2 }]],
  ['removed by epoch 2, before finish', 1, 1],
  ['removed by epoch 2, before finish', undefined, ['ERR_NODE_REMOVED', { current: 2 }]],
  ['removed by epoch 2, before finish', 2, ['ERR_NODE_REMOVED', { current: 2 }]],
  ['removed by epoch 2, after finish', 1, ['ERR_NODE_REMOVED', { current: 2 }]],
  ['removed by epoch 2, after finish', undefined, ['ERR_NODE_REMOVED']],
];

describe('nodes/keyring: the share of each epoch', () => {
  for (const [state, epoch, want] of table) {
    const asked = epoch === undefined ? 'no epoch' : `epoch ${epoch}`;
    const outcome = typeof want === 'number' ? `the epoch-${want} share` : want[0];
    it(`${state}, ${asked}: ${outcome}`, () => {
      const keyring = states[state]!();
      if (typeof want === 'number') {
        const key = keyring.get('acme', 1, epoch);
        expect(key.epoch).to.equal(want);
        expect(key.keyPackage.epoch).to.equal(want);
        // The share served is the one its epoch's package vouches for.
        expect(Point.BASE.multiply(key.share.reveal()).equals(key.verificationShare)).to.equal(
          true,
        );
      } else {
        expectCode(() => keyring.get('acme', 1, epoch), want[0], want[1]);
      }
    });
  }

  it('a member answers for a key it never held with the unknown-key codes, at any epoch', () => {
    const keyring = states['epoch 2 committed, epoch 1 retiring']!();
    expectCode(() => keyring.get('globex', 1), 'ERR_UNKNOWN_TENANT');
    expectCode(() => keyring.get('acme', 2, 1), 'ERR_UNKNOWN_KEY_VERSION');
    keyring.retire('acme', 1);
    expectCode(() => keyring.get('acme', 1, 1), 'ERR_KEY_RETIRED');
    expectCode(() => keyring.get('acme', 1), 'ERR_KEY_RETIRED');
    expect(keyring.listAll()).to.deep.equal([]);
  });

  it('lists each key once at its newest epoch, and every share on request', () => {
    const keyring = states['epoch 2 committed, epoch 1 retiring']!();
    keyring.add(keyAt(2, NEW_WITH, 'acme', 2));
    expect(keyring.list().map((k) => [k.version, k.epoch])).to.deep.equal([
      [1, 2],
      [2, 2],
    ]);
    expect(keyring.listAll().map((k) => [k.version, k.epoch])).to.deep.equal([
      [1, 1],
      [1, 2],
      [2, 2],
    ]);
    expect(keyring.keysAt(1).map((k) => k.version)).to.deep.equal([1]);
    expect(keyring.size).to.equal(2);
    expect(keyring.isMember()).to.equal(true);
    expect(states['removed by epoch 2, before finish']!().isMember()).to.equal(false);
  });

  it('refuses a share filed under an epoch its package does not carry', () => {
    const keyring = new Keyring(NODE);
    const key = keyAt(2, NEW_WITH);
    expectCode(() => keyring.add({ ...key, epoch: 1 }), 'ERR_KEY_PACKAGE_INVALID', { epoch: 1 });
    // And a share that is not the one the package names for this node.
    const other = keyAt(1, OLD);
    expectCode(() => keyring.add({ ...other, share: key.share }), 'ERR_KEY_PACKAGE_INVALID');
  });
});
