/**
 * A local committee on loopback: the development identity provider (idp/main.ts), n share nodes
 * and a coordinator as real processes, with generated development secrets kept in a data folder
 * (so a restarted cluster finds its nodes' databases again, and the provider its signing keys).
 * Used by `npm run cluster`, `npm run demo`, the benchmark and the integration tests.
 *
 * The identity provider has two dev users in two tenants (alice in `acme`, bob in `globex`) with
 * passwords generated into secrets.json; nodes and coordinator are told its issuer
 * (KMAAS_OIDC_ISSUER, DESIGN.md section 4), and cluster.json names it for the CLI.
 *
 * Lifecycle changes need operator proposals: a dev operator set (scripts/lib/operators.ts) and a
 * cluster id are made once in the data folder; nodes get KMAAS_CLUSTER_ID and
 * KMAAS_OPERATORS_FILE, and cluster.json names the set and the operators' key files.
 *
 * Spare nodes (`spareNodes`, `npm run cluster -- --spare 2`): nodes n+1..n+spare run like the
 * others (own data folder, secret and port) and the coordinator may talk to them, but no committee
 * has them until an operator adds them (`kmaas committee add`). cluster.json names the first
 * committee (`committee`) and the spares, and secrets.json keeps every node, so a restart without
 * --spare keeps them (a spare may hold shares by then).
 *
 * The chaos run (scripts/chaos) asks for more: `coordinators` replicas on the same Redis prefix
 * (each with its own port and log), and `nodeUrl` to point a coordinator's link to a node at a
 * proxy in between instead of at the node itself.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { DEFAULT_REDIRECT_URI, DEFAULT_RESOURCE, TENANT_CLAIM } from '../../idp/config.ts';
import type { DevUser } from '../../idp/users.ts';
import { holderAlive, IDP_LOCK_FILE, LOCK_FILE, readLock } from '../../shared/data-lock.ts';
import { ServiceProcess, ROOT } from './child.ts';
import { ensureDevOperators, type DevOperators } from './operators.ts';
import { ensureRedis, deletePrefix, type RedisHandle } from './redis.ts';
import type { Supervised } from './supervisor.ts';

export interface ClusterOptions {
  dataDir: string;
  nodes?: number;
  /** Nodes started beyond `nodes`, in no committee (default 0; more are kept once recorded). */
  spareNodes?: number;
  redisUrl?: string;
  redisPrefix?: string;
  nodeTimeoutMs?: number;
  /** Delete the cluster's Redis keys on stop (tests); a dev cluster keeps them. */
  cleanRedisOnStop?: boolean;
  logLevel?: string;
  /** Extra settings for every node (tests: a low rate limit, say). */
  nodeEnv?: Record<string, string>;
  /** Extra settings for the coordinator. */
  coordinatorEnv?: Record<string, string>;
  /**
   * Redirect URIs of the IdP's `kmaas-dev` client that a browser app adds (its callback), besides
   * the default one that devLogin uses, which is always registered.
   */
  idpRedirectUris?: string[];
  /** Web origins whose pages may call the coordinator (KMAAS_CORS_ORIGINS; a browser demo's). */
  corsOrigins?: string[];
  /** Coordinator replicas, sharing Redis and its prefix (default 1). */
  coordinators?: number;
  /**
   * The WebSocket URL coordinator `coordinator` (0-based) uses for a node listening on `port`;
   * default `ws://127.0.0.1:<port>/v1/ws`. Called once per coordinator and node, after the nodes
   * have started.
   */
  nodeUrl?: (coordinator: number, node: { id: number; port: number }) => string | Promise<string>;
}

interface Secrets {
  clusterToken: string;
  adminToken: string;
  redisPrefix: string;
  /** Every node: the first committee's, then the spares. */
  nodes: { id: number; secret: string; port: number }[];
  /** How many of `nodes` formed the first committee (absent in older files: all of them). */
  members?: number;
  /** The identity provider: its last port (kept, so the issuer stays put) and its dev users. */
  idp: { port: number; users: DevUser[] };
}

/**
 * What the CLI reads (cli --cluster): where to go and which development credentials to use. End
 * users sign in at `issuer` (the CLI as the dev user of the tenant it works for); there is no
 * client token.
 */
