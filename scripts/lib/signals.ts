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
  // `npm run x &` then `kill <npm pid>` ends npm but not this process: when it finds itself
  // re-parented, its launcher is gone and so should the cluster be.
  const parent = process.ppid;
  const watch = setInterval(() => {
    if (process.ppid !== parent) handler('launcher gone');
  }, 1000);
  watch.unref();
}
