/**
 * The node side of distributed key generation (DESIGN.md section 3) as a state machine: pure
 * transitions from one ceremony state to the next, no I/O (dkg.ts loads and persists the states).
 *
 * The rounds are @noble/curves' `ristretto255_FROST.DKG`, the Pedersen DKG with proofs of
 * knowledge of frost-rs (Komlo-Goldberg, FROST, Figure 1), relayed by the coordinator
 * (docs/CONTRACTS.md, "DKG as relayed by the coordinator"):
 *
 *   round 1  node j: random f_j of degree t-1, Feldman commitments C_j = (a_j0*G .. a_j(t-1)*G)
 *            and a Schnorr proof of knowledge of a_j0                        -> broadcast
 *   round 2  node j: checks every other node's proof, sends f_j(x_i) to each node i, sealed to
 *            i's X25519 identity key and signed with j's Ed25519 identity key
 *            (round2-envelope.ts), so that the coordinator relays only ciphertext
 *   round 3  node i: checks each package's signature against the committee key of its sender,
 *            opens it, checks every f_j(x_i) against C_j (Feldman VSS), k_i = sum_j f_j(x_i);
 *            group commitments C = sum_j C_j, K = C_0, verification shares K_i = C(x_i)
 *
 *   state   --round1-->  step 1 (polynomial, own broadcast)
 *   step 1  --round2-->  step 2 (+ accepted round-1 transcript, own outgoing packages)
 *   step 2  --round3-->  finished key (the caller stores it; the state stays, so that every
 *                        round can be replayed, until dkg.commit erases it)
 *
 * The committee (every participant's identity public keys) arrives with round 1 and is part of
 * the ceremony parameters, so rounds 2 and 3 use the same keys after a restart. The node's own
 * keys and randomness are passed in: the transitions stay pure.
 *
 * Node ids are the Shamir identifiers; FROST identifiers are Identifier.fromNumber(id).
 * A sender whose proof or share does not check out is named in ERR_DKG_FAILED details.culprits
 * (a package whose signature or encryption fails: ERR_DKG_PACKAGE_SIGNATURE or
 * ERR_DKG_PACKAGE_DECRYPT, with the same details.culprits) so the coordinator can retry the
 * ceremony without it. Every check is linear in the size of
 * what it checks (dkg-pok.ts checks each proof on its own), and a ceremony has at most
 * MAX_PARTICIPANTS participants, so no single message can keep a node busy for long.
 */
import { ristretto255_FROST } from '@noble/curves/ed25519.js';
import type { DKG_Round1, DKG_Round2, DKG_Secret } from '@noble/curves/abstract/frost.js';
import type { z } from 'zod';
import {
  decodeElementB64,
  Fn,
  fromB64,
  Point,
  toB64,
  type GroupElement,
} from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import { evaluateCommitments } from '../shared/feldman.ts';
import { checkIdentifierSet } from '../shared/identifiers.ts';
import { buildKeyPackage, parseKeyPackage, type KeyPackage } from '../shared/key-package.ts';
import type { committeeMember, dkgRound1Package, dkgRound2Package } from '../shared/messages.ts';
import type { Rng } from '../shared/shamir.ts';
import { POK_BYTES, proofOfKnowledgeValid } from './dkg-pok.ts';
import {
  openPackage,
  sealPackage,
  type EnvelopeRecipient,
  type EnvelopeSigner,
} from './round2-envelope.ts';

const { DKG, Identifier } = ristretto255_FROST;

export type Round1Wire = z.infer<typeof dkgRound1Package>;
export type Round2Wire = z.infer<typeof dkgRound2Package>;
export type CommitteeMember = z.infer<typeof committeeMember>;

/** This node's identity public keys as published (b64url), to find itself in the committee. */
export interface OwnIdentity {
  signing: string;
  encryption: string;
}

/**
 * The most participants one ceremony may have. It bounds the work one authenticated message can
 * ask of a node (round 2 checks n-1 proofs and decodes (n-1)*t commitments; round 3 evaluates
 * n-1 commitment polynomials of degree t-1) and the size of every DKG message.
 */
export const MAX_PARTICIPANTS = 32;

export interface CeremonyParams {
  ceremonyId: string;
  tenant: string;
  version: number;
  threshold: number;
  /** Sorted ascending. */
  participants: number[];
  /** One entry per participant, sorted by node, keys in canonical base64url. */
  committee: CommitteeMember[];
}

