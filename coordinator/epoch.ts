/**
 * The committee's current epoch as the coordinator knows it (DESIGN.md section 3, "Epochs"): the
 * members with their identity keys, the threshold, and for an epoch made by a reshare the
 * reshare id, the transcript every new member signed and their votes, which let a node that
 * missed the commit catch up later (reshare-catchup.ts), and the committee.reshare proposal
 * itself, which lets a node that missed the whole reshare (down from before its begin) check those
 * votes and learn that it was removed. Records written before that field, and records rebuilt from
 * the nodes, have no proposal: catch-up then sends none.
 *
 *   <prefix>epoch  STR  JSON EpochRecord
 *
 * Like the rest of Redis it is routing state, not authority: each node keeps its own epoch
 * record and checks every proposal against it. When the entry is missing (a fresh Redis) it is
 * rebuilt from the nodes' `status` replies: an epoch summary that at least `threshold` of its own
 * members report identically, the highest such epoch winning, with each member's identity keys
 * as that member reports them. The record only moves forward: a write of an older epoch is
 * ignored, so that a slow replica cannot take the cluster back.
 */
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { toKmaasError } from '../shared/errors.ts';
import { parseMessage, statusReply } from '../shared/messages.ts';
import { committeeMember, proposalSchema, type CommitteeMember } from '../shared/proposal.ts';
import type { Logger } from './logger.ts';
import type { NodePool } from './node-pool.ts';
import type { RedisKeys } from './redis-keys.ts';

/** A rebuild asks the nodes at most this often: `current()` sits on request paths. */
const REBUILD_RETRY_MS = 2000;

const voteSchema = z.object({ node: z.number().int(), signature: z.string() }).strict();

export const epochRecordSchema = z
  .object({
    epoch: z.number().int().min(1),
    threshold: z.number().int().min(1),
    committee: z.array(committeeMember).min(1),
    reshareId: z.string().optional(),
    transcript: z.string().optional(),
    votes: z.array(voteSchema).optional(),
    /** The committee.reshare that made this epoch (absent in older records). */
    proposal: proposalSchema.optional(),
  })
  .strict();

export type EpochRecord = z.infer<typeof epochRecordSchema>;

/** What other parts of the coordinator need: the current epoch, or null when none is known. */
export interface EpochSource {
  current(): Promise<EpochRecord | null>;
}

/** One node's `status` answer, as far as the epoch is concerned. */
export interface EpochReport {
  node: number;
  epoch: { epoch: number; threshold: number; members: number[] } | null;
  identity?: { signing: string; encryption: string } | undefined;
}

export type EpochAgreement = { ok: true; record: EpochRecord } | { ok: false; reason: string };

/**
 * The epoch a quorum of its own members reports identically, the highest one when several
 * qualify. Only members vouch for an epoch, and only `threshold` of them suffice: fewer could be
 * nodes left behind, or a minority that a reshare moved past without them.
 */
export function agreeOnEpoch(reports: readonly EpochReport[]): EpochAgreement {
  const identities = new Map<number, { signing: string; encryption: string }>();
  const groups = new Map<string, { summary: NonNullable<EpochReport['epoch']>; nodes: number[] }>();
  const seen = new Set<number>();
  for (const r of reports) {
    if (seen.has(r.node)) continue;
    seen.add(r.node);
    if (r.identity) identities.set(r.node, r.identity);
    if (!r.epoch) continue;
    const members = [...new Set(r.epoch.members)].sort((a, b) => a - b);
    if (!members.includes(r.node)) continue;
    const summary = { epoch: r.epoch.epoch, threshold: r.epoch.threshold, members };
    const key = JSON.stringify(summary);
    const group = groups.get(key) ?? { summary, nodes: [] };
    group.nodes.push(r.node);
    groups.set(key, group);
  }
  const qualified = [...groups.values()]
    .filter(({ summary: s, nodes }) => {
      const sane = s.threshold >= 2 && s.threshold <= s.members.length;
      return sane && nodes.length >= s.threshold;
    })
    .sort((a, b) => b.summary.epoch - a.summary.epoch);
  const best = qualified[0];
  if (!best) {
    return {
      ok: false,
      reason: groups.size === 0 ? 'no node reports an epoch' : 'no epoch has a quorum of members',
    };
  }
  if (qualified.some((g) => g !== best && g.summary.epoch === best.summary.epoch)) {
    return { ok: false, reason: `two different committees claim epoch ${best.summary.epoch}` };
  }
  const unknown = best.summary.members.filter((m) => !identities.has(m));
  if (unknown.length > 0) {
    return {
      ok: false,
      reason: `identity keys of member(s) ${unknown.join(', ')} unknown (not connected)`,
    };
  }
  const committee: CommitteeMember[] = best.summary.members.map((node) => ({
    node,
    ...identities.get(node)!,
  }));
  return {
    ok: true,
    record: { epoch: best.summary.epoch, threshold: best.summary.threshold, committee },
  };
}