export interface ClusterFile {
  url: string;
  adminToken: string;
  pins: string;
  /** OIDC issuer of the development identity provider, and its users (for devLogin). */
  issuer: string;
  devUsers: DevUser[];
  /** The dev operator set (public) and the operators' key files (scripts/lib/operators.ts). */
  operators: string;
  operatorKeys: string[];
  /** The first committee's nodes (the DKG's, until a reshare), and the spare nodes. */
  committee: number[];
  spareNodes: number[];
}

/** The dev users: two tenants, so that cross-tenant refusals can be shown and tested. */
const DEV_USERS = [
  { username: 'alice', tenant: 'acme' },
  { username: 'bob', tenant: 'globex' },
] as const;

const devUsers = (): DevUser[] => DEV_USERS.map((u) => ({ ...u, password: hex(16) }));

const hex = (n: number) => randomBytes(n).toString('hex');

const newNode = (id: number) => ({ id, secret: hex(32), port: 0 });

export class LocalCluster {
  readonly nodes = new Map<number, ServiceProcess>();
  idp!: ServiceProcess;
  /** The first coordinator: `url`, cluster.json and restartCoordinator() mean this one. */
  coordinator!: ServiceProcess;
  /** Every coordinator replica, the first one first. */
  readonly coordinators: ServiceProcess[] = [];
  redis!: RedisHandle;
  secrets!: Secrets;
  /** The dev operator set and cluster id every node checks proposals against. */
  operators!: DevOperators;
  private readonly dir: string;
  private locked = false;
  /** The previous run left its cluster.pid behind: its launcher died without stopping. */
  private unclean = false;

  constructor(private readonly opts: ClusterOptions) {
    this.dir = opts.dataDir;
  }

  get url(): string {
    return this.coordinatorUrl(0);
  }

  /** Base URL of coordinator replica `index`. */
  coordinatorUrl(index: number): string {
    const c = this.coordinators[index];
    if (!c) throw new Error(`no coordinator ${index}`);
    return `http://127.0.0.1:${c.port}`;
  }

  /** OIDC issuer identifier of the development identity provider. */
  get issuer(): string {
    return `http://127.0.0.1:${this.idp.port}`;
  }

  /** The identity provider's users: { username, password, tenant }. */
  get devUsers(): readonly DevUser[] {
    return this.secrets.idp.users;
  }

  /** What nodes and coordinator need to verify end-user tokens (PLAN.md section A). */
  get oidcEnv(): NodeJS.ProcessEnv {
    return {
      KMAAS_OIDC_ISSUER: this.issuer,
      KMAAS_OIDC_AUDIENCE: DEFAULT_RESOURCE,
      KMAAS_OIDC_TENANT_CLAIM: TENANT_CLAIM,
    };
  }

  get clusterFile(): string {
    return join(this.dir, 'cluster.json');
  }

  get pinsFile(): string {
    return join(this.dir, 'pins.json');
  }

  /** The first committee: nodes 1..n. */
  get committeeIds(): number[] {
    const members = this.secrets.members ?? this.secrets.nodes.length;
    return this.secrets.nodes.slice(0, members).map((n) => n.id);
  }

  /** Nodes n+1..n+spare: running, configured in the coordinator, in no first committee. */
  get spareIds(): number[] {
    const members = this.secrets.members ?? this.secrets.nodes.length;
    return this.secrets.nodes.slice(members).map((n) => n.id);
  }

  /** A node's data folder: its database, sealed shares and identity keys. */
  nodeDataDir(id: number): string {
    return join(this.dir, `node-${id}`);
  }

