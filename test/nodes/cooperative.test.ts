/**
 * nodes/cooperative.ts: the pause that lets evaluations in during long ceremony work. What
 * matters is whether a callback already waiting on the event loop runs before the pause
 * resolves: with a zero budget it always does, with an endless budget it never does.
 */
import { expect } from 'chai';
import { noPause, pauseEvery } from '../../nodes/cooperative.ts';

async function waitingCallbackRan(pause: () => Promise<void>): Promise<boolean> {
  let ran = false;
  setImmediate(() => {
    ran = true;
  });
  await pause();
  const seen = ran;
  await new Promise((r) => setImmediate(r));
  return seen;
}

describe('nodes/cooperative', () => {
  it('pauseEvery(0) gives the event loop back at every call', async () => {
    const pause = pauseEvery(0);
    for (let i = 0; i < 3; i++) expect(await waitingCallbackRan(pause)).to.equal(true);
  });

  it('a pause within its budget, and noPause, resolve without letting anything in', async () => {
    expect(await waitingCallbackRan(pauseEvery(60_000))).to.equal(false);
    expect(await waitingCallbackRan(noPause)).to.equal(false);
  });
});
