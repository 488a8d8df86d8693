/**
 * Local clusters only (scripts/lib/child.ts sets KMAAS_EXIT_WITH_PARENT=1 and gives the process
 * a stdin pipe it never writes to): when that pipe reaches end of file, the launcher is gone (the
 * system closes its end even after a SIGKILL, which runs no cleanup), and the process stops as it
 * would on SIGTERM instead of living on as an orphan that holds its ports and data folder.
 * Without the variable nothing is watched: production processes are unaffected.
 */
export const EXIT_WITH_PARENT_ENV = 'KMAAS_EXIT_WITH_PARENT';

/** Call `stop` once when stdin closes, if KMAAS_EXIT_WITH_PARENT=1. Returns whether it watches. */
export function exitWithParent(stop: () => void): boolean {
  if (process.env[EXIT_WITH_PARENT_ENV] !== '1') return false;
  // Not passed on to a process this one starts, whose stdin is no such pipe.
  delete process.env[EXIT_WITH_PARENT_ENV];
  let done = false;
  const gone = () => {
    if (done) return;
    done = true;
    stop();
  };
  const stdin = process.stdin;
  stdin.on('data', () => undefined);
  stdin.once('end', gone);
  stdin.once('close', gone);
  stdin.once('error', gone);
  // The watch alone never keeps the process alive.
  (stdin as { unref?: () => void }).unref?.();
  return true;
}
