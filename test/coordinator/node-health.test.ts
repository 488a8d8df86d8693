/**
 * The per-node health tracker (coordinator/node-health.ts) with a fake clock: which errors are
 * the node's fault (a table), the latency estimate hedging reads, heartbeats, the memory of recent
 * failures, and that only the node's own faults reach its breaker.
 */
import { expect } from 'chai';
import { DEFAULT_BREAKER } from '../../coordinator/circuit-breaker.ts';
import { NodeReplyError } from '../../coordinator/node-link.ts';
import {
  classifyError,
  classifyWrongAnswer,
  EWMA_ALPHA,
  FAILURE_MEMORY_MS,
  NodeHealth,
  type Outcome,
} from '../../coordinator/node-health.ts';
import { KmaasError, type ErrorCode } from '../../shared/errors.ts';

const reply = (code: ErrorCode) => new NodeReplyError(4, { code, message: 'no' });
const unavailable = (reason: string) =>
  new KmaasError('ERR_NODE_UNAVAILABLE', 'node 4 ...', { node: 4, reason });

function tracker() {
  const clock = { now: 0 };
  const health = new NodeHealth(DEFAULT_BREAKER, () => clock.now);
  return { clock, health };
}

describe('coordinator: node health tracker (fake clock)', function () {
  describe('whose fault an error is', function () {
    const table: [string, unknown, Outcome][] = [
      [
        'a token of another tenant is the client’s fault',
        reply('ERR_TOKEN_TENANT'),
        { kind: 'refused', code: 'ERR_TOKEN_TENANT' },
      ],
      [
        'a rate limit is the client’s fault',
        reply('ERR_RATE_LIMITED'),
        { kind: 'refused', code: 'ERR_RATE_LIMITED' },
      ],
      [
        'a share holder that does not know the tenant lost its data: the node’s fault',
        reply('ERR_UNKNOWN_TENANT'),
        { kind: 'failed', code: 'ERR_UNKNOWN_TENANT', reason: 'error' },
      ],
      [
        'a share holder that does not know the key version lost its data: the node’s fault',
        reply('ERR_UNKNOWN_KEY_VERSION'),
        { kind: 'failed', code: 'ERR_UNKNOWN_KEY_VERSION', reason: 'error' },
      ],
      [
        'a replayed DPoP proof is not the node’s fault',
        reply('ERR_DPOP_REPLAY'),
        { kind: 'refused', code: 'ERR_DPOP_REPLAY' },
      ],
      [
        'a server error is the node’s',
        reply('ERR_INTERNAL'),
        { kind: 'failed', code: 'ERR_INTERNAL', reason: 'error' },
      ],
      [
        'a node that speaks another protocol is at fault, though it answers 400',
        reply('ERR_UNSUPPORTED_VERSION'),
        { kind: 'failed', code: 'ERR_UNSUPPORTED_VERSION', reason: 'error' },
      ],
      [
        'a timeout is the node’s',
        unavailable('timeout'),
        { kind: 'failed', code: 'ERR_NODE_UNAVAILABLE', reason: 'timeout' },
      ],
      [
        'a dropped connection is the node’s',
        unavailable('disconnected'),
        { kind: 'failed', code: 'ERR_NODE_UNAVAILABLE', reason: 'dropped' },
      ],
      [
        'a request cancelled before it was sent says nothing',
        unavailable('cancelled'),
        { kind: 'void' },
      ],
      ['a link we closed ourselves says nothing', unavailable('closed'), { kind: 'void' }],
    ];
    for (const [name, err, outcome] of table) {
      it(name, () => expect(classifyError(err)).to.deep.equal(outcome));
    }

    const answers: [string, KmaasError, Outcome][] = [
      [
        'an invalid proof is a lie',
        new KmaasError('ERR_PROOF_INVALID', 'node 4 ...'),
        { kind: 'lied', code: 'ERR_PROOF_INVALID' },
      ],
      [
        'an answer with another epoch’s share is no illness (a reshare moved on)',
        new KmaasError('ERR_EPOCH_MISMATCH', 'node 4 ...'),
        { kind: 'refused', code: 'ERR_EPOCH_MISMATCH' },
      ],
      [
        'an element that is not a point is a malformed answer',
        new KmaasError('ERR_INVALID_POINT', 'node 4 evaluated[0] ...'),
        { kind: 'failed', code: 'ERR_INVALID_POINT', reason: 'malformed' },
      ],
      [
        'a check that could not run says nothing of the node',
        new KmaasError('ERR_INTERNAL', 'internal error'),
        { kind: 'void' },
      ],
    ];
    for (const [name, err, outcome] of answers) {
      it(name, () => expect(classifyWrongAnswer(err)).to.deep.equal(outcome));
    }
  });

  it('estimates the usual latency as an average of answers, the ping before the first one', function () {
    const { health } = tracker();
    expect(health.usualLatency()).to.equal(null);
    health.pong(8);
    expect(health.usualLatency()).to.equal(8);
    health.record({ kind: 'success', latencyMs: 100 });
    expect(health.usualLatency()).to.equal(100);
    health.record({ kind: 'answered', latencyMs: 200 });
    // An exponentially weighted average, computed here on its own.
    expect(health.usualLatency()).to.be.closeTo(100 + EWMA_ALPHA * (200 - 100), 1e-9);
    expect(health.pingLatency()).to.equal(8);
  });

  it('refusals that are the client’s fault never open the breaker; the node’s own failures do', function () {
    const { health } = tracker();
    for (let i = 0; i < 50; i++) health.record(classifyError(reply('ERR_RATE_LIMITED')));
    expect(health.breaker.state).to.equal('closed');
    expect(health.recentFailures()).to.equal(0);

    const transitions = [1, 2, 3].map(() => health.record(classifyError(unavailable('timeout'))));
    expect(transitions.map((t) => t?.to ?? null)).to.deep.equal([null, null, 'open']);
    expect(health.routable()).to.equal('no');
    expect(health.recentFailures()).to.equal(3);
  });

  it('an invalid proof opens the breaker at once', function () {
    const { health } = tracker();
    health.record({ kind: 'success', latencyMs: 5 });
    const t = health.record(classifyWrongAnswer(new KmaasError('ERR_PROOF_INVALID', 'x')));
    expect(t).to.deep.include({ from: 'closed', to: 'open', reason: 'lied' });
    expect(health.view().breaker).to.deep.include({ state: 'open', lies: 1 });
  });

  it('forgets failures some time after the last one, and at once after a good answer', function () {
    const { clock, health } = tracker();
    health.record(classifyError(unavailable('timeout')));
    clock.now += FAILURE_MEMORY_MS - 1;
    health.record(classifyError(unavailable('disconnected')));
    expect(health.recentFailures()).to.equal(2);
    clock.now += FAILURE_MEMORY_MS - 1;
    expect(health.recentFailures()).to.equal(2);
    clock.now += 1;
    expect(health.recentFailures()).to.equal(0);

    health.record(classifyError(unavailable('timeout')));
    expect(health.recentFailures()).to.equal(1);
    health.record({ kind: 'success', latencyMs: 3 });
    expect(health.recentFailures()).to.equal(0);
  });

  it('counts missed heartbeats until a pong or any answer comes', function () {
    const { health } = tracker();
    health.missedPong();
    health.missedPong();
    expect(health.missedPongs).to.equal(2);
    health.pong(4);
    expect(health.missedPongs).to.equal(0);
    health.missedPong();
    health.record(classifyError(reply('ERR_TOKEN_EXPIRED')));
    expect(health.missedPongs).to.equal(0);
    // A timeout is no sign of life.
    health.missedPong();
    health.record(classifyError(unavailable('timeout')));
    expect(health.missedPongs).to.equal(1);
  });

  it('a dropped link ranks the node down without counting against its breaker', function () {
    const { health } = tracker();
    for (let i = 0; i < 5; i++) health.dropped();
    expect(health.recentFailures()).to.equal(5);
    expect(health.breaker.state).to.equal('closed');
  });

  it('a half-open node’s probe: a refusal frees the slot, a success closes it', function () {
    const { clock, health } = tracker();
    for (let i = 0; i < 3; i++) health.record(classifyError(unavailable('timeout')));
    clock.now += DEFAULT_BREAKER.openMs;
    expect(health.routable()).to.equal('probe');
    expect(health.breaker.tryProbe()).to.equal(true);
    expect(health.routable()).to.equal('no');
    health.record(classifyError(reply('ERR_TOKEN_EXPIRED')));
    expect(health.routable()).to.equal('probe');
    expect(health.breaker.tryProbe()).to.equal(true);
    expect(health.record({ kind: 'success', latencyMs: 9 })).to.deep.include({ to: 'closed' });
    expect(health.routable()).to.equal('yes');
  });
});
