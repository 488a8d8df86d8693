/**
 * The node database (nodes/store.ts): round trips, no share in the clear anywhere in the files,
 * wrong secret refused without touching the file, records bound to their place by the AAD.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'chai';
import Database from 'better-sqlite3';
import { bytesToHex } from '@noble/hashes/utils.js';
import { encodeScalar, Point, toB64 } from '../../shared/encoding.ts';
import { commit } from '../../shared/feldman.ts';
import { buildKeyPackage, type KeyPackage } from '../../shared/key-package.ts';
import { randomScalar, split } from '../../shared/shamir.ts';
import { secretShare } from '../../nodes/secret-share.ts';
import { DB_FILE, NodeStore, type StoredKey } from '../../nodes/store.ts';
import { expectCode, randomSecret, removeDir, tempDir } from './helpers.ts';

/** A real 2-of-3 sharing; the key of node `id` as the store would hold it. */
function makeKey(
  tenant: string,
  version: number,
  id = 1,
  epoch = 1,
): { key: StoredKey; share: bigint } {
  const { shares, coefficients } = split(randomScalar(), 2, [1, 2, 3]);
  const keyPackage: KeyPackage = buildKeyPackage({
    tenant,
    version,
    epoch,
    commitments: commit(coefficients),
    verificationShares: new Map(shares.map((s) => [s.id, Point.BASE.multiply(s.value)])),
  });
  const share = shares.find((s) => s.id === id)!.value;
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

/** Every file of the database (main file, WAL, shared memory) as one byte string. */
async function dbBytes(dir: string): Promise<Buffer> {
  const files = (await readdir(dir)).filter((f) => f.startsWith(DB_FILE));
  return Buffer.concat(await Promise.all(files.map((f) => readFile(join(dir, f)))));
}

async function sha256(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

describe('nodes/store: the sealed node database', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await removeDir(dir);
  });

  it('round-trips keys and ceremony state across a reopen', () => {
    const secret = randomSecret();
    const a = makeKey('acme', 1);
    const b = makeKey('acme', 2);
    let store = NodeStore.open(dir, 1, secret);
    store.saveKey(a.key);
    store.saveKey(b.key);
    const state = new TextEncoder().encode('{"round":1}');
    store.saveCeremony({ ceremonyId: 'cer-00000001', tenant: 'zeta', version: 1, state });
    store.close();
    store.close(); // idempotent

    store = NodeStore.open(dir, 1, secret);
    try {
      const keys = store.listKeys();
      expect(keys.map((k) => [k.tenant, k.version])).to.deep.equal([
        ['acme', 1],
        ['acme', 2],
      ]);
      expect(keys[0]!.share.reveal()).to.equal(a.share);
      expect(keys[0]!.keyPackage).to.deep.equal(a.key.keyPackage);
      expect(store.getKey('acme', 2)!.share.reveal()).to.equal(b.share);
      expect(store.getKey('acme', 3)).to.equal(undefined);
      expect(store.findKeyByCeremony('ceremony-acme-1')!.version).to.equal(1);
      expect(store.hasKey('acme', 1)).to.equal(true);
      const c = store.loadCeremony('cer-00000001')!;
      expect(new TextDecoder().decode(c.state)).to.equal('{"round":1}');
      expect([c.tenant, c.version]).to.deep.equal(['zeta', 1]);
    } finally {
      store.close();
    }
  });

  it('refuses a second key for the same (tenant, version) and erases its ceremonies', () => {
    const store = NodeStore.open(dir, 1, randomSecret());
    try {
      const state = new Uint8Array([1, 2, 3]);
      store.saveCeremony({ ceremonyId: 'cer-00000002', tenant: 'acme', version: 1, state });
      store.saveKey(makeKey('acme', 1).key);
      expect(store.loadCeremony('cer-00000002')).to.equal(undefined);
      expectCode(() => store.saveKey(makeKey('acme', 1).key), 'ERR_CEREMONY_CONFLICT');
    } finally {
      store.close();
    }
  });

  it('never writes a share in the clear: the files hold no encoding of it', async () => {
    const secret = randomSecret();
    const keys = [makeKey('acme', 1), makeKey('acme', 2), makeKey('globex', 1)];
    const store = NodeStore.open(dir, 1, secret);
    for (const k of keys) store.saveKey(k.key);
    const encodings = (share: bigint) => {
      const le = encodeScalar(share);
      return [
        Buffer.from(le),
        Buffer.from(bytesToHex(le)),
        Buffer.from(toB64(le)),
        Buffer.from(share.toString()),
      ];
    };
    // While open (data may sit in the WAL) and after close (checkpointed into node.db).
    for (const phase of ['open', 'closed']) {
      if (phase === 'closed') store.close();
      const bytes = await dbBytes(dir);
      expect(bytes.length).to.be.greaterThan(0);
      for (const k of keys) {
        for (const needle of encodings(k.share)) {
          expect(
            bytes.indexOf(needle),
            `${phase}: share of ${k.key.tenant} v${k.key.version}`,
          ).to.equal(-1);
        }
      }
    }
    // The public key package is stored as it is, so the search itself can find things.
    const groupKey = Buffer.from(keys[0]!.key.keyPackage.groupKey);
    expect((await dbBytes(dir)).indexOf(groupKey)).to.not.equal(-1);
  });

  it('a wrong secret gives ERR_WRONG_NODE_SECRET and leaves the database byte-for-byte unchanged', async () => {
    const secret = randomSecret();
    const k = makeKey('acme', 1);
    const store = NodeStore.open(dir, 1, secret);
    store.saveKey(k.key);
    store.close();
    const path = join(dir, DB_FILE);
    const before = await sha256(path);

    const e = expectCode(() => NodeStore.open(dir, 1, randomSecret()), 'ERR_WRONG_NODE_SECRET');
    expect(e.message).to.contain('different KMAAS_NODE_SECRET').and.contain('Nothing was changed');
    expect(await sha256(path)).to.equal(before);

    // The right secret still opens it and finds the key.
    const again = NodeStore.open(dir, 1, secret);
    try {
      expect(again.getKey('acme', 1)!.share.reveal()).to.equal(k.share);
    } finally {
      again.close();
    }
  });

  it('a data directory of another node gives ERR_CONFIG naming KMAAS_NODE_ID, file untouched', async () => {
    const secret = randomSecret();
    NodeStore.open(dir, 1, secret).close();
    const before = await sha256(join(dir, DB_FILE));
    expectCode(() => NodeStore.open(dir, 2, secret), 'ERR_CONFIG', { setting: 'KMAAS_NODE_ID' });
    expect(await sha256(join(dir, DB_FILE))).to.equal(before);
  });

  it('a sealed share moved to another row fails authentication (AAD binding)', () => {
    const secret = randomSecret();
    const store = NodeStore.open(dir, 1, secret);
    store.saveKey(makeKey('acme', 1).key);
    store.saveKey(makeKey('acme', 2).key);
    store.close();
    const db = new Database(join(dir, DB_FILE));
    db.prepare(
      `UPDATE keys SET sealed_share = (SELECT sealed_share FROM keys WHERE version = 1) WHERE version = 2`,
    ).run();
    db.close();
    const reopened = NodeStore.open(dir, 1, secret);
    try {
      expect(reopened.getKey('acme', 1)).to.not.equal(undefined);
      expectCode(() => reopened.getKey('acme', 2), 'ERR_INTERNAL');
    } finally {
      reopened.close();
    }
  });
});
