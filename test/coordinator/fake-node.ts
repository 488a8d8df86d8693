/**
 * A share node small enough to read in one sitting, speaking WebSocket protocol v1 of
 * shared/messages.ts so that the coordinator can be tested without nodes/. Its answers are real:
 * evaluations with shared/voprf-node.ts evaluateBatch over a share it was given (or made in a real
 * ristretto255_FROST.DKG), so a client can combine them. Misbehaviour is switched on per node.
 * Like a real node it answers every DKG round again, identically, until dkg.commit, and it has
 * identity keys (published in `status`) with which it seals and opens round-2 packages through
 * the nodes' own envelope code (nodes/round2-envelope.ts), so the wire is the real one.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ed25519, ristretto255_FROST, x25519 } from '@noble/curves/ed25519.js';
import WebSocket, { WebSocketServer } from 'ws';
import {
  decodeElementB64,
  fromB64,
  Fn,
  Point,
  toB64,
  type GroupElement,
} from '../../shared/encoding.ts';
import { KmaasError, toKmaasError } from '../../shared/errors.ts';
import { buildKeyPackage, type KeyPackage } from '../../shared/key-package.ts';
import {
  nodeRequestBodies,
  nodeRequestEnvelope,
  parseMessage,
  PROTOCOL_VERSION,
  type NodeReply,
  type NodeRequestType,
} from '../../shared/messages.ts';
import { evaluateBatch } from '../../shared/voprf-node.ts';
import { openPackage, sealPackage, type SealedPackage } from '../../nodes/round2-envelope.ts';

const { DKG, Identifier } = ristretto255_FROST;
type DkgSecret = ReturnType<typeof DKG.round1>['secret'];
type DkgRound1 = ReturnType<typeof DKG.round1>['public'];

/**
 * honest: answers everything correctly. wrong-point: evaluations are valid points but not
 * k_j*B (the proof no longer matches). silent: never answers evaluate. refuse: answers evaluate
 * with ERR_UNAUTHORIZED. rate-limited: answers evaluate with ERR_RATE_LIMITED and
 * retryAfterSeconds.
 */
export type Behaviour = 'honest' | 'wrong-point' | 'silent' | 'refuse' | 'rate-limited';

export interface FakeNodeOptions {
  id: number;
  clusterToken: string;
  behaviour?: Behaviour;
  /** Delay before each pong; null never answers pings (autoPong is off). */
  pongDelayMs?: number | null;
}

interface Ceremony {
  id: string;
  tenant: string;
  version: number;
  threshold: number;
  participants: number[];
  committee: { node: number; signing: string; encryption: string }[];
  secret: DkgSecret;
  round1: { node: number; commitment: string[]; proofOfKnowledge: string };
  others?: DkgRound1[];
  round2?: { packages: SealedPackage[] };
  keyPackage?: KeyPackage;
}

/** What #handle returns to drop the connection without answering. */
const CRASH = Symbol('crash');

