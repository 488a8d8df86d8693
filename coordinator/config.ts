/**
 * Coordinator configuration (docs/CONTRACTS.md, "Coordinator"). Read from the environment and,
 * when KMAAS_COORDINATOR_CONFIG names one, a JSON file with the same settings under camelCase
 * keys; the environment wins. Every setting is validated here, once, so that the rest of the code
 * can trust its types; a bad setting stops the process with ERR_CONFIG naming the variable, and
 * never echoes its value (it may be a token).
 *
 * Each token may instead be given as a file holding it (KMAAS_CLUSTER_TOKEN_FILE,
 * KMAAS_ADMIN_TOKEN_FILE), as container secrets are mounted; the content is trimmed. Tokens are
 * kept as Redacted values so that no log line can ever print one.
 *
 * End users are authenticated by OIDC access tokens and DPoP proofs, as the nodes do it (the
 * KMAAS_OIDC_* settings of shared/oidc-config.ts; KMAAS_OIDC_ISSUER is required).
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { KmaasError } from '../shared/errors.ts';
import { MAX_IDENTIFIER } from '../shared/identifiers.ts';
import { OIDC_ENV, oidcFields } from '../shared/oidc-config.ts';
import { Redacted } from '../shared/redacted.ts';
import { MAX_BATCH } from '../shared/suite.ts';

/** Bearer tokens shorter than this are guessable; refuse them rather than run with them. */
export const MIN_TOKEN_LENGTH = 16;

const token = (label: string) =>
  z
    .string()
    .min(MIN_TOKEN_LENGTH, `expected at least ${MIN_TOKEN_LENGTH} characters`)
    .regex(/^[\x21-\x7e]+$/, 'expected printable ASCII without spaces')
    .transform((t) => new Redacted(t, label));

const ms = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

const nodeEndpoint = z
  .object({
    id: z.number().int().min(1).max(MAX_IDENTIFIER),
    url: z.string().regex(/^wss?:\/\/\S+$/, 'expected a ws:// or wss:// URL'),
  })
  .strict();

const nodes = z.preprocess(
  (v) => (typeof v === 'string' ? parseJsonSetting(v) : v),
  z
    .array(nodeEndpoint)
    .min(1, 'expected at least one node')
    .max(64)
    .refine((list) => new Set(list.map((n) => n.id)).size === list.length, 'node ids must differ'),
);

/** One web origin exactly as a browser sends it in Origin: scheme://host[:port], nothing more. */
const webOrigin = z
  .string()
  .refine((o) => /^https?:$/.test(URL.parse(o)?.protocol ?? '') && URL.parse(o)?.origin === o, {
    message: 'expected an origin such as https://app.example.com (no path, no trailing slash)',
  });

const corsOrigins = z.preprocess(
  (v) =>
    typeof v === 'string'
      ? v
          .split(',')
          .map((o) => o.trim())
          .filter((o) => o !== '')
      : v,
  z.array(webOrigin).max(100),
);

