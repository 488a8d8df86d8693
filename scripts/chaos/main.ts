/**
 * `npm run chaos -- --minutes N --seed S [--out DIR]`: kill, freeze, cut, lie and reshare under
 * load, and count what failed and whether any key was ever wrong.
 *
 * A local cluster on loopback: its own redis-server on a free port (so that restarting and
 * flushing it touches no other Redis), the identity provider, 5 share nodes (t = 3) and a spare,
 * two coordinators, and between each coordinator and each node a fault-injecting TCP proxy
 * (proxy.ts). Two tenants get a key by DKG; the right keys of a fixed set of documents are
 * recorded before any fault, and cross-checked through a second subset of nodes. Then C clients
 * derive keys of those documents round-robin over the coordinators (load.ts) while the seeded
 * schedule (schedule.ts) runs its faults (faults.ts) and ceremonies (ceremonies.ts). At the end:
 * a JSON report and an HTML chart in the out folder, a summary on stdout, and exit status 1 when
 * a key was wrong or a request failed while at least t nodes were healthy (2 when the run itself
 * could not be made).
 *
 * Shortcoming: only the coordinator-to-node links go through fault proxies; the clients reach
 * the coordinators directly, so a client-side network fault is played only as a coordinator
 * that is down.
 */
import { Command, InvalidArgumentError } from 'commander';
import { randomInt } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { bytesToHex } from '@noble/hashes/utils.js';
import { KmaasClient, MemoryPinStore } from '../../client/index.ts';
import { ROOT } from '../lib/child.ts';
import { LocalCluster } from '../lib/cluster.ts';
import { devAuth } from '../lib/dev-auth.ts';
import { proposeWithDevKeys } from '../lib/operators.ts';
import { stopOnSignal } from '../lib/signals.ts';
import { CeremonyRunner } from './ceremonies.ts';
import { FaultInjector } from './faults.ts';
import { Load, type LoadUser } from './load.ts';
import { renderHtml } from './plot.ts';
import { Prng } from './prng.ts';
import { FaultProxy } from './proxy.ts';
import { ChaosRedis } from './redis.ts';
import { buildReport, summaryLines } from './report.ts';
import { faultSchedule, type CeremonyEvent } from './schedule.ts';
import { Timeline } from './timeline.ts';

const N = 5;
const T = 3;
const COORDINATORS = 2;
const DOCS_PER_TENANT = 64;
/** After the faults, ceremonies still running get this long to finish, the load going on. */
const TAIL_MS = 60_000;

/** What the run sets beyond the defaults, and says so in its report. */
const NODE_ENV = { KMAAS_FAILPOINTS: 'evaluate.lie' };
const COORDINATOR_ENV = {
  // A coordinator SIGKILLed mid-ceremony: the other one takes the job over within ~15 s, not ~60 s.
  KMAAS_CEREMONY_LOCK_MS: '10000',
  KMAAS_CEREMONY_STALLED_INTERVAL_MS: '5000',
  // Reshares fail while a member is down; retry soon and often enough to fit in a short run.
  KMAAS_DKG_BACKOFF_MS: '500',
  KMAAS_RESHARE_ATTEMPTS: '12',
};

function positive(text: string): number {
  const v = Number(text);
  if (!Number.isFinite(v) || v < 1) throw new InvalidArgumentError('expected a number >= 1');
  return v;
}

const opts = new Command()
  .name('chaos')
  .description(
    'faults under load on a local cluster; exits 1 on a wrong key or a failure while t nodes were healthy',
  )
  .option('--minutes <n>', 'minutes of faulty load (at least 1)', positive, 2)
  .option('--seed <seed>', 'seed of the fault schedule and the load (default: random, printed)')
  .option('--out <dir>', 'folder for the report, chart and logs', join(ROOT, 'chaos-results'))
  .option('--clients <n>', 'concurrent clients', positive, 4)
  .option('--batch <n>', 'most documents per request (each request: 1..n)', positive, 4)
  .option('--think-ms <ms>', 'mean pause of a client between requests', Number, 200)
  .option('--keep', 'keep the cluster data folder (node databases, secrets)')
  .parse()
  .opts<{
    minutes: number;
    seed?: string;
    out: string;
    clients: number;
    batch: number;
    thinkMs: number;
    keep?: boolean;
  }>();

