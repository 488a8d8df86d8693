/**
 * The node's audit log (nodes/audit-log.ts, nodes/audit-request.ts): the chain verifies, every
 * kind of tampering is caught at the right line, a torn tail left by a crash is repaired on the
 * next start, append() does not wait on the disk, and a real node records its evaluations and
 * DKG rounds without a token, a blinded element or a share in the file.
 */
import { appendFile, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'chai';
import { toB64 } from '../../shared/encoding.ts';
import { KmaasError } from '../../shared/errors.ts';
import { documentInput } from '../../shared/document.ts';
import { blind } from '../../shared/voprf-client.ts';
import {
  AUDIT_FILE,
  AuditLog,
  entryHash,
  GENESIS,
  lineHash,
  verifyAuditLog,
  type AuditEntry,
  type AuditEvent,
} from '../../nodes/audit-log.ts';
import {
  capturingLogger,
  ceremonyId,
  CLUSTER_TOKEN,
  Cluster,
  evaluateBody,
  ISSUER,
  removeDir,
  runDkg,
  silentLogger,
  tempDir,
} from './helpers.ts';

/** A fixed clock: 2023-11-14T22:13:20.000Z. */
const NOW = 1_700_000_000_000;
const now = () => NOW;

const evaluation = (i: number): AuditEvent => ({
  type: 'evaluate',
  tenant: 'acme',
  version: 1,
  subject: 'dev-token',
  count: 3,
  requestId: `req-${i}`,
  outcome: 'ok',
});

/** node.start, `n` evaluations, node.stop: n + 2 lines. */
async function writeLog(dir: string, n: number): Promise<string> {
  const audit = await AuditLog.open(dir, { logger: silentLogger(), now });
  for (let i = 1; i <= n; i++) audit.append(evaluation(i));
  await audit.close();
  return join(dir, AUDIT_FILE);
}

async function readLines(path: string): Promise<string[]> {
  const text = await readFile(path, 'utf8');
  expect(text.endsWith('\n'), 'the file ends with a newline').to.equal(true);
  return text.slice(0, -1).split('\n');
}

async function readEntries(path: string): Promise<AuditEntry[]> {
  return (await readLines(path)).map((l) => JSON.parse(l) as AuditEntry);
}

const joinLines = (lines: string[]) => lines.map((l) => `${l}\n`).join('');

/** A line with one field changed, keeping the field order of the file. */
function edit(line: string, change: Partial<AuditEntry>): string {
  return JSON.stringify({ ...(JSON.parse(line) as AuditEntry), ...change });
}

async function expectCodeAsync(promise: Promise<unknown>, code: string): Promise<KmaasError> {
  let thrown: unknown;
  try {
    await promise;
  } catch (err) {
    thrown = err;
  }
  expect(thrown, `expected ${code}`).to.be.instanceOf(KmaasError);
  expect((thrown as KmaasError).code).to.equal(code);
  return thrown as KmaasError;
}

describe('nodes/audit-log: the hash-chained audit log', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await removeDir(dir);
  });

  it('N entries appended verify, from node.start to node.stop', async () => {
    const path = await writeLog(dir, 200);
    const entries = await readEntries(path);
    expect(entries).to.have.length(202);
    expect(entries.map((e) => e.seq)).to.deep.equal(entries.map((_, i) => i + 1));
    expect(entries[0]).to.include({ type: 'node.start', prev: GENESIS, outcome: 'ok' });
    expect(entries.at(-1)).to.include({ type: 'node.stop', requestId: entries[0]!.requestId });
    expect(entries[1]).to.deep.include({ ...evaluation(1), time: '2023-11-14T22:13:20.000Z' });

    const result = await verifyAuditLog(path);
    expect(result).to.deep.equal({
      ok: true,
      entries: 202,
      lastSeq: 202,
      head: entries[201]!.hash,
    });
  });

  it('an empty file verifies, with no entries', async () => {
    const path = join(dir, AUDIT_FILE);
    await writeFile(path, '');
    expect(await verifyAuditLog(path)).to.deep.equal({
      ok: true,
      entries: 0,
      lastSeq: 0,
      head: GENESIS,
    });
  });

  it('each line is linked to the bytes of the line before it', async () => {
    const lines = await readLines(await writeLog(dir, 3));
    for (let i = 1; i < lines.length; i++) {
      const entry = JSON.parse(lines[i]!) as AuditEntry;
      expect(entry.prev).to.equal(lineHash(lines[i - 1]!));
      expect(entry.hash).to.equal(entryHash(entry as unknown as Record<string, unknown>));
    }
  });

  // A log of 8 lines: node.start (seq 1), evaluations req-1..req-6 (seq 2..7), node.stop (seq 8).
  const tampering: {
    name: string;
    tamper: (lines: string[]) => string;
    line: number;
    seq: number;
    reason: RegExp;
  }[] = [
    {
      name: 'an edited field',
      tamper: (l) => joinLines(l.with(3, edit(l[3]!, { outcome: 'ERR_UNAUTHORIZED' }))),
      line: 4,
      seq: 4,
      reason: /^hash is [0-9a-f]{12}\.\.\. but the entry hashes to .*\(edited\)$/,
    },
    {
      name: 'a deleted line',
      tamper: (l) => joinLines(l.toSpliced(3, 1)),
      line: 4,
      seq: 5,
      reason: /^seq is 5, expected 4 /,
    },
    {
      name: 'a deleted first line',
      tamper: (l) => joinLines(l.slice(1)),
      line: 1,
      seq: 2,
      reason: /^seq is 2, expected 1 /,
    },
    {
      name: 'a swapped pair of lines',
      tamper: (l) => joinLines(l.with(3, l[4]!).with(4, l[3]!)),
      line: 4,
      seq: 5,
      reason: /^seq is 5, expected 4 /,
    },
    {
      name: 'a repeated line',
      tamper: (l) => joinLines(l.toSpliced(4, 0, l[3]!)),
      line: 5,
      seq: 4,
      reason: /^seq is 4, expected 5 /,
    },
    {
      name: 'a truncated file',
      tamper: (l) => joinLines(l).slice(0, -40),
      line: 8,
      seq: 8,
      reason: /^last line has no newline/,
    },
    {
      name: 'a forged line with a recomputed hash but the wrong prev',
      tamper: (l) => {
        const forged = { ...(JSON.parse(l[3]!) as AuditEntry), count: 1, prev: lineHash(l[1]!) };
        forged.hash = entryHash(forged);
        return joinLines(l.with(3, JSON.stringify(forged)));
      },
      line: 4,
      seq: 4,
      reason: /^prev is [0-9a-f]{12}\.\.\., expected the hash of the previous line /,
    },
    {
      name: 'an edited line with a recomputed hash and its prev kept (the next line breaks)',
      tamper: (l) => {
        const forged = { ...(JSON.parse(l[3]!) as AuditEntry), tenant: 'other' };
        forged.hash = entryHash(forged);
        return joinLines(l.with(3, JSON.stringify(forged)));
      },
      line: 5,
      seq: 5,
      reason: /^prev is .*previous line/,
    },
    {
      name: 'a first line whose prev is not the genesis value',
      tamper: (l) => {
        const forged = { ...(JSON.parse(l[0]!) as AuditEntry), prev: lineHash('x') };
        forged.hash = entryHash(forged);
        return joinLines(l.with(0, JSON.stringify(forged)));
      },
      line: 1,
      seq: 1,
      reason: /^prev is .*genesis value/,
    },
    {
      name: 'a line that is not JSON',
      tamper: (l) => joinLines(l.with(3, 'not json')),
      line: 4,
      seq: 4,
      reason: /^not a JSON line$/,
    },
    {
      name: 'a line without its seq',
      tamper: (l) => {
        const entry: Partial<AuditEntry> = JSON.parse(l[3]!) as AuditEntry;
        delete entry.seq;
        return joinLines(l.with(3, JSON.stringify(entry)));
      },
      line: 4,
      seq: 4,
      reason: /^field seq: /,
    },
  ];

  for (const t of tampering) {
    it(`${t.name}: caught at line ${t.line}`, async () => {
      const path = await writeLog(dir, 6);
      const lines = await readLines(path);
      expect(lines).to.have.length(8);
      await writeFile(path, t.tamper(lines));

      const result = await verifyAuditLog(path);
      expect(result.ok).to.equal(false);
      expect(result.firstBroken).to.include({ line: t.line, seq: t.seq });
      expect(result.firstBroken!.reason).to.match(t.reason);
      expect(result.entries).to.equal(t.line - 1);
      expect(result.lastSeq).to.equal(t.line - 1);
    });
  }

  it('append() returns the chained entry before anything reaches the disk', async () => {
    const audit = await AuditLog.open(dir, { logger: silentLogger(), now });
    await audit.flush();
    const path = join(dir, AUDIT_FILE);
    const size = (await stat(path)).size;

    const entry = audit.append(evaluation(1));
    expect(entry).to.not.have.property('then');
    expect(entry).to.include({ seq: 2, requestId: 'req-1' });
    expect(audit.seq).to.equal(2);
    expect(audit.head).to.equal(entry.hash);

    let flushed = false;
    const flushing = audit.flush().then(() => {
      flushed = true;
    });
    expect(flushed, 'flush still pending when append has returned').to.equal(false);
    expect((await stat(path)).size, 'nothing written yet').to.equal(size);
    await flushing;
    expect(flushed).to.equal(true);
    expect((await readEntries(path)).at(-1)).to.deep.equal(entry);
    await audit.close();
  });

  it('close() is idempotent, records node.stop once, and refuses later appends', async () => {
    const audit = await AuditLog.open(dir, { logger: silentLogger(), now });
    audit.append(evaluation(1));
    await Promise.all([audit.close(), audit.close()]);
    await audit.close();
    expect(() => audit.append(evaluation(2))).to.throw('audit log is closed');
    const entries = await readEntries(join(dir, AUDIT_FILE));
    expect(entries.map((e) => e.type)).to.deep.equal(['node.start', 'evaluate', 'node.stop']);
  });

  it('writes only the fields of the format, whatever else it is handed', async () => {
    const audit = await AuditLog.open(dir, { logger: silentLogger(), now });
    audit.append({
      ...evaluation(1),
      blinded: ['AAAA-blinded'],
      auth: { token: 'an-access-token-5e1d', dpop: 'a-dpop-proof-77c0' },
    } as AuditEvent);
    await audit.close();
    const text = await readFile(join(dir, AUDIT_FILE), 'utf8');
    expect(text).to.not.contain('AAAA-blinded');
    expect(text).to.not.contain('an-access-token-5e1d');
    expect(text).to.not.contain('a-dpop-proof-77c0');
    expect(text).to.not.contain('auth');
  });

  it('a restart continues the chain where it stopped', async () => {
    await writeLog(dir, 2);
    const path = await writeLog(dir, 3);
    const entries = await readEntries(path);
    expect(entries.map((e) => e.type)).to.deep.equal([
      'node.start',
      'evaluate',
      'evaluate',
      'node.stop',
      'node.start',
      'evaluate',
      'evaluate',
      'evaluate',
      'node.stop',
    ]);
    expect(entries[4]!.requestId).to.not.equal(entries[0]!.requestId);
    expect(await verifyAuditLog(path)).to.include({ ok: true, entries: 9, lastSeq: 9 });
  });

  it('a torn last line is moved aside at restart, and the chain continues and verifies', async () => {
    const path = await writeLog(dir, 3);
    const lines = await readLines(path);
    // A crash in the middle of a batch: one whole line of it written, then part of the next.
    const body = {
      seq: 6,
      time: '2023-11-14T22:13:20.000Z',
      ...evaluation(9),
      prev: lineHash(lines[4]!),
    };
    const whole = JSON.stringify({ ...body, hash: entryHash(body) });
    const torn = '{"seq":7,"time":"2023-11-14T22:1';
    await appendFile(path, `${whole}\n${torn}`);
    const before = await readFile(path);

    const logged: string[] = [];
    const audit = await AuditLog.open(dir, { logger: capturingLogger(logged), now });
    audit.append(evaluation(10));
    await audit.close();

    const asideName = `${AUDIT_FILE}.torn-2023-11-14T22-13-20-000Z`;
    expect(await readFile(join(dir, asideName), 'utf8')).to.equal(torn);
    const kept = before.length - torn.length;
    const after = await readFile(path);
    expect(after.subarray(0, kept).equals(before.subarray(0, kept)), 'lines kept').to.equal(true);
    const entries = await readEntries(path);
    expect(entries[5]).to.include({ seq: 6, requestId: 'req-9' });
    expect(entries[6]).to.deep.include({
      seq: 7,
      type: 'node.start',
      prev: lineHash(whole),
      repairedTail: { file: asideName, bytes: torn.length },
    });
    expect(await verifyAuditLog(path)).to.include({ ok: true, entries: 9, lastSeq: 9 });

    const warning = logged
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.level === 40 && String(l.msg).includes('torn last line'));
    expect(warning, 'a warning names the repair').to.deep.include({ bytes: torn.length });
  });

  it('a torn line that is the whole file starts the chain afresh, noting the repair', async () => {
    const path = join(dir, AUDIT_FILE);
    await writeFile(path, '{"seq":1,"ti');
    const audit = await AuditLog.open(dir, { logger: silentLogger(), now });
    await audit.close();
    const entries = await readEntries(path);
    expect(entries[0]).to.deep.include({ seq: 1, prev: GENESIS, type: 'node.start' });
    expect(entries[0]!.repairedTail).to.include({ bytes: 12 });
    expect(await verifyAuditLog(path)).to.include({ ok: true, entries: 2 });
  });

  it('a complete last line that is not a valid entry stops the start (ERR_AUDIT_BROKEN)', async () => {
    const path = await writeLog(dir, 2);
    const lines = await readLines(path);
    await writeFile(path, joinLines(lines.with(-1, edit(lines.at(-1)!, { requestId: 'edited' }))));
    const before = await readFile(path);

    const err = await expectCodeAsync(
      AuditLog.open(dir, { logger: silentLogger(), now }),
      'ERR_AUDIT_BROKEN',
    );
    expect(err.message).to.contain('kmaas audit verify');
    expect((await readFile(path)).equals(before), 'file untouched').to.equal(true);
    expect(await readdir(dir)).to.deep.equal([AUDIT_FILE]);
  });
});

