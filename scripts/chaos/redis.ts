/**
 * The chaos run's own redis-server, on a free port of its own, so that restarting and flushing it
 * touches no other Redis (never the shared one at 6379). It persists (append-only file in the
 * run's folder, fsync every second), as a production Redis would: a restart loses at most the
 * last second of writes, while a flush loses everything, which is what the two faults are for.
 */
import { mkdirSync } from 'node:fs';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisServer } from '../lib/redis.ts';

export class ChaosRedis {
  #server: RedisServer;
  readonly #args: string[];

  private constructor(server: RedisServer, args: string[]) {
    this.#server = server;
    this.#args = args;
  }

  static async start(dir: string): Promise<ChaosRedis> {
    mkdirSync(dir, { recursive: true });
    const args = ['--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec'];
    return new ChaosRedis(await startRedisServer({ args }), args);
  }

  get url(): string {
    return this.#server.url;
  }

  get port(): number {
    return this.#server.port;
  }

  /** SIGKILL: a crash, not a shutdown. */
  crash(): Promise<void> {
    return this.#server.kill('SIGKILL');
  }

  /** Start again on the same port, from its append-only file. */
  async restart(): Promise<void> {
    this.#server = await startRedisServer({ port: this.port, args: this.#args });
  }

  /** FLUSHALL on this private server: every key of every coordinator and of BullMQ is gone. */
  async flushAll(): Promise<void> {
    const client = new Redis(this.url, { maxRetriesPerRequest: 1, lazyConnect: true });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.flushall();
    } finally {
      client.disconnect();
    }
  }

  stop(): Promise<void> {
    return this.#server.stop();
  }
}
