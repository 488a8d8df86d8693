/**
 * `kmaas committee ...` and `kmaas status` (cli/committee.ts, cli/status.ts): the committee.reshare
 * proposals built from the coordinator's status (new epoch, previous epoch as reported, the new
 * committee's identity keys, the threshold), what is refused before anyone signs (the nodes'
 * threshold policy, unknown or duplicate members, a repair of a node that lost nothing), and the
 * status lines. The pure builders are checked against hand-written tables; the commands run
 * in-process (cli/program.ts run) against the fake coordinator, which records what was submitted.
 */
import { expect } from 'chai';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KmaasError } from '../../shared/errors.ts';
import { parseProposal, verifyQuorum, type CommitteeMember } from '../../shared/proposal.ts';
import { checkThreshold, reshareDraft, type CommitteeChange } from '../../cli/committee.ts';
import { keyCommittee, type StatusView } from '../../client/committee.ts';
import { run } from '../../cli/program.ts';
import { statusLines } from '../../cli/status.ts';
import {
  OPERATOR_SET,
  POLICY,
  strangerIdentity,
  TEST_CLUSTER_ID,
  writeOperatorKeys,
} from '../helpers/operators.ts';
import { FakeCoordinator } from '../client/helpers/fake-coordinator.ts';

/** Made-up identity keys, the same for a node every time (strangerIdentity makes new ones). */
const identities = new Map<number, CommitteeMember>();
const member = (node: number): CommitteeMember => {
  if (!identities.has(node)) identities.set(node, strangerIdentity(node));
  return identities.get(node)!;
};
const ids = (c: readonly CommitteeMember[] | undefined) => (c ?? []).map((m) => m.node);

/** Epoch 3: nodes 1-5, t = 3; nodes 6 and 7 are spares; all up. */
function view(overrides: Partial<StatusView> = {}): StatusView {
  return {
    cluster: TEST_CLUSTER_ID,
    epoch: { epoch: 3, threshold: 3, committee: [1, 2, 3, 4, 5].map(member) },
    nodes: [1, 2, 3, 4, 5, 6, 7].map((id) => ({
      id,
      connected: true,
      identity: { signing: member(id).signing, encryption: member(id).encryption },
      epoch: id <= 5 ? 3 : null,
      member: id <= 5,
    })),
    ...overrides,
  };
}

const EXPIRES = new Date('2030-01-01T00:00:00Z');

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(KmaasError);
    return (err as KmaasError).code;
  }
  throw new Error('expected a KmaasError');
}

