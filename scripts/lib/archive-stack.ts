/**
 * The archive demo's processes, for `npm start`, the end-to-end test and the browser benchmark:
 * a LocalCluster whose coordinator lets the archive's origin call it and whose identity provider
 * sends the archive's callback back, a key for each dev user's tenant (made by DKG through the
 * CLI, as `npm run demo` does), and the archive server (demo/server.ts) in this process.
 */
import { spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { DEFAULT_RESOURCE, TENANT_CLAIM } from '../../idp/config.ts';
import {
  DEFAULT_CLOCK_SKEW_SECONDS,
  DEFAULT_DPOP_MAX_AGE_SECONDS,
} from '../../shared/access-token.ts';
import {
  CALLBACK_PATH,
  createArchiveLogger,
  pinsFromFile,
  startArchive,
  type ArchiveHandle,
} from '../../demo/server.ts';
import { ROOT } from './child.ts';
import { LocalCluster } from './cluster.ts';

/** The threshold of the demo's tenant keys, with 5 nodes. */
export const DEMO_THRESHOLD = 3;

/** How the archive checks tokens of the local identity provider: as the nodes do, any tenant. */
export function devArchiveOidc(issuer: string) {
  return {
    issuer,
    audience: DEFAULT_RESOURCE,
    tenantClaim: TENANT_CLAIM,
    clockSkewSeconds: DEFAULT_CLOCK_SKEW_SECONDS,
    dpopMaxAgeSeconds: DEFAULT_DPOP_MAX_AGE_SECONDS,
  };
}

function kmaas(cluster: LocalCluster, ...args: string[]): { ok: boolean; stderr: string } {
  const r = spawnSync(
    process.execPath,
    [join(ROOT, 'cli', 'kmaas.mjs'), '--cluster', cluster.clusterFile, ...args],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return { ok: r.status === 0, stderr: r.stderr };
}

/**
 * A key for each dev user's tenant, made once: a tenant already pinned is left as it is.
 * `onCreate` hears about each one made (for a progress line).
 */
export async function ensureTenantKeys(
  cluster: LocalCluster,
  onCreate: (tenant: string) => void = () => undefined,
): Promise<void> {
  const pinned = new Set((await pinsFromFile(cluster.pinsFile)).map((p) => p.tenant));
  for (const tenant of new Set(cluster.devUsers.map((u) => u.tenant))) {
    if (pinned.has(tenant)) continue;
    onCreate(tenant);
    const made = kmaas(cluster, 'tenant', 'create', tenant, '--threshold', String(DEMO_THRESHOLD));
    if (made.ok) continue;
    // Made by an earlier run whose pins file is gone: pin what the nodes hold.
    if (!made.stderr.includes('ERR_TENANT_EXISTS')) throw new Error(made.stderr.trim());
    const pin = kmaas(cluster, 'tenant', 'pin', tenant);
    if (!pin.ok) throw new Error(pin.stderr.trim());
  }
}

export interface ArchiveStack {
  cluster: LocalCluster;
  archive: ArchiveHandle;
  /** The archive's data folder: its database and envelopes. */
  archiveDir: string;
  close(): Promise<void>;
}

/**
 * Everything on loopback, on ports of the system's choosing, in `dir`: the archive's server
 * listens first, so that its origin is known to the cluster it must be allowed by.
 */
export async function startArchiveStack(opts: {
  dir: string;
  /** The built browser SDK (scripts/lib/build-sdk.ts). */
  sdkBundle: string;
  logger?: Logger;
}): Promise<ArchiveStack> {
  const server: Server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const cluster = new LocalCluster({
    dataDir: join(opts.dir, 'cluster'),
    corsOrigins: [origin],
    idpRedirectUris: [origin + CALLBACK_PATH],
    cleanRedisOnStop: true,
  });
  const archiveDir = join(opts.dir, 'archive');
  let archive: ArchiveHandle | undefined;
  const close = async () => {
    if (archive) await archive.close().catch(() => undefined);
    else server.close();
    await cluster.stop();
  };
  try {
    await cluster.start();
    await ensureTenantKeys(cluster);
    archive = await startArchive({
      dataDir: archiveDir,
      server,
      publicUrl: origin,
      oidc: devArchiveOidc(cluster.issuer),
      coordinatorUrl: cluster.url,
      pins: () => pinsFromFile(cluster.pinsFile),
      sdkBundle: opts.sdkBundle,
      logger: opts.logger ?? createArchiveLogger('silent'),
    });
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
  return { cluster, archive, archiveDir, close };
}
