/**
 * nodes/reshare-machine.ts as tables: from this state, this message, gives this error (or this
 * next state). Pure: no store, no crypto beyond what the callbacks return.
 */
import { expect } from 'chai';
import type { ErrorCode } from '../../shared/errors.ts';
import {
  abort,
  begin,
  commit,
  expectStep,
  finish,
  vote,
  checkPrepare,
  checkDeal,
  type ReshareMessage,
  type ReshareParams,
  type ReshareState,
  type ReshareStep,
} from '../../nodes/reshare-machine.ts';
import { expectCode } from './helpers.ts';

const member = (node: number) => ({ node, signing: `s${node}`, encryption: `e${node}` });
const ID = 'r' + 'a'.repeat(31);
const params: ReshareParams = {
  reshareId: ID,
  proposalId: 'p'.repeat(64),
  proposal: {} as ReshareParams['proposal'],
  oldEpoch: 1,
  oldThreshold: 2,
  oldCommittee: [1, 2, 3].map(member),
  epoch: 2,
  threshold: 3,
  committee: [1, 2, 3, 4].map(member),
  keys: [
    { tenant: 'a', version: 1 },
    { tenant: 'b', version: 1 },
    { tenant: 'c', version: 1 },
  ],
  dealer: true,
  receiver: true,
};
const at = (step: ReshareStep, extra: Partial<ReshareState> = {}): ReshareState => ({
  params,
  step,
  ...extra,
});
const SIZE = 2; // chunk size for the tables: 3 keys -> 2 chunks

describe('nodes/reshare-machine: state table', () => {
  const steps: (ReshareStep | 'none')[] = [
    'none',
    'begun',
    'voted',
    'committed',
    'finished',
    'aborted',
  ];
  const messages: ReshareMessage[] = ['deal', 'prepare', 'vote', 'commit', 'finish', 'abort'];
  const allowed: Record<string, readonly string[]> = {
    none: [],
    begun: ['deal', 'prepare', 'vote', 'commit', 'abort'],
    voted: ['deal', 'prepare', 'vote', 'commit', 'abort'],
    committed: ['commit', 'finish'],
    finished: ['commit', 'finish'],
    aborted: ['abort'],
  };
  for (const step of steps) {
    for (const message of messages) {
      const ok = allowed[step]!.includes(message);
      const refusal: ErrorCode =
        message === 'abort' && (step === 'committed' || step === 'finished')
          ? 'ERR_CEREMONY_CONFLICT'
          : 'ERR_RESHARE_STATE';
      it(`${step} + ${message} ${ok ? 'is taken' : `gives ${refusal}`}`, () => {
        const state = step === 'none' ? undefined : at(step);
        if (ok) expect(expectStep(ID, state, message)).to.equal(state);
        else expectCode(() => expectStep(ID, state, message), refusal, { state: step });
      });
    }
  }
});

