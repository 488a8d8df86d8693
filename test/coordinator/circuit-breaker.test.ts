/**
 * The per-node circuit breaker (coordinator/circuit-breaker.ts) as a table: from a fresh breaker,
 * these outcomes and clock steps give this state. The clock is a fake one the test moves.
 */
import { expect } from 'chai';
import {
  CircuitBreaker,
  LIE_MEMORY_MS,
  type BreakerOptions,
  type BreakerState,
  type Transition,
} from '../../coordinator/circuit-breaker.ts';

const OPTIONS: BreakerOptions = {
  failures: 3,
  failureRate: 0.5,
  openMs: 1000,
  maxOpenMs: 8000,
  liarOpenMs: 60_000,
  probeTimeoutMs: 5000,
};

/** ok, fail, lie: an outcome; a number: the clock moves on by that many ms; probe: take the slot. */
type Step = 'ok' | 'fail' | 'lie' | 'probe' | 'release' | number;

interface Case {
  name: string;
  steps: Step[];
  state: BreakerState;
  routable?: 'yes' | 'probe' | 'no';
  reopensInMs?: number | null;
  /** The reason of the last transition the steps made. */
  reason?: string;
}

function run(steps: readonly Step[]) {
  let now = 0;
  const breaker = new CircuitBreaker(OPTIONS, () => now);
  const transitions: Transition[] = [];
  const probes: boolean[] = [];
  for (const step of steps) {
    if (typeof step === 'number') now += step;
    else if (step === 'probe') probes.push(breaker.tryProbe());
    else if (step === 'release') breaker.release();
    else {
      const t =
        step === 'ok' ? breaker.success() : step === 'fail' ? breaker.failure() : breaker.lied();
      if (t) transitions.push(t);
    }
  }
  return { breaker, transitions, probes };
}

const repeat = (steps: Step[], times: number): Step[] =>
  Array.from({ length: times }, () => steps).flat();

const CASES: Case[] = [
  { name: 'a fresh breaker is closed and routable', steps: [], state: 'closed', routable: 'yes' },
  {
    name: 'fewer failures in a row than the limit keep it closed',
    steps: ['fail', 'fail'],
    state: 'closed',
  },
  {
    name: 'as many failures in a row as the limit open it for the first cool-down',
    steps: ['fail', 'fail', 'fail'],
    state: 'open',
    routable: 'no',
    reopensInMs: 1000,
    reason: 'failures',
  },
  {
    name: 'a success between failures starts the count again',
    steps: ['fail', 'fail', 'ok', 'fail', 'fail'],
    state: 'closed',
  },
  {
    name: 'half of 10 outcomes failed, never 3 in a row: the failure rate opens it',
    steps: repeat(['ok', 'fail'], 5),
    state: 'open',
    reason: 'failure rate',
  },
  {
    name: 'half of fewer than 10 outcomes failed: too few to make a rate, closed',
    steps: repeat(['ok', 'fail'], 4),
    state: 'closed',
  },
  {
    name: 'a third of 20 outcomes failed: below the rate, closed',
    steps: repeat(['ok', 'ok', 'fail'], 7),
    state: 'closed',
  },
  {
    name: 'open: still not routable just before the cool-down ends',
    steps: ['fail', 'fail', 'fail', 999],
    state: 'open',
    routable: 'no',
    reopensInMs: 1,
  },
  {
    name: 'open: once the cool-down has passed it is half-open with its probe slot free',
    steps: ['fail', 'fail', 'fail', 1000],
    state: 'half-open',
    routable: 'probe',
    reopensInMs: null,
  },
  {
    name: 'half-open with its probe out: nobody else is let through',
    steps: ['fail', 'fail', 'fail', 1000, 'probe'],
    state: 'half-open',
    routable: 'no',
  },
  {
    name: 'half-open: a successful probe closes it',
    steps: ['fail', 'fail', 'fail', 1000, 'probe', 'ok'],
    state: 'closed',
    routable: 'yes',
    reason: 'success',
  },
  {
    name: 'half-open: a failed probe opens it again for twice as long',
    steps: ['fail', 'fail', 'fail', 1000, 'probe', 'fail'],
    state: 'open',
    reopensInMs: 2000,
    reason: 'probe failed',
  },
  {
    name: 'each failed probe doubles the cool-down, up to the maximum',
    steps: ['fail', 'fail', 'fail', ...repeat([60_000, 'probe', 'fail'], 5)],
    state: 'open',
    reopensInMs: 8000,
  },
  {
    name: 'once closed again, the next opening starts from the first cool-down',
    steps: [
      'fail',
      'fail',
      'fail',
      1000,
      'probe',
      'fail',
      2000,
      'probe',
      'ok',
      'fail',
      'fail',
      'fail',
    ],
    state: 'open',
    reopensInMs: 1000,
  },
  {
    name: 'a probe that reports nothing frees its slot after the probe timeout',
    steps: ['fail', 'fail', 'fail', 1000, 'probe', 5000],
    state: 'half-open',
    routable: 'probe',
  },
  {
    name: 'a probe released (never sent) frees its slot at once',
    steps: ['fail', 'fail', 'fail', 1000, 'probe', 'release'],
    state: 'half-open',
    routable: 'probe',
  },
  {
    name: 'a lie opens a closed breaker at once, for the liar cool-down',
    steps: ['ok', 'lie'],
    state: 'open',
    reopensInMs: 60_000,
    reason: 'lied',
  },
  {
    name: 'a lie in a half-open probe opens it for the liar cool-down',
    steps: ['fail', 'fail', 'fail', 1000, 'probe', 'lie'],
    state: 'open',
    reopensInMs: 60_000,
    reason: 'lied',
  },
  {
    name: 'each remembered lie doubles the liar cool-down',
    steps: ['lie', 60_000, 'ok', 'lie', 120_000, 'ok', 'lie'],
    state: 'open',
    reopensInMs: 240_000,
  },
  {
    name: 'the liar cool-down stops doubling at 16 times',
    steps: ['lie', ...repeat([3_600_000, 'ok', 'lie'], 1), ...repeat([1, 'lie'], 6)],
    state: 'open',
    reopensInMs: 16 * 60_000,
  },
  {
    name: 'lies are forgotten after an hour of correct answers',
    steps: ['lie', 60_000, 'ok', LIE_MEMORY_MS, 'ok', 'lie'],
    state: 'open',
    reopensInMs: 60_000,
  },
];

describe('coordinator: circuit breaker (fake clock)', function () {
  for (const c of CASES) {
    it(c.name, function () {
      const { breaker, transitions } = run(c.steps);
      const view = breaker.view();
      expect(view.state).to.equal(c.state);
      expect(breaker.state).to.equal(c.state);
      if (c.routable !== undefined) expect(breaker.routable()).to.equal(c.routable);
      if (c.reopensInMs !== undefined) expect(view.reopensInMs).to.equal(c.reopensInMs);
      if (c.reason !== undefined) expect(transitions.at(-1)?.reason).to.equal(c.reason);
    });
  }

  it('reports each transition once, with the state it came from', function () {
    const { transitions } = run(['fail', 'fail', 'fail', 'fail', 1000, 'probe', 'ok', 'ok']);
    expect(transitions).to.deep.equal([
      { from: 'closed', to: 'open', reason: 'failures', openMs: 1000 },
      { from: 'half-open', to: 'closed', reason: 'success' },
    ]);
  });

  it('lets exactly one probe through per cool-down', function () {
    const { probes } = run(['fail', 'fail', 'fail', 'probe', 1000, 'probe', 'probe', 'probe']);
    expect(probes).to.deep.equal([false, true, false, false]);
  });
});
