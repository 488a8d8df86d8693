/**
 * Share node configuration (docs/CONTRACTS.md, "Share node"). Settings come from the environment
 * and, when KMAAS_NODE_CONFIG names one, from a JSON file with the same settings under camelCase
 * keys (KMAAS_NODE_ID -> nodeId, KMAAS_CLUSTER_TOKEN -> clusterToken, LOG_LEVEL -> logLevel).
 * The environment wins. Relative paths in the file are relative to the file itself.
 *
 * Each secret may instead be given as a file holding it (KMAAS_NODE_SECRET_FILE,
 * KMAAS_CLUSTER_TOKEN_FILE), as container secrets are mounted; the content is trimmed.
 *
 * End users are authenticated by OIDC access tokens and DPoP proofs (DESIGN.md section 4): the
 * KMAAS_OIDC_* settings of shared/oidc-config.ts, of which KMAAS_OIDC_ISSUER is required.
 *
 * Lifecycle proposals (shared/proposal.ts) are checked against KMAAS_CLUSTER_ID and the operator
 * set { quorum, operators: [{ id, publicKey }] } given as JSON in KMAAS_OPERATORS or in the file
 * KMAAS_OPERATORS_FILE (in the JSON config file: `operators` as an object, or `operatorsFile`).
 * Both are required: a node without them could not tell a lawful proposal from a forged one.
 *
 * Every failure is ERR_CONFIG naming the setting; values of secret settings are never echoed.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ed25519 } from '@noble/curves/ed25519.js';
import { hexToBytes } from '@noble/hashes/utils.js';
import { fromB64 } from '../shared/encoding.ts';
import { z } from 'zod';
import { KmaasError } from '../shared/errors.ts';
import { MAX_IDENTIFIER } from '../shared/identifiers.ts';
import type { OidcSettings } from '../shared/access-token.ts';
import { OIDC_ENV, oidcFields, oidcSettings } from '../shared/oidc-config.ts';
import { CLUSTER_ID_PATTERN, operatorSetSchema, type OperatorSet } from '../shared/proposal.ts';
import { Redacted } from '../shared/redacted.ts';
import { MAX_BATCH } from '../shared/suite.ts';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The node secret feeds HKDF (sealing.ts); 32 bytes is the key-encryption key's own strength. */
export const MIN_SECRET_BYTES = 32;
/** Bearer tokens shorter than this are guessable; refuse them rather than run with them. */
export const MIN_TOKEN_LENGTH = 16;

/** KMAAS_NODE_RATE_ELEMENTS_PER_MIN when not set. */
export const DEFAULT_RATE_ELEMENTS_PER_MIN = 60_000;

/** KMAAS_RESHARE_FINISH_AFTER_MS when not set: a committed reshare finishes on its own after 10 min. */
export const DEFAULT_RESHARE_FINISH_AFTER_MS = 600_000;

/**
 * Test-only failpoints (KMAAS_FAILPOINTS, comma-separated) for the fault tests: the
 * `:before`/`:after` points SIGKILL the node there, once per process start; `reshare.deal:corrupt-piece`
 * makes a dealer add 1 to every piece it seals for the lowest-id receiver; `evaluate.lie` makes
 * the node a Byzantine one, switched at run time: while the file `failpoint-evaluate.lie`
 * (LIE_FILE, nodes/evaluate.ts) exists in its data folder it evaluates with k_j + 1 instead of
 * its share.
 */
export const FAILPOINTS = [
  'reshare.deal:before',
  'reshare.prepare:before-persist',
  'reshare.prepare:after-persist',
  'reshare.commit:before',
  'reshare.commit:after',
  'reshare.deal:corrupt-piece',
  'evaluate.lie',
] as const;
export type Failpoint = (typeof FAILPOINTS)[number];

export interface NodeConfig {
  nodeId: number;
  host: string;
  port: number;
  dataDir: string;
  secret: Redacted<Uint8Array>;
  clusterToken: Redacted<string>;
  /** Who issues the end users' access tokens, and how proofs are checked. */
  oidc: OidcSettings;
  /** The cluster this node belongs to: proposals for another cluster are refused. */
  clusterId: string;
  /** The operators whose quorum every lifecycle proposal needs (shared/proposal.ts). */
  operators: OperatorSet;
  /** Blinded elements per (tenant, subject) per minute; 0 disables the limit. Default 60000. */
  rateElementsPerMin?: number;
  /** ms after a reshare's commit when the node finishes it on its own. Default 600000. */
  reshareFinishAfterMs?: number;
  /** Test-only failpoints (FAILPOINTS); empty or absent in production. */
  failpoints?: Failpoint[];
  logLevel: LogLevel;
}

