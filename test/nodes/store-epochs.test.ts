/**
 * Committee epochs in the node database (nodes/store.ts schema version 2): the migration of a
 * version-1 database, built here by hand with the old schema and sealed with node:crypto (so the
 * test does not lean on the code it checks), and the epochs API: genesis adoption, a commit of an
 * epoch with its keys in one transaction, idempotence, retiring shares and their erasure.
 */
import { createCipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'chai';
import Database from 'better-sqlite3';
import { encodeScalar, Point, toB64 } from '../../shared/encoding.ts';
import { commit } from '../../shared/feldman.ts';
import { buildKeyPackage } from '../../shared/key-package.ts';
import type { CommitteeMember } from '../../shared/proposal.ts';
import { randomScalar, split } from '../../shared/shamir.ts';
import { secretShare } from '../../nodes/secret-share.ts';
import { DB_FILE, NodeStore, type EpochInput, type StoredKey } from '../../nodes/store.ts';
import { strangerIdentity } from '../helpers/operators.ts';
import { expectCode, randomSecret, removeDir, tempDir } from './helpers.ts';

const NODE = 1;

/** A real 2-of-3 sharing at `epoch`; node 1's key as the store holds it. */
function makeKey(tenant: string, version: number, epoch = 1): { key: StoredKey; share: bigint } {
  const { shares, coefficients } = split(randomScalar(), 2, [1, 2, 3]);
  const share = shares.find((s) => s.id === NODE)!.value;
  const keyPackage = buildKeyPackage({
    tenant,
    version,
    epoch,
    commitments: commit(coefficients),
    verificationShares: new Map(shares.map((s) => [s.id, Point.BASE.multiply(s.value)])),
  });
  return {
    share,
    key: {
      tenant,
      version,
      epoch,
      ceremonyId: `ceremony-${tenant}-${version}`,
      share: secretShare(share),
      keyPackage,
    },
  };
}

const COMMITTEE: CommitteeMember[] = [3, 1, 2].map((n) => strangerIdentity(n));

function epochInput(epoch: number, transcript = 'ab'.repeat(32)): EpochInput {
  return {
    epoch,
    threshold: 2,
    committee: COMMITTEE,
    reshareId: `r${'x'.repeat(30)}${epoch}`,
    transcript,
  };
}

// --- A version-1 database, as the node wrote it before epochs (old schema, old AAD) ---

const V1_SCHEMA = `
  CREATE TABLE meta (name TEXT PRIMARY KEY, value ANY NOT NULL) STRICT;
  CREATE TABLE keys (
    tenant TEXT NOT NULL, version INTEGER NOT NULL, ceremony_id TEXT NOT NULL,
    sealed_share BLOB NOT NULL, key_package TEXT NOT NULL, created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, version)
  ) STRICT;
  CREATE TABLE ceremonies (
    ceremony_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, version INTEGER NOT NULL,
    sealed_state BLOB NOT NULL, updated_at INTEGER NOT NULL
  ) STRICT;
  CREATE INDEX ceremonies_by_key ON ceremonies (tenant, version);
  CREATE TABLE proposals (
    nonce TEXT PRIMARY KEY, proposal_id TEXT NOT NULL, ceremony_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL, used_at INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE retired (
    tenant TEXT NOT NULL, version INTEGER NOT NULL, proposal_id TEXT NOT NULL,
    retired_at INTEGER NOT NULL, PRIMARY KEY (tenant, version)
  ) STRICT;
`;

function prefixed(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  return Buffer.concat([Buffer.from([bytes.length >> 8, bytes.length & 0xff]), bytes]);
}

/** The version-1 AAD: purpose, node id, tenant, version, ceremony id (no epoch). */
function v1Aad(purpose: string, tenant: string, version: number, ceremonyId = ''): Buffer {
  const v = Buffer.alloc(4);
  v.writeUInt32BE(version);
  return Buffer.concat([
    prefixed(`KMaaS-v1 sealed ${purpose}`),
    Buffer.from([NODE >> 8, NODE & 0xff]),
    prefixed(tenant),
    v,
    prefixed(ceremonyId),
  ]);
}

function v1Seal(kek: Buffer, plaintext: Uint8Array, aad: Buffer): Buffer {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', kek, nonce);
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.from([1]), nonce, body, cipher.getAuthTag()]);
}

