/**
 * Entry point of the `kmaas` command (cli/kmaas.mjs loads it through tsx). Runs one command line
 * and sets the exit status; on SIGINT or SIGTERM it removes any output still being written.
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

process.exitCode = await run(process.argv.slice(2), {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
  cwd: process.cwd(),
  home: homedir(),
});
