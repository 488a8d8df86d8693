/**
 * What resharing hashes and signs (DESIGN.md section 3). Every digest is the hex SHA-256 of RFC
 * 8785 canonical JSON (shared/canonical-json.ts), so any node, the coordinator and an auditor
 * compute it alike; every signature is Ed25519 (RFC 8032 section 5.1.6) over a domain label, a
 * NUL and the bytes, so a signature of one kind can never pass for another.
 *
 *   package digest   sha256(JCS(key package))                 the `oldPackage` of a dealing
 *   keys digest      sha256(JCS([{tenant, version}, ...]))    the begun key list
 *   chunk digest     sha256(JCS([new key package, ...]))      a receiver's prepare reply
 *   dealing digest   sha256(JCS({ reshareId, dealers, chunk, dealing }))
 *                    signed "KMaaS-v1 reshare dealing\0" || digest by the dealer
 *   transcript       sha256(JCS({ reshareId, proposal, epoch, dealers, keys, chunks }))
 *                    voted "KMaaS-v1 reshare vote\0" || transcript by every new member
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { canonicalJson } from '../shared/canonical-json.ts';
import { concat, fromB64, toB64, utf8Bytes } from '../shared/encoding.ts';
import type { KeyPackage } from '../shared/key-package.ts';
import type { EnvelopeSigner } from './round2-envelope.ts';

const DEALING_LABEL = utf8Bytes('KMaaS-v1 reshare dealing\0');
const VOTE_LABEL = utf8Bytes('KMaaS-v1 reshare vote\0');

export interface KeyRef {
  tenant: string;
  version: number;
}

/** One key of a dealing as it travels (shared/messages.ts reshareDealt). */
export interface DealtWire {
  tenant: string;
  version: number;
  oldPackage: string;
  commitments: string[];
}

export function digestOf(value: unknown): string {
  return bytesToHex(sha256(utf8Bytes(canonicalJson(value))));
}

export function packageDigest(pkg: KeyPackage): string {
  return digestOf(pkg);
}

export function keysDigest(keys: readonly KeyRef[]): string {
  return digestOf(keys.map((k) => ({ tenant: k.tenant, version: k.version })));
}

export function chunkDigest(packages: readonly KeyPackage[]): string {
  return digestOf(packages);
}

export interface DealingFacts {
  reshareId: string;
  dealers: readonly number[];
  chunk: number;
  dealing: readonly DealtWire[];
}

export function dealingDigest(d: DealingFacts): string {
  return digestOf({
    reshareId: d.reshareId,
    dealers: d.dealers,
    chunk: d.chunk,
    dealing: d.dealing,
  });
}

function verify(signature: string, message: Uint8Array, key: Uint8Array): boolean {
  try {
    const sig = fromB64(signature, 'signature');
    return sig.length === 64 && ed25519.verify(sig, message, key, { zip215: false });
  } catch {
    return false;
  }
}

export function signDealing(d: DealingFacts, signer: EnvelopeSigner): string {
  return toB64(signer.sign(concat(DEALING_LABEL, hexToBytes(dealingDigest(d)))));
}

export function dealingSignatureValid(d: DealingFacts, signature: string, key: Uint8Array) {
  return verify(signature, concat(DEALING_LABEL, hexToBytes(dealingDigest(d))), key);
}

export interface TranscriptFacts {
  reshareId: string;
  /** The proposal id. */
  proposal: string;
  /** The new epoch. */
  epoch: number;
  dealers: readonly number[];
  keys: readonly KeyRef[];
  /** The chunk digests, in chunk order. */
  chunks: readonly string[];
}

export function transcriptOf(t: TranscriptFacts): string {
  return digestOf({
    reshareId: t.reshareId,
    proposal: t.proposal,
    epoch: t.epoch,
    dealers: t.dealers,
    keys: keysDigest(t.keys),
    chunks: t.chunks,
  });
}

export function signVote(transcript: string, signer: EnvelopeSigner): string {
  return toB64(signer.sign(concat(VOTE_LABEL, hexToBytes(transcript))));
}

export function voteValid(transcript: string, signature: string, key: Uint8Array): boolean {
  return verify(signature, concat(VOTE_LABEL, hexToBytes(transcript)), key);
}
