/**
 * When several nodes hand the coordinator a key package, which one to believe. Nodes are the
 * source of truth (DESIGN.md section 5) but any t-1 of them may lie, so a package is accepted
 * only when at least t nodes that hold a share in it return it byte for byte (after putting it
 * in one canonical form). The package must also describe an honest-majority threshold
 * (2 <= t, t > n/2 of its own committee) within the configured committee, so that a lone node
 * cannot get a package with a threshold of its own choosing accepted.
 */
import {
  epochOf,
  keyPackageSchema,
  parseKeyPackage,
  type KeyPackage,
} from '../shared/key-package.ts';

/**
 * One fixed key order and the verification shares sorted by id, so that two encodings of the
 * same package compare equal as strings. (shared/key-package.ts has no canonical form yet.)
 */
export function canonicalKeyPackage(pkg: KeyPackage): string {
  return JSON.stringify({
    suite: pkg.suite,
    tenant: pkg.tenant,
    version: pkg.version,
    epoch: epochOf(pkg),
    threshold: pkg.threshold,
    groupKey: pkg.groupKey,
    commitments: [...pkg.commitments],
    verificationShares: [...pkg.verificationShares]
      .sort((a, b) => a.id - b.id)
      .map(({ id, key }) => ({ id, key })),
  });
}

export interface NodeAnswer {
  node: number;
  /** The `keyPackage` field of the node's reply, unchecked. */
  keyPackage: unknown;
}

export interface QuorumRule {
  tenant: string;
  version: number;
  /** Node ids the coordinator is configured with. */
  committee: ReadonlySet<number>;
  /** Agreeing nodes required on top of the package's own threshold (DKG asks for all of them). */
  atLeast?: number;
}

export type QuorumResult =
  { ok: true; keyPackage: KeyPackage; nodes: number[] } | { ok: false; reason: string };

/** Pick the package that enough share holders agree on, or say why none qualifies. */
export function agreeOnKeyPackage(answers: readonly NodeAnswer[], rule: QuorumRule): QuorumResult {
  const groups = new Map<string, { pkg: KeyPackage; nodes: number[] }>();
  const seen = new Set<number>();
  for (const { node, keyPackage } of answers) {
    if (seen.has(node)) continue;
    seen.add(node);
    const shape = keyPackageSchema.safeParse(keyPackage);
    if (!shape.success) continue;
    const pkg = shape.data;
    if (pkg.tenant !== rule.tenant || pkg.version !== rule.version) continue;
    // A node vouches only for a package in which it holds a share.
    if (!pkg.verificationShares.some((v) => v.id === node)) continue;
    const key = canonicalKeyPackage(pkg);
    const group = groups.get(key) ?? { pkg, nodes: [] };
    group.nodes.push(node);
    groups.set(key, group);
  }
  const qualified = [...groups.values()].filter(({ pkg, nodes }) => {
    const ids = pkg.verificationShares.map((v) => v.id);
    return (
      pkg.threshold >= 2 &&
      2 * pkg.threshold > ids.length &&
      ids.every((id) => rule.committee.has(id)) &&
      nodes.length >= Math.max(pkg.threshold, rule.atLeast ?? 0) &&
      isConsistent(pkg)
    );
  });
  if (qualified.length === 1) {
    const [{ pkg, nodes }] = qualified as [{ pkg: KeyPackage; nodes: number[] }];
    return { ok: true, keyPackage: pkg, nodes: nodes.sort((a, b) => a - b) };
  }
  if (qualified.length > 1) {
    return { ok: false, reason: `${qualified.length} different packages each have a quorum` };
  }
  if (groups.size === 0) return { ok: false, reason: 'no node returned a valid package' };
  const best = Math.max(...[...groups.values()].map((g) => g.nodes.length));
  return {
    ok: false,
    reason: `${groups.size} distinct package(s), at most ${best} node(s) agreeing: no quorum`,
  };
}

/** Points decode, the group key is C_0, every K_j matches the commitments (once per group). */
function isConsistent(pkg: KeyPackage): boolean {
  try {
    parseKeyPackage(pkg);
    return true;
  } catch {
    return false;
  }
}
