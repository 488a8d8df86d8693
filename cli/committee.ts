/**
 * `kmaas committee add|remove|threshold|refresh|repair`: committee changes, each one operator
 * proposal `committee.reshare` (shared/proposal.ts, PLAN.md "Proposal") that moves the cluster
 * from its current epoch e (committee C, threshold t) to epoch e+1 (C', t'). The nodes reshare
 * every key to C' without the key ever being whole (coordinator/reshare-job.ts).
 *
 *   add 6 7 [--threshold 4]        C' = C + {6, 7}, t' = t unless given
 *   remove 6 7 [--threshold 3]     C' = C - {6, 7}, t' = t unless given
 *   threshold 4                    C' = C, t' = 4
 *   refresh                        C' = C, t' = t: new shares, old ones erased
 *   repair 3                       C' = C, but node 3's identity keys are the ones it reports
 *                                  now (it lost its data and made new ones): it only receives
 *
 * Everything comes from GET /v1/status: the cluster id, the current epoch (previous), and each
 * node's identity keys (spare nodes are listed too). What the nodes would refuse is refused here
 * first, with the way out: t' >= 2, t' >= the operator set's minThreshold, t' <= n', 2t' > n'.
 * The proposal is signed with the dev operator keys of the cluster file (or --operator-key), or
 * written unsigned with --out for `kmaas proposal sign` and `kmaas proposal submit`.
 */
import { resolve } from 'node:path';
import { stat } from 'node:fs/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { KmaasError } from '../shared/errors.ts';
import {
  draftProposal,
  proposalId,
  signProposal,
  type CommitteeMember,
  type Proposal,
  type ProposalDraft,
} from '../shared/proposal.ts';
import type { Job, KmaasClient } from '../client/index.ts';
import {
  clusterIdOf,
  currentEpoch,
  parseStatusView,
  reportedIdentity,
  type EpochView,
  type StatusView,
} from '../client/committee.ts';

import type { Io, Session } from './program.ts';
import { followJob, laggingLines } from './job.ts';
import { parseDuration } from './proposal.ts';
import { describeProposal, readOperatorKey, readOperatorSet, writeProposal } from './proposal.ts';

/** GET /v1/status (or `raw`, a status already read) as the committee commands read it. */
export async function readStatusView(client: KmaasClient, raw?: unknown): Promise<StatusView> {
  return parseStatusView(raw ?? (await client.status()));
}

/**
 * The nodes' threshold policy (PLAN.md "Proposal"), so that a proposal they would refuse is
 * refused before anyone signs it: ERR_BAD_THRESHOLD naming the thresholds that would do.
 */
export function checkThreshold(t: number, n: number, minThreshold = 2): void {
  const low = Math.max(2, minThreshold, Math.floor(n / 2) + 1);
  if (t >= low && t <= n) return;
  const range =
    low > n ? `no threshold fits ${n} node(s)` : low === n ? `use ${n}` : `use ${low}..${n}`;
  const message =
    t < 2
      ? `threshold ${t} of ${n} lets one node derive alone: ${range}`
      : t < minThreshold
        ? `threshold ${t} of ${n} is below the operator set's minThreshold ${minThreshold}: ${range}`
        : t > n
          ? `threshold ${t} of ${n} needs more nodes than there are: ${range}`
          : `${t} of ${n} is not a majority (two disjoint groups of ${t} could each derive): ` +
            (low > n ? range : `use at least ${low}`);
  throw new KmaasError('ERR_BAD_THRESHOLD', message, {
    threshold: t,
    nodes: n,
    ...(low <= n ? { min: low, max: n } : {}),
  });
}

/**
 * The reshare needs previous.threshold old members up and on the previous epoch to deal
 * (a repaired member cannot: it lost its shares). Fewer, and the job could only fail.
 */
function checkDealers(view: StatusView, previous: EpochView, repaired: number | undefined): void {
  const up = new Map(view.nodes.map((n) => [n.id, n]));
  const dealers = previous.committee.filter((m) => {
    const n = up.get(m.node);
    if (!n || n.connected === false || m.node === repaired) return false;
    return n.epoch === undefined || n.epoch === previous.epoch;
  });
  if (dealers.length >= previous.threshold) return;
  throw new KmaasError(
    'ERR_NODE_UNAVAILABLE',
    `a reshare needs ${previous.threshold} members of epoch ${previous.epoch} up to deal; ` +
      `only ${dealers.length} are (${dealers.map((m) => m.node).join(', ') || 'none'})`,
    { needed: previous.threshold, dealers: dealers.map((m) => m.node) },
  );
}

