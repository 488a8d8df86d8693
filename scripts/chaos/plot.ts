/**
 * The chaos report as one self-contained HTML page (inline SVG and CSS; no script, no external
 * asset, no CDN), on one time axis:
 *
 *   latency      every request (dots: right keys; red crosses: failures) on a log scale, with the
 *                p50 and p99 of each 5 s bucket
 *   availability the share of requests that succeeded per 2 s bucket, requests per second, and
 *                the healthy committee members against t
 *   faults       a lane per node, per coordinator, for Redis and for the ceremonies: each fault
 *                as a labelled band (the recovery window after it paler), hover for details
 *
 * Moments with exactly n - t nodes faulty are shaded across the charts.
 */
import { RECOVERY_MS } from './schedule.ts';
import { percentile, type ChaosReport } from './report.ts';
import { committeeAt, faultyAt, isBudgetRecord, type Timeline } from './timeline.ts';

const W = 1200;
const LEFT = 110;
const RIGHT = 60;
const PLOT_W = W - LEFT - RIGHT;

const COLORS: Record<string, string> = {
  kill: '#d62728',
  freeze: '#9467bd',
  cut: '#ff7f0e',
  drop: '#8c564b',
  byzantine: '#e377c2',
  latency: '#bcbd22',
  'coordinator-kill': '#1f77b4',
  'redis-restart': '#17becf',
  'redis-flush': '#555555',
  refresh: '#2ca02c',
  'add-node': '#1b7a1b',
  'remove-node': '#6bbf59',
};

const esc = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const f1 = (x: number) => x.toFixed(1);

