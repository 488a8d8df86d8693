/** A share node as a real process (nodes/main.ts), for the tests of its start, stop and disk. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../../scripts/lib/child.ts';

export interface NodeRun {
  child: ChildProcess;
  /** Every JSON log line so far. */
  lines: Record<string, unknown>[];
  exit: Promise<number | null>;
  /** Resolves with the first line whose msg is `msg`; rejects if the process exits first. */
  waitFor(msg: string): Promise<Record<string, unknown>>;
}

/** Start nodes/main.ts with exactly `env` (and PATH), reading its log lines from stdout. */
export function startNodeProcess(env: Record<string, string>): NodeRun {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'nodes', 'main.ts')], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Record<string, unknown>[] = [];
  const waiters: [string, (line: Record<string, unknown>) => void][] = [];
  let buffered = '';
  child.stdout.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    let nl: number;
    while ((nl = buffered.indexOf('\n')) !== -1) {
      const line = JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>;
      buffered = buffered.slice(nl + 1);
      lines.push(line);
      for (const [msg, resolve] of waiters) if (line.msg === msg) resolve(line);
    }
  });
  const exit = new Promise<number | null>((resolve) =>
    child.once('exit', (code, signal) => {
      if (signal) process.stderr.write(`node process killed by ${signal}\n`);
      resolve(code);
    }),
  );
  return {
    child,
    lines,
    exit,
    waitFor: (msg) =>
      new Promise((resolve, reject) => {
        const found = lines.find((l) => l.msg === msg);
        if (found) return resolve(found);
        waiters.push([msg, resolve]);
        void exit.then((code) => reject(new Error(`exited with ${code} before "${msg}"`)));
      }),
  };
}

/** Every file of a folder, by name, as a SHA-256 digest. */
export function folderDigests(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) {
    out[name] = createHash('sha256')
      .update(readFileSync(join(dir, name)))
      .digest('hex');
  }
  return out;
}