export type CommitteeChange =
  | { reason: 'add'; nodes: number[]; threshold?: number }
  | { reason: 'remove'; nodes: number[]; threshold?: number }
  | { reason: 'threshold'; threshold: number }
  | { reason: 'refresh' }
  | { reason: 'repair'; node: number };

/** The committee.reshare proposal (unsigned) for `change` from the status the nodes reported. */
export function reshareDraft(
  view: StatusView,
  change: CommitteeChange,
  o: { expiresAt: Date; minThreshold?: number },
): ProposalDraft {
  const cluster = clusterIdOf(view);
  const previous = currentEpoch(view);
  const members = new Map(previous.committee.map((m) => [m.node, m]));
  let committee: CommitteeMember[];
  let threshold = previous.threshold;
  switch (change.reason) {
    case 'add': {
      const already = change.nodes.filter((id) => members.has(id));
      if (already.length > 0) {
        throw new KmaasError(
          'ERR_VALIDATION',
          `node(s) ${already.join(', ')} already in the committee of epoch ${previous.epoch}`,
          { field: 'nodes', nodes: already },
        );
      }
      const added = change.nodes.map((id) => reportedIdentity(view, id, 'to add it'));
      committee = [...previous.committee, ...added];
      threshold = change.threshold ?? threshold;
      break;
    }
    case 'remove': {
      const strangers = change.nodes.filter((id) => !members.has(id));
      for (const id of strangers) {
        if (!view.nodes.some((n) => n.id === id)) reportedIdentity(view, id, 'to remove it');
      }
      if (strangers.length > 0) {
        throw new KmaasError(
          'ERR_VALIDATION',
          `node(s) ${strangers.join(', ')} not in the committee of epoch ${previous.epoch} (${[...members.keys()].join(', ')})`,
          { field: 'nodes', nodes: strangers },
        );
      }
      committee = previous.committee.filter((m) => !change.nodes.includes(m.node));
      if (committee.length === 0) {
        throw new KmaasError(
          'ERR_VALIDATION',
          `removing every node of epoch ${previous.epoch} leaves no one to hold the keys`,
          { field: 'nodes', nodes: change.nodes },
        );
      }
      threshold = change.threshold ?? threshold;
      break;
    }
    case 'threshold':
      if (change.threshold === previous.threshold) {
        throw new KmaasError(
          'ERR_VALIDATION',
          `the threshold is already ${previous.threshold}; kmaas committee refresh renews the shares without changing it`,
          { field: 'threshold' },
        );
      }
      committee = previous.committee;
      threshold = change.threshold;
      break;
    case 'refresh':
      committee = previous.committee;
      break;
    case 'repair': {
      const recorded = members.get(change.node);
      // A node no one configured is neither to repair nor to add: said as add says it.
      if (!recorded && !view.nodes.some((n) => n.id === change.node)) {
        reportedIdentity(view, change.node, 'to repair it');
      }
      if (!recorded) {
        throw new KmaasError(
          'ERR_VALIDATION',
          `node ${change.node} is not in the committee of epoch ${previous.epoch}: add it instead`,
          { field: 'node', node: change.node },
        );
      }
      const now = reportedIdentity(view, change.node, 'a repaired node must be running');
      if (now.signing === recorded.signing && now.encryption === recorded.encryption) {
        throw new KmaasError(
          'ERR_VALIDATION',
          `node ${change.node} reports the identity keys the committee records: it lost nothing (kmaas committee refresh renews every share)`,
          { field: 'node', node: change.node },
        );
      }
      committee = previous.committee.map((m) => (m.node === change.node ? now : m));
      break;
    }
  }
  checkThreshold(threshold, committee.length, o.minThreshold);
  checkDealers(view, previous, change.reason === 'repair' ? change.node : undefined);
  return {
    cluster,
    operation: 'committee.reshare',
    epoch: previous.epoch + 1,
    threshold,
    committee,
    previous: {
      epoch: previous.epoch,
      threshold: previous.threshold,
      committee: previous.committee,
    },
    reason: change.reason,
    expiresAt: o.expiresAt,
  };
}

