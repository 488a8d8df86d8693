/**
 * A service process (share node or coordinator) run as a real child: `node --import tsx entry`.
 * Its JSON log lines go to a log file; `start` resolves once the process logs `listening` with
 * its port, and rejects with the tail of its log if it exits or stays silent first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { EXIT_WITH_PARENT_ENV } from '../../shared/exit-with-parent.ts';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface ChildOptions {
  name: string;
  entry: string;
  env: NodeJS.ProcessEnv;
  logFile: string;
  startTimeoutMs?: number;
}

/**
 * Every child still running when this process exits is killed with it, so a launcher that dies
 * (or is stopped with a signal the script handles by exiting) leaves no orphaned nodes behind.
 * That hook does not run when this process is SIGKILLed: for that each child also gets a stdin
 * pipe nobody writes to and KMAAS_EXIT_WITH_PARENT=1, and stops by itself when the pipe reaches
 * end of file, which the system makes happen however this process ends
 * (shared/exit-with-parent.ts).
 */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export class ServiceProcess {
  readonly name: string;
  private proc: ChildProcess | undefined;
  private log: WriteStream | undefined;
  private exited: Promise<number | null> = Promise.resolve(null);
  private tail: string[] = [];
  port = 0;

  constructor(private readonly opts: ChildOptions) {
    this.name = opts.name;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Start with the given environment additions; resolves with the port it listens on. */
  async start(extraEnv: NodeJS.ProcessEnv = {}): Promise<number> {
    if (this.running) throw new Error(`${this.name} is already running`);
    this.log = createWriteStream(this.opts.logFile, { flags: 'a' });
    const proc = spawn(process.execPath, ['--import', 'tsx', this.opts.entry], {
      cwd: ROOT,
      env: { ...process.env, ...this.opts.env, ...extraEnv, [EXIT_WITH_PARENT_ENV]: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.proc = proc;
    // Never written to and never closed from here: its end of file means this process is gone.
    proc.stdin.on('error', () => undefined);
    live.add(proc);
    proc.once('exit', () => live.delete(proc));
    this.tail = [];
    const log = this.log;
    proc.stderr.pipe(log, { end: false });
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
    const lines = createInterface({ input: proc.stdout });
    const ready = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `${this.name} did not start within ${this.opts.startTimeoutMs ?? 30000} ms\n${this.tail.join('\n')}`,
            ),
          ),
        this.opts.startTimeoutMs ?? 30000,
      );
      lines.on('line', (line) => {
        log.write(line + '\n');
        this.tail.push(line);
        if (this.tail.length > 20) this.tail.shift();
        try {
          const entry = JSON.parse(line) as { msg?: string; port?: number };
          if (entry.msg === 'listening' && typeof entry.port === 'number') {
            clearTimeout(timer);
            resolve(entry.port);
          }
        } catch {
          // not a JSON line: kept in the log as it is
        }
      });
      proc.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(
          new Error(
            `${this.name} exited (${signal ?? code}) before listening\n${this.tail.join('\n')}`,
          ),
        );
      });
    });
    this.port = await ready;
    return this.port;
  }

  /** Send a signal; for SIGKILL and SIGTERM, wait until the process is gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.running) return;
    this.proc!.kill(signal);
    if (signal === 'SIGKILL' || signal === 'SIGTERM') {
      const timer = setTimeout(() => this.proc?.kill('SIGKILL'), 10000);
      await this.exited;
      clearTimeout(timer);
    }
  }

  async stop(): Promise<void> {
    await this.kill('SIGTERM');
    await new Promise<void>((resolve) => (this.log ? this.log.end(resolve) : resolve()));
  }
}
