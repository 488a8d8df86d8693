/**
 * `npm run bench:reshare`: how long resharing takes with many tenants. A local cluster (5 nodes,
 * t = 3, and 2 spare nodes) gets `--tenants` tenants (one DKG each, queued together), then three
 * reshares are timed: a refresh (5 -> 5), adding the two spare nodes (5 -> 7) and removing them
 * again (7 -> 5); t is 3 of 5 and 4 of 7, the smallest majorities. Every reshare covers every tenant key of the committee. Prints a table and
 * writes bench-results/reshare.json.
 */
import { Command } from 'commander';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { KmaasClient } from '../client/index.ts';
import { MemoryPinStore } from '../client/pins.ts';
import { draftProposal, type CommitteeMember, type Proposal } from '../shared/proposal.ts';
import { ROOT } from './lib/child.ts';
import { LocalCluster } from './lib/cluster.ts';
import { signWithDevKeys } from './lib/operators.ts';
import { stopOnSignal } from './lib/signals.ts';

const opts = new Command()
  .name('bench:reshare')
  .option('--tenants <n>', 'tenants to create before resharing', '1000')
  .option('--out <file>', 'JSON results', join(ROOT, 'bench-results', 'reshare.json'))
  .parse()
  .opts<{ tenants: string; out: string }>();

const tenants = Number(opts.tenants);
const dir = mkdtempSync(join(tmpdir(), 'kmaas-bench-reshare-'));
const cluster = new LocalCluster({
  dataDir: dir,
  nodes: 5,
  spareNodes: 2,
  cleanRedisOnStop: true,
  coordinatorEnv: { KMAAS_RESHARE_FINISH_DELAY_MS: '500' },
});
stopOnSignal(() => cluster.stop());

interface StatusView {
  cluster: string;
  epoch: { epoch: number; threshold: number; committee: CommitteeMember[] } | null;
  nodes: { id: number; identity?: { signing: string; encryption: string } }[];
}

const expiresAt = () => new Date(Date.now() + 3 * 3600_000);

async function view(client: KmaasClient): Promise<StatusView> {
  return (await client.status()) as unknown as StatusView;
}

async function waitAll(client: KmaasClient, jobIds: string[]): Promise<void> {
  let done = 0;
  for (const id of jobIds) {
    await client.waitForJob(id, { pollIntervalMs: 250, timeoutMs: 4 * 3600_000 });
    done++;
    if (done % 50 === 0 || done === jobIds.length) {
      process.stderr.write(`\r  ${done}/${jobIds.length} tenants created`);
    }
  }
  process.stderr.write('\n');
}

async function timedReshare(
  client: KmaasClient,
  label: string,
  members: (s: StatusView) => CommitteeMember[],
  reason: 'refresh' | 'add' | 'remove',
  threshold?: number,
): Promise<{ label: string; seconds: number; epoch: number; members: number }> {
  const s = await view(client);
  if (!s.epoch) throw new Error('no epoch yet');
  const committee = members(s);
  const p: Proposal = draftProposal({
    cluster: s.cluster,
    operation: 'committee.reshare',
    committee,
    threshold: threshold ?? s.epoch.threshold,
    epoch: s.epoch.epoch + 1,
    previous: s.epoch,
    reason,
    expiresAt: expiresAt(),
  });
  const started = performance.now();
  const submitted = await client.submitProposal(signWithDevKeys(p, cluster.operators.keyFiles, 2));
  if (submitted.kind !== 'job') throw new Error('expected a job');
  let last = '';
  await client.waitForJob(submitted.jobId, {
    pollIntervalMs: 500,
    timeoutMs: 4 * 3600_000,
    onProgress: (job) => {
      const p = job.progress as { phase?: string; done?: number; total?: number } | undefined;
      const line = `  ${label}: ${p?.phase ?? '?'} ${p?.done ?? 0}/${p?.total ?? 0}`;
      if (line !== last) process.stderr.write(`\r${line.padEnd(60)}`);
      last = line;
    },
  });
  process.stderr.write('\n');
  const seconds = (performance.now() - started) / 1000;
  return { label, seconds, epoch: s.epoch.epoch + 1, members: committee.length };
}

async function main(): Promise<void> {
  await cluster.start();
  const client = new KmaasClient({
    baseUrl: cluster.url,
    adminToken: cluster.secrets.adminToken,
    pins: new MemoryPinStore(),
  });
  const s = await view(client);
  const initial = s.nodes
    .filter((n) => n.id <= 5 && n.identity)
    .map((n) => ({ node: n.id, ...n.identity! }));
  process.stderr.write(`creating ${tenants} tenants (one DKG each)\n`);
  const createStarted = performance.now();
  const jobIds: string[] = [];
  for (let i = 0; i < tenants; i++) {
    const p = draftProposal({
      cluster: s.cluster,
      operation: 'tenant.create',
      tenant: `t${String(i).padStart(5, '0')}`,
      version: 1,
      threshold: 3,
      committee: initial,
      expiresAt: expiresAt(),
    });
    const submitted = await client.submitProposal(
      signWithDevKeys(p, cluster.operators.keyFiles, 2),
    );
    if (submitted.kind !== 'job') throw new Error('expected a job');
    jobIds.push(submitted.jobId);
  }
  await waitAll(client, jobIds);
  const createSeconds = (performance.now() - createStarted) / 1000;

  const identityOf = (st: StatusView, id: number) => {
    const n = st.nodes.find((x) => x.id === id);
    if (!n?.identity) throw new Error(`node ${id} reports no identity`);
    return { node: id, ...n.identity };
  };
  const results = [
    await timedReshare(client, 'refresh 5 -> 5', (st) => st.epoch!.committee, 'refresh'),
    await timedReshare(
      client,
      'add 5 -> 7',
      (st) => [...st.epoch!.committee, identityOf(st, 6), identityOf(st, 7)],
      'add',
      4,
    ),
    await timedReshare(
      client,
      'remove 7 -> 5',
      (st) => st.epoch!.committee.filter((m) => m.node <= 5),
      'remove',
      3,
    ),
  ];
  const report = {
    date: new Date().toISOString(),
    cpus: cpus().length,
    cpu: cpus()[0]?.model,
    tenants,
    createSeconds: Math.round(createSeconds * 10) / 10,
    reshares: results.map((r) => ({ ...r, seconds: Math.round(r.seconds * 10) / 10 })),
  };
  mkdirSync(dirname(opts.out), { recursive: true });
  writeFileSync(opts.out, JSON.stringify(report, null, 2));
  process.stdout.write(
    `\n${tenants} tenants created in ${report.createSeconds} s\n\n` +
      '| reshare | members after | seconds | per key (ms) |\n| --- | ---: | ---: | ---: |\n' +
      report.reshares
        .map(
          (r) =>
            `| ${r.label} | ${r.members} | ${r.seconds} | ${Math.round((r.seconds * 1000) / tenants)} |`,
        )
        .join('\n') +
      `\n\nwritten to ${opts.out}\n`,
  );
}

try {
  await main();
} finally {
  await cluster.stop();
  rmSync(dir, { recursive: true, force: true });
}
