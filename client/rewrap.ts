/**
 * Rewrap: move documents from key version v of their tenant to a newer version w (after a
 * key.rotate), so that v can be retired (key.retire). Each envelope is opened with the document
 * key of (tenant, v, documentId) and sealed again with that of (tenant, w, documentId), streaming:
 *
 *   old envelope -> decryptStream(k_v) -> plaintext chunks -> encryptStream(k_w) -> new envelope
 *
 * Tenant and document id stay, and so does the chunk size unless asked otherwise; the salt is
 * fresh (envelope.ts). The plaintext never leaves the pipe.
 *
 * The end of the old envelope decides the end of the new one. decryptStream yields a chunk's
 * plaintext as soon as that chunk authenticated, before anyone knows whether the old envelope is
 * whole (envelope.ts). The new envelope's final chunk, the one whose nonce carries the final flag
 * and without which no reader accepts an envelope (STREAM, Hoang et al., CRYPTO 2015, section 7),
 * is therefore released only once the old envelope's final chunk authenticated with nothing after
 * it. An old envelope that is cut short or tampered with makes the rewrap fail after non-final
 * chunks at most: a reader sees that output as a truncated envelope, never as a document.
 *
 * Keys: planRewraps derives the keys of many documents with one deriveKeys call per (tenant,
 * version), which batches them into evaluate requests (derive.ts), so a folder of n documents
 * costs about 2n/MAX_BATCH requests, and a single document one request per version.
 */
import { KmaasError, toKmaasError } from '../shared/errors.ts';
import type { DerivedKeys, TenantInfo } from './derive.ts';
import {
  decryptStream,
  encryptStream,
  type EnvelopeHeader,
  type EnvelopeReader,
} from './envelope.ts';
import { checkKeyVersion } from './key-packages.ts';

/** What to do with one envelope, as planRewraps decided it. */
export type RewrapPlan =
  | {
      action: 'rewrap';
      header: EnvelopeHeader;
      toVersion: number;
      /** The document keys under header.keyVersion and toVersion; dispose() zeroes them. */
      fromKey: Uint8Array;
      toKey: Uint8Array;
      /** The nodes whose partial evaluations made the two keys. */
      nodes: number[];
    }
  | { action: 'current'; header: EnvelopeHeader; toVersion: number }
  | { action: 'failed'; header: EnvelopeHeader; error: KmaasError };

export interface RewrapPlans {
  /** One plan per header, in order. */
  plans: RewrapPlan[];
  /** Zero every key of the plans. */
  dispose(): void;
}

/** What planRewraps needs of the client. */
export interface RewrapDeps {
  deriveKeys(tenant: string, version: number, documentIds: readonly string[]): Promise<DerivedKeys>;
  latestVersion(tenant: string): Promise<number>;
  tenant(tenant: string): Promise<TenantInfo>;
}

/**
 * `toVersion` when the tenant has it and it serves: ERR_UNKNOWN_KEY_VERSION naming the newest
 * version, or ERR_KEY_RETIRED, before any key is derived (deriving would first ask for a pin of a
 * version that does not exist).
 */
async function checkTarget(deps: RewrapDeps, tenant: string, toVersion: number): Promise<number> {
  const { versions } = await deps.tenant(tenant);
  const found = versions.find((v) => v.version === toVersion);
  if (found?.retired === true) {
    throw new KmaasError(
      'ERR_KEY_RETIRED',
      `tenant ${tenant} key version ${toVersion} is retired: rewrap to a version that serves`,
      { tenant, version: toVersion },
    );
  }
  if (found) return toVersion;
  const newest = versions.length === 0 ? 0 : Math.max(...versions.map((v) => v.version));
  throw new KmaasError(
    'ERR_UNKNOWN_KEY_VERSION',
    `tenant ${tenant} has no key version ${toVersion}: ` +
      (newest === 0 ? 'it has no key yet' : `its newest is ${newest}`),
    { tenant, version: toVersion, ...(newest === 0 ? {} : { latest: newest }) },
  );
}