describe('cli/committee: reshare proposals from the status', () => {
  const draft = (change: CommitteeChange, v = view(), minThreshold?: number) =>
    reshareDraft(v, change, {
      expiresAt: EXPIRES,
      ...(minThreshold === undefined ? {} : { minThreshold }),
    });

  it('add: the new epoch, the previous one as reported, and the spares identity keys', () => {
    const d = draft({ reason: 'add', nodes: [6, 7], threshold: 4 });
    expect(d.operation).to.equal('committee.reshare');
    expect(d.cluster).to.equal(TEST_CLUSTER_ID);
    expect(d.epoch).to.equal(4);
    expect(d.threshold).to.equal(4);
    expect(d.reason).to.equal('add');
    expect(d.committee).to.deep.equal([1, 2, 3, 4, 5, 6, 7].map(member));
    expect(d.previous).to.deep.equal({
      epoch: 3,
      threshold: 3,
      committee: [1, 2, 3, 4, 5].map(member),
    });
  });

  const refusals: [string, CommitteeChange, string][] = [
    // 2 * 3 <= 7: two disjoint groups of 3 could derive.
    ['add keeping t = 3 for 7 nodes', { reason: 'add', nodes: [6, 7] }, 'ERR_BAD_THRESHOLD'],
    ['add a member', { reason: 'add', nodes: [5, 6] }, 'ERR_VALIDATION'],
    ['add a node the coordinator does not know', { reason: 'add', nodes: [9] }, 'ERR_VALIDATION'],
    ['remove a spare', { reason: 'remove', nodes: [6] }, 'ERR_VALIDATION'],
    ['remove every member', { reason: 'remove', nodes: [1, 2, 3, 4, 5] }, 'ERR_VALIDATION'],
    // 4 of 4: every node needed is allowed; 3 of 3 too; but 4 > 3 nodes is not.
    ['remove to fewer nodes than t', { reason: 'remove', nodes: [1, 2, 3] }, 'ERR_BAD_THRESHOLD'],
    ['threshold 1', { reason: 'threshold', threshold: 1 }, 'ERR_BAD_THRESHOLD'],
    ['threshold 2 of 5', { reason: 'threshold', threshold: 2 }, 'ERR_BAD_THRESHOLD'],
    ['threshold 6 of 5', { reason: 'threshold', threshold: 6 }, 'ERR_BAD_THRESHOLD'],
    ['threshold unchanged', { reason: 'threshold', threshold: 3 }, 'ERR_VALIDATION'],
    ['repair a spare', { reason: 'repair', node: 6 }, 'ERR_VALIDATION'],
    ['repair a node that lost nothing', { reason: 'repair', node: 2 }, 'ERR_VALIDATION'],
  ];
  for (const [name, change, code] of refusals) {
    it(`refuses: ${name} (${code})`, () => {
      expect(codeOf(() => draft(change))).to.equal(code);
    });
  }

  it('a node no one configured: add, remove and repair all say it is not configured', () => {
    for (const change of [
      { reason: 'add', nodes: [99] },
      { reason: 'remove', nodes: [99] },
      { reason: 'repair', node: 99 },
    ] as CommitteeChange[]) {
      try {
        draft(change);
        expect.fail(`expected a refusal of ${change.reason}`);
      } catch (err) {
        expect((err as KmaasError).code).to.equal('ERR_VALIDATION');
        expect((err as KmaasError).message, change.reason).to.equal(
          'node 99 is not configured in the coordinator (KMAAS_NODES); known nodes: 1, 2, 3, 4, 5, 6, 7',
        );
      }
    }
  });

  it('the threshold refusal names the thresholds that would do', () => {
    try {
      draft({ reason: 'add', nodes: [6, 7] });
      expect.fail('expected a refusal');
    } catch (err) {
      expect((err as KmaasError).message).to.equal(
        '3 of 7 is not a majority (two disjoint groups of 3 could each derive): use at least 4',
      );
      expect((err as KmaasError).details).to.include({ min: 4, max: 7 });
    }
    const message = (t: number, n: number, min?: number) => {
      try {
        checkThreshold(t, n, min);
      } catch (err) {
        return (err as KmaasError).message;
      }
      return 'accepted';
    };
    expect(message(1, 5)).to.equal('threshold 1 of 5 lets one node derive alone: use 3..5');
    expect(message(6, 5)).to.equal('threshold 6 of 5 needs more nodes than there are: use 3..5');
    expect(message(3, 5, 4)).to.equal(
      "threshold 3 of 5 is below the operator set's minThreshold 4: use 4..5",
    );
    expect(message(2, 4)).to.equal(
      '2 of 4 is not a majority (two disjoint groups of 2 could each derive): use at least 3',
    );
  });

  it('checkThreshold: 2 <= t, t <= n, 2t > n, and the operator set minimum', () => {
    const ok: [number, number][] = [
      [2, 2],
      [2, 3],
      [3, 4],
      [3, 5],
      [4, 7],
      [7, 7],
    ];
    for (const [t, n] of ok) expect(() => checkThreshold(t, n), `${t} of ${n}`).to.not.throw();
    const bad: [number, number][] = [
      [1, 1],
      [1, 2],
      [2, 4],
      [3, 6],
      [3, 7],
      [8, 7],
    ];
    for (const [t, n] of bad)
      expect(codeOf(() => checkThreshold(t, n))).to.equal('ERR_BAD_THRESHOLD');
    expect(codeOf(() => checkThreshold(3, 5, 4))).to.equal('ERR_BAD_THRESHOLD');
    expect(() => checkThreshold(4, 5, 4)).to.not.throw();
  });

  it('remove keeps t unless told; the removed nodes leave the committee', () => {
    const v = view({
      epoch: { epoch: 4, threshold: 4, committee: [1, 2, 3, 4, 5, 6, 7].map(member) },
    });
    v.nodes = v.nodes.map((n) => ({ ...n, epoch: 4, member: true }));
    const kept = draft({ reason: 'remove', nodes: [6, 7] }, v);
    expect(ids(kept.committee)).to.deep.equal([1, 2, 3, 4, 5]);
    expect(kept.threshold).to.equal(4);
    expect(kept.epoch).to.equal(5);
    expect(ids(kept.previous!.committee)).to.deep.equal([1, 2, 3, 4, 5, 6, 7]);
    expect(draft({ reason: 'remove', nodes: [6, 7], threshold: 3 }, v).threshold).to.equal(3);
  });

  it('refresh and threshold keep the committee; the threshold moves only when asked', () => {
    const r = draft({ reason: 'refresh' });
    expect(r.committee).to.deep.equal(r.previous!.committee);
    expect(r.threshold).to.equal(3);
    const t = draft({ reason: 'threshold', threshold: 4 });
    expect(t.committee).to.deep.equal([1, 2, 3, 4, 5].map(member));
    expect(t.threshold).to.equal(4);
    expect(codeOf(() => draft({ reason: 'refresh' }, view(), 4))).to.equal('ERR_BAD_THRESHOLD');
  });

  it('repair: the member keeps its id, with the identity keys it reports now', () => {
    const fresh = strangerIdentity(2);
    const v = view();
    v.nodes[1]!.identity = { signing: fresh.signing, encryption: fresh.encryption };
    const d = draft({ reason: 'repair', node: 2 }, v);
    expect(d.committee.find((m) => m.node === 2)).to.deep.equal({ ...fresh, node: 2 });
    expect(d.previous!.committee.find((m) => m.node === 2)).to.deep.equal(member(2));
    expect(d.committee.filter((m) => m.node !== 2)).to.deep.equal([1, 3, 4, 5].map(member));
    // A repaired node must be up: its new keys are only known from itself.
    v.nodes[1]!.identity = null;
    expect(codeOf(() => draft({ reason: 'repair', node: 2 }, v))).to.equal('ERR_NODE_UNAVAILABLE');
  });

  it('refuses a reshare with fewer than t old members up on the old epoch to deal', () => {
    const v = view();
    v.nodes[0] = { ...v.nodes[0]!, connected: false, identity: null, epoch: null };
    v.nodes[1] = { ...v.nodes[1]!, epoch: 2 };
    // Nodes 3, 4 and 5 can still deal: t = 3.
    expect(draft({ reason: 'refresh' }, v).epoch).to.equal(4);
    v.nodes[2] = { ...v.nodes[2]!, connected: false, identity: null };
    expect(codeOf(() => draft({ reason: 'refresh' }, v))).to.equal('ERR_NODE_UNAVAILABLE');
    // A repaired member cannot deal either: 3, 4 and 5 of which 4 is repaired.
    const w = view();
    w.nodes[0] = { ...w.nodes[0]!, connected: false, identity: null, epoch: null };
    w.nodes[1] = { ...w.nodes[1]!, connected: false, identity: null, epoch: null };
    const fresh = strangerIdentity(4);
    w.nodes[3] = { ...w.nodes[3]!, identity: fresh, epoch: null };
    expect(codeOf(() => draft({ reason: 'repair', node: 4 }, w))).to.equal('ERR_NODE_UNAVAILABLE');
  });

  it('no epoch yet, or a member whose keys are unknown: refused with the way out', () => {
    expect(codeOf(() => draft({ reason: 'refresh' }, view({ epoch: null })))).to.equal(
      'ERR_VALIDATION',
    );
    const v = view();
    v.epoch = { ...v.epoch!, committee: [1, 2, 3, 4].map(member), members: [1, 2, 3, 4, 5] };
    expect(codeOf(() => draft({ reason: 'refresh' }, v))).to.equal('ERR_NODE_UNAVAILABLE');
  });

  it('key generations: the epoch committee, else the first committee, else every node', () => {
    const withEpoch = keyCommittee(view(), [1, 2, 3]);
    expect(ids(withEpoch.committee)).to.deep.equal([1, 2, 3, 4, 5]);
    expect(withEpoch).to.include({ threshold: 3, epoch: 3 });
    const first = keyCommittee(view({ epoch: null }), [1, 2, 3, 4, 5]);
    expect(ids(first.committee)).to.deep.equal([1, 2, 3, 4, 5]);
    expect(first.threshold).to.equal(undefined);
    expect(ids(keyCommittee(view({ epoch: null }), undefined).committee)).to.deep.equal([
      1, 2, 3, 4, 5, 6, 7,
    ]);
  });
});

