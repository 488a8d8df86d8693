/**
 * The verify pool (coordinator/verify-pool.ts): node answers checked in worker threads give the
 * same verdicts, with the same codes, as the inline check; a worker that dies fails only what it
 * was running, with ERR_INTERNAL, and is replaced; a worker that cannot start makes nothing wait;
 * close() is idempotent and fails what is pending.
 */
import { expect } from 'chai';
import { Point } from '../../shared/encoding.ts';
import { KmaasError } from '../../shared/errors.ts';
import { randomScalar } from '../../shared/shamir.ts';
import { evaluateBatch } from '../../shared/voprf-node.ts';
import type { VerifyTask } from '../../coordinator/verify-answer.ts';
import { VerifyPool } from '../../coordinator/verify-pool.ts';
import { LogCapture } from './helpers.ts';

const DYING = new URL('./fixtures/dying-verify-worker.ts', import.meta.url);
const BROKEN = new URL('./fixtures/broken-verify-worker.ts', import.meta.url);
/** The node whose answer kills the dying worker mid-check. */
const DYING_NODE = 13;

/** A real answer of node `node` to `count` blinded elements, as the pool is given it. */
function answer(node: number, count = 4): VerifyTask {
  const share = randomScalar();
  const key = Point.BASE.multiply(share);
  const points = Array.from({ length: count }, () => Point.BASE.multiply(randomScalar()));
  const { evaluated, proof } = evaluateBatch(share, key, points);
  return {
    node,
    key: key.toBytes(),
    blinded: points.map((p) => p.toBytes()),
    evaluated,
    proof,
  };
}

/** The same answer with its first evaluation replaced by another valid point. */
function wrongPoint(task: VerifyTask): VerifyTask {
  const [, ...rest] = task.evaluated;
  return { ...task, evaluated: [Point.BASE.multiply(7n).toBytes(), ...rest] };
}

async function outcome(p: Promise<void>): Promise<KmaasError | 'ok'> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    expect(err).to.be.instanceOf(KmaasError);
    return err as KmaasError;
  }
}

function code(result: KmaasError | 'ok'): string {
  return result === 'ok' ? 'ok' : result.code;
}

describe('coordinator: verify pool', function () {
  let pool: VerifyPool | undefined;
  let logs: LogCapture;

  beforeEach(() => {
    logs = new LogCapture();
  });

  afterEach(async () => {
    await pool?.close();
    pool = undefined;
  });

  for (const size of [1, 0]) {
    const where = size === 0 ? 'inline' : 'in a worker';
    it(`${where}: accepts a valid answer and names what is wrong with a bad one`, async () => {
      pool = new VerifyPool({ size, logger: logs.logger });
      const good = answer(3);
      const badPoint = { ...answer(4), evaluated: [new Uint8Array(32).fill(0xff)] };
      badPoint.blinded = badPoint.blinded.slice(0, 1);

      const results = await Promise.all([
        outcome(pool.verify(good)),
        outcome(pool.verify(wrongPoint(answer(5)))),
        outcome(pool.verify(badPoint)),
        outcome(pool.verify({ ...answer(6), proof: new Uint8Array(64) })),
      ]);

      expect(results.map(code)).to.deep.equal([
        'ok',
        'ERR_PROOF_INVALID',
        'ERR_INVALID_POINT',
        'ERR_PROOF_INVALID',
      ]);
      expect((results[1] as KmaasError).details).to.deep.equal({ node: 5 });
      expect((results[2] as KmaasError).details).to.deep.equal({ field: 'node 4 evaluated[0]' });
    });
  }

  it('fails the task of a worker that dies with ERR_INTERNAL, replaces it, and goes on', async () => {
    pool = new VerifyPool({ size: 1, logger: logs.logger, workerUrl: DYING });
    const queuedBehind = answer(2);

    const [lost, after] = await Promise.all([
      outcome(pool.verify(answer(DYING_NODE))),
      outcome(pool.verify(queuedBehind)),
    ]);

    expect(code(lost)).to.equal('ERR_INTERNAL');
    expect(code(after)).to.equal('ok');
    expect(await outcome(pool.verify(wrongPoint(answer(8))))).to.have.property(
      'code',
      'ERR_PROOF_INVALID',
    );
    expect(pool.threads).to.equal(1);
    const stopped = logs.find('verify worker stopped; replaced');
    expect(stopped).to.have.length(1);
    expect(stopped[0]).to.include({ level: 50, exitCode: 7 });
  });

  it('makes nothing wait on a worker that cannot start', async () => {
    pool = new VerifyPool({ size: 1, logger: logs.logger, workerUrl: BROKEN });

    const results = await Promise.all([
      outcome(pool.verify(answer(1))),
      outcome(pool.verify(answer(2))),
    ]);

    expect(results.map(code)).to.deep.equal(['ERR_INTERNAL', 'ERR_INTERNAL']);
    expect(logs.find('verify worker failed to start')).to.not.be.empty;
  });

  it('drops a queued check whose request was decided', async () => {
    pool = new VerifyPool({ size: 1, logger: logs.logger });
    const decided = new AbortController();
    const running = pool.verify(answer(1, 64));
    const queued = outcome(pool.verify(answer(2), decided.signal));

    decided.abort();

    expect(code(await queued)).to.equal('ERR_INTERNAL');
    expect(await outcome(running)).to.equal('ok');
  });

  it('close() is idempotent, fails what is pending and refuses what comes after', async () => {
    pool = new VerifyPool({ size: 2, logger: logs.logger });
    const pending = [1, 2, 3, 4].map((n) => outcome(pool!.verify(answer(n, 32))));

    await Promise.all([pool.close(), pool.close()]);
    await pool.close();

    for (const result of await Promise.all(pending)) {
      // Each was either finished before the close or failed by it; none is left hanging.
      expect(['ok', 'ERR_INTERNAL']).to.include(code(result));
    }
    expect(code(await outcome(pool.verify(answer(5))))).to.equal('ERR_INTERNAL');
    expect(pool.threads).to.equal(0);
  });
});