/** Sign with every key file, zeroing each secret key once used. */
export async function signWithKeys(io: Io, p: Proposal, files: readonly string[]) {
  let signed = p;
  for (const file of files) {
    const key = await readOperatorKey(io, file);
    try {
      signed = signProposal(signed, key.id, key.secretKey);
    } finally {
      key.secretKey.fill(0);
    }
  }
  return signed;
}

/** Follow a reshare job to its end, one progress line per change; throws its error on failure. */
export function followReshare(s: Session, jobId: string): Promise<Job> {
  return followJob(s, jobId, true);
}

function nodeList(text: string, previous: number[] = []): number[] {
  if (!/^[1-9]\d{0,4}$/.test(text) || Number(text) > 0xffff) {
    throw new InvalidArgumentError('expected a node id (1-65535)');
  }
  if (previous.includes(Number(text))) {
    throw new InvalidArgumentError(`node ${text} is named twice`);
  }
  return [...previous, Number(text)];
}

function positive(text: string): number {
  if (!/^[1-9]\d{0,9}$/.test(text)) throw new InvalidArgumentError('expected a positive integer');
  return Number(text);
}

interface CommonOptions {
  operatorKey?: string[];
  expires: number;
  out?: string;
  force?: boolean;
  wait: boolean;
}

/** Adds `committee` and its subcommands. */
export function addCommitteeCommands(
  program: Command,
  io: Io,
  session: (cmd: Command) => Promise<Session>,
): void {
  const committee = program
    .command('committee')
    .description('committee changes: add or remove nodes, change the threshold, refresh, repair');

  const common = (cmd: Command): Command =>
    cmd
      .option(
        '--operator-key <file>',
        'an operator key file to sign with (repeatable; default: the keys the cluster file names)',
        (file: string, files: string[] = []) => [...files, file],
      )
      .addOption(
        new Option('--expires <duration>', 'how long the proposal is valid, e.g. 30m, 1h, 2d')
          .argParser(parseDuration)
          .default(10 * 60_000, '10m'),
      )
      .option('--out <file>', 'write the proposal unsigned instead (kmaas proposal sign, submit)')
      .option('--force', 'overwrite the --out file')
      .option('--no-wait', 'return once the job is queued');

  const act = async (cmd: Command, change: CommitteeChange, o: CommonOptions): Promise<void> => {
    const s = await session(cmd);
    const target = o.out === undefined ? undefined : resolve(io.cwd, o.out);
    if (target && !o.force && (await stat(target).catch(() => undefined))) {
      throw new KmaasError(
        'ERR_VALIDATION',
        `output file ${o.out} already exists: pass --force to overwrite it`,
        { field: 'output' },
      );
    }
    const keys = o.operatorKey ?? s.config.operatorKeys;
    if (!target) {
      s.requireAdminToken('submit a committee change');
      if (keys.length === 0) {
        throw new KmaasError(
          'ERR_CONFIG',
          'a committee change is an operator proposal and the cluster file names no operator keys: ' +
            'pass --operator-key, or --out p.json and have each operator run kmaas proposal sign',
          { field: 'operatorKeys' },
        );
      }
    }
    const setFile = s.config.operatorsFile;
    const minThreshold = setFile ? (await readOperatorSet(io, setFile)).minThreshold : undefined;
    const view = await readStatusView(s.client);
    const draft = reshareDraft(view, change, {
      expiresAt: new Date(Date.now() + o.expires),
      ...(minThreshold === undefined ? {} : { minThreshold }),
    });
    const unsigned = draftProposal(draft);
    for (const line of describeReshare(unsigned)) s.note(line);
    if (draft.threshold === draft.committee?.length) {
      s.note(
        `warning: threshold ${draft.threshold} of ${draft.threshold} nodes: every member must be up ` +
          'for any key to be derived, and one lost node loses every key',
      );
    }
    if (target) {
      await writeProposal(io, o.out!, unsigned);
      s.result({ file: target, proposal: proposalId(unsigned), ...unsigned }, [
        `wrote ${o.out}: each operator runs kmaas proposal sign ${o.out} --key <key file>, then kmaas proposal submit ${o.out}`,
      ]);
      return;
    }
    const p = await signWithKeys(io, unsigned, keys);
    s.note(`proposal ${proposalId(p)} signed by ${p.signatures.map((x) => x.operator).join(', ')}`);
    await submitReshare(s, p, o.wait);
  };

  common(
    committee
      .command('add <ids...>')
      .description('add nodes (spare nodes: see kmaas status) to the committee')
      .option('--threshold <t>', 'the new threshold (default: the current one)', positive),
  ).action(async (ids: string[], o: CommonOptions & { threshold?: number }, cmd: Command) => {
    const nodes = ids.reduce<number[]>((acc, id) => nodeList(id, acc), []);
    await act(cmd, { reason: 'add', nodes, ...threshold(o) }, o);
  });

  common(
    committee
      .command('remove <ids...>')
      .description('remove nodes from the committee (they erase their shares)')
      .option('--threshold <t>', 'the new threshold (default: the current one)', positive),
  ).action(async (ids: string[], o: CommonOptions & { threshold?: number }, cmd: Command) => {
    const nodes = ids.reduce<number[]>((acc, id) => nodeList(id, acc), []);
    await act(cmd, { reason: 'remove', nodes, ...threshold(o) }, o);
  });

  common(
    committee.command('threshold <t>').description('change the threshold, same committee'),
  ).action(async (t: string, o: CommonOptions, cmd: Command) => {
    await act(cmd, { reason: 'threshold', threshold: positive(t) }, o);
  });

  common(
    committee
      .command('refresh')
      .description('new shares of every key for the same committee; the old ones are erased'),
  ).action(async (o: CommonOptions, cmd: Command) => {
    await act(cmd, { reason: 'refresh' }, o);
  });

  common(
    committee
      .command('repair <id>')
      .description('give a member that lost its data (new identity keys) its shares back'),
  ).action(async (id: string, o: CommonOptions, cmd: Command) => {
    await act(cmd, { reason: 'repair', node: nodeList(id)[0]! }, o);
  });
}

