/**
 * `kmaas audit verify <file>`: check a node's audit log (nodes/audit-log.ts) offline, without a
 * coordinator. Prints `audit log OK: N entries, last seq S, head <hash>`, or fails with
 * ERR_AUDIT_BROKEN naming the first broken line and why. The head is worth keeping: a later
 * check that finds a different entry under that seq shows lines cut from the end.
 */
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { KmaasError } from '../shared/errors.ts';
import { verifyAuditLog, type AuditVerification } from '../nodes/audit-log.ts';
import type { Io } from './program.ts';

async function verifyFile(io: Io, file: string): Promise<AuditVerification> {
  try {
    return await verifyAuditLog(resolve(io.cwd, file));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EISDIR' || code === 'EACCES') {
      const why =
        code === 'ENOENT' ? 'not found' : code === 'EISDIR' ? 'is a folder' : 'not readable';
      throw new KmaasError('ERR_VALIDATION', `audit log ${file} ${why}`, {
        field: 'file',
        path: file,
      });
    }
    throw err;
  }
}

/** Adds `audit` and its subcommands to the program. */
export function addAuditCommand(program: Command, io: Io): void {
  const audit = program.command('audit').description('node audit logs');

  audit
    .command('verify <file>')
    .description("check a node's audit log (<data dir>/audit.jsonl): every line, the whole chain")
    .action(async (file: string, _opts: unknown, cmd: Command) => {
      const result = await verifyFile(io, file);
      const broken = result.firstBroken;
      if (broken) {
        throw new KmaasError(
          'ERR_AUDIT_BROKEN',
          `line ${broken.line} (seq ${broken.seq}): ${broken.reason}`,
          { ...broken, entries: result.entries },
        );
      }
      if (cmd.optsWithGlobals<{ json?: boolean }>().json) {
        io.stdout(JSON.stringify(result, null, 2) + '\n');
      } else {
        io.stdout(
          `audit log OK: ${result.entries} entries, last seq ${result.lastSeq}, head ${result.head}\n`,
        );
      }
    });
}