/**
 * 'current' when the envelope already is under `toVersion`, 'rewrap' when under an older one;
 * ERR_VALIDATION when `toVersion` is older than the envelope's version: that would move a
 * document back to a key that is due to be retired first.
 */
export function rewrapAction(header: EnvelopeHeader, toVersion: number): 'rewrap' | 'current' {
  checkKeyVersion(toVersion, 'toVersion');
  if (toVersion === header.keyVersion) return 'current';
  if (toVersion < header.keyVersion) {
    throw new KmaasError(
      'ERR_VALIDATION',
      `toVersion: ${toVersion} is older than the envelope's key version ${header.keyVersion}`,
      { field: 'toVersion', toVersion, keyVersion: header.keyVersion },
    );
  }
  return 'rewrap';
}

/**
 * Decide, for each header, whether it is rewrapped, already current, or cannot be, and derive
 * the keys of those to rewrap: one deriveKeys per (tenant, version), over every document id that
 * needs it. The target is `toVersion`, else each tenant's latest version. A failure of one
 * tenant or version (e.g. ERR_KEY_RETIRED) fails only the documents that need it.
 */
export async function planRewraps(
  deps: RewrapDeps,
  headers: readonly EnvelopeHeader[],
  toVersion?: number,
): Promise<RewrapPlans> {
  if (toVersion !== undefined) checkKeyVersion(toVersion, 'toVersion');
  const targets = new Map<string, { version: number } | { error: KmaasError }>();
  for (const tenant of new Set(headers.map((h) => h.tenant))) {
    try {
      const version =
        toVersion === undefined
          ? await deps.latestVersion(tenant)
          : await checkTarget(deps, tenant, toVersion);
      targets.set(tenant, { version });
    } catch (err) {
      targets.set(tenant, { error: toKmaasError(err) });
    }
  }

  // Which document ids each (tenant, version) must derive.
  const groups = new Map<string, { tenant: string; version: number; ids: Set<string> }>();
  const need = (tenant: string, version: number, id: string) => {
    const k = groupKey(tenant, version);
    let g = groups.get(k);
    if (!g) groups.set(k, (g = { tenant, version, ids: new Set() }));
    g.ids.add(id);
  };
  type Decision =
    | { header: EnvelopeHeader; error: KmaasError }
    | { header: EnvelopeHeader; action: 'rewrap' | 'current'; toVersion: number };
  const decided = headers.map((header): Decision => {
    const target = targets.get(header.tenant)!;
    if ('error' in target) return { header, error: target.error };
    try {
      const action = rewrapAction(header, target.version);
      if (action === 'rewrap') {
        need(header.tenant, header.keyVersion, header.documentId);
        need(header.tenant, target.version, header.documentId);
      }
      return { header, action, toVersion: target.version };
    } catch (err) {
      return { header, error: toKmaasError(err) };
    }
  });

  const derived = new Map<string, { keys: Map<string, Uint8Array>; nodes: number[] }>();
  const failures = new Map<string, KmaasError>();
  await Promise.all(
    [...groups].map(async ([k, g]) => {
      const ids = [...g.ids];
      try {
        const r = await deps.deriveKeys(g.tenant, g.version, ids);
        derived.set(k, { keys: new Map(ids.map((id, i) => [id, r.keys[i]!])), nodes: r.nodes });
      } catch (err) {
        failures.set(k, toKmaasError(err));
      }
    }),
  );

  const plans: RewrapPlan[] = [];
  for (const d of decided) {
    if ('error' in d) {
      plans.push({ action: 'failed', header: d.header, error: d.error });
      continue;
    }
    const { header, toVersion: to } = d;
    if (d.action === 'current') {
      plans.push({ action: 'current', header, toVersion: to });
      continue;
    }
    const fromGroup = groupKey(header.tenant, header.keyVersion);
    const toGroup = groupKey(header.tenant, to);
    const error = failures.get(fromGroup) ?? failures.get(toGroup);
    if (error) {
      plans.push({ action: 'failed', header, error });
      continue;
    }
    const from = derived.get(fromGroup)!;
    const into = derived.get(toGroup)!;
    plans.push({
      action: 'rewrap',
      header,
      toVersion: to,
      // Copies: two envelopes of one document must not share a key that one of them zeroes.
      fromKey: from.keys.get(header.documentId)!.slice(),
      toKey: into.keys.get(header.documentId)!.slice(),
      nodes: [...new Set([...from.nodes, ...into.nodes])].sort((a, b) => a - b),
    });
  }
  for (const g of derived.values()) for (const key of g.keys.values()) key.fill(0);
  return {
    plans,
    dispose() {
      for (const p of plans) {
        if (p.action === 'rewrap') {
          p.fromKey.fill(0);
          p.toKey.fill(0);
        }
      }
    },
  };
}

