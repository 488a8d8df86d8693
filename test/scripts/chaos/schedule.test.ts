/**
 * The chaos fault schedule (scripts/chaos/schedule.ts): for many seeds, run lengths and committee
 * sizes, never more than n - t nodes faulty at once, and exactly n - t at some moment, counted
 * here by a sweep of our own over the faulty windows the module documents; the same seed gives
 * the same schedule.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import {
  BUDGET_FAULTS,
  faultSchedule,
  RECOVERY_MS,
  RESTART_ALLOWANCE_MS,
  type ChaosEvent,
  type Schedule,
} from '../../../scripts/chaos/schedule.ts';

interface Window {
  node: number;
  from: number;
  to: number;
  counted: boolean;
}

/** Each node fault's window: counted ones as the module comment defines faulty, latency as is. */
function windows(events: readonly ChaosEvent[]): Window[] {
  const out: Window[] = [];
  for (const e of events) {
    if (!('node' in e) || !('until' in e) || e.node === undefined) continue;
    const counted = (BUDGET_FAULTS as readonly string[]).includes(e.kind);
    const extra = counted ? RECOVERY_MS + (e.kind === 'kill' ? RESTART_ALLOWANCE_MS : 0) : 0;
    out.push({ node: e.node, from: e.at, to: e.until + extra, counted });
  }
  return out;
}

/** The most counted windows open at one moment (half-open intervals). */
function peak(ws: readonly Window[]): number {
  const edges = ws
    .filter((w) => w.counted)
    .flatMap((w) => [
      [w.from, 1],
      [w.to, -1],
    ])
    .sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!);
  let open = 0;
  let most = 0;
  for (const [, d] of edges) {
    open += d!;
    most = Math.max(most, open);
  }
  return most;
}

const committees = fc.oneof(
  fc.constant({ n: 5, t: 3 }),
  fc
    .integer({ min: 2, max: 9 })
    .chain((n) => fc.record({ n: fc.constant(n), t: fc.integer({ min: 1, max: n }) })),
);

describe('chaos fault schedule', () => {
  it('never has more than n - t nodes faulty at once, and sometimes exactly n - t', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.integer(), fc.string()),
        fc.integer({ min: 1, max: 12 }),
        committees,
        (seed, minutes, { n, t }) => {
          const s = faultSchedule({ seed, minutes, n, t });
          const ws = windows(s.events);
          expect(peak(ws)).to.equal(n - t);
          if (n > t) expect(s.events.map((e) => e.kind)).to.include('byzantine');
          for (const w of ws) {
            expect(w.node).to.be.within(1, n);
            expect(w.from).to.be.at.least(0);
            expect(w.to).to.be.at.most(s.durationMs);
            // One fault per node at a time, latency included.
            const clash = ws.find(
              (o) => o !== w && o.node === w.node && o.from < w.to && w.from < o.to,
            );
            expect(clash, `node ${w.node} has two faults at once`).to.equal(undefined);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('only the Byzantine node lies, the spare is never faulted, coordinators never down together', () => {
    for (const seed of ['a', 'b', 7, 2026]) {
      const s: Schedule = faultSchedule({ seed, minutes: 10, n: 5, t: 3 });
      const lies = s.events.filter((e) => e.kind === 'byzantine');
      expect(lies.length).to.be.greaterThan(0);
      expect(lies.every((e) => 'node' in e && e.node === s.byzantine)).to.equal(true);
      const onSpare = s.events.filter(
        (e) =>
          'node' in e && e.node === s.spare && e.kind !== 'add-node' && e.kind !== 'remove-node',
      );
      expect(onSpare).to.deep.equal([]);
      const kills = s.events.flatMap((e) => (e.kind === 'coordinator-kill' ? [e] : []));
      expect(kills.length).to.equal(5);
      for (const a of kills) {
        for (const b of kills) {
          if (a !== b)
            expect(a.at < b.until && b.at < a.until, 'coordinators down together').to.equal(false);
        }
      }
      const kinds = s.events.map((e) => e.kind);
      for (const k of [
        'kill',
        'freeze',
        'cut',
        'drop',
        'latency',
        'redis-restart',
        'redis-flush',
      ]) {
        expect(kinds, k).to.include(k);
      }
      const order = s.events.filter((e) => ['refresh', 'add-node', 'remove-node'].includes(e.kind));
      expect(order.map((e) => e.kind)).to.deep.equal([
        'refresh',
        'add-node',
        'remove-node',
        'refresh',
      ]);
    }
  });

  it('the same seed gives the same schedule; another seed another one', () => {
    const a = faultSchedule({ seed: 42, minutes: 2, n: 5, t: 3 });
    expect(faultSchedule({ seed: 42, minutes: 2, n: 5, t: 3 })).to.deep.equal(a);
    expect(faultSchedule({ seed: '42', minutes: 2, n: 5, t: 3 })).to.deep.equal(a);
    expect(faultSchedule({ seed: 43, minutes: 2, n: 5, t: 3 }).events).to.not.deep.equal(a.events);
  });
});
