/**
 * Entry point of the `kmaas` command (cli/kmaas.mjs loads it through tsx). Runs one command line
 * and sets the exit status; on SIGINT or SIGTERM (or a closed stdout) it removes any output still
 * being written.
 */
import { rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { pendingTemps } from './atomic.ts';
import { run } from './program.ts';

for (const [signal, status] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
] as const) {
  process.on(signal, () => {
    for (const tmp of pendingTemps) rmSync(tmp, { force: true });
    process.exit(status);
  });
}

// A reader that goes away early (`kmaas --help | head`) ends the command quietly, with the status
// of a SIGPIPE (128 + 13) if it was not done yet.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    for (const tmp of pendingTemps) rmSync(tmp, { force: true });
    process.exit(process.exitCode ?? 141);
  });
}

process.exitCode = await run(process.argv.slice(2), {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
  cwd: process.cwd(),
  home: homedir(),
});
