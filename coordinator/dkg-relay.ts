/**
 * The coordinator's side of distributed key generation (DESIGN.md section 3, docs/CONTRACTS.md
 * "DKG as relayed by the coordinator"): the three rounds of @noble/curves' ristretto255_FROST.DKG
 * (the split-round API of frost-rs; RFC 9591 leaves DKG out of scope), run on the nodes, with the
 * coordinator carrying messages between them and checking their shape. Round-2 packages are
 * sealed by their sender to their recipient (nodes/round2-envelope.ts): the coordinator relays
 * ciphertext it cannot read, alter or forge.
 *
 *   round 1  coordinator -> every node   dkg.round1 { ceremonyId, tenant, version, t, participants,
 *                                                    committee, proposal } (the operators' signed
 *                                                    proposal; committee = proposal.committee)
 *            node j -> coordinator       { node: j, commitment: [C_j0..C_j(t-1)], proofOfKnowledge }
 *   round 2  coordinator -> every node   dkg.round2 { ceremonyId, round1: all n packages }
 *            node j -> coordinator       { packages: [{ from: j, to: m, ephemeral, ciphertext,
 *                                          signature }] } for m != j: f_j(m) sealed to m
 *   round 3  coordinator -> node m       dkg.round3 { ceremonyId, round2: the n-1 packages to m }
 *            node m -> coordinator       { keyPackage }
 *   commit   coordinator -> every node   dkg.commit { ceremonyId }  (commitDkg; dkg-job.ts sends it
 *            node j -> coordinator       { ceremonyId, erased }     once every node holds the key)
 *
 * Nodes answer every round idempotently under the same ceremony id, also after storing the key
 * (round 3 then returns the stored package), until the commit: a retry replays the ceremony, and
 * a node that had not finished round 3 finishes it then.
 *
 * Every node must return the identical key package, which must be consistent (parseKeyPackage).
 * Each node verifies the proofs of knowledge and the shares against the commitments itself; a node
 * that finds a bad one answers ERR_DKG_FAILED with `details.culprits`, and the ceremony fails
 * naming them. A reply of the wrong shape makes its sender the culprit.
 */
import { decodeElementB64, fromB64 } from '../shared/encoding.ts';
import { KmaasError, toKmaasError, type ErrorCode } from '../shared/errors.ts';
import { parseKeyPackage, type KeyPackage } from '../shared/key-package.ts';
import {
  dkgCommitReply,
  dkgRound1Reply,
  dkgRound2Reply,
  dkgRound3Reply,
  parseMessage,
} from '../shared/messages.ts';
import type { Proposal } from '../shared/proposal.ts';
import { canonicalKeyPackage } from './key-quorum.ts';
import type { Logger } from './logger.ts';
import { NodeReplyError } from './node-link.ts';
import type { NodePool } from './node-pool.ts';

export type DkgPhase = 'round1' | 'round2' | 'round3' | 'store';

export interface DkgProgress {
  phase: DkgPhase;
  done: number;
  total: number;
}

export interface DkgParams {
  ceremonyId: string;
  tenant: string;
  version: number;
  threshold: number;
  participants: readonly number[];
  /** The operator proposal that every node checks before it takes part. */
  proposal: Proposal;
}

export interface DkgRelayDeps {
  pool: NodePool;
  /** Deadline of one node's answer to one round. */
  timeoutMs: number;
  logger: Logger;
  /** Told after each answer; must not throw. */
  progress(p: DkgProgress): Promise<void>;
  /**
   * Told of each well-formed round-3 answer as it arrives, also when the round fails for
   * another node: which nodes hold which key package. Must not throw.
   */
  onKeyPackage?(node: number, keyPackage: KeyPackage): void;
}

type Round1Package = ReturnType<typeof dkgRound1Reply.parse>;
type Round2Package = ReturnType<typeof dkgRound2Reply.parse>['packages'][number];

interface NodeFailure {
  node: number;
  code: ErrorCode;
  message: string;
  culprits: number[];
}

