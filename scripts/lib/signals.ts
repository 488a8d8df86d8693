import { readFileSync } from 'node:fs';

/**
 * The parent pid of `pid` from /proc (Linux), or undefined where there is no /proc. Needed
 * because npm runs a script through `sh -c`, which outlives a killed npm: only the shell's own
 * parent changes then, never this process's.
 */
function parentOf(pid: number): number | undefined {
  try {
    // /proc/<pid>/stat: "pid (comm) state ppid ...", comm may hold spaces and parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) && ppid > 0 ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/** Ctrl-C or SIGTERM during a script: stop the cluster it started, then exit non-zero. */
export function stopOnSignal(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string) => {
    if (stopping) process.exit(1);
    stopping = true;
    console.error(`${signal}: stopping the cluster...`);
    void stop()
      .then(() => console.error('stopped.'))
      .finally(() => process.exit(130));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  process.on('SIGHUP', handler);
  // `npm run x &` then `kill -9 <npm pid>` ends npm but not this process: when this process, or
  // the shell npm ran it through, is re-parented, the launcher is gone and so should the cluster
  // be. Init (pid 1) is never watched as a grandparent: a script started by it has no npm.
  const parent = process.ppid;
  const grandparent = parentOf(parent);
  const watchGrandparent = grandparent !== undefined && grandparent > 1;
  const watch = setInterval(() => {
    if (process.ppid !== parent) return handler('launcher gone');
    if (!watchGrandparent) return;
    const now = parentOf(parent);
    if (now !== undefined && now !== grandparent) handler('launcher gone');
  }, 1000);
  watch.unref();
}
