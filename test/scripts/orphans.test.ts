/**
 * `npm run cluster` killed with SIGKILL (no exit hook runs) takes its identity provider, nodes and
 * coordinator with it (scripts/lib/child.ts, shared/exit-with-parent.ts), and the next run starts
 * on the same ports. A run that finds processes of an earlier one still alive refuses to start
 * and names them, instead of starting a second cluster on the same databases.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { ROOT } from '../../scripts/lib/child.ts';
import { deletePrefix } from '../../scripts/lib/redis.ts';
import { LOCK_FILE } from '../../shared/data-lock.ts';

interface Launcher {
  child: ChildProcess;
  out: () => string;
  exit: Promise<number | null>;
  ready: Promise<void>;
}

/**
 * `npm run cluster` as npm runs it: the launcher under a `sh -c` that stays (the `; true`), under
 * a stand-in for npm (`viaNpm`), whose SIGKILL leaves the shell and the launcher re-parented.
 */
function launch(dir: string, viaNpm = false): Launcher {
  const args = ['--import', 'tsx', join(ROOT, 'scripts', 'cluster.ts'), '--data', dir];
  const command = [process.execPath, ...args, '--nodes', '3'];
  const npm = `const c = require('node:child_process').spawn('sh', ['-c', ${JSON.stringify(
    command.map((a) => `'${a}'`).join(' ') + '; true',
  )}], { stdio: 'inherit' }); c.on('exit', (code) => process.exit(code ?? 1));`;
  const child = viaNpm
    ? spawn(process.execPath, ['-e', npm], {
        cwd: ROOT,
        env: { ...process.env, LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
    : spawn(command[0]!, command.slice(1), {
        cwd: ROOT,
        env: { ...process.env, LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (out.includes('\nready.')) {
        clearInterval(timer);
        resolve();
      }
    }, 100);
    void exit.then((code) => {
      clearInterval(timer);
      reject(new Error(`launcher exited (${code}) before ready:\n${out}`));
    });
  });
  return { child, out: () => out, exit, ready };
}

/** cluster.pid: `<pid> <what>` lines, the launcher first. */
function pidFile(dir: string): { pid: number; what: string }[] {
  return readFileSync(join(dir, 'cluster.pid'), 'utf8')
    .trim()
    .split('\n')
    .map((line) => {
      const [pid = '', ...what] = line.split(' ');
      return { pid: Number(pid), what: what.join(' ') };
    });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function allGone(pids: number[], withinMs: number): Promise<number[]> {
  const until = Date.now() + withinMs;
  let left = pids.filter(alive);
  while (left.length > 0 && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    left = left.filter(alive);
  }
  return left;
}

describe('launcher killed: no orphaned cluster processes', function () {
  this.timeout(180_000);
  let dir: string;
  const launched: Launcher[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-orphans-'));
  });
  after(async () => {
    for (const l of launched) if (l.child.exitCode === null) l.child.kill('SIGTERM');
    await Promise.all(launched.map((l) => l.exit));
    const secrets = join(dir, 'secrets.json');
    if (existsSync(secrets)) {
      const { redisPrefix } = JSON.parse(readFileSync(secrets, 'utf8')) as { redisPrefix: string };
      const url = /redis\s+(redis:\/\/\S+)/.exec(launched[0]?.out() ?? '')?.[1];
      if (url) await deletePrefix(url, redisPrefix).catch(() => 0);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('SIGKILL of the launcher takes the identity provider, the nodes and the coordinator down', async () => {
    const first = launch(dir);
    launched.push(first);
    await first.ready;
    const procs = pidFile(dir);
    expect(procs.map((p) => p.what)).to.deep.equal([
      'launcher',
      'identity provider',
      'node 1',
      'node 2',
      'node 3',
      'coordinator',
    ]);
    const ports = JSON.parse(readFileSync(join(dir, 'secrets.json'), 'utf8')) as {
      nodes: { port: number }[];
    };
    first.child.kill('SIGKILL');
    await first.exit;
    const left = await allGone(
      procs.slice(1).map((p) => p.pid),
      5000,
    );
    expect(left, 'still running 5 s after the launcher was killed').to.deep.equal([]);
    for (const n of [1, 2, 3]) {
      expect(existsSync(join(dir, `node-${n}`, LOCK_FILE)), `node ${n} released its lock`).to.equal(
        false,
      );
    }

    // The next run finds every saved port free again: the same nodes on the same ports.
    const second = launch(dir);
    launched.push(second);
    await second.ready;
    const again = JSON.parse(readFileSync(join(dir, 'secrets.json'), 'utf8')) as typeof ports;
    expect(again.nodes.map((n) => n.port)).to.deep.equal(ports.nodes.map((n) => n.port));
  });

  it('SIGKILL of the npm that ran it under sh -c: the launcher notices and stops the cluster', async () => {
    const own = mkdtempSync(join(tmpdir(), 'kmaas-orphans-npm-'));
    try {
      const npm = launch(own, true);
      await npm.ready;
      const procs = pidFile(own);
      npm.child.kill('SIGKILL');
      await npm.exit;
      // The launcher polls once a second, then stops every process as on SIGTERM.
      const left = await allGone(
        procs.map((p) => p.pid),
        15_000,
      );
      expect(left, `still running after npm was killed:\n${npm.out()}`).to.deep.equal([]);
      const secrets = JSON.parse(readFileSync(join(own, 'secrets.json'), 'utf8')) as {
        redisPrefix: string;
      };
      const url = /redis\s+(redis:\/\/\S+)/.exec(npm.out())?.[1];
      if (url) await deletePrefix(url, secrets.redisPrefix).catch(() => 0);
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });

  it('a run that finds processes of an earlier one alive refuses, naming the folder and pids', async () => {
    const running = launched[1];
    if (!running) throw new Error('the first test did not start a second cluster');
    const procs = pidFile(dir);
    // As if the launcher had died and left its processes running (an older version did).
    const dead = spawnSync('true').pid;
    writeFileSync(
      join(dir, 'cluster.pid'),
      [`${dead} launcher`, ...procs.slice(1).map((p) => `${p.pid} ${p.what}`)].join('\n') + '\n',
    );
    const third = launch(dir);
    launched.push(third);
    expect(await third.exit).to.equal(1);
    expect(third.out()).to.contain(`processes of an earlier run on ${dir} are still running`);
    for (const p of procs.slice(1)) expect(third.out()).to.contain(`pid ${p.pid}`);
    // The running cluster was left alone.
    expect(procs.slice(1).every((p) => alive(p.pid))).to.equal(true);
    expect(existsSync(join(dir, 'node-1', LOCK_FILE))).to.equal(true);

    running.child.kill('SIGTERM');
    await running.exit;
    expect(
      await allGone(
        procs.slice(1).map((p) => p.pid),
        10_000,
      ),
    ).to.deep.equal([]);
  });
});
