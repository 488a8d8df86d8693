/**
 * Long ceremony work (dealing and receiving a chunk of up to RESHARE_CHUNK keys costs tens of
 * scalar multiplications per key) runs on the node's one event loop, beside evaluations, which
 * are the hot path (DESIGN.md section 7). A chunk computed in one go holds evaluations back for
 * seconds on a busy machine, long enough for the coordinator to time the node out. So the
 * per-key loops call a pause that gives the event loop back, letting waiting evaluations in,
 * whenever they have run longer than a small budget.
 */
import { performance } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';

/** A function awaited between units of long work; resolves at once or after one event-loop turn. */
export type Pause = () => Promise<void>;

/** No pause at all: the work runs in one go (tests that want it synchronous in effect). */
export const noPause: Pause = () => Promise.resolve();

/**
 * A pause that yields to the event loop (after its poll phase, so that sockets are read) once
 * `budgetMs` of work have run since the last yield.
 */
export function pauseEvery(budgetMs = 10): Pause {
  let since = performance.now();
  return async () => {
    if (performance.now() - since < budgetMs) return;
    await nextTurn();
    since = performance.now();
  };
}
