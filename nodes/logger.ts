/**
 * Structured JSON logs (pino) on stdout, one object per line. Secrets are kept out by
 * construction (Redacted values print as "[redacted ...]", handlers log only public fields); the
 * redact paths below are a second line of defence should a request body or header ever be logged.
 */
import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.ts';

export const REDACT_PATHS = [
  'secret',
  '*.secret',
  'share',
  '*.share',
  'token',
  '*.token',
  'auth',
  '*.auth',
  'blinded',
  '*.blinded',
  'signingShare',
  '*.signingShare',
  'headers.authorization',
  '*.headers.authorization',
];

export function createLogger(
  level: LogLevel = 'info',
  destination?: pino.DestinationStream,
): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service: 'kmaas-node' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  // Synchronous stdout by default: a fatal line is out before process.exit, and a launcher
  // reading the `listening` line never races a buffer. Evaluations log at debug, so the cost of
  // synchronous writes stays off the hot path at the default level.
  return pino(options, destination ?? pino.destination({ dest: 1, sync: true }));
}