export interface CeremonyState {
  params: CeremonyParams;
  step: 1 | 2;
  /** noble's round state; holds the secret polynomial until round 3. */
  secret: DKG_Secret;
  /** This node's broadcast, replayed when round 1 is asked again. */
  round1: Round1Wire;
  /** Every round-1 package accepted in round 2, sorted by node. */
  transcript?: Round1Wire[];
  /** This node's outgoing round-2 packages, sealed, replayed when round 2 is asked again. */
  round2?: Round2Wire[];
}

export interface FinishedKey {
  share: bigint;
  keyPackage: KeyPackage;
}

function dkgFailed(params: CeremonyParams, message: string, culprits: number[]): KmaasError {
  return new KmaasError('ERR_DKG_FAILED', message, {
    ceremonyId: params.ceremonyId,
    culprits,
  });
}

function stateError(params: CeremonyParams, message: string): KmaasError {
  return new KmaasError('ERR_CEREMONY_CONFLICT', `ceremony ${params.ceremonyId}: ${message}`, {
    ceremonyId: params.ceremonyId,
  });
}

const IDENTITY_KEY_BYTES = 32;

function identityKey(text: string, field: string): string {
  const bytes = fromB64(text, field);
  if (bytes.length !== IDENTITY_KEY_BYTES) {
    throw new KmaasError(
      'ERR_BAD_LENGTH',
      `${field}: expected ${IDENTITY_KEY_BYTES} bytes, got ${bytes.length}`,
      { field, expected: IDENTITY_KEY_BYTES, actual: bytes.length },
    );
  }
  return toB64(bytes);
}

/**
 * The committee must list exactly the participants, each with two 32-byte keys, and this node's
 * entry must be this node's own identity: otherwise its peers would seal shares meant for it to
 * someone else's key, or check its packages against someone else's signature key.
 */
function checkCommittee(
  self: number,
  participants: readonly number[],
  committee: readonly CommitteeMember[],
  own: OwnIdentity,
): CommitteeMember[] {
  const nodes = committee.map((m) => m.node);
  checkIdentifierSet(nodes, 'committee');
  const missing = participants.filter((p) => !nodes.includes(p));
  const unexpected = nodes.filter((n) => !participants.includes(n));
  if (missing.length > 0 || unexpected.length > 0) {
    throw new KmaasError(
      'ERR_VALIDATION',
      'committee: expected one entry per participant' +
        (missing.length ? `; missing ${missing.join(', ')}` : '') +
        (unexpected.length ? `; not participants: ${unexpected.join(', ')}` : ''),
      { field: 'committee', missing, unexpected },
    );
  }
  const canonical = committee
    .map((m, i) => ({
      node: m.node,
      signing: identityKey(m.signing, `committee[${i}].signing`),
      encryption: identityKey(m.encryption, `committee[${i}].encryption`),
    }))
    .sort((a, b) => a.node - b.node);
  const mine = canonical.find((m) => m.node === self)!;
  if (mine.signing !== own.signing || mine.encryption !== own.encryption) {
    throw new KmaasError(
      'ERR_VALIDATION',
      `committee: the entry of node ${self} does not hold this node's identity keys`,
      { field: 'committee', node: self },
    );
  }
  return canonical;
}

/**
 * Round 1 preconditions. A threshold of at least 2 keeps the key from living on one node; a
 * majority threshold (t > n/2) means two disjoint sets of nodes can never both act. `own` is
 * this node's identity, which its committee entry must hold.
 */
export function checkParams(
  self: number,
  req: Omit<CeremonyParams, 'participants' | 'committee'> & {
    participants: readonly number[];
    committee: readonly CommitteeMember[];
  },
  own: OwnIdentity,
): CeremonyParams {
  if (req.participants.length > MAX_PARTICIPANTS) {
    throw new KmaasError(
      'ERR_VALIDATION',
      `participants: at most ${MAX_PARTICIPANTS} per ceremony, got ${req.participants.length}`,
      { field: 'participants', max: MAX_PARTICIPANTS, actual: req.participants.length },
    );
  }
  const participants = checkIdentifierSet(req.participants, 'participants').sort((a, b) => a - b);
  if (!participants.includes(self)) {
    throw new KmaasError('ERR_VALIDATION', `participants: node ${self} is not one of them`, {
      field: 'participants',
    });
  }
  const n = participants.length;
  const t = req.threshold;
  if (!Number.isInteger(t) || t < 2 || t > n || 2 * t <= n) {
    throw new KmaasError(
      'ERR_BAD_THRESHOLD',
      `threshold ${t} for ${n} participants: expected 2 <= t <= n and t > n/2`,
      { threshold: t, participants: n },
    );
  }
  const committee = checkCommittee(self, participants, req.committee, own);
  return {
    ceremonyId: req.ceremonyId,
    tenant: req.tenant,
    version: req.version,
    threshold: t,
    participants,
    committee,
  };
}

