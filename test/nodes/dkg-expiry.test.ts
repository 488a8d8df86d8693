/**
 * Expiry of abandoned DKG ceremonies (nodes/dkg-expiry.ts): which states go and which stay, the
 * log line, the schedule, and the run at node start. Every clock is injected: nothing waits.
 */
import { expect } from 'chai';
import type { NodeContext } from '../../nodes/context.ts';
import { handleRound1, handleRound2, handleRound3 } from '../../nodes/dkg.ts';
import {
  CEREMONY_EXPIRY_INTERVAL_MS,
  CEREMONY_MAX_AGE_MS,
  expireAbandonedCeremonies,
  startCeremonyExpiry,
} from '../../nodes/dkg-expiry.ts';
import type { Round1Wire, Round2Wire } from '../../nodes/dkg-machine.ts';
import { startNode } from '../../nodes/server.ts';
import { NodeStore } from '../../nodes/store.ts';
import {
  committeeLookup,
  round1Body,
  testContext,
  capturingLogger,
  ceremonyId,
  nodeConfig,
  randomSecret,
  removeDir,
  silentLogger,
  tempDir,
  type DkgParams,
} from './helpers.ts';

const HOUR = 60 * 60 * 1000;
const T0 = Date.UTC(2030, 0, 1);

interface Node {
  dir: string;
  ctx: NodeContext;
}

describe('nodes/dkg-expiry: abandoned ceremonies are erased', () => {
  let clock: number;
  let nodes: Node[];

  beforeEach(async () => {
    clock = T0;
    nodes = [];
    for (const id of [1, 2, 3]) {
      const dir = await tempDir();
      const store = NodeStore.open(dir, id, randomSecret(), { now: () => clock });
      nodes.push({ dir, ctx: testContext(id, store) });
    }
  });

  afterEach(async () => {
    for (const n of nodes) {
      n.ctx.store.close();
      await removeDir(n.dir);
    }
  });

  const store = () => nodes[0]!.ctx.store;
  const body = (p: DkgParams) => round1Body(p, committeeLookup(nodes.map((n) => n.ctx)));

  function params(tenant: string): DkgParams {
    return { ceremonyId: ceremonyId(), tenant, version: 1, threshold: 2, participants: [1, 2, 3] };
  }

  /** Run a 2-of-3 ceremony up to `rounds` rounds on every node. */
  function ceremony(tenant: string, rounds: 1 | 2 | 3): DkgParams {
    const p = params(tenant);
    const round1: Round1Wire[] = nodes.map((n) => handleRound1(n.ctx, body(p), {}));
    if (rounds === 1) return p;
    const round2: Round2Wire[] = nodes.flatMap(
      (n) => handleRound2(n.ctx, { ceremonyId: p.ceremonyId, round1 }, {}).packages,
    );
    if (rounds === 2) return p;
    for (const n of nodes) {
      const mine = round2.filter((x) => x.to === n.ctx.nodeId);
      handleRound3(n.ctx, { ceremonyId: p.ceremonyId, round2: mine }, {});
    }
    return p;
  }

  const kept = (p: DkgParams) => store().loadCeremony(p.ceremonyId) !== undefined;

  const table: [string, { rounds: 1 | 2 | 3; ageHours: number }, 'expired' | 'kept'][] = [
    ['after round 1, 25 h without a change', { rounds: 1, ageHours: 25 }, 'expired'],
    ['after round 2, 25 h without a change', { rounds: 2, ageHours: 25 }, 'expired'],
    ['after round 2, 23 h without a change', { rounds: 2, ageHours: 23 }, 'kept'],
    ['after round 2, exactly 24 h without a change', { rounds: 2, ageHours: 24 }, 'kept'],
    ['finished (key stored), not committed, 25 h old', { rounds: 3, ageHours: 25 }, 'kept'],
    ['finished (key stored), not committed, a year old', { rounds: 3, ageHours: 24 * 365 }, 'kept'],
  ];
  for (const [name, { rounds, ageHours }, want] of table) {
    it(`a ceremony ${name} is ${want}`, () => {
      const p = ceremony('acme', rounds);
      const lines: string[] = [];
      const expired = expireAbandonedCeremonies(
        store(),
        capturingLogger(lines),
        T0 + ageHours * HOUR,
      );
      expect(kept(p)).to.equal(want === 'kept');
      expect(expired.map((c) => c.ceremonyId)).to.deep.equal(
        want === 'expired' ? [p.ceremonyId] : [],
      );
      const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      if (want === 'expired') {
        expect(logged).to.have.length(1);
        expect(logged[0]).to.include({
          level: 30,
          msg: 'abandoned DKG ceremony expired; its state is erased',
          ceremonyId: p.ceremonyId,
          tenant: 'acme',
          version: 1,
          lastChanged: new Date(T0).toISOString(),
        });
      } else {
        expect(logged).to.deep.equal([]);
      }
    });
  }

  it('the age counts from the last change of the state, not from round 1', () => {
    const p = params('acme');
    const round1 = nodes.map((n) => handleRound1(n.ctx, body(p), {}));
    clock = T0 + 20 * HOUR;
    handleRound2(nodes[0]!.ctx, { ceremonyId: p.ceremonyId, round1 }, {});
    expireAbandonedCeremonies(store(), silentLogger(), T0 + 30 * HOUR);
    expect(kept(p)).to.equal(true);
    expireAbandonedCeremonies(store(), silentLogger(), T0 + 45 * HOUR);
    expect(kept(p)).to.equal(false);
  });

  it('only the abandoned ones go; the maximum age is a parameter', () => {
    const old = ceremony('old', 2);
    const done = ceremony('done', 3);
    clock = T0 + 10 * HOUR;
    const recent = ceremony('recent', 1);
    const expired = expireAbandonedCeremonies(store(), silentLogger(), T0 + 12 * HOUR, 11 * HOUR);
    expect(expired.map((c) => c.tenant)).to.deep.equal(['old']);
    expect([old, done, recent].map(kept)).to.deep.equal([false, true, true]);
    // The key of the finished one is untouched, and so are the other nodes.
    expect(store().hasKey('done', 1)).to.equal(true);
    expect(nodes[1]!.ctx.store.loadCeremony(old.ceremonyId)).to.not.equal(undefined);
  });

  it('runs at once and then every interval until stopped', () => {
    expect(CEREMONY_MAX_AGE_MS).to.equal(24 * HOUR);
    expect(CEREMONY_EXPIRY_INTERVAL_MS).to.equal(HOUR);
    const first = ceremony('first', 1);
    let tick: (() => void) | undefined;
    let interval: number | undefined;
    let stopped = false;
    const stop = startCeremonyExpiry(store(), silentLogger(), {
      now: () => clock,
      every: (task, ms) => {
        tick = task;
        interval = ms;
        return () => {
          stopped = true;
        };
      },
    });
    expect(interval).to.equal(CEREMONY_EXPIRY_INTERVAL_MS);
    expect(kept(first)).to.equal(true);
    clock = T0 + 25 * HOUR;
    const second = ceremony('second', 1);
    tick!();
    expect([first, second].map(kept)).to.deep.equal([false, true]);
    clock = T0 + 50 * HOUR;
    tick!();
    expect(kept(second)).to.equal(false);
    stop();
    expect(stopped).to.equal(true);
  });

  it('a failing run is logged, not thrown', () => {
    const lines: string[] = [];
    store().close();
    const stop = startCeremonyExpiry(store(), capturingLogger(lines), { every: () => () => {} });
    stop();
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).to.include(
      'expiring abandoned DKG ceremonies failed',
    );
  });
});