function groupKey(tenant: string, version: number): string {
  return `${tenant}\0${version}`;
}

export interface RewrapStreamOptions {
  /** The document key of (tenant, header.keyVersion, documentId). */
  fromKey: Uint8Array;
  /** The document key of (tenant, toVersion, documentId). */
  toKey: Uint8Array;
  toVersion: number;
  /** Plaintext bytes per chunk of the new envelope. Default: the old envelope's. */
  chunkSize?: number;
  /** Source of the new salt; tests pass a fixed one. */
  random?: (length: number) => Uint8Array;
}

/**
 * Re-seal the envelope `reader` (whose header has been read) under `toVersion`. Iterating the
 * result yields the new envelope; it ends without error only when the old envelope authenticated
 * to its end, and only then yields the new envelope's final chunk. The caller owns the keys.
 *
 * @example
 *   const reader = await readHeader(file.stream());
 *   for await (const bytes of rewrapStream(reader, { fromKey, toKey, toVersion: 2 })) sink.write(bytes);
 */
export function rewrapStream(
  reader: EnvelopeReader,
  opts: RewrapStreamOptions,
): AsyncIterable<Uint8Array> {
  const { header } = reader;
  if (rewrapAction(header, opts.toVersion) === 'current') {
    throw new KmaasError(
      'ERR_VALIDATION',
      `toVersion: the envelope already is under key version ${opts.toVersion}`,
      { field: 'toVersion' },
    );
  }
  let authenticated = false;
  const plaintext = (async function* () {
    yield* decryptStream(reader, opts.fromKey);
    // decryptStream returns only after the final chunk opened and nothing followed it.
    authenticated = true;
  })();
  const sealed = encryptStream(plaintext, {
    key: opts.toKey,
    tenant: header.tenant,
    keyVersion: opts.toVersion,
    documentId: header.documentId,
    chunkSize: opts.chunkSize ?? header.chunkSize,
    ...(opts.random ? { random: opts.random } : {}),
  });
  return (async function* () {
    // Hold back the newest piece: the last one the encryptor yields is the final chunk.
    let held: Uint8Array | undefined;
    for await (const bytes of sealed) {
      if (held !== undefined) yield held;
      held = bytes;
    }
    // encryptStream seals its final chunk only after its source ended; this check keeps the
    // guarantee here, where it is stated, whatever the encryptor does.
    if (!authenticated || held === undefined) {
      throw new KmaasError('ERR_INTERNAL', 'rewrap: the old envelope did not authenticate');
    }
    yield held;
  })();
}

/** The envelope's bytes unchanged: header and chunks as read (for one left as it is). */
export function envelopeBytes(reader: EnvelopeReader): AsyncIterable<Uint8Array> {
  const { iterator, queue } = reader.take();
  return (async function* () {
    let done = false;
    try {
      yield reader.prefix.slice();
      if (queue.length > 0) yield queue.take(queue.length);
      for (;;) {
        const r = await iterator.next();
        if (r.done) break;
        yield r.value;
      }
      done = true;
    } finally {
      if (!done) await iterator.return?.();
    }
  })();
}
