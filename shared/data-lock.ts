/**
 * One process per data folder. A share node (or the identity provider) holds `kmaas.lock` in its
 * data folder while it runs: two processes on one node.db would both append to audit.jsonl from
 * their own idea of its head and break the chain (ERR_AUDIT_BROKEN at the next verify).
 *
 * The lock file is created exclusively and names its holder: pid and start time (the start time
 * from /proc where there is one, so a pid the system has since given to another process is not
 * taken for the holder). A second process finds the holder alive and refuses with
 * ERR_DATA_DIR_LOCKED, having written nothing. A lock whose holder is gone (a SIGKILL leaves it
 * behind) is stale: it is taken over, and the caller logs that. release() removes the file, only
 * while it still names this process.
 */
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KmaasError } from './errors.ts';

export const LOCK_FILE = 'kmaas.lock';
export const IDP_LOCK_FILE = 'idp.lock';

export interface LockHolder {
  pid: number;
  /** When the holder took the lock (ISO 8601). */
  started: string;
  /** The holder's start time in clock ticks since boot (/proc/<pid>/stat field 22), if known. */
  procStart?: string;
  /** What holds it: `node 3`, `identity provider`. */
  what?: string;
}

export interface DataLock {
  readonly file: string;
  /** The stale holder that was replaced, if any (for the caller's log line). */
  readonly tookOver: LockHolder | undefined;
  /** Remove the lock file if it still names this process. Idempotent. */
  release(): void;
}

/** Start time of `pid` in clock ticks since boot; undefined where /proc does not tell. */
export function procStartOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  } catch {
    return undefined;
  }
}

/** The lock file's holder, or undefined when there is no (readable) lock file. */
export function readLock(file: string): LockHolder | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const h = JSON.parse(text) as Partial<LockHolder>;
    if (typeof h.pid === 'number' && Number.isInteger(h.pid) && h.pid > 0) {
      return { ...h, pid: h.pid, started: String(h.started ?? '') };
    }
  } catch {
    // Not JSON: a torn write, treated as no holder.
  }
  return { pid: 0, started: '' };
}

/** Whether the process that wrote `holder` still runs (same pid, and same start time if known). */
export function holderAlive(holder: LockHolder): boolean {
  if (holder.pid <= 0 || holder.pid === process.pid) return false;
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (holder.procStart === undefined) return true;
  const now = procStartOf(holder.pid);
  return now === undefined || now === holder.procStart;
}

/**
 * Take the lock of `dir` (which must exist) for this process, or throw ERR_DATA_DIR_LOCKED when a
 * live process holds it. `what` names this process in the file (`node 3`); `name` is the lock
 * file's (the identity provider's, next to its keys in a folder it shares: `idp.lock`).
 */
export function acquireDataLock(dir: string, what: string, name = LOCK_FILE): DataLock {
  const file = join(dir, name);
  const procStart = procStartOf(process.pid);
  const mine: LockHolder = {
    pid: process.pid,
    started: new Date().toISOString(),
    ...(procStart !== undefined ? { procStart } : {}),
    what,
  };
  let tookOver: LockHolder | undefined;
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, JSON.stringify(mine) + '\n', { flag: 'wx', mode: 0o600 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw err;
    }
    const holder = readLock(file);
    if (holder && holderAlive(holder)) {
      throw new KmaasError(
        'ERR_DATA_DIR_LOCKED',
        `${dir} is in use by another process (pid ${holder.pid}${holder.what ? `, ${holder.what}` : ''}, since ${holder.started || '?'}): stop it first`,
        { dataDir: dir, pid: holder.pid },
      );
    }
    // Stale (its process is gone): remove it, unless another taker replaced it meanwhile, and
    // try again; of two takers racing, one's exclusive create fails.
    tookOver = holder;
    const again = readLock(file);
    if (again?.pid !== holder?.pid || again?.started !== holder?.started) continue;
    try {
      unlinkSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  let released = false;
  return {
    file,
    tookOver,
    release() {
      if (released) return;
      released = true;
      const now = readLock(file);
      if (now?.pid === mine.pid && now.started === mine.started) {
        try {
          unlinkSync(file);
        } catch {
          // Already gone.
        }
      }
    },
  };
}
