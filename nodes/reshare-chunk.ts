/**
 * One chunk of a reshare (at most RESHARE_CHUNK keys), both sides, pure:
 *
 *   dealer i   for each key: its polynomial g_i (reshare-dealing.ts) -> `dealing` entry
 *              { tenant, version, oldPackage digest, C_i0..C_i(t'-1) }; for each new member j
 *              one sealed piece (reshare-envelope.ts) holding g_i(x_j) of every key in order;
 *              an Ed25519 signature over the dealing digest (reshare-transcript.ts)
 *   receiver j checks, per dealer: the dealing signature (key from the old committee), that each
 *              oldPackage digest is the digest of the old package given, the commitments decode,
 *              the piece opens; per key: C_i0 == K_i and Feldman (reshare-dealing.ts); then its
 *              new shares, the new key packages and the chunk digest
 *
 * Whatever is wrong with a signed dealing is the dealer's: ERR_RESHARE_DEALER, details.culprits.
 * What the coordinator alone chose (which piece goes where, the old packages it attached) is
 * ERR_VALIDATION or ERR_KEY_PACKAGE_INVALID: no dealer is to blame.
 */
import { noPause, type Pause } from './cooperative.ts';
import { concat, decodeElementB64, encodeScalar, Fn, fromB64, toB64 } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import { parseKeyPackage, type KeyPackage, type ParsedKeyPackage } from '../shared/key-package.ts';
import type { Rng } from '../shared/shamir.ts';
import { dealKey, receiveKey } from './reshare-dealing.ts';
import { openPieces, SCALAR_BYTES, sealPieces } from './reshare-envelope.ts';
import type { ReshareParams } from './reshare-machine.ts';
import {
  chunkDigest,
  dealingSignatureValid,
  packageDigest,
  signDealing,
  type DealtWire,
  type KeyRef,
} from './reshare-transcript.ts';
import type { EnvelopeRecipient, EnvelopeSigner, SealedPackage } from './round2-envelope.ts';

export interface DealReply {
  dealer: number;
  chunk: number;
  dealing: DealtWire[];
  pieces: SealedPackage[];
  signature: string;
}

/** A key this dealer holds at the old epoch. */
export interface HeldKey {
  share: bigint;
  keyPackage: KeyPackage;
}

/**
 * Deal one chunk. `held[k]` is this node's old-epoch key of `keys[k]`. `corruptLowest` (a test
 * failpoint) adds 1 to every piece for the lowest-id receiver, commitments left honest.
 */
export async function dealChunk(args: {
  self: number;
  params: ReshareParams;
  dealers: number[];
  chunk: number;
  keys: readonly KeyRef[];
  held: readonly HeldKey[];
  seed: Uint8Array;
  signer: EnvelopeSigner;
  rng?: Rng;
  corruptLowest?: boolean;
  /** Awaited between keys, to let evaluations in (cooperative.ts); default none. */
  pause?: Pause;
}): Promise<DealReply> {
  const pause = args.pause ?? noPause;
  const { params } = args;
  const receivers = params.committee.map((m) => m.node).sort((a, b) => a - b);
  const lowest = receivers[0];
  const dealing: DealtWire[] = [];
  const pieces = new Map<number, bigint[]>(receivers.map((j) => [j, []]));
  for (const [i, k] of args.keys.entries()) {
    await pause();
    const held = args.held[i]!;
    const dealt = dealKey(
      args.seed,
      { reshareId: params.reshareId, tenant: k.tenant, version: k.version },
      held.share,
      params.threshold,
      receivers,
    );
    dealing.push({
      tenant: k.tenant,
      version: k.version,
      oldPackage: packageDigest(held.keyPackage),
      commitments: dealt.commitments.map((c) => toB64(c.toBytes())),
    });
    for (const j of receivers) {
      const piece = dealt.pieces.get(j)!;
      pieces.get(j)!.push(args.corruptLowest && j === lowest ? Fn.add(piece, 1n) : piece);
    }
  }
  const sealed = params.committee.map((m) => {
    const scalars = concat(...pieces.get(m.node)!.map(encodeScalar));
    try {
      return sealPieces(
        {
          reshareId: params.reshareId,
          chunk: args.chunk,
          dealer: args.self,
          to: m.node,
          dealers: args.dealers,
        },
        scalars,
        fromB64(m.encryption, 'encryption'),
        args.signer,
        args.rng,
      );
    } finally {
      scalars.fill(0);
    }
  });
  const facts = { reshareId: params.reshareId, dealers: args.dealers, chunk: args.chunk, dealing };
  return {
    dealer: args.self,
    chunk: args.chunk,
    dealing,
    pieces: sealed,
    signature: signDealing(facts, args.signer),
  };
}

export interface DealingForReceiver {
  dealer: number;
  dealing: DealtWire[];
  piece: SealedPackage;
  signature: string;
}

export interface PreparedChunk {
  /** This node's new share of each key, in order. */
  shares: bigint[];
  /** The new key package of each key, in order. */
  packages: KeyPackage[];
  digest: string;
}

