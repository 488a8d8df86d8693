/**
 * `kmaas proposal create|sign|show|submit`: operator proposals (shared/proposal.ts), the only way
 * a tenant key is created, rotated or retired. One operator creates the file, each operator signs
 * it with their own key (offline: no coordinator needed), anyone submits it; every node checks
 * the signatures against its own operator keys.
 *
 *   kmaas proposal create --operation tenant.create --tenant acme --out p.json
 *   kmaas proposal create --operation committee.refresh --every 86400 --expires 30d --out r.json
 *       (the standing proposal of the scheduled refresh: KMAAS_REFRESH_PROPOSAL_FILE, signed)
 *   kmaas proposal sign p.json --key alice.key.json      (each operator, until quorum)
 *   kmaas proposal show p.json --operators operators.json
 *   kmaas proposal submit p.json                         (follows the DKG job, pins the key)
 *
 * Key files are { id, secretKey } (b64url Ed25519 secret key), kept 0600; they are never printed.
 */
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { fromB64 } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import {
  checkSignatures,
  draftProposal,
  KEY_OPERATIONS,
  MAX_LIFETIME_MS,
  MIN_REFRESH_SECONDS,
  OPERATIONS,
  operatorKeyFileSchema,
  operatorSetSchema,
  parseProposal,
  proposalId,
  signProposal,
  verifyQuorum,
  type Operation,
  type OperatorSet,
  type Proposal,
} from '../shared/proposal.ts';
import type { KmaasClient, ProposalSubmitted } from '../client/index.ts';
import { writeFileAtomic } from './atomic.ts';
import { resolveConfig, type GlobalOptions } from './config.ts';
import type { Io, Session } from './program.ts';
import { followJob } from './job.ts';
import {
  clusterIdOf,
  currentEpoch,
  checkMembersIntact,
  keyCommittee,
  parseStatusView,
  type StatusView,
} from '../client/committee.ts';
import { submitReshare } from './committee.ts';

const DURATION = /^(\d{1,6})([smhd])$/;
const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

export function parseDuration(text: string): number {
  const m = DURATION.exec(text);
  if (!m) throw new InvalidArgumentError('expected a duration like 30m, 1h or 2d');
  const ms = Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  // Every node refuses a proposal valid for longer (shared/proposal.ts): say so before signing.
  if (ms > MAX_LIFETIME_MS) {
    throw new InvalidArgumentError(
      `at most ${MAX_LIFETIME_MS / 86_400_000}d: nodes refuse a proposal valid for longer`,
    );
  }
  return ms;
}

function positive(text: string): number {
  if (!/^[1-9]\d{0,9}$/.test(text)) throw new InvalidArgumentError('expected a positive integer');
  return Number(text);
}

async function readJson(io: Io, file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(resolve(io.cwd, file), 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new KmaasError(
      'ERR_VALIDATION',
      `${what} ${file}: ${code === 'ENOENT' ? 'not found' : 'not readable'}`,
      {
        field: what,
        path: file,
      },
    );
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new KmaasError('ERR_MALFORMED_JSON', `${what} ${file} is not valid JSON`, { path: file });
  }
}

export async function readProposal(io: Io, file: string): Promise<Proposal> {
  return parseProposal(await readJson(io, file, 'proposal'));
}

export async function readOperatorSet(io: Io, file: string): Promise<OperatorSet> {
  const r = operatorSetSchema.safeParse(await readJson(io, file, 'operators file'));
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new KmaasError(
      'ERR_VALIDATION',
      `operators file ${file}: ${issue?.path.join('.') || '(top level)'}: ${issue?.message ?? 'invalid'}`,
      { field: 'operators' },
    );
  }
  return r.data;
}

/** An operator key file: its id and secret key (the caller zeroes the key when done). */
export async function readOperatorKey(
  io: Io,
  file: string,
): Promise<{ id: string; secretKey: Uint8Array }> {
  const r = operatorKeyFileSchema.safeParse(await readJson(io, file, 'key file'));
  if (!r.success) {
    // The content is secret: say which field, never echo it.
    const field = r.error.issues[0]?.path.join('.') || '(top level)';
    throw new KmaasError('ERR_VALIDATION', `key file ${file}: ${field} is not valid`, {
      field: 'key',
    });
  }
  return { id: r.data.id, secretKey: fromB64(r.data.secretKey, 'secretKey') };
}

export async function writeProposal(io: Io, file: string, p: Proposal): Promise<void> {
  await writeFileAtomic(resolve(io.cwd, file), JSON.stringify(p, null, 2) + '\n', 0o644);
}