const seed = opts.seed ?? String(randomInt(1, 1_000_000_000));
// The command that replays this run: the options given, and the seed drawn if none was.
const args = process.argv.slice(2);
if (!args.includes('--minutes')) args.unshift('--minutes', String(opts.minutes));
if (opts.seed === undefined) args.push('--seed', seed);
const command = `npm run chaos -- ${args.join(' ')}`;
const out = resolve(opts.out);
const name = `chaos-${seed}-${opts.minutes}m`;
const schedule = faultSchedule({
  seed,
  minutes: opts.minutes,
  n: N,
  t: T,
  coordinators: COORDINATORS,
});
const dir = mkdtempSync(join(tmpdir(), 'kmaas-chaos-'));
const startedAt = new Date().toISOString();
let timeline: Timeline | undefined;
const note = (line: string) => {
  const at = timeline ? `${(timeline.now() / 1000).toFixed(1).padStart(6)} s` : ' setup';
  console.error(`[${at}] ${line}`);
};

const proxies = Array.from({ length: COORDINATORS }, () => new Map<number, FaultProxy>());
const jitter = Prng.from(seed, 'proxy');
let redis: ChaosRedis | undefined;
let cluster: LocalCluster | undefined;
let injector: FaultInjector | undefined;

async function cleanup(): Promise<void> {
  await injector?.stop().catch(() => undefined);
  await cluster?.stop().catch(() => undefined);
  await redis?.stop().catch(() => undefined);
  await Promise.all(proxies.flatMap((m) => [...m.values()].map((p) => p.close())));
  if (existsSync(join(dir, 'logs')))
    cpSync(join(dir, 'logs'), join(out, `${name}-logs`), { recursive: true });
  if (!opts.keep) rmSync(dir, { recursive: true, force: true });
}
stopOnSignal(cleanup);

/** Keys of `docs` through coordinator 1, then again through coordinator 2 with n - t of those nodes cut off. */
async function recordKeys(
  clients: KmaasClient[],
  tenant: string,
  docs: string[],
): Promise<string[]> {
  const first = await clients[0]!.deriveKeys(tenant, 1, docs);
  const keys = first.keys.map(bytesToHex);
  const cut = first.nodes.slice(0, N - T);
  const cutProxies = proxies.flatMap((m) => cut.map((id) => m.get(id)!));
  for (const p of cutProxies) p.setMode({ kind: 'cut' });
  try {
    const second = await clients[1]!.deriveKeys(tenant, 1, docs);
    if (second.nodes.some((id) => cut.includes(id))) {
      throw new Error(
        `cross-check of ${tenant}: nodes ${cut.join(', ')} were cut off but answered`,
      );
    }
    if (second.keys.map(bytesToHex).join() !== keys.join()) {
      throw new Error(
        `cross-check of ${tenant}: nodes ${first.nodes.join(', ')} and ${second.nodes.join(', ')} give different keys`,
      );
    }
    note(
      `${tenant}: ${docs.length} keys recorded through nodes ${first.nodes.join(', ')}, the same through ${second.nodes.join(', ')}`,
    );
  } finally {
    for (const p of cutProxies) p.setMode({ kind: 'pass' });
  }
  return keys;
}

