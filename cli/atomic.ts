/**
 * Files that appear whole or not at all: the bytes go to a temporary file next to the target,
 * which is flushed to disk and then renamed over it. A failure (or Ctrl-C, see main.ts) removes
 * the temporary file, so no half-written output or pins file is ever left behind.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
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

/** Stream `source` into `target` atomically. Resolves with the number of bytes written. */
export async function writeStreamAtomic(
  target: string,
  source: AsyncIterable<Uint8Array>,
  mode = 0o600,
): Promise<number> {
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
    await rename(tmp, target);
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
