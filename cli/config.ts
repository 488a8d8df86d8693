/**
 * Where the CLI's settings come from, strongest first: command-line option, environment variable
 * (both through commander), the cluster file, the built-in default. The cluster file is the JSON
 * the local-cluster script writes ({ url, adminToken, pins, issuer, devUsers, operators,
 * operatorKeys }: the identity provider and its dev users to sign in with, the last two naming the
 * dev operator set and key files, relative to it); it is taken from --cluster or KMAAS_CLUSTER, or
 * else from ./data/cluster/cluster.json when that exists.
 *
 * The password of the user who signs in comes from --password-file, KMAAS_PASSWORD or the cluster
 * file's dev users, never from a command-line value (which other users of the machine can read).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { KmaasError } from '../shared/errors.ts';

export interface GlobalOptions {
  url?: string;
  user?: string;
  passwordFile?: string;
  issuer?: string;
  adminToken?: string;
  pins?: string;
  cluster?: string;
  json?: boolean;
  trustOnFirstUse?: boolean;
}

export interface Config {
  url: string | undefined;
  /** Where the URL came from: --url or KMAAS_URL ('option'), or the cluster file. */
  urlFrom: 'option' | 'cluster' | undefined;
  /** The OIDC issuer to sign in at (--issuer, KMAAS_OIDC_ISSUER, the cluster file's `issuer`). */
  issuer: string | undefined;
  issuerFrom: 'option' | 'cluster' | undefined;
  /** The user to sign in as (--user or KMAAS_USER); else a dev user of the tenant, below. */
  user: string | undefined;
  /** --password-file (resolved), then KMAAS_PASSWORD: read only when signing in. */
  passwordFile: string | undefined;
  password: string | undefined;
  /** The cluster file's dev users { username, password, tenant } (development clusters only). */
  devUsers: DevUserEntry[];
  adminToken: string | undefined;
  pinsFile: string;
  /** The pins file the cluster file names (resolved), whether or not it is the one in use. */
  clusterPins: string | undefined;
  clusterFile: string | undefined;
  /** The operator set file ({ quorum, operators }) the cluster file names, resolved. */
  operatorsFile: string | undefined;
  /** The operator key files the cluster file names (development clusters only), resolved. */
  operatorKeys: string[];
  /** The first committee the cluster file names (spare nodes are in none); else every node. */
  committee?: number[];
  /** The folder the command runs in, where the default cluster file is looked up. */
  cwd: string;
  json: boolean;
  trustOnFirstUse: boolean;
}

export const DEFAULT_CLUSTER_FILE = join('data', 'cluster', 'cluster.json');

export interface DevUserEntry {
  username: string;
  password: string;
  tenant: string;
}

const clusterFileSchema = z.object({
  url: z.string().optional(),
  issuer: z.string().optional(),
  devUsers: z
    .array(z.object({ username: z.string(), password: z.string(), tenant: z.string() }))
    .optional(),
  adminToken: z.string().optional(),
  pins: z.string().optional(),
  operators: z.string().optional(),
  operatorKeys: z.array(z.string()).optional(),
  committee: z.array(z.number().int()).optional(),
});

function expandHome(path: string, home: string): string {
  return path === '~' || path.startsWith('~/') ? join(home, path.slice(1)) : path;
}

async function readClusterFile(path: string): Promise<z.infer<typeof clusterFileSchema>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' || code === 'ENOTDIR'
        ? 'not found (`npm run cluster` writes data/cluster/cluster.json once the cluster is up: start it, or wait for it)'
        : code === 'EACCES' || code === 'EPERM'
          ? 'not readable (permission denied)'
          : code === 'EISDIR'
            ? 'is a folder, not a file'
            : `unreadable (${code ?? 'unknown error'})`;
    throw new KmaasError('ERR_CONFIG', `cluster file ${path} ${why}`, { file: path });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new KmaasError('ERR_CONFIG', `cluster file ${path} is not valid JSON`, { file: path });
  }
  const r = clusterFileSchema.safeParse(json);
  if (!r.success) {
    const field = r.error.issues[0]?.path.join('.') ?? '';
    const what = r.error.issues[0]?.message ?? 'invalid';
    throw new KmaasError('ERR_CONFIG', `cluster file ${path}: ${field}: ${what}`, {
      file: path,
      field,
    });
  }
  return r.data;
}

export async function resolveConfig(
  opts: GlobalOptions,
  where: { cwd: string; home: string; env?: NodeJS.ProcessEnv } = {
    cwd: process.cwd(),
    home: homedir(),
  },
): Promise<Config> {
  const env = where.env ?? process.env;
  let clusterFile = opts.cluster
    ? resolve(where.cwd, expandHome(opts.cluster, where.home))
    : undefined;
  if (!clusterFile) {
    const fallback = resolve(where.cwd, DEFAULT_CLUSTER_FILE);
    if (existsSync(fallback)) clusterFile = fallback;
  }
  const cluster = clusterFile ? await readClusterFile(clusterFile) : {};
  const clusterPins =
    cluster.pins && clusterFile
      ? resolve(dirname(clusterFile), expandHome(cluster.pins, where.home))
      : undefined;
  const pins = opts.pins
    ? resolve(where.cwd, expandHome(opts.pins, where.home))
    : (clusterPins ?? join(where.home, '.kmaas', 'pins.json'));
  const url = opts.url ?? cluster.url;
  const fromCluster = (path: string) =>
    resolve(dirname(clusterFile!), expandHome(path, where.home));
  return {
    url,
    urlFrom: opts.url !== undefined ? 'option' : url !== undefined ? 'cluster' : undefined,
    issuer: opts.issuer ?? cluster.issuer,
    issuerFrom:
      opts.issuer !== undefined ? 'option' : cluster.issuer !== undefined ? 'cluster' : undefined,
    user: opts.user,
    passwordFile:
      opts.passwordFile === undefined
        ? undefined
        : resolve(where.cwd, expandHome(opts.passwordFile, where.home)),
    password: env.KMAAS_PASSWORD === '' ? undefined : env.KMAAS_PASSWORD,
    devUsers: cluster.devUsers ?? [],
    adminToken: opts.adminToken ?? cluster.adminToken,
    pinsFile: pins,
    clusterPins,
    clusterFile,
    operatorsFile: cluster.operators === undefined ? undefined : fromCluster(cluster.operators),
    operatorKeys: (cluster.operatorKeys ?? []).map(fromCluster),
    ...(cluster.committee === undefined ? {} : { committee: cluster.committee }),
    cwd: where.cwd,
    json: opts.json ?? false,
    trustOnFirstUse: opts.trustOnFirstUse ?? false,
  };
}