const configSchema = z.object({
  host: z.string().min(1).default('127.0.0.1'),
  port: ms(0, 65535).default(8080),
  redisUrl: z
    .string()
    .regex(/^rediss?:\/\/\S+$/, 'expected a redis:// or rediss:// URL')
    .default('redis://127.0.0.1:6379'),
  // Every key, BullMQ's included, lives under this prefix; it always ends with ':'.
  redisPrefix: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,100}$/, "expected 1-100 characters of A-Z, a-z, 0-9, '_.:-'")
    .default('kmaas:')
    .transform((p) => (p.endsWith(':') ? p : `${p}:`)),
  nodes,
  clusterToken: token('cluster token'),
  ...oidcFields,
  adminToken: token('admin token'),
  nodeTimeoutMs: ms(10, 60_000).default(2000),
  // Added per blinded element to the node timeout (twice to the deadline): full batches take longer.
  perElementMs: ms(0, 1000).default(10),
  // The whole evaluation, retries and hedges included, ends by this deadline.
  evaluateDeadlineMs: ms(10, 120_000).default(5000),
  // A node that has not answered after this long, and after three times its usual latency, gets
  // a backup node asked in parallel (never while the coordinator is at its admission limit).
  hedgeDelayMs: ms(1, 120_000).default(1000),
  // "Slower than usual" is this many times the node's average evaluation round trip.
  hedgeFactor: z.coerce.number().min(1).max(100).default(3),
  // Node attempts an evaluation may make beyond its first t (failovers and hedges together).
  retryBudget: ms(0, 64).default(4),
  // Circuit breaker per node (coordinator/circuit-breaker.ts): failures in a row that open it,
  // the first cool-down (doubling up to the maximum), and the cool-down after an invalid proof.
  breakerFailures: ms(1, 1000).default(3),
  breakerOpenMs: ms(1, 600_000).default(1000),
  breakerMaxOpenMs: ms(1, 3_600_000).default(30_000),
  breakerLiarOpenMs: ms(1, 86_400_000).default(300_000),
  // Every Redis command of the main connection fails after this long instead of hanging on a
  // Redis that stopped answering; also the rate limit's wait before it falls back to memory.
  redisCommandTimeoutMs: ms(10, 60_000).default(500),
  // How often the coordinator checks that its registry is still in Redis (a flush or an empty
  // restarted Redis is then rebuilt from the nodes).
  registryCheckMs: ms(100, 600_000).default(5000),
  // Worker threads that check node proofs off the event loop; 0 checks them inline.
  verifyWorkers: ms(0, 64).default(1),
  // Blinded elements under evaluation at once; a request beyond it is refused with ERR_OVERLOADED.
  // At least one full batch, so that any valid request can be admitted when nothing else runs.
  // 1024 is four full batches: what 5 nodes (t = 3) on two cores finish within the deadline.
  maxInflightElements: ms(MAX_BATCH, 1_000_000).default(1024),
  // Blinded elements per (tenant, subject) per minute, across replicas (in Redis); 0: no limit.
  // Otherwise at least one full batch, so that every valid request can pass on a fresh budget.
  rateElementsPerMin: ms(0, 1_000_000_000)
    .refine((n) => n === 0 || n >= MAX_BATCH, `expected 0 (no limit) or at least ${MAX_BATCH}`)
    .default(60_000),
  dkgTimeoutMs: ms(10, 600_000).default(15_000),
  dkgAttempts: ms(1, 20).default(3),
  dkgBackoffMs: ms(1, 600_000).default(2000),
  // A reshare must ride out a member that crashed mid-ceremony and takes a while to come back:
  // more attempts than a DKG (backoff doubles each time: about 8.5 minutes in all by default).
  reshareAttempts: ms(1, 30).default(8),
  // A ceremony job whose worker stops renewing its lock (a coordinator killed mid-ceremony) is
  // found by the stalled-job check and run again, by any replica, within about lock + interval.
  ceremonyLockMs: ms(1000, 600_000).default(30_000),
  ceremonyStalledIntervalMs: ms(500, 600_000).default(30_000),
  // Between a reshare's switch to the new epoch and telling the nodes to erase the old shares:
  // evaluations routed with the old epoch's package just before the switch still complete.
  reshareFinishDelayMs: ms(0, 600_000).default(2000),
  // A signed committee.refresh proposal: a proactive refresh every proposal.everySeconds.
  refreshProposalFile: z.string().min(1).optional(),
  heartbeatMs: ms(10, 60_000).default(3000),
  reconnectBaseMs: ms(1, 60_000).default(200),
  reconnectMaxMs: ms(1, 600_000).default(1_000),
  catchUpCheckMs: ms(100, 3_600_000).default(10_000),
  // Web origins whose pages may call the API from the browser SDK (coordinator/cors.ts).
  corsOrigins: corsOrigins.default([]),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type CoordinatorConfig = z.output<typeof configSchema>;
export type NodeEndpoint = z.output<typeof nodeEndpoint>;

