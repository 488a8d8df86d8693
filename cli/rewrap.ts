/**
 * `kmaas rewrap <file|folder>`: after a key rotation (key.rotate), move envelopes to the newest
 * key version of their tenant (or --to-version), so that the old version can be retired
 * (key.retire). SDK side: client/rewrap.ts.
 *
 *   1. find the envelopes: the file given, or every regular file under the folder (recursively,
 *      symbolic links not followed) that starts with the envelope magic "KMAASENC" (envelope.ts);
 *      other files are skipped and counted, the temporary files of an interrupted run ignored
 *   2. read each envelope's header: tenant, key version, document id
 *   3. per tenant, for each batch of BATCH envelopes: sign in as for decrypt (sign-in.ts), and
 *      derive the old and new keys in one planRewrap (a deriveKeys per version)
 *   4. per envelope: re-seal it into a temporary file beside the target and rename it over the
 *      target (atomic.ts), in place by default or under --out; a kill at any moment leaves the
 *      old file or the new one, never a mix. The new envelope is complete only if the old one
 *      authenticated to its end (client/rewrap.ts), else it is not written at all.
 *
 * One progress line per file on stderr, a summary (rewrapped, already current, failed) on
 * stdout, and exit status 1 when any file failed.
 */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import {
  envelopeBytes,
  readHeader,
  rewrapStream,
  type EnvelopeHeader,
  type RewrapPlan,
  type RewrapPlans,
} from '../client/index.ts';
import { FIXED_PREFIX_BYTES, MAGIC } from '../client/envelope.ts';
import { KmaasError, type ErrorCode } from '../shared/errors.ts';
import { writeStreamAtomic } from './atomic.ts';
import { describeError, type Io, type Session } from './program.ts';

/** Envelopes planned (keys derived and held) at once. */
export const BATCH = 256;

/** The temporary files atomic.ts writes: `.<name>.<12 hex>.tmp`. */
const TEMP_FILE = /^\..+\.[0-9a-f]{12}\.tmp$/;

type Outcome = 'rewrapped' | 'current' | 'failed';

interface FileResult {
  /** As shown: relative to the folder given, or the file given. */
  file: string;
  output: string;
  outcome: Outcome;
  tenant?: string;
  documentId?: string;
  fromVersion?: number;
  toVersion?: number;
  error?: { code: ErrorCode; message: string };
}

interface Job {
  /** Absolute path of the envelope. */
  path: string;
  /** Absolute path to write. */
  output: string;
  shown: string;
  header?: EnvelopeHeader;
}

function versionArg(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1 || n > 0xffffffff) {
    throw new InvalidArgumentError('key version must be a positive 32-bit integer');
  }
  return n;
}

/** Whether the file starts with the envelope magic (a short file does not). */
async function looksLikeEnvelope(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const head = new Uint8Array(FIXED_PREFIX_BYTES);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    return bytesRead === head.length && MAGIC.every((b, i) => head[i] === b);
  } finally {
    await fh.close();
  }
}

/** Every regular file under `folder`, sorted, symbolic links and atomic.ts's temporaries left out. */
async function walk(folder: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory()) await visit(path);
      else if (e.isFile() && !TEMP_FILE.test(e.name)) out.push(path);
    }
  };
  await visit(folder);
  return out;
}

async function headerOf(path: string): Promise<EnvelopeHeader> {
  const stream = createReadStream(path);
  try {
    const reader = await readHeader(stream);
    await reader.close();
    return reader.header;
  } finally {
    stream.destroy();
  }
}

function sameHeader(a: EnvelopeHeader, b: EnvelopeHeader): boolean {
  return (
    a.tenant === b.tenant &&
    a.keyVersion === b.keyVersion &&
    a.documentId === b.documentId &&
    a.chunkSize === b.chunkSize &&
    a.salt === b.salt
  );
}

/** Where the files come from and go to, checked before anyone signs in. */
async function findJobs(
  io: Io,
  input: string,
  out: string | undefined,
): Promise<{ jobs: Job[]; skipped: string[] }> {
  const inPath = resolve(io.cwd, input);
  const info = await stat(inPath).catch((err: unknown) => {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new KmaasError('ERR_VALIDATION', `input not found: ${input}`, {
        field: 'input',
        path: input,
      });
    }
    throw err;
  });
  const folder = info.isDirectory();
  const outDir = out === undefined ? undefined : resolve(io.cwd, out);
  if (outDir !== undefined) {
    // Writing into the tree being read would make the next run find the outputs as inputs, and
    // an output folder that is the input's own folder is the in-place rewrap without --out.
    const base = folder ? inPath : dirname(inPath);
    if (outDir === base || (folder && outDir.startsWith(inPath + sep))) {
      throw new KmaasError(
        'ERR_VALIDATION',
        `--out ${out} is inside the input; leave --out out to rewrap in place`,
        { field: 'out', path: out },
      );
    }
  }
  if (!folder) {
    const output = outDir === undefined ? inPath : join(outDir, basename(inPath));
    return { jobs: [{ path: inPath, output, shown: input }], skipped: [] };
  }
  const jobs: Job[] = [];
  const skipped: string[] = [];
  for (const path of await walk(inPath)) {
    const rel = relative(inPath, path);
    const shown = join(input, rel);
    // Only envelopes: a folder of documents holds other files too.
    if (!(await looksLikeEnvelope(path).catch(() => true))) {
      skipped.push(shown);
      continue;
    }
    jobs.push({ path, output: outDir === undefined ? path : join(outDir, rel), shown });
  }
  return { jobs, skipped };
}