export function sameParams(a: CeremonyParams, b: CeremonyParams): boolean {
  return (
    a.ceremonyId === b.ceremonyId &&
    a.tenant === b.tenant &&
    a.version === b.version &&
    a.threshold === b.threshold &&
    a.participants.join(',') === b.participants.join(',') &&
    JSON.stringify(a.committee) === JSON.stringify(b.committee)
  );
}

function contextOf(params: CeremonyParams) {
  return { ceremonyId: params.ceremonyId, tenant: params.tenant, version: params.version };
}

function frostId(node: number): string {
  return Identifier.fromNumber(node);
}

function nodeOf(params: CeremonyParams, identifier: string): number {
  const node = params.participants.find((p) => frostId(p) === identifier);
  if (node === undefined)
    throw new KmaasError('ERR_INTERNAL', 'FROST identifier of no participant');
  return node;
}

function round1ToWire(node: number, p: DKG_Round1): Round1Wire {
  return {
    node,
    commitment: p.commitment.map((c) => toB64(c)),
    proofOfKnowledge: toB64(p.proofOfKnowledge),
  };
}

/** Round 1: a fresh polynomial and its broadcast. `rng` feeds the coefficients and the proof. */
export function startCeremony(self: number, params: CeremonyParams, rng?: Rng): CeremonyState {
  const signers = { min: params.threshold, max: params.participants.length };
  const { public: pub, secret } = DKG.round1(frostId(self), signers, undefined, rng);
  return { params, step: 1, secret, round1: round1ToWire(self, pub) };
}

interface DecodedRound1 {
  noble: DKG_Round1;
  wire: Round1Wire;
  /** The commitment constant term C_0, the key the proof of knowledge is about. */
  phi: GroupElement;
}

/**
 * Decode one round-1 package strictly: t commitments, each a canonical non-identity element,
 * and a 64-byte proof. Returns the noble form and the canonical wire form.
 */
function decodeRound1(params: CeremonyParams, p: Round1Wire, i: number): DecodedRound1 {
  const field = `round1[${i}]`;
  if (p.commitment.length !== params.threshold) {
    throw new KmaasError(
      'ERR_VALIDATION',
      `${field}.commitment: expected ${params.threshold} commitments, got ${p.commitment.length}`,
      { field: `${field}.commitment`, node: p.node },
    );
  }
  const points = p.commitment.map((c, k) => decodeElementB64(c, `${field}.commitment[${k}]`));
  const commitment = points.map((c) => c.toBytes());
  const proof = new Uint8Array(fromB64(p.proofOfKnowledge, `${field}.proofOfKnowledge`));
  if (proof.length !== POK_BYTES) {
    throw new KmaasError(
      'ERR_BAD_LENGTH',
      `${field}.proofOfKnowledge: expected ${POK_BYTES} bytes, got ${proof.length}`,
      { field: `${field}.proofOfKnowledge`, expected: POK_BYTES, actual: proof.length },
    );
  }
  return {
    noble: { identifier: frostId(p.node), commitment, proofOfKnowledge: proof },
    // Re-encoded from the decoded bytes: the canonical form that repeated requests compare.
    wire: {
      node: p.node,
      commitment: commitment.map((c) => toB64(c)),
      proofOfKnowledge: toB64(proof),
    },
    phi: points[0]!,
  };
}

/** Packages must come from exactly the `expected` nodes, once each. */
function checkCoverage(
  params: CeremonyParams,
  nodes: readonly number[],
  field: string,
  expected: readonly number[],
): void {
  checkIdentifierSet(nodes, field);
  const missing = expected.filter((n) => !nodes.includes(n));
  const unexpected = nodes.filter((n) => !expected.includes(n));
  if (missing.length > 0 || unexpected.length > 0) {
    throw new KmaasError(
      'ERR_VALIDATION',
      `${field}: expected packages from nodes ${expected.join(', ')}` +
        (missing.length ? `; missing ${missing.join(', ')}` : '') +
        (unexpected.length ? `; not participants: ${unexpected.join(', ')}` : ''),
      { field, ceremonyId: params.ceremonyId, missing, unexpected },
    );
  }
}