function threshold(o: { threshold?: number }): { threshold?: number } {
  return o.threshold === undefined ? {} : { threshold: o.threshold };
}

/** The lines an operator reads before a reshare goes out: from what, to what. */
export function describeReshare(p: Proposal): string[] {
  const ids = (c: readonly CommitteeMember[] | undefined) => (c ?? []).map((m) => m.node).join(',');
  const reason = p.reason ?? 'reshare';
  return [
    `${reason}: epoch ${p.previous?.epoch} (nodes ${ids(p.previous?.committee)}, threshold ${p.previous?.threshold})` +
      ` -> epoch ${p.epoch} (nodes ${ids(p.committee)}, threshold ${p.threshold})`,
    ...describeProposal(p),
  ];
}

/** Submit a signed committee.reshare proposal and follow its job; its error when it fails. */
export async function submitReshare(s: Session, p: Proposal, wait: boolean): Promise<void> {
  const submitted = await s.client.submitProposal(p);
  if (submitted.kind !== 'job') {
    throw new KmaasError('ERR_VALIDATION', 'the coordinator did not start a reshare job', {
      field: 'proposal',
    });
  }
  const value = {
    proposal: proposalId(p),
    jobId: submitted.jobId,
    epoch: p.epoch,
    threshold: p.threshold,
    committee: (p.committee ?? []).map((m) => m.node),
  };
  if (!wait) {
    s.note(`job ${submitted.jobId} queued; follow it with kmaas job ${submitted.jobId}`);
    s.result({ ...value, done: false }, [submitted.jobId]);
    return;
  }
  // A committee.refresh names no epoch: the job's result says which one it made.
  s.note(`job ${submitted.jobId}: reshare to epoch ${p.epoch ?? 'current + 1'}`);
  const job = await followReshare(s, submitted.jobId);
  const made = (job.result as { epoch?: unknown } | undefined)?.epoch;
  const epoch = p.epoch ?? (typeof made === 'number' ? made : '?');
  s.result({ ...value, done: true, result: job.result ?? null }, [
    `epoch ${epoch}: nodes ${value.committee.join(', ')}, threshold ${p.threshold}`,
    ...laggingLines(job.result),
  ]);
}
