/**
 * `npm run bench`: derivations per second and latency through the real coordinator and 5 real
 * node processes (t = 3), for batch sizes 1 and 32 at concurrency 1 and 32. Every request is a
 * whole client derivation: blind, coordinator round trip to t nodes, proof checks, combine,
 * finalize, HKDF. Prints a table and writes bench-results/bench.json.
 *
 * The requests are those of a signed-in end user: the tenant is the one of the local identity
 * provider's first dev user (alice, acme), who signs in once with devLogin; every request carries
 * the DPoP-bound access token and a fresh proof, which every node verifies. Access tokens live 10
 * minutes: for longer runs the token is renewed by a new sign-in (scripts/lib/dev-auth.ts), and
 * the report counts the sign-ins.
 */
import { Command } from 'commander';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { KmaasClient } from '../client/index.ts';
import { MemoryPinStore } from '../client/pins.ts';
import { ROOT } from './lib/child.ts';
import { LocalCluster } from './lib/cluster.ts';
import { devAuth } from './lib/dev-auth.ts';
import { proposeWithDevKeys } from './lib/operators.ts';
import { stopOnSignal } from './lib/signals.ts';

const opts = new Command()
  .name('bench')
  .option('--seconds <s>', 'duration of each case', '10')
  .option('--out <file>', 'JSON results', join(ROOT, 'bench-results', 'bench.json'))
  .parse()
  .opts<{ seconds: string; out: string }>();

const seconds = Number(opts.seconds);
const dir = mkdtempSync(join(tmpdir(), 'kmaas-bench-'));
const cluster = new LocalCluster({ dataDir: dir, cleanRedisOnStop: true });
stopOnSignal(() => cluster.stop());

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface CaseResult {
  batch: number;
  concurrency: number;
  requests: number;
  derivations: number;
  errors: number;
  errorCodes: Record<string, number>;
  seconds: number;
  derivationsPerSecond: number;
  requestsPerSecond: number;
  p50ms: number;
  p95ms: number;
  p99ms: number;
}

async function runCase(
  client: KmaasClient,
  tenant: string,
  batch: number,
  concurrency: number,
): Promise<CaseResult> {
  const latencies: number[] = [];
  let errors = 0;
  const errorCodes: Record<string, number> = {};
  let counter = 0;
  const deadline = performance.now() + seconds * 1000;
  // Warm-up outside the measurement: connections, key package cache, JIT.
  await client.deriveKeys(tenant, 1, ['warm-up']);
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const docs = Array.from({ length: batch }, () => `doc-${counter++}`);
        const t0 = performance.now();
        try {
          await client.deriveKeys(tenant, 1, docs);
          latencies.push(performance.now() - t0);
        } catch (err) {
          errors++;
          const code = (err as { code?: string }).code ?? 'unknown';
          errorCodes[code] = (errorCodes[code] ?? 0) + 1;
        }
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    batch,
    concurrency,
    requests: latencies.length,
    derivations: latencies.length * batch,
    errors,
    errorCodes,
    seconds: Number(elapsed.toFixed(2)),
    derivationsPerSecond: Number(((latencies.length * batch) / elapsed).toFixed(1)),
    requestsPerSecond: Number((latencies.length / elapsed).toFixed(1)),
    p50ms: Number(percentile(latencies, 50).toFixed(2)),
    p95ms: Number(percentile(latencies, 95).toFixed(2)),
    p99ms: Number(percentile(latencies, 99).toFixed(2)),
  };
}

let code = 0;
try {
  await cluster.start();
  const user = cluster.devUsers[0]!;
  const tenant = user.tenant;
  const auth = await devAuth({ issuer: cluster.issuer, ...user });
  console.error(`signed in as ${user.username} (tenant ${tenant}) at ${cluster.issuer}`);
  const client = new KmaasClient({
    baseUrl: cluster.url,
    adminToken: cluster.secrets.adminToken,
    auth,
    pins: new MemoryPinStore(),
    trustOnFirstUse: true,
  });
  const created = await proposeWithDevKeys(client, cluster.operators.keyFiles, {
    operation: 'tenant.create',
    tenant,
    version: 1,
    threshold: 3,
  });
  if (created.kind === 'job') await client.waitForJob(created.jobId, { timeoutMs: 60000 });
  const results: CaseResult[] = [];
  for (const batch of [1, 32]) {
    for (const concurrency of [1, 32]) {
      const r = await runCase(client, tenant, batch, concurrency);
      results.push(r);
      console.error(
        `batch ${batch} concurrency ${concurrency}: ${r.derivationsPerSecond} derivations/s`,
      );
    }
  }
  console.log(
    '\n| batch | concurrency | derivations/s | requests/s | p50 ms | p95 ms | p99 ms | errors |',
  );
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of results) {
    console.log(
      `| ${r.batch} | ${r.concurrency} | ${r.derivationsPerSecond} | ${r.requestsPerSecond} | ${r.p50ms} | ${r.p95ms} | ${r.p99ms} | ${
        Object.entries(r.errorCodes)
          .map(([c, n]) => `${n} ${c}`)
          .join(', ') || 0
      } |`,
    );
  }
  const report = {
    when: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
    cluster: { nodes: 5, threshold: 3 },
    auth: { tenant, user: user.username, logins: auth.logins() },
    secondsPerCase: seconds,
    results,
  };
  mkdirSync(join(opts.out, '..'), { recursive: true });
  writeFileSync(opts.out, JSON.stringify(report, null, 2));
  console.log(`\nwritten to ${opts.out}`);
} catch (err) {
  console.error(`bench failed: ${(err as Error).message}`);
  code = 1;
} finally {
  await cluster.stop().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}
process.exit(code);