function committeeEntry(params: CeremonyParams, node: number): CommitteeMember {
  const entry = params.committee.find((m) => m.node === node);
  if (!entry) throw new KmaasError('ERR_INTERNAL', `no committee entry for node ${node}`);
  return entry;
}

/**
 * Round 2: check every other participant's round-1 package (commitment count, encodings, proof
 * of knowledge), compute f_self(x_i) for each other participant i and seal it to i's committee
 * encryption key, signed by `signer` (this node's identity); `rng` draws the ephemeral keys.
 * Repeating round 2 with the same packages returns the same sealed packages; different packages
 * are a conflict.
 */
export function advanceRound2(
  self: number,
  state: CeremonyState,
  packages: readonly Round1Wire[],
  signer: EnvelopeSigner,
  rng?: Rng,
): { state: CeremonyState; reply: Round2Wire[] } {
  const { params } = state;
  checkCoverage(
    params,
    packages.map((p) => p.node),
    'round1',
    params.participants,
  );
  const decoded = packages.map((p, i) => decodeRound1(params, p, i));
  const transcript = decoded.map((d) => d.wire).sort((a, b) => a.node - b.node);
  const own = transcript.find((p) => p.node === self)!;
  if (JSON.stringify(own) !== JSON.stringify(state.round1)) {
    throw new KmaasError(
      'ERR_VALIDATION',
      `round1: the package of node ${self} is not the one it sent`,
      {
        field: 'round1',
        ceremonyId: params.ceremonyId,
      },
    );
  }
  if (state.step === 2) {
    if (JSON.stringify(transcript) !== JSON.stringify(state.transcript)) {
      throw stateError(params, 'round 2 was already answered for different round-1 packages');
    }
    return { state, reply: state.round2! };
  }
  const others = decoded.filter((d) => d.wire.node !== self);
  // Each proof on its own (the same check noble makes below), so that every bad one is named.
  const culprits = others
    .filter((d) => !proofOfKnowledgeValid(d.wire.node, d.phi, d.noble.proofOfKnowledge))
    .map((d) => d.wire.node)
    .sort((a, b) => a - b);
  if (culprits.length > 0) {
    throw dkgFailed(
      params,
      `round 2: invalid proof of knowledge from node(s) ${culprits.join(', ')}`,
      culprits,
    );
  }
  const secret = structuredClone(state.secret);
  let out: Record<string, DKG_Round2>;
  try {
    out = DKG.round2(
      secret,
      others.map((d) => d.noble),
    );
  } catch (err) {
    throw dkgFailed(params, `round 2: ${(err as Error).message}`, []);
  }
  const reply = Object.entries(out)
    .map(([id, p]) => {
      const to = nodeOf(params, id);
      const context = { ...contextOf(params), from: self, to };
      const recipient = fromB64(committeeEntry(params, to).encryption, 'encryption');
      return sealPackage(context, p.signingShare, recipient, signer, rng);
    })
    .sort((a, b) => a.to - b.to);
  // The sealed packages are what replays return; the plaintext ones are not needed again.
  for (const p of Object.values(out)) p.signingShare.fill(0);
  delete secret.round2Cache;
  return { state: { ...state, step: 2, secret, transcript, round2: reply }, reply };
}

/** Feldman VSS (RFC 9591 Appendix C.2 vss_verify): share*G = sum_k C_k * x^k. */
function shareMatches(share: Uint8Array, commitments: readonly GroupElement[], x: number): boolean {
  let s: bigint;
  try {
    s = Fn.fromBytes(share);
  } catch {
    return false;
  }
  // The share is secret: constant-time multiply. The commitment side is public.
  return !Fn.is0(s) && Point.BASE.multiply(s).equals(evaluateCommitments(commitments, x));
}

/**
 * Open every package with `recipient` (this node's identity). Signatures are checked for all of
 * them before anything is decrypted, and every sender whose package fails is named at once.
 */
