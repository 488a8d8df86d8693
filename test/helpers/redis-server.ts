/**
 * A private redis-server for tests that flush, stop, hang or restart Redis: on a free loopback
 * port of its own (never the shared one at 6379), without persistence, so a restart comes back
 * empty, as a Redis without a disk does. Restarts keep the port, so clients reconnect by
 * themselves.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { freePort, redisAnswers } from '../../scripts/lib/redis.ts';

export class PrivateRedis {
  #proc: ChildProcess | null = null;

  private constructor(readonly port: number) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<PrivateRedis> {
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    return redis;
  }

  /** Start (again) on the same port; resolves once it answers PING. */
  async start(): Promise<void> {
    if (this.#proc) throw new Error('redis-server is running already');
    const proc = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    );
    this.#proc = proc;
    proc.once('exit', () => {
      if (this.#proc === proc) this.#proc = null;
    });
    for (let i = 0; i < 100; i++) {
      if (await redisAnswers(this.url)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`redis-server on port ${this.port} did not answer`);
  }

  /** Stop it: SIGTERM (a clean stop) or SIGKILL (a crash). */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const proc = this.#proc;
    if (!proc) return;
    const gone = once(proc, 'exit');
    // A paused server would only act on SIGTERM once continued.
    proc.kill('SIGCONT');
    proc.kill(signal);
    await gone;
  }

  /** SIGSTOP: it keeps its connections and answers nothing (a hung Redis). */
  pause(): void {
    this.#proc?.kill('SIGSTOP');
  }

  resume(): void {
    this.#proc?.kill('SIGCONT');
  }
}
