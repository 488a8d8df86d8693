/**
 * A detector of DKG shares in a recording of coordinator <-> node traffic, independent of the
 * code under test: it reads the recorded WebSocket messages as JSON, takes the Feldman
 * commitments C_ik of every round-1 package it finds (objects { node, commitment: [...] }), and
 * computes with @noble/curves' ristretto255 directly, for every sender i and every participant j,
 *
 *   P_ij = sum_k C_ik * x_j^k      (= f_i(x_j) * G, Feldman VSS)
 *   K_j  = sum_i P_ij              (= k_j * G, the final share's public image)
 *
 * Then every 32-byte window of every byte string in the recording (each JSON string decoded as
 * base64url and as hex, whichever applies), read as a scalar in little- and in big-endian order,
 * is multiplied by G and looked up among those points. A hit is a share in the clear.
 */
import { ristretto255 } from '@noble/curves/ed25519.js';

const RistrettoPoint = ristretto255.Point;
type Point = InstanceType<typeof RistrettoPoint>;
const Fn = RistrettoPoint.Fn;
const WINDOW = 32;

export interface Finding {
  /** 'round-2 share' f_i(x_j), or 'final share' k_j. */
  kind: 'round-2 share' | 'final share';
  /** The sender i (round-2 shares only). */
  from?: number;
  to: number;
  /** Which message (index into the recording) and which string in it. */
  message: number;
  encoding: 'base64url' | 'hex';
}

/** Every string anywhere in a parsed JSON value. */
function strings(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) for (const v of value) strings(v, out);
  else if (value && typeof value === 'object')
    for (const v of Object.values(value)) strings(v, out);
  return out;
}

/** Round-1 packages anywhere in a parsed JSON value: { node, commitment: string[] }. */
function round1Packages(value: unknown, out: { node: number; commitment: string[] }[] = []) {
  if (Array.isArray(value)) {
    for (const v of value) round1Packages(v, out);
  } else if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    if (
      typeof o.node === 'number' &&
      Array.isArray(o.commitment) &&
      o.commitment.every((c) => typeof c === 'string')
    ) {
      out.push({ node: o.node, commitment: o.commitment });
    }
    for (const v of Object.values(o)) round1Packages(v, out);
  }
  return out;
}

/** The byte strings a text may stand for: base64url and hex decodings, where they apply. */
export function decodings(text: string): { bytes: Uint8Array; encoding: 'base64url' | 'hex' }[] {
  const out: { bytes: Uint8Array; encoding: 'base64url' | 'hex' }[] = [];
  if (/^(?:[0-9a-fA-F]{2})+$/.test(text)) {
    out.push({ bytes: new Uint8Array(Buffer.from(text, 'hex')), encoding: 'hex' });
  }
  if (/^[A-Za-z0-9_-]+={0,2}$/.test(text)) {
    out.push({ bytes: new Uint8Array(Buffer.from(text, 'base64url')), encoding: 'base64url' });
  }
  return out;
}

function scalarOf(window: Uint8Array): bigint | undefined {
  let n = 0n;
  for (let i = window.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(window[i]!);
  return n === 0n || n >= Fn.ORDER ? undefined : n;
}

export interface Detector {
  /** The senders whose commitments the recording holds; none means nothing to check against. */
  senders: number[];
  participants: number[];
  /** Windows checked so far (to show the scan is not vacuous). */
  windows: number;
  findings: Finding[];
}

/**
 * Scan `messages` (the text of every recorded WebSocket message) for shares consistent with the
 * commitments they carry.
 */
export function detectShares(messages: readonly string[]): Detector {
  const parsed = messages.map((m) => {
    try {
      return JSON.parse(m) as unknown;
    } catch {
      return m;
    }
  });
  const commitments = new Map<number, Point[]>();
  for (const value of parsed) {
    for (const p of round1Packages(value)) {
      commitments.set(
        p.node,
        p.commitment.map((c) => RistrettoPoint.fromBytes(Buffer.from(c, 'base64url'))),
      );
    }
  }
  const senders = [...commitments.keys()].sort((a, b) => a - b);
  const participants = senders;
  const targets = new Map<string, Omit<Finding, 'message' | 'encoding'>>();
  const finals = new Map<number, Point>();
  for (const i of senders) {
    for (const j of participants) {
      // Horner: sum_k C_ik * x^k evaluated from the top coefficient down.
      const cs = commitments.get(i)!;
      let acc = RistrettoPoint.ZERO;
      for (let k = cs.length - 1; k >= 0; k--) acc = acc.multiply(BigInt(j)).add(cs[k]!);
      targets.set(acc.toHex(), { kind: 'round-2 share', from: i, to: j });
      finals.set(j, (finals.get(j) ?? RistrettoPoint.ZERO).add(acc));
    }
  }
  for (const [j, point] of finals) targets.set(point.toHex(), { kind: 'final share', to: j });

  const detector: Detector = { senders, participants, windows: 0, findings: [] };
  if (targets.size === 0) return detector;
  parsed.forEach((value, message) => {
    for (const text of strings(value)) {
      for (const { bytes, encoding } of decodings(text)) {
        for (let at = 0; at + WINDOW <= bytes.length; at++) {
          const window = bytes.subarray(at, at + WINDOW);
          for (const s of [scalarOf(window), scalarOf(window.slice().reverse())]) {
            detector.windows++;
            if (s === undefined) continue;
            const hit = targets.get(RistrettoPoint.BASE.multiply(s).toHex());
            if (hit) detector.findings.push({ ...hit, message, encoding });
          }
        }
      }
    }
  });
  return detector;
}