/** Run the three rounds; returns the key package every participant agreed on. */
export async function relayDkg(deps: DkgRelayDeps, params: DkgParams): Promise<KeyPackage> {
  const { ceremonyId, participants } = params;
  const ids = [...participants].sort((a, b) => a - b);
  // The identity keys that seal round 2 are the ones the operators signed, never read from the
  // nodes' status here: each node refuses a round 1 whose committee is not its proposal's.
  const committee = params.proposal.committee ?? [];

  // Round 1: every participant commits to its polynomial and proves knowledge of a_j0.
  const round1 = await runRound(
    deps,
    'round1',
    ids,
    () => ({
      ceremonyId,
      tenant: params.tenant,
      version: params.version,
      threshold: params.threshold,
      participants: ids,
      committee,
      proposal: params.proposal,
    }),
    (node, body) => checkRound1(params, node, body),
  );
  const round1Packages = ids.map((id) => round1.get(id)!);

  // Round 2: every participant checks the others' proofs and evaluates its polynomial for each,
  // sealed to the recipient; the packages are opaque here and go to their recipient unchanged.
  const round2 = await runRound(
    deps,
    'round2',
    ids,
    () => ({ ceremonyId, round1: round1Packages }),
    (node, body) => checkRound2(ids, node, body),
  );
  const inbox = new Map<number, Round2Package[]>(ids.map((id) => [id, []]));
  for (const id of ids) for (const p of round2.get(id)!) inbox.get(p.to)!.push(p);

  // Round 3: every participant opens what it received, checks it against the commitments and
  // sums it up.
  const round3 = await runRound(
    deps,
    'round3',
    ids,
    (node) => ({ ceremonyId, round2: inbox.get(node)!.sort((a, b) => a.from - b.from) }),
    (node, body) => {
      const pkg = checkRound3(params, ids, node, body);
      deps.onKeyPackage?.(node, pkg);
      return pkg;
    },
  );

  const byPackage = new Map<string, number[]>();
  for (const id of ids) {
    const key = canonicalKeyPackage(round3.get(id)!);
    byPackage.set(key, [...(byPackage.get(key) ?? []), id]);
  }
  if (byPackage.size !== 1) {
    throw new KmaasError('ERR_DKG_FAILED', 'DKG round3: nodes returned different key packages', {
      phase: 'round3',
      groups: [...byPackage.values()],
      culprits: [],
    });
  }
  return round3.get(ids[0]!)!;
}

/**
 * Tell every participant that every participant holds the key, so that it erases the ceremony
 * state. Best effort: a node that misses it keeps a sealed state it no longer needs (reported in
 * the log), which changes nothing else. Returns the nodes that did not confirm.
 */
export async function commitDkg(
  deps: Pick<DkgRelayDeps, 'pool' | 'timeoutMs' | 'logger'>,
  params: Pick<DkgParams, 'ceremonyId' | 'participants'>,
): Promise<number[]> {
  const { ceremonyId } = params;
  const failed: number[] = [];
  await Promise.all(
    [...params.participants].map(async (node) => {
      try {
        const link = deps.pool.get(node);
        if (!link) throw new KmaasError('ERR_NODE_UNAVAILABLE', `node ${node} is not configured`);
        const body = await link.request('dkg.commit', { ceremonyId }, deps.timeoutMs);
        const reply = parseMessage(dkgCommitReply, body, 'commit reply');
        if (reply.ceremonyId !== ceremonyId) throw new Error(`commit of ${reply.ceremonyId}`);
      } catch (err) {
        failed.push(node);
        const e = toKmaasError(err);
        deps.logger.warn(
          { ceremonyId, node, code: e.code },
          `DKG commit not confirmed; the node keeps its ceremony state: ${e.message}`,
        );
      }
    }),
  );
  return failed.sort((a, b) => a - b);
}

/** Send one round to every participant at once; all must answer well or the ceremony fails. */
async function runRound<T>(
  deps: DkgRelayDeps,
  phase: DkgPhase,
  ids: readonly number[],
  bodyFor: (node: number) => unknown,
  check: (node: number, body: unknown) => T,
): Promise<Map<number, T>> {
  const type = `dkg.${phase}` as 'dkg.round1' | 'dkg.round2' | 'dkg.round3';
  const total = ids.length;
  let done = 0;
  let reported = deps.progress({ phase, done, total });
  const results = new Map<number, T>();
  const failures: NodeFailure[] = [];
  await Promise.all(
    ids.map(async (node) => {
      try {
        const link = deps.pool.get(node);
        if (!link) throw new KmaasError('ERR_NODE_UNAVAILABLE', `node ${node} is not configured`);
        const body = await link.request(type, bodyFor(node), deps.timeoutMs);
        results.set(node, check(node, body));
        const p = { phase, done: ++done, total };
        reported = reported.then(() => deps.progress(p));
      } catch (err) {
        failures.push(describeFailure(node, err));
      }
    }),
  );
  await reported;
  if (failures.length > 0) throw roundFailed(phase, failures);
  deps.logger.debug({ phase }, 'DKG round complete');
  return results;
}

function describeFailure(node: number, err: unknown): NodeFailure {
  const e = toKmaasError(err);
  const reported = e.details?.culprits;
  const culprits =
    err instanceof NodeReplyError
      ? Array.isArray(reported)
        ? reported.filter((c): c is number => Number.isInteger(c))
        : []
      : // A reply this side found malformed makes its sender the culprit.
        e.code === 'ERR_DKG_FAILED'
        ? [node]
        : [];
  return { node, code: e.code, message: e.message, culprits };
}