export interface EpochStoreDeps {
  redis: Redis;
  keys: RedisKeys;
  pool: NodePool;
  nodeTimeoutMs: number;
  logger: Logger;
}

/**
 * SET only when no record exists or the stored one is not newer. Atomic, so that two replicas
 * (or a rebuild racing a reshare's switch) cannot move the record backwards.
 */
const WRITE_FORWARD = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' and tonumber(old.epoch) and tonumber(old.epoch) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
`;

export class EpochStore implements EpochSource {
  readonly #d: EpochStoreDeps;
  readonly #log: Logger;
  #rebuilding: Promise<EpochRecord | null> | null = null;
  #lastRebuild = -Infinity;

  constructor(deps: EpochStoreDeps) {
    this.#d = deps;
    this.#log = deps.logger.child({ component: 'epoch' });
  }

  /** The stored record; null when there is none (a corrupt one is logged and counts as none). */
  async read(): Promise<EpochRecord | null> {
    const json = await this.#d.redis.get(this.#d.keys.epoch);
    if (json === null) return null;
    try {
      return epochRecordSchema.parse(JSON.parse(json));
    } catch {
      this.#log.error('corrupt epoch record in redis; it will be rebuilt from the nodes');
      return null;
    }
  }

  /**
   * Store `record` unless Redis already holds a newer epoch; true when written. The same epoch
   * may be written again (a reshare's switch adds the votes to a record rebuilt meanwhile).
   */
  async write(record: EpochRecord): Promise<boolean> {
    const valid = epochRecordSchema.parse(record);
    const written = await this.#d.redis.eval(
      WRITE_FORWARD,
      1,
      this.#d.keys.epoch,
      JSON.stringify(valid),
      String(valid.epoch),
    );
    if (written !== 1) {
      this.#log.warn({ epoch: valid.epoch }, 'epoch record not written: redis holds a newer one');
    }
    return written === 1;
  }

  /** The current epoch: Redis, or failing that the nodes (at most every REBUILD_RETRY_MS). */
  async current(): Promise<EpochRecord | null> {
    const stored = await this.read();
    if (stored) return stored;
    if (this.#rebuilding) return this.#rebuilding;
    if (performance.now() - this.#lastRebuild < REBUILD_RETRY_MS) return null;
    this.#lastRebuild = performance.now();
    this.#rebuilding = this.rebuild().finally(() => {
      this.#rebuilding = null;
    });
    return this.#rebuilding;
  }

  /** Ask every connected node for its status and store the epoch a quorum agrees on. */
  async rebuild(): Promise<EpochRecord | null> {
    const reports = await Promise.all(
      this.#d.pool.connected().map(async (link): Promise<EpochReport | null> => {
        try {
          const body = await link.request('status', {}, this.#d.nodeTimeoutMs);
          const status = parseMessage(statusReply, body, 'status reply');
          if (status.node !== link.id) return null;
          return { node: link.id, epoch: status.epoch ?? null, identity: status.identity };
        } catch (err) {
          this.#log.debug({ node: link.id, code: toKmaasError(err).code }, 'no status');
          return null;
        }
      }),
    );
    const answered = reports.filter((r): r is EpochReport => r !== null);
    const agreement = agreeOnEpoch(answered);
    if (!agreement.ok) {
      this.#log.info(
        { answered: answered.map((r) => r.node), reason: agreement.reason },
        'epoch record not rebuilt from nodes',
      );
      return null;
    }
    await this.write(agreement.record);
    const record = (await this.read()) ?? agreement.record;
    this.#log.info(
      { epoch: record.epoch, threshold: record.threshold, members: record.committee.length },
      'epoch record rebuilt from nodes',
    );
    return record;
  }
}

/** Do two committees name the same nodes with the same identity keys? */
export function sameCommittee(
  a: readonly CommitteeMember[],
  b: readonly CommitteeMember[],
): boolean {
  const key = (c: readonly CommitteeMember[]) =>
    JSON.stringify(
      [...c]
        .sort((x, y) => x.node - y.node)
        .map(({ node, signing, encryption }) => [node, signing, encryption]),
    );
  return key(a) === key(b);
}