function buildV1(dir: string, secret: Uint8Array, keys: StoredKey[]): void {
  const salt = randomBytes(32);
  const kek = Buffer.from(hkdfSync('sha256', secret, salt, 'KMaaS-v1 node KEK', 32));
  const db = new Database(join(dir, DB_FILE));
  db.pragma('journal_mode = WAL');
  db.exec(V1_SCHEMA);
  const meta = db.prepare('INSERT INTO meta (name, value) VALUES (?, ?)');
  meta.run('schema_version', 1);
  meta.run('node_id', NODE);
  meta.run('kek_salt', salt);
  const check = Buffer.from('KMaaS-v1 node secret check', 'utf8');
  meta.run('check', v1Seal(kek, check, v1Aad('check', '', 0)));
  for (const k of keys) {
    db.prepare('INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?)').run(
      k.tenant,
      k.version,
      k.ceremonyId,
      v1Seal(kek, encodeScalar(k.share.reveal()), v1Aad('share', k.tenant, k.version)),
      JSON.stringify(k.keyPackage),
      1_700_000_000_000,
    );
  }
  db.prepare('INSERT INTO ceremonies VALUES (?, ?, ?, ?, ?)').run(
    'cer-v1-open',
    'zeta',
    1,
    v1Seal(kek, Buffer.from('{"step":1}'), v1Aad('ceremony', 'zeta', 1, 'cer-v1-open')),
    1_700_000_000_000,
  );
  db.prepare('INSERT INTO proposals VALUES (?, ?, ?, ?, ?)').run('nonce-1', 'p1', '', 9e12, 1);
  db.prepare('INSERT INTO retired VALUES (?, ?, ?, ?)').run('acme', 3, 'p2', 1);
  db.close();
}