function openAll(
  self: number,
  params: CeremonyParams,
  packages: readonly Round2Wire[],
  recipient: EnvelopeRecipient,
): { from: number; bytes: Uint8Array }[] {
  const opened: { from: number; bytes: Uint8Array }[] = [];
  const failed = new Map<string, KmaasError[]>();
  for (const p of packages) {
    const context = { ...contextOf(params), from: p.from, to: self };
    const senderKey = fromB64(committeeEntry(params, p.from).signing, 'signing');
    try {
      opened.push({ from: p.from, bytes: openPackage(context, p, senderKey, recipient) });
    } catch (err) {
      if (!(err instanceof KmaasError)) throw err;
      failed.set(err.code, [...(failed.get(err.code) ?? []), err]);
    }
  }
  // A bad signature is the graver finding (the package may not be the sender's at all).
  const errors = failed.get('ERR_DKG_PACKAGE_SIGNATURE') ?? failed.get('ERR_DKG_PACKAGE_DECRYPT');
  if (errors) {
    for (const o of opened) o.bytes.fill(0);
    const [first] = errors;
    if (errors.length === 1 && first) throw first;
    const culprits = errors.map((e) => e.details!.from as number).sort((a, b) => a - b);
    const what = first!.code === 'ERR_DKG_PACKAGE_SIGNATURE' ? 'signatures' : 'decryption';
    throw new KmaasError(
      first!.code,
      `round 3: round-2 packages from nodes ${culprits.join(', ')} fail ${what}`,
      { ceremonyId: params.ceremonyId, culprits },
    );
  }
  if (failed.size > 0) throw [...failed.values()][0]![0]!;
  return opened;
}

/**
 * Round 3: the packages must be addressed to this node, one from every other participant. Each
 * is opened (signature of its sender first, then decryption with `recipient`, this node's
 * identity), and each share is checked against its sender's commitments from the round-1
 * transcript before noble combines them, so an inconsistent sender is named rather than just
 * failing the ceremony. The key package carries `epoch`, the committee epoch the key is made in.
 */
export function finishRound3(
  self: number,
  state: CeremonyState,
  packages: readonly Round2Wire[],
  recipient: EnvelopeRecipient,
  epoch = 1,
): FinishedKey {
  const { params } = state;
  if (state.step !== 2 || !state.transcript) {
    throw stateError(params, 'round 3 needs round 2 first');
  }
  packages.forEach((p, i) => {
    if (p.to !== self) {
      throw new KmaasError(
        'ERR_VALIDATION',
        `round2[${i}].to: addressed to node ${p.to}, not ${self}`,
        {
          field: `round2[${i}].to`,
        },
      );
    }
  });
  const senders = params.participants.filter((p) => p !== self);
  checkCoverage(
    params,
    packages.map((p) => p.from),
    'round2',
    senders,
  );
  const shares = openAll(self, params, packages, recipient);
  const commitmentsOf = new Map(
    state.transcript.map((p) => [
      p.node,
      p.commitment.map((c) => Point.fromBytes(fromB64(c, 'commitment'))),
    ]),
  );
  const culprits = shares
    .filter((s) => !shareMatches(s.bytes, commitmentsOf.get(s.from)!, self))
    .map((s) => s.from)
    .sort((a, b) => a - b);
  if (culprits.length > 0) {
    for (const s of shares) s.bytes.fill(0);
    throw dkgFailed(
      params,
      `round 3: shares from node(s) ${culprits.join(', ')} do not match their commitments`,
      culprits,
    );
  }
  const secret = structuredClone(state.secret);
  let key: ReturnType<typeof DKG.round3>;
  try {
    key = DKG.round3(
      secret,
      secret.round1Cache ?? [],
      shares.map((s) => ({ identifier: frostId(s.from), signingShare: s.bytes })),
    );
  } catch (err) {
    throw dkgFailed(params, `round 3: ${(err as Error).message}`, []);
  } finally {
    for (const s of shares) s.bytes.fill(0);
  }
  return toFinishedKey(self, params, key, epoch);
}

function toFinishedKey(
  self: number,
  params: CeremonyParams,
  key: ReturnType<typeof DKG.round3>,
  epoch: number,
): FinishedKey {
  const verificationShares = new Map<number, GroupElement>();
  for (const [id, bytes] of Object.entries(key.public.verifyingShares)) {
    verificationShares.set(nodeOf(params, id), Point.fromBytes(bytes));
  }
  const keyPackage = buildKeyPackage({
    tenant: params.tenant,
    version: params.version,
    epoch,
    commitments: key.public.commitments.map((c) => Point.fromBytes(c)),
    verificationShares,
  });
  // Independent check of what noble produced: consistent package, one K_i per participant.
  const parsed = parseKeyPackage(keyPackage);
  const share = Fn.fromBytes(key.secret.signingShare);
  key.secret.signingShare.fill(0);
  if (
    parsed.threshold !== params.threshold ||
    parsed.verificationShares.size !== params.participants.length ||
    !parsed.verificationShares.get(self)?.equals(Point.BASE.multiply(share))
  ) {
    throw dkgFailed(params, 'round 3: the resulting key package is inconsistent', []);
  }
  return { share, keyPackage };
}
