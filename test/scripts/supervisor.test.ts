/**
 * scripts/lib/supervisor.ts with fake processes and a fake clock: a dead process is started
 * again and said so; one that dies more often than allowed within a minute is given up on, said
 * once; restarts older than a minute no longer count; nothing is restarted after stop().
 */
import { expect } from 'chai';
import { Supervisor, type Supervised } from '../../scripts/lib/supervisor.ts';

function fake(name: string) {
  let alive = true;
  let pid = 100;
  const p = {
    starts: 0,
    kill: () => void (alive = false),
    failNextStart: false,
    item: {
      name,
      running: () => alive,
      pid: () => pid,
      restart: () => {
        p.starts++;
        if (p.failNextStart) {
          p.failNextStart = false;
          return Promise.reject(new Error('port in use'));
        }
        alive = true;
        pid++;
        return Promise.resolve();
      },
    } satisfies Supervised,
  };
  return p;
}

describe('scripts/lib/supervisor (fake processes, fake clock)', () => {
  it('starts a dead process again and says so; leaves live ones alone', async () => {
    const a = fake('node 1');
    const b = fake('node 2');
    const said: string[] = [];
    const s = new Supervisor(
      () => [a.item, b.item],
      (l) => said.push(l),
      { now: () => 0 },
    );
    await s.check();
    expect(said).to.deep.equal([]);
    b.kill();
    await s.check();
    expect([a.starts, b.starts]).to.deep.equal([0, 1]);
    expect(said).to.deep.equal([
      'node 2 is not running: starting it again',
      'node 2 is back (pid 101)',
    ]);
  });

  it('gives up on a process that dies more often than allowed in a minute, and says so once', async () => {
    let now = 0;
    const a = fake('coordinator');
    const said: string[] = [];
    const s = new Supervisor(
      () => [a.item],
      (l) => said.push(l),
      { maxPerMinute: 2, now: () => now },
    );
    for (let i = 0; i < 4; i++) {
      a.kill();
      await s.check();
      now += 1000;
    }
    expect(a.starts).to.equal(2);
    expect(said.filter((l) => /not restarting/.test(l))).to.deep.equal([
      'coordinator died 3 times within a minute: not restarting it; see its log',
    ]);
  });

  it('restarts a process again a minute after its last restarts; reports a failed start', async () => {
    let now = 0;
    const a = fake('node 3');
    const said: string[] = [];
    const s = new Supervisor(
      () => [a.item],
      (l) => said.push(l),
      { maxPerMinute: 1, now: () => now },
    );
    a.kill();
    await s.check();
    now += 61_000;
    a.kill();
    a.failNextStart = true;
    await s.check();
    expect(said.at(-1)).to.equal('node 3 failed to start: port in use');
    now += 61_000;
    await s.check();
    expect(a.starts).to.equal(3);
    expect(a.item.running()).to.equal(true);
  });

  it('restarts nothing once stopped', async () => {
    const a = fake('identity provider');
    const s = new Supervisor(
      () => [a.item],
      () => undefined,
      { now: () => 0 },
    );
    s.stop();
    a.kill();
    s.start();
    await s.check();
    expect(a.starts).to.equal(0);
  });
});
