/**
 * `npm start`: the archive demo on this machine. Starts the development identity provider, 5
 * share nodes and a coordinator (LocalCluster; the coordinator lets the archive's origin call
 * it, the identity provider sends the archive's callback back), makes the tenant keys of the dev
 * users' tenants (acme, globex) by distributed key generation with t = 3 (as `npm run demo`
 * does, through the CLI; once, later runs find them pinned), builds the browser SDK and starts
 * the archive. Prints the URL and the dev users' credentials; Ctrl-C stops everything.
 *
 * Everything lives in ./data/archive (--data): the cluster (node databases, secrets, pins) in
 * cluster/, the archive's database and envelopes in archive/, logs in cluster/logs/. A second
 * run finds the same keys and documents.
 */
import { Command } from 'commander';
import { createWriteStream, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import {
  CALLBACK_PATH,
  createArchiveLogger,
  pinsFromFile,
  startArchive,
  type ArchiveHandle,
} from '../demo/server.ts';
import { buildBrowserSdk, DEFAULT_SDK_FILE } from './lib/build-sdk.ts';
import { DEMO_THRESHOLD, devArchiveOidc, ensureTenantKeys } from './lib/archive-stack.ts';
import { LocalCluster } from './lib/cluster.ts';
import { stopOnSignal } from './lib/signals.ts';
import { Supervisor } from './lib/supervisor.ts';

const DEFAULT_PORT = 8080;

const opts = new Command()
  .name('start')
  .option('--port <n>', `the archive's port (KMAAS_ARCHIVE_PORT; default ${DEFAULT_PORT})`)
  .option('--data <dir>', 'data folder', 'data/archive')
  .parse()
  .opts<{ port?: string; data: string }>();

const port = Number(opts.port ?? process.env.KMAAS_ARCHIVE_PORT ?? DEFAULT_PORT);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`--port / KMAAS_ARCHIVE_PORT: expected a port number, got ${port}`);
  process.exit(2);
}
const origin = `http://127.0.0.1:${port}`;
const dataDir = resolve(opts.data);

/** Resolves when nothing listens on the port, so the cluster is not started for nothing. */
function checkFree(p: number): Promise<void> {
  return new Promise((ok, fail) => {
    const probe = createServer();
    probe.once('error', (err: NodeJS.ErrnoException) =>
      fail(
        new Error(
          err.code === 'EADDRINUSE'
            ? `port ${p} is in use: choose another with --port or KMAAS_ARCHIVE_PORT`
            : `port ${p}: ${err.message}`,
        ),
      ),
    );
    probe.listen(p, '127.0.0.1', () => probe.close(() => ok()));
  });
}

const cluster = new LocalCluster({
  dataDir: join(dataDir, 'cluster'),
  corsOrigins: [origin],
  idpRedirectUris: [origin + CALLBACK_PATH],
});
let archive: ArchiveHandle | undefined;
const supervisor = new Supervisor(
  () => cluster.supervised(),
  (line) => console.log(`${new Date().toISOString()} ${line}`),
);
const stopAll = async () => {
  supervisor.stop();
  await archive?.close().catch(() => undefined);
  await cluster.stop();
};

try {
  await checkFree(port);
  console.log('building the browser SDK...');
  const sdk = await buildBrowserSdk(DEFAULT_SDK_FILE);
  console.log('starting an identity provider, 5 share nodes and a coordinator...');
  stopOnSignal(stopAll);
  await cluster.start();
  await ensureTenantKeys(cluster, (tenant) =>
    console.log(`creating the key of tenant "${tenant}" by DKG (${DEMO_THRESHOLD} of 5)...`),
  );
  mkdirSync(join(dataDir, 'cluster', 'logs'), { recursive: true });
  const logFile = join(dataDir, 'cluster', 'logs', 'archive.log');
  archive = await startArchive({
    dataDir: join(dataDir, 'archive'),
    port,
    publicUrl: origin,
    oidc: devArchiveOidc(cluster.issuer),
    coordinatorUrl: cluster.url,
    pins: () => pinsFromFile(cluster.pinsFile),
    sdkBundle: sdk.outFile,
    logger: createArchiveLogger('info', createWriteStream(logFile, { flags: 'a' })),
  });
} catch (err) {
  console.error(`start failed: ${(err as Error).message}`);
  console.error(`logs: ${join(dataDir, 'cluster', 'logs')}`);
  await stopAll().catch(() => undefined);
  process.exit(1);
}

console.log('');
console.log(`archive      ${archive.url}   <- open this in a browser`);
console.log(`coordinator  ${cluster.url}`);
console.log(`identity     ${cluster.issuer}`);
for (const u of cluster.devUsers) {
  console.log(`user         ${u.username} (tenant ${u.tenant}), password ${u.password}`);
}
const pids = cluster.supervised().map((p) => `${p.name} ${p.pid() ?? '?'}`);
console.log(`pids         ${pids.join(', ')}`);
console.log(`data         ${dataDir} (logs in cluster/logs)`);
console.log(
  'ready. A share node that dies is started again; Ctrl-C (or SIGTERM to this process) stops everything.',
);
supervisor.start();
