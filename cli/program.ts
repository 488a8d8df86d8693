/**
 * The `kmaas` command line: coordinator status (status.ts), operator proposals (proposal.ts),
 * committee changes (committee.ts), tenant creation, rotation and retirement with key pinning,
 * and file encryption and decryption through the SDK.
 *
 * Output: results go to stdout (one JSON document with --json), progress and notes to stderr.
 * Every failure is one line `error ERR_CODE: message` on stderr and exit status 1. Tokens,
 * passwords and keys are never printed; group keys (public) are. Deriving keys (encrypt, decrypt)
 * signs a user in first (sign-in.ts).
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { FileHandle } from 'node:fs/promises';
import { open, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { KmaasError, isErrorCode, type ErrorCode } from '../shared/errors.ts';
import {
  KmaasClient,
  readHeader,
  type ClientAuth,
  type ClientEvent,
  type EnvelopeHeader,
} from '../client/index.ts';
import type { FetchLike } from '../client/http.ts';
import { writeStreamAtomic } from './atomic.ts';
import { addAuditCommand } from './audit.ts';
import { resolveConfig, type Config, type GlobalOptions } from './config.ts';
import { explain, noAdminTokenError, noUrlError, type SessionFacts } from './explain.ts';
import { ENVIRONMENT_HELP, PROGRAM_HELP } from './help.ts';
import { FilePinStore } from './pin-file.ts';
import { addCommitteeCommands, readStatusView } from './committee.ts';
import { addJobCommand } from './job.ts';
import { addProposalCommands, createTenantWithDevKeys, proposeWithDevKeys } from './proposal.ts';
import { addRewrapCommand } from './rewrap.ts';
import { checkRetire } from './retire-guard.ts';
import { keyEpochs, statusLines, type TenantStatus } from './status.ts';
import { signIn } from './sign-in.ts';

export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  cwd: string;
  home: string;
}

function positiveInt(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
      throw new InvalidArgumentError(`${name} must be a positive integer`);
    }
    return n;
  };
}

/**
 * Text that reached us from the coordinator (error messages, job phases, status fields) goes to a
 * terminal: control characters are replaced so it cannot move the cursor or rewrite the screen.
 */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, '?');
}

/** Node's file errors that are the user's to fix, as opposed to faults of the tool. */
const USER_FILE_ERRORS = new Set(['ENOENT', 'EACCES', 'EPERM', 'EISDIR', 'ENOTDIR', 'EEXIST']);

export function describeError(err: unknown): { code: ErrorCode; message: string } {
  if (err instanceof KmaasError) return { code: err.code, message: err.message };
  if (err instanceof CommanderError) {
    return { code: 'ERR_VALIDATION', message: err.message.replace(/^error: /, '') };
  }
  const sys = err as NodeJS.ErrnoException;
  if (err instanceof Error && typeof sys.code === 'string') {
    if (isErrorCode(sys.code)) return { code: sys.code, message: err.message };
    return {
      code: USER_FILE_ERRORS.has(sys.code) ? 'ERR_VALIDATION' : 'ERR_INTERNAL',
      message: err.message,
    };
  }
  return { code: 'ERR_INTERNAL', message: err instanceof Error ? err.message : String(err) };
}

export class Session implements SessionFacts {
  readonly client: KmaasClient;
  readonly pins: FilePinStore;
  unreachable = false;
  private readonly watched: FetchLike;

  constructor(
    readonly config: Config,
    private readonly io: Io,
  ) {
    if (!config.url) throw noUrlError(config);
    this.pins = new FilePinStore(config.pinsFile);
    // Notes whether the coordinator failed to answer at all, as opposed to answering an error.
    this.watched = async (input, init) => {
      try {
        return await fetch(input, init);
      } catch (err) {
        if (!(err instanceof Error && err.name === 'TimeoutError')) this.unreachable = true;
        throw err;
      }
    };
    this.client = this.makeClient(undefined);
  }

  private makeClient(auth: ClientAuth | undefined): KmaasClient {
    return new KmaasClient({
      baseUrl: this.config.url!,
      fetch: this.watched,
      ...(auth === undefined ? {} : { auth }),
      ...(this.config.adminToken === undefined ? {} : { adminToken: this.config.adminToken }),
      pins: this.pins,
      trustOnFirstUse: this.config.trustOnFirstUse,
      onEvent: (e) => this.onEvent(e),
    });
  }

