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

export async function startRedisServer(): Promise<RedisHandle> {
  const port = await freePort();
  let proc: ChildProcess;
  try {
    proc = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
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
  for (let i = 0; i < 50 && !(await redisAnswers(local)); i++)
    await new Promise((r) => setTimeout(r, 100));
  if (!(await redisAnswers(local))) throw new Error(`redis-server on port ${port} did not answer`);
  return {
    url: local,
    stop: async () => {
      if (proc.exitCode !== null) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await gone;
    },
  };
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
