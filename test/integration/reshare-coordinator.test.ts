/**
 * The coordinator's reshare job against real node processes (LocalCluster, 3 nodes): a reshare
 * raising the threshold 2 -> 3 and a refresh, each followed through GET /v1/jobs/:id, leave the
 * group key and every derived key as they were, with the registry serving the new epoch's
 * package; a refresh submitted again in the same period changes nothing.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KmaasClient } from '../../client/index.ts';
import { MemoryPinStore } from '../../client/pins.ts';
import { devLogin } from '../../idp/dev-login.ts';
import type { KeyPackage } from '../../shared/key-package.ts';
import { draftProposal, type CommitteeMember, type Proposal } from '../../shared/proposal.ts';
import { LocalCluster } from '../../scripts/lib/cluster.ts';
import { signWithDevKeys } from '../../scripts/lib/operators.ts';

interface JobView {
  state: string;
  operation: string;
  epoch?: number;
  progress: { phase: string; done: number; total: number };
  result?: { epoch: number; threshold: number; committee: number[]; keys: number };
  error?: { code: string; message: string };
}

describe('resharing through the coordinator, with real nodes', function () {
  this.timeout(180_000);
  let dir: string;
  let cluster: LocalCluster;
  let client: () => KmaasClient;
  let id: string;
  let committee: CommitteeMember[];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmaas-reshare-'));
    cluster = new LocalCluster({
      dataDir: dir,
      nodes: 3,
      redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      redisPrefix: `kmaas:test:${randomBytes(6).toString('hex')}:`,
      cleanRedisOnStop: true,
      nodeTimeoutMs: 1500,
    });
    await cluster.start();
    const alice = cluster.devUsers.find((u) => u.tenant === 'acme')!;
    const { accessToken, dpopKey } = await devLogin({ issuer: cluster.issuer, ...alice });
    // A fresh client each time: no package cached from an earlier epoch.
    client = () =>
      new KmaasClient({
        baseUrl: cluster.url,
        auth: { accessToken, dpopKey },
        adminToken: cluster.secrets.adminToken,
        pins: new MemoryPinStore(),
        trustOnFirstUse: true,
      });
    ({ cluster: id, committee } = await client().committee());
  });

  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const sign = (p: Proposal) => signWithDevKeys(p, cluster.operators.keyFiles, 2);
  const expiresAt = () => new Date(Date.now() + 600_000);
  const admin = () => ({
    authorization: `Bearer ${cluster.secrets.adminToken}`,
    'content-type': 'application/json',
  });

  async function submit(p: Proposal): Promise<JobView> {
    const res = await fetch(`${cluster.url}/v1/proposals`, {
      method: 'POST',
      headers: admin(),
      body: JSON.stringify(p),
    });
    expect(res.status).to.equal(202);
    const { jobId } = (await res.json()) as { jobId: string };
    for (;;) {
      const job = (await (
        await fetch(`${cluster.url}/v1/jobs/${jobId}`, { headers: admin() })
      ).json()) as JobView;
      if (job.state === 'completed' || job.state === 'failed') return job;
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async function keyPackage(version = 1): Promise<KeyPackage> {
    const res = await fetch(`${cluster.url}/v1/tenants/acme/keys/${version}`);
    return (await res.json()) as KeyPackage;
  }

  it('reshares to a higher threshold and refreshes, keeping every key', async () => {
    const created = await submit(
      sign(
        draftProposal({
          cluster: id,
          operation: 'tenant.create',
          tenant: 'acme',
          version: 1,
          threshold: 2,
          committee,
          expiresAt: expiresAt(),
        }),
      ),
    );
    expect(created.state).to.equal('completed');
    const before = (await client().deriveKeys('acme', 1, ['doc-1'])).keys[0]!;
    const groupKey = (await keyPackage()).groupKey;

    const reshared = await submit(
      sign(
        draftProposal({
          cluster: id,
          operation: 'committee.reshare',
          epoch: 2,
          threshold: 3,
          committee,
          previous: { epoch: 1, threshold: 2, committee },
          reason: 'threshold',
          expiresAt: expiresAt(),
        }),
      ),
    );
    expect(reshared, JSON.stringify(reshared.error)).to.deep.include({
      state: 'completed',
      operation: 'committee.reshare',
      epoch: 2,
      result: {
        epoch: 2,
        threshold: 3,
        committee: [1, 2, 3],
        keys: 1,
        dealers: [1, 2],
        excludedDealers: [],
      },
    });
    expect(await keyPackage()).to.deep.include({ epoch: 2, threshold: 3, groupKey });
    const afterReshare = (await client().deriveKeys('acme', 1, ['doc-1'])).keys[0]!;
    expect(Buffer.from(afterReshare).equals(Buffer.from(before))).to.equal(true);

    const refresh = sign(
      draftProposal({
        cluster: id,
        operation: 'committee.refresh',
        threshold: 3,
        committee,
        everySeconds: 3600,
        expiresAt: expiresAt(),
      }),
    );
    const period = () => Math.floor(Date.now() / 3_600_000);
    const first = period();
    const refreshed = await submit(refresh);
    expect(refreshed, JSON.stringify(refreshed.error)).to.deep.include({
      state: 'completed',
      result: {
        epoch: 3,
        threshold: 3,
        committee: [1, 2, 3],
        keys: 1,
        dealers: [1, 2, 3],
        excludedDealers: [],
      },
    });
    const pkg = await keyPackage();
    expect(pkg).to.deep.include({ epoch: 3, threshold: 3, groupKey });
    const afterRefresh = (await client().deriveKeys('acme', 1, ['doc-1'])).keys[0]!;
    expect(Buffer.from(afterRefresh).equals(Buffer.from(before))).to.equal(true);

    // The same period again: done already, nothing changes (unless the hour just turned).
    const again = await submit(refresh);
    if (period() === first) {
      expect(again.result).to.deep.include({ epoch: 3, keys: 0 });
      expect(await keyPackage()).to.deep.equal(pkg);
    }

    // A rotation now runs in the current epoch: its committee and threshold, or refused early.
    const rotate = (threshold: number) =>
      sign(
        draftProposal({
          cluster: id,
          operation: 'key.rotate',
          tenant: 'acme',
          version: 2,
          threshold,
          committee,
          expiresAt: expiresAt(),
        }),
      );
    const refused = await fetch(`${cluster.url}/v1/proposals`, {
      method: 'POST',
      headers: admin(),
      body: JSON.stringify(rotate(2)),
    });
    expect(refused.status).to.equal(403);
    expect(((await refused.json()) as { error: { code: string } }).error.code).to.equal(
      'ERR_PROPOSAL_MISMATCH',
    );
    const rotated = await submit(rotate(3));
    expect(rotated.state, JSON.stringify(rotated.error)).to.equal('completed');
    expect(await keyPackage(2)).to.deep.include({ threshold: 3 });
  });
});
