/**
 * GET /v1/status with epochs (PLAN.md "Status"): the current epoch read from the nodes (at least
 * its threshold of members agreeing) with the members' identity keys, each node's epoch, member
 * flag and open reshare, spare nodes listed as non-members, and each tenant's key versions with
 * the epoch of their shares. The existing fields stay.
 */
import { expect } from 'chai';
import { clusterStatus } from '../../coordinator/cluster-status.ts';
import type { NodePool } from '../../coordinator/node-pool.ts';
import type { Registry } from '../../coordinator/registry.ts';
import { strangerIdentity } from '../helpers/operators.ts';
import { Cluster, http, splitKey } from './helpers.ts';

interface EpochStatus {
  cluster: string | null;
  epoch: {
    epoch: number;
    threshold: number;
    committee: { node: number; signing: string; encryption: string }[];
  } | null;
  nodes: {
    id: number;
    connected: boolean;
    epoch: number | null;
    member: boolean;
    reshare: { id: string; state: string } | null;
    identity: { signing: string; encryption: string } | null;
  }[];
  tenants: string[];
  keys: { tenant: string; versions: { version: number; epoch: number; threshold: number }[] }[];
}

describe('coordinator: status with epochs', function () {
  let cluster: Cluster | undefined;

  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  const status = async () => (await http<EpochStatus>(cluster!.port, 'GET', '/v1/status')).body;

  it('is null before any epoch, and lists every node as a non-member', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    await cluster.waitForNodes();
    const s = await status();
    expect(s.epoch).to.equal(null);
    expect(s.nodes.map((n) => [n.id, n.epoch, n.member])).to.deep.equal([
      [1, null, false],
      [2, null, false],
      [3, null, false],
    ]);
    expect(s.tenants).to.deep.equal([]);
    expect(s.keys).to.deep.equal([]);
  });

  it('shows the epoch its members agree on, spare nodes, reshares and key epochs', async () => {
    cluster = await Cluster.start({ nodes: 5 });
    // Epoch 2: nodes 1-4 with t = 3; node 5 is a spare still reporting nothing. Node 4 has not
    // caught up and still says epoch 1; a lone node claiming epoch 9 is not believed.
    const e2 = { epoch: 2, threshold: 3, members: [1, 2, 3, 4] };
    for (const id of [1, 2, 3]) cluster.node(id).epoch = e2;
    cluster.node(4).epoch = { epoch: 1, threshold: 2, members: [1, 2, 3] };
    cluster.node(5).epoch = { epoch: 9, threshold: 1, members: [5, 6] };
    cluster.node(2).reshare = { id: 'rABC', state: 'voted' };
    const key = splitKey('acme', 1, 3, [1, 2, 3, 4]);
    const pkg = { ...key.keyPackage, epoch: 2 };
    for (const id of [1, 2, 3, 4]) cluster.node(id).install(pkg, key.shares.get(id)!);
    await cluster.waitForNodes();
    // Let the registry learn the tenant from the nodes.
    await http(cluster.port, 'GET', '/v1/tenants/acme/keys/1');

    const s = await status();
    expect(s.epoch).to.not.equal(null);
    expect(s.epoch!.epoch).to.equal(2);
    expect(s.epoch!.threshold).to.equal(3);
    expect(s.epoch!.committee).to.deep.equal(
      [1, 2, 3, 4].map((id) => ({ node: id, ...cluster!.node(id).identity })),
    );
    expect(s.nodes.map((n) => [n.id, n.epoch, n.member])).to.deep.equal([
      [1, 2, true],
      [2, 2, true],
      [3, 2, true],
      [4, 1, true],
      [5, 9, false],
    ]);
    expect(s.nodes.find((n) => n.id === 2)!.reshare).to.deep.equal({ id: 'rABC', state: 'voted' });
    expect(s.nodes.find((n) => n.id === 1)!.reshare).to.equal(null);
    expect(s.nodes.find((n) => n.id === 5)!.identity).to.deep.equal(cluster.node(5).identity);
    expect(s.tenants).to.deep.equal(['acme']);
    expect(s.keys).to.deep.equal([
      { tenant: 'acme', versions: [{ version: 1, epoch: 2, threshold: 3 }] },
    ]);
  });

  it('believes no epoch that fewer than its threshold of members report', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    cluster.node(1).epoch = { epoch: 4, threshold: 2, members: [1, 2, 3] };
    await cluster.waitForNodes();
    expect((await status()).epoch).to.equal(null);
  });

  it('takes the epoch record when there is one, and shows only its committee', async () => {
    const committee = [1, 2, 3].map((id) => strangerIdentity(id));
    const record = { epoch: 5, threshold: 2, committee, reshareId: 'rX', transcript: 'ab' };
    const s = await clusterStatus({
      pool: { all: () => [] } as unknown as NodePool,
      registry: { tenantNames: () => Promise.resolve([]) } as unknown as Registry,
      nodeTimeoutMs: 100,
      epochs: { current: () => Promise.resolve(record) },
    });
    expect(s.epoch).to.deep.equal({ epoch: 5, threshold: 2, committee });
  });

  it('marks a member that reports other identity keys than the record: it lost its data', async () => {
    const committee = [1, 2, 3].map((id) => strangerIdentity(id));
    const record = { epoch: 5, threshold: 2, committee, reshareId: 'rX', transcript: 'ab' };
    // Node 2 came back with an empty data folder: new identity keys, no epoch, no keys.
    const reports = new Map([
      [1, { identity: committee[0]!, epoch: 5 }],
      [2, { identity: strangerIdentity(2), epoch: null }],
      [3, { identity: committee[2]!, epoch: 5 }],
    ]);
    const links = [1, 2, 3].map((id) => ({
      id,
      state: () => ({ id, connected: true }),
      request: () => {
        const r = reports.get(id)!;
        return Promise.resolve({
          node: id,
          keys: [],
          identity: { signing: r.identity.signing, encryption: r.identity.encryption },
          epoch: r.epoch === null ? null : { epoch: 5, threshold: 2, members: [1, 2, 3] },
        });
      },
    }));
    const s = await clusterStatus({
      pool: { all: () => links } as unknown as NodePool,
      registry: { tenantNames: () => Promise.resolve([]) } as unknown as Registry,
      nodeTimeoutMs: 100,
      epochs: { current: () => Promise.resolve(record) },
    });
    expect(s.nodes.map((n) => [n.id, n.member, n.lostData === true])).to.deep.equal([
      [1, true, false],
      [2, true, true],
      [3, true, false],
    ]);
  });
});