function culprit(reshareId: string, dealer: number, why: string): KmaasError {
  return new KmaasError('ERR_RESHARE_DEALER', `reshare ${reshareId}: dealer ${dealer}: ${why}`, {
    reshareId,
    culprits: [dealer],
  });
}

function parseOld(params: ReshareParams, key: KeyRef, pkg: KeyPackage, i: number) {
  const parsed = parseKeyPackage(pkg);
  if (
    parsed.tenant !== key.tenant ||
    parsed.version !== key.version ||
    parsed.epoch !== params.oldEpoch
  ) {
    throw new KmaasError(
      'ERR_KEY_PACKAGE_INVALID',
      `oldPackages[${i}]: expected ${key.tenant} v${key.version} at epoch ${params.oldEpoch}`,
      { field: `oldPackages.${i}`, tenant: key.tenant, version: key.version },
    );
  }
  return parsed;
}

/** Receive one chunk as node `self`: every check of the header, then the new shares. */
export async function prepareChunk(args: {
  self: number;
  params: ReshareParams;
  dealers: number[];
  chunk: number;
  keys: readonly KeyRef[];
  oldPackages: readonly KeyPackage[];
  dealings: readonly DealingForReceiver[];
  recipient: EnvelopeRecipient;
  /** Awaited between keys, to let evaluations in (cooperative.ts); default none. */
  pause?: Pause;
}): Promise<PreparedChunk> {
  const { params, keys, self } = args;
  const pause = args.pause ?? noPause;
  const id = params.reshareId;
  const given = args.dealings.map((d) => d.dealer).sort((a, b) => a - b);
  if (given.join(',') !== args.dealers.join(',')) {
    throw new KmaasError('ERR_VALIDATION', 'dealings: expected one per dealer', {
      field: 'dealings',
    });
  }
  if (args.oldPackages.length !== keys.length) {
    throw new KmaasError('ERR_VALIDATION', 'oldPackages: expected one per key', {
      field: 'oldPackages',
    });
  }
  const old: ParsedKeyPackage[] = keys.map((k, i) => parseOld(params, k, args.oldPackages[i]!, i));
  const digests = args.oldPackages.map(packageDigest);
  const signingKeys = new Map(params.oldCommittee.map((m) => [m.node, m.signing]));
  const received = args.dealings.map((d) => {
    if (d.piece.from !== d.dealer || d.piece.to !== self) {
      throw new KmaasError(
        'ERR_VALIDATION',
        `dealings: the piece of dealer ${d.dealer} is not from it to node ${self}`,
        { field: 'dealings.piece' },
      );
    }
    const facts = { reshareId: id, dealers: args.dealers, chunk: args.chunk, dealing: d.dealing };
    const key = fromB64(signingKeys.get(d.dealer)!, 'signing');
    if (!dealingSignatureValid(facts, d.signature, key)) {
      throw culprit(id, d.dealer, 'the dealing signature does not verify');
    }
    // Signed by the dealer: from here on whatever is wrong is its doing.
    if (d.dealing.length !== keys.length) {
      throw culprit(id, d.dealer, `${d.dealing.length} keys dealt, ${keys.length} expected`);
    }
    const commitments = d.dealing.map((entry, i) => {
      const k = keys[i]!;
      if (entry.tenant !== k.tenant || entry.version !== k.version) {
        throw culprit(id, d.dealer, `dealing[${i}] is not ${k.tenant} v${k.version}`);
      }
      if (entry.oldPackage !== digests[i]) {
        throw culprit(id, d.dealer, `it dealt ${k.tenant} v${k.version} from another old package`);
      }
      try {
        return entry.commitments.map((c, n) => decodeElementB64(c, `commitments[${n}]`));
      } catch {
        throw culprit(id, d.dealer, `the commitments of ${k.tenant} v${k.version} do not decode`);
      }
    });
    const plain = openPieces(
      { reshareId: id, chunk: args.chunk, dealer: d.dealer, to: self, dealers: args.dealers },
      d.piece,
      keys.length,
      fromB64(signingKeys.get(d.dealer)!, 'signing'),
      args.recipient,
    );
    try {
      const pieces = keys.map((_, i) => {
        try {
          return Fn.fromBytes(plain.subarray(i * SCALAR_BYTES, (i + 1) * SCALAR_BYTES));
        } catch {
          throw culprit(id, d.dealer, `piece ${i} is not a canonical scalar`);
        }
      });
      return { dealer: d.dealer, commitments, pieces };
    } finally {
      plain.fill(0);
    }
  });
  const members = params.committee.map((m) => m.node).sort((a, b) => a - b);
  const shares: bigint[] = [];
  const packages: KeyPackage[] = [];
  for (const [i, k] of keys.entries()) {
    await pause();
    const out = receiveKey({
      self,
      key: { reshareId: id, tenant: k.tenant, version: k.version },
      old: old[i]!,
      dealings: received.map((r) => ({
        dealer: r.dealer,
        commitments: r.commitments[i]!,
        piece: r.pieces[i]!,
      })),
      threshold: params.threshold,
      members,
      epoch: params.epoch,
    });
    shares.push(out.share);
    packages.push(out.keyPackage);
  }
  return { shares, packages, digest: chunkDigest(packages) };
}
