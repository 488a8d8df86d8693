/**
 * Scripted stand-ins for the nodes' side of resharing (nodes/reshare.ts), for testing the
 * coordinator's reshare job without real nodes: each ScriptedNode answers the reshare.* messages
 * of shared/messages.ts in the right shapes, signs its votes with a real Ed25519 key, and, after
 * a commit, returns the new epoch's key packages that the test computed independently (the same
 * secret split again among the new committee). Misbehaviour is scripted per node with `fail`.
 * FakePool holds them in place of NodePool/NodeLink.
 */
import { createHash } from 'node:crypto';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { hexToBytes } from '@noble/hashes/utils.js';
import { Point, toB64, utf8Bytes } from '../../shared/encoding.ts';
import { KmaasError, toKmaasError } from '../../shared/errors.ts';
import { commit } from '../../shared/feldman.ts';
import { buildKeyPackage, type KeyPackage } from '../../shared/key-package.ts';
import { nodeRequestBodies, parseMessage, type NodeRequestType } from '../../shared/messages.ts';
import { proposalId, type CommitteeMember } from '../../shared/proposal.ts';
import { split } from '../../shared/shamir.ts';
import type { NodeLink } from '../../coordinator/node-link.ts';
import type { NodePool } from '../../coordinator/node-pool.ts';
import { NodeReplyError } from '../../coordinator/node-link.ts';

/** A key split t-of-n among `ids` at `epoch`: its package (epoch 1 is what a DKG makes). */
export function sharing(
  secret: bigint,
  tenant: string,
  version: number,
  threshold: number,
  ids: readonly number[],
  epoch: number,
): KeyPackage {
  const { shares, coefficients } = split(secret, threshold, ids);
  return buildKeyPackage({
    tenant,
    version,
    epoch,
    commitments: commit(coefficients),
    verificationShares: new Map(shares.map((s) => [s.id, Point.BASE.multiply(s.value)])),
  });
}

const hex = (text: string) => createHash('sha256').update(text).digest('hex');
const b64 = (n: number) => toB64(new Uint8Array(n).fill(7));

export type Script = (type: NodeRequestType, body: Record<string, unknown>) => void;

/** One node as the coordinator sees it through its link. */
export class ScriptedNode {
  readonly #signingKey = ed25519.utils.randomSecretKey();
  readonly identity: { signing: string; encryption: string };
  connected = true;
  /** The node's committed epoch and its members; null before any. */
  epoch: { epoch: number; threshold: number; members: number[] } | null;
  /** Its keys: (tenant/version) -> package of its current epoch. */
  readonly keys = new Map<string, KeyPackage>();
  /** What it will hold after the commit: set by the test. */
  readonly next = new Map<string, KeyPackage>();
  /** Every request, in order. */
  readonly received: { type: NodeRequestType; body: Record<string, unknown> }[] = [];
  /** The cluster id `status` reports; none when undefined (an older node). */
  cluster: string | undefined;
  /** Throw from here to make a request fail (a KmaasError is the node's own answer). */
  fail: Script | null = null;
  /** The next request of this type never gets an answer (a hung node); then it is cleared. */
  hangNext: NodeRequestType | null = null;
  #begun: { reshareId: string; proposal: Record<string, unknown> } | null = null;
  #digests = new Map<string, string>();

