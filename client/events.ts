/**
 * What the SDK reports about trust decisions it took on its own, through the optional `onEvent`
 * callback. Library code never logs; an application (the CLI) decides what to show. Events carry
 * public values only.
 */
import type { Rejection } from '../shared/voprf-client.ts';

export type ClientEvent =
  /** A group key was pinned on first use (`trustOnFirstUse`), or explicitly by pinKeyPackage. */
  | {
      type: 'key-pinned';
      tenant: string;
      version: number;
      groupKey: string;
      reason: 'trust-on-first-use' | 'explicit';
    }
  /** Nodes whose answers were refused although the derivation still succeeded. */
  | { type: 'nodes-rejected'; tenant: string; version: number; rejected: Rejection[] };

export type EventHandler = (event: ClientEvent) => void;