describe('cli/status: lines', () => {
  it('shows the epoch, members with their epochs, spares, removed nodes, and key epochs', () => {
    const v = view();
    v.nodes[3] = { ...v.nodes[3]!, connected: false, identity: null, epoch: null };
    // A member that lost its data, and a node removed after epoch 2: neither holds epoch 3.
    v.nodes[4] = { ...v.nodes[4]!, epoch: 2, lostData: true };
    v.nodes[6] = { ...v.nodes[6]!, epoch: 2 };
    const lines = statusLines(v, [
      {
        tenant: 'acme',
        versions: [
          { version: 1, threshold: 3, epoch: 3 },
          { version: 2, threshold: 3, epoch: 3 },
        ],
      },
      { tenant: 'beta', error: { code: 'ERR_UNKNOWN_TENANT', message: 'gone' } },
      {
        tenant: 'gamma',
        versions: [
          { version: 1, threshold: 3, epoch: 1, retired: true },
          { version: 2, threshold: 3, epoch: 3 },
        ],
      },
    ]);
    expect(lines).to.deep.equal([
      `cluster ${TEST_CLUSTER_ID}`,
      'epoch   3  threshold 3 of 5  committee 1,2,3,4,5',
      'node 1  member  up  epoch 3',
      'node 2  member  up  epoch 3',
      'node 3  member  up  epoch 3',
      'node 4  member  DOWN  epoch -',
      'node 5  member  up  LOST ITS DATA (new identity keys, no shares): kmaas committee repair 5',
      'node 6  spare  up',
      'node 7  removed  up',
      'tenant acme  key versions 1 (threshold 3, epoch 3), 2 (threshold 3, epoch 3)',
      'tenant beta  key versions unknown (ERR_UNKNOWN_TENANT: gone)',
      'tenant gamma  key versions 1 (retired), 2 (threshold 3, epoch 3)',
    ]);
    expect(statusLines(view({ epoch: null }), [])).to.deep.equal([
      `cluster ${TEST_CLUSTER_ID}`,
      'epoch   none yet: the first key generation makes epoch 1',
      ...[1, 2, 3, 4, 5].map((id) => `node ${id}  up  epoch 3`),
      'node 6  up  epoch -',
      'node 7  up  epoch -',
      'no tenants yet: create one with `kmaas tenant create <tenant>`',
    ]);
  });
});

