/**
 * A small fixed pool of worker threads that check node answers (coordinator/verify-answer.ts) off
 * the event loop. A 256-element answer takes about 130 ms of CPU to check; done inline, a few of
 * them in a row stall every socket, timer and heartbeat of the coordinator, which then blames the
 * nodes for its own delay. With the checks here, the event loop only routes messages.
 *
 *   evaluate -> pool    verify(task): queued; small checks overtake large ones, by a bounded amount
 *   pool -> worker      { id, task }, one task per worker at a time
 *   worker -> pool      { ready: true } once; { id, result } per task
 *
 * A worker that dies fails the task it was running with ERR_INTERNAL and is replaced at once; one
 * that dies before it ever became ready (a broken install) also fails everything queued, and is
 * replaced after a growing pause, so a check never waits on a worker that cannot start. Size 0
 * checks inline, on the event loop. close() is idempotent and fails whatever is still pending.
 *
 * Workers load TypeScript through tsx, as the coordinator itself does. Node 20 does not carry the
 * main thread's `--import tsx` hooks into a worker, nor apply them from a worker's execArgv, so
 * each worker registers tsx itself before it imports its module.
 */
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { KmaasError } from '../shared/errors.ts';
import type { Logger } from './logger.ts';
import { verifyAnswer, type VerifyResult, type VerifyTask } from './verify-answer.ts';

/** Queue handicap per element: a 1-element check overtakes a 256-element one queued < 0.5 s ago. */
const HANDICAP_MS_PER_ELEMENT = 2;
/** Pauses before replacing a worker that died while starting: doubling from the first to the cap. */
const RESTART_FIRST_MS = 100;
const RESTART_MAX_MS = 5000;

const TSX_API = import.meta.resolve('tsx/esm/api');

export interface VerifyPoolOptions {
  /** Worker threads; 0 checks inline. */
  size: number;
  logger: Logger;
  /** The worker's module. Tests substitute one that misbehaves. */
  workerUrl?: URL;
}

interface Job {
  task: VerifyTask;
  priority: number;
  resolve(): void;
  reject(err: KmaasError): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

interface Slot {
  index: number;
  worker: Worker;
  ready: boolean;
  job: Job | null;
  jobId: number;
}

type WorkerMessage = { ready: true } | { id: number; result: VerifyResult };

function internal(message: string): KmaasError {
  return new KmaasError('ERR_INTERNAL', message);
}

export class VerifyPool {
  readonly size: number;
  readonly #log: Logger;
  readonly #url: URL;
  readonly #slots: (Slot | null)[] = [];
  readonly #queue: Job[] = [];
  readonly #restartTimers = new Set<NodeJS.Timeout>();
  #restartDelay = RESTART_FIRST_MS;
  #seq = 0;
  #closing: Promise<void> | null = null;

  constructor(opts: VerifyPoolOptions) {
    this.size = opts.size;
    this.#log = opts.logger.child({ component: 'verify-pool' });
    this.#url = opts.workerUrl ?? new URL('./verify-worker.ts', import.meta.url);
    for (let i = 0; i < this.size; i++) this.#slots.push(this.#spawn(i));
  }

  /** Live worker threads (fewer than size only while one is being replaced). */
  get threads(): number {
    return this.#slots.filter((s) => s !== null).length;
  }

