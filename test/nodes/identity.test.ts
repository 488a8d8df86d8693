import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { expect } from 'chai';
import { fromB64, toB64, utf8Bytes } from '../../shared/encoding.ts';
import { statusReply } from '../../shared/messages.ts';
import { NodeIdentity } from '../../nodes/identity.ts';
import { NodeStore } from '../../nodes/store.ts';
import { Cluster, expectCode, randomSecret, removeDir, tempDir } from './helpers.ts';

/** Open the store, load (or make) the identity, close the store again. */
function identityOf(dir: string, secret: ReturnType<typeof randomSecret>, nodeId = 1) {
  const store = NodeStore.open(dir, nodeId, secret);
  try {
    return NodeIdentity.loadOrCreate(store);
  } finally {
    store.close();
  }
}

/** The stored private keys, unsealed (the test knows the node secret). */
function privateKeys(dir: string, secret: ReturnType<typeof randomSecret>, nodeId = 1) {
  const store = NodeStore.open(dir, nodeId, secret);
  try {
    const raw = store.loadIdentity();
    expect(raw).to.not.equal(undefined);
    return { signing: raw!.slice(0, 32), encryption: raw!.slice(32) };
  } finally {
    store.close();
  }
}

function encodings(key: Uint8Array): Buffer[] {
  const b = Buffer.from(key);
  return [
    b,
    Buffer.from(b.toString('hex')),
    Buffer.from(b.toString('hex').toUpperCase()),
    Buffer.from(b.toString('base64')),
    Buffer.from(b.toString('base64url')),
  ];
}

// Low-order X25519 u-coordinates (RFC 7748 section 6.1; cr.yp.to/ecdh.html#validate).
const LOW_ORDER = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
];

describe('nodes/identity: long-term identity keys', () => {
  let dirs: string[] = [];
  const dir = async () => {
    const d = await tempDir();
    dirs.push(d);
    return d;
  };
  afterEach(async () => {
    for (const d of dirs) await removeDir(d);
    dirs = [];
  });

  it('are made once at first start and are the same after the store is reopened', async () => {
    const d = await dir();
    const secret = randomSecret();
    const first = identityOf(d, secret);
    const again = identityOf(d, secret);
    expect(first.signingPublicKey).to.have.length(32);
    expect(first.encryptionPublicKey).to.have.length(32);
    expect(again.signingPublicKey).to.deep.equal(first.signingPublicKey);
    expect(again.encryptionPublicKey).to.deep.equal(first.encryptionPublicKey);
    expect(first.signingPublicKey).to.not.deep.equal(first.encryptionPublicKey);
    // Another node gets other keys.
    const other = identityOf(await dir(), randomSecret());
    expect(other.signingPublicKey).to.not.deep.equal(first.signingPublicKey);
    expect(other.encryptionPublicKey).to.not.deep.equal(first.encryptionPublicKey);
  });

  it('the database holds neither private key in any encoding, and printing never shows one', async () => {
    const d = await dir();
    const secret = randomSecret();
    const identity = identityOf(d, secret);
    const keys = privateKeys(d, secret);
    expect(ed25519.getPublicKey(keys.signing)).to.deep.equal(identity.signingPublicKey);
    expect(x25519.getPublicKey(keys.encryption)).to.deep.equal(identity.encryptionPublicKey);
    const files = readdirSync(d).filter((f) => f.startsWith('node.db'));
    expect(files).to.include('node.db');
    const needles = [...encodings(keys.signing), ...encodings(keys.encryption)];
    for (const f of files) {
      const bytes = readFileSync(join(d, f));
      for (const n of needles) expect(bytes.indexOf(n), `${f} holds a private key`).to.equal(-1);
    }
    const printed = [JSON.stringify(identity), inspect(identity, { depth: 10 })];
    const texts = [keys.signing, keys.encryption].flatMap((k) =>
      encodings(k)
        .slice(1)
        .map((e) => e.toString()),
    );
    for (const text of printed) for (const t of texts) expect(text).to.not.include(t);
  });

  it('signs so that ed25519.verify accepts under the published key, and only that message', async () => {
    const identity = identityOf(await dir(), randomSecret());
    const msg = utf8Bytes('KMaaS-v1 transcript hash 1');
    const sig = identity.sign(msg);
    expect(sig).to.have.length(64);
    expect(ed25519.verify(sig, msg, identity.signingPublicKey)).to.equal(true);
    expect(
      ed25519.verify(sig, utf8Bytes('KMaaS-v1 transcript hash 2'), identity.signingPublicKey),
    ).to.equal(false);
    const other = identityOf(await dir(), randomSecret());
    expect(ed25519.verify(sig, msg, other.signingPublicKey)).to.equal(false);
  });

  it('two nodes agree on the X25519 shared secret; a low-order peer key is refused', async () => {
    const a = identityOf(await dir(), randomSecret(), 1);
    const b = identityOf(await dir(), randomSecret(), 2);
    const ab = a.sharedSecret(b.encryptionPublicKey);
    const ba = b.sharedSecret(a.encryptionPublicKey);
    expect(ab).to.have.length(32);
    expect(ab).to.deep.equal(ba);
    expect(ab.some((x) => x !== 0)).to.equal(true);
    for (const hex of LOW_ORDER) {
      expectCode(() => a.sharedSecret(Buffer.from(hex, 'hex')), 'ERR_INVALID_POINT');
    }
    expectCode(() => a.sharedSecret(new Uint8Array(31)), 'ERR_INVALID_POINT');
  });

  it('status over the WebSocket and GET /healthz publish the same identity, kept across a restart', async () => {
    const cluster = await Cluster.start(2);
    try {
      const node = cluster.node(1);
      type Status = ReturnType<typeof statusReply.parse>;
      const status = await node.client.call<Status>('status', {});
      expect(status.identity).to.not.equal(undefined);
      const health = (await (
        await fetch(`http://127.0.0.1:${node.handle.port}/healthz`)
      ).json()) as { identity: unknown };
      expect(health.identity).to.deep.equal(status.identity);
      expect(fromB64(status.identity!.signing, 'signing')).to.have.length(32);
      expect(fromB64(status.identity!.encryption, 'encryption')).to.have.length(32);

      // The published key is the one the node's database holds.
      const stored = privateKeys(node.dataDir, node.secret);
      expect(status.identity!.signing).to.equal(toB64(ed25519.getPublicKey(stored.signing)));
      expect(status.identity!.encryption).to.equal(toB64(x25519.getPublicKey(stored.encryption)));

      const other = await cluster.node(2).client.call<Status>('status', {});
      expect(other.identity).to.not.deep.equal(status.identity);

      await cluster.restart(1);
      const after = await cluster.node(1).client.call<Status>('status', {});
      expect(after.identity).to.deep.equal(status.identity);
    } finally {
      await cluster.close();
    }
  });
});