  requireAdminToken(operation: string): void {
    if (this.config.adminToken === undefined) throw noAdminTokenError(this.config, operation);
  }

  /** A client that derives keys as a user of `tenant`, signed in now with a new DPoP key. */
  async signedIn(tenant: string, operation: string): Promise<KmaasClient> {
    const login = await signIn(this.config, tenant, operation);
    return this.makeClient({ accessToken: login.accessToken, dpopKey: login.dpopKey });
  }

  note(line: string): void {
    this.io.stderr(printable(line) + '\n');
  }

  /** The result: JSON on stdout with --json, else human lines on stdout. */
  result(value: Record<string, unknown>, human: string[]): void {
    if (this.config.json) this.io.stdout(JSON.stringify(value, null, 2) + '\n');
    else for (const line of human) this.io.stdout(printable(line) + '\n');
  }

  private onEvent(e: ClientEvent): void {
    if (e.type === 'key-pinned') {
      const why = e.reason === 'trust-on-first-use' ? ' on first use' : '';
      this.note(`pinned group key of ${e.tenant} version ${e.version}${why}: ${e.groupKey}`);
    } else {
      for (const r of e.rejected) {
        this.note(`warning: refused the answer of node ${r.node}: ${r.code}: ${r.message}`);
      }
    }
  }
}

function fileError(
  err: unknown,
  field: 'input' | 'output',
  what: string,
  path: string,
): KmaasError | undefined {
  const code = (err as NodeJS.ErrnoException).code;
  const why =
    code === 'ENOENT' || code === 'ENOTDIR'
      ? `${what} not found: ${path}`
      : code === 'EACCES' || code === 'EPERM'
        ? `${what} not readable: ${path} (permission denied)`
        : undefined;
  return why === undefined ? undefined : new KmaasError('ERR_VALIDATION', why, { field, path });
}

/** Open the input file, or say plainly why it cannot be read (ERR_VALIDATION, field 'input'). */
async function openInput(absolute: string, given: string): Promise<FileHandle> {
  try {
    if ((await stat(absolute)).isDirectory()) {
      throw new KmaasError('ERR_VALIDATION', `input ${given} is a folder, not a file`, {
        field: 'input',
        path: given,
      });
    }
    return await open(absolute, 'r');
  } catch (err) {
    throw fileError(err, 'input', 'input file', given) ?? err;
  }
}

function outputExists(given: string): KmaasError {
  return new KmaasError(
    'ERR_VALIDATION',
    `output file ${given} already exists: pass --force to overwrite it`,
    { field: 'output', path: given },
  );
}

/**
 * Before any key is derived: the output's folder must exist, and the output must not, unless
 * `force` (ERR_VALIDATION, field 'output'). The write itself checks again (atomic.ts).
 */
async function checkOutput(absolute: string, given: string, force: boolean): Promise<void> {
  const existing = await stat(absolute).catch(() => undefined);
  if (existing?.isDirectory()) {
    throw new KmaasError('ERR_VALIDATION', `output ${given} is a folder, not a file`, {
      field: 'output',
      path: given,
    });
  }
  if (existing && !force) throw outputExists(given);
  const folder = await stat(dirname(absolute)).catch((err: unknown) => {
    throw fileError(err, 'output', 'output folder', dirname(given)) ?? err;
  });
  if (!folder.isDirectory()) {
    throw new KmaasError('ERR_VALIDATION', `output folder not found: ${dirname(given)}`, {
      field: 'output',
      path: given,
    });
  }
}

/** Write the output atomically; an output that appeared meanwhile is still not overwritten. */
async function writeOutput(
  absolute: string,
  given: string,
  force: boolean,
  source: AsyncIterable<Uint8Array>,
): Promise<number> {
  try {
    return await writeStreamAtomic(absolute, source, { overwrite: force });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST' && !force) throw outputExists(given);
    throw err;
  }
}

/** The header of the envelope in a file (ERR_ENVELOPE_FORMAT when it is none). */
async function envelopeHeader(absolute: string, given: string): Promise<EnvelopeHeader> {
  const fh = await openInput(absolute, given);
  const stream = fh.createReadStream();
  try {
    const reader = await readHeader(stream);
    await reader.close();
    return reader.header;
  } finally {
    stream.destroy();
  }
}