  /**
   * Check one node answer. Resolves when it is valid; rejects with the KmaasError that names what
   * is wrong (ERR_PROOF_INVALID, ERR_INVALID_POINT, ...), or ERR_INTERNAL when the check itself
   * could not run. An aborted `signal` drops the check if it has not started.
   */
  verify(task: VerifyTask, signal?: AbortSignal): Promise<void> {
    if (this.#closing) return Promise.reject(internal('proof check refused: the pool is closed'));
    if (signal?.aborted) return Promise.reject(internal('proof check cancelled'));
    if (this.size === 0) {
      const result = verifyAnswer(task);
      return result.ok ? Promise.resolve() : Promise.reject(KmaasError.fromBody(result.error));
    }
    return new Promise<void>((resolve, reject) => {
      const job: Job = {
        task,
        priority: performance.now() + HANDICAP_MS_PER_ELEMENT * task.evaluated.length,
        resolve,
        reject,
        signal,
        onAbort: undefined,
      };
      if (signal) {
        job.onAbort = () => {
          const at = this.#queue.indexOf(job);
          if (at === -1) return;
          this.#queue.splice(at, 1);
          this.#settle(job, internal('proof check cancelled'));
        };
        signal.addEventListener('abort', job.onAbort, { once: true });
      }
      this.#queue.push(job);
      this.#pump();
    });
  }

  /** Stop every worker and fail what is pending. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    for (const timer of this.#restartTimers) clearTimeout(timer);
    this.#restartTimers.clear();
    for (const job of this.#queue.splice(0)) this.#settle(job, internal('verify pool closed'));
    const workers: Worker[] = [];
    for (const [i, slot] of this.#slots.entries()) {
      if (!slot) continue;
      this.#slots[i] = null;
      if (slot.job) this.#settle(slot.job, internal('verify pool closed'));
      slot.job = null;
      workers.push(slot.worker);
    }
    await Promise.allSettled(workers.map((w) => w.terminate()));
  }

  #spawn(index: number): Slot {
    const boot =
      `import(${JSON.stringify(TSX_API)})` +
      `.then(({ register }) => { register(); return import(${JSON.stringify(this.#url.href)}); });`;
    const worker = new Worker(boot, { eval: true, name: `kmaas-verify-${index}` });
    const slot: Slot = { index, worker, ready: false, job: null, jobId: 0 };
    worker.on('message', (message: WorkerMessage) => this.#onMessage(slot, message));
    worker.on('error', (err) => {
      this.#log.error({ err, worker: index }, 'verify worker failed');
    });
    worker.on('exit', (code) => this.#onExit(slot, code));
    return slot;
  }

  #onMessage(slot: Slot, message: WorkerMessage): void {
    if (this.#slots[slot.index] !== slot) return;
    if ('ready' in message) {
      slot.ready = true;
      this.#restartDelay = RESTART_FIRST_MS;
      return;
    }
    const job = slot.job;
    if (!job || message.id !== slot.jobId) return;
    slot.job = null;
    this.#settle(job, message.result.ok ? null : KmaasError.fromBody(message.result.error));
    this.#pump();
  }

  #onExit(slot: Slot, code: number): void {
    if (this.#slots[slot.index] !== slot) return;
    this.#slots[slot.index] = null;
    const lost = slot.job;
    slot.job = null;
    if (lost) this.#settle(lost, internal('proof check failed: the verify worker stopped'));
    if (slot.ready) {
      this.#log.error({ worker: slot.index, exitCode: code }, 'verify worker stopped; replaced');
      this.#slots[slot.index] = this.#spawn(slot.index);
      this.#pump();
      return;
    }
    // It never started: likely it never will, so nothing may wait for it.
    for (const job of this.#queue.splice(0)) {
      this.#settle(job, internal('proof check failed: no verify worker could start'));
    }
    const delay = this.#restartDelay;
    this.#restartDelay = Math.min(RESTART_MAX_MS, delay * 2);
    this.#log.error(
      { worker: slot.index, exitCode: code, retryInMs: delay },
      'verify worker failed to start',
    );
    const timer = setTimeout(() => {
      this.#restartTimers.delete(timer);
      if (this.#closing) return;
      this.#slots[slot.index] = this.#spawn(slot.index);
      this.#pump();
    }, delay);
    this.#restartTimers.add(timer);
  }

  /** Hand queued jobs to idle workers, most urgent first. */
  #pump(): void {
    for (const slot of this.#slots) {
      if (this.#queue.length === 0) return;
      if (!slot || slot.job) continue;
      const job = this.#takeNext();
      slot.job = job;
      slot.jobId = ++this.#seq;
      slot.worker.postMessage({ id: slot.jobId, task: job.task });
    }
  }

  #takeNext(): Job {
    let best = 0;
    for (let i = 1; i < this.#queue.length; i++) {
      if (this.#queue[i]!.priority < this.#queue[best]!.priority) best = i;
    }
    return this.#queue.splice(best, 1)[0]!;
  }

  #settle(job: Job, err: KmaasError | null): void {
    if (job.onAbort) job.signal?.removeEventListener('abort', job.onAbort);
    if (err) job.reject(err);
    else job.resolve();
  }
}