/** The lines an operator reads before signing. */
export function describeProposal(p: Proposal): string[] {
  return [
    `proposal ${proposalId(p)}`,
    `  cluster    ${p.cluster}`,
    `  operation  ${p.operation}`,
    ...(p.tenant === undefined
      ? []
      : [
          `  tenant     ${p.tenant} version ${p.version}` +
            (p.threshold === undefined ? '' : ` threshold ${p.threshold}`),
        ]),
    ...(p.everySeconds === undefined
      ? []
      : [
          `  refresh    at most once every ${p.everySeconds} s, threshold ${p.threshold} (standing)`,
        ]),
    ...(p.previous === undefined
      ? []
      : [
          `  from       epoch ${p.previous.epoch} threshold ${p.previous.threshold} nodes ` +
            p.previous.committee.map((m) => m.node).join(','),
          `  to         epoch ${p.epoch} threshold ${p.threshold}` +
            (p.reason === undefined ? '' : ` (${p.reason})`),
        ]),
    ...(p.committee ?? []).map(
      (m) => `  node ${m.node}     signing ${m.signing} encryption ${m.encryption}`,
    ),
    `  expires    ${p.expiresAt}`,
    `  signed by  ${p.signatures.map((s) => s.operator).join(', ') || '(nobody yet)'}`,
  ];
}

export interface CreateOptions {
  operation: Operation;
  /** Key operations only. */
  tenant?: string;
  version?: number;
  threshold?: number;
  /** committee.refresh only: its period in seconds (>= MIN_REFRESH_SECONDS). */
  everySeconds?: number;
  expiresInMs: number;
  /** The cluster file's first committee: without an epoch, spare nodes are left out. */
  firstCommittee?: readonly number[];
}

function needsNone(o: CreateOptions, field: 'tenant' | 'version' | 'everySeconds'): void {
  if (o[field] === undefined) return;
  const flag = field === 'everySeconds' ? '--every' : `--${field}`;
  throw new KmaasError('ERR_VALIDATION', `${o.operation} takes no ${flag}`, { field });
}

/** What each operation needs from the command line, before the coordinator is asked. */
function checkCreateOptions(o: CreateOptions): void {
  if (o.operation === 'committee.reshare') {
    throw new KmaasError(
      'ERR_VALIDATION',
      'a committee.reshare is made with kmaas committee add|remove|threshold|refresh|repair --out <file>',
      { field: 'operation' },
    );
  }
  if (o.operation === 'committee.refresh') {
    needsNone(o, 'tenant');
    needsNone(o, 'version');
    if (o.everySeconds === undefined || o.everySeconds < MIN_REFRESH_SECONDS) {
      throw new KmaasError(
        'ERR_VALIDATION',
        `committee.refresh needs --every <seconds>, at least ${MIN_REFRESH_SECONDS}: the period of the scheduled refresh`,
        { field: 'everySeconds' },
      );
    }
    return;
  }
  needsNone(o, 'everySeconds');
  if (!(KEY_OPERATIONS as readonly string[]).includes(o.operation) || o.tenant === undefined) {
    throw new KmaasError('ERR_VALIDATION', `${o.operation} needs --tenant`, { field: 'tenant' });
  }
}

/**
 * The standing committee.refresh (PLAN "committee.refresh"): the current epoch's committee and
 * threshold, which a refresh keeps, and its period. It names no epoch: one proposal serves every
 * later epoch for as long as the committee stays the same (the coordinator and the nodes check).
 */
function refreshDraft(view: StatusView, o: CreateOptions, now: number): Proposal {
  const epoch = currentEpoch(view);
  if (o.threshold !== undefined && o.threshold !== epoch.threshold) {
    throw new KmaasError(
      'ERR_BAD_THRESHOLD',
      `a refresh keeps the threshold of epoch ${epoch.epoch}, ${epoch.threshold}: change it with kmaas committee threshold ${o.threshold}`,
      { threshold: o.threshold, expected: epoch.threshold },
    );
  }
  return draftProposal({
    cluster: clusterIdOf(view),
    operation: 'committee.refresh',
    committee: epoch.committee,
    threshold: epoch.threshold,
    everySeconds: o.everySeconds!,
    expiresAt: new Date(now + o.expiresInMs),
  });
}

/**
 * A new unsigned proposal: cluster id and committee from the coordinator's status. A key
 * generation uses the current epoch's committee and threshold (the nodes refuse any other), or
 * before the first epoch the first committee (cli/committee.ts keyCommittee).
 */
