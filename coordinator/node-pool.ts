/**
 * All node links of one coordinator, and the order in which to ask them. A node that failed
 * recently goes behind every node that did not; among equals the one with less of our work open
 * (blinded elements sent or waiting) goes first, so that concurrent evaluations spread over the
 * committee instead of queueing at the same t nodes; then the lower heartbeat latency wins, then
 * the lower id so that the order is stable.
 */
import type { NodeEndpoint } from './config.ts';
import type { Logger } from './logger.ts';
import { NodeLink, type NodeLinkOptions, type NodeLinkState } from './node-link.ts';

export type PoolOptions = Omit<NodeLinkOptions, 'id' | 'url' | 'logger'>;

export class NodePool {
  readonly #links = new Map<number, NodeLink>();

  constructor(endpoints: readonly NodeEndpoint[], options: PoolOptions, logger: Logger) {
    for (const { id, url } of endpoints) {
      this.#links.set(id, new NodeLink({ ...options, id, url, logger }));
    }
  }

  start(): void {
    for (const link of this.#links.values()) link.start();
  }

  get(id: number): NodeLink | undefined {
    return this.#links.get(id);
  }

  /** Configured node ids, ascending. */
  ids(): number[] {
    return [...this.#links.keys()].sort((a, b) => a - b);
  }

  all(): NodeLink[] {
    return this.ids().map((id) => this.#links.get(id)!);
  }

  connected(): NodeLink[] {
    return this.all().filter((l) => l.connected);
  }

  /**
   * Connected links, best first: fewest recent failures, then least open work, then lowest
   * latency, then lowest id.
   */
  healthy(): NodeLink[] {
    return this.connected()
      .map((link) => ({
        link,
        failures: link.recentFailures(),
        load: link.load(),
        latency: link.latency(),
      }))
      .sort(
        (a, b) =>
          a.failures - b.failures ||
          a.load - b.load ||
          a.latency - b.latency ||
          a.link.id - b.link.id,
      )
      .map((x) => x.link);
  }

  states(): NodeLinkState[] {
    return this.all().map((l) => l.state());
  }

  /** `listener` runs each time any link (re)connects. */
  onUp(listener: (link: NodeLink) => void): void {
    for (const link of this.#links.values()) link.onUp(() => listener(link));
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#links.values()].map((l) => l.close()));
  }
}