  private loadSecrets(count: number, spare: number): Secrets {
    const file = join(this.dir, 'secrets.json');
    if (existsSync(file)) {
      const s = JSON.parse(readFileSync(file, 'utf8')) as Partial<Secrets> &
        Omit<Secrets, 'idp'> & { clientToken?: string };
      if ((s.members ?? s.nodes.length) === count) {
        // Spares asked for beyond the recorded ones are added; recorded ones are never dropped.
        const before = s.nodes.length;
        s.members = count;
        for (let id = before + 1; id <= count + spare; id++) s.nodes.push(newNode(id));
        if (s.nodes.length !== before) {
          writeFileSync(file, JSON.stringify(s, null, 2), { mode: 0o600 });
        }
        // The development client token of earlier versions: end users sign in now.
        if (s.clientToken !== undefined) {
          delete s.clientToken;
          if (s.idp) writeFileSync(file, JSON.stringify(s, null, 2), { mode: 0o600 });
        }
        // A data folder from before the identity provider: add it, keep everything else.
        if (s.idp) return s as Secrets;
        const upgraded = { ...s, idp: { port: 0, users: devUsers() } };
        writeFileSync(file, JSON.stringify(upgraded, null, 2), { mode: 0o600 });
        return upgraded;
      }
    }
    const s: Secrets = {
      clusterToken: hex(32),
      adminToken: hex(32),
      redisPrefix: this.opts.redisPrefix ?? `kmaas:dev:${hex(4)}:`,
      nodes: Array.from({ length: count + spare }, (_, i) => newNode(i + 1)),
      members: count,
      idp: { port: 0, users: devUsers() },
    };
    writeFileSync(file, JSON.stringify(s, null, 2), { mode: 0o600 });
    return s;
  }

  private saveSecrets(): void {
    writeFileSync(join(this.dir, 'secrets.json'), JSON.stringify(this.secrets, null, 2), {
      mode: 0o600,
    });
  }

  /**
   * One cluster per data folder: two would share the node databases, the Redis prefix and the
   * job queue. cluster.pid names the launcher (first line) and its processes; a launcher that is
   * gone leaves it behind, and is taken over, unless processes of that run still live: those
   * named in it, and the holders of the nodes' and the identity provider's lock files
   * (shared/data-lock.ts). Those of a launcher killed a moment ago are given 3 s to follow it
   * (they stop when it is gone: child.ts); any still running then are named, and refused.
   */
  private async lock(): Promise<void> {
    const file = join(this.dir, 'cluster.pid');
    const recorded = readPidFile(file);
    const launcher = recorded[0];
    if (launcher && launcher.pid !== process.pid && isAlive(launcher.pid)) {
      throw new Error(
        `a cluster (pid ${launcher.pid}) is already running on ${this.dir}; stop it first`,
      );
    }
    let live = this.earlierRun(recorded);
    for (let i = 0; live.length > 0 && i < 30; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      live = this.earlierRun(recorded);
    }
    if (live.length > 0) {
      throw new Error(
        `processes of an earlier run on ${this.dir} are still running: ` +
          `${live.map((p) => `${p.what} (pid ${p.pid})`).join(', ')}; ` +
          `stop them first (kill ${live.map((p) => p.pid).join(' ')})`,
      );
    }
    this.unclean = launcher !== undefined && launcher.pid !== process.pid;
    writeFileSync(file, `${process.pid} launcher\n`);
    this.locked = true;
  }

  /**
   * The processes of an earlier run that still live: those cluster.pid names (where /proc tells,
   * only if they still run one of our entry points, not a process that got the pid since), and
   * the live holders of the nodes' and the identity provider's lock files.
   */
  private earlierRun(recorded: { pid: number; what: string }[]): { pid: number; what: string }[] {
    const found = new Map<number, string>();
    for (const p of recorded.slice(1)) {
      if (p.pid !== process.pid && isAlive(p.pid) && runsOurs(p.pid)) found.set(p.pid, p.what);
    }
    const locks = readdirSync(this.dir, { withFileTypes: true })
      .filter((e) => e.isDirectory() && /^node-\d+$/.test(e.name))
      .map((e) => ({ file: join(this.dir, e.name, LOCK_FILE), what: e.name.replace('-', ' ') }));
    locks.push({ file: join(this.dir, IDP_LOCK_FILE), what: 'identity provider' });
    for (const { file, what } of locks) {
      const holder = readLock(file);
      if (holder && holderAlive(holder)) found.set(holder.pid, holder.what ?? what);
    }
    return [...found].map(([pid, what]) => ({ pid, what }));
  }

