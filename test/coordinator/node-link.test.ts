/**
 * One coordinator -> node WebSocket link against a fake node: authentication, request/response
 * by id, per-request deadlines, failing pending requests the moment the socket drops, heartbeats
 * that cut a node which stops answering pings (but not one that is busy answering requests, nor
 * one the coordinator could not hear because its own event loop was stalled), reconnection, and
 * the window that keeps a node's queue of evaluations at the coordinator, where it can be ordered
 * and cancelled and where waiting does not count against a node's deadline.
 */
import { expect } from 'chai';
import { NodeLink, NodeReplyError } from '../../coordinator/node-link.ts';
import { NodePool } from '../../coordinator/node-pool.ts';
import { Redacted } from '../../shared/redacted.ts';
import { KmaasError } from '../../shared/errors.ts';
import { FakeNode } from './fake-node.ts';
import { LogCapture, TOKENS, waitFor } from './helpers.ts';
import { stallEventLoop } from './stall.ts';

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
    });
  });

  afterEach(async () => {
    await link?.close();
    link = undefined;
    await node.stop();
  });

  function connect(token = TOKENS.cluster, heartbeatMs = OPTS.heartbeatMs): NodeLink {
    link = new NodeLink({
      ...OPTS,
      heartbeatMs,
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
      { node: 7, keys: [], identity: node.identity, epoch: null, reshare: null },
      { node: 7, keys: [], identity: node.identity, epoch: null, reshare: null },
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

  it('counts a node alive while its replies arrive, though its pongs stop', async () => {
    const l = connect();
    await waitFor('connection and a heartbeat', () => l.connected && l.state().lastHeartbeat);
    node.pongDelayMs = null;

    // About twenty heartbeats of a node too busy to pong, but answering every request.
    for (let i = 0; i < 100; i++) {
      expect(await l.request('status', {}, 1000)).to.deep.include({ node: 7 });
      await new Promise((r) => setTimeout(r, 10));
    }

    expect(l.connected).to.equal(true);
    expect(logs.find('node missed heartbeats, terminating link')).to.deep.equal([]);
    // Silent in every way, it is cut as before.
    await waitFor('termination', () => logs.find('node missed heartbeats, terminating link')[0]);
  });

  it('does not count pongs missed while its own event loop was stalled', async () => {
    const heartbeatMs = 100;
    const l = connect(TOKENS.cluster, heartbeatMs);
    await waitFor('connection and a heartbeat', () => l.connected && l.state().lastHeartbeat);
    // A ping goes unanswered in a fair period: one miss. As the next one arrives, the
    // coordinator's loop stalls for many periods; the node is silent through the stall and
    // answers again right after it. The heartbeat that fires, late, after the stall must not
    // count the stall as a second miss.
    let pings = 0;
    node.pongDelayMs = null;
    node.onPing = () => {
      if (++pings < 2) return;
      node.onPing = null;
      setTimeout(() => (node.pongDelayMs = 0), 0);
      stallEventLoop(6 * heartbeatMs);
    };
    await waitFor('the stall', () => node.onPing === null);
    const after = l.state().lastHeartbeat;

    await waitFor('a pong after the stall', () => l.state().lastHeartbeat !== after);

    expect(l.connected).to.equal(true);
    expect(logs.find('node missed heartbeats, terminating link')).to.deep.equal([]);
    expect(logs.find(/heartbeat ran late/)).to.not.be.empty;
  });

  const auth = { token: 'not-an-access-token' };

  /** An evaluate request of `size` elements; the fake node answers it ERR_DPOP_MISSING. */
  function evaluate(
    l: NodeLink,
    size: number,
    timeoutMs = 5000,
    signal?: AbortSignal,
  ): Promise<KmaasError> {
    const body = { tenant: 't', version: 1, blinded: new Array<string>(size).fill('x'), auth };
    return rejection(
      l.request('evaluate', body, timeoutMs, { elements: size, ...(signal ? { signal } : {}) }),
    );
  }

  it('keeps one full batch on the wire, and starts a deadline when the request is sent', async () => {
    node.serial = true;
    node.evaluateDelayMs = 100;
    const l = connect();
    await waitFor('connection', () => l.connected);

    // Sent at once to a node that works one at a time, the last two would wait 300 and 400 ms.
    const errors = await Promise.all([1, 2, 3, 4].map(() => evaluate(l, 200, 250)));

    expect(errors.map((e) => e.code)).to.deep.equal(new Array(4).fill('ERR_DPOP_MISSING'));
    expect(node.evaluateSizes).to.deep.equal([200, 200, 200, 200]);
    expect(l.state().recentFailures).to.equal(0);
  });

  it('sends waiting small batches before a waiting large one', async () => {
    let release!: () => void;
    node.hold = new Promise<void>((r) => (release = r));
    const l = connect();
    await waitFor('connection', () => l.connected);
    const first = evaluate(l, 200);
    await waitFor('the first at the node', () => node.evaluateSizes.length === 1);
    const large = evaluate(l, 150);
    const small = evaluate(l, 1);
    expect(l.state().pending).to.equal(3);

    node.hold = null;
    release();
    await Promise.all([first, large, small]);

    expect(node.evaluateSizes).to.deep.equal([200, 1, 150]);
  });

  it('drops a waiting request when its signal aborts, and fails the rest when the link drops', async () => {
    let release!: () => void;
    node.hold = new Promise<void>((r) => (release = r));
    const l = connect();
    await waitFor('connection', () => l.connected);
    const first = evaluate(l, 200);
    await waitFor('the first at the node', () => node.evaluateSizes.length === 1);
    const cancel = new AbortController();
    const cancelled = evaluate(l, 200, 5000, cancel.signal);
    const dropped = evaluate(l, 200);

    cancel.abort();
    expect((await cancelled).details).to.include({ reason: 'cancelled' });
    await node.stop();

    expect((await dropped).details).to.include({ reason: 'disconnected' });
    expect((await first).details).to.include({ reason: 'disconnected' });
    expect(node.evaluateSizes).to.deep.equal([200]);
    release();
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

    pool.get(3)!.record({ kind: 'failed', code: 'ERR_NODE_UNAVAILABLE', reason: 'timeout' });
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
