/**
 * coordinator/reshare-catchup.ts CatchUpSweep: a node that missed a reshare's commit and whose
 * first catch-up failed (the link cut mid-way, Redis down at that moment) is caught up by a later
 * sweep, and a node already at the current epoch is only asked its status. Fake links stand in
 * for the nodes; the record is what a reshare job writes.
 */
import { expect } from 'chai';
import { KmaasError } from '../../shared/errors.ts';
import type { EpochRecord } from '../../coordinator/epoch.ts';
import type { NodeLink } from '../../coordinator/node-link.ts';
import { CatchUpSweep } from '../../coordinator/reshare-catchup.ts';
import { strangerIdentity } from '../helpers/operators.ts';
import { silentLogger } from '../nodes/helpers.ts';

const RESHARE_ID = `r${'A'.repeat(31)}`;

function fakeNode(id: number, epoch: number, identity: { signing: string; encryption: string }) {
  const asked: string[] = [];
  let failCommits = 0;
  const node = {
    asked,
    epoch,
    failNextCommit: () => void failCommits++,
    link: {
      id,
      request: (type: string) => {
        asked.push(type);
        if (type === 'status') {
          return Promise.resolve({
            node: id,
            keys: [],
            identity,
            epoch: { epoch: node.epoch, threshold: 2, members: [1, 2, 3] },
          });
        }
        if (type === 'reshare.commit') {
          if (failCommits > 0) {
            failCommits--;
            return Promise.reject(new KmaasError('ERR_NODE_UNAVAILABLE', 'link cut'));
          }
          node.epoch = 3;
          return Promise.resolve({ node: id, epoch: 3, role: 'member' });
        }
        if (type === 'reshare.finish') return Promise.resolve({ node: id, erased: 2 });
        return Promise.reject(new Error(`unexpected ${type}`));
      },
    } as unknown as NodeLink,
  };
  return node;
}

describe('coordinator/reshare-catchup: the catch-up sweep', () => {
  it('retries a failed catch-up on the next sweep; a node at the epoch is only asked its status', async () => {
    const committee = [1, 2, 3].map((id) => strangerIdentity(id));
    const record: EpochRecord = {
      epoch: 3,
      threshold: 2,
      committee,
      reshareId: RESHARE_ID,
      transcript: 'a'.repeat(64),
      votes: [1, 2, 3].map((node) => ({ node, signature: 'c2ln' })),
    };
    const behind = fakeNode(2, 2, committee[1]!);
    const current = fakeNode(1, 3, committee[0]!);
    behind.failNextCommit();
    const sweep = new CatchUpSweep({
      epochs: { current: () => Promise.resolve(record) },
      timeoutMs: 1000,
      logger: silentLogger(),
      links: () => [current.link, behind.link],
      everyMs: 60_000,
    });
    // Every fake answer is already resolved: a few turns of the event loop finish a sweep.
    const settle = async (): Promise<void> => {
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    };

    sweep.sweep();
    await settle();
    expect(behind.epoch, 'the first attempt failed').to.equal(2);
    expect(behind.asked).to.deep.equal(['status', 'reshare.commit']);

    sweep.sweep();
    await settle();
    expect(behind.epoch).to.equal(3);
    expect(behind.asked.slice(2)).to.deep.equal(['status', 'reshare.commit', 'reshare.finish']);
    expect(current.asked).to.deep.equal(['status', 'status']);
    sweep.stop();
  });
});
