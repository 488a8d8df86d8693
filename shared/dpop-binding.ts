/**
 * What a DPoP proof (RFC 9449) of an evaluation is bound to, computed the same way by the SDK
 * that signs the proof and by every node that checks it. Browser-safe: @noble/hashes only.
 *
 * RFC 9449 section 4.2 binds a proof to a method and URL (htm, htu) and, with `ath`, to the access
 * token. That is not enough here: the coordinator relays the proof, and could swap the blinded
 * elements of the request for its own. So the proof also carries `kmaas_bh` (an extension claim,
 * which section 4.2 allows), the hash of the request's tenant, key version and blinded elements:
 *
 *   kmaas_bh = b64url(SHA-256( len(label) || label || len(tenant) || tenant || u32(version)
 *                              || u32(n) || len(B_1) || B_1 || ... || len(B_n) || B_n ))
 *
 * where len and u32 are 4-byte big-endian, strings are UTF-8, and each B_i is the base64url text
 * of a blinded element exactly as sent (the nodes refuse non-canonical base64url anyway).
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { toB64 } from './encoding.ts';

/** Domain separation: these bytes are hashed for nothing else. */
export const BINDING_LABEL = 'KMAAS-DPoP-evaluate-v1';

function u32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n >>> 0, false);
  return out;
}

function field(text: string): Uint8Array {
  const bytes = utf8ToBytes(text);
  return concatBytes(u32(bytes.length), bytes);
}

/**
 * The `kmaas_bh` claim of the proof for one evaluate request.
 * @example evaluateBindingHash('acme', 1, ['4gB...']) // 43 characters of base64url
 */
export function evaluateBindingHash(
  tenant: string,
  version: number,
  blinded: readonly string[],
): string {
  const parts = [field(BINDING_LABEL), field(tenant), u32(version), u32(blinded.length)];
  for (const b of blinded) parts.push(field(b));
  return toB64(sha256(concatBytes(...parts)));
}

/** ath: base64url of the SHA-256 of the access token's ASCII (RFC 9449 section 4.2). */
export function accessTokenHash(token: string): string {
  return toB64(sha256(utf8ToBytes(token)));
}

/**
 * The path of the evaluate endpoint; the path of a proof's `htu` must end with it. Nodes do not
 * know the coordinator's public origin (nor a path prefix it is served under), so they check the
 * path only (RFC 9449 section 4.3 step 9 compares the whole URL; kmaas_bh and ath bind the proof
 * to the request instead).
 */
export function evaluatePath(tenant: string, version: number): string {
  return `/v1/tenants/${encodeURIComponent(tenant)}/keys/${version}/evaluate`;
}