/**
 * ERR_DKG_FAILED naming the culprits when any node (or this side) named one. Without culprits
 * and with one code for every failure (all unreachable, all in conflict), that code is kept.
 */
function roundFailed(phase: DkgPhase, failures: NodeFailure[]): KmaasError {
  const culprits = [...new Set(failures.flatMap((f) => f.culprits))].sort((a, b) => a - b);
  const list = failures
    .sort((a, b) => a.node - b.node)
    .map(({ node, code, message }) => ({ node, code, message }));
  const codes = new Set(failures.map((f) => f.code));
  if (culprits.length > 0) {
    const reporters = failures.filter((f) => f.culprits.length > 0).map((f) => f.node);
    return new KmaasError(
      'ERR_DKG_FAILED',
      `DKG ${phase} failed: node(s) ${culprits.join(', ')} at fault (reported by ${reporters.join(', ')})`,
      { phase, culprits, failures: list },
    );
  }
  const [only] = codes;
  const code = codes.size === 1 && only !== undefined ? only : 'ERR_DKG_FAILED';
  const summary = list.map((f) => `node ${f.node}: ${f.code}`).join('; ');
  return new KmaasError(code, `DKG ${phase} failed: ${summary}`, {
    phase,
    culprits,
    failures: list,
  });
}

function malformed(node: number, what: string, why: string): KmaasError {
  return new KmaasError('ERR_DKG_FAILED', `node ${node} sent a malformed ${what}: ${why}`, {
    culprits: [node],
  });
}

/** The answer's shape, sender and commitment count; the node peers check the proof itself. */
function checkRound1(params: DkgParams, node: number, body: unknown): Round1Package {
  try {
    const pkg = parseMessage(dkgRound1Reply, body, 'round-1 package');
    if (pkg.node !== node) throw new Error(`claims to come from node ${pkg.node}`);
    if (pkg.commitment.length !== params.threshold) {
      throw new Error(`${pkg.commitment.length} commitments for threshold ${params.threshold}`);
    }
    pkg.commitment.forEach((c, i) => decodeElementB64(c, `commitment[${i}]`));
    fromB64(pkg.proofOfKnowledge, 'proofOfKnowledge');
    return pkg;
  } catch (err) {
    throw malformed(node, 'round-1 package', err instanceof Error ? err.message : 'invalid');
  }
}

/** Exactly one package from this node to each other participant; their content is sealed. */
function checkRound2(ids: readonly number[], node: number, body: unknown): Round2Package[] {
  try {
    const { packages } = parseMessage(dkgRound2Reply, body, 'round-2 reply');
    const expected = new Set(ids.filter((id) => id !== node));
    const seen = new Set<number>();
    for (const p of packages) {
      if (p.from !== node) throw new Error(`a package claims to come from node ${p.from}`);
      if (!expected.has(p.to) || seen.has(p.to)) throw new Error(`unexpected recipient ${p.to}`);
      seen.add(p.to);
    }
    if (seen.size !== expected.size) throw new Error(`${seen.size} packages for ${expected.size}`);
    return packages;
  } catch (err) {
    throw malformed(node, 'round-2 reply', err instanceof Error ? err.message : 'invalid');
  }
}

/**
 * A node's answer to round 3 or to `keyPackage`: a consistent key package for exactly this
 * tenant, version, threshold and committee. ERR_DKG_FAILED naming the node otherwise.
 */
export function checkHeldKeyPackage(
  params: Omit<DkgParams, 'ceremonyId' | 'proposal'>,
  node: number,
  body: unknown,
): KeyPackage {
  return checkRound3(
    params,
    [...params.participants].sort((a, b) => a - b),
    node,
    body,
  );
}

/** A consistent key package for exactly this tenant, version, threshold and committee. */
function checkRound3(
  params: Omit<DkgParams, 'ceremonyId' | 'proposal'>,
  ids: readonly number[],
  node: number,
  body: unknown,
): KeyPackage {
  try {
    const { keyPackage } = parseMessage(dkgRound3Reply, body, 'round-3 reply');
    const pkg = parseKeyPackage(keyPackage);
    if (pkg.tenant !== params.tenant || pkg.version !== params.version) {
      throw new Error(`package is for ${pkg.tenant} v${pkg.version}`);
    }
    if (pkg.threshold !== params.threshold) throw new Error(`threshold ${pkg.threshold}`);
    const holders = [...pkg.verificationShares.keys()].sort((a, b) => a - b);
    if (holders.join() !== ids.join()) throw new Error(`shares for nodes ${holders.join(', ')}`);
    return pkg.raw;
  } catch (err) {
    throw malformed(node, 'key package', err instanceof Error ? err.message : 'invalid');
  }
}