  /** cluster.pid: the launcher, then every process it runs now (a restart changes a pid). */
  private recordPids(): void {
    if (!this.locked) return;
    const procs: [string, ServiceProcess | undefined][] = [
      ['identity provider', this.idp],
      ...[...this.nodes].map(([id, p]): [string, ServiceProcess] => [`node ${id}`, p]),
      ...this.coordinators.map((c): [string, ServiceProcess] => [c.name, c]),
    ];
    const lines = [`${process.pid} launcher`];
    for (const [what, p] of procs) if (p?.running && p.pid) lines.push(`${p.pid} ${what}`);
    writeFileSync(join(this.dir, 'cluster.pid'), lines.join('\n') + '\n');
  }

  /**
   * Before a saved port is given up for a new one: when the earlier run did not stop cleanly, a
   * process of it may still hold the port (one started by an older version, or that outlived its
   * launcher), and a second cluster on the same databases must not start beside it.
   */
  private async savedPortUsable(port: number, what: string): Promise<boolean> {
    if (port === 0 || (await portFree(port))) return true;
    if (this.unclean) {
      throw new Error(
        `port ${port} of ${what} is in use, and the earlier run on ${this.dir} did not stop ` +
          `cleanly (see cluster.pid there): a process of it may still hold the port. Stop it ` +
          `first (ss -ltnp 'sport = :${port}' names it), or delete ${join(this.dir, 'cluster.pid')} ` +
          `to move to new ports`,
      );
    }
    return false;
  }

  async start(): Promise<void> {
    mkdirSync(join(this.dir, 'logs'), { recursive: true });
    await this.lock();
    this.secrets = this.loadSecrets(this.opts.nodes ?? 5, this.opts.spareNodes ?? 0);
    this.operators = ensureDevOperators(this.dir);
    if (this.opts.redisPrefix) this.secrets.redisPrefix = this.opts.redisPrefix;
    this.redis = await ensureRedis(this.opts.redisUrl);
    await this.startIdp();
    for (const n of this.secrets.nodes) {
      const dataDir = this.nodeDataDir(n.id);
      mkdirSync(dataDir, { recursive: true });
      this.nodes.set(
        n.id,
        new ServiceProcess({
          name: `node-${n.id}`,
          entry: join(ROOT, 'nodes', 'main.ts'),
          logFile: join(this.dir, 'logs', `node-${n.id}.log`),
          env: {
            KMAAS_NODE_ID: String(n.id),
            KMAAS_NODE_HOST: '127.0.0.1',
            KMAAS_NODE_DATA_DIR: dataDir,
            KMAAS_NODE_SECRET: n.secret,
            KMAAS_CLUSTER_TOKEN: this.secrets.clusterToken,
            ...this.oidcEnv,
            KMAAS_CLUSTER_ID: this.operators.clusterId,
            KMAAS_OPERATORS_FILE: this.operators.setFile,
            LOG_LEVEL: this.opts.logLevel ?? 'info',
            ...this.opts.nodeEnv,
          },
        }),
      );
    }
    await Promise.all(this.secrets.nodes.map((n) => this.startNode(n.id, true)));
    this.coordinators.length = 0;
    for (let i = 0; i < (this.opts.coordinators ?? 1); i++) {
      const nodes = await Promise.all(
        this.secrets.nodes.map(async (n) => ({
          id: n.id,
          url: this.opts.nodeUrl
            ? await this.opts.nodeUrl(i, { id: n.id, port: n.port })
            : `ws://127.0.0.1:${n.port}/v1/ws`,
        })),
      );
      const name = i === 0 ? 'coordinator' : `coordinator-${i + 1}`;
      this.coordinators.push(
        new ServiceProcess({
          name,
          entry: join(ROOT, 'coordinator', 'main.ts'),
          logFile: join(this.dir, 'logs', `${name}.log`),
          env: {
            KMAAS_COORDINATOR_HOST: '127.0.0.1',
            KMAAS_COORDINATOR_PORT: '0',
            REDIS_URL: this.redis.url,
            KMAAS_REDIS_PREFIX: this.secrets.redisPrefix,
            KMAAS_NODES: JSON.stringify(nodes),
            KMAAS_CLUSTER_TOKEN: this.secrets.clusterToken,
            KMAAS_ADMIN_TOKEN: this.secrets.adminToken,
            KMAAS_NODE_TIMEOUT_MS: String(this.opts.nodeTimeoutMs ?? 2000),
            ...this.oidcEnv,
            LOG_LEVEL: this.opts.logLevel ?? 'info',
            ...(this.opts.corsOrigins?.length
              ? { KMAAS_CORS_ORIGINS: this.opts.corsOrigins.join(',') }
              : {}),
            ...this.opts.coordinatorEnv,
          },
        }),
      );
    }
    this.coordinator = this.coordinators[0]!;
    await Promise.all(this.coordinators.map((c) => c.start()));
    const file: ClusterFile = {
      url: this.url,
      adminToken: this.secrets.adminToken,
      pins: this.pinsFile,
      issuer: this.issuer,
      devUsers: [...this.devUsers],
      operators: this.operators.setFile,
      operatorKeys: this.operators.keyFiles,
      committee: this.committeeIds,
      spareNodes: this.spareIds,
    };
    writeFileSync(this.clusterFile, JSON.stringify(file, null, 2), { mode: 0o600 });
    this.recordPids();
    await this.waitForNodes();
  }