async function sha256(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

describe('nodes/store: committee epochs (schema version 2)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await removeDir(dir);
  });

  describe('migration from a version-1 database', () => {
    const secret = randomSecret();
    const a = makeKey('acme', 1);
    const b = makeKey('acme', 2);
    const c = makeKey('globex', 1);

    it('keeps every key, now at epoch 1, with its share, and records schema version 2', () => {
      buildV1(dir, secret.reveal(), [a.key, b.key, c.key]);
      const store = NodeStore.open(dir, NODE, secret);
      try {
        const keys = store.listKeys();
        expect(keys.map((k) => [k.tenant, k.version, k.epoch])).to.deep.equal([
          ['acme', 1, 1],
          ['acme', 2, 1],
          ['globex', 1, 1],
        ]);
        expect(keys.map((k) => k.share.reveal())).to.deep.equal([a.share, b.share, c.share]);
        expect(keys[0]!.keyPackage).to.deep.equal(a.key.keyPackage);
        expect(store.getKey('acme', 2, 1)!.share.reveal()).to.equal(b.share);
        // No committee is known for keys made before epochs: none is invented.
        expect(store.currentEpoch()).to.equal(undefined);
        // The rest of the database is untouched.
        expect(new TextDecoder().decode(store.loadCeremony('cer-v1-open')!.state)).to.equal(
          '{"step":1}',
        );
        expect(store.proposalUse('nonce-1')!.proposalId).to.equal('p1');
        expect(store.isRetired('acme', 3)).to.equal(true);
      } finally {
        store.close();
      }
      const db = new Database(join(dir, DB_FILE), { readonly: true });
      try {
        const version = db.prepare(`SELECT value FROM meta WHERE name = 'schema_version'`).get();
        expect(version).to.deep.equal({ value: 2 });
        const pk = db
          .prepare(`SELECT name FROM pragma_table_info('keys') WHERE pk > 0 ORDER BY pk`)
          .all();
        expect(pk).to.deep.equal([{ name: 'tenant' }, { name: 'version' }, { name: 'epoch' }]);
        const tables = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).all();
        expect(tables.map((t) => (t as { name: string }).name)).to.include('epochs');
      } finally {
        db.close();
      }
    });

    it('a migrated database opens again unchanged, and takes new keys and epochs', () => {
      buildV1(dir, secret.reveal(), [a.key]);
      NodeStore.open(dir, NODE, secret).close();
      const store = NodeStore.open(dir, NODE, secret);
      try {
        expect(store.getKey('acme', 1)!.share.reveal()).to.equal(a.share);
        expect(store.saveKey(b.key).epoch).to.equal(1);
        const next = makeKey('acme', 1, 2);
        expect(store.commitEpoch(epochInput(2), [next.key])).to.equal(true);
        expect(store.getKey('acme', 1)!.epoch).to.equal(2);
        expect(store.getKey('acme', 1, 1)!.share.reveal()).to.equal(a.share);
      } finally {
        store.close();
      }
    });

    it('a wrong secret is refused before anything is migrated', async () => {
      buildV1(dir, secret.reveal(), [a.key]);
      const path = join(dir, DB_FILE);
      const before = await sha256(path);
      expectCode(() => NodeStore.open(dir, NODE, randomSecret()), 'ERR_WRONG_NODE_SECRET');
      expect(await sha256(path)).to.equal(before);
    });

    it('a database of a newer schema version is refused with ERR_CONFIG', () => {
      NodeStore.open(dir, NODE, secret).close();
      const db = new Database(join(dir, DB_FILE));
      db.prepare(`UPDATE meta SET value = 3 WHERE name = 'schema_version'`).run();
      db.close();
      expectCode(() => NodeStore.open(dir, NODE, secret), 'ERR_CONFIG', { schemaVersion: 3 });
    });
  });

  describe('the epochs API', () => {
    let store: NodeStore;
    let secret: ReturnType<typeof randomSecret>;
    beforeEach(() => {
      secret = randomSecret();
      store = NodeStore.open(dir, NODE, secret);
    });
    afterEach(() => {
      store.close();
    });

    it('saveGenesisEpoch founds epoch 1 once, sorted by node, and never overwrites it', () => {
      expect(store.currentEpoch()).to.equal(undefined);
      const first = store.saveGenesisEpoch({ threshold: 2, committee: COMMITTEE });
      expect(first.created).to.equal(true);
      expect(first.record).to.deep.include({
        epoch: 1,
        threshold: 2,
        reshareId: '',
        transcript: '',
      });
      expect(first.record.committee.map((m) => m.node)).to.deep.equal([1, 2, 3]);
      expect(store.currentEpoch()).to.deep.equal(first.record);
      const other = [1, 2, 3, 4].map((n) => strangerIdentity(n));
      const second = store.saveGenesisEpoch({ threshold: 3, committee: other });
      expect(second).to.deep.equal({ record: first.record, created: false });
      expect(store.listEpochs()).to.have.length(1);
    });

    it('commitEpoch stores the epoch and its keys together; older shares stay until erased', () => {
      store.saveGenesisEpoch({ threshold: 2, committee: COMMITTEE });
      const old = makeKey('acme', 1);
      store.saveKey(old.key);
      const next = makeKey('acme', 1, 2);
      expect(store.commitEpoch(epochInput(2), [next.key])).to.equal(true);
      expect(store.currentEpoch()).to.deep.include({ epoch: 2, transcript: 'ab'.repeat(32) });
      expect(store.getEpoch(1)!.reshareId).to.equal('');
      // Both shares at once: the current one by default, the retiring one on request.
      expect(store.getKey('acme', 1)!.share.reveal()).to.equal(next.share);
      expect(store.getKey('acme', 1, 1)!.share.reveal()).to.equal(old.share);
      expect(store.keysAtEpoch(2).map((k) => k.share.reveal())).to.deep.equal([next.share]);
      expect(store.keyRecords(1).map((k) => [k.tenant, k.epoch])).to.deep.equal([['acme', 1]]);
      expect(store.listKeys().map((k) => k.epoch)).to.deep.equal([1, 2]);
      expect(store.hasKey('acme', 1, 2)).to.equal(true);
      // The key still answers to its DKG ceremony, at its newest epoch.
      expect(store.keyRecordByCeremony('ceremony-acme-1')!.epoch).to.equal(2);

      expect(store.eraseKeysBefore(2)).to.equal(1);
      expect(store.getKey('acme', 1, 1)).to.equal(undefined);
      expect(store.listKeys().map((k) => k.epoch)).to.deep.equal([2]);
      expect(store.eraseKeysBefore(2)).to.equal(0);
    });

    it('commitEpoch is idempotent for the same transcript and refuses any other', () => {
      const next = makeKey('acme', 1, 2);
      expect(store.commitEpoch(epochInput(2), [next.key])).to.equal(true);
      expect(store.commitEpoch(epochInput(2), [next.key])).to.equal(false);
      expectCode(
        () => store.commitEpoch(epochInput(2, 'cd'.repeat(32)), []),
        'ERR_CEREMONY_CONFLICT',
        { epoch: 2 },
      );
      // An epoch at or below the current one cannot be committed after it.
      expectCode(() => store.commitEpoch(epochInput(1), []), 'ERR_CEREMONY_CONFLICT', {
        current: 2,
      });
      expect(store.listEpochs().map((e) => e.epoch)).to.deep.equal([2]);
    });

    it('a failing commit leaves neither the epoch nor any of its keys', () => {
      const good = makeKey('acme', 1, 2);
      const wrongEpoch = makeKey('acme', 2, 3);
      expect(() =>
        store.commitEpoch(epochInput(2), [good.key, { ...wrongEpoch.key, epoch: 2 }]),
      ).to.throw();
      expect(store.currentEpoch()).to.equal(undefined);
      expect(store.listKeys()).to.deep.equal([]);
      // The same for statements grouped with it by the caller.
      expect(() =>
        store.transaction(() => {
          store.commitEpoch(epochInput(2), [good.key]);
          throw new Error('later step failed');
        }),
      ).to.throw('later step failed');
      expect(store.currentEpoch()).to.equal(undefined);
      expect(store.listKeys()).to.deep.equal([]);
    });

    it('saveKey stores a DKG key at the current epoch and needs its package to say so', () => {
      expect(store.saveKey(makeKey('acme', 1).key).epoch).to.equal(1);
      store.commitEpoch(epochInput(2), []);
      expectCode(() => store.saveKey(makeKey('acme', 2, 1).key), 'ERR_INTERNAL');
      expect(store.saveKey(makeKey('acme', 2, 2).key).epoch).to.equal(2);
      // One DKG key per (tenant, version), whatever the epoch.
      expectCode(() => store.saveKey(makeKey('acme', 1, 2).key), 'ERR_CEREMONY_CONFLICT');
    });

    it('a share sealed for epoch 2 does not open as the epoch-1 share (the AAD binds the epoch)', () => {
      const old = makeKey('acme', 1);
      store.saveKey(old.key);
      store.commitEpoch(epochInput(2), [makeKey('acme', 1, 2).key]);
      store.close();
      const db = new Database(join(dir, DB_FILE));
      db.prepare(
        `UPDATE keys SET sealed_share = (SELECT sealed_share FROM keys WHERE epoch = 2)
         WHERE epoch = 1`,
      ).run();
      db.close();
      store = NodeStore.open(dir, NODE, secret);
      expect(store.getKey('acme', 1, 2)).to.not.equal(undefined);
      expectCode(() => store.getKey('acme', 1, 1), 'ERR_INTERNAL');
    });

    it('retireKey erases the shares of every epoch of that version', () => {
      store.saveKey(makeKey('acme', 1).key);
      store.commitEpoch(epochInput(2), [makeKey('acme', 1, 2).key]);
      const use = { nonce: 'n', proposalId: 'p', ceremonyId: '', expiresAt: Date.now() + 60_000 };
      expect(store.retireKey('acme', 1, use)).to.equal(true);
      expect(store.listKeys()).to.deep.equal([]);
      expect(store.isRetired('acme', 1)).to.equal(true);
    });

    it('seal and open bind records of the resharing store to this node and their context', () => {
      const ctx = { purpose: 'reshare-seed' as const, tenant: '', version: 0, ceremonyId: 'r1' };
      const sealed = store.seal(new Uint8Array([7, 7, 7]), ctx);
      expect(store.open(sealed, ctx)).to.deep.equal(new Uint8Array([7, 7, 7]));
      expectCode(() => store.open(sealed, { ...ctx, ceremonyId: 'r2' }), 'ERR_INTERNAL');
      expect(toB64(sealed)).to.not.contain(toB64(new Uint8Array([7, 7, 7])));
    });
  });
});
