/**
 * The archive's API (demo/server.ts) on a real HTTP server, with tokens of a stand-in issuer
 * (test/helpers/oidc.ts) and envelopes made by the SDK's encryptStream: what it stores, what it
 * refuses and with which code, and that it stays up and leaves nothing behind after bad input.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import pino from 'pino';
import { encryptStream } from '../../client/envelope.ts';
import { startArchive, type ArchiveHandle } from '../../demo/server.ts';
import { ArchiveStore } from '../../demo/store.ts';
import { plaintextLength } from '../../demo/upload.ts';
import { resourceProof, sharedIssuer, type TestIssuer, type TestUser } from '../helpers/oidc.ts';

async function envelope(
  tenant: string,
  plaintext: Uint8Array,
  opts: { chunkSize?: number; documentId?: string } = {},
): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  const source = Readable.from([plaintext]);
  for await (const part of encryptStream(source, {
    key: randomBytes(32),
    tenant,
    keyVersion: 1,
    documentId: opts.documentId ?? `doc-${randomBytes(4).toString('hex')}`,
    ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
  })) {
    parts.push(part);
  }
  return Buffer.concat(parts);
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json: () => { error?: { code: string; details?: Record<string, unknown> } } & Record<
    string,
    unknown
  >;
}

describe('archive API (demo/server.ts)', function () {
  let issuer: TestIssuer;
  let archive: ArchiveHandle;
  let dir: string;
  let alice: TestUser;
  let bob: TestUser;
  let carol: TestUser;
  const MAX = 64 * 1024;
  /** The archive's log lines, parsed. */
  const logged: { level: number; msg: string; [k: string]: unknown }[] = [];

  before(async () => {
    issuer = await sharedIssuer();
    dir = mkdtempSync(join(tmpdir(), 'kmaas-archive-api-'));
    archive = await startArchive({
      dataDir: join(dir, 'archive'),
      oidc: issuer.settings(),
      coordinatorUrl: 'http://127.0.0.1:9',
      pins: () => [{ tenant: 'acme', version: 1, groupKey: 'AAAA' }],
      sdkBundle: join(dir, 'no-bundle.js'),
      maxDocumentBytes: MAX,
      logger: pino(
        { level: 'info' },
        { write: (line: string) => void logged.push(JSON.parse(line) as (typeof logged)[0]) },
      ),
    });
    alice = await issuer.user('acme', 'alice');
    carol = await issuer.user('acme', 'carol');
    bob = await issuer.user('globex', 'bob');
  });

  after(async () => {
    await archive.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A request with the user's token and an honest proof (unless `proof`/`auth` say otherwise). */
  async function call(
    method: string,
    path: string,
    opts: {
      user?: TestUser;
      body?: Uint8Array;
      proof?: string | null;
      authorization?: string;
      chunked?: boolean;
    } = {},
  ): Promise<Answer> {
    const url = archive.url + path;
    const headers: Record<string, string> = {};
    if (opts.user) {
      headers.authorization = opts.authorization ?? `DPoP ${opts.user.token}`;
      const proof =
        opts.proof === undefined
          ? await resourceProof(opts.user, method, url.split('?')[0]!)
          : opts.proof;
      if (proof !== null) headers.dpop = proof;
    }
    if (opts.body && !opts.chunked) headers['content-length'] = String(opts.body.length);
    return new Promise((resolve, reject) => {
      const req = httpRequest(url, { method, headers }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => {
          const body = Buffer.concat(parts);
          resolve({
            status: res.statusCode!,
            headers: res.headers,
            body,
            json: () => JSON.parse(body.toString('utf8')) as ReturnType<Answer['json']>,
          });
        });
        res.on('error', reject);
      });
      // The server may answer and close before the whole body is sent: that is an answer.
      req.on('error', reject);
      if (opts.body && opts.chunked) {
        // Several writes without a length: Transfer-Encoding: chunked.
        for (let i = 0; i < opts.body.length; i += 4096) req.write(opts.body.subarray(i, i + 4096));
        req.end();
      } else req.end(opts.body);
    });
  }

  const upload = (user: TestUser, body: Uint8Array, name = 'a.pdf', chunked = false) =>
    call('POST', `/api/documents?name=${encodeURIComponent(name)}&type=application/pdf`, {
      user,
      body,
      chunked,
    });

  const leftovers = () => ({
    tmp: readdirSync(join(dir, 'archive', 'tmp')),
    blobs: readdirSync(join(dir, 'archive', 'blobs')).length,
  });

  it('stores an envelope as it came, lists it with its metadata, and serves it back', async () => {
    const plaintext = randomBytes(10_000);
    const env = await envelope('acme', plaintext, { chunkSize: 4096, documentId: 'contracts/1' });
    const res = await upload(alice, env, 'contract 1.pdf');
    expect(res.status, res.body.toString()).to.equal(201);
    const doc = res.json().document as Record<string, unknown>;
    expect(doc).to.include({
      name: 'contract 1.pdf',
      type: 'application/pdf',
      size: plaintext.length,
      envelopeSize: env.length,
      tenant: 'acme',
      owner: 'alice',
      documentId: 'contracts/1',
      keyVersion: 1,
    });
    expect(readFileSync(join(dir, 'archive', 'blobs', doc.id as string)).equals(env)).to.equal(
      true,
    );

    const list = await call('GET', '/api/documents', { user: bob });
    expect(list.status).to.equal(200);
    const ids = (list.json().documents as { id: string }[]).map((d) => d.id);
    expect(ids, 'every tenant sees the shared list').to.include(doc.id);

    const got = await call('GET', `/api/documents/${doc.id as string}`, { user: alice });
    expect(got.status).to.equal(200);
    expect(got.body.equals(env)).to.equal(true);
  });

  it('computes the plaintext size from the framing, and refuses framing that cannot be', () => {
    // Chunk size 10, so a full frame is 26 bytes: [envelope bytes after the header, plaintext].
    const table: [number, number][] = [
      [16, 0], // one empty final chunk
      [26, 10], // one full final chunk
      [26 + 17, 11], // a full chunk, then a final one of 1 byte
      [52, 20],
      [52 + 16, 20], // two full chunks, then an empty final one
    ];
    for (const [body, plaintext] of table)
      expect(plaintextLength(body, 10), `${body}`).to.equal(plaintext);
    // Shorter than a tag: nothing, part of a tag, a full frame and part of a tag.
    for (const body of [0, 15, 26 + 15]) {
      expect(() => plaintextLength(body, 10), `${body}`)
        .to.throw()
        .with.property('code', 'ERR_ENVELOPE_FORMAT');
    }
  });

  it('refuses a body that is not an envelope, keeps nothing of it, and stays up', async () => {
    const before = leftovers();
    const notEnvelope = await upload(alice, Buffer.from('%PDF-1.7 plaintext, not sealed'));
    expect(notEnvelope.status).to.equal(400);
    expect(notEnvelope.json().error?.code).to.equal('ERR_ENVELOPE_FORMAT');
    const env = await envelope('acme', randomBytes(100));
    const badHeader = Buffer.from(env);
    badHeader[20] = 0x7b; // inside the JSON header
    const res2 = await upload(alice, badHeader);
    expect(res2.json().error?.code).to.equal('ERR_ENVELOPE_FORMAT');
    const cut = await upload(alice, env.subarray(0, env.length - 20 - 100 + 5));
    expect(cut.json().error?.code).to.equal('ERR_ENVELOPE_FORMAT');
    const empty = await upload(alice, Buffer.alloc(0));
    expect(empty.json().error?.code).to.equal('ERR_ENVELOPE_FORMAT');
    expect(leftovers()).to.deep.equal(before);
    expect((await call('GET', '/api/documents', { user: alice })).status).to.equal(200);
  });

  it("refuses an envelope sealed for another tenant than the uploader's", async () => {
    const before = leftovers();
    const res = await upload(bob, await envelope('acme', randomBytes(100)));
    expect(res.status).to.equal(403);
    expect(res.json().error?.code).to.equal('ERR_TOKEN_TENANT');
    expect(leftovers()).to.deep.equal(before);
  });

  it('refuses a document over the limit, by its declared length or while it streams', async () => {
    const before = leftovers();
    const big = await envelope('acme', randomBytes(MAX + 1));
    const declared = await upload(alice, big);
    expect(declared.status).to.equal(413);
    expect(declared.json().error?.code).to.equal('ERR_BODY_TOO_LARGE');
    // Over the envelope limit while streaming (no Content-Length).
    const huge = await envelope('acme', randomBytes(MAX + 1024 * 1024 + 10));
    const streamed = await upload(alice, huge, 'x', true);
    expect(streamed.status).to.equal(413);
    expect(streamed.json().error?.code).to.equal('ERR_BODY_TOO_LARGE');
    // Within the envelope limit but over the plaintext limit (small chunks, much overhead).
    const chunky = await envelope('acme', randomBytes(MAX + 1), { chunkSize: 64 });
    const overhead = await upload(alice, chunky, 'y', true);
    expect(overhead.json().error?.code).to.equal('ERR_BODY_TOO_LARGE');
    expect(leftovers()).to.deep.equal(before);
  });

  it('checks the DPoP-bound token and a proof of this very request', async () => {
    const path = '/api/documents';
    const url = archive.url + path;
    const codes = async (opts: Parameters<typeof call>[2]) =>
      (await call('GET', path, opts)).json().error?.code;
    expect(await codes({})).to.equal('ERR_TOKEN_MISSING');
    expect(await codes({ user: alice, authorization: `Bearer ${alice.token}` })).to.equal(
      'ERR_TOKEN_MISSING',
    );
    expect(await codes({ user: alice, proof: null })).to.equal('ERR_DPOP_MISSING');
    expect(await codes({ user: alice, proof: await resourceProof(alice, 'POST', url) })).to.equal(
      'ERR_DPOP_TARGET',
    );
    const elsewhere = 'http://archive.example' + path;
    expect(
      await codes({ user: alice, proof: await resourceProof(alice, 'GET', elsewhere) }),
    ).to.equal('ERR_DPOP_TARGET');
    expect(
      await codes({
        user: alice,
        proof: await resourceProof(alice, 'GET', url, { key: bob.dpopKey }),
      }),
    ).to.equal('ERR_DPOP_KEY_MISMATCH');
    expect(
      await codes({ user: alice, proof: await resourceProof(alice, 'GET', url, { ath: 'x' }) }),
    ).to.equal('ERR_DPOP_ATH');
    const old = Math.floor(Date.now() / 1000) - 3600;
    expect(
      await codes({ user: alice, proof: await resourceProof(alice, 'GET', url, { iat: old }) }),
    ).to.equal('ERR_DPOP_STALE');
    const once = await resourceProof(alice, 'GET', url);
    expect((await call('GET', path, { user: alice, proof: once })).status).to.equal(200);
    expect(await codes({ user: alice, proof: once })).to.equal('ERR_DPOP_REPLAY');
    const forged = await issuer.token({ sub: 'mallory', tenant: 'acme', jkt: alice.jkt, exp: 1 });
    expect(await codes({ user: { ...alice, token: forged } })).to.equal('ERR_TOKEN_EXPIRED');
  });

  it('answers every 401 with a WWW-Authenticate: DPoP challenge and its error code (RFC 9449 section 7.1)', async () => {
    const path = '/api/documents';
    const url = archive.url + path;
    const none = await call('GET', path);
    expect(none.status).to.equal(401);
    expect(none.headers['www-authenticate']).to.equal('DPoP algs="ES256 ES384 EdDSA RS256 PS256"');
    const noProof = await call('GET', path, { user: alice, proof: null });
    expect(noProof.status).to.equal(401);
    expect(noProof.headers['www-authenticate']).to.match(
      /^DPoP error="invalid_dpop_proof", error_description="[^"]+", algs="[^"]+"$/,
    );
    const wrongTarget = await call('GET', path, {
      user: alice,
      proof: await resourceProof(alice, 'POST', url),
    });
    expect(wrongTarget.headers['www-authenticate']).to.contain('error="invalid_dpop_proof"');
    const forged = await issuer.token({ sub: 'mallory', tenant: 'acme', jkt: alice.jkt, exp: 1 });
    const expired = await call('GET', path, { user: { ...alice, token: forged } });
    expect(expired.json().error?.code).to.equal('ERR_TOKEN_EXPIRED');
    expect(expired.headers['www-authenticate']).to.match(/^DPoP error="invalid_token", /);
    // Not on other refusals.
    const notOwner = await call('DELETE', '/api/documents/x', { user: alice });
    expect(notOwner.status).to.equal(404);
    expect(notOwner.headers['www-authenticate']).to.equal(undefined);
  });

  it('logs a client that hangs up mid-upload at info, without a stack, and keeps nothing', async () => {
    const env = await envelope('acme', randomBytes(MAX - 100), { chunkSize: 4096 });
    const before = leftovers();
    const from = logged.length;
    const url = `${archive.url}/api/documents?name=cut.pdf`;
    const headers = {
      authorization: `DPoP ${alice.token}`,
      dpop: await resourceProof(alice, 'POST', url.split('?')[0]!),
      'content-length': String(env.length),
    };
    await new Promise<void>((resolve) => {
      const req = httpRequest(url, { method: 'POST', headers });
      req.on('error', () => resolve());
      req.write(env.subarray(0, 8192), () => setTimeout(() => req.destroy(), 100));
    });
    const deadline = Date.now() + 5000;
    while (!logged.slice(from).some((l) => l.msg === 'client went away')) {
      if (Date.now() > deadline) throw new Error('no "client went away" line');
      await new Promise((r) => setTimeout(r, 20));
    }
    const lines = logged.slice(from);
    expect(lines.filter((l) => l.level >= 50)).to.deep.equal([]);
    const gone = lines.find((l) => l.msg === 'client went away')!;
    expect(gone.level).to.equal(30);
    expect(JSON.stringify(gone)).to.not.contain('stack');
    expect(leftovers()).to.deep.equal(before);
  });

  it('answers an unknown document with ERR_UNKNOWN_DOCUMENT, whatever the id looks like', async () => {
    for (const id of ['00000000-0000-0000-0000-000000000000', 'x', '..%2F..%2Farchive.sqlite']) {
      const res = await call('GET', `/api/documents/${id}`, { user: alice });
      expect(res.status, id).to.equal(404);
      expect(res.json().error?.code, id).to.equal('ERR_UNKNOWN_DOCUMENT');
    }
  });

  it('refuses upload metadata that is missing or malformed, naming the field', async () => {
    const env = await envelope('acme', randomBytes(10));
    const noName = await call('POST', '/api/documents', { user: alice, body: env });
    expect(noName.json().error).to.deep.include({ code: 'ERR_VALIDATION' });
    expect(noName.json().error?.details).to.deep.equal({ field: 'name' });
    const badType = await call('POST', '/api/documents?name=a&type=not%20a%20type', {
      user: alice,
      body: env,
    });
    expect(badType.json().error?.details).to.deep.equal({ field: 'type' });
    // A name too long for the request line itself is refused by the HTTP parser, still coded.
    const huge = await call('POST', `/api/documents?name=${'a'.repeat(100_000)}`, {
      user: alice,
      body: env,
    });
    expect(huge.status).to.equal(431);
    expect(huge.json().error?.code).to.equal('ERR_HEADERS_TOO_LARGE');
  });

  it('refuses file names with bidi controls, zero-width characters, or nothing but spaces', async () => {
    const env = await envelope('acme', randomBytes(10));
    const before = leftovers();
    const names = [
      'invoice_\u202efdp.exe', // RIGHT-TO-LEFT OVERRIDE: reads as invoice_exe.pdf
      'a\u202ab.pdf',
      'a\u2066b\u2069.pdf',
      'a\u200eb.pdf',
      'a\u200fb.pdf',
      'contract\u200b.pdf', // ZERO WIDTH SPACE
      'a\u200cb.pdf',
      'a\u200db.pdf',
      '\ufeffa.pdf',
      'a\u061cb.pdf', // ARABIC LETTER MARK, a bidi control outside the U+200x and U+202x blocks
      'a\u2060b.pdf', // WORD JOINER, zero-width
      'a\u00adb.pdf', // SOFT HYPHEN, invisible within a word
      ' ',
      '   ',
      '\u00a0\u3000',
    ];
    for (const name of names) {
      const res = await upload(alice, env, name);
      const label = JSON.stringify(name);
      expect(res.status, label).to.equal(400);
      const error = res.json().error as { code: string; message: string; details?: unknown };
      expect(error.code, label).to.equal('ERR_VALIDATION');
      expect(error.details, label).to.deep.equal({ field: 'name' });
      expect(error.message, label).to.match(/^name: (no invisible format characters|a name, not)/);
    }
    expect(leftovers()).to.deep.equal(before);
    // What stays allowed: letters of any script, inner spaces, an ordinary hyphen.
    const ok = await upload(alice, env, 'Vertrag – عقد 2026.pdf');
    expect(ok.status, ok.body.toString()).to.equal(201);
  });

  it('lets only the uploader delete a document', async () => {
    const res = await upload(alice, await envelope('acme', randomBytes(10)));
    const id = (res.json().document as { id: string }).id;
    const byCarol = await call('DELETE', `/api/documents/${id}`, { user: carol });
    expect(byCarol.status).to.equal(403);
    expect(byCarol.json().error?.code).to.equal('ERR_NOT_OWNER');
    expect((await call('DELETE', `/api/documents/${id}`, { user: alice })).status).to.equal(204);
    const gone = await call('GET', `/api/documents/${id}`, { user: alice });
    expect(gone.json().error?.code).to.equal('ERR_UNKNOWN_DOCUMENT');
    expect(readdirSync(join(dir, 'archive', 'blobs'))).to.not.include(id);
  });

  it('serves config.json with the login settings and the pins, without credentials', async () => {
    const res = await call('GET', '/config.json');
    expect(res.status).to.equal(200);
    expect(res.json()).to.deep.include({
      issuer: issuer.issuer,
      clientId: 'kmaas-dev',
      redirectUri: `${archive.url}/callback`,
      coordinatorUrl: 'http://127.0.0.1:9',
      pins: [{ tenant: 'acme', version: 1, groupKey: 'AAAA' }],
    });
  });
});

describe('archive storage (demo/store.ts)', () => {
  it('drops unfinished uploads and blobs without a row when it opens', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kmaas-archive-store-'));
    try {
      const first = ArchiveStore.open(dir);
      const kept = first.tempPath();
      writeFileSync(kept, 'sealed bytes');
      const doc = await first.commit(kept, {
        name: 'a',
        type: 'text/plain',
        size: 0,
        envelopeSize: 12,
        tenant: 'acme',
        owner: 'alice',
        documentId: 'a',
        keyVersion: 1,
      });
      writeFileSync(first.tempPath(), 'half an upload');
      // A crash between the rename and the insert.
      writeFileSync(join(dir, 'blobs', '11111111-1111-1111-1111-111111111111'), 'orphan');
      first.close();

      const second = ArchiveStore.open(dir);
      expect(readdirSync(join(dir, 'tmp'))).to.deep.equal([]);
      expect(readdirSync(join(dir, 'blobs'))).to.deep.equal([doc.id]);
      expect(second.list().map((d) => d.id)).to.deep.equal([doc.id]);
      second.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
