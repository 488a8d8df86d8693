/**
 * A PinStore kept in a JSON file (default ~/.kmaas/pins.json), the CLI's trust anchor:
 *
 *   { "pins": { "<tenant>": { "<version>": "<group key, base64url>" } } }
 *
 * The file is read on every lookup, so processes that run side by side see each other's pins, and
 * rewritten atomically (temporary file + rename) with mode 0600. A file that does not parse is
 * refused with ERR_CONFIG rather than overwritten: it is the one thing the client trusts.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { KmaasError } from '../shared/errors.ts';
import type { PinStore } from '../client/pins.ts';
import { writeFileAtomic } from './atomic.ts';

const pinFileSchema = z
  .object({ pins: z.record(z.string(), z.record(z.string(), z.string())) })
  .passthrough();

type PinFile = z.infer<typeof pinFileSchema>;

export class FilePinStore implements PinStore {
  /** Writes from this process go one after another, each on the latest file. */
  private writes: Promise<unknown> = Promise.resolve();

  constructor(readonly path: string) {}

  async get(tenant: string, version: number): Promise<string | undefined> {
    const { pins } = await this.read();
    const versions = Object.hasOwn(pins, tenant) ? pins[tenant] : undefined;
    const v = String(version);
    return versions && Object.hasOwn(versions, v) ? versions[v] : undefined;
  }

  set(tenant: string, version: number, groupKey: string): Promise<void> {
    const op = this.writes.then(async () => {
      const file = await this.read();
      const versions = Object.hasOwn(file.pins, tenant) ? file.pins[tenant]! : {};
      versions[String(version)] = groupKey;
      file.pins[tenant] = versions;
      await writeFileAtomic(this.path, JSON.stringify(file, null, 2) + '\n');
    });
    this.writes = op.catch(() => undefined);
    return op;
  }

  /** Every pin of the file, as MemoryPinStore takes them. */
  async all(): Promise<{ tenant: string; version: number; groupKey: string }[]> {
    const { pins } = await this.read();
    return Object.entries(pins).flatMap(([tenant, versions]) =>
      Object.entries(versions).map(([version, groupKey]) => ({
        tenant,
        version: Number(version),
        groupKey,
      })),
    );
  }

  private async read(): Promise<PinFile> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { pins: {} };
      throw err;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new KmaasError('ERR_CONFIG', `pins file ${this.path} is not valid JSON`, {
        file: this.path,
      });
    }
    const r = pinFileSchema.safeParse(json);
    if (!r.success) {
      throw new KmaasError(
        'ERR_CONFIG',
        `pins file ${this.path}: expected { "pins": { tenant: { version: groupKey } } }`,
        { file: this.path },
      );
    }
    return r.data;
  }
}
