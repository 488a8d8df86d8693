/**
 * The committee changes and no key does (DESIGN.md section 3), on real processes: the identity
 * provider, 5 share nodes and 2 spare ones, a coordinator, real Redis. 100 document keys are
 * derived first; then, each while derivations run without pause, the committee grows from 5 to 7
 * nodes, the threshold rises from 3 to 4, three of the original nodes leave, and every share is
 * refreshed. After each step every one of the 100 keys is derived again and must be the same,
 * the removed nodes refuse to evaluate, and no database holds a share of an older epoch (nor its
 * sealed bytes, anywhere in the file, its WAL or its shared memory). Then a rotation to version 2,
 * a rewrap of documents from version 1, and the retirement of version 1.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bytesToHex } from '@noble/hashes/utils.js';
import { KmaasClient } from '../../client/index.ts';
import { KmaasError } from '../../shared/errors.ts';
import { draftProposal } from '../../shared/proposal.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import { signWithDevKeys } from '../../scripts/lib/operators.ts';
import {
  bytesOnDisk,
  clusterView,
  nodeDb,
  reshareProposal,
  runProposal,
  sealedShares,
  shareEpochs,
  underLoad,
  type Change,
  evaluateAt,
  startReshareCluster,
  type Login,
} from './reshare-helpers.ts';

function once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  return (async function* () {
    await Promise.resolve();
    yield bytes;
  })();
}

async function collect(stream: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const part of stream) parts.push(part);
  return new Uint8Array(Buffer.concat(parts));
}

const DOCS = Array.from({ length: 100 }, (_, i) => `contracts/2026/${i}.pdf`);
const TENANT = 'acme';

describe('resharing: the committee changes, the keys do not (real processes)', function () {
  this.timeout(900_000);
  let dir: string;
  let cluster: LocalCluster;
  let client: KmaasClient;
  let fresh: () => KmaasClient;
  let login: Login;
  let baseline: string[];
  /** Sealed share blobs seen in each node's database before each step. */
  const seenBlobs = new Map<number, Set<string>>();

  const deriveAll = async (version = 1) =>
    (await client.deriveKeys(TENANT, version, DOCS)).keys.map(bytesToHex);

  function rememberBlobs(): void {
    for (const id of [1, 2, 3, 4, 5, 6, 7]) {
      const set = seenBlobs.get(id) ?? new Set<string>();
      try {
        for (const b of sealedShares(nodeDb(dir, id))) set.add(b);
      } catch {
        // A spare node has no keys table rows yet (or no database).
      }
      seenBlobs.set(id, set);
    }
  }

  /** Every member holds shares of `epoch` only; removed nodes hold none; no old blob remains. */
  function expectOnlyEpoch(epoch: number, members: number[]): void {
    for (const id of [1, 2, 3, 4, 5, 6, 7]) {
      const rows = shareEpochs(nodeDb(dir, id));
      if (members.includes(id)) {
        expect(rows.length, `node ${id} rows`).to.be.greaterThan(0);
        expect(
          rows.every((r) => r.epoch === epoch),
          `node ${id} holds only epoch ${epoch}: ${JSON.stringify(rows)}`,
        ).to.equal(true);
      } else {
        expect(rows, `node ${id} (not a member) holds no share`).to.deep.equal([]);
      }
      const current = new Set(sealedShares(nodeDb(dir, id)));
      for (const blob of seenBlobs.get(id) ?? []) {
        if (current.has(blob)) continue;
        expect(bytesOnDisk(nodeDb(dir, id), blob), `an erased share of node ${id} is on disk`).to.be
          .false;
      }
    }
  }

  async function reshare(change: Change): Promise<void> {
    rememberBlobs();
    const p = await reshareProposal(client, cluster, change);
    await underLoad(client, TENANT, DOCS, baseline, () => runProposal(client, p), fresh);
    expect(await deriveAll()).to.deep.equal(baseline);
  }

  const evaluateAtNode = (id: number): Promise<string> =>
    evaluateAt(cluster, login, TENANT, DOCS[0]!, id);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-reshare-'));
    ({ cluster, login, client, fresh } = await startReshareCluster(dir, TENANT, {
      spareNodes: 2,
      finishDelayMs: 500,
    }));
    baseline = await deriveAll();
    expect(new Set(baseline).size).to.equal(DOCS.length);
  });

  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('starts at epoch 1 with nodes 1-5, t = 3; the spare nodes hold nothing', async () => {
    const { epoch } = await clusterView(client);
    expect(epoch.epoch).to.equal(1);
    expect(epoch.threshold).to.equal(3);
    expect(epoch.committee.map((m) => m.node)).to.deep.equal([1, 2, 3, 4, 5]);
    expectOnlyEpoch(1, [1, 2, 3, 4, 5]);
  });

  it('refuses to add nodes 6 and 7 at t = 3: 3 of 7 is not a majority', async () => {
    const p = await reshareProposal(client, cluster, { reason: 'add', add: [6, 7] });
    const err = await client.submitProposal(p).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(KmaasError);
    expect((err as KmaasError).code).to.equal('ERR_BAD_THRESHOLD');
    expect((await clusterView(client)).epoch.epoch).to.equal(1);
  });

  it('raises t from 3 to 4 under load: same 100 keys, old shares erased', async () => {
    await reshare({ reason: 'threshold', threshold: 4 });
    const { epoch } = await clusterView(client);
    expect([epoch.epoch, epoch.threshold]).to.deep.equal([2, 4]);
    expect((await client.keyPackage(TENANT, 1)).threshold).to.equal(4);
    expectOnlyEpoch(2, [1, 2, 3, 4, 5]);
  });

  it('adds nodes 6 and 7 (5 -> 7) under load: same keys', async () => {
    await reshare({ reason: 'add', add: [6, 7] });
    const { epoch } = await clusterView(client);
    expect(epoch.epoch).to.equal(3);
    expect(epoch.committee.map((m) => m.node)).to.deep.equal([1, 2, 3, 4, 5, 6, 7]);
    expectOnlyEpoch(3, [1, 2, 3, 4, 5, 6, 7]);
  });

  it('removes nodes 1, 2 and 3 under load: same keys; the removed nodes refuse', async () => {
    await reshare({ reason: 'remove', remove: [1, 2, 3] });
    const { epoch } = await clusterView(client);
    expect(epoch.committee.map((m) => m.node)).to.deep.equal([4, 5, 6, 7]);
    expectOnlyEpoch(4, [4, 5, 6, 7]);
    for (const id of [1, 2, 3])
      expect(await evaluateAtNode(id), `node ${id}`).to.equal('ERR_NODE_REMOVED');
    expect(await evaluateAtNode(4)).to.equal('ok');
  });

  it('refreshes every share under load: same keys, new shares', async () => {
    const shares = new Set([4, 5, 6, 7].flatMap((id) => sealedShares(nodeDb(dir, id))));
    await reshare({ reason: 'refresh' });
    expectOnlyEpoch(5, [4, 5, 6, 7]);
    const after = [4, 5, 6, 7].flatMap((id) => sealedShares(nodeDb(dir, id)));
    expect(after.filter((b) => shares.has(b))).to.deep.equal([]);
  });

  it('rotates to version 2, rewraps version-1 documents, retires version 1', async () => {
    const { cluster: id, epoch } = await clusterView(client);
    const rotate = draftProposal({
      cluster: id,
      operation: 'key.rotate',
      tenant: TENANT,
      version: 2,
      threshold: epoch.threshold,
      committee: epoch.committee,
      expiresAt: new Date(Date.now() + 600_000),
    });
    await runProposal(client, signWithDevKeys(rotate, cluster.operators.keyFiles, 2));
    // Version 1 still serves, unchanged, after the rotation.
    expect(await deriveAll(1)).to.deep.equal(baseline);
    const v2 = await deriveAll(2);
    expect(v2.filter((k) => baseline.includes(k))).to.deep.equal([]);

    const plaintext = new Uint8Array(randomBytes(3000));
    const sealed = await collect(
      await client.encrypt(once(plaintext), {
        tenant: TENANT,
        documentId: DOCS[7]!,
        keyVersion: 1,
      }),
    );
    const rewrapped = await collect(await client.rewrap(once(sealed)));

    const retire = draftProposal({
      cluster: id,
      operation: 'key.retire',
      tenant: TENANT,
      version: 1,
      committee: epoch.committee,
      expiresAt: new Date(Date.now() + 600_000),
    });
    await client.submitProposal(signWithDevKeys(retire, cluster.operators.keyFiles, 2));
    const opened = await collect(await client.decrypt(once(rewrapped)));
    expect(Buffer.from(opened).equals(Buffer.from(plaintext))).to.equal(true);
    const err = await client.deriveKeys(TENANT, 1, DOCS.slice(0, 1)).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(KmaasError);
    expect((err as KmaasError).code).to.be.oneOf(['ERR_KEY_RETIRED', 'ERR_TOO_FEW_NODES']);
    // The coordinator lists version 1 as retired, refuses its package, and the newest live
    // version is 2; the status says so too.
    const info = await client.tenant(TENANT);
    expect(info.versions.map((v) => [v.version, v.retired === true])).to.deep.equal([
      [1, true],
      [2, false],
    ]);
    const pkg = await fetch(`${cluster.url}/v1/tenants/${TENANT}/keys/1`);
    expect(pkg.status).to.equal(410);
    expect(((await pkg.json()) as { error: { code: string } }).error.code).to.equal(
      'ERR_KEY_RETIRED',
    );
    expect(await client.latestVersion(TENANT)).to.equal(2);
    const status = (await client.status()) as unknown as {
      keys: { tenant: string; versions: { version: number; retired?: boolean }[] }[];
    };
    const listed = status.keys.find((k) => k.tenant === TENANT)!.versions;
    expect(listed.map((v) => [v.version, v.retired === true])).to.deep.equal([
      [1, true],
      [2, false],
    ]);
  });
});
