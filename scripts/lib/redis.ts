/**
 * Redis for local runs: the one at REDIS_URL when it answers; otherwise, when REDIS_URL was not
 * set, a private redis-server on a free port started here (no persistence), stopped with the
 * cluster. A clear error when neither is possible.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

export async function redisAnswers(url: string): Promise<boolean> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 1500,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() =>
        typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port')),
      );
    });
  });
}

export interface RedisHandle {
  url: string;
  stop(): Promise<void>;
}

export async function ensureRedis(url = process.env.REDIS_URL): Promise<RedisHandle> {
  const wanted = url ?? DEFAULT_REDIS_URL;
  if (await redisAnswers(wanted)) return { url: wanted, stop: () => Promise.resolve() };
  if (url !== undefined) {
    throw new Error(
      `Redis at REDIS_URL=${url} does not answer. Start it, or unset REDIS_URL to let the cluster start its own redis-server.`,
    );
  }
  return startRedisServer();
}

export interface RedisServerOptions {
  /** The port to listen on (a restart on the same one); default a free port. */
  port?: number;
  /** More redis-server arguments, after the defaults (a later one wins): persistence, say. */
  args?: string[];
}

/** A redis-server of our own: what `stop` does, and a crash on purpose (the chaos run). */
export interface RedisServer extends RedisHandle {
  port: number;
  /** Send `signal` (default SIGKILL) and wait until the process is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export async function startRedisServer(opts: RedisServerOptions = {}): Promise<RedisServer> {
  const port = opts.port ?? (await freePort());
  let proc: ChildProcess;
  try {
    proc = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        ...(opts.args ?? []),
      ],
      { stdio: 'ignore' },
    );
    await new Promise<void>((resolve, reject) => {
      proc.once('error', reject);
      proc.once('spawn', () => resolve());
    });
  } catch {
    throw new Error(
      `No Redis answers at ${DEFAULT_REDIS_URL} and redis-server could not be started. Install Redis (apt-get install redis-server) or set REDIS_URL.`,
    );
  }
  const local = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 50 && proc.exitCode === null && !(await redisAnswers(local)); i++)
    await new Promise((r) => setTimeout(r, 100));
  if (proc.exitCode !== null || !(await redisAnswers(local))) {
    throw new Error(`redis-server on port ${port} did not answer (port taken?)`);
  }
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise((r) => proc.once('exit', r));
    proc.kill(signal);
    await gone;
  };
  return { url: local, port, kill, stop: () => kill('SIGTERM') };
}

/** Delete every key under a prefix (each test run and each dev cluster owns one). */
export async function deletePrefix(url: string, prefix: string): Promise<number> {
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  let deleted = 0;
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
      cursor = next;
      if (keys.length) deleted += await client.del(...keys);
    } while (cursor !== '0');
  } finally {
    client.disconnect();
  }
  return deleted;
}
