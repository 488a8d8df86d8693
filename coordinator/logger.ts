/**
 * The coordinator's structured logger: pino JSON lines on stdout (docs/CONTRACTS.md). Tokens,
 * blinded elements, evaluations and DKG packages are never passed to it; the redaction below is
 * a second line of defence should one ever be, not the reason they stay out of the log.
 */
import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger };

const REDACT = [
  'token',
  'authorization',
  'clusterToken',
  'dpop',
  'adminToken',
  'blinded',
  'evaluated',
  'signingShare',
  'round2',
  '*.token',
  '*.authorization',
  '*.clusterToken',
  '*.dpop',
  '*.adminToken',
  '*.blinded',
  '*.evaluated',
  '*.signingShare',
  '*.round2',
  'headers.authorization',
  'headers.dpop',
  'req.headers.dpop',
  'req.headers.authorization',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'coordinator' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT, censor: '[redacted]' },
    },
    destination,
  );
}
