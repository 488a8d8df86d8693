/**
 * The node's long-term identity keys (DESIGN.md sections 1 and 3): an Ed25519 key pair that signs
 * transcripts (RFC 8032) and an X25519 key pair that receives encrypted DKG round-2 packages
 * (RFC 7748). Made at the node's first start, stored sealed (sealing.ts, purpose "identity") in
 * the meta table of node.db, loaded on every later start. The private keys live only in Redacted
 * boxes and leave them only inside sign and sharedSecret; the public keys are published in the
 * `status` reply and on GET /healthz.
 */
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { concat, toB64 } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import { Redacted } from '../shared/redacted.ts';
import type { NodeStore } from './store.ts';

const KEY_BYTES = 32;

/** The public keys as published: unpadded base64url. */
export interface PublishedIdentity {
  signing: string;
  encryption: string;
}

export class NodeIdentity {
  readonly signingPublicKey: Uint8Array;
  readonly encryptionPublicKey: Uint8Array;
  readonly #signingKey: Redacted<Uint8Array>;
  readonly #encryptionKey: Redacted<Uint8Array>;

  private constructor(signingKey: Uint8Array, encryptionKey: Uint8Array) {
    this.#signingKey = new Redacted(signingKey, 'identity signing key');
    this.#encryptionKey = new Redacted(encryptionKey, 'identity encryption key');
    this.signingPublicKey = ed25519.getPublicKey(signingKey);
    this.encryptionPublicKey = x25519.getPublicKey(encryptionKey);
  }

  /**
   * Load this node's identity from `store`, making and storing it first when there is none yet.
   * Stored as Ed25519 secret key (32) || X25519 secret key (32), sealed.
   */
  static loadOrCreate(store: NodeStore): NodeIdentity {
    let stored = store.loadIdentity();
    if (!stored) {
      const fresh = concat(ed25519.utils.randomSecretKey(), x25519.utils.randomSecretKey());
      try {
        stored = store.saveIdentityOnce(fresh);
      } finally {
        fresh.fill(0);
      }
    }
    try {
      if (stored.length !== 2 * KEY_BYTES) {
        throw new KmaasError('ERR_INTERNAL', `${store.path}: stored identity keys are damaged`);
      }
      return new NodeIdentity(stored.slice(0, KEY_BYTES), stored.slice(KEY_BYTES));
    } finally {
      stored.fill(0);
    }
  }

  /** An Ed25519 signature (RFC 8032 section 5.1.6) over `msg`. */
  sign(msg: Uint8Array): Uint8Array {
    return ed25519.sign(msg, this.#signingKey.reveal());
  }

  /**
   * X25519(own private key, peerPublic) (RFC 7748 section 5). A low-order peer key gives the
   * all-zero value, which section 6.1 allows refusing: ERR_INVALID_POINT.
   */
  sharedSecret(peerPublic: Uint8Array): Uint8Array {
    const refuse = () =>
      new KmaasError('ERR_INVALID_POINT', 'the peer X25519 public key is invalid or of low order');
    if (peerPublic.length !== KEY_BYTES) throw refuse();
    let shared: Uint8Array;
    try {
      shared = x25519.getSharedSecret(this.#encryptionKey.reveal(), peerPublic);
    } catch {
      throw refuse();
    }
    if (shared.every((b) => b === 0)) throw refuse();
    return shared;
  }

  published(): PublishedIdentity {
    return { signing: toB64(this.signingPublicKey), encryption: toB64(this.encryptionPublicKey) };
  }

  /** Best-effort erasure of the private keys when the node closes. */
  destroy(): void {
    this.#signingKey.reveal().fill(0);
    this.#encryptionKey.reveal().fill(0);
  }

  toJSON(): { identity: PublishedIdentity } {
    return { identity: this.published() };
  }
}
