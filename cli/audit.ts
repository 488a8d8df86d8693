/**
 * `kmaas audit verify <file>`: check a node's audit log (nodes/audit-log.ts) offline, without a
 * coordinator. Prints `audit log OK: N entries, last seq S, head <hash>` (and a line on the
 * signed head when there is one), or fails with the code of the first problem found:
 *
 *   ERR_AUDIT_BROKEN     a line is edited, missing, moved or unreadable: its line and seq named
 *   ERR_AUDIT_TRUNCATED  the log ends before its signed head (audit.head): the first missing seq
 *   ERR_AUDIT_HEAD       the head's signature does not verify with the node's signing key, or
 *                        the head names an entry the log does not hold
 *
 * The head is read from `audit.head` next to the file (or --head). Its signature is checked when
 * the node's Ed25519 signing public key is given (--signing-key, or --node to read it from the
 * node's GET /healthz); then a missing head is an error too.
 */
import type { Command } from 'commander';
import { dirname, join, resolve } from 'node:path';
import { fromB64 } from '../shared/encoding.ts';
import { KmaasError } from '../shared/errors.ts';
import { AUDIT_HEAD_FILE, readAuditHead, type AuditHead } from '../nodes/audit-head.ts';
import { verifyAuditLog, type AuditVerification } from '../nodes/audit-log.ts';
import type { Io } from './program.ts';

interface VerifyOpts {
  head?: string;
  signingKey?: string;
  node?: string;
}

function fileProblem(err: unknown, what: string, field: string, file: string): KmaasError | void {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'EISDIR' || code === 'EACCES') {
    const why =
      code === 'ENOENT' ? 'not found' : code === 'EISDIR' ? 'is a folder' : 'not readable';
    return new KmaasError('ERR_VALIDATION', `${what} ${file} ${why}`, { field, path: file });
  }
}

/** The node's signing key as it publishes it on GET /healthz (`identity.signing`). */
async function keyFromNode(url: string): Promise<{ key: Uint8Array; node: number }> {
  let healthz: URL;
  try {
    healthz = new URL('/healthz', url.replace(/^ws(s?):/, 'http$1:'));
  } catch {
    throw new KmaasError('ERR_VALIDATION', `--node: not a URL: ${url}`, { field: 'node' });
  }
  let body: unknown;
  try {
    const res = await fetch(healthz, { signal: AbortSignal.timeout(10_000) });
    body = await res.json();
  } catch (err) {
    throw new KmaasError(
      'ERR_NODE_UNAVAILABLE',
      `--node: no answer from ${healthz.href}: ${(err as Error).message}`,
      { field: 'node' },
    );
  }
  const { node, identity } = (body ?? {}) as { node?: unknown; identity?: { signing?: unknown } };
  if (typeof identity?.signing !== 'string' || typeof node !== 'number') {
    throw new KmaasError('ERR_VALIDATION', `--node: ${healthz.href} names no signing key`, {
      field: 'node',
    });
  }
  return { key: fromB64(identity.signing, 'identity.signing'), node };
}

async function signingKey(opts: VerifyOpts): Promise<{ key: Uint8Array; node?: number } | void> {
  if (opts.signingKey !== undefined && opts.node !== undefined) {
    throw new KmaasError('ERR_VALIDATION', 'give either --signing-key or --node, not both', {
      field: 'signingKey',
    });
  }
  if (opts.signingKey !== undefined) {
    const key = fromB64(opts.signingKey, 'signingKey');
    if (key.length !== 32) {
      throw new KmaasError('ERR_BAD_LENGTH', '--signing-key: expected a 32-byte Ed25519 key', {
        field: 'signingKey',
      });
    }
    return { key };
  }
  if (opts.node !== undefined) return keyFromNode(opts.node);
}

