/**
 * The public key package of one (tenant, key version): group key K, Feldman commitments
 * C_0..C_{t-1} (C_0 = K) and each node's verification share K_j. Clients trust it only after
 * checking it against a pinned group key (DESIGN.md section 1) and checking that every K_j is
 * the commitments evaluated at x_j, so a coordinator cannot slip in a key of its own for a node.
 */
import { z } from 'zod';
import { decodeElementB64, toB64, type GroupElement } from './encoding.ts';
import { KmaasError } from './errors.ts';
import { evaluateCommitments } from './feldman.ts';
import { checkIdentifierSet } from './identifiers.ts';
import { SUITE } from './suite.ts';
import { TENANT_PATTERN } from './document.ts';

export const keyPackageSchema = z.object({
  suite: z.literal(SUITE),
  tenant: z.string().regex(TENANT_PATTERN),
  version: z.number().int().min(1),
  /** The committee epoch whose shares the verification shares belong to; absent means 1. */
  epoch: z.number().int().min(1).max(0xffffffff).optional(),
  threshold: z.number().int().min(1),
  groupKey: z.string(),
  commitments: z.array(z.string()).min(1).max(256),
  verificationShares: z
    .array(z.object({ id: z.number().int(), key: z.string() }))
    .min(1)
    .max(256),
});

export type KeyPackage = z.infer<typeof keyPackageSchema>;

export interface ParsedKeyPackage {
  tenant: string;
  version: number;
  epoch: number;
  threshold: number;
  groupKey: GroupElement;
  commitments: GroupElement[];
  verificationShares: Map<number, GroupElement>;
  raw: KeyPackage;
}

export function buildKeyPackage(args: {
  tenant: string;
  version: number;
  epoch?: number;
  commitments: GroupElement[];
  verificationShares: Map<number, GroupElement>;
}): KeyPackage {
  const [groupKey] = args.commitments;
  if (!groupKey) throw new KmaasError('ERR_KEY_PACKAGE_INVALID', 'no commitments');
  return {
    suite: SUITE,
    tenant: args.tenant,
    version: args.version,
    epoch: args.epoch ?? 1,
    threshold: args.commitments.length,
    groupKey: toB64(groupKey.toBytes()),
    commitments: args.commitments.map((c) => toB64(c.toBytes())),
    verificationShares: [...args.verificationShares.entries()]
      .sort(([a], [b]) => a - b)
      .map(([id, key]) => ({ id, key: toB64(key.toBytes()) })),
  };
}

/**
 * Decode and check a key package. With `pinnedGroupKey` (base64url) the package must carry that
 * exact group key; the caller decides whether an unpinned package may be trusted.
 */
export function parseKeyPackage(input: unknown, pinnedGroupKey?: string): ParsedKeyPackage {
  const parsed = keyPackageSchema.safeParse(input);
  if (!parsed.success) {
    throw new KmaasError(
      'ERR_KEY_PACKAGE_INVALID',
      `key package: ${parsed.error.issues[0]?.message}`,
      {
        field: parsed.error.issues[0]?.path.join('.'),
      },
    );
  }
  const pkg = parsed.data;
  const groupKey = decodeElementB64(pkg.groupKey, 'groupKey');
  const commitments = pkg.commitments.map((c, i) => decodeElementB64(c, `commitments[${i}]`));
  if (commitments.length !== pkg.threshold) {
    throw new KmaasError(
      'ERR_KEY_PACKAGE_INVALID',
      'threshold does not match the commitment count',
    );
  }
  if (!commitments[0]!.equals(groupKey)) {
    throw new KmaasError(
      'ERR_KEY_PACKAGE_INVALID',
      'group key is not the constant-term commitment',
    );
  }
  if (pinnedGroupKey !== undefined && pinnedGroupKey !== pkg.groupKey) {
    throw new KmaasError(
      'ERR_PINNED_KEY_MISMATCH',
      'key package does not carry the pinned group key',
      {
        tenant: pkg.tenant,
        version: pkg.version,
      },
    );
  }
  const ids = checkIdentifierSet(
    pkg.verificationShares.map((v) => v.id),
    'verificationShares.id',
  );
  if (ids.length < pkg.threshold) {
    throw new KmaasError('ERR_KEY_PACKAGE_INVALID', 'fewer verification shares than the threshold');
  }
  const verificationShares = new Map<number, GroupElement>();
  for (const { id, key } of pkg.verificationShares) {
    const share = decodeElementB64(key, `verificationShares[${id}]`);
    if (!evaluateCommitments(commitments, id).equals(share)) {
      throw new KmaasError(
        'ERR_KEY_PACKAGE_INVALID',
        `verification share of node ${id} does not match the commitments`,
        {
          node: id,
        },
      );
    }
    verificationShares.set(id, share);
  }
  return {
    tenant: pkg.tenant,
    version: pkg.version,
    epoch: epochOf(pkg),
    threshold: pkg.threshold,
    groupKey,
    commitments,
    verificationShares,
    raw: pkg,
  };
}

/** The epoch of a package; packages made before epochs existed belong to epoch 1. */
export function epochOf(pkg: KeyPackage): number {
  return pkg.epoch ?? 1;
}
