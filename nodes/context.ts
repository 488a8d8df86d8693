/**
 * What request handlers share: this node's identity, its store and in-memory keys, and the
 * sources of randomness (a parameter so tests can replay fixed values; default crypto RNG).
 */
import type { QuorumPolicy } from '../shared/proposal.ts';
import type { Rng } from '../shared/shamir.ts';
import type { AuditLog } from './audit-log.ts';
import type { NodeIdentity } from './identity.ts';
import type { Keyring } from './keyring.ts';
import type { ElementRateLimit } from './rate-limit.ts';
import type { EvaluationAuth } from '../shared/evaluation-auth.ts';
import type { NodeStore } from './store.ts';

export interface NodeContext {
  nodeId: number;
  store: NodeStore;
  keyring: Keyring;
  /** The node's identity keys (identity.ts); absent when handlers are driven without one. */
  identity?: NodeIdentity;
  /** The end user's access token and DPoP proof, checked on every evaluation. */
  auth: EvaluationAuth;
  /** This node's cluster id and operator set: what every proposal is checked against. */
  policy: QuorumPolicy;
  /** The clock proposals expire by (ms since the epoch); default Date.now. Tests only. */
  now?: () => number;
  /** The hash-chained audit log (audit-log.ts); absent when handlers are driven without one. */
  audit?: AuditLog;
  /** Blinded elements per (tenant, subject) (rate-limit.ts); absent means no limit. */
  rateLimit?: ElementRateLimit;
  /** Feeds DKG polynomials and DLEQ proof nonces; undefined means the crypto RNG. */
  rng?: Rng;
  /**
   * The id of a reshare open on this node (begun, neither committed nor aborted), else
   * undefined: while there is one, DKG rounds that could start or store a key are refused
   * (ERR_CEREMONY_CONFLICT), since the reshare moves exactly the keys it listed. Supplied by the
   * resharing handlers; absent means none is ever open.
   */
  ceremonyGate?: () => string | undefined;
  /** The reshare open on this node for `status` (resharing handlers); absent means none. */
  reshareStatus?: () => { id: string; state: string } | null;
  /** Test-only failpoints (KMAAS_FAILPOINTS, nodes/reshare.ts FAILPOINTS); absent means none. */
  failpoints?: ReadonlySet<string>;
  /**
   * Test-only (failpoint `evaluate.lie`): whether this node lies in its evaluations right now.
   * Absent, as in production, means never.
   */
  lying?: () => boolean;
}

/**
 * Fields a handler adds to its request's log line (tenant, version, ceremony id). Only ever
 * public values: never shares, tokens or blinded elements.
 */
export type LogFields = Record<string, string | number | boolean | number[]>;
