/**
 * `npm run demo`: the whole path on real processes and a real file. Brings up the development
 * identity provider, 5 share nodes and a coordinator, creates a tenant key by distributed key
 * generation (t = 3, a proposal signed by the dev operators), encrypts a file with its
 * per-document key through the CLI, decrypts it, kills 2 nodes with SIGKILL and decrypts again, and
 * checks that every copy is byte-identical to the original. Each CLI run signs in as the tenant's
 * dev user (alice) with devLogin and a DPoP key of its own; every node verifies the token.
 */
import { Command } from 'commander';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { ROOT } from './lib/child.ts';
import { LocalCluster } from './lib/cluster.ts';
import { stopOnSignal } from './lib/signals.ts';

const opts = new Command()
  .name('demo')
  .option('--file <path>', 'the file to encrypt (default: a generated 8 MiB document)')
  .option('--keep', 'keep the data folder afterwards')
  .parse()
  .opts<{ file?: string; keep?: boolean }>();

const dir = mkdtempSync(join(tmpdir(), 'kmaas-demo-'));
const cluster = new LocalCluster({ dataDir: join(dir, 'cluster'), cleanRedisOnStop: true });
stopOnSignal(() => cluster.stop());
const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

function kmaas(...args: string[]): string {
  const t0 = performance.now();
  const r = spawnSync(
    process.execPath,
    [join(ROOT, 'cli', 'kmaas.mjs'), '--cluster', cluster.clusterFile, ...args],
    {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  if (r.status !== 0) throw new Error(`kmaas ${args.join(' ')} failed (exit ${r.status})`);
  console.log(`  $ kmaas ${args.join(' ')}   (${Math.round(performance.now() - t0)} ms)`);
  return r.stdout;
}

let failed = false;
try {
  console.log('starting an identity provider, 5 share nodes and a coordinator...');
  await cluster.start();
  console.log(`coordinator at ${cluster.url}, identity provider ${cluster.issuer}`);

  console.log('creating tenant "acme" by distributed key generation (3 of 5)...');
  kmaas('tenant', 'create', 'acme', '--threshold', '3');

  const input = opts.file ? resolve(opts.file) : join(dir, 'contract.bin');
  if (!opts.file) writeFileSync(input, randomBytes(8 * 1024 * 1024));
  const enc = join(dir, basename(input) + '.kmaas');
  const out1 = join(dir, 'decrypted-1');
  const out2 = join(dir, 'decrypted-2');
  const alice = cluster.devUsers.find((u) => u.tenant === 'acme')!;
  console.log(`encrypting ${input} (${statSync(input).size} bytes)...`);
  console.log(
    `  (each kmaas run signs in as ${alice.username} of acme, with a DPoP key of its own)`,
  );
  kmaas('encrypt', input, '-o', enc, '--tenant', 'acme', '--doc', 'contracts/2026/acme-001');
  kmaas('decrypt', enc, '-o', out1);
  console.log('killing nodes 1 and 4 with SIGKILL...');
  await cluster.killNode(1);
  await cluster.killNode(4);
  kmaas('decrypt', enc, '-o', out2);

  const want = sha(input);
  const ok = sha(out1) === want && sha(out2) === want && sha(enc) !== want;
  console.log(`original   sha256 ${want}`);
  console.log(`ciphertext sha256 ${sha(enc)} (${statSync(enc).size} bytes)`);
  console.log(`decrypted  sha256 ${sha(out1)} (5 nodes up)`);
  console.log(`decrypted  sha256 ${sha(out2)} (2 of 5 nodes killed)`);
  console.log(ok ? 'OK: every decrypted copy is identical to the original' : 'MISMATCH');
  failed = !ok;
} catch (err) {
  console.error(`demo failed: ${(err as Error).message}`);
  console.error(`logs: ${join(dir, 'cluster', 'logs')}`);
  failed = true;
} finally {
  await cluster.stop().catch((err: unknown) => console.error((err as Error).message));
  if (!opts.keep && !failed) rmSync(dir, { recursive: true, force: true });
  else console.log(`data kept in ${dir}`);
}
process.exit(failed ? 1 : 0);