async function tenantStatuses(
  client: KmaasClient,
  names: string[],
  epochs: ReadonlyMap<string, number>,
): Promise<TenantStatus[]> {
  const out: TenantStatus[] = [];
  // A few at a time: one request per tenant.
  for (let i = 0; i < names.length; i += 8) {
    const batch = names.slice(i, i + 8).map(async (tenant): Promise<TenantStatus> => {
      try {
        const info = await client.tenant(tenant);
        const versions = [...info.versions]
          .sort((a, b) => a.version - b.version)
          .map((v) => {
            const epoch = epochs.get(`${tenant}/${v.version}`);
            return epoch === undefined ? v : { ...v, epoch };
          });
        return { tenant, versions };
      } catch (err) {
        return { tenant, error: describeError(err) };
      }
    });
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

export function buildProgram(io: Io, current: { session?: Session } = {}): Command {
  const session = async (cmd: Command): Promise<Session> => {
    const config = await resolveConfig(cmd.optsWithGlobals<GlobalOptions>(), io);
    current.session = new Session(config, io);
    return current.session;
  };

  const program = new Command('kmaas')
    .description('KMaaS: threshold-derived document keys. Operator and client tool.')
    .addOption(new Option('--url <url>', 'coordinator base URL').env('KMAAS_URL'))
    .addOption(
      new Option('--user <name>', 'the user who signs in to derive keys (encrypt, decrypt)').env(
        'KMAAS_USER',
      ),
    )
    .addOption(
      new Option(
        '--password-file <file>',
        "a file holding the user's password (else KMAAS_PASSWORD; never a value on the command line)",
      ).env('KMAAS_PASSWORD_FILE'),
    )
    .addOption(
      new Option('--issuer <url>', 'the OpenID Connect issuer to sign in at').env(
        'KMAAS_OIDC_ISSUER',
      ),
    )
    .addOption(
      new Option('--admin-token <token>', 'operator token (prefer the env)').env(
        'KMAAS_ADMIN_TOKEN',
      ),
    )
    .addOption(
      new Option(
        '--pins <file>',
        'pinned group keys (default: the pins file the cluster file names, else ~/.kmaas/pins.json)',
      ).env('KMAAS_PINS'),
    )
    .addOption(
      new Option(
        '--cluster <file>',
        'cluster file { url, adminToken, pins, issuer, devUsers } giving defaults (default: ./data/cluster/cluster.json in the current folder, when it exists)',
      ).env('KMAAS_CLUSTER'),
    )
    .option('--json', 'machine-readable output on stdout')
    .option('--trust-on-first-use', 'pin group keys seen for the first time instead of refusing')
    .showSuggestionAfterError()
    .configureHelp({ showGlobalOptions: true })
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout(s),
      writeErr: (s) => io.stderr(s),
      // Errors are printed by run(), in the one-line format.
      outputError: () => undefined,
    });

  program
    .command('status')
    .description(
      'show the epoch (committee, threshold), each node (member or spare, its epoch, health) and each tenant with its key versions',
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const s = await session(cmd);
      const status = await s.client.status();
      const view = await readStatusView(s.client, status);
      const names = (Array.isArray(status.tenants) ? (status.tenants as unknown[]) : [])
        .map((t) => (typeof t === 'string' ? t : undefined))
        .filter((t): t is string => t !== undefined)
        .sort();
      const tenants = await tenantStatuses(s.client, names, keyEpochs(status));
      s.result({ ...status, tenants }, statusLines(view, tenants));
    });

  const tenant = program.command('tenant').description('tenant keys');

  tenant
    .command('create <tenant>')
    .description(
      'development clusters: propose, sign with the dev operator keys the cluster file names, submit, and pin the group key',
    )
    .option(
      '--threshold <t>',
      "nodes needed to derive a key (default: the committee's, else a majority of the nodes)",
      positiveInt('threshold'),
    )
    .option(
      '--operator-key <file>',
      'an operator key file to sign with (repeatable; default: the keys the cluster file names)',
      (file: string, files: string[] = []) => [...files, file],
    )
    .option('--no-wait', 'return once the job is queued (the key is then not pinned)')
    .action(
      async (
        name: string,
        opts: { threshold?: number; wait: boolean; operatorKey?: string[] },
        cmd: Command,
      ) => {
        const s = await session(cmd);
        s.requireAdminToken('create a tenant');
        const keys = opts.operatorKey ?? s.config.operatorKeys;
        await createTenantWithDevKeys(s, io, name, { threshold: opts.threshold, keys }, opts.wait);
      },
    );

  tenant
    .command('rotate <tenant>')
    .description(
      'development clusters: a new key version (key.rotate proposal signed with the dev operator keys), then pin it',
    )
    .option(
      '--operator-key <file>',
      'an operator key file to sign with (repeatable; default: the keys the cluster file names)',
      (file: string, files: string[] = []) => [...files, file],
    )
    .option('--no-wait', 'return once the job is queued (the key is then not pinned)')
    .action(async (name: string, opts: { wait: boolean; operatorKey?: string[] }, cmd: Command) => {
      const s = await session(cmd);
      s.requireAdminToken('rotate a tenant key');
      const keys = opts.operatorKey ?? s.config.operatorKeys;
      await proposeWithDevKeys(
        s,
        io,
        { operation: 'key.rotate', tenant: name },
        { threshold: undefined, keys },
        opts.wait,
      );
    });

  tenant
    .command('retire <tenant>')
    .description(
      'development clusters: retire a key version (key.retire proposal signed with the dev operator keys); its documents can no longer be opened',
    )
    .requiredOption('--key-version <v>', 'the key version to retire', positiveInt('key version'))
    .option(
      '--last',
      "retire even the tenant's last live version (every document of the tenant is lost for good)",
    )
    .option(
      '--operator-key <file>',
      'an operator key file to sign with (repeatable; default: the keys the cluster file names)',
      (file: string, files: string[] = []) => [...files, file],
    )
    .action(
      async (
        name: string,
        opts: { keyVersion: number; last?: boolean; operatorKey?: string[] },
        cmd: Command,
      ) => {
        const s = await session(cmd);
        s.requireAdminToken('retire a tenant key');
        checkRetire(await s.client.tenant(name), opts.keyVersion, opts.last === true);
        const keys = opts.operatorKey ?? s.config.operatorKeys;
        await proposeWithDevKeys(
          s,
          io,
          { operation: 'key.retire', tenant: name, version: opts.keyVersion },
          { threshold: undefined, keys },
          true,
        );
      },
    );

  tenant
    .command('pin <tenant>')
    .description('pin the group key the coordinator serves now for a tenant key version')
    .option('--key-version <v>', 'key version (default: the latest)', positiveInt('key version'))
    .action(async (name: string, opts: { keyVersion?: number }, cmd: Command) => {
      const s = await session(cmd);
      const version = opts.keyVersion ?? (await s.client.latestVersion(name));
      const pin = await s.client.pinKeyPackage(name, version);
      s.result({ tenant: name, version, groupKey: pin.groupKey, newlyPinned: pin.newlyPinned }, [
        `tenant ${name} version ${version} group key ${pin.groupKey}` +
          (pin.newlyPinned ? '' : ' (already pinned)'),
      ]);
    });

  tenant
    .command('show <tenant>')
    .description('show the key versions of a tenant')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const s = await session(cmd);
      const info = await s.client.tenant(name);
      s.result(
        info,
        info.versions.map(
          (v) =>
            `version ${v.version} threshold ${v.threshold ?? '?'} group key ${v.groupKey ?? '?'}`,
        ),
      );
    });

  program
    .command('encrypt <input>')
    .description('encrypt a file under its per-document key')
    .requiredOption(
      '-o, --output <file>',
      'where to write the envelope (an existing file only with --force)',
    )
    .requiredOption('--tenant <tenant>', 'the tenant whose key is used')
    .option('--doc <id>', 'document id (default: the input file name)')
    .option('--key-version <v>', 'key version (default: the latest)', positiveInt('key version'))
    .option('--force', 'overwrite the output file if it exists')
    .action(
      async (
        input: string,
        opts: {
          output: string;
          tenant: string;
          doc?: string;
          keyVersion?: number;
          force?: boolean;
        },
        cmd: Command,
      ) => {
        const s = await session(cmd);
        const inPath = resolve(io.cwd, input);
        const outPath = resolve(io.cwd, opts.output);
        const force = opts.force ?? false;
        // Check the files first, so that a mistake fails before anyone signs in.
        await checkOutput(outPath, opts.output, force);
        const fh = await openInput(inPath, input);
        const stream = fh.createReadStream();
        try {
          const client = await s.signedIn(opts.tenant, 'derive the document key');
          const sealed = await client.encrypt(stream, {
            tenant: opts.tenant,
            documentId: opts.doc ?? basename(inPath),
            ...(opts.keyVersion === undefined ? {} : { keyVersion: opts.keyVersion }),
          });
          const bytes = await writeOutput(outPath, opts.output, force, sealed);
          s.result(
            {
              input: inPath,
              output: outPath,
              bytes,
              tenant: sealed.tenant,
              keyVersion: sealed.keyVersion,
              documentId: sealed.documentId,
              nodes: sealed.nodes,
            },
            [
              `encrypted ${input} -> ${opts.output}: tenant ${sealed.tenant}, key version ` +
                `${sealed.keyVersion}, document ${sealed.documentId}, nodes ${sealed.nodes.join(',')}`,
            ],
          );
        } finally {
          stream.destroy();
        }
      },
    );

  program
    .command('decrypt <input>')
    .description('decrypt an envelope; the key is derived for the tenant and document it names')
    .requiredOption(
      '-o, --output <file>',
      'where to write the plaintext (an existing file only with --force)',
    )
    .option('--tenant <tenant>', 'refuse an envelope of another tenant')
    .option('--doc <id>', 'refuse an envelope of another document')
    .option('--force', 'overwrite the output file if it exists')
    .action(
      async (
        input: string,
        opts: { output: string; tenant?: string; doc?: string; force?: boolean },
        cmd: Command,
      ) => {
        const s = await session(cmd);
        const inPath = resolve(io.cwd, input);
        const outPath = resolve(io.cwd, opts.output);
        const force = opts.force ?? false;
        await checkOutput(outPath, opts.output, force);
        // The envelope names the tenant whose user signs in: read its header first.
        const header = await envelopeHeader(inPath, input);
        const fh = await openInput(inPath, input);
        const stream = fh.createReadStream();
        try {
          // An envelope of another tenant or document than asked for is refused by decrypt()
          // before any key is derived: nobody needs to sign in for that.
          const refused =
            (opts.tenant !== undefined && opts.tenant !== header.tenant) ||
            (opts.doc !== undefined && opts.doc !== header.documentId);
          const client = refused
            ? s.client
            : await s.signedIn(header.tenant, 'derive the document key');
          const opened = await client.decrypt(stream, {
            ...(opts.tenant === undefined ? {} : { tenant: opts.tenant }),
            ...(opts.doc === undefined ? {} : { documentId: opts.doc }),
          });
          const bytes = await writeOutput(outPath, opts.output, force, opened);
          // Only now: every chunk authenticated and the plaintext is in place.
          s.note(
            `tenant ${opened.tenant}, key version ${opened.keyVersion}, document ` +
              `${opened.documentId}, nodes ${opened.nodes.join(',')}`,
          );
          s.result(
            {
              input: inPath,
              output: outPath,
              bytes,
              tenant: opened.tenant,
              keyVersion: opened.keyVersion,
              documentId: opened.documentId,
              nodes: opened.nodes,
            },
            [`decrypted ${input} -> ${opts.output} (${bytes} bytes)`],
          );
        } finally {
          stream.destroy();
        }
      },
    );

  addProposalCommands(program, io, session);
  addRewrapCommand(program, io, session);
  addCommitteeCommands(program, io, session);
  addJobCommand(program, io, session);
  addAuditCommand(program, io);

  // Every command's help ends with where its settings come from.
  const withHelp = (cmd: Command): void => {
    cmd.addHelpText('after', ENVIRONMENT_HELP);
    for (const sub of cmd.commands) withHelp(sub);
  };
  withHelp(program);
  program.addHelpText('after', PROGRAM_HELP);
  return program;
}

/** Run one command line (without the node and script arguments). Resolves with the exit status. */
export async function run(args: readonly string[], io: Io): Promise<number> {
  const current: { session?: Session } = {};
  const program = buildProgram(io, current);
  try {
    await program.parseAsync([...args], { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError && err.exitCode === 0) return 0;
    if (
      err instanceof CommanderError &&
      (err.code === 'commander.help' || err.code === 'commander.helpDisplayed')
    ) {
      return err.exitCode;
    }
    const { code, message } = describeError(explain(err, current.session));
    io.stderr(`error ${code}: ${printable(message).replace(/\n/g, ' ')}\n`);
    if (process.env.KMAAS_DEBUG && !(err instanceof KmaasError) && err instanceof Error) {
      io.stderr(`${err.stack}\n`);
    }
    return 1;
  }
}