let exitCode = 2;
try {
  mkdirSync(out, { recursive: true });
  note(
    `${command}: ${schedule.events.length} events, Byzantine node ${schedule.byzantine}; data in ${dir}`,
  );
  redis = await ChaosRedis.start(join(dir, 'redis'));
  note(`redis-server of our own at ${redis.url}`);
  cluster = new LocalCluster({
    dataDir: dir,
    nodes: N,
    spareNodes: 1,
    coordinators: COORDINATORS,
    redisUrl: redis.url,
    redisPrefix: 'kmaas:chaos:',
    logLevel: 'info',
    nodeEnv: NODE_ENV,
    coordinatorEnv: COORDINATOR_ENV,
    nodeUrl: async (c, node) => {
      const proxy = new FaultProxy({ targetPort: node.port, random: () => jitter.next() });
      await proxy.listen();
      proxies[c]!.set(node.id, proxy);
      return `ws://127.0.0.1:${proxy.port}/v1/ws`;
    },
  });
  await cluster.start();
  const urls = Array.from({ length: COORDINATORS }, (_, i) => cluster!.coordinatorUrl(i));
  note(`cluster up: coordinators ${urls.join(', ')}`);

  // Tenant keys by DKG, the group keys pinned, the right keys recorded before any fault.
  const admin = new KmaasClient({
    baseUrl: urls[0]!,
    adminToken: cluster.secrets.adminToken,
    pins: new MemoryPinStore(),
    trustOnFirstUse: true,
  });
  const users: LoadUser[] = [];
  for (const user of cluster.devUsers) {
    const created = await proposeWithDevKeys(admin, cluster.operators.keyFiles, {
      operation: 'tenant.create',
      tenant: user.tenant,
      version: 1,
      threshold: T,
      firstCommittee: cluster.committeeIds,
    });
    if (created.kind === 'job') await admin.waitForJob(created.jobId, { timeoutMs: 120_000 });
    const { groupKey } = await admin.pinKeyPackage(user.tenant, 1);
    const auth = await devAuth({ issuer: cluster.issuer, ...user });
    const pins = () => new MemoryPinStore([{ tenant: user.tenant, version: 1, groupKey }]);
    const clients = urls.map((baseUrl) => new KmaasClient({ baseUrl, auth, pins: pins() }));
    const docs = Array.from({ length: DOCS_PER_TENANT }, (_, i) => `chaos/${user.tenant}/doc-${i}`);
    const keys = await recordKeys(clients, user.tenant, docs);
    users.push({ tenant: user.tenant, auth, docs, keys, groupKey });
  }
  await cluster.waitForNodes();

  // The run: load, faults and ceremonies on one clock.
  const tl = new Timeline({ committee: [...cluster.committeeIds], threshold: T, epoch: 1 });
  timeline = tl;
  const load = new Load({
    coordinators: urls,
    users,
    clients: opts.clients,
    maxBatch: opts.batch,
    thinkMs: opts.thinkMs,
    seed,
    timeline: tl,
    requestTimeoutMs: 20_000,
  });
  injector = new FaultInjector({ cluster, proxies, redis, timeline: tl, budget: N - T, note });
  const ceremonies = new CeremonyRunner({
    coordinators: urls,
    adminToken: cluster.secrets.adminToken,
    operatorKeyFiles: cluster.operators.keyFiles,
    timeline: tl,
    threshold: T,
    note,
  });
  note(`load: ${opts.clients} clients over ${COORDINATORS} coordinators`);
  load.start();
  const faultsDone = injector.run(schedule.events);
  const ceremonyEvents = schedule.events.filter(
    (e): e is CeremonyEvent =>
      e.kind === 'refresh' || e.kind === 'add-node' || e.kind === 'remove-node',
  );
  const ceremoniesDone = ceremonies.run(ceremonyEvents, () => schedule.durationMs + TAIL_MS);
  await sleep(schedule.durationMs);
  await injector.stop();
  await faultsDone;
  if (
    tl.ceremonies.some((c) => c.outcome === 'unfinished') ||
    tl.ceremonies.length < ceremonyEvents.length
  ) {
    note('faults over; waiting for the ceremonies, the load going on');
  }
  await ceremoniesDone;
  await load.stop();
  const endMs = tl.now();

  const report = buildReport(tl, {
    seed,
    minutes: opts.minutes,
    command,
    startedAt,
    n: N,
    t: T,
    spare: schedule.spare,
    byzantine: schedule.byzantine,
    coordinators: COORDINATORS,
    clients: opts.clients,
    settings: { nodes: NODE_ENV, coordinators: COORDINATOR_ENV },
    endMs,
  });
  const jsonFile = join(out, `${name}.json`);
  const htmlFile = join(out, `${name}.html`);
  writeFileSync(jsonFile, JSON.stringify(report, null, 2));
  // Every request and fault as recorded, for analyses the report does not make.
  const { faults, skipped, requests, ceremonies: done, committees } = tl;
  writeFileSync(
    join(out, `${name}-timeline.json`),
    JSON.stringify({ endMs, faults, skipped, requests, ceremonies: done, committees }),
  );
  writeFileSync(htmlFile, renderHtml(report, tl, endMs));
  console.log(summaryLines(report).join('\n'));
  console.log(`\nreport ${jsonFile}\nchart  ${htmlFile}\nlogs   ${join(out, `${name}-logs`)}`);
  exitCode = report.wrongKeys > 0 || report.whileHealthy.failed > 0 ? 1 : 0;
  if (exitCode !== 0) {
    console.log(
      `\nFAILED: ${report.wrongKeys} wrong keys, ${report.whileHealthy.failed} failures while >= t nodes were healthy`,
    );
  }
} catch (err) {
  console.error(`chaos run failed: ${(err as Error).stack ?? String(err)}`);
  exitCode = 2;
} finally {
  await cleanup();
}
process.exit(exitCode);
