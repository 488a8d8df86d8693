/**
 * Operator proposals for tests: a fixed operator set (three Ed25519 keys from fixed seeds, quorum
 * 2), the cluster id nodes under test are configured with, and helpers that build and sign
 * proposals. Proposals for one ceremony are remembered, so that every round-1 replay of a
 * ceremony carries the very same proposal (the same nonce), as a coordinator's would.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ed25519 } from '@noble/curves/ed25519.js';
import { toB64 } from '../../shared/encoding.ts';
import {
  draftProposal,
  signProposal,
  type CommitteeMember,
  type Operation,
  type OperatorSet,
  type Proposal,
  type QuorumPolicy,
} from '../../shared/proposal.ts';

export const TEST_CLUSTER_ID = 'test-cluster';

export const OPERATOR_KEYS = [1, 2, 3].map((seed) => {
  const secretKey = new Uint8Array(32).fill(seed);
  return {
    id: `operator-${seed}`,
    secretKey,
    publicKey: toB64(ed25519.getPublicKey(secretKey)),
  };
});

export const OPERATOR_SET: OperatorSet = {
  quorum: 2,
  operators: OPERATOR_KEYS.map(({ id, publicKey }) => ({ id, publicKey })),
};

export const POLICY: QuorumPolicy = { clusterId: TEST_CLUSTER_ID, ...OPERATOR_SET };

/** Sign with the operators at `indexes` of OPERATOR_KEYS (default the first two: a quorum). */
export function signWith(p: Proposal, indexes: readonly number[] = [0, 1]): Proposal {
  return indexes.reduce((acc, i) => {
    const k = OPERATOR_KEYS[i]!;
    return signProposal(acc, k.id, k.secretKey);
  }, p);
}

export interface ProposalFields {
  operation?: Operation;
  tenant: string;
  version: number;
  threshold?: number;
  committee: CommitteeMember[];
  /** The committee epoch the operation acts in; absent means the node's current one. */
  epoch?: number;
  cluster?: string;
  expiresAt?: Date;
  nonce?: string;
}

/** A proposal signed by a quorum (or by `signers`). tenant.create unless told otherwise. */
export function testProposal(f: ProposalFields, signers?: readonly number[]): Proposal {
  const operation = f.operation ?? (f.version === 1 ? 'tenant.create' : 'key.rotate');
  const p = draftProposal({
    cluster: f.cluster ?? TEST_CLUSTER_ID,
    operation,
    tenant: f.tenant,
    version: f.version,
    ...(operation === 'key.retire' ? {} : { threshold: f.threshold }),
    committee: f.committee,
    ...(f.epoch === undefined ? {} : { epoch: f.epoch }),
    expiresAt: f.expiresAt ?? new Date(Date.now() + 3_600_000),
    ...(f.nonce === undefined ? {} : { nonce: f.nonce }),
  });
  return signWith(p, signers);
}

/** Identity public keys of a node that is not under test. */
export function strangerIdentity(node: number): CommitteeMember {
  return {
    node,
    signing: toB64(ed25519.getPublicKey(ed25519.utils.randomSecretKey())),
    encryption: toB64(new Uint8Array(randomBytes(32))),
  };
}

const byCeremony = new Map<string, Proposal>();

export interface CeremonyFields {
  ceremonyId: string;
  tenant: string;
  version: number;
  threshold: number;
  participants: number[];
}

/**
 * The proposal for one ceremony and its parameters, made (and signed by a quorum) on first use,
 * then the same one.
 * `identityOf` gives the committee entry of each participant.
 */
export function ceremonyProposal(
  c: CeremonyFields,
  identityOf: (node: number) => CommitteeMember,
): Proposal {
  const key = JSON.stringify([c.ceremonyId, c.tenant, c.version, c.threshold, c.participants]);
  let p = byCeremony.get(key);
  if (!p) {
    p = testProposal({
      tenant: c.tenant,
      version: c.version,
      threshold: c.threshold,
      committee: c.participants.map(identityOf),
    });
    byCeremony.set(key, p);
  }
  return p;
}

/** The test operators' key files ({ id, secretKey }, 0600) in `dir`; returns their paths. */
export async function writeOperatorKeys(dir: string): Promise<string[]> {
  return Promise.all(
    OPERATOR_KEYS.map(async (k) => {
      const file = join(dir, `${k.id}.key.json`);
      await writeFile(file, JSON.stringify({ id: k.id, secretKey: toB64(k.secretKey) }), {
        mode: 0o600,
      });
      return file;
    }),
  );
}
