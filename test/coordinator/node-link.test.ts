/**
 * One coordinator -> node WebSocket link against a fake node: authentication, request/response
 * by id, per-request deadlines, failing pending requests the moment the socket drops, heartbeats
 * that cut a node which stops answering pings, and reconnection.
 */
import { expect } from 'chai';
import { NodeLink, NodeReplyError } from '../../coordinator/node-link.ts';
import { NodePool } from '../../coordinator/node-pool.ts';
import { Redacted } from '../../shared/redacted.ts';
import { KmaasError } from '../../shared/errors.ts';
import { FakeNode } from './fake-node.ts';
import { LogCapture, TOKENS, waitFor } from './helpers.ts';

const OPTS = { heartbeatMs: 50, reconnectBaseMs: 10, reconnectMaxMs: 100 };

async function rejection(p: Promise<unknown>): Promise<KmaasError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(KmaasError);
    return err as KmaasError;
  }
  throw new Error('expected a rejection');
}

describe('coordinator: node link', function () {
  let node: FakeNode;
  let link: NodeLink | undefined;
  let logs: LogCapture;

  beforeEach(async () => {
    logs = new LogCapture();
    node = await FakeNode.start({
      id: 7,
      clusterToken: TOKENS.cluster,
      clientToken: TOKENS.client,
    });
  });

  afterEach(async () => {
    await link?.close();
    link = undefined;
    await node.stop();
  });

  function connect(token = TOKENS.cluster): NodeLink {
    link = new NodeLink({
      ...OPTS,
      id: 7,
      url: node.url,
      clusterToken: new Redacted(token),
      logger: logs.logger,
    });
    link.start();
    return link;
  }

  it('authenticates with the cluster token and matches replies to requests', async () => {
    const l = connect();
    await waitFor('connection', () => l.connected);
    const replies = await Promise.all([
      l.request('status', {}, 1000),
      l.request('status', {}, 1000),
    ]);
    expect(replies).to.deep.equal([
      { node: 7, keys: [] },
      { node: 7, keys: [] },
    ]);
  });

  it('never connects with a wrong cluster token', async () => {
    const l = connect('not-the-cluster-token');
    await waitFor('a refused attempt', () => logs.find('node link error').length > 0);
    expect(l.connected).to.equal(false);
    expect(node.connections).to.equal(0);
    const err = await rejection(l.request('status', {}, 1000));
    expect(err.code).to.equal('ERR_NODE_UNAVAILABLE');
  });

  it('rejects a node error as a NodeReplyError carrying the node code', async () => {
    const l = connect();
    await waitFor('connection', () => l.connected);
    const err = await rejection(l.request('keyPackage', { tenant: 'nope', version: 1 }, 1000));
    expect(err).to.be.instanceOf(NodeReplyError);
    expect(err.code).to.equal('ERR_UNKNOWN_TENANT');
    expect((err as NodeReplyError).node).to.equal(7);
  });

  it('times a request out with ERR_NODE_UNAVAILABLE and ranks the node down', async () => {
    node.behaviour = 'silent';
    const l = connect();
    await waitFor('connection', () => l.connected);
    const body = { tenant: 't', version: 1, blinded: [], auth: { token: 'x' } };
    const err = await rejection(l.request('evaluate', body, 50));
    expect(err.code).to.equal('ERR_NODE_UNAVAILABLE');
    expect(err.details).to.include({ node: 7, reason: 'timeout' });
    expect(l.state().recentFailures).to.equal(1);
  });

  it('fails pending requests at once when the socket drops, then reconnects', async () => {
    node.behaviour = 'silent';
    const l = connect();
    await waitFor('connection', () => l.connected);
    const body = { tenant: 't', version: 1, blinded: [], auth: { token: 'x' } };
    const pending = rejection(l.request('evaluate', body, 60_000));
    const port = node.port;

    await node.stop();
    const err = await pending;

    expect(err.code).to.equal('ERR_NODE_UNAVAILABLE');
    expect(err.details).to.include({ reason: 'disconnected' });
    await node.listen(port);
    await waitFor('reconnection', () => l.connected);
    node.behaviour = 'honest';
    expect(await l.request('status', {}, 1000)).to.deep.include({ node: 7 });
  });

  it('terminates a link whose node stops answering pings, and marks it down', async () => {
    const l = connect();
    await waitFor('connection and a heartbeat', () => l.connected && l.state().lastHeartbeat);
    expect(l.state().latencyMs).to.be.a('number');
    node.pongDelayMs = null;
    const body = { tenant: 't', version: 1, blinded: [], auth: { token: 'x' } };
    node.behaviour = 'silent';
    const pending = rejection(l.request('evaluate', body, 60_000));

    const err = await pending;

    expect(err.details).to.include({ reason: 'disconnected' });
    expect(logs.find('node missed heartbeats, terminating link')).to.not.be.empty;
    node.pongDelayMs = 0;
    await waitFor('reconnection', () => l.connected);
  });

  it('close() is idempotent and fails what is pending', async () => {
    node.behaviour = 'silent';
    const l = connect();
    await waitFor('connection', () => l.connected);
    const body = { tenant: 't', version: 1, blinded: [], auth: { token: 'x' } };
    const pending = rejection(l.request('evaluate', body, 60_000));
    await Promise.all([l.close(), l.close()]);
    await l.close();
    expect((await pending).code).to.equal('ERR_NODE_UNAVAILABLE');
    expect(l.connected).to.equal(false);
    await waitFor('server side to see the close', () => node.connections === 0);
  });
});

describe('coordinator: node pool', function () {
  const logs = new LogCapture();
  let nodes: FakeNode[] = [];
  let pool: NodePool | undefined;

  afterEach(async () => {
    await pool?.close();
    await Promise.all(nodes.map((n) => n.stop()));
    nodes = [];
  });

  it('orders healthy links by recent failures, then latency, and leaves out the down ones', async () => {
    for (const id of [1, 2, 3]) {
      nodes.push(
        await FakeNode.start({
          id,
          clusterToken: TOKENS.cluster,
          clientToken: TOKENS.client,
          pongDelayMs: id === 3 ? 0 : 30,
        }),
      );
    }
    pool = new NodePool(
      nodes.map((n) => ({ id: n.id, url: n.url })),
      { ...OPTS, clusterToken: new Redacted(TOKENS.cluster) },
      logs.logger,
    );
    pool.start();
    await waitFor('latencies', () =>
      pool!.states().every((s) => s.connected && s.latencyMs !== null),
    );
    await waitFor('node 3 to rank first', () => pool!.healthy()[0]?.id === 3);

    pool.get(3)!.recordFailure();
    expect(
      pool
        .healthy()
        .map((l) => l.id)
        .at(-1),
    ).to.equal(3);

    await nodes[0]!.stop();
    await waitFor('node 1 down', () => !pool!.get(1)!.connected);
    expect(pool.healthy().map((l) => l.id)).to.not.include(1);
  });
});
