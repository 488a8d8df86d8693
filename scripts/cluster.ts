/**
 * `npm run cluster`: a local committee of 5 share nodes (t = 3 by default for new tenants) and a
 * coordinator on loopback, until Ctrl-C. `-- --spare 2` adds nodes 6 and 7 outside the committee,
 * for `kmaas committee add 6 7`. Secrets and node databases live in ./data/cluster, so the
 * next run finds the same keys. The CLI picks up ./data/cluster/cluster.json by itself.
 */
import { Command } from 'commander';
import { resolve } from 'node:path';
import { LocalCluster } from './lib/cluster.ts';
import { stopOnSignal } from './lib/signals.ts';
import { Supervisor } from './lib/supervisor.ts';

const program = new Command()
  .name('cluster')
  .option('--data <dir>', 'data folder', 'data/cluster')
  .option('--nodes <n>', 'number of share nodes in the first committee', '5')
  .option(
    '--spare <n>',
    'extra nodes in no committee, for kmaas committee add (kept once made)',
    '0',
  )
  .parse();
const opts = program.opts<{ data: string; nodes: string; spare: string }>();

const cluster = new LocalCluster({
  dataDir: resolve(opts.data),
  nodes: Number(opts.nodes),
  spareNodes: Number(opts.spare),
});
try {
  await cluster.start();
} catch (err) {
  console.error(`cluster failed to start: ${(err as Error).message}`);
  await cluster.stop().catch(() => undefined);
  process.exit(1);
}
console.log(`coordinator  ${cluster.url}`);
const spares = new Set(cluster.spareIds);
for (const [id, n] of cluster.nodes) {
  const spare = spares.has(id) ? ' (spare: in no first committee)' : '';
  console.log(`node ${id}       ws://127.0.0.1:${n.port}/v1/ws${spare}`);
}
const users = cluster.devUsers.map((u) => `${u.username}@${u.tenant}`).join(', ');
console.log(`identity     ${cluster.issuer} (users ${users}; passwords in secrets.json)`);
console.log(`redis        ${cluster.redis.url} (prefix ${cluster.secrets.redisPrefix})`);
console.log(`cluster file ${cluster.clusterFile} (the CLI reads it)`);
console.log(`logs         ${resolve(opts.data, 'logs')}`);
const pids = cluster.supervised().map((p) => `${p.name} ${p.pid() ?? '?'}`);
console.log(`pids         ${pids.join(', ')}`);
console.log(
  'ready. A process that dies is started again; Ctrl-C (or SIGTERM to this process) stops the cluster.',
);

const supervisor = new Supervisor(
  () => cluster.supervised(),
  (line) => console.log(`${new Date().toISOString()} ${line}`),
);
supervisor.start();
stopOnSignal(() => {
  supervisor.stop();
  return cluster.stop();
});
