/**
 * Files that appear whole or not at all: the bytes go to a temporary file next to the target,
 * which is flushed to disk and then renamed over it (or, when an existing file must not be
 * replaced, hard-linked to the target name, which fails if the name is taken). A failure (or
 * Ctrl-C, see main.ts) removes the temporary file, so no half-written output or pins file is ever
 * left behind.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { lstat, link, mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';

/** Temporary files being written right now; main.ts removes them when the process is stopped. */
export const pendingTemps = new Set<string>();

export function tempPathFor(target: string): string {
  return join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
}

async function syncFile(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Node's EEXIST error for `path`, as fs calls make it. */
function existsError(path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`EEXIST: file already exists, '${path}'`), {
    code: 'EEXIST',
    path,
  });
}

/** File systems that cannot hard-link answer with one of these. */
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV', 'EMLINK']);

/** Give the finished temporary file its name; without `overwrite`, EEXIST when it is taken. */
async function publish(tmp: string, target: string, overwrite: boolean): Promise<void> {
  if (overwrite) return rename(tmp, target);
  try {
    await link(tmp, target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!NO_LINKS.has(code ?? '')) throw err;
    // No hard links here: check, then rename (a writer racing us in between wins).
    const taken = await lstat(target).then(
      () => true,
      () => false,
    );
    if (taken) throw existsError(target);
    return rename(tmp, target);
  }
  await rm(tmp, { force: true });
}

/**
 * Stream `source` into `target` atomically. Resolves with the number of bytes written. Without
 * `overwrite`, an existing `target` is left alone and the write fails with EEXIST.
 */
export async function writeStreamAtomic(
  target: string,
  source: AsyncIterable<Uint8Array>,
  opts: { mode?: number; overwrite?: boolean } = {},
): Promise<number> {
  const mode = opts.mode ?? 0o600;
  const tmp = tempPathFor(target);
  pendingTemps.add(tmp);
  let bytes = 0;
  try {
    await pipeline(
      async function* () {
        for await (const chunk of source) {
          bytes += chunk.length;
          yield chunk;
        }
      },
      createWriteStream(tmp, { flags: 'wx', mode }),
    );
    await syncFile(tmp);
    await publish(tmp, target, opts.overwrite ?? true);
    return bytes;
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  } finally {
    pendingTemps.delete(tmp);
  }
}

/** Write a small file atomically, creating its folder (private to the user) when needed. */
export async function writeFileAtomic(target: string, data: string, mode = 0o600): Promise<void> {
  await mkdir(dirname(target), { recursive: true, mode: 0o700 });
  const tmp = tempPathFor(target);
  pendingTemps.add(tmp);
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  } finally {
    pendingTemps.delete(tmp);
  }
}