/** Environment variable for each setting; also the name an ERR_CONFIG reports. */
export const CONFIG_ENV = {
  host: 'KMAAS_COORDINATOR_HOST',
  port: 'KMAAS_COORDINATOR_PORT',
  redisUrl: 'REDIS_URL',
  redisPrefix: 'KMAAS_REDIS_PREFIX',
  nodes: 'KMAAS_NODES',
  clusterToken: 'KMAAS_CLUSTER_TOKEN',
  ...OIDC_ENV,
  adminToken: 'KMAAS_ADMIN_TOKEN',
  nodeTimeoutMs: 'KMAAS_NODE_TIMEOUT_MS',
  perElementMs: 'KMAAS_NODE_TIMEOUT_PER_ELEMENT_MS',
  evaluateDeadlineMs: 'KMAAS_EVALUATE_DEADLINE_MS',
  hedgeDelayMs: 'KMAAS_HEDGE_DELAY_MS',
  hedgeFactor: 'KMAAS_HEDGE_LATENCY_FACTOR',
  retryBudget: 'KMAAS_EVALUATE_RETRY_BUDGET',
  breakerFailures: 'KMAAS_BREAKER_FAILURES',
  breakerOpenMs: 'KMAAS_BREAKER_OPEN_MS',
  breakerMaxOpenMs: 'KMAAS_BREAKER_MAX_OPEN_MS',
  breakerLiarOpenMs: 'KMAAS_BREAKER_LIAR_OPEN_MS',
  redisCommandTimeoutMs: 'KMAAS_REDIS_COMMAND_TIMEOUT_MS',
  registryCheckMs: 'KMAAS_REGISTRY_CHECK_MS',
  verifyWorkers: 'KMAAS_VERIFY_WORKERS',
  maxInflightElements: 'KMAAS_MAX_INFLIGHT_ELEMENTS',
  rateElementsPerMin: 'KMAAS_RATE_ELEMENTS_PER_MIN',
  dkgTimeoutMs: 'KMAAS_DKG_TIMEOUT_MS',
  dkgAttempts: 'KMAAS_DKG_ATTEMPTS',
  dkgBackoffMs: 'KMAAS_DKG_BACKOFF_MS',
  reshareAttempts: 'KMAAS_RESHARE_ATTEMPTS',
  ceremonyLockMs: 'KMAAS_CEREMONY_LOCK_MS',
  ceremonyStalledIntervalMs: 'KMAAS_CEREMONY_STALLED_INTERVAL_MS',
  reshareFinishDelayMs: 'KMAAS_RESHARE_FINISH_DELAY_MS',
  refreshProposalFile: 'KMAAS_REFRESH_PROPOSAL_FILE',
  heartbeatMs: 'KMAAS_HEARTBEAT_MS',
  reconnectBaseMs: 'KMAAS_RECONNECT_BASE_MS',
  reconnectMaxMs: 'KMAAS_RECONNECT_MAX_MS',
  catchUpCheckMs: 'KMAAS_CATCHUP_CHECK_MS',
  corsOrigins: 'KMAAS_CORS_ORIGINS',
  logLevel: 'LOG_LEVEL',
} as const satisfies Record<keyof z.input<typeof configSchema>, string>;

export const CONFIG_FILE_ENV = 'KMAAS_COORDINATOR_CONFIG';

/** Each token setting, and the setting that names a file holding it instead. */
const TOKEN_FILES = {
  clusterToken: ['clusterTokenFile', 'KMAAS_CLUSTER_TOKEN_FILE'],
  adminToken: ['adminTokenFile', 'KMAAS_ADMIN_TOKEN_FILE'],
} as const;

type Setting = keyof typeof CONFIG_ENV;
type TokenSetting = keyof typeof TOKEN_FILES;
const FILE_SETTINGS: readonly string[] = Object.values(TOKEN_FILES).map(([key]) => key);

function parseJsonSetting(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // Left as a string so that the schema reports it against the right setting.
    return text;
  }
}

