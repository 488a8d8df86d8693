/**
 * For the launchers that run a cluster until Ctrl-C (`npm run cluster`, `npm start`): a process
 * of the cluster that dies, by a crash or a kill, is reported on the terminal and started again,
 * on the port it had, so the coordinator and the clients find it where they left it. A process
 * that keeps dying is given up on after a few tries a minute, and said so, rather than restarted
 * in a loop. Deleting a node's data folder and killing the node is thus how a lost disk is played
 * by hand: it comes back empty, with new identity keys, for `kmaas committee repair`.
 *
 * Tests and the chaos run kill processes on purpose and keep them down: they do not use this.
 */

/** One process as the supervisor sees it. */
export interface Supervised {
  name: string;
  running(): boolean;
  pid(): number | undefined;
  restart(): Promise<void>;
}

export interface SupervisorOptions {
  /** How often every process is looked at. */
  everyMs?: number;
  /** Restarts of one process within a minute before it is given up on. */
  maxPerMinute?: number;
  /** The clock (ms); tests pass their own. */
  now?: () => number;
}

export class Supervisor {
  readonly #items: () => readonly Supervised[];
  readonly #say: (line: string) => void;
  readonly #everyMs: number;
  readonly #maxPerMinute: number;
  readonly #now: () => number;
  readonly #restarts = new Map<string, number[]>();
  readonly #busy = new Set<string>();
  readonly #givenUp = new Set<string>();
  #timer: NodeJS.Timeout | null = null;
  #stopped = false;

  constructor(
    items: () => readonly Supervised[],
    say: (line: string) => void,
    opts: SupervisorOptions = {},
  ) {
    this.#items = items;
    this.#say = say;
    this.#everyMs = opts.everyMs ?? 1000;
    this.#maxPerMinute = opts.maxPerMinute ?? 5;
    this.#now = opts.now ?? Date.now;
  }

  start(): void {
    if (this.#timer || this.#stopped) return;
    this.#timer = setInterval(() => void this.check(), this.#everyMs);
    this.#timer.unref();
  }

  /** Look at every process once; restarts the dead ones. Resolves when those restarts ended. */
  async check(): Promise<void> {
    if (this.#stopped) return;
    const dead = this.#items().filter(
      (p) => !p.running() && !this.#busy.has(p.name) && !this.#givenUp.has(p.name),
    );
    await Promise.all(dead.map((p) => this.#restart(p)));
  }

  async #restart(p: Supervised): Promise<void> {
    const now = this.#now();
    const recent = (this.#restarts.get(p.name) ?? []).filter((at) => now - at < 60_000);
    if (recent.length >= this.#maxPerMinute) {
      this.#givenUp.add(p.name);
      this.#say(
        `${p.name} died ${recent.length + 1} times within a minute: not restarting it; see its log`,
      );
      return;
    }
    this.#restarts.set(p.name, [...recent, now]);
    this.#busy.add(p.name);
    this.#say(`${p.name} is not running: starting it again`);
    try {
      await p.restart();
      if (!this.#stopped) this.#say(`${p.name} is back (pid ${p.pid() ?? '?'})`);
    } catch (err) {
      if (!this.#stopped) this.#say(`${p.name} failed to start: ${(err as Error).message}`);
    } finally {
      this.#busy.delete(p.name);
    }
  }

  /** No more restarts (call before stopping the cluster). Idempotent. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