export class FakeNode {
  readonly id: number;
  behaviour: Behaviour;
  pongDelayMs: number | null;
  /** When set, dkg.round3 answers ERR_DKG_FAILED naming these nodes. */
  dkgCulprits: number[] | null = null;
  /**
   * How many of the next dkg.round3 requests "crash" the node: the connection drops before it
   * answers or stores anything (Infinity: every one).
   */
  round3Crashes = 0;
  /** Ceremony ids of the dkg.commit requests received. */
  readonly committed: string[] = [];
  /** Request types in the order received. */
  readonly received: NodeRequestType[] = [];
  /** The wait a rate-limited node names. */
  retryAfterSeconds = 1;
  /** Evaluate answers wait for this promise, when set, before they are sent. */
  hold: Promise<void> | null = null;
  /** Evaluate answers are sent this long after the request arrived (see serial). */
  evaluateDelayMs = 0;
  /** Work through evaluations one at a time: each answer evaluateDelayMs after the previous. */
  serial = false;
  /** The batch size of each evaluate request, in the order received. */
  readonly evaluateSizes: number[] = [];
  /** Refuse a DPoP proof seen before (ERR_DPOP_REPLAY), as real nodes do; off by default. */
  refuseReplays = false;
  /** Removed from the committee by a reshare (finished): evaluate answers ERR_NODE_REMOVED. */
  removed = false;
  /** The committed epoch `status` reports (null: none yet). */
  epoch: { epoch: number; threshold: number; members: number[] } | null = null;
  /** The open reshare `status` reports. */
  reshare: { id: string; state: string } | null = null;
  /** The `epoch` of every evaluate request, in order (undefined when none was sent). */
  readonly epochsAsked: (number | undefined)[] = [];
  /** When set, evaluate answers name this epoch whatever share answered (a confused node). */
  answerEpoch: number | null = null;
  /** The end-user credential of every evaluate request, as forwarded by the coordinator. */
  readonly auths: { token?: string | undefined; dpop?: string | undefined }[] = [];
  #lastEvaluation: Promise<void> = Promise.resolve();
  /** Runs right after an evaluate answer was handed to the socket (to stall the event loop). */
  afterEvaluate: (() => void) | null = null;
  /** Runs when a ping arrives, before it is answered or not (see pongDelayMs). */
  onPing: (() => void) | null = null;
  readonly keys = new Map<string, { share: bigint; keyPackage: KeyPackage }>();
  readonly #opts: FakeNodeOptions;
  readonly #signingKey = ed25519.utils.randomSecretKey();
  readonly #encryptionKey = x25519.utils.randomSecretKey();
  /** The identity keys' public halves, as a real node publishes them. */
  readonly identity = {
    signing: toB64(ed25519.getPublicKey(this.#signingKey)),
    encryption: toB64(x25519.getPublicKey(this.#encryptionKey)),
  };
  readonly #identity = {
    encryptionPublicKey: x25519.getPublicKey(this.#encryptionKey),
    sign: (msg: Uint8Array) => ed25519.sign(msg, this.#signingKey),
    sharedSecret: (peer: Uint8Array) => x25519.getSharedSecret(this.#encryptionKey, peer),
  };
  readonly #ceremonies = new Map<string, Ceremony>();
  readonly #proofs = new Set<string>();
  readonly #sockets = new Set<WebSocket>();
  #server: Server | null = null;
  #wss: WebSocketServer | null = null;
  #port = 0;

  private constructor(opts: FakeNodeOptions) {
    this.id = opts.id;
    this.behaviour = opts.behaviour ?? 'honest';
    this.pongDelayMs = opts.pongDelayMs ?? 0;
    this.#opts = opts;
  }

  static async start(opts: FakeNodeOptions): Promise<FakeNode> {
    const node = new FakeNode(opts);
    await node.listen(0);
    return node;
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.#port}/v1/ws`;
  }

  get connections(): number {
    return this.#sockets.size;
  }

  install(keyPackage: KeyPackage, share: bigint): void {
    this.keys.set(`${keyPackage.tenant}/${keyPackage.version}`, { share, keyPackage });
  }

  /** Listen (again, after stop()) on `port`; 0 picks a free one. */
  async listen(port: number): Promise<void> {
    const server = createServer((_req, res) => {
      res.writeHead(404).end();
    });
    const wss = new WebSocketServer({ noServer: true, autoPong: false });
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      // After 'upgrade' the socket is ours alone: without this a peer's reset would be thrown.
      socket.on('error', () => socket.destroy());
      if (
        req.url !== '/v1/ws' ||
        req.headers.authorization !== `Bearer ${this.#opts.clusterToken}`
      ) {
        socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n');
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => this.#accept(ws));
    });
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    this.#port = (server.address() as AddressInfo).port;
    this.#server = server;
    this.#wss = wss;
  }

  /** Cut every connection and stop listening; the port can be reused with listen(). */
  async stop(): Promise<void> {
    for (const ws of this.#sockets) ws.terminate();
    this.#sockets.clear();
    const server = this.#server;
    this.#server = null;
    this.#wss?.close();
    this.#wss = null;
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  #accept(ws: WebSocket): void {
    this.#sockets.add(ws);
    ws.on('close', () => this.#sockets.delete(ws));
    ws.on('ping', (data) => {
      this.onPing?.();
      if (this.pongDelayMs === null) return;
      setTimeout(() => {
        if (ws.readyState === WebSocket.OPEN) ws.pong(data);
      }, this.pongDelayMs);
    });
    ws.on('message', (data: Buffer) => {
      const before = this.received.length;
      const reply = this.#handle(data.toString('utf8'));
      if (reply === CRASH) ws.terminate();
      else if (reply && this.received.length > before && this.received.at(-1) === 'evaluate') {
        const request = JSON.parse(data.toString('utf8')) as { body: { blinded: unknown[] } };
        this.evaluateSizes.push(request.body.blinded.length);
        this.#sendEvaluation(ws, reply);
      } else if (reply) ws.send(JSON.stringify(reply));
    });
  }

  /** An evaluate answer, held or delayed as the test asks. */
  #sendEvaluation(ws: WebSocket, reply: NodeReply): void {
    const send = (): void => {
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send(JSON.stringify(reply));
      this.afterEvaluate?.();
    };
    const { hold, evaluateDelayMs, serial } = this;
    if (hold === null && evaluateDelayMs === 0) return send();
    const previous = serial ? this.#lastEvaluation : Promise.resolve();
    this.#lastEvaluation = (async () => {
      await previous;
      if (hold) await hold;
      if (evaluateDelayMs > 0) await new Promise((r) => setTimeout(r, evaluateDelayMs));
      send();
    })();
  }

  #handle(text: string): NodeReply | null | typeof CRASH {
    let id = 'unknown';
    try {
      const envelope = parseMessage(nodeRequestEnvelope, JSON.parse(text), 'message');
      id = envelope.id;
      const type = envelope.type as NodeRequestType;
      if (!Object.hasOwn(nodeRequestBodies, type)) {
        throw new KmaasError('ERR_UNKNOWN_MESSAGE', `unknown type ${type}`);
      }
      this.received.push(type);
      if (type === 'evaluate' && this.behaviour === 'silent') return null;
      if (type === 'dkg.round3' && this.round3Crashes > 0) {
        this.round3Crashes--;
        return CRASH;
      }
      const body = this.#dispatch(type, envelope.body);
      return { v: PROTOCOL_VERSION, id, ok: true, body };
    } catch (err) {
      return { v: PROTOCOL_VERSION, id, ok: false, error: toKmaasError(err).toBody() };
    }
  }

  #dispatch(type: NodeRequestType, raw: unknown): unknown {
    switch (type) {
      case 'status':
        return {
          node: this.id,
          keys: [...this.keys.values()].map(({ keyPackage: k }) => ({
            tenant: k.tenant,
            version: k.version,
            groupKey: k.groupKey,
            epoch: k.epoch ?? 1,
          })),
          identity: this.identity,
          epoch: this.epoch,
          reshare: this.reshare,
        };
      case 'keyPackage': {
        const body = parseMessage(nodeRequestBodies.keyPackage, raw, type);
        return { keyPackage: this.#key(body.tenant, body.version).keyPackage };
      }
      case 'evaluate':
        return this.#evaluate(parseMessage(nodeRequestBodies.evaluate, raw, type));
      case 'dkg.round1':
        return this.#round1(parseMessage(nodeRequestBodies['dkg.round1'], raw, type));
      case 'dkg.round2':
        return this.#round2(parseMessage(nodeRequestBodies['dkg.round2'], raw, type));
      case 'dkg.round3':
        return this.#round3(parseMessage(nodeRequestBodies['dkg.round3'], raw, type));
      case 'dkg.commit': {
        const { ceremonyId } = parseMessage(nodeRequestBodies['dkg.commit'], raw, type);
        const c = this.#ceremony(ceremonyId);
        if (!c.keyPackage) throw new KmaasError('ERR_CEREMONY_CONFLICT', 'not finished here');
        this.committed.push(ceremonyId);
        return { ceremonyId, erased: this.#ceremonies.delete(ceremonyId) };
      }
    }
  }

  #key(tenant: string, version: number): { share: bigint; keyPackage: KeyPackage } {
    const key = this.keys.get(`${tenant}/${version}`);
    if (!key) throw new KmaasError('ERR_UNKNOWN_TENANT', `no key ${tenant} v${version}`);
    return key;
  }

  #evaluate(body: {
    tenant: string;
    version: number;
    epoch?: number | undefined;
    blinded: string[];
    auth: { token?: string | undefined; dpop?: string | undefined };
  }) {
    // Real nodes verify both (test/nodes, test/shared/evaluation-auth.test.ts); this one only
    // keeps what the coordinator forwarded, for the tests to look at.
    this.auths.push(body.auth);
    if (!body.auth.token) throw new KmaasError('ERR_TOKEN_MISSING', 'no access token');
    if (!body.auth.dpop) throw new KmaasError('ERR_DPOP_MISSING', 'no DPoP proof');
    // Like a real node's replay cache (shared/jti-cache.ts): a proof is good once per node.
    if (this.refuseReplays && this.#proofs.has(body.auth.dpop)) {
      throw new KmaasError('ERR_DPOP_REPLAY', 'this DPoP proof was used before');
    }
    this.#proofs.add(body.auth.dpop);
    if (this.behaviour === 'refuse') {
      throw new KmaasError('ERR_UNAUTHORIZED', 'token not accepted');
    }
    if (this.behaviour === 'rate-limited') {
      throw new KmaasError('ERR_RATE_LIMITED', 'too many blinded elements', {
        retryAfterSeconds: this.retryAfterSeconds,
      });
    }
    if (this.removed) throw new KmaasError('ERR_NODE_REMOVED', 'removed by a reshare');
    const { share, keyPackage } = this.#key(body.tenant, body.version);
    // Like a real node after reshare.finish: only the installed package's epoch is held.
    const epoch = keyPackage.epoch ?? 1;
    this.epochsAsked.push(body.epoch);
    if (body.epoch !== undefined && body.epoch !== epoch) {
      throw new KmaasError('ERR_EPOCH_MISMATCH', `no share of epoch ${body.epoch}`, {
        requested: body.epoch,
        current: epoch,
      });
    }
    const points = body.blinded.map((b, i) => decodeElementB64(b, `blinded[${i}]`));
    const { evaluated, proof } = evaluateBatch(share, Point.BASE.multiply(share), points);
    let out: GroupElement[] = evaluated.map((e) => Point.fromBytes(e));
    if (this.behaviour === 'wrong-point') out = out.map((p) => p.add(Point.BASE));
    return {
      node: this.id,
      epoch: this.answerEpoch ?? epoch,
      evaluated: out.map((p) => toB64(p.toBytes())),
      proof: toB64(proof),
    };
  }

  #round1(body: {
    ceremonyId: string;
    tenant: string;
    version: number;
    threshold: number;
    participants: number[];
    committee: { node: number; signing: string; encryption: string }[];
  }) {
    const existing = this.#ceremonies.get(body.ceremonyId);
    if (existing) return existing.round1;
    const mine = body.committee.find((m) => m.node === this.id);
    if (mine?.signing !== this.identity.signing || mine.encryption !== this.identity.encryption) {
      throw new KmaasError('ERR_VALIDATION', "committee: not this node's identity", {
        field: 'committee',
      });
    }
    const signers = { min: body.threshold, max: body.participants.length };
    const { public: pub, secret } = DKG.round1(Identifier.fromNumber(this.id), signers);
    const round1 = {
      node: this.id,
      commitment: pub.commitment.map((c) => toB64(c)),
      proofOfKnowledge: toB64(pub.proofOfKnowledge),
    };
    this.#ceremonies.set(body.ceremonyId, {
      id: body.ceremonyId,
      committee: body.committee,
      tenant: body.tenant,
      version: body.version,
      threshold: body.threshold,
      participants: body.participants,
      secret,
      round1,
    });
    return round1;
  }

  #round2(body: {
    ceremonyId: string;
    round1: { node: number; commitment: string[]; proofOfKnowledge: string }[];
  }) {
    const c = this.#ceremony(body.ceremonyId);
    if (c.round2) return c.round2;
    c.others = body.round1
      .filter((p) => p.node !== this.id)
      .map((p) => ({
        identifier: Identifier.fromNumber(p.node),
        commitment: p.commitment.map((x) => fromB64(x, 'commitment')),
        proofOfKnowledge: fromB64(p.proofOfKnowledge, 'proofOfKnowledge'),
      })) as DkgRound1[];
    const out = DKG.round2(c.secret, c.others);
    const nodeOf = new Map(c.participants.map((n) => [Identifier.fromNumber(n), n]));
    c.round2 = {
      packages: Object.entries(out).map(([id, p]) => {
        const to = nodeOf.get(id)!;
        const recipient = c.committee.find((m) => m.node === to)!;
        return sealPackage(
          this.#context(c, this.id, to),
          p.signingShare,
          fromB64(recipient.encryption, 'encryption'),
          this.#identity,
        );
      }),
    };
    return c.round2;
  }

  #context(c: Ceremony, from: number, to: number) {
    return { ceremonyId: c.id, tenant: c.tenant, version: c.version, from, to };
  }

  #round3(body: { ceremonyId: string; round2: SealedPackage[] }) {
    if (this.dkgCulprits) {
      throw new KmaasError('ERR_DKG_FAILED', 'share inconsistent with its commitments', {
        culprits: this.dkgCulprits,
      });
    }
    const c = this.#ceremony(body.ceremonyId);
    if (c.keyPackage) return { keyPackage: c.keyPackage };
    const key = DKG.round3(
      c.secret,
      c.others!,
      body.round2.map((p) => ({
        identifier: Identifier.fromNumber(p.from),
        signingShare: openPackage(
          this.#context(c, p.from, this.id),
          p,
          fromB64(c.committee.find((m) => m.node === p.from)!.signing, 'signing'),
          this.#identity,
        ),
      })),
    );
    const verificationShares = new Map<number, GroupElement>();
    for (const n of c.participants) {
      verificationShares.set(
        n,
        Point.fromBytes(key.public.verifyingShares[Identifier.fromNumber(n)]!),
      );
    }
    const keyPackage = buildKeyPackage({
      tenant: c.tenant,
      version: c.version,
      commitments: key.public.commitments.map((b) => Point.fromBytes(b)),
      verificationShares,
    });
    this.install(keyPackage, Fn.fromBytes(key.secret.signingShare));
    c.keyPackage = keyPackage;
    return { keyPackage };
  }

  #ceremony(id: string): Ceremony {
    const c = this.#ceremonies.get(id);
    if (!c) throw new KmaasError('ERR_UNKNOWN_CEREMONY', `no ceremony ${id}`);
    return c;
  }
}