function readConfigFile(path: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    const why = err instanceof SyntaxError ? 'not valid JSON' : 'cannot be read';
    throw new KmaasError('ERR_CONFIG', `${CONFIG_FILE_ENV}: the file ${why}`, {
      setting: CONFIG_FILE_ENV,
    });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new KmaasError('ERR_CONFIG', `${CONFIG_FILE_ENV}: expected a JSON object`, {
      setting: CONFIG_FILE_ENV,
    });
  }
  const unknown = Object.keys(parsed).filter(
    (k) => !Object.hasOwn(CONFIG_ENV, k) && !FILE_SETTINGS.includes(k),
  );
  if (unknown.length > 0) {
    throw new KmaasError('ERR_CONFIG', `${CONFIG_FILE_ENV}: unknown setting ${unknown[0]}`, {
      setting: CONFIG_FILE_ENV,
    });
  }
  const settings = parsed as Record<string, unknown>;
  // Token files named in the file are relative to it, as an operator editing it would expect.
  for (const key of FILE_SETTINGS) {
    const value = settings[key];
    if (typeof value === 'string') settings[key] = resolve(dirname(resolve(path)), value);
  }
  return settings;
}

/**
 * Build and validate the configuration.
 * @example loadConfig({ KMAAS_NODES: '[{"id":1,"url":"ws://127.0.0.1:41001/v1/ws"}]', ... })
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): CoordinatorConfig {
  const filePath = env[CONFIG_FILE_ENV];
  const file: Record<string, unknown> = filePath ? readConfigFile(filePath) : {};
  const fromEnv: Record<string, unknown> = {};
  for (const [key, name] of Object.entries(CONFIG_ENV)) {
    // An empty variable counts as unset, as shells and compose files often leave them.
    const value = env[name];
    if (value !== undefined && value !== '') fromEnv[key] = value;
  }
  for (const [fileKey, name] of Object.values(TOKEN_FILES)) {
    const value = env[name];
    if (value !== undefined && value !== '') fromEnv[fileKey] = value;
  }
  const raw: Record<string, unknown> = { ...file, ...fromEnv };
  // A token and its file are one setting given two ways: the environment's form replaces the
  // file's form, whichever each is.
  for (const [tokenKey, [fileKey]] of Object.entries(TOKEN_FILES)) {
    const source = tokenKey in fromEnv || fileKey in fromEnv ? fromEnv : file;
    delete raw[tokenKey];
    delete raw[fileKey];
    if (source[tokenKey] !== undefined) raw[tokenKey] = source[tokenKey];
    if (source[fileKey] !== undefined) raw[fileKey] = source[fileKey];
  }
  readTokenFiles(raw);
  return validateConfig(raw);
}

/** Replace each `...TokenFile` setting by the trimmed content of the file it names. */
function readTokenFiles(raw: Record<string, unknown>): void {
  for (const [tokenKey, [fileKey, fileEnv]] of Object.entries(TOKEN_FILES)) {
    const path = raw[fileKey];
    if (path === undefined) continue;
    if (typeof path !== 'string') {
      throw new KmaasError('ERR_CONFIG', `${fileEnv}: expected a file path`, { setting: fileEnv });
    }
    if (raw[tokenKey] !== undefined) {
      const name = CONFIG_ENV[tokenKey as TokenSetting];
      throw new KmaasError('ERR_CONFIG', `${name}: set either ${name} or ${fileEnv}, not both`, {
        setting: name,
      });
    }
    try {
      raw[tokenKey] = readFileSync(path, 'utf8').trim();
    } catch {
      throw new KmaasError('ERR_CONFIG', `${fileEnv}: the file cannot be read`, {
        setting: fileEnv,
      });
    }
    delete raw[fileKey];
  }
}

/** Validate an object of camelCase settings (what tests and embedders pass). */
export function validateConfig(raw: unknown): CoordinatorConfig {
  const r = configSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    const key = issue?.path[0];
    const setting =
      typeof key === 'string' && Object.hasOwn(CONFIG_ENV, key)
        ? CONFIG_ENV[key as Setting]
        : 'configuration';
    const where = issue && issue.path.length > 1 ? ` (at ${issue.path.slice(1).join('.')})` : '';
    const missing =
      typeof key === 'string' && (raw as Record<string, unknown> | null)?.[key] === undefined;
    const problem = !missing
      ? `${issue?.message ?? 'invalid'}${where}`
      : Object.hasOwn(TOKEN_FILES, key)
        ? `required: set ${setting} or ${TOKEN_FILES[key as TokenSetting][1]}`
        : 'required but not set';
    throw new KmaasError('ERR_CONFIG', `${setting}: ${problem}`, { setting });
  }
  return r.data;
}
