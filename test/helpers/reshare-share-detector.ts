/**
 * A detector of resharing secrets in a recording of coordinator <-> node traffic, independent of
 * the code under test (PLAN.md "Reshare"): from public data only it computes, with
 * @noble/curves' ristretto255 directly,
 *
 *   K_j   (old key package: node j's epoch-e verification share, = k_j * G)
 *   K'_j  (new key package: node j's epoch-(e+1) verification share, = k'_j * G)
 *   P_ij = sum_k C_ik * x_j^k   (= g_i(x_j) * G, Feldman VSS; C_ik from the reshare.deal replies
 *                                the recording itself carries, every dealing of every key)
 *
 * and multiplies by G every 32-byte window of every byte string in the recording (each JSON
 * string decoded as base64url and as hex, whichever applies), read as a little- and as a
 * big-endian scalar. A window whose image is one of those points is a secret in the clear.
 */
import { ristretto255 } from '@noble/curves/ed25519.js';
import { decodings } from './share-detector.ts';

const RistrettoPoint = ristretto255.Point;
type Point = InstanceType<typeof RistrettoPoint>;
const Fn = RistrettoPoint.Fn;
const WINDOW = 32;

export interface ReshareFinding {
  kind: 'old share' | 'new share' | 'piece';
  /** The dealer i (pieces only), the key, and the holder j. */
  from?: number;
  key?: string;
  to: number;
  message: number;
  encoding: 'base64url' | 'hex';
}

export interface ReshareScan {
  /** Dealers whose dealings the recording holds, and how many (dealer, key) dealings. */
  dealers: number[];
  dealings: number;
  /** Points looked for, and windows checked (to show the scan is not vacuous). */
  targets: number;
  windows: number;
  findings: ReshareFinding[];
}

/** Every string anywhere in a parsed JSON value. */
function strings(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) for (const v of value) strings(v, out);
  else if (value && typeof value === 'object')
    for (const v of Object.values(value)) strings(v, out);
  return out;
}

/** reshare.deal replies anywhere in a parsed value: { dealer, dealing: [{ tenant, version, commitments }] }. */
function dealReplies(
  value: unknown,
  out: { dealer: number; key: string; commitments: string[] }[] = [],
) {
  if (Array.isArray(value)) {
    for (const v of value) dealReplies(v, out);
  } else if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    if (typeof o.dealer === 'number' && Array.isArray(o.dealing)) {
      for (const d of o.dealing as Record<string, unknown>[]) {
        if (Array.isArray(d.commitments)) {
          out.push({
            dealer: o.dealer,
            key: `${String(d.tenant)}/${String(d.version)}`,
            commitments: d.commitments as string[],
          });
        }
      }
    }
    for (const v of Object.values(o)) dealReplies(v, out);
  }
  return out;
}

function scalarOf(window: Uint8Array): bigint | undefined {
  let n = 0n;
  for (let i = window.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(window[i]!);
  return n === 0n || n >= Fn.ORDER ? undefined : n;
}

/**
 * Scan `messages` for old shares (`oldShares`: j -> K_j), new shares (`newShares`: j -> K'_j)
 * and every piece g_i(x_j) for j in `receivers`, dealt in the recording.
 */
export function detectReshareSecrets(
  messages: readonly string[],
  oldShares: ReadonlyMap<number, Point>,
  newShares: ReadonlyMap<number, Point>,
  receivers: readonly number[],
): ReshareScan {
  const parsed = messages.map((m) => {
    try {
      return JSON.parse(m) as unknown;
    } catch {
      return m;
    }
  });
  const targets = new Map<string, Omit<ReshareFinding, 'message' | 'encoding'>>();
  for (const [j, p] of oldShares) targets.set(p.toHex(), { kind: 'old share', to: j });
  for (const [j, p] of newShares) targets.set(p.toHex(), { kind: 'new share', to: j });
  const dealings = new Map<string, { dealer: number; key: string; commitments: string[] }>();
  for (const value of parsed) {
    for (const d of dealReplies(value)) dealings.set(`${d.dealer} ${d.key}`, d);
  }
  for (const d of dealings.values()) {
    const cs = d.commitments.map((c) => RistrettoPoint.fromBytes(Buffer.from(c, 'base64url')));
    for (const j of receivers) {
      // Horner: sum_k C_ik * x^k evaluated from the top coefficient down.
      let acc = RistrettoPoint.ZERO;
      for (let k = cs.length - 1; k >= 0; k--) acc = acc.multiply(BigInt(j)).add(cs[k]!);
      targets.set(acc.toHex(), { kind: 'piece', from: d.dealer, key: d.key, to: j });
    }
  }
  const scan: ReshareScan = {
    dealers: [...new Set([...dealings.values()].map((d) => d.dealer))].sort((a, b) => a - b),
    dealings: dealings.size,
    targets: targets.size,
    windows: 0,
    findings: [],
  };
  parsed.forEach((value, message) => {
    for (const text of strings(value)) {
      for (const { bytes, encoding } of decodings(text)) {
        for (let at = 0; at + WINDOW <= bytes.length; at++) {
          const window = bytes.subarray(at, at + WINDOW);
          for (const s of [scalarOf(window), scalarOf(window.slice().reverse())]) {
            scan.windows++;
            if (s === undefined) continue;
            const hit = targets.get(RistrettoPoint.BASE.multiply(s).toHex());
            if (hit) scan.findings.push({ ...hit, message, encoding });
          }
        }
      }
    }
  });
  return scan;
}
