/**
 * The `kmaas` command line: coordinator status, tenant creation with key pinning, and file
 * encryption and decryption through the SDK.
 *
 * Output: results go to stdout (one JSON document with --json), progress and notes to stderr.
 * Every failure is one line `error ERR_CODE: message` on stderr and exit status 1. Tokens and
 * keys are never printed; group keys (public) are.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { open } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { KmaasError, isErrorCode, type ErrorCode } from '../shared/errors.ts';
import { KmaasClient, type ClientEvent, type Job } from '../client/index.ts';
import { writeStreamAtomic } from './atomic.ts';
import { resolveConfig, type Config, type GlobalOptions } from './config.ts';
import { FilePinStore } from './pin-file.ts';

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

class Session {
  readonly client: KmaasClient;
  readonly pins: FilePinStore;

  constructor(
    readonly config: Config,
    private readonly io: Io,
  ) {
    if (!config.url) {
      throw new KmaasError(
        'ERR_CONFIG',
        'no coordinator URL: pass --url, set KMAAS_URL, or give a cluster file with --cluster',
        { field: 'url' },
      );
    }
    this.pins = new FilePinStore(config.pinsFile);
    this.client = new KmaasClient({
      baseUrl: config.url,
      ...(config.token === undefined ? {} : { token: config.token }),
      ...(config.adminToken === undefined ? {} : { adminToken: config.adminToken }),
      pins: this.pins,
      trustOnFirstUse: config.trustOnFirstUse,
      onEvent: (e) => this.onEvent(e),
    });
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

function progressLine(job: Job): string {
  const p = job.progress;
  const count = p.done !== undefined && p.total !== undefined ? ` ${p.done}/${p.total}` : '';
  return `job ${job.id}: ${job.state}${p.phase ? ` ${p.phase}` : ''}${count}`;
}

function formatValue(v: unknown): string {
  return typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);
}

export function buildProgram(io: Io): Command {
  const session = async (cmd: Command): Promise<Session> => {
    const config = await resolveConfig(cmd.optsWithGlobals<GlobalOptions>(), io);
    return new Session(config, io);
  };

  const program = new Command('kmaas')
    .description('KMaaS: threshold-derived document keys. Operator and client tool.')
    .addOption(new Option('--url <url>', 'coordinator base URL').env('KMAAS_URL'))
    .addOption(
      new Option('--token <token>', 'client token for key derivation (prefer the env)').env(
        'KMAAS_TOKEN',
      ),
    )
    .addOption(
      new Option('--admin-token <token>', 'operator token (prefer the env)').env(
        'KMAAS_ADMIN_TOKEN',
      ),
    )
    .addOption(
      new Option('--pins <file>', 'pinned group keys (default ~/.kmaas/pins.json)').env(
        'KMAAS_PINS',
      ),
    )
    .addOption(
      new Option(
        '--cluster <file>',
        'cluster file { url, token, adminToken, pins } giving defaults (default ./data/cluster/cluster.json if present)',
      ).env('KMAAS_CLUSTER'),
    )
    .option('--json', 'machine-readable output on stdout')
    .option('--trust-on-first-use', 'pin group keys seen for the first time instead of refusing')
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout(s),
      writeErr: (s) => io.stderr(s),
      // Errors are printed by run(), in the one-line format.
      outputError: () => undefined,
    });

  program
    .command('status')
    .description('show the nodes and tenants the coordinator knows')
    .action(async (_opts: unknown, cmd: Command) => {
      const s = await session(cmd);
      const status = await s.client.status();
      const lines: string[] = [];
      for (const n of status.nodes) {
        const rest = Object.entries(n)
          .filter(([k]) => k !== 'id')
          .map(([k, v]) => `${k}=${formatValue(v)}`);
        lines.push(`node ${n.id}  ${rest.join('  ')}`);
      }
      const tenants = Array.isArray(status.tenants) ? (status.tenants as unknown[]) : [];
      for (const t of tenants) lines.push(`tenant ${formatValue(t)}`);
      s.result(status, lines);
    });

  const tenant = program.command('tenant').description('tenant keys');

  tenant
    .command('create <tenant>')
    .description('create a tenant key by distributed key generation and pin its group key')
    .option('--threshold <t>', 'nodes needed to derive a key', positiveInt('threshold'))
    .option('--no-wait', 'return once the job is queued (the key is then not pinned)')
    .action(async (name: string, opts: { threshold?: number; wait: boolean }, cmd: Command) => {
      const s = await session(cmd);
      const created = await s.client.createTenant(
        name,
        opts.threshold === undefined ? {} : { threshold: opts.threshold },
      );
      if (!opts.wait) {
        s.note(`job ${created.jobId} queued; pin the key later with: kmaas tenant pin ${name}`);
        s.result({ ...created, pinned: false }, [created.jobId]);
        return;
      }
      let last = '';
      const job = await s.client.waitForJob(created.jobId, {
        onProgress: (j) => {
          const line = progressLine(j);
          if (line !== last) s.note(line);
          last = line;
        },
      });
      const result = (typeof job.result === 'object' && job.result) || {};
      const r = result as { version?: unknown; groupKey?: unknown; keyPackage?: unknown };
      const version = typeof r.version === 'number' ? r.version : created.version;
      // The job may report the group key itself or the whole key package; either must match.
      const reported = r.groupKey ?? (r.keyPackage as { groupKey?: unknown } | undefined)?.groupKey;
      const expected = typeof reported === 'string' ? reported : undefined;
      const pin = await s.client.pinKeyPackage(name, version, expected);
      s.result(
        {
          tenant: name,
          version,
          jobId: created.jobId,
          groupKey: pin.groupKey,
          pins: s.config.pinsFile,
        },
        [`tenant ${name} version ${version} group key ${pin.groupKey}`],
      );
    });

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
    .requiredOption('-o, --output <file>', 'where to write the envelope')
    .requiredOption('--tenant <tenant>', 'the tenant whose key is used')
    .option('--doc <id>', 'document id (default: the input file name)')
    .option('--key-version <v>', 'key version (default: the latest)', positiveInt('key version'))
    .action(
      async (
        input: string,
        opts: { output: string; tenant: string; doc?: string; keyVersion?: number },
        cmd: Command,
      ) => {
        const s = await session(cmd);
        const inPath = resolve(io.cwd, input);
        const outPath = resolve(io.cwd, opts.output);
        // Open first, so a missing input fails before any key is derived.
        const fh = await open(inPath, 'r');
        const stream = fh.createReadStream();
        try {
          const sealed = await s.client.encrypt(stream, {
            tenant: opts.tenant,
            documentId: opts.doc ?? basename(inPath),
            ...(opts.keyVersion === undefined ? {} : { keyVersion: opts.keyVersion }),
          });
          const bytes = await writeStreamAtomic(outPath, sealed);
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
    .requiredOption('-o, --output <file>', 'where to write the plaintext')
    .option('--tenant <tenant>', 'refuse an envelope of another tenant')
    .option('--doc <id>', 'refuse an envelope of another document')
    .action(
      async (
        input: string,
        opts: { output: string; tenant?: string; doc?: string },
        cmd: Command,
      ) => {
        const s = await session(cmd);
        const inPath = resolve(io.cwd, input);
        const outPath = resolve(io.cwd, opts.output);
        const fh = await open(inPath, 'r');
        const stream = fh.createReadStream();
        try {
          const opened = await s.client.decrypt(stream, {
            ...(opts.tenant === undefined ? {} : { tenant: opts.tenant }),
            ...(opts.doc === undefined ? {} : { documentId: opts.doc }),
          });
          s.note(
            `tenant ${opened.tenant}, key version ${opened.keyVersion}, document ` +
              `${opened.documentId}, nodes ${opened.nodes.join(',')}`,
          );
          const bytes = await writeStreamAtomic(outPath, opened);
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

  return program;
}

/** Run one command line (without the node and script arguments). Resolves with the exit status. */
export async function run(args: readonly string[], io: Io): Promise<number> {
  const program = buildProgram(io);
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
    const { code, message } = describeError(err);
    io.stderr(`error ${code}: ${printable(message).replace(/\n/g, ' ')}\n`);
    if (process.env.KMAAS_DEBUG && !(err instanceof KmaasError) && err instanceof Error) {
      io.stderr(`${err.stack}\n`);
    }
    return 1;
  }
}