export async function createProposal(
  client: KmaasClient,
  o: CreateOptions,
  now = Date.now(),
): Promise<Proposal> {
  checkCreateOptions(o);
  const view = parseStatusView(await client.status());
  const cluster = clusterIdOf(view);
  if (o.operation === 'committee.refresh') return refreshDraft(view, o, now);
  const tenant = o.tenant!;
  const { committee, threshold: epochThreshold, epoch } = keyCommittee(view, o.firstCommittee);
  if (o.operation !== 'key.retire') checkMembersIntact(view, committee);
  let version = o.version;
  if (version === undefined) {
    if (o.operation === 'tenant.create') version = 1;
    else if (o.operation === 'key.rotate') version = (await client.latestVersion(tenant)) + 1;
    else {
      throw new KmaasError('ERR_VALIDATION', 'key.retire needs --version: the version to retire', {
        field: 'version',
      });
    }
  }
  if (
    o.operation !== 'key.retire' &&
    o.threshold !== undefined &&
    epochThreshold !== undefined &&
    o.threshold !== epochThreshold
  ) {
    throw new KmaasError(
      'ERR_BAD_THRESHOLD',
      `the committee of epoch ${epoch} derives with threshold ${epochThreshold}, and new keys use it: ` +
        `change it with kmaas committee threshold ${o.threshold}`,
      { threshold: o.threshold, expected: epochThreshold },
    );
  }
  const threshold =
    o.operation === 'key.retire'
      ? undefined
      : (o.threshold ?? epochThreshold ?? Math.floor(committee.length / 2) + 1);
  return draftProposal({
    cluster,
    operation: o.operation,
    tenant,
    version,
    ...(threshold === undefined ? {} : { threshold }),
    committee,
    ...(epoch === undefined || o.operation === 'key.retire' ? {} : { epoch }),
    expiresAt: new Date(now + o.expiresInMs),
  });
}

/**
 * Submit, then follow: a DKG job until it completes (pinning the new group key), a reshare job
 * (cli/committee.ts submitReshare), or the nodes' answers to a key.retire (ERR_NODE_UNAVAILABLE when not every node applied it).
 */
export async function submitAndFollow(s: Session, p: Proposal, wait: boolean): Promise<void> {
  if (p.operation === 'committee.reshare' || p.operation === 'committee.refresh') {
    return submitReshare(s, p, wait);
  }
  const submitted = await s.client.submitProposal(p);
  if (submitted.kind === 'applied') return reportApplied(s, submitted);
  const { jobId } = submitted;
  const tenant = submitted.tenant ?? p.tenant ?? '';
  const version = submitted.version ?? p.version ?? 1;
  const operation = submitted.operation ?? p.operation;
  if (!wait) {
    s.note(`job ${jobId} queued; pin the key later with: kmaas tenant pin ${tenant}`);
    s.result({ ...submitted, pinned: false }, [jobId]);
    return;
  }
  s.note(`job ${jobId}: ${operation} of ${tenant} version ${version}`);
  const job = await followJob(s, jobId, false);
  const r = ((typeof job.result === 'object' && job.result) || {}) as {
    version?: unknown;
    groupKey?: unknown;
    keyPackage?: { groupKey?: unknown };
  };
  const done = typeof r.version === 'number' ? r.version : version;
  // The job may report the group key itself or the whole key package; either must match.
  const reported = r.groupKey ?? r.keyPackage?.groupKey;
  const expected = typeof reported === 'string' ? reported : undefined;
  const pin = await s.client.pinKeyPackage(tenant, done, expected);
  s.result(
    {
      tenant,
      version: done,
      operation,
      proposal: submitted.proposal,
      jobId,
      groupKey: pin.groupKey,
      pins: s.config.pinsFile,
    },
    [`tenant ${tenant} version ${done} group key ${pin.groupKey}`],
  );
}

function reportApplied(s: Session, a: Extract<ProposalSubmitted, { kind: 'applied' }>): void {
  const lines = a.nodes.map((n) =>
    n.ok
      ? `node ${n.node}  applied`
      : `node ${n.node}  refused ${n.error?.code}: ${n.error?.message}`,
  );
  s.result(a, [`${a.operation} of ${a.tenant} version ${a.version}`, ...lines]);
  if (!a.complete) {
    throw new KmaasError(
      'ERR_NODE_UNAVAILABLE',
      `not every committee node applied proposal ${a.proposal.slice(0, 12)}; submit it again once they are reachable`,
      { nodes: a.nodes.filter((n) => !n.ok).map((n) => n.node) },
    );
  }
}

/**
 * What every node would refuse, refused before it is sent: a proposal without a quorum of valid
 * signatures of the operator set (ERR_PROPOSAL_QUORUM), or expired (ERR_PROPOSAL_EXPIRED). The
 * cluster id is the coordinator's to check (coordinator/proposals.ts).
 */
