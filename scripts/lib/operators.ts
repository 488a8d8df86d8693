/**
 * A development operator set for the local cluster (DESIGN.md section 3): three Ed25519 operator
 * keys, any two of which make a quorum, and a cluster id, kept in `<data>/operators/`:
 *
 *   operators.json       { quorum, operators: [{ id, publicKey }] }   (public; KMAAS_OPERATORS_FILE)
 *   cluster-id           the cluster id (KMAAS_CLUSTER_ID)
 *   <id>.key.json        { id, secretKey }                          (0600)
 *
 * Made once and reused, like the nodes' secrets. The key files are named in cluster.json so that
 * `kmaas tenant create` can sign with them; a real deployment keeps each key with its operator.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ed25519 } from '@noble/curves/ed25519.js';
import { fromB64, toB64 } from '../../shared/encoding.ts';
import type { KmaasClient, ProposalSubmitted } from '../../client/index.ts';
import {
  draftProposal,
  operatorSetSchema,
  signProposal,
  type Operation,
  type OperatorSet,
  type Proposal,
} from '../../shared/proposal.ts';

export const DEV_OPERATOR_IDS = ['operator-1', 'operator-2', 'operator-3'] as const;
export const DEV_QUORUM = 2;

export interface DevOperators {
  clusterId: string;
  set: OperatorSet;
  /** The public set { quorum, operators }, as nodes (KMAAS_OPERATORS_FILE) and the CLI read it. */
  setFile: string;
  keyFiles: string[];
}

/** Load the dev operator set of `dataDir`, making it on first use. */
export function ensureDevOperators(dataDir: string): DevOperators {
  const dir = join(dataDir, 'operators');
  const setFile = join(dir, 'operators.json');
  const idFile = join(dir, 'cluster-id');
  const keyFiles = DEV_OPERATOR_IDS.map((id) => join(dir, `${id}.key.json`));
  if (existsSync(setFile) && keyFiles.every((f) => existsSync(f))) {
    const raw = JSON.parse(readFileSync(setFile, 'utf8')) as { clusterId?: string } & OperatorSet;
    const { clusterId: older, ...rest } = raw;
    const set = operatorSetSchema.parse(rest);
    // A folder from before: the cluster id was kept in operators.json; move it to its own file.
    if (older !== undefined) {
      writeFileSync(idFile, `${older}\n`, { mode: 0o644 });
      writeFileSync(setFile, JSON.stringify(set, null, 2), { mode: 0o644 });
    }
    const clusterId = readFileSync(idFile, 'utf8').trim();
    return { clusterId, set, setFile, keyFiles };
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const operators = DEV_OPERATOR_IDS.map((id, i) => {
    const secretKey = ed25519.utils.randomSecretKey();
    writeFileSync(keyFiles[i]!, JSON.stringify({ id, secretKey: toB64(secretKey) }, null, 2), {
      mode: 0o600,
    });
    const publicKey = toB64(ed25519.getPublicKey(secretKey));
    secretKey.fill(0);
    return { id, publicKey };
  });
  const clusterId = `dev-${randomBytes(6).toString('hex')}`;
  const set: OperatorSet = { quorum: DEV_QUORUM, operators };
  writeFileSync(setFile, JSON.stringify(set, null, 2), { mode: 0o644 });
  writeFileSync(idFile, `${clusterId}\n`, { mode: 0o644 });
  return { clusterId, set, setFile, keyFiles };
}

/** `p` signed with the dev keys in `keyFiles` (all of them unless `count` says fewer). */
export function signWithDevKeys(
  p: Proposal,
  keyFiles: readonly string[],
  count?: number,
): Proposal {
  let signed = p;
  for (const file of keyFiles.slice(0, count ?? keyFiles.length)) {
    const { id, secretKey } = JSON.parse(readFileSync(file, 'utf8')) as {
      id: string;
      secretKey: string;
    };
    const key = fromB64(secretKey, 'secretKey');
    try {
      signed = signProposal(signed, id, key);
    } finally {
      key.fill(0);
    }
  }
  return signed;
}

/**
 * Propose `operation`, sign with the dev keys, submit: for scripts (bench, demo) and tests.
 * Cluster id and committee come from the coordinator's status: the current epoch's committee
 * and threshold when there is one, else `firstCommittee` (LocalCluster.committeeIds: spare nodes
 * are in none), else every node.
 */
export async function proposeWithDevKeys(
  client: KmaasClient,
  keyFiles: readonly string[],
  o: {
    operation: Operation;
    tenant: string;
    version: number;
    threshold?: number;
    firstCommittee?: readonly number[];
  },
): Promise<ProposalSubmitted> {
  const { firstCommittee, ...fields } = o;
  const { cluster, committee, threshold, epoch } = await client.committee(firstCommittee);
  const keyGeneration = o.operation !== 'key.retire';
  const p = draftProposal({
    cluster,
    committee,
    ...fields,
    ...(keyGeneration && o.threshold === undefined && threshold !== undefined ? { threshold } : {}),
    ...(keyGeneration && epoch !== undefined ? { epoch } : {}),
    expiresAt: new Date(Date.now() + 10 * 60_000),
  });
  return client.submitProposal(signWithDevKeys(p, keyFiles));
}