describe('nodes/reshare-machine: transitions', () => {
  const sign = (dealers: number[], chunks: string[]) => ({
    transcript: `${dealers.join('')}-${chunks.join('')}`,
    signature: 'sig',
  });
  const digests = new Map([
    [0, 'd0'],
    [1, 'd1'],
  ]);

  it('begin: new, replay, other parameters, another open reshare, after abort', () => {
    expect(begin(undefined, params, undefined)).to.deep.equal({
      state: at('begun'),
      replay: false,
    });
    expect(begin(at('voted'), params, undefined).replay).to.equal(true);
    expectCode(
      () => begin(at('begun'), { ...params, threshold: 2 }, undefined),
      'ERR_CEREMONY_CONFLICT',
    );
    expectCode(
      () => begin(undefined, params, { reshareId: 'r' + 'b'.repeat(31), step: 'begun' }),
      'ERR_CEREMONY_CONFLICT',
    );
    expect(begin(at('aborted'), { ...params, threshold: 2 }, undefined).state.step).to.equal(
      'begun',
    );
    expectCode(() => begin(at('committed'), params, undefined), 'ERR_RESHARE_STATE', {
      state: 'committed',
    });
  });

  it('vote: every chunk prepared, one vote per reshare', () => {
    const r = vote(at('begun'), { dealers: [1, 2], chunks: 2 }, digests, SIZE, sign);
    expect(r.state.step).to.equal('voted');
    expect(r.vote.transcript).to.equal('12-d0d1');
    expect(vote(r.state, { dealers: [1, 2], chunks: 2 }, new Map(), SIZE, sign).vote).to.equal(
      r.vote,
    );
    expectCode(
      () => vote(r.state, { dealers: [1, 3], chunks: 2 }, digests, SIZE, sign),
      'ERR_RESHARE_STATE',
      {
        state: 'voted',
      },
    );
    expectCode(
      () => vote(at('begun'), { dealers: [1, 2], chunks: 2 }, new Map([[0, 'd0']]), SIZE, sign),
      'ERR_RESHARE_STATE',
    );
    expectCode(
      () => vote(at('begun'), { dealers: [1, 2], chunks: 1 }, digests, SIZE, sign),
      'ERR_RESHARE_KEYSET',
    );
    expectCode(
      () => vote(at('begun'), { dealers: [1], chunks: 2 }, digests, SIZE, sign),
      'ERR_VALIDATION',
    );
    expectCode(
      () => vote(at('begun'), { dealers: [1, 9], chunks: 2 }, digests, SIZE, sign),
      'ERR_VALIDATION',
    );
    expectCode(
      () =>
        vote(
          at('begun', { params: { ...params, receiver: false } }),
          { dealers: [1, 2], chunks: 2 },
          digests,
          SIZE,
          sign,
        ),
      'ERR_RESHARE_STATE',
    );
  });

  it('commit: one valid vote per new member, over the transcript this receiver voted', () => {
    const voted = at('voted', {
      vote: { dealers: [1, 2], chunks: 2, transcript: 'T', signature: 's' },
    });
    const votes = [1, 2, 3, 4].map((node) => ({ node, signature: `v${node}` }));
    const valid = (node: number, s: string) => s === `v${node}`;
    const r = commit(voted, { transcript: 'T', votes }, valid, 5);
    expect(r.state.step).to.equal('committed');
    expect(r.state.committed).to.deep.equal({ transcript: 'T', at: 5 });
    expect(commit(r.state, { transcript: 'T', votes: [] }, valid, 9).replay).to.equal(true);
    expectCode(() => commit(r.state, { transcript: 'U', votes }, valid, 9), 'ERR_RESHARE_VOTE');
    expectCode(
      () => commit(voted, { transcript: 'T', votes: votes.slice(1) }, valid, 5),
      'ERR_RESHARE_VOTE',
      {
        nodes: [1],
      },
    );
    expectCode(
      () =>
        commit(
          voted,
          { transcript: 'T', votes: [...votes, { node: 2, signature: 'v2' }] },
          valid,
          5,
        ),
      'ERR_RESHARE_VOTE',
      { nodes: [2] },
    );
    expectCode(
      () =>
        commit(
          voted,
          { transcript: 'T', votes: votes.map((v) => ({ ...v, signature: 'x' })) },
          valid,
          5,
        ),
      'ERR_RESHARE_VOTE',
    );
    expectCode(() => commit(voted, { transcript: 'U', votes }, () => true, 5), 'ERR_RESHARE_VOTE');
    expectCode(
      () => commit(at('begun'), { transcript: 'T', votes }, valid, 5),
      'ERR_RESHARE_STATE',
    );
    // An old member that is not a receiver commits without a vote of its own.
    const oldOnly = at('begun', { params: { ...params, receiver: false } });
    expect(commit(oldOnly, { transcript: 'T', votes }, valid, 5).state.step).to.equal('committed');
  });

  it('finish and abort', () => {
    expect(finish(at('committed')).state.step).to.equal('finished');
    expect(finish(at('finished')).replay).to.equal(true);
    expect(abort(at('voted')).state.step).to.equal('aborted');
    expect(abort(at('voted')).state.vote).to.equal(undefined);
    expect(abort(at('aborted')).replay).to.equal(true);
    expectCode(() => abort(at('committed')), 'ERR_CEREMONY_CONFLICT');
  });

  it('deal and prepare: roles, the chunk keys, the dealer set', () => {
    const req = { dealers: [1, 2], chunk: 1, keys: [{ tenant: 'c', version: 1 }] };
    checkDeal(1, at('begun'), req, SIZE);
    expectCode(() => checkDeal(3, at('begun'), req, SIZE), 'ERR_VALIDATION');
    expectCode(() => checkDeal(1, at('begun'), { ...req, chunk: 0 }, SIZE), 'ERR_RESHARE_KEYSET');
    expectCode(
      () => checkDeal(1, at('begun', { params: { ...params, dealer: false } }), req, SIZE),
      'ERR_RESHARE_STATE',
    );
    checkPrepare(at('begun'), req, SIZE);
    const voted = at('voted', {
      vote: { dealers: [1, 3], chunks: 2, transcript: 'T', signature: 's' },
    });
    expectCode(() => checkPrepare(voted, req, SIZE), 'ERR_RESHARE_STATE', { state: 'voted' });
    expectCode(
      () => checkPrepare(at('begun'), { ...req, dealers: [2, 1] }, SIZE),
      'ERR_VALIDATION',
    );
  });
});
