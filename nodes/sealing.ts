/**
 * Sealing of everything secret the node writes to disk (DESIGN.md section 5): Shamir shares, DKG
 * ceremony state and the node's identity private keys (identity.ts).
 *
 *   KEK    = HKDF-SHA-256(IKM = node secret, salt = per-database random salt,
 *                         info = "KMaaS-v1 node KEK", L = 32)          (RFC 5869 section 2)
 *   sealed = 0x01 || nonce (12) || AES-256-GCM(KEK, nonce, plaintext, AAD) || tag (16)
 *                                                                      (NIST SP 800-38D)
 *
 * The AAD binds each record to what it is and where it belongs (purpose, node id, tenant, key
 * version, ceremony id, committee epoch), so a record copied to another row, another node's database or another
 * purpose fails authentication instead of being used. Nonces are random: one KEK seals a handful
 * of records per key version, far below the 2^32 random-nonce limit of SP 800-38D section 8.3.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { concat, lengthPrefixed, utf8Bytes } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import type { Redacted } from '../shared/redacted.ts';

export const KEK_INFO = 'KMaaS-v1 node KEK';
export const SALT_BYTES = 32;

const FORMAT_V1 = 0x01;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** `reshare-seed` and `reshare-chunk`: a reshare's dealing seed and received shares (reshare*.ts). */
export type SealPurpose =
  'check' | 'share' | 'ceremony' | 'identity' | 'reshare-seed' | 'reshare-chunk';

/** What a sealed record is bound to; every field goes into the AAD. */
export interface SealContext {
  purpose: SealPurpose;
  nodeId: number;
  tenant: string;
  version: number;
  ceremonyId?: string;
  /** The committee epoch a share belongs to; absent means 1. */
  epoch?: number;
}

function u32(n: number): Uint8Array {
  return Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/**
 * A canonical, length-prefixed encoding: no two distinct contexts give the same AAD. The epoch is
 * appended only when it is above 1, so that shares sealed before epochs existed (all of epoch 1)
 * still open; the trailing field cannot run into the others, which all end on a length or a fixed
 * width.
 */
export function encodeAad(ctx: SealContext): Uint8Array {
  const epoch = ctx.epoch ?? 1;
  return concat(
    lengthPrefixed(utf8Bytes(`KMaaS-v1 sealed ${ctx.purpose}`)),
    Uint8Array.of(ctx.nodeId >> 8, ctx.nodeId & 0xff),
    lengthPrefixed(utf8Bytes(ctx.tenant)),
    u32(ctx.version),
    lengthPrefixed(utf8Bytes(ctx.ceremonyId ?? '')),
    epoch > 1 ? u32(epoch) : new Uint8Array(0),
  );
}

/** Thrown by `open` when a record fails authentication (wrong key, tampering, wrong context). */
export class UnsealError extends Error {
  constructor(readonly context: SealContext) {
    super(`sealed ${context.purpose} record failed authentication`);
    this.name = 'UnsealError';
  }
}

export class Sealer {
  readonly #kek: Uint8Array;

  constructor(nodeSecret: Redacted<Uint8Array>, salt: Uint8Array) {
    if (salt.length !== SALT_BYTES) {
      throw new KmaasError('ERR_INTERNAL', `KEK salt must be ${SALT_BYTES} bytes`);
    }
    this.#kek = hkdf(sha256, nodeSecret.reveal(), salt, utf8Bytes(KEK_INFO), 32);
  }

  seal(plaintext: Uint8Array, ctx: SealContext): Uint8Array {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#kek, nonce, { authTagLength: TAG_BYTES });
    cipher.setAAD(encodeAad(ctx));
    const body = concat(cipher.update(plaintext), cipher.final());
    return concat(Uint8Array.of(FORMAT_V1), nonce, body, cipher.getAuthTag());
  }

  open(sealed: Uint8Array, ctx: SealContext): Uint8Array {
    if (sealed.length < 1 + NONCE_BYTES + TAG_BYTES || sealed[0] !== FORMAT_V1) {
      throw new UnsealError(ctx);
    }
    const nonce = sealed.subarray(1, 1 + NONCE_BYTES);
    const body = sealed.subarray(1 + NONCE_BYTES, sealed.length - TAG_BYTES);
    const tag = sealed.subarray(sealed.length - TAG_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', this.#kek, nonce, {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(encodeAad(ctx));
    decipher.setAuthTag(tag);
    try {
      return concat(decipher.update(body), decipher.final());
    } catch {
      throw new UnsealError(ctx);
    }
  }

  /** Best-effort erasure of the KEK when the store closes. */
  destroy(): void {
    this.#kek.fill(0);
  }

  toJSON(): string {
    return '[redacted sealer]';
  }
}