export function checkBeforeSubmit(
  p: Proposal,
  set: OperatorSet,
  file: string,
  setFile: string,
  now = Date.now(),
): void {
  try {
    verifyQuorum(p, { ...set, clusterId: p.cluster }, now);
  } catch (err) {
    if (!(err instanceof KmaasError)) throw err;
    const next =
      err.code === 'ERR_PROPOSAL_QUORUM'
        ? `each operator signs it with kmaas proposal sign ${file} --key <key file>`
        : err.code === 'ERR_PROPOSAL_EXPIRED'
          ? 'create it again and have it signed'
          : 'create it again';
    throw new KmaasError(
      err.code,
      `${err.message} (operator set ${setFile}); every node would refuse it: ${next}, ` +
        'or pass --force to submit it anyway',
      err.details,
    );
  }
}

/** Adds `proposal` and its subcommands. `session` connects to the coordinator when needed. */
export function addProposalCommands(
  program: Command,
  io: Io,
  session: (cmd: Command) => Promise<Session>,
): void {
  const proposal = program
    .command('proposal')
    .description('operator proposals: create, sign, show and submit lifecycle changes');

  const out = (cmd: Command, value: Record<string, unknown>, lines: string[]) => {
    if (cmd.optsWithGlobals<GlobalOptions>().json) io.stdout(JSON.stringify(value, null, 2) + '\n');
    else for (const l of lines) io.stdout(l + '\n');
  };

  proposal
    .command('create')
    .description('write a new, unsigned proposal (committee and cluster id from the coordinator)')
    .addOption(
      new Option('--operation <op>', 'what the proposal does')
        .choices([...OPERATIONS])
        .makeOptionMandatory(),
    )
    .option('--tenant <tenant>', 'the tenant (key operations)')
    .option(
      '--every <seconds>',
      `committee.refresh: the period of the scheduled refresh (at least ${MIN_REFRESH_SECONDS})`,
      positive,
    )
    .option(
      '--version <v>',
      'key version (default: 1 to create, the next one to rotate; required to retire)',
      positive,
    )
    .option('--threshold <t>', 'nodes needed to derive a key (default: a majority)', positive)
    .addOption(
      new Option('--expires <duration>', 'how long signers have, e.g. 30m, 1h, 2d')
        .argParser(parseDuration)
        .default(3_600_000, '1h'),
    )
    .requiredOption('--out <file>', 'where to write the proposal (not overwritten without --force)')
    .option('--force', 'overwrite the output file')
    .action(
      async (
        o: {
          operation: Operation;
          tenant?: string;
          version?: number;
          threshold?: number;
          every?: number;
          expires: number;
          out: string;
          force?: boolean;
        },
        cmd: Command,
      ) => {
        const target = resolve(io.cwd, o.out);
        if (!o.force && (await stat(target).catch(() => undefined))) {
          throw new KmaasError(
            'ERR_VALIDATION',
            `output file ${o.out} already exists: pass --force to overwrite it`,
            {
              field: 'output',
            },
          );
        }
        const s = await session(cmd);
        const p = await createProposal(s.client, {
          ...(s.config.committee === undefined ? {} : { firstCommittee: s.config.committee }),
          operation: o.operation,
          ...(o.tenant === undefined ? {} : { tenant: o.tenant }),
          ...(o.version === undefined ? {} : { version: o.version }),
          ...(o.every === undefined ? {} : { everySeconds: o.every }),
          ...(o.threshold === undefined ? {} : { threshold: o.threshold }),
          expiresInMs: o.expires,
        });
        await writeProposal(io, o.out, p);
        for (const line of describeProposal(p)) s.note(line);
        s.result({ file: target, proposal: proposalId(p), ...p }, [
          `wrote ${o.out}: review it, then each operator runs kmaas proposal sign ${o.out} --key <key file>`,
        ]);
      },
    );

  proposal
    .command('sign <file>')
    .description('add your signature to a proposal (offline; the file is replaced atomically)')
    .requiredOption('--key <file>', 'your operator key file { id, secretKey }')
    .action(async (file: string, o: { key: string }, cmd: Command) => {
      const p = await readProposal(io, file);
      const key = await readOperatorKey(io, o.key);
      let signed: Proposal;
      try {
        signed = signProposal(p, key.id, key.secretKey);
      } finally {
        key.secretKey.fill(0);
      }
      await writeProposal(io, file, signed);
      for (const line of describeProposal(signed)) io.stderr(line + '\n');
      out(cmd, { file, proposal: proposalId(signed), operator: key.id }, [
        `signed ${file} as ${key.id} (${signed.signatures.length} signature(s))`,
      ]);
    });

  proposal
    .command('show <file>')
    .description('show a proposal, who signed it, and whether it has a quorum')
    .option(
      '--operators <file>',
      'operator set { quorum, operators } to check against (default: the one the cluster file names)',
    )
    .action(async (file: string, o: { operators?: string }, cmd: Command) => {
      const p = await readProposal(io, file);
      const config = await resolveConfig(cmd.optsWithGlobals<GlobalOptions>(), io);
      const setFile = o.operators ?? config.operatorsFile;
      const lines = describeProposal(p);
      const value: Record<string, unknown> = { proposal: proposalId(p), ...p };
      if (setFile !== undefined) {
        const set = await readOperatorSet(io, setFile);
        const check = checkSignatures(p, set);
        let verdict: string;
        try {
          verifyQuorum(p, { ...set, clusterId: p.cluster }, Date.now());
          verdict = 'quorum reached';
        } catch (err) {
          verdict = err instanceof KmaasError ? `${err.code}: ${err.message}` : String(err);
        }
        const quorum = check.valid.length >= set.quorum;
        Object.assign(value, { quorum: set.quorum, quorumReached: quorum, ...check, verdict });
        lines.push(
          `  valid      ${check.valid.join(', ') || '(none)'} (${check.valid.length} of ${set.quorum} required)`,
          ...(check.invalid.length ? [`  INVALID    ${check.invalid.join(', ')}`] : []),
          ...(check.unknown.length ? [`  unknown    ${check.unknown.join(', ')}`] : []),
          `  verdict    ${verdict}`,
        );
      } else {
        lines.push('  (no operators file: pass --operators to check the signatures)');
      }
      out(cmd, value, lines);
    });

  proposal
    .command('submit <file>')
    .description('submit a signed proposal and follow it (the nodes check the signatures)')
    .option(
      '--operators <file>',
      'operator set { quorum, operators } to check the signatures against first (default: the one the cluster file names)',
    )
    .option('--force', 'submit even when the operator set says the nodes will refuse it')
    .option('--no-wait', 'return once the job is queued')
    .action(
      async (
        file: string,
        o: { wait: boolean; operators?: string; force?: boolean },
        cmd: Command,
      ) => {
        const p = await readProposal(io, file);
        const s = await session(cmd);
        s.requireAdminToken('submit a proposal');
        const setFile = o.operators ?? s.config.operatorsFile;
        if (setFile !== undefined && !o.force) {
          checkBeforeSubmit(p, await readOperatorSet(io, setFile), file, setFile);
        }
        await submitAndFollow(s, p, o.wait);
      },
    );
}

