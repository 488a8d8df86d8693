/**
 * Stall the event loop, as a coordinator busy with synchronous work would be. Tests use it to put
 * a reply in a socket and let timers expire before anything can read it.
 */
export function stallEventLoop(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // Busy: nothing else runs on this thread until the time is up.
  }
}