  /**
   * Until every coordinator is connected to every node (or 30 s have passed): the cluster is ready
   * for proposals, whose committee and cluster id come from the nodes' status, only then.
   */
  async waitForNodes(timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    const ready = new Set<number>();
    while (Date.now() < until && ready.size < this.coordinators.length) {
      for (let i = 0; i < this.coordinators.length; i++) {
        if (ready.has(i)) continue;
        try {
          const res = await fetch(`${this.coordinatorUrl(i)}/v1/status`);
          const status = (await res.json()) as { nodes?: { connected?: boolean }[] };
          if (status.nodes?.length && status.nodes.every((n) => n.connected === true)) {
            ready.add(i);
          }
        } catch {
          // Not answering yet.
        }
      }
      if (ready.size < this.coordinators.length) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  /**
   * The identity provider, first: its issuer goes into every node's and the coordinator's
   * settings. It keeps its port across runs when it can (the issuer then stays the same), and
   * its signing keys always (idp-keys.json, mode 600).
   */
  private async startIdp(): Promise<void> {
    const usersFile = join(this.dir, 'idp-users.json');
    writeFileSync(usersFile, JSON.stringify(this.secrets.idp.users, null, 2), { mode: 0o600 });
    this.idp = new ServiceProcess({
      name: 'idp',
      entry: join(ROOT, 'idp', 'main.ts'),
      logFile: join(this.dir, 'logs', 'idp.log'),
      env: {
        KMAAS_IDP_USERS_FILE: usersFile,
        KMAAS_IDP_KEYS_FILE: join(this.dir, 'idp-keys.json'),
        // The default one always: devLogin (CLI, tests, bench) signs in through it.
        KMAAS_IDP_REDIRECT_URIS: [
          ...new Set([DEFAULT_REDIRECT_URI, ...(this.opts.idpRedirectUris ?? [])]),
        ].join(','),
        KMAAS_IDP_RESOURCE: DEFAULT_RESOURCE,
        LOG_LEVEL: this.opts.logLevel ?? 'info',
      },
    });
    const saved = (await this.savedPortUsable(this.secrets.idp.port, 'the identity provider'))
      ? this.secrets.idp.port
      : 0;
    let port: number;
    try {
      port = await this.idp.start({ KMAAS_IDP_PORT: String(saved) });
    } catch (err) {
      if (saved === 0) throw err;
      port = await this.idp.start({ KMAAS_IDP_PORT: '0' });
    }
    if (port !== saved) {
      this.secrets.idp.port = port;
      this.saveSecrets();
    }
  }

  /**
   * Start (or restart) a node; it keeps the port it had, so the coordinator finds it again. Before
   * the coordinator runs (`mayMove`), a port taken by someone else since the last run is given up.
   */
  async startNode(id: number, mayMove = false, env: NodeJS.ProcessEnv = {}): Promise<void> {
    const entry = this.secrets.nodes.find((n) => n.id === id);
    const proc = this.nodes.get(id);
    if (!entry || !proc) throw new Error(`no node ${id}`);
    const saved =
      !mayMove || (await this.savedPortUsable(entry.port, `node ${id}`)) ? entry.port : 0;
    let port: number;
    try {
      port = await proc.start({ ...env, KMAAS_NODE_PORT: String(saved) });
    } catch (err) {
      if (!mayMove || saved === 0) throw err;
      port = await proc.start({ ...env, KMAAS_NODE_PORT: '0' });
    }
    if (entry.port !== port) {
      entry.port = port;
      this.saveSecrets();
    }
    this.recordPids();
  }

  /** Start the identity provider again on its port (after it died), so the issuer stays put. */
  async restartIdp(): Promise<void> {
    await this.idp.kill('SIGKILL');
    await this.idp.start({ KMAAS_IDP_PORT: String(this.secrets.idp.port) });
    this.recordPids();
  }

  /** Every process of the cluster, as the launchers' supervisor restarts them (supervisor.ts). */
  supervised(): Supervised[] {
    const nodes = [...this.nodes.entries()].map(([id, p]) => ({
      name: `node ${id}`,
      running: () => p.running,
      pid: () => p.pid,
      restart: () => this.startNode(id),
    }));
    const coordinators = this.coordinators.map((c, i) => ({
      name: this.coordinators.length > 1 ? `coordinator ${i + 1}` : 'coordinator',
      running: () => c.running,
      pid: () => c.pid,
      restart: () => this.restartCoordinator('SIGKILL', {}, i),
    }));
    const idp = this.idp;
    return [
      {
        name: 'identity provider',
        running: () => idp.running,
        pid: () => idp.pid,
        restart: () => this.restartIdp(),
      },
      ...nodes,
      ...coordinators,
    ];
  }

  nodeRunning(id: number): boolean {
    return this.nodes.get(id)?.running ?? false;
  }

  /**
   * Stop the coordinator (`signal`, SIGKILL for a crash) and start it again on the same port, so
   * that clients keep their URL. Its jobs live in Redis: a stalled one is taken up again. `env`
   * adds settings for this start only (a test: KMAAS_REFRESH_PROPOSAL_FILE).
   */
  async restartCoordinator(
    signal: NodeJS.Signals = 'SIGTERM',
    env: NodeJS.ProcessEnv = {},
    index = 0,
  ): Promise<void> {
    const c = this.coordinators[index];
    if (!c) throw new Error(`no coordinator ${index}`);
    const port = c.port;
    await c.kill(signal);
    await c.start({ ...env, KMAAS_COORDINATOR_PORT: String(port) });
    this.recordPids();
  }

  async killNode(id: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.nodes.get(id)?.kill(signal);
  }

  /** Stop a node: SIGTERM (a clean shutdown, the default) or SIGKILL (a crash). */
  async stopNode(id: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await this.killNode(id, signal);
  }

  /**
   * Delete a stopped node's data folder, as if its disk were lost: at its next start it makes
   * new identity keys and holds no shares (the repair test: `kmaas committee repair <id>`).
   */
  wipeNode(id: number): void {
    if (this.nodes.get(id)?.running) throw new Error(`node ${id} is running: stop it first`);
    const dir = this.nodeDataDir(id);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
  }

  async stop(): Promise<void> {
    const steps: Promise<unknown>[] = [
      ...this.coordinators.map((c) => c.stop()),
      ...[...this.nodes.values()].map((n) => n.stop()),
      this.idp?.stop(),
    ];
    const results = await Promise.allSettled(steps);
    if (this.opts.cleanRedisOnStop && this.redis) {
      await deletePrefix(this.redis.url, this.secrets.redisPrefix).catch(() => 0);
    }
    await this.redis?.stop();
    if (this.locked) rmSync(join(this.dir, 'cluster.pid'), { force: true });
    const failed = results.find((r) => r.status === 'rejected');
    if (failed && failed.status === 'rejected') throw failed.reason;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** cluster.pid's lines, `<pid> <what>`: the launcher first (a bare pid, as older runs wrote it). */
function readPidFile(file: string): { pid: number; what: string }[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .map((line, i) => {
      const [pid = '', ...what] = line.split(' ');
      return { pid: Number(pid), what: what.join(' ') || (i === 0 ? 'launcher' : '?') };
    })
    .filter((p) => Number.isInteger(p.pid) && p.pid > 0);
}

/** Whether `pid` runs one of our entry points; true where /proc cannot tell. */
function runsOurs(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('main.ts');
  } catch {
    return !existsSync('/proc');
  }
}

/** Whether nothing listens on 127.0.0.1:`port`. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}
