/**
 * The one ciphersuite KMaaS speaks: RFC 9497 section 4.1, ristretto255-SHA512, in verifiable
 * mode (modeVOPRF = 0x01, section 3.1).
 */
import { concatBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { KmaasError } from './errors.ts';

export const SUITE = 'ristretto255-SHA512' as const;
export const MODE_VOPRF = 0x01;

/** contextString = "OPRFV1-" || I2OSP(mode, 1) || "-" || identifier (RFC 9497 section 3.1). */
export const CONTEXT_STRING = concatBytes(
  utf8ToBytes('OPRFV1-'),
  Uint8Array.of(MODE_VOPRF),
  utf8ToBytes('-' + SUITE),
);

/** The most blinded elements one evaluation request may carry. */
export const MAX_BATCH = 256;

/** ERR_EMPTY_BATCH or ERR_BATCH_TOO_LARGE, the same on the client, the coordinator and the node. */
export function checkBatchSize(count: number, max = MAX_BATCH): void {
  if (count === 0)
    throw new KmaasError('ERR_EMPTY_BATCH', 'at least one blinded element is required');
  if (count > max) {
    throw new KmaasError('ERR_BATCH_TOO_LARGE', `at most ${max} blinded elements per request`, {
      max,
      actual: count,
    });
  }
}