async function verify(io: Io, file: string, opts: VerifyOpts) {
  const path = resolve(io.cwd, file);
  const headPath = opts.head ? resolve(io.cwd, opts.head) : join(dirname(path), AUDIT_HEAD_FILE);
  const signer = await signingKey(opts);
  let head: AuditHead | undefined;
  try {
    head = await readAuditHead(headPath);
  } catch (err) {
    throw fileProblem(err, 'audit head', 'head', opts.head ?? headPath) ?? err;
  }
  if (!head && opts.head) {
    throw new KmaasError('ERR_VALIDATION', `audit head ${opts.head} not found`, {
      field: 'head',
      path: opts.head,
    });
  }
  if (!head && signer) {
    throw new KmaasError(
      'ERR_AUDIT_HEAD',
      `no signed head at ${headPath}: a node with a signing key writes one after every batch`,
      { path: headPath },
    );
  }
  if (head && signer?.node !== undefined && head.node !== signer.node) {
    throw new KmaasError(
      'ERR_AUDIT_HEAD',
      `the head is of node ${head.node}, but --node is node ${signer.node}`,
      { path: headPath, node: head.node },
    );
  }
  try {
    return await verifyAuditLog(path, { head, signingKey: signer?.key });
  } catch (err) {
    throw fileProblem(err, 'audit log', 'file', file) ?? err;
  }
}

/** The first problem found, as the error the command fails with. */
function failure(result: AuditVerification): KmaasError | undefined {
  const { entries } = result;
  if (result.headProblem) {
    return new KmaasError('ERR_AUDIT_HEAD', result.headProblem, {
      entries,
      headSeq: result.signedHead?.seq,
    });
  }
  const broken = result.firstBroken;
  if (broken) {
    return new KmaasError(
      'ERR_AUDIT_BROKEN',
      `line ${broken.line} (seq ${broken.seq}): ${broken.reason}`,
      {
        ...broken,
        entries,
      },
    );
  }
  const cut = result.truncated;
  if (cut) {
    const missing =
      cut.firstMissing === cut.headSeq
        ? `entry seq ${cut.firstMissing} is missing`
        : `entries seq ${cut.firstMissing} to ${cut.headSeq} are missing`;
    return new KmaasError(
      'ERR_AUDIT_TRUNCATED',
      `the log ends at seq ${result.lastSeq} but its signed head is at seq ${cut.headSeq}: ${missing} (cut from the end)`,
      { ...cut, entries },
    );
  }
  return undefined;
}

/** Adds `audit` and its subcommands to the program. */
export function addAuditCommand(program: Command, io: Io): void {
  const audit = program.command('audit').description('node audit logs');

  audit
    .command('verify <file>')
    .description(
      "check a node's audit log (<data dir>/audit.jsonl): every line, the whole chain, and the signed head next to it",
    )
    .option('--head <file>', 'the signed head (default: audit.head next to the log)')
    .option(
      '--signing-key <b64url>',
      "the node's Ed25519 signing public key: check the head's signature",
    )
    .option('--node <url>', "read the node's signing key from its GET /healthz (http://host:port)")
    .action(async (file: string, opts: VerifyOpts, cmd: Command) => {
      const result = await verify(io, file, opts);
      const problem = failure(result);
      if (problem) throw problem;
      if (cmd.optsWithGlobals<{ json?: boolean }>().json) {
        io.stdout(JSON.stringify(result, null, 2) + '\n');
        return;
      }
      io.stdout(
        `audit log OK: ${result.entries} entries, last seq ${result.lastSeq}, head ${result.head}\n`,
      );
      const signed = result.signedHead;
      if (signed) {
        const checked = signed.signatureChecked
          ? 'signature verified'
          : 'signature not checked (give --signing-key or --node)';
        io.stdout(`signed head: node ${signed.node}, seq ${signed.seq}, ${checked}\n`);
      } else {
        // Without a head, lines cut from the end leave a valid chain: say so rather than imply
        // the log is whole. With --node or --signing-key a missing head is an error instead.
        io.stderr(
          'warning: no signed head (audit.head) beside the log: entries cut from its end cannot be detected; give --node or --signing-key to require one\n',
        );
      }
    });
}