/** Write one planned envelope; the outcome, or a thrown error. */
async function rewrapOne(
  job: Job,
  plan: RewrapPlan,
  inPlace: boolean,
  force: boolean,
): Promise<Outcome> {
  if (plan.action === 'failed') throw plan.error;
  if (plan.action === 'current' && inPlace) return 'current';
  const mode = (await stat(job.path)).mode & 0o777;
  const stream = createReadStream(job.path);
  try {
    const reader = await readHeader(stream);
    if (!sameHeader(reader.header, plan.header)) {
      await reader.close();
      throw new KmaasError('ERR_VALIDATION', 'the file changed while it was being rewrapped', {
        field: 'input',
      });
    }
    // Under --out, an envelope already current is copied as it is, so the folder is complete.
    const bytes =
      plan.action === 'current'
        ? envelopeBytes(reader)
        : rewrapStream(reader, {
            fromKey: plan.fromKey,
            toKey: plan.toKey,
            toVersion: plan.toVersion,
          });
    if (!inPlace) await mkdir(dirname(job.output), { recursive: true });
    try {
      await writeStreamAtomic(job.output, bytes, { mode, overwrite: inPlace || force });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new KmaasError(
          'ERR_VALIDATION',
          `output ${job.output} already exists: pass --force to overwrite it`,
          { field: 'output' },
        );
      }
      throw err;
    }
    return plan.action === 'current' ? 'current' : 'rewrapped';
  } finally {
    stream.destroy();
  }
}

function progressLine(n: number, total: number, r: FileResult): string {
  const at = `[${n}/${total}] ${r.file}`;
  if (r.outcome === 'failed') return `${at}: failed: ${r.error!.code}: ${r.error!.message}`;
  if (r.outcome === 'current') return `${at}: already at key version ${r.toVersion}`;
  return `${at}: key version ${r.fromVersion} -> ${r.toVersion}`;
}

export function addRewrapCommand(
  program: Command,
  io: Io,
  session: (cmd: Command) => Promise<Session>,
): void {
  program
    .command('rewrap <path>')
    .description(
      'move envelopes (a file, or every envelope under a folder) to the newest key version of their tenant, in place and atomically',
    )
    .option('--to-version <v>', 'key version to move to (default: the latest)', versionArg)
    .option('--out <dir>', 'write the rewrapped envelopes under this folder instead of in place')
    .option('--force', 'with --out: overwrite files that exist there')
    .action(
      async (
        input: string,
        opts: { toVersion?: number; out?: string; force?: boolean },
        cmd: Command,
      ) => {
        const s = await session(cmd);
        const { jobs, skipped } = await findJobs(io, input, opts.out);
        const inPlace = opts.out === undefined;
        const results: FileResult[] = [];
        let n = 0;
        const done = (r: FileResult) => {
          results.push(r);
          s.note(progressLine(++n, jobs.length, r));
        };
        const failed = (job: Job, err: unknown) =>
          done({
            file: job.shown,
            output: job.output,
            outcome: 'failed',
            ...(job.header ? describeHeader(job.header) : {}),
            error: describeError(err),
          });

        // Step 2.
        const byTenant = new Map<string, Job[]>();
        for (const job of jobs) {
          try {
            job.header = await headerOf(job.path);
          } catch (err) {
            failed(job, err);
            continue;
          }
          const list = byTenant.get(job.header.tenant) ?? [];
          list.push(job);
          byTenant.set(job.header.tenant, list);
        }

        // Steps 3 and 4.
        for (const [tenant, list] of [...byTenant].sort(([a], [b]) => (a < b ? -1 : 1))) {
          for (let i = 0; i < list.length; i += BATCH) {
            const batch = list.slice(i, i + BATCH);
            let planned: RewrapPlans;
            try {
              // Signed in afresh for each batch: an access token lives minutes, a folder longer.
              const client = await s.signedIn(tenant, 'rewrap its documents');
              planned = await client.planRewrap(
                batch.map((j) => j.header!),
                opts.toVersion === undefined ? {} : { toVersion: opts.toVersion },
              );
            } catch (err) {
              for (const job of batch) failed(job, err);
              continue;
            }
            try {
              for (const [k, job] of batch.entries()) {
                const plan = planned.plans[k]!;
                try {
                  const outcome = await rewrapOne(job, plan, inPlace, opts.force ?? false);
                  done({
                    file: job.shown,
                    output: job.output,
                    outcome,
                    ...describeHeader(job.header!),
                    ...(plan.action === 'failed' ? {} : { toVersion: plan.toVersion }),
                  });
                } catch (err) {
                  failed(job, err);
                }
              }
            } finally {
              planned.dispose();
            }
          }
        }

        const count = (o: Outcome) => results.filter((r) => r.outcome === o).length;
        const summary = {
          rewrapped: count('rewrapped'),
          current: count('current'),
          failed: count('failed'),
          skipped: skipped.length,
        };
        const line =
          `rewrapped ${summary.rewrapped}, already current ${summary.current}, ` +
          `failed ${summary.failed}` +
          (skipped.length > 0 ? ` (${skipped.length} other files skipped)` : '');
        s.result({ ...summary, files: results, skippedFiles: skipped }, [line]);
        const first = results.find((r) => r.outcome === 'failed');
        if (first) {
          throw new KmaasError(
            first.error!.code,
            `${summary.failed} of ${results.length} envelopes not rewrapped; the first, ` +
              `${first.file}: ${first.error!.message}`,
            { failed: summary.failed },
          );
        }
        if (jobs.length === 0) s.note(`no envelopes found in ${input}`);
      },
    );
}

function describeHeader(h: EnvelopeHeader) {
  return { tenant: h.tenant, documentId: h.documentId, fromVersion: h.keyVersion };
}
