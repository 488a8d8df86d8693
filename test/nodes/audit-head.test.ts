/**
 * The signed head of the audit log (nodes/audit-head.ts): written after each flushed batch and
 * never ahead of the lines, signed by the node's Ed25519 key under a domain label; a log cut at
 * its end is truncated from the first missing seq, an edited line is still named by its line and
 * seq, a head that does not verify is a head problem, and a node refuses to continue a log that
 * ends before its head.
 */
import { readFileSync } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ed25519 } from '@noble/curves/ed25519.js';
import { expect } from 'chai';
import { KmaasError } from '../../shared/errors.ts';
import {
  AUDIT_HEAD_FILE,
  headMessage,
  headSignatureValid,
  parseAuditHead,
  readAuditHead,
  signHead,
  type AuditHead,
  type HeadSigner,
} from '../../nodes/audit-head.ts';
import {
  AUDIT_FILE,
  AuditLog,
  entryHash,
  verifyAuditLog,
  type AuditEntry,
  type AuditEvent,
} from '../../nodes/audit-log.ts';
import { removeDir, silentLogger, tempDir } from './helpers.ts';

const now = () => 1_700_000_000_000;

function makeSigner(node = 3): HeadSigner & { secretKey: Uint8Array } {
  const secretKey = ed25519.utils.randomSecretKey();
  return {
    node,
    secretKey,
    publicKey: ed25519.getPublicKey(secretKey),
    sign: (message) => ed25519.sign(message, secretKey),
  };
}

const evaluation = (i: number): AuditEvent => ({
  type: 'evaluate',
  tenant: 'acme',
  version: 1,
  subject: 'alice',
  count: 1,
  requestId: `req-${i}`,
  outcome: 'ok',
});

/** node.start, `n` evaluations, node.stop, with a signed head: n + 2 lines. */
async function writeLog(dir: string, signer: HeadSigner, n: number): Promise<string[]> {
  const audit = await AuditLog.open(dir, { logger: silentLogger(), now, signer });
  for (let i = 1; i <= n; i++) audit.append(evaluation(i));
  await audit.close();
  return (await readFile(join(dir, AUDIT_FILE), 'utf8')).trimEnd().split('\n');
}

const joinLines = (lines: string[]) => lines.map((l) => `${l}\n`).join('');