  constructor(
    readonly id: number,
    epoch: ScriptedNode['epoch'],
  ) {
    this.epoch = epoch;
    this.identity = {
      signing: toB64(ed25519.getPublicKey(this.#signingKey)),
      encryption: toB64(x25519.getPublicKey(x25519.utils.randomSecretKey())),
    };
  }

  get member(): CommitteeMember {
    return { node: this.id, ...this.identity };
  }

  types(type?: NodeRequestType): NodeRequestType[] {
    return this.received.map((r) => r.type).filter((t) => type === undefined || t === type);
  }

  bodies(type: NodeRequestType): Record<string, unknown>[] {
    return this.received.filter((r) => r.type === type).map((r) => r.body);
  }

  /** NodeLink.request, answered from the script. */
  request(type: NodeRequestType, raw: unknown): Promise<unknown> {
    if (!this.connected) {
      return Promise.reject(new KmaasError('ERR_NODE_UNAVAILABLE', `node ${this.id} is down`));
    }
    // The coordinator must send what the schema accepts, as a real node would check.
    const body = parseMessage(nodeRequestBodies[type], raw, type) as Record<string, unknown>;
    this.received.push({ type, body });
    try {
      this.fail?.(type, body);
      if (this.hangNext === type) {
        this.hangNext = null;
        return new Promise(() => undefined);
      }
      return Promise.resolve(this.#answer(type, body));
    } catch (err) {
      return Promise.reject(new NodeReplyError(this.id, toKmaasError(err).toBody()));
    }
  }

  #answer(type: NodeRequestType, body: Record<string, unknown>): unknown {
    const id = this.id;
    switch (type) {
      case 'status':
        return {
          node: id,
          keys: [...this.keys.values()].map((k) => ({
            tenant: k.tenant,
            version: k.version,
            groupKey: k.groupKey,
            epoch: k.epoch,
          })),
          epoch: this.epoch,
          reshare: null,
          identity: this.identity,
          ...(this.cluster === undefined ? {} : { cluster: this.cluster }),
        };
      case 'keyPackage': {
        const pkg = this.keys.get(`${String(body.tenant)}/${String(body.version)}`);
        if (!pkg) throw new KmaasError('ERR_UNKNOWN_TENANT', 'no such key');
        return { keyPackage: pkg };
      }
      case 'reshare.begin': {
        const proposal = body.proposal as { committee: { node: number }[] };
        const previous =
          (body.proposal as { previous?: { committee: { node: number }[] } }).previous?.committee ??
          proposal.committee;
        this.#begun = { reshareId: String(body.reshareId), proposal: body.proposal as never };
        const keys = body.keys as { tenant: string; version: number }[];
        const holdsAll = keys.every((k) => this.keys.has(`${k.tenant}/${k.version}`));
        return {
          node: id,
          epoch: this.epoch?.epoch ?? 0,
          dealer: previous.some((m) => m.node === id) && holdsAll,
          receiver: proposal.committee.some((m) => m.node === id),
        };
      }
      case 'reshare.deal': {
        this.#mustHaveBegun(body);
        const proposal = this.#begun!.proposal as {
          threshold: number;
          committee: { node: number }[];
        };
        const keys = body.keys as { tenant: string; version: number }[];
        return {
          dealer: id,
          chunk: body.chunk,
          dealing: keys.map((k) => ({
            tenant: k.tenant,
            version: k.version,
            oldPackage: hex(`${k.tenant}/${k.version}`),
            commitments: Array.from({ length: proposal.threshold }, () => b64(32)),
          })),
          pieces: proposal.committee.map((m) => ({
            from: id,
            to: m.node,
            ephemeral: b64(32),
            ciphertext: b64(keys.length * 32 + 16),
            signature: b64(64),
          })),
          signature: b64(64),
        };
      }
      case 'reshare.prepare': {
        this.#mustHaveBegun(body);
        const dealings = body.dealings as { dealer: number; piece: { to: number } }[];
        for (const d of dealings) {
          if (d.piece.to !== id) throw new Error(`node ${id} got the piece for ${d.piece.to}`);
        }
        const digest = hex(JSON.stringify([body.reshareId, body.dealers, body.chunk, body.keys]));
        this.#digests.set(`${String(body.dealers)}#${String(body.chunk)}`, digest);
        return { node: id, chunk: body.chunk, digest };
      }
      case 'reshare.vote': {
        this.#mustHaveBegun(body);
        const chunks = body.chunks as number;
        const digests = Array.from(
          { length: chunks },
          (_, c) => this.#digests.get(`${String(body.dealers)}#${c}`) ?? 'missing',
        );
        const transcript = hex(
          JSON.stringify([body.reshareId, proposalId(this.#begun!.proposal as never), digests]),
        );
        const message = new Uint8Array([
          ...utf8Bytes('KMaaS-v1 reshare vote\0'),
          ...hexToBytes(transcript),
        ]);
        return {
          node: id,
          transcript,
          signature: toB64(ed25519.sign(message, this.#signingKey)),
        };
      }
      case 'reshare.commit': {
        const proposal = this.#begun?.proposal as
          { epoch?: number; threshold: number; committee: { node: number }[] } | undefined;
        const newEpoch = proposal?.epoch ?? (this.epoch?.epoch ?? 0) + 1;
        if (proposal && (this.epoch?.epoch ?? 0) < newEpoch) {
          const member = proposal.committee.some((m) => m.node === id);
          this.epoch = {
            epoch: newEpoch,
            threshold: proposal.threshold,
            members: proposal.committee.map((m) => m.node),
          };
          this.keys.clear();
          if (member) for (const [k, pkg] of this.next) this.keys.set(k, pkg);
          this.#committedAs = member ? 'member' : 'removed';
        }
        return { node: id, epoch: this.epoch?.epoch ?? newEpoch, role: this.#committedAs };
      }
      case 'reshare.finish':
        return { node: id, erased: 1 };
      case 'reshare.abort':
        this.#begun = null;
        this.#digests.clear();
        return { node: id, aborted: true };
      default:
        throw new KmaasError('ERR_UNKNOWN_MESSAGE', `unscripted ${type}`);
    }
  }

  #committedAs: 'member' | 'removed' = 'member';

  #mustHaveBegun(body: Record<string, unknown>): void {
    if (this.#begun?.reshareId !== body.reshareId) {
      throw new KmaasError('ERR_RESHARE_STATE', `node ${this.id}: not begun`, { state: 'none' });
    }
  }
}

/** NodePool's surface the coordinator's reshare code uses. */
export class FakePool {
  readonly #nodes = new Map<number, ScriptedNode>();

  constructor(nodes: readonly ScriptedNode[]) {
    for (const n of nodes) this.#nodes.set(n.id, n);
  }

  #link(n: ScriptedNode): NodeLink {
    return {
      id: n.id,
      url: `fake://${n.id}`,
      get connected() {
        return n.connected;
      },
      request: (type: NodeRequestType, body: unknown) => n.request(type, body),
    } as unknown as NodeLink;
  }

  get(id: number): NodeLink | undefined {
    const n = this.#nodes.get(id);
    return n ? this.#link(n) : undefined;
  }

  ids(): number[] {
    return [...this.#nodes.keys()].sort((a, b) => a - b);
  }

  all(): NodeLink[] {
    return this.ids().map((id) => this.#link(this.#nodes.get(id)!));
  }

  connected(): NodeLink[] {
    return this.all().filter((l) => l.connected);
  }

  get pool(): NodePool {
    return this as unknown as NodePool;
  }
}