/** Setting name in the JSON file -> its environment variable. */
const SETTINGS = {
  nodeId: 'KMAAS_NODE_ID',
  nodeHost: 'KMAAS_NODE_HOST',
  nodePort: 'KMAAS_NODE_PORT',
  nodeDataDir: 'KMAAS_NODE_DATA_DIR',
  nodeSecret: 'KMAAS_NODE_SECRET',
  nodeSecretFile: 'KMAAS_NODE_SECRET_FILE',
  clusterToken: 'KMAAS_CLUSTER_TOKEN',
  clusterTokenFile: 'KMAAS_CLUSTER_TOKEN_FILE',
  ...OIDC_ENV,
  nodeRateElementsPerMin: 'KMAAS_NODE_RATE_ELEMENTS_PER_MIN',
  clusterId: 'KMAAS_CLUSTER_ID',
  operators: 'KMAAS_OPERATORS',
  operatorsFile: 'KMAAS_OPERATORS_FILE',
  reshareFinishAfterMs: 'KMAAS_RESHARE_FINISH_AFTER_MS',
  failpoints: 'KMAAS_FAILPOINTS',
  logLevel: 'LOG_LEVEL',
} as const;

type Setting = keyof typeof SETTINGS;
type RawSettings = Partial<Record<Setting, string | number>>;

/** Secret settings, each with the setting that names a file holding it instead. */
const SECRET_FILES = {
  nodeSecret: 'nodeSecretFile',
  clusterToken: 'clusterTokenFile',
} as const satisfies Partial<Record<Setting, Setting>>;

type SecretSetting = keyof typeof SECRET_FILES;
const SECRET_SETTINGS = Object.keys(SECRET_FILES) as SecretSetting[];

function isSecret(setting: Setting): setting is SecretSetting {
  return Object.hasOwn(SECRET_FILES, setting);
}

const fileSchema = z
  .object({
    ...(Object.fromEntries(
      Object.keys(SETTINGS).map((k) => [k, z.union([z.string(), z.number()]).optional()]),
    ) as Record<Setting, z.ZodOptional<z.ZodUnion<[z.ZodString, z.ZodNumber]>>>),
    // The operator set may be written inline as an object; it is kept as JSON text until parsed.
    operators: z
      .union([z.string(), z.record(z.string(), z.unknown())])
      .transform((v) => (typeof v === 'string' ? v : JSON.stringify(v)))
      .optional(),
  })
  .strict();

function integer(min: number, max: number) {
  const error = `expected an integer in ${min}..${max}`;
  return z.preprocess(
    (v) => (typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v),
    z.number({ error }).int({ error }).min(min, { error }).max(max, { error }),
  );
}

const token = z
  .string()
  .min(MIN_TOKEN_LENGTH, `expected at least ${MIN_TOKEN_LENGTH} characters`)
  .regex(/^\S+$/, 'expected no whitespace');

const settingsSchema = z.object({
  nodeId: integer(1, MAX_IDENTIFIER),
  nodeHost: z.string().min(1).default('127.0.0.1'),
  nodePort: integer(0, 65535).default(0),
  nodeDataDir: z.string().min(1),
  nodeSecret: z
    .string()
    .trim()
    .regex(/^(?:[0-9a-fA-F]{2})+$/, 'expected hex')
    .min(2 * MIN_SECRET_BYTES, `expected at least ${MIN_SECRET_BYTES} bytes of hex`),
  clusterToken: token,
  ...oidcFields,
  // At least one full batch, so that every valid request can pass when the budget is fresh.
  nodeRateElementsPerMin: integer(0, 1_000_000_000)
    .refine((n) => n === 0 || n >= MAX_BATCH, `expected 0 (no limit) or at least ${MAX_BATCH}`)
    .default(DEFAULT_RATE_ELEMENTS_PER_MIN),
  logLevel: z.enum(LOG_LEVELS).default('info'),
  reshareFinishAfterMs: integer(0, 30 * 86_400_000).default(DEFAULT_RESHARE_FINISH_AFTER_MS),
  failpoints: z
    .string()
    .default('')
    .transform((v) =>
      v
        .split(',')
        .map((f) => f.trim())
        .filter((f) => f !== ''),
    )
    .pipe(z.array(z.enum(FAILPOINTS, { error: `expected some of ${FAILPOINTS.join(', ')}` }))),
  clusterId: z.string().regex(CLUSTER_ID_PATTERN, 'expected 1-64 characters of A-Z a-z 0-9 . _ -'),
  operators: z.string(),
});

function configError(setting: Setting | 'KMAAS_NODE_CONFIG', problem: string): KmaasError {
  const env = setting === 'KMAAS_NODE_CONFIG' ? setting : SETTINGS[setting];
  const name = setting === 'KMAAS_NODE_CONFIG' ? setting : `${env} (${setting})`;
  return new KmaasError('ERR_CONFIG', `${name}: ${problem}`, { setting: env });
}