async function head(dir: string): Promise<AuditHead> {
  const h = await readAuditHead(join(dir, AUDIT_HEAD_FILE));
  expect(h, 'a head was written').to.not.equal(undefined);
  return h!;
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<KmaasError> {
  let thrown: unknown;
  try {
    await promise;
  } catch (err) {
    thrown = err;
  }
  expect(thrown, `expected ${code}`).to.be.instanceOf(KmaasError);
  expect((thrown as KmaasError).code, (thrown as Error).message).to.equal(code);
  return thrown as KmaasError;
}

describe('nodes/audit-head: the signed head of the audit log', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await removeDir(dir);
  });

  it('after each flushed batch the head names the last entry on disk, signed by the node', async () => {
    const signer = makeSigner();
    const audit = await AuditLog.open(dir, { logger: silentLogger(), now, signer });
    await audit.flush();
    expect(await head(dir)).to.include({ seq: 1, node: 3, hash: audit.head });

    audit.append(evaluation(1));
    const last = audit.append(evaluation(2));
    await audit.flush();
    const h = await head(dir);
    expect(h).to.include({ seq: 3, hash: last.hash, node: 3 });
    expect(h.time).to.equal('2023-11-14T22:13:20.000Z');
    expect(headSignatureValid(h, signer.publicKey)).to.equal(true);
    expect(headSignatureValid(h, makeSigner().publicKey), 'another key').to.equal(false);
    await audit.close();
    expect(await head(dir)).to.include({ seq: 4 });
    expect(await readdir(dir))
      .to.have.members([AUDIT_FILE, AUDIT_HEAD_FILE])
      .and.have.length(2);
  });

  it('the signature covers a domain label, the node, the seq and the hash', () => {
    const signer = makeSigner(7);
    const hash = 'ab'.repeat(32);
    const h = signHead(signer, 12, hash, 'now');
    const message = Buffer.from(headMessage(7, 12, hash));
    expect(message.subarray(0, 19).toString('utf8')).to.equal('KMaaS-v1 audit head');
    expect(message.length).to.equal(19 + 4 + 8 + 32);
    expect(headSignatureValid(h, signer.publicKey)).to.equal(true);
    for (const changed of [{ node: 8 }, { seq: 13 }, { hash: 'cd'.repeat(32) }]) {
      expect(
        headSignatureValid({ ...h, ...changed }, signer.publicKey),
        JSON.stringify(changed),
      ).to.equal(false);
    }
    // The time is informational, outside the signature.
    expect(headSignatureValid({ ...h, time: 'later' }, signer.publicKey)).to.equal(true);
  });

  it('the head is signed only once the lines it names are in the file (a crash leaves it behind)', async () => {
    const seen: { seq: number; inFile: number }[] = [];
    const real = makeSigner();
    const path = join(dir, AUDIT_FILE);
    const signer: HeadSigner = {
      ...real,
      sign: (message) => {
        const seq = Number(Buffer.from(message).readBigUInt64BE(19 + 4));
        const inFile = readFileSync(path, 'utf8').trimEnd().split('\n').length;
        seen.push({ seq, inFile });
        return real.sign(message);
      },
    };
    const audit = await AuditLog.open(dir, { logger: silentLogger(), now, signer });
    for (let i = 1; i <= 5; i++) {
      audit.append(evaluation(i));
      if (i % 2 === 0) await audit.flush();
    }
    await audit.close();
    expect(seen.length).to.be.greaterThan(2);
    for (const s of seen) expect(s.inFile, `head at seq ${s.seq}`).to.be.at.least(s.seq);
  });

  it('an intact log verifies against its head, with the signature checked', async () => {
    const signer = makeSigner();
    await writeLog(dir, signer, 4);
    const result = await verifyAuditLog(join(dir, AUDIT_FILE), {
      head: await head(dir),
      signingKey: signer.publicKey,
    });
    expect(result).to.include({ ok: true, entries: 6, lastSeq: 6 });
    expect(result.signedHead).to.include({ seq: 6, signatureChecked: true });
  });

  it('lines cut from the end: truncated, naming the first missing seq', async () => {
    const signer = makeSigner();
    const lines = await writeLog(dir, signer, 6);
    await writeFile(join(dir, AUDIT_FILE), joinLines(lines.slice(0, 5)));
    const result = await verifyAuditLog(join(dir, AUDIT_FILE), {
      head: await head(dir),
      signingKey: signer.publicKey,
    });
    expect(result.ok).to.equal(false);
    expect(result.firstBroken).to.equal(undefined);
    expect(result.truncated).to.deep.equal({ firstMissing: 6, headSeq: 8 });
    // Without the head, what is left is a valid chain: the reason the head exists.
    expect(await verifyAuditLog(join(dir, AUDIT_FILE))).to.include({ ok: true });
  });

  it('a cut in the middle of a line, before the head, is a truncation too', async () => {
    const signer = makeSigner();
    const lines = await writeLog(dir, signer, 3);
    const text = joinLines(lines);
    await writeFile(join(dir, AUDIT_FILE), text.slice(0, text.length - 30));
    const result = await verifyAuditLog(join(dir, AUDIT_FILE), { head: await head(dir) });
    expect(result.truncated).to.deep.equal({ firstMissing: 5, headSeq: 5 });
  });

  it('an edited line is still named by its line and seq when a head is given', async () => {
    const signer = makeSigner();
    const lines = await writeLog(dir, signer, 4);
    const edited = { ...(JSON.parse(lines[2]!) as AuditEntry), subject: 'mallory' };
    await writeFile(join(dir, AUDIT_FILE), joinLines(lines.with(2, JSON.stringify(edited))));
    const result = await verifyAuditLog(join(dir, AUDIT_FILE), {
      head: await head(dir),
      signingKey: signer.publicKey,
    });
    expect(result.firstBroken).to.include({ line: 3, seq: 3 });
    expect(result.firstBroken!.reason).to.match(/\(edited\)$/);
    expect(result.truncated).to.equal(undefined);
  });

  it('a log rewritten into another valid chain does not match its head', async () => {
    const signer = makeSigner();
    const lines = await writeLog(dir, signer, 2);
    // Rewrite the last entry and its hash: the chain still verifies on its own.
    const last = JSON.parse(lines.at(-1)!) as AuditEntry;
    const forged: Record<string, unknown> = { ...last, outcome: 'ERR_INTERNAL' };
    forged.hash = entryHash(forged);
    await writeFile(join(dir, AUDIT_FILE), joinLines(lines.with(-1, JSON.stringify(forged))));
    expect(await verifyAuditLog(join(dir, AUDIT_FILE))).to.include({ ok: true });
    const result = await verifyAuditLog(join(dir, AUDIT_FILE), { head: await head(dir) });
    expect(result.ok).to.equal(false);
    expect(result.headProblem).to.match(/^the head signs hash .* for seq 4/);
  });

  it('a head that does not verify with the signing key is a head problem', async () => {
    const signer = makeSigner();
    const lines = await writeLog(dir, signer, 4);
    // Cut two lines and move the head back with them, signed by a key that is not the node's.
    await writeFile(join(dir, AUDIT_FILE), joinLines(lines.slice(0, 4)));
    const last = JSON.parse(lines[3]!) as AuditEntry;
    const forged = signHead(makeSigner(), last.seq, last.hash, 'now');
    const result = await verifyAuditLog(join(dir, AUDIT_FILE), {
      head: forged,
      signingKey: signer.publicKey,
    });
    expect(result.ok).to.equal(false);
    expect(result.headProblem).to.match(/signature of the head \(seq 4\) does not verify/);
  });

  it('a malformed head file is ERR_AUDIT_HEAD', () => {
    for (const text of ['not json', '{}', '{"seq":1}', JSON.stringify({ seq: 0 })]) {
      let thrown: unknown;
      try {
        parseAuditHead(text, 'audit.head');
      } catch (err) {
        thrown = err;
      }
      expect((thrown as KmaasError).code, text).to.equal('ERR_AUDIT_HEAD');
    }
  });

  it('a node refuses to continue a log that ends before its head (ERR_AUDIT_TRUNCATED), touching nothing', async () => {
    const signer = makeSigner();
    const lines = await writeLog(dir, signer, 3);
    await writeFile(join(dir, AUDIT_FILE), joinLines(lines.slice(0, 3)));
    const before = await Promise.all(
      [AUDIT_FILE, AUDIT_HEAD_FILE].map((f) => readFile(join(dir, f))),
    );

    const err = await rejectsWith(
      AuditLog.open(dir, { logger: silentLogger(), now, signer }),
      'ERR_AUDIT_TRUNCATED',
    );
    expect(err.details).to.include({ firstMissing: 4, headSeq: 5 });
    expect(err.message).to.contain('evidence');
    const after = await Promise.all(
      [AUDIT_FILE, AUDIT_HEAD_FILE].map((f) => readFile(join(dir, f))),
    );
    expect(after[0]!.equals(before[0]!) && after[1]!.equals(before[1]!)).to.equal(true);
  });

  it('a node refuses a head it did not sign (ERR_AUDIT_HEAD)', async () => {
    await writeLog(dir, makeSigner(), 1);
    await rejectsWith(
      AuditLog.open(dir, { logger: silentLogger(), now, signer: makeSigner() }),
      'ERR_AUDIT_HEAD',
    );
  });

  it('a restart after a crash that left the head behind the file continues normally', async () => {
    const signer = makeSigner();
    const lines = await writeLog(dir, signer, 2);
    // The head of an earlier batch: as if the last batch reached the disk but not its head.
    const older = JSON.parse(lines[1]!) as AuditEntry;
    await writeFile(
      join(dir, AUDIT_HEAD_FILE),
      JSON.stringify(signHead(signer, older.seq, older.hash, 'then')),
    );
    await writeLog(dir, signer, 1);
    const result = await verifyAuditLog(join(dir, AUDIT_FILE), {
      head: await head(dir),
      signingKey: signer.publicKey,
    });
    expect(result).to.include({ ok: true, entries: 7 });
  });
});