describe('nodes/server: abandoned ceremonies expire at node start', () => {
  it('a node started more than 24 h after a ceremony stalled erases it, with an info line', async () => {
    const dir = await tempDir();
    const secret = randomSecret();
    try {
      // The ceremony stalled two days ago (the store's clock says so).
      const store = NodeStore.open(dir, 1, secret, { now: () => Date.now() - 48 * HOUR });
      const p = {
        ceremonyId: ceremonyId(),
        tenant: 'acme',
        version: 1,
        threshold: 2,
        participants: [1, 2, 3],
      };
      const ctx = testContext(1, store);
      const lookup = committeeLookup([ctx]);
      handleRound1(ctx, round1Body(p, lookup), {});
      const fresh = { ...p, ceremonyId: ceremonyId(), tenant: 'fresh' };
      store.close();
      const reopened = NodeStore.open(dir, 1, secret);
      handleRound1(testContext(1, reopened), round1Body(fresh, lookup), {});
      reopened.close();

      const lines: string[] = [];
      const handle = await startNode(nodeConfig(1, dir, secret), capturingLogger(lines));
      await handle.close();

      const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      const expired = logged.filter(
        (l) => l.msg === 'abandoned DKG ceremony expired; its state is erased',
      );
      expect(expired).to.have.length(1);
      expect(expired[0]).to.include({ level: 30, ceremonyId: p.ceremonyId, tenant: 'acme' });
      const after = NodeStore.open(dir, 1, secret);
      try {
        expect(after.loadCeremony(p.ceremonyId)).to.equal(undefined);
        expect(after.loadCeremony(fresh.ceremonyId)).to.not.equal(undefined);
      } finally {
        after.close();
      }
    } finally {
      await removeDir(dir);
    }
  });
});