export function renderHtml(report: ChaosReport, tl: Timeline, endMs: number): string {
  const x = (ms: number) => LEFT + (Math.max(0, Math.min(ms, endMs)) / endMs) * PLOT_W;
  const budgetBands = atBudget(tl, endMs);
  const band = (h: number) =>
    budgetBands
      .map(
        ([a, b]) =>
          `<rect x="${f1(x(a))}" y="0" width="${f1(Math.max(1, x(b) - x(a)))}" height="${h}" fill="#fde0e0"/>`,
      )
      .join('');
  const axisX = (y: number) => {
    const step = niceStep(endMs / 1000);
    const ticks: string[] = [];
    for (let sec = 0; sec <= endMs / 1000; sec += step) {
      ticks.push(
        `<line x1="${f1(x(sec * 1000))}" y1="${y}" x2="${f1(x(sec * 1000))}" y2="${y + 4}" stroke="#333"/>` +
          `<text x="${f1(x(sec * 1000))}" y="${y + 16}" text-anchor="middle">${sec}</text>`,
      );
    }
    return `<line x1="${LEFT}" y1="${y}" x2="${LEFT + PLOT_W}" y2="${y}" stroke="#333"/>${ticks.join('')}`;
  };

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>KMaaS chaos run, seed ${esc(report.seed)}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}svg{display:block;margin:4px 0 12px}
svg text{font:11px system-ui,sans-serif;fill:#333}.bad{color:#b00;font-weight:bold}.good{color:#070;font-weight:bold}
code{background:#f4f4f4;padding:1px 4px}
</style></head><body>
<h1>KMaaS chaos run</h1>
<p><code>${esc(report.command)}</code> &middot; started ${esc(report.startedAt)} &middot; ${report.durationSeconds} s of load &middot;
n = ${report.cluster.n}, t = ${report.cluster.t}, ${report.cluster.coordinators} coordinators, ${report.cluster.clients} clients, Byzantine node ${report.cluster.byzantine}, spare node ${report.cluster.spare}</p>
${summaryTable(report)}
<h2>Latency (ms, log scale) and failures</h2>
${latencyChart(tl, endMs, x, band, axisX)}
<h2>Availability</h2>
${availabilityChart(tl, endMs, x, band, axisX)}
<h2>Faults</h2>
${faultLanes(report, tl, endMs, x, axisX)}
<p>Faulty: ${esc(report.definitions.faulty)}. Healthy: ${esc(report.definitions.healthy)}. Pale red: exactly n - t nodes faulty.</p>
${phaseTable(report)}
</body></html>
`;
}

function summaryTable(r: ChaosReport): string {
  const cls = (bad: boolean) => (bad ? 'bad' : 'good');
  const causes = Object.entries(r.failuresByCause)
    .map(([c, n]) => `<tr><td>${esc(c)}</td><td>${n}</td></tr>`)
    .join('');
  return `<table>
<tr><td>requests</td><td>${r.requests.total}</td></tr>
<tr><td>successes</td><td>${r.requests.ok}</td></tr>
<tr><td>failures</td><td>${r.requests.failed}</td></tr>
<tr><td>retried on the other coordinator</td><td>${r.requests.retriedOnOtherCoordinator}</td></tr>
<tr><td>wrong keys</td><td class="${cls(r.wrongKeys > 0)}">${r.wrongKeys}</td></tr>
<tr><td>failed while &ge; t nodes healthy</td><td class="${cls(r.whileHealthy.failed > 0)}">${r.whileHealthy.failed} of ${r.whileHealthy.requests} (${(r.whileHealthy.share * 100).toFixed(3)}%)</td></tr>
<tr><td>most nodes faulty at once (n - t = ${r.invariant.budget})</td><td>${r.invariant.maxFaultyAtOnce} (${r.invariant.secondsAtBudget} s at n - t)</td></tr>
<tr><td>ceremonies completed</td><td>${r.ceremoniesCompleted} of ${r.ceremonies.length}</td></tr>
</table>${causes ? `<table><tr><th>failure cause</th><th>requests</th></tr>${causes}</table>` : ''}`;
}

function phaseTable(r: ChaosReport): string {
  const rows = [['all', r.latency.all] as const, ...Object.entries(r.latency.byPhase)]
    .map(
      ([name, p]) =>
        `<tr><td>${esc(name)}</td><td>${p.requests}</td><td>${p.failed}</td><td>${p.p50ms ?? '-'}</td><td>${p.p99ms ?? '-'}</td></tr>`,
    )
    .join('');
  const ceremonies = r.ceremonies
    .map(
      (c) =>
        `<tr><td>${esc(c.kind)}</td><td>${c.startedAtSeconds}</td><td>${c.seconds ?? '-'}</td><td>${esc(c.outcome)}</td><td>${c.submissions}</td><td>${esc(c.problems.join('; '))}</td></tr>`,
    )
    .join('');
  return `<h2>Per phase</h2><table><tr><th>phase</th><th>requests</th><th>failed</th><th>p50 ms</th><th>p99 ms</th></tr>${rows}</table>
<h2>Ceremonies</h2><table><tr><th>ceremony</th><th>start s</th><th>took s</th><th>outcome</th><th>proposals</th><th>problems</th></tr>${ceremonies}</table>`;
}

type Scale = (ms: number) => number;

function latencyChart(
  tl: Timeline,
  endMs: number,
  x: Scale,
  band: (h: number) => string,
  axisX: (y: number) => string,
): string {
  const H = 260;
  const top = 10;
  const bottom = H - 30;
  const maxMs = Math.max(100, ...tl.requests.map((q) => q.end - q.at));
  const decades = Math.ceil(Math.log10(maxMs));
  const y = (ms: number) => bottom - (Math.log10(Math.max(1, ms)) / decades) * (bottom - top);
  const grid: string[] = [];
  for (let d = 0; d <= decades; d++) {
    const v = 10 ** d;
    grid.push(
      `<line x1="${LEFT}" y1="${f1(y(v))}" x2="${LEFT + PLOT_W}" y2="${f1(y(v))}" stroke="#eee"/>` +
        `<text x="${LEFT - 6}" y="${f1(y(v) + 4)}" text-anchor="end">${v}</text>`,
    );
  }
  const dots: string[] = [];
  const crosses: string[] = [];
  for (const q of tl.requests) {
    const px = x(q.at);
    const py = y(q.end - q.at);
    if (q.ok) dots.push(`M${f1(px)} ${f1(py)}h0.1`);
    else crosses.push(`M${f1(px - 3)} ${f1(py - 3)}l6 6M${f1(px - 3)} ${f1(py + 3)}l6 -6`);
  }
  const lines = bucketPercentiles(tl, endMs, 5000);
  const path = (key: 'p50' | 'p99') =>
    lines
      .filter((b) => b[key] !== null)
      .map((b, i) => `${i === 0 ? 'M' : 'L'}${f1(x(b.mid))} ${f1(y(b[key]!))}`)
      .join('');
  return `<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="latency">
${band(bottom)}${grid.join('')}
<path d="${dots.join('')}" stroke="#2b8a3e" stroke-opacity="0.45" stroke-width="2.4" stroke-linecap="round" fill="none"/>
<path d="${crosses.join('')}" stroke="#d00" stroke-width="1.4" fill="none"/>
<path d="${path('p50')}" stroke="#1f4e9c" stroke-width="1.6" fill="none"/>
<path d="${path('p99')}" stroke="#e07b00" stroke-width="1.6" fill="none"/>
${axisX(bottom)}
<text x="${LEFT + PLOT_W}" y="${H - 2}" text-anchor="end">seconds since the load started</text>
<text x="${LEFT + 4}" y="${top + 10}"><tspan fill="#2b8a3e">&#9679; right keys</tspan>  <tspan fill="#d00">&#10005; failed</tspan>  <tspan fill="#1f4e9c">&#8212; p50</tspan>  <tspan fill="#e07b00">&#8212; p99</tspan> (5 s buckets)</text>
</svg>`;
}

function bucketPercentiles(tl: Timeline, endMs: number, size: number) {
  const out: { mid: number; p50: number | null; p99: number | null }[] = [];
  for (let start = 0; start < endMs; start += size) {
    const lat = tl.requests
      .filter((q) => q.ok && q.at >= start && q.at < start + size)
      .map((q) => q.end - q.at)
      .sort((a, b) => a - b);
    out.push({ mid: start + size / 2, p50: percentile(lat, 50), p99: percentile(lat, 99) });
  }
  return out;
}

function availabilityChart(
  tl: Timeline,
  endMs: number,
  x: Scale,
  band: (h: number) => string,
  axisX: (y: number) => string,
): string {
  const H = 190;
  const top = 10;
  const bottom = H - 30;
  const size = 2000;
  const buckets: { start: number; total: number; ok: number }[] = [];
  for (let start = 0; start < endMs; start += size) buckets.push({ start, total: 0, ok: 0 });
  for (const q of tl.requests) {
    const b = buckets[Math.floor(q.at / size)];
    if (!b) continue;
    b.total++;
    if (q.ok) b.ok++;
  }
  const maxRate = Math.max(1, ...buckets.map((b) => b.total / (size / 1000)));
  const yShare = (share: number) => bottom - share * (bottom - top);
  const yRate = (rate: number) => bottom - (rate / maxRate) * (bottom - top);
  const share = buckets
    .filter((b) => b.total > 0)
    .map(
      (b, i) =>
        `${i === 0 ? 'M' : 'L'}${f1(x(b.start))} ${f1(yShare(b.ok / b.total))}H${f1(x(b.start + size))}`,
    )
    .join('');
  const rate = buckets
    .map(
      (b, i) =>
        `${i === 0 ? 'M' : 'L'}${f1(x(b.start + size / 2))} ${f1(yRate(b.total / (size / 1000)))}`,
    )
    .join('');
  // Healthy members against t, stepped at every change; on the share axis, committee size = top.
  const steps: string[] = [];
  const tSteps: string[] = [];
  const moments = new Set<number>([0]);
  for (const f of tl.faults) {
    if (!isBudgetRecord(f)) continue;
    moments.add(f.at);
    moments.add((f.liftedAt ?? endMs) + RECOVERY_MS);
  }
  for (const c of tl.committees) moments.add(c.at);
  const sorted = [...moments].filter((m) => m <= endMs).sort((a, b) => a - b);
  const maxMembers = Math.max(...tl.committees.map((c) => c.committee.length));
  const yMembers = (k: number) => bottom - (k / maxMembers) * (bottom - top);
  sorted.forEach((m, i) => {
    const c = committeeAt(tl.committees, m);
    const faulty = faultyAt(tl.faults, m, endMs);
    const healthy = c.committee.filter((id) => !faulty.has(id)).length;
    const next = sorted[i + 1] ?? endMs;
    steps.push(`${i === 0 ? 'M' : 'L'}${f1(x(m))} ${f1(yMembers(healthy))}H${f1(x(next))}`);
    tSteps.push(`${i === 0 ? 'M' : 'L'}${f1(x(m))} ${f1(yMembers(c.threshold))}H${f1(x(next))}`);
  });
  const labels = [0, 0.5, 1]
    .map(
      (v) => `<text x="${LEFT - 6}" y="${f1(yShare(v) + 4)}" text-anchor="end">${v * 100}%</text>`,
    )
    .join('');
  const rateLabels = [0, maxRate]
    .map((v) => `<text x="${LEFT + PLOT_W + 6}" y="${f1(yRate(v) + 4)}">${v.toFixed(0)}/s</text>`)
    .join('');
  return `<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="availability">
${band(bottom)}${labels}${rateLabels}
<path d="${rate}" stroke="#999" stroke-width="1" fill="none"/>
<path d="${steps.join('')}" stroke="#7b3fa0" stroke-width="1.4" fill="none"/>
<path d="${tSteps.join('')}" stroke="#7b3fa0" stroke-width="1" stroke-dasharray="4 3" fill="none"/>
<path d="${share}" stroke="#2b8a3e" stroke-width="1.8" fill="none"/>
${axisX(bottom)}
<text x="${LEFT + 4}" y="${top + 10}"><tspan fill="#2b8a3e">&#8212; succeeded (share per 2 s)</tspan>  <tspan fill="#999">&#8212; requests/s</tspan>  <tspan fill="#7b3fa0">&#8212; healthy members (of ${maxMembers}), - - t</tspan></text>
</svg>`;
}

function faultLanes(
  r: ChaosReport,
  tl: Timeline,
  endMs: number,
  x: Scale,
  axisX: (y: number) => string,
): string {
  const ROW = 20;
  const lanes: string[] = [];
  for (let id = 1; id <= r.cluster.spare; id++) {
    lanes.push(
      id === r.cluster.spare
        ? `node ${id} (spare)`
        : id === r.cluster.byzantine
          ? `node ${id} (Byzantine)`
          : `node ${id}`,
    );
  }
  for (let c = 0; c < r.cluster.coordinators; c++) lanes.push(`coordinator ${c + 1}`);
  lanes.push('Redis', 'ceremonies');
  const laneOf = (label: string) => lanes.indexOf(label);
  const H = lanes.length * ROW + 30;
  const bands: string[] = [];
  const put = (
    lane: number,
    from: number,
    to: number,
    kind: string,
    title: string,
    pale = false,
  ) => {
    const x0 = x(from);
    const w = Math.max(2, x(to) - x0);
    const y0 = lane * ROW + 2;
    bands.push(
      `<g><title>${esc(title)}</title><rect x="${f1(x0)}" y="${y0}" width="${f1(w)}" height="${ROW - 4}" fill="${COLORS[kind] ?? '#888'}" fill-opacity="${pale ? 0.25 : 0.85}"/>` +
        (!pale && w > 44
          ? `<text x="${f1(x0 + 3)}" y="${y0 + ROW - 8}" fill="#fff" style="fill:#fff">${esc(kind)}</text>`
          : '') +
        '</g>',
    );
  };
  for (const f of tl.faults) {
    const to = f.liftedAt ?? endMs;
    const when = `${(f.at / 1000).toFixed(1)}-${(to / 1000).toFixed(1)} s`;
    if (f.node !== undefined) {
      const lane = lanes.findIndex(
        (l) => l === `node ${f.node}` || l.startsWith(`node ${f.node} `),
      );
      put(
        lane,
        f.at,
        to,
        f.kind,
        `node ${f.node}: ${f.kind}${f.detail ? ` ${f.detail}` : ''}, ${when}${f.postponedMs ? `, postponed ${f.postponedMs} ms` : ''}`,
      );
      if (isBudgetRecord(f))
        put(lane, to, to + RECOVERY_MS, f.kind, `node ${f.node}: recovery after ${f.kind}`, true);
    } else if (f.coordinator !== undefined) {
      put(
        laneOf(`coordinator ${f.coordinator + 1}`),
        f.at,
        to,
        f.kind,
        `coordinator ${f.coordinator + 1} SIGKILLed, ${when}`,
      );
    } else {
      const until = f.kind === 'redis-flush' ? f.at + 400 : to;
      put(laneOf('Redis'), f.at, until, f.kind, `${f.kind} at ${(f.at / 1000).toFixed(1)} s`);
    }
  }
  for (const c of tl.ceremonies) {
    const to = c.endedAt ?? endMs;
    put(
      laneOf('ceremonies'),
      c.at,
      to,
      c.kind,
      `${c.kind}: ${c.outcome}, ${(c.at / 1000).toFixed(1)}-${(to / 1000).toFixed(1)} s${c.problems.length ? `; ${c.problems.join('; ')}` : ''}`,
    );
  }
  const labels = lanes
    .map(
      (l, i) =>
        `<text x="${LEFT - 6}" y="${i * ROW + ROW - 6}" text-anchor="end">${esc(l)}</text>` +
        `<line x1="${LEFT}" y1="${(i + 1) * ROW}" x2="${LEFT + PLOT_W}" y2="${(i + 1) * ROW}" stroke="#f0f0f0"/>`,
    )
    .join('');
  return `<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="faults">
${labels}${bands.join('')}${axisX(lanes.length * ROW)}
</svg>`;
}

/** Intervals with exactly n - t nodes faulty (counted with the committee in force). */
function atBudget(tl: Timeline, endMs: number): [number, number][] {
  const moments = new Set<number>([0]);
  for (const f of tl.faults) {
    if (!isBudgetRecord(f)) continue;
    moments.add(f.at);
    moments.add((f.liftedAt ?? endMs) + RECOVERY_MS);
  }
  for (const c of tl.committees) moments.add(c.at);
  const sorted = [...moments].filter((m) => m < endMs).sort((a, b) => a - b);
  const out: [number, number][] = [];
  sorted.forEach((m, i) => {
    const c = committeeAt(tl.committees, m);
    const n = faultyAt(tl.faults, m, endMs).size;
    if (n > 0 && n === c.committee.length - c.threshold) out.push([m, sorted[i + 1] ?? endMs]);
  });
  return out;
}

function niceStep(seconds: number): number {
  for (const s of [5, 10, 15, 30, 60, 120]) if (seconds / s <= 20) return s;
  return 300;
}