describe('cli: kmaas committee and status against the fake coordinator', function () {
  this.timeout(30_000);
  let fake: FakeCoordinator;
  let dir: string;
  let keyFiles: string[];

  const kmaas = async (...args: string[]) => {
    let stdout = '';
    let stderr = '';
    const io = {
      stdout: (t: string) => void (stdout += t),
      stderr: (t: string) => void (stderr += t),
      cwd: dir,
      home: dir,
    };
    const code = await run(['--cluster', join(dir, 'cluster.json'), ...args], io);
    return { code, stdout, stderr };
  };

  beforeEach(async () => {
    fake = new FakeCoordinator();
    await fake.start();
    fake.nodeIds.push(6, 7);
    dir = await mkdtemp(join(tmpdir(), 'kmaas-committee-'));
    keyFiles = await writeOperatorKeys(dir);
    await writeFile(join(dir, 'operators.json'), JSON.stringify(OPERATOR_SET));
    await writeFile(
      join(dir, 'cluster.json'),
      JSON.stringify({
        url: fake.url,
        adminToken: fake.adminToken,
        pins: 'pins.json',
        operators: 'operators.json',
        operatorKeys: keyFiles.slice(0, 2),
        committee: [1, 2, 3, 4, 5],
        spareNodes: [6, 7],
      }),
    );
  });

  afterEach(async () => {
    await fake.close();
    await rm(dir, { recursive: true, force: true });
  });

  const keysOf = (nodes: number[]) => nodes.map((node) => ({ node, ...fake.identity(node) }));

  it('committee add signs with the dev keys, submits, and follows the job to the end', async () => {
    fake.epoch = { epoch: 1, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    const r = await kmaas('committee', 'add', '6', '7', '--threshold', '4');
    expect(r.code, r.stderr).to.equal(0);
    expect(fake.proposals).to.have.length(1);
    const p = parseProposal(fake.proposals[0]);
    expect(() => verifyQuorum(p, POLICY, Date.now())).to.not.throw();
    expect(p).to.include({ operation: 'committee.reshare', epoch: 2, threshold: 4, reason: 'add' });
    expect(p.committee).to.deep.equal(keysOf([1, 2, 3, 4, 5, 6, 7]));
    expect(p.previous).to.deep.equal(fake.epoch);
    const progress = r.stderr.split('\n').filter((l) => l.startsWith('['));
    expect(progress.at(-1)).to.equal(`[${'#'.repeat(20)}] done`);
    expect(progress.some((l) => / 2\/7 deal 1\/2$/.test(l))).to.equal(true);
    expect(r.stdout.trim()).to.equal('epoch 2: nodes 1, 2, 3, 4, 5, 6, 7, threshold 4');
  });

  it('a failed reshare job: exit 1 with its error', async () => {
    fake.epoch = { epoch: 1, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    fake.reshareScript = () => [
      { state: 'active', progress: { phase: 'vote', done: 3, total: 5 } },
      { state: 'failed', error: { code: 'ERR_RESHARE_VOTE', message: 'node 4 voted otherwise' } },
    ];
    const r = await kmaas('committee', 'refresh');
    expect(r.code).to.equal(1);
    expect(r.stderr.trimEnd().split('\n').at(-1)).to.equal(
      'error ERR_RESHARE_VOTE: node 4 voted otherwise',
    );
  });

  it('refuses locally what the nodes would refuse, submitting nothing', async () => {
    fake.epoch = { epoch: 1, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    const r = await kmaas('committee', 'add', '6', '7');
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(
      /^error ERR_BAD_THRESHOLD: 3 of 7 is not a majority .*: use at least 4$/m,
    );
    expect(fake.proposals).to.have.length(0);
  });

  it('--no-wait names kmaas job <id>, which follows the job to its end', async () => {
    fake.epoch = { epoch: 1, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    fake.reshareScript = (p) => [
      { state: 'waiting' },
      { state: 'active', progress: { phase: 'prepare', done: 1, total: 7 } },
      { state: 'completed', result: { epoch: p.epoch, lagging: [7] } },
    ];
    const queued = await kmaas('committee', 'add', '6', '7', '--threshold', '4', '--no-wait');
    expect(queued.code, queued.stderr).to.equal(0);
    const id = queued.stdout.trim();
    expect(queued.stderr).to.include(`follow it with kmaas job ${id}`);
    const followed = await kmaas('job', id);
    expect(followed.code, followed.stderr).to.equal(0);
    const progress = followed.stderr.split('\n').filter((l) => l.startsWith('['));
    expect(progress.some((l) => / 3\/7 prepare 1\/7$/.test(l))).to.equal(true);
    expect(progress.at(-1)).to.equal(`[${'#'.repeat(20)}] done`);
    expect(followed.stdout.trim().split('\n')).to.deep.equal([
      `job ${id}: committee.reshare, completed`,
      'node(s) 7 missed the commit or the finish: each gets it when it reconnects, or erases its old shares on its own timer',
    ]);
    const unknown = await kmaas('job', 'no-such-job');
    expect(unknown.code).to.equal(1);
    expect(unknown.stderr).to.match(/^error ERR_UNKNOWN_JOB: /m);
  });

  it('job <id> follows through a coordinator restart, saying once that it waits for it', async () => {
    fake.epoch = { epoch: 1, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    const id = (await kmaas('committee', 'refresh', '--no-wait')).stdout.trim();
    await fake.pause();
    const following = kmaas('job', id);
    // Long enough for several polls (one each 500 ms) to be refused.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await fake.resume();
    const r = await following;
    expect(r.code, r.stderr).to.equal(0);
    const waits = r.stderr.split('\n').filter((l) => l.startsWith('waiting for the coordinator'));
    expect(waits).to.have.length(1);
    expect(waits[0]).to.include(`following job ${id} again once it answers, for up to 30 s`);
    expect(r.stdout.trim()).to.equal(`job ${id}: committee.reshare, completed`);
  });

  it('job --no-follow says where a job stands; a failed job exits 1 with its error', async () => {
    fake.epoch = { epoch: 1, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    fake.reshareScript = () => [
      { state: 'active', progress: { phase: 'vote', done: 3, total: 5 } },
      { state: 'failed', error: { code: 'ERR_RESHARE_VOTE', message: 'node 4 voted otherwise' } },
    ];
    const id = (await kmaas('committee', 'refresh', '--no-wait')).stdout.trim();
    const running = await kmaas('job', id, '--no-follow');
    expect(running.code, running.stderr).to.equal(0);
    expect(running.stderr).to.include(`job ${id}: committee.reshare, active`);
    expect(running.stderr).to.match(/ 4\/7 vote 3\/5$/m);
    const failed = await kmaas('job', id, '--no-follow');
    expect(failed.code).to.equal(1);
    expect(failed.stderr.trimEnd().split('\n').at(-1)).to.equal(
      'error ERR_RESHARE_VOTE: node 4 voted otherwise',
    );
  });

  it('a node named twice is refused; t of t nodes is signed with a warning', async () => {
    fake.epoch = { epoch: 1, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    const twice = await kmaas('committee', 'remove', '1', '1');
    expect(twice.code).to.equal(1);
    expect(twice.stderr).to.match(/^error ERR_VALIDATION: .*node 1 is named twice/m);
    expect(fake.proposals).to.have.length(0);
    const all = await kmaas('committee', 'remove', '5', '--threshold', '4');
    expect(all.code, all.stderr).to.equal(0);
    expect(all.stderr).to.include('warning: threshold 4 of 4 nodes: every member must be up');
    expect(fake.proposals).to.have.length(1);
  });

  it('--expires sets how long the proposal is valid', async () => {
    fake.epoch = { epoch: 1, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    const before = Date.now();
    const r = await kmaas('committee', 'refresh', '--out', 'r.json', '--expires', '2h');
    expect(r.code, r.stderr).to.equal(0);
    const p = parseProposal(JSON.parse(await readFile(join(dir, 'r.json'), 'utf8')));
    const left = Date.parse(p.expiresAt) - before;
    expect(left).to.be.within(2 * 3_600_000 - 60_000, 2 * 3_600_000 + 60_000);
    const bad = await kmaas('committee', 'refresh', '--out', 's.json', '--expires', 'soon');
    expect(bad.code).to.equal(1);
    expect(bad.stderr).to.match(/^error ERR_VALIDATION: .*expected a duration/m);
    // Nodes refuse a proposal valid for more than 30 days: refused before anything is signed.
    const long = await kmaas('committee', 'refresh', '--out', 'l.json', '--expires', '31d');
    expect(long.code).to.equal(1);
    expect(long.stderr).to.match(/^error ERR_VALIDATION: .*at most 30d/m);
    expect(existsSync(join(dir, 'l.json'))).to.equal(false);
  });

  it('--out writes the proposal unsigned and submits nothing', async () => {
    fake.epoch = { epoch: 2, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    const r = await kmaas('committee', 'threshold', '4', '--out', 'p.json');
    expect(r.code, r.stderr).to.equal(0);
    const p = parseProposal(JSON.parse(await readFile(join(dir, 'p.json'), 'utf8')));
    expect(p.signatures).to.deep.equal([]);
    expect(p).to.include({ operation: 'committee.reshare', epoch: 3, threshold: 4 });
    expect(fake.proposals).to.have.length(0);

    // Each operator signs it, then anyone submits it: the reshare job is followed to the end.
    // Without a quorum (2 of the cluster file's operator set) nothing is sent.
    for (const key of keyFiles.slice(0, 2)) {
      const early = await kmaas('proposal', 'submit', 'p.json');
      expect(early.code).to.equal(1);
      expect(early.stderr.trimEnd().split('\n').at(-1)).to.match(
        /^error ERR_PROPOSAL_QUORUM: proposal \w+ has [01] valid operator signature\(s\), 2 required \(operator set .*operators\.json\); every node would refuse it: each operator signs it with kmaas proposal sign p\.json --key <key file>, or pass --force/,
      );
      expect(fake.proposals).to.have.length(0);
      const signed = await kmaas('proposal', 'sign', 'p.json', '--key', key);
      expect(signed.code, signed.stderr).to.equal(0);
    }
    const shown = await kmaas('proposal', 'show', 'p.json');
    expect(shown.stdout).to.include('  from       epoch 2 threshold 3 nodes 1,2,3,4,5');
    expect(shown.stdout).to.include('  to         epoch 3 threshold 4 (threshold)');
    expect(shown.stdout).to.include('quorum reached');
    const submitted = await kmaas('proposal', 'submit', 'p.json');
    expect(submitted.code, submitted.stderr).to.equal(0);
    expect(fake.proposals).to.have.length(1);
    expect(submitted.stdout.trim()).to.equal('epoch 3: nodes 1, 2, 3, 4, 5, threshold 4');
  });

  it('proposal submit --force sends a proposal the operator set says lacks a quorum', async () => {
    fake.epoch = { epoch: 2, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    expect((await kmaas('committee', 'refresh', '--out', 'p.json')).code).to.equal(0);
    const forced = await kmaas('proposal', 'submit', 'p.json', '--force', '--no-wait');
    expect(forced.code, forced.stderr).to.equal(0);
    expect(fake.proposals).to.have.length(1);
  });

  it('proposal create --operation committee.refresh --every: the standing refresh proposal', async () => {
    fake.epoch = { epoch: 2, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    const before = Date.now();
    const r = await kmaas(
      'proposal',
      'create',
      '--operation',
      'committee.refresh',
      '--every',
      '86400',
      '--expires',
      '30d',
      '--out',
      'refresh.json',
    );
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stderr).to.include('  refresh    at most once every 86400 s, threshold 3 (standing)');
    const p = parseProposal(JSON.parse(await readFile(join(dir, 'refresh.json'), 'utf8')));
    expect(p).to.include({ operation: 'committee.refresh', threshold: 3, everySeconds: 86400 });
    expect(p.committee).to.deep.equal(keysOf([1, 2, 3, 4, 5]));
    for (const field of ['tenant', 'version', 'epoch', 'previous', 'reason'] as const) {
      expect(p[field], field).to.equal(undefined);
    }
    const expires = Date.parse(p.expiresAt) - before;
    expect(expires).to.be.within(30 * 86_400_000, 30 * 86_400_000 + 60_000);
    expect(fake.proposals).to.have.length(0);

    // The operators sign it as any other; then it is a valid proposal of the cluster.
    for (const key of keyFiles.slice(0, 2)) {
      const signed = await kmaas('proposal', 'sign', 'refresh.json', '--key', key);
      expect(signed.code, signed.stderr).to.equal(0);
    }
    const signed = parseProposal(JSON.parse(await readFile(join(dir, 'refresh.json'), 'utf8')));
    expect(() => verifyQuorum(signed, POLICY, Date.now())).to.not.throw();
  });

  it('proposal create refuses what an operation does not take, writing nothing', async () => {
    fake.epoch = { epoch: 2, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    const create = (...args: string[]) =>
      kmaas('proposal', 'create', '--out', 'p.json', '--operation', ...args);
    const lastLine = (r: { stderr: string }) => r.stderr.trimEnd().split('\n').at(-1);
    const cases: [string[], RegExp][] = [
      [['committee.refresh'], /^error ERR_VALIDATION: committee.refresh needs --every/],
      [['committee.refresh', '--every', '59'], /^error ERR_VALIDATION: .*at least 60/],
      [
        ['committee.refresh', '--every', '60', '--tenant', 'acme'],
        /^error ERR_VALIDATION: .*--tenant/,
      ],
      [['committee.refresh', '--every', '60', '--threshold', '4'], /^error ERR_BAD_THRESHOLD: /],
      [['tenant.create'], /^error ERR_VALIDATION: tenant.create needs --tenant/],
      [['tenant.create', '--tenant', 'x', '--every', '60'], /^error ERR_VALIDATION: .*--every/],
      [['committee.reshare'], /^error ERR_VALIDATION: .*kmaas committee add/],
    ];
    for (const [args, expected] of cases) {
      const r = await create(...args);
      expect(r.code, args.join(' ')).to.equal(1);
      expect(lastLine(r), args.join(' ')).to.match(expected);
    }
    fake.epoch = null;
    const r = await create('committee.refresh', '--every', '60');
    expect(lastLine(r)).to.match(/^error ERR_VALIDATION: the cluster has no committee epoch yet/);
    const written = await readFile(join(dir, 'p.json'), 'utf8').catch(() => undefined);
    expect(written).to.equal(undefined);
  });

  it('tenant create without an epoch proposes the first committee, spares left out', async () => {
    fake.epoch = null;
    const r = await kmaas('tenant', 'create', 'gamma');
    expect(r.code, r.stderr).to.equal(0);
    const p = fake.proposals[0]!;
    expect(ids(p.committee)).to.deep.equal([1, 2, 3, 4, 5]);
    expect(p.threshold).to.equal(3);
    expect(p.epoch).to.equal(undefined);
  });

  it('tenant rotate uses the epoch committee and threshold, names the epoch, and pins', async () => {
    fake.epoch = { epoch: 2, threshold: 4, committee: keysOf([1, 2, 3, 4, 5, 6, 7]) };
    const first = fake.addKey('delta', 1, 4);
    await writeFile(
      join(dir, 'pins.json'),
      JSON.stringify({ pins: { delta: { '1': first.keyPackage.groupKey } } }),
    );
    const r = await kmaas('tenant', 'rotate', 'delta');
    expect(r.code, r.stderr).to.equal(0);
    const p = fake.proposals[0]!;
    expect(p).to.include({ operation: 'key.rotate', tenant: 'delta', version: 2, epoch: 2 });
    expect(p.threshold).to.equal(4);
    expect(ids(p.committee)).to.deep.equal([1, 2, 3, 4, 5, 6, 7]);
    const pins = JSON.parse(await readFile(join(dir, 'pins.json'), 'utf8')) as {
      pins: Record<string, Record<string, string>>;
    };
    expect(pins.pins.delta!['2']).to.equal(fake.keys.get('delta/2')!.keyPackage.groupKey);

    const retire = await kmaas('tenant', 'retire', 'delta', '--key-version', '1');
    expect(retire.code, retire.stderr).to.equal(0);
    expect(fake.proposals[1]).to.include({ operation: 'key.retire', tenant: 'delta', version: 1 });
  });

  it('tenant create and rotate name a member that lost its data and the repair, signing nothing', async () => {
    const committee = keysOf([1, 2, 3, 4, 5]);
    // Node 3 records other keys in the epoch than it reports now: it lost its data.
    committee[2] = { ...strangerIdentity(3), node: 3 };
    fake.epoch = { epoch: 2, threshold: 3, committee };
    fake.addKey('zeta', 1, 3);
    for (const args of [
      ['tenant', 'create', 'eta'],
      ['tenant', 'rotate', 'zeta'],
    ]) {
      const r = await kmaas(...args);
      expect(r.code, args.join(' ')).to.equal(1);
      expect(r.stderr.trimEnd().split('\n').at(-1), args.join(' ')).to.equal(
        'error ERR_PROPOSAL_MISMATCH: node 3 of the committee reports other identity keys than the committee records: it lost its data, and a new key needs every member; kmaas committee repair 3 first',
      );
    }
    expect(fake.proposals).to.have.length(0);
  });

  it('tenant retire refuses an unknown or retired version, and the last live one without --last', async () => {
    fake.epoch = { epoch: 2, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    fake.addKey('eps', 1, 3);
    fake.addKey('eps', 2, 3);
    const refusal = async (args: string[], expected: RegExp) => {
      const r = await kmaas('tenant', 'retire', 'eps', ...args);
      expect(r.code, args.join(' ')).to.equal(1);
      expect(r.stderr.trimEnd().split('\n').at(-1), args.join(' ')).to.match(expected);
    };
    await refusal(
      ['--key-version', '99'],
      /^error ERR_UNKNOWN_KEY_VERSION: tenant eps has no key version 99 \(its versions: 1, 2\)/,
    );
    expect(fake.proposals).to.have.length(0);

    const first = await kmaas('tenant', 'retire', 'eps', '--key-version', '1');
    expect(first.code, first.stderr).to.equal(0);
    expect(fake.proposals).to.have.length(1);
    await refusal(['--key-version', '1'], /^error ERR_KEY_RETIRED: .*already retired/);
    await refusal(
      ['--key-version', '2'],
      /^error ERR_LAST_KEY_VERSION: version 2 is tenant eps's last live key version: .*--last/,
    );
    expect(fake.proposals).to.have.length(1);

    const last = await kmaas('tenant', 'retire', 'eps', '--key-version', '2', '--last');
    expect(last.code, last.stderr).to.equal(0);
    expect(fake.proposals[1]).to.include({ operation: 'key.retire', tenant: 'eps', version: 2 });
  });

  it('status prints the epoch, each node as member or spare, and key epochs', async () => {
    fake.epoch = { epoch: 2, threshold: 3, committee: keysOf([1, 2, 3, 4, 5]) };
    fake.down.add(4);
    fake.addKey('acme', 1, 3);
    const r = await kmaas('status');
    expect(r.code, r.stderr).to.equal(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.slice(0, 2)).to.deep.equal([
      `cluster ${TEST_CLUSTER_ID}`,
      'epoch   2  threshold 3 of 5  committee 1,2,3,4,5',
    ]);
    expect(lines.filter((l) => l.startsWith('node '))).to.deep.equal([
      'node 1  member  up  epoch 2  ws://node-1',
      'node 2  member  up  epoch 2  ws://node-2',
      'node 3  member  up  epoch 2  ws://node-3',
      'node 4  member  DOWN  epoch -  ws://node-4',
      'node 5  member  up  epoch 2  ws://node-5',
      'node 6  spare  up  ws://node-6',
      'node 7  spare  up  ws://node-7',
    ]);
    expect(lines.at(-1)).to.equal('tenant acme  key version 1 (threshold 3, epoch 1)');
  });
});
