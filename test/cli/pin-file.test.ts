import { expect } from 'chai';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FilePinStore } from '../../cli/pin-file.ts';
import { resolveConfig } from '../../cli/config.ts';
import { printable } from '../../cli/program.ts';
import { expectCode } from '../client/helpers/streams.ts';

describe('cli/pin-file and cli/config', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kmaas-pins-'));
  });

  afterEach(() => rm(dir, { recursive: true, force: true }));

  describe('FilePinStore', () => {
    it('creates its folder and file (mode 0600), and reads back what it wrote', async () => {
      const path = join(dir, 'sub', 'pins.json');
      const store = new FilePinStore(path);
      expect(await store.get('acme', 1)).to.equal(undefined);
      await store.set('acme', 1, 'key-1');
      await store.set('acme', 2, 'key-2');
      await store.set('beta', 1, 'key-b');
      expect(await new FilePinStore(path).get('acme', 2)).to.equal('key-2');
      expect(JSON.parse(await readFile(path, 'utf8'))).to.deep.equal({
        pins: { acme: { '1': 'key-1', '2': 'key-2' }, beta: { '1': 'key-b' } },
      });
      expect((await stat(path)).mode & 0o777).to.equal(0o600);
      expect(await readdir(join(dir, 'sub'))).to.deep.equal(['pins.json']);
    });

    it('keeps every pin when several are set at once', async () => {
      const store = new FilePinStore(join(dir, 'pins.json'));
      await Promise.all(Array.from({ length: 20 }, (_, i) => store.set('t', i + 1, `k${i + 1}`)));
      for (let i = 1; i <= 20; i++) expect(await store.get('t', i)).to.equal(`k${i}`);
    });

    it('does not mistake inherited properties for pins', async () => {
      const store = new FilePinStore(join(dir, 'pins.json'));
      await store.set('acme', 1, 'k');
      expect(await store.get('constructor', 1)).to.equal(undefined);
      expect(await store.get('acme', 'constructor' as unknown as number)).to.equal(undefined);
    });

    it('refuses (and keeps) a file that does not parse: ERR_CONFIG', async () => {
      const path = join(dir, 'pins.json');
      for (const text of ['{not json', '{"pins": {"acme": {"1": 5}}}', '[]']) {
        await writeFile(path, text);
        const store = new FilePinStore(path);
        await expectCode(store.get('acme', 1), 'ERR_CONFIG');
        await expectCode(store.set('acme', 1, 'k'), 'ERR_CONFIG');
        expect(await readFile(path, 'utf8')).to.equal(text);
      }
    });
  });

  describe('resolveConfig', () => {
    const where = () => ({ cwd: dir, home: join(dir, 'home') });

    it('defaults: no URL, pins in ~/.kmaas/pins.json', async () => {
      const c = await resolveConfig({}, where());
      expect(c).to.deep.include({
        url: undefined,
        urlFrom: undefined,
        pinsFile: join(dir, 'home', '.kmaas', 'pins.json'),
        clusterPins: undefined,
        clusterFile: undefined,
        cwd: dir,
        json: false,
        trustOnFirstUse: false,
      });
    });

    it('./data/cluster/cluster.json gives defaults; options and env (already merged by commander) win', async () => {
      const clusterDir = join(dir, 'data', 'cluster');
      await import('node:fs/promises').then((fs) => fs.mkdir(clusterDir, { recursive: true }));
      await writeFile(
        join(clusterDir, 'cluster.json'),
        JSON.stringify({
          url: 'http://c:1',
          issuer: 'http://idp:1',
          devUsers: [{ username: 'alice', password: 'pw-alice', tenant: 'acme' }],
          adminToken: 'a',
          pins: 'pins.json',
        }),
      );
      const c = await resolveConfig({}, { ...where(), env: {} });
      expect(c).to.deep.include({
        url: 'http://c:1',
        urlFrom: 'cluster',
        issuer: 'http://idp:1',
        issuerFrom: 'cluster',
        user: undefined,
        password: undefined,
        passwordFile: undefined,
        devUsers: [{ username: 'alice', password: 'pw-alice', tenant: 'acme' }],
        adminToken: 'a',
        pinsFile: join(clusterDir, 'pins.json'),
        clusterFile: join(clusterDir, 'cluster.json'),
      });
      const o = await resolveConfig(
        {
          url: 'http://o:2',
          issuer: 'http://idp:2',
          user: 'bob',
          passwordFile: 'pw.txt',
          pins: 'mine.json',
        },
        { ...where(), env: { KMAAS_PASSWORD: 'from-env' } },
      );
      expect(o).to.deep.include({
        url: 'http://o:2',
        urlFrom: 'option',
        issuer: 'http://idp:2',
        issuerFrom: 'option',
        user: 'bob',
        passwordFile: join(dir, 'pw.txt'),
        password: 'from-env',
        adminToken: 'a',
        pinsFile: join(dir, 'mine.json'),
        clusterPins: join(clusterDir, 'pins.json'),
      });
    });

    it('an explicit cluster file that is missing or malformed: ERR_CONFIG', async () => {
      const missing = await expectCode(
        resolveConfig({ cluster: 'nope.json' }, where()),
        'ERR_CONFIG',
      );
      expect(missing.message).to.equal(
        `cluster file ${join(dir, 'nope.json')} not found (\`npm run cluster\` writes ` +
          'data/cluster/cluster.json once the cluster is up: start it, or wait for it)',
      );
      await writeFile(join(dir, 'bad.json'), '{"url": 5}');
      await expectCode(resolveConfig({ cluster: 'bad.json' }, where()), 'ERR_CONFIG');
      await writeFile(join(dir, 'worse.json'), 'url=');
      await expectCode(resolveConfig({ cluster: 'worse.json' }, where()), 'ERR_CONFIG');
    });
  });

  it('printable: control characters from the coordinator cannot reach the terminal', () => {
    expect(printable('ok\u001b[2J\u0007 text\u009b')).to.equal('ok?[2J? text?');
    expect(printable('tab\tand\nnewline')).to.equal('tab\tand\nnewline');
  });
});
