/**
 * Where the CLI's settings come from, strongest first: command-line option, environment variable
 * (both through commander), the cluster file, the built-in default. The cluster file is the JSON
 * the local-cluster script writes ({ url, token, adminToken, pins, operators, operatorKeys }, the
 * last two naming the dev operator set and key files, relative to it); it is taken from --cluster
 * or KMAAS_CLUSTER, or else from ./data/cluster/cluster.json when that exists.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { KmaasError } from '../shared/errors.ts';

export interface GlobalOptions {
  url?: string;
  token?: string;
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
  token: string | undefined;
  adminToken: string | undefined;
  pinsFile: string;
  /** The pins file the cluster file names (resolved), whether or not it is the one in use. */
  clusterPins: string | undefined;
  clusterFile: string | undefined;
  /** The operator set file ({ quorum, operators }) the cluster file names, resolved. */
  operatorsFile: string | undefined;
  /** The operator key files the cluster file names (development clusters only), resolved. */
  operatorKeys: string[];
  /** The folder the command runs in, where the default cluster file is looked up. */
  cwd: string;
  json: boolean;
  trustOnFirstUse: boolean;
}

export const DEFAULT_CLUSTER_FILE = join('data', 'cluster', 'cluster.json');

const clusterFileSchema = z.object({
  url: z.string().optional(),
  token: z.string().optional(),
  adminToken: z.string().optional(),
  pins: z.string().optional(),
  operators: z.string().optional(),
  operatorKeys: z.array(z.string()).optional(),
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
    throw new KmaasError('ERR_CONFIG', `cluster file ${path}: ${field}: expected a string`, {
      file: path,
      field,
    });
  }
  return r.data;
}

export async function resolveConfig(
  opts: GlobalOptions,
  where: { cwd: string; home: string } = { cwd: process.cwd(), home: homedir() },
): Promise<Config> {
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
    token: opts.token ?? cluster.token,
    adminToken: opts.adminToken ?? cluster.adminToken,
    pinsFile: pins,
    clusterPins,
    clusterFile,
    operatorsFile: cluster.operators === undefined ? undefined : fromCluster(cluster.operators),
    operatorKeys: (cluster.operatorKeys ?? []).map(fromCluster),
    cwd: where.cwd,
    json: opts.json ?? false,
    trustOnFirstUse: opts.trustOnFirstUse ?? false,
  };
}
