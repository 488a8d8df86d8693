/**
 * The hedge decision (coordinator/hedge.ts) over a node health tracker driven by a fake clock:
 * a node is hedged once it is slower than k times its usual latency and not before, never sooner
 * than the hedge delay, and never without a spare node, budget, time or admission room.
 */
import { expect } from 'chai';
import { DEFAULT_BREAKER } from '../../coordinator/circuit-breaker.ts';
import { decideHedge, hedgeAfter, type HedgeQuestion } from '../../coordinator/hedge.ts';
import { EWMA_ALPHA, NodeHealth } from '../../coordinator/node-health.ts';

const RULE = { hedgeDelayMs: 50, factor: 3 };

/** A node whose every answer so far took `usualMs`, the clock at 0 when it is asked again. */
function node(usualMs: number | null) {
  const clock = { now: 0 };
  const health = new NodeHealth(DEFAULT_BREAKER, () => clock.now);
  if (usualMs !== null)
    for (let i = 0; i < 5; i++) health.record({ kind: 'success', latencyMs: usualMs });
  return { clock, health };
}

/** Ask at the fake clock's time, the request having been sent at 0. */
function ask(
  n: ReturnType<typeof node>,
  overrides: Partial<HedgeQuestion> = {},
): ReturnType<typeof decideHedge> {
  return decideHedge({
    rule: RULE,
    node: n.health,
    elapsedMs: n.clock.now,
    remainingMs: 5000 - n.clock.now,
    spare: true,
    budget: 2,
    fits: true,
    ...overrides,
  });
}

describe('coordinator: hedge decision (fake clock)', function () {
  it('hedges a node once it is slower than 3 times its usual latency, not before', function () {
    const n = node(100);
    expect(hedgeAfter(RULE, n.health)).to.equal(300);
    n.clock.now = 299;
    expect(ask(n)).to.deep.equal({ hedge: false, wait: 1 });
    n.clock.now = 300;
    expect(ask(n)).to.deep.equal({ hedge: true });
  });

  it('never hedges sooner than the hedge delay, however fast the node usually is', function () {
    const n = node(2);
    expect(hedgeAfter(RULE, n.health)).to.equal(50);
    n.clock.now = 49;
    expect(ask(n)).to.deep.equal({ hedge: false, wait: 1 });
    n.clock.now = 50;
    expect(ask(n)).to.deep.equal({ hedge: true });
  });

  it('uses the hedge delay for a node whose latency is not known yet', function () {
    const n = node(null);
    expect(hedgeAfter(RULE, n.health)).to.equal(50);
    n.clock.now = 60;
    expect(ask(n)).to.deep.equal({ hedge: true });
  });

  it('falls back on the ping latency before the node has answered an evaluation', function () {
    const n = node(null);
    n.health.pong(40);
    expect(hedgeAfter(RULE, n.health)).to.equal(120);
  });

  it('waits longer when the node’s usual latency grew while it was asked', function () {
    const n = node(100);
    n.clock.now = 250;
    // Other requests to the same node came back slowly meanwhile.
    let usual = 100;
    for (let i = 0; i < 3; i++) {
      n.health.record({ kind: 'success', latencyMs: 400 });
      usual += EWMA_ALPHA * (400 - usual);
    }
    const decision = ask(n);
    expect(decision.hedge).to.equal(false);
    expect((decision as { wait: number }).wait).to.be.closeTo(3 * usual - 250, 1e-9);
  });

  const refusals: [string, Partial<HedgeQuestion>, string][] = [
    ['no untried node is left to ask', { spare: false }, 'no spare'],
    ['the request has spent its retry budget', { budget: 0 }, 'budget'],
    ['the coordinator is at its admission limit', { fits: false }, 'admission'],
    ['the deadline has passed', { remainingMs: 0 }, 'deadline'],
  ];
  for (const [why, overrides, reason] of refusals) {
    it(`does not hedge a slow node when ${why}`, function () {
      const n = node(100);
      n.clock.now = 1000;
      expect(ask(n, overrides)).to.deep.equal({ hedge: false, reason });
      // The same node, the same time, but with that one thing different: it would hedge.
      expect(ask(n)).to.deep.equal({ hedge: true });
    });
  }

  it('does not hedge a node that is not slow, even with nothing else left to stop it', function () {
    const n = node(100);
    n.clock.now = 10;
    expect(ask(n, { spare: false, budget: 0, fits: false })).to.deep.equal({
      hedge: false,
      wait: 290,
    });
  });
});