function readConfigFile(path: string): RawSettings {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw configError('KMAAS_NODE_CONFIG', `cannot read ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw configError('KMAAS_NODE_CONFIG', `${path} is not valid JSON`);
  }
  const parsed = fileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.join('.') || '(top level)';
    const unknown = issue?.code === 'unrecognized_keys' ? `: ${issue.keys.join(', ')}` : '';
    throw configError(
      'KMAAS_NODE_CONFIG',
      `${path}: ${where}: ${issue?.message ?? 'invalid'}${unknown}`,
    );
  }
  const raw: RawSettings = {};
  for (const [k, v] of Object.entries(parsed.data)) if (v !== undefined) raw[k as Setting] = v;
  // Paths in the file are relative to the file, as an operator editing it would expect.
  const base = dirname(resolve(path));
  for (const k of ['nodeDataDir', 'operatorsFile', ...Object.values(SECRET_FILES)] as Setting[]) {
    if (typeof raw[k] === 'string') raw[k] = resolve(base, raw[k]);
  }
  return raw;
}

function fromEnv(env: NodeJS.ProcessEnv): RawSettings {
  const raw: RawSettings = {};
  for (const [k, name] of Object.entries(SETTINGS) as [Setting, string][]) {
    const v = env[name];
    if (v !== undefined && v !== '') raw[k] = v;
  }
  return raw;
}

/**
 * Env wins over the file, setting by setting, except that a secret and its file are one setting
 * given two ways: a secret in the environment (either form) replaces the file's (either form).
 */
function merge(file: RawSettings, env: RawSettings): RawSettings {
  const merged: RawSettings = { ...file, ...env };
  for (const value of SECRET_SETTINGS) {
    const path = SECRET_FILES[value];
    const source = env[value] !== undefined || env[path] !== undefined ? env : file;
    delete merged[value];
    delete merged[path];
    if (source[value] !== undefined) merged[value] = source[value];
    if (source[path] !== undefined) merged[path] = source[path];
  }
  return merged;
}

/** Replace each `...File` setting by the content of the file it names. */
function readSecretFiles(raw: RawSettings): void {
  for (const value of SECRET_SETTINGS) {
    const file = SECRET_FILES[value];
    if (raw[value] !== undefined && raw[file] !== undefined) {
      throw configError(value, `set either ${SETTINGS[value]} or ${SETTINGS[file]}, not both`);
    }
    if (raw[file] === undefined) continue;
    const path = resolve(String(raw[file]));
    try {
      raw[value] = readFileSync(path, 'utf8').trim();
    } catch (err) {
      throw configError(file, `cannot read ${path}: ${(err as Error).message}`);
    }
    delete raw[file];
  }
}

/** KMAAS_OPERATORS_FILE replaced by the file's content, as KMAAS_OPERATORS. */
function readOperatorsFile(raw: RawSettings): void {
  if (raw.operators !== undefined && raw.operatorsFile !== undefined) {
    throw configError('operators', 'set either KMAAS_OPERATORS or KMAAS_OPERATORS_FILE, not both');
  }
  if (raw.operatorsFile === undefined) return;
  const path = resolve(String(raw.operatorsFile));
  try {
    raw.operators = readFileSync(path, 'utf8');
  } catch (err) {
    throw configError('operatorsFile', `cannot read ${path}: ${(err as Error).message}`);
  }
  delete raw.operatorsFile;
}

/** The operator set, checked: quorum within 1..n, distinct ids and Ed25519 keys. */
function parseOperators(text: string): OperatorSet {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw configError('operators', 'expected JSON { quorum, operators: [{ id, publicKey }] }');
  }
  const r = operatorSetSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue?.path.join('.') || '(top level)';
    throw configError('operators', `${where}: ${issue?.message ?? 'invalid'}`);
  }
  for (const o of r.data.operators) {
    try {
      ed25519.Point.fromBytes(fromB64(o.publicKey, 'publicKey'));
    } catch {
      throw configError('operators', `operator ${o.id}: publicKey is not an Ed25519 public key`);
    }
  }
  return r.data;
}

/** Read and validate the configuration; throws ERR_CONFIG naming the first bad setting. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): NodeConfig {
  const configPath = env.KMAAS_NODE_CONFIG;
  const file = configPath ? readConfigFile(configPath) : {};
  const raw = merge(file, fromEnv(env));
  readSecretFiles(raw);
  readOperatorsFile(raw);
  const parsed = settingsSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const setting = issue.path[0] as Setting;
    const missing = raw[setting] === undefined;
    if (missing && setting === 'operators') {
      throw configError(setting, 'required: set KMAAS_OPERATORS or KMAAS_OPERATORS_FILE');
    }
    if (missing && isSecret(setting)) {
      const either = `${SETTINGS[setting]} or ${SETTINGS[SECRET_FILES[setting]]}`;
      throw configError(setting, `required: set ${either}`);
    }
    const shown = isSecret(setting) || missing ? '' : ` (got ${JSON.stringify(raw[setting])})`;
    throw configError(setting, missing ? 'required but not set' : `${issue.message}${shown}`);
  }
  const s = parsed.data;
  return {
    nodeId: s.nodeId,
    host: s.nodeHost,
    port: s.nodePort,
    dataDir: resolve(s.nodeDataDir),
    secret: new Redacted(hexToBytes(s.nodeSecret), 'node secret'),
    clusterToken: new Redacted(s.clusterToken, 'cluster token'),
    oidc: oidcSettings(s),
    clusterId: s.clusterId,
    operators: parseOperators(s.operators),
    rateElementsPerMin: s.nodeRateElementsPerMin,
    reshareFinishAfterMs: s.reshareFinishAfterMs,
    failpoints: s.failpoints,
    logLevel: s.logLevel,
  };
}
