/** Ctrl-C or SIGTERM during a script: stop the cluster it started, then exit non-zero. */
export function stopOnSignal(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1);
    stopping = true;
    console.error(`${signal}: stopping the cluster...`);
    void stop().finally(() => process.exit(130));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}
