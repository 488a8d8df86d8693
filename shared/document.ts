/**
 * What a document key is derived from, and how (DESIGN.md section 2, steps 1 and 4).
 *
 * The VOPRF input is a canonical, length-prefixed encoding of (tenant, key version, document id)
 * under a fixed domain label, so no two distinct triples can ever encode alike. The VOPRF output
 * goes through HKDF-SHA-256 with a label naming its use to give the AES-256-GCM key.
 */
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { concat, lengthPrefixed, utf8Bytes } from './encoding.ts';
import { KmaasError } from './errors.ts';

const INPUT_LABEL = utf8Bytes('KMaaS-v1 document key input');
const HKDF_INFO = utf8Bytes('KMaaS-v1 AES-256-GCM document key');

export const TENANT_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const MAX_DOCUMENT_ID_BYTES = 1024;

export function checkTenant(tenant: string, field = 'tenant'): string {
  if (!TENANT_PATTERN.test(tenant)) {
    throw new KmaasError('ERR_VALIDATION', `${field}: 1-63 characters of a-z, 0-9, '.', '_', '-'`, {
      field,
    });
  }
  return tenant;
}

export function documentInput(tenant: string, version: number, documentId: string): Uint8Array {
  checkTenant(tenant);
  if (!Number.isInteger(version) || version < 1 || version > 0xffffffff) {
    throw new KmaasError('ERR_VALIDATION', 'version: expected a positive 32-bit integer', {
      field: 'version',
    });
  }
  const doc = utf8Bytes(documentId);
  if (doc.length === 0 || doc.length > MAX_DOCUMENT_ID_BYTES) {
    throw new KmaasError(
      'ERR_VALIDATION',
      `documentId: 1-${MAX_DOCUMENT_ID_BYTES} bytes of UTF-8`,
      {
        field: 'documentId',
      },
    );
  }
  const v = Uint8Array.of(
    version >>> 24,
    (version >>> 16) & 0xff,
    (version >>> 8) & 0xff,
    version & 0xff,
  );
  return concat(
    lengthPrefixed(INPUT_LABEL),
    lengthPrefixed(utf8Bytes(tenant)),
    v,
    lengthPrefixed(doc),
  );
}

/** 32 raw bytes for AES-256-GCM. The caller imports them as a non-extractable key where it can. */
export function documentKeyBytes(voprfOutput: Uint8Array): Uint8Array {
  return hkdf(sha256, voprfOutput, new Uint8Array(0), HKDF_INFO, 32);
}
