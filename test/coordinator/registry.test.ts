/**
 * Redis holds nothing the nodes cannot give back: deleted entries are rebuilt on start and on a
 * lookup miss, but only from a package that at least t share holders return identically.
 */
import { expect } from 'chai';
import { canonicalKeyPackage } from '../../coordinator/key-quorum.ts';
import type { KeyPackage } from '../../shared/key-package.ts';
import {
  Cluster,
  deletePrefix,
  http,
  keysUnder,
  splitKey,
  waitFor,
  type StatusReply,
  type TenantReply,
} from './helpers.ts';

function install(cluster: Cluster, tenant: string, threshold: number, on: readonly number[]) {
  const key = splitKey(
    tenant,
    1,
    threshold,
    cluster.nodes.map((n) => n.id),
  );
  for (const id of on) cluster.node(id).install(key.keyPackage, key.shares.get(id)!);
  return key;
}

async function wipeTenants(cluster: Cluster): Promise<void> {
  const keys = (await keysUnder(cluster.redis, cluster.prefix)).filter((k) =>
    /:(tenant:[^:]+|tenants|nodes)$/.test(k),
  );
  expect(keys).to.not.be.empty;
  await cluster.redis.del(...keys);
}

describe('coordinator: registry rebuild from the nodes', function () {
  let cluster: Cluster | undefined;

  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  it('rebuilds deleted tenant entries when a lookup misses', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    const key = install(cluster, 'acme', 2, [1, 2, 3]);
    await cluster.waitForNodes();
    expect((await http(cluster.port, 'GET', '/v1/tenants/acme')).status).to.equal(200);
    await wipeTenants(cluster);
    expect(await cluster.redis.exists(`${cluster.prefix}tenant:acme`)).to.equal(0);

    const tenant = await http<TenantReply>(cluster.port, 'GET', '/v1/tenants/acme');
    const pkg = await http<KeyPackage>(cluster.port, 'GET', '/v1/tenants/acme/keys/1');

    expect(tenant.status).to.equal(200);
    expect(tenant.body.versions).to.deep.equal([
      { version: 1, threshold: 2, groupKey: key.keyPackage.groupKey },
    ]);
    expect(canonicalKeyPackage(pkg.body)).to.equal(canonicalKeyPackage(key.keyPackage));
    const status = await http<StatusReply>(cluster.port, 'GET', '/v1/status');
    expect(status.body.tenants).to.deep.equal(['acme']);
  });

  it('rebuilds on start, from the nodes alone', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    const key = install(cluster, 'acme', 2, [1, 2, 3]);
    install(cluster, 'globex', 3, [1, 2, 3]);
    await cluster.stopCoordinator();
    await deletePrefix(cluster.redis, cluster.prefix);

    await cluster.startCoordinator();

    const stored = await waitFor('tenants rebuilt', async () => {
      const names = await cluster!.redis.smembers(`${cluster!.prefix}tenants`);
      return names.length === 2 ? names.sort() : undefined;
    });
    expect(stored).to.deep.equal(['acme', 'globex']);
    const json = await cluster.redis.hget(`${cluster.prefix}tenant:acme`, '1');
    expect(json).to.equal(canonicalKeyPackage(key.keyPackage));
    const nodes = await cluster.redis.hgetall(`${cluster.prefix}nodes`);
    expect(Object.keys(nodes).sort()).to.deep.equal(['1', '2', '3']);
  });

  it('does not restore a package that fewer than t nodes hold', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    install(cluster, 'acme', 2, [1]);
    await cluster.waitForNodes();

    const res = await http(cluster.port, 'GET', '/v1/tenants/acme');

    expect(res.status).to.equal(404);
    expect(res.body.error.code).to.equal('ERR_UNKNOWN_TENANT');
    expect(cluster.logs.find('key package not restored from nodes')).to.not.be.empty;
  });

  it('does not restore when the nodes disagree and no package has t holders', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    install(cluster, 'acme', 2, [1]);
    install(cluster, 'acme', 2, [2]);
    install(cluster, 'acme', 2, [3]);
    await cluster.waitForNodes();

    const res = await http(cluster.port, 'GET', '/v1/tenants/acme/keys/1');

    expect(res.status).to.equal(404);
    expect(res.body.error.code).to.equal('ERR_UNKNOWN_TENANT');
  });

  it('restores the package t nodes agree on even when another node lies', async () => {
    cluster = await Cluster.start({ nodes: 3 });
    const key = install(cluster, 'acme', 2, [1, 2]);
    install(cluster, 'acme', 2, [3]);
    await cluster.waitForNodes();

    const res = await http<KeyPackage>(cluster.port, 'GET', '/v1/tenants/acme/keys/1');

    expect(res.status).to.equal(200);
    expect(canonicalKeyPackage(res.body)).to.equal(canonicalKeyPackage(key.keyPackage));
  });
});