/**
 * `kmaas tenant create|rotate|retire` on a development cluster: create the proposal, sign it with
 * the dev operator keys the cluster file names (or `keys`), submit it and follow it.
 * ERR_CONFIG when there are none.
 */
export async function proposeWithDevKeys(
  s: Session,
  io: Io,
  what: { operation: Operation; tenant: string; version?: number },
  o: { threshold: number | undefined; keys: readonly string[] },
  wait: boolean,
): Promise<void> {
  const { threshold, keys } = o;
  if (keys.length === 0) {
    throw new KmaasError(
      'ERR_CONFIG',
      `${what.operation} is an operator proposal and the cluster file names no operator keys: ` +
        'use kmaas proposal create, kmaas proposal sign and kmaas proposal submit',
      { field: 'operatorKeys' },
    );
  }
  let p = await createProposal(s.client, {
    operation: what.operation,
    tenant: what.tenant,
    ...(what.version === undefined ? {} : { version: what.version }),
    ...(threshold === undefined ? {} : { threshold }),
    expiresInMs: 10 * 60_000,
    ...(s.config.committee === undefined ? {} : { firstCommittee: s.config.committee }),
  });
  for (const file of keys) {
    const key = await readOperatorKey(io, file);
    try {
      p = signProposal(p, key.id, key.secretKey);
    } finally {
      key.secretKey.fill(0);
    }
  }
  s.note(`proposal ${proposalId(p)} signed by ${p.signatures.map((x) => x.operator).join(', ')}`);
  await submitAndFollow(s, p, wait);
}

/** `kmaas tenant create` on a development cluster (proposeWithDevKeys). */
export function createTenantWithDevKeys(
  s: Session,
  io: Io,
  tenant: string,
  o: { threshold: number | undefined; keys: readonly string[] },
  wait: boolean,
): Promise<void> {
  return proposeWithDevKeys(s, io, { operation: 'tenant.create', tenant }, o, wait);
}