describe('nodes/audit-log: a real node audits what it handles', () => {
  const TENANT = 'acme';
  let cluster: Cluster;

  before(async () => {
    cluster = await Cluster.start(3);
  });

  after(async () => {
    await cluster?.close();
  });

  it('records DKG rounds and evaluations, accepted or refused, and no secret', async () => {
    const ceremony = ceremonyId();
    const dkg = await runDkg(cluster, {
      ceremonyId: ceremony,
      tenant: TENANT,
      version: 1,
      threshold: 2,
      participants: [1, 2, 3],
    });
    const node = cluster.node(1);
    const state = blind(['a.pdf', 'b.pdf'].map((d) => documentInput(TENANT, 1, d)));
    const blinded = state.blinded.map((b) => toB64(b.toBytes()));
    const wrongToken = 'wrong-client-token-3c9d1e7f';

    const alice = await ISSUER.user(TENANT, 'alice');
    const bob = await ISSUER.user('nobody', 'bob');

    const okBody = await evaluateBody(alice, TENANT, 1, blinded);
    const ok = await node.client.request('evaluate', okBody);
    expect(ok.ok).to.equal(true);
    const evaluated = ok.ok ? (ok.body as { evaluated: string[]; proof: string }) : undefined;
    const wrong = await evaluateBody(alice, TENANT, 1, blinded);
    wrong.auth.token = wrongToken;
    const refused = [
      wrong,
      await evaluateBody(bob, 'nobody', 1, blinded),
      { ...(await evaluateBody(alice, TENANT, 1, blinded)), extra: 1 },
      okBody,
    ];
    const replies = [];
    for (const body of refused) replies.push(await node.client.request('evaluate', body));
    expect(replies.map((r) => (r.ok ? 'ok' : r.error.code))).to.deep.equal([
      'ERR_TOKEN_MALFORMED',
      'ERR_UNKNOWN_TENANT',
      'ERR_VALIDATION',
      'ERR_DPOP_REPLAY',
    ]);
    // Neither audited: no evaluation or DKG message, or no readable type at all.
    await node.client.request('status', {});
    await node.client.sendRaw('{not json');

    await node.handle.close();
    const path = join(node.dataDir, AUDIT_FILE);
    const text = await readFile(path, 'utf8');
    const entries = await readEntries(path);
    // What an entry says, without what changes from run to run.
    const summary = (e: AuditEntry) =>
      Object.fromEntries(
        Object.entries(e).filter(
          ([k]) => !['seq', 'time', 'prev', 'hash', 'requestId'].includes(k),
        ),
      );
    expect(summary(entries[0]!)).to.deep.equal({ type: 'node.start', outcome: 'ok' });
    expect(summary(entries.at(-1)!)).to.deep.equal({ type: 'node.stop', outcome: 'ok' });

    const rounds = entries.filter((e) => e.type.startsWith('dkg.'));
    expect(rounds.map((e) => e.type)).to.include.members([
      'dkg.round1',
      'dkg.round2',
      'dkg.round3',
    ]);
    expect(summary(rounds[0]!)).to.deep.equal({
      type: 'dkg.round1',
      tenant: TENANT,
      version: 1,
      ceremonyId: ceremony,
      proposal: rounds[0]!.proposal,
      operation: 'tenant.create',
      outcome: 'ok',
    });
    expect(rounds[0]!.proposal).to.match(/^[0-9a-f]{64}$/);
    for (const e of rounds) expect(e).to.include({ ceremonyId: ceremony, outcome: 'ok' });

    const evaluations = entries.filter((e) => e.type === 'evaluate').map(summary);
    const common = { type: 'evaluate', version: 1, count: 2 };
    expect(evaluations).to.deep.equal([
      { ...common, tenant: TENANT, subject: 'alice', outcome: 'ok' },
      { ...common, tenant: TENANT, outcome: 'ERR_TOKEN_MALFORMED' },
      { ...common, tenant: 'nobody', subject: 'bob', outcome: 'ERR_UNKNOWN_TENANT' },
      { ...common, tenant: TENANT, outcome: 'ERR_VALIDATION' },
      { ...common, tenant: TENANT, outcome: 'ERR_DPOP_REPLAY' },
    ]);
    expect(entries).to.have.length(2 + rounds.length + 5);
    expect(entries.find((e) => e.type === 'evaluate')!.requestId).to.equal(ok.id);
    expect(await verifyAuditLog(path)).to.include({ ok: true, entries: entries.length });

    const forbidden = [
      alice.token,
      okBody.auth.dpop,
      bob.token,
      CLUSTER_TOKEN,
      wrongToken,
      ...blinded,
      ...(evaluated?.evaluated ?? []),
      evaluated?.proof ?? '',
      ...dkg.relayed.map((p) => p.ciphertext),
    ];
    expect(forbidden.length).to.be.greaterThan(8);
    for (const f of forbidden) {
      expect(f.length).to.be.greaterThan(10);
      expect(text.includes(f), `audit log contains ${f.slice(0, 12)}...`).to.equal(false);
    }
  });

  it('the chain continues across a node restart', async () => {
    await cluster.restart(2);
    await cluster.node(2).handle.close();
    const path = join(cluster.node(2).dataDir, AUDIT_FILE);
    const entries = await readEntries(path);
    expect(entries.filter((e) => e.type === 'node.start')).to.have.length(2);
    expect(await verifyAuditLog(path)).to.include({ ok: true, entries: entries.length });
  });
});
