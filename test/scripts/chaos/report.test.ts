/**
 * The chaos report and chart (scripts/chaos/report.ts, plot.ts) over a small timeline made by
 * hand, whose expected figures are worked out here from the definitions: faulty until 2 s after
 * the lift, a request counted as made while t nodes were healthy only if that held for its whole
 * life, wrong keys counted as failures.
 */
import { expect } from 'chai';
import { renderHtml } from '../../../scripts/chaos/plot.ts';
import { buildReport, summaryLines } from '../../../scripts/chaos/report.ts';
import { Timeline, type RequestRecord } from '../../../scripts/chaos/timeline.ts';

const request = (at: number, end: number, extra: Partial<RequestRecord> = {}): RequestRecord => ({
  at,
  end,
  coordinator: 0,
  tenant: 'acme',
  docs: 2,
  ok: true,
  wrong: 0,
  retried: false,
  ...extra,
});

describe('chaos report', () => {
  const tl = new Timeline({ committee: [1, 2, 3, 4, 5], threshold: 3 });
  // Node 1 faulty 1000-5000, node 2 2000-6000, node 3 2800-4900: 3 of 5 from 2800 to 4900,
  // exactly n - t = 2 for 0.8 s before and 0.1 s after.
  tl.faults.push(
    { kind: 'kill', node: 1, plannedAt: 1000, at: 1000, liftedAt: 3000, postponedMs: 0 },
    { kind: 'freeze', node: 2, plannedAt: 2000, at: 2000, liftedAt: 4000, postponedMs: 0 },
    { kind: 'cut', node: 3, plannedAt: 2800, at: 2800, liftedAt: 2900, postponedMs: 0 },
    {
      kind: 'coordinator-kill',
      coordinator: 1,
      plannedAt: 7500,
      at: 7500,
      liftedAt: 9000,
      postponedMs: 0,
    },
  );
  const tooFew = {
    ok: false,
    code: 'ERR_TOO_FEW_NODES',
    cause: 'ERR_TOO_FEW_NODES (3x node not connected)',
  };
  tl.requests.push(
    request(0, 100),
    request(2500, 2700),
    request(2600, 3000, tooFew), // 2 healthy from 2800: not counted against the coordinator
    request(7000, 7100, { ok: false, wrong: 1, cause: 'WRONG_KEY' }),
    request(8000, 8400, { ...tooFew, retried: true }),
  );
  const meta = {
    seed: 's',
    minutes: 1,
    command: 'npm run chaos -- --minutes 1 --seed s',
    startedAt: '2026-12-04T00:00:00.000Z',
    n: 5,
    t: 3,
    spare: 6,
    byzantine: 2,
    coordinators: 2,
    clients: 1,
    settings: {},
    endMs: 10_000,
  };
  const report = buildReport(tl, meta);

  it('says how many submissions a ceremony took when its first job was lost', () => {
    const lost = new Timeline({ committee: [1, 2, 3, 4, 5], threshold: 3 });
    lost.ceremonies.push(
      {
        kind: 'refresh',
        plannedAt: 1000,
        at: 1000,
        doneAt: 4500,
        endedAt: 4500,
        outcome: 'completed',
        submissions: 2,
        jobIds: ['a', 'b'],
        problems: ['job lost (ERR_UNKNOWN_JOB), proposed again'],
      },
      {
        kind: 'add-node',
        plannedAt: 5000,
        at: 5000,
        doneAt: 6000,
        endedAt: 6000,
        outcome: 'completed',
        submissions: 1,
        jobIds: ['c'],
        problems: [],
      },
    );
    const r = buildReport(lost, meta);
    const line = summaryLines(r).find((l) => l.startsWith('ceremonies completed'));
    expect(line).to.equal(
      'ceremonies completed 2 of 2: refresh completed 3.5 s (2 submissions), add-node completed 1 s',
    );
  });

  it('counts wrong keys, failures by code and cause, and those made while t nodes were healthy', () => {
    expect(report.requests).to.include({
      total: 5,
      ok: 2,
      failed: 3,
      retriedOnOtherCoordinator: 1,
    });
    expect(report.wrongKeys).to.equal(1);
    expect(report.failuresByCode).to.deep.equal({ ERR_TOO_FEW_NODES: 2, WRONG_KEY: 1 });
    expect(report.whileHealthy).to.deep.equal({
      requests: 4,
      failed: 2,
      share: 0.5,
      byCause: { 'ERR_TOO_FEW_NODES (3x node not connected)': 1, WRONG_KEY: 1 },
    });
    expect(report.invariant).to.include({ maxFaultyAtOnce: 3, budget: 2, secondsAtBudget: 0.9 });
  });

  it('puts each request in the phases on at its start, with nearest-rank percentiles of the successes', () => {
    expect(report.failures.map((f) => f.phases)).to.deep.equal([
      ['freeze', 'kill', 'n - t faulty'],
      ['no fault'],
      ['coordinator-kill'],
    ]);
    expect(report.latency.byPhase['no fault']).to.deep.equal({
      requests: 2,
      ok: 1,
      failed: 1,
      p50ms: 100,
      p99ms: 100,
    });
    expect(report.latency.all).to.include({ requests: 5, ok: 2, p50ms: 200, p99ms: 200 });
  });

  it('draws a self-contained page: three charts, nothing fetched from anywhere', () => {
    const html = renderHtml(report, tl, 10_000);
    expect(html.match(/<svg /g)).to.have.length(3);
    expect(html).to.not.match(/<script|<link|\bsrc=|url\(|https?:\/\//i);
    expect(html).to.include('node 2 (Byzantine)');
  });
});
