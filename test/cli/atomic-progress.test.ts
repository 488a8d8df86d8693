import { expect } from 'chai';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Job } from '../../client/index.ts';
import { writeStreamAtomic } from '../../cli/atomic.ts';
import { progressLine, retryLine } from '../../cli/progress.ts';

describe('cli/atomic and cli/progress', () => {
  describe('writeStreamAtomic', () => {
    let dir: string;
    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'kmaas-atomic-'));
    });
    afterEach(() => rm(dir, { recursive: true, force: true }));

    const bytes = (text: string) => Readable.from([Buffer.from(text)]);

    it('without overwrite: a new file is written, an existing one is kept (EEXIST)', async () => {
      const target = join(dir, 'out');
      expect(await writeStreamAtomic(target, bytes('first'), { overwrite: false })).to.equal(5);
      expect(await readFile(target, 'utf8')).to.equal('first');
      let caught: unknown;
      try {
        await writeStreamAtomic(target, bytes('second'), { overwrite: false });
      } catch (err) {
        caught = err;
      }
      expect((caught as NodeJS.ErrnoException).code).to.equal('EEXIST');
      expect(await readFile(target, 'utf8')).to.equal('first');
      expect(await readdir(dir)).to.deep.equal(['out']);
    });

    it('with overwrite (the default): the file is replaced', async () => {
      const target = join(dir, 'out');
      await writeFile(target, 'old');
      await writeStreamAtomic(target, bytes('new'));
      expect(await readFile(target, 'utf8')).to.equal('new');
      expect(await readdir(dir)).to.deep.equal(['out']);
    });
  });

  describe('progressLine: job progress as a person reads it', () => {
    const job = (state: string, progress: Job['progress'] = {}, error?: unknown): Job => ({
      id: '7',
      state,
      progress,
      ...(error === undefined ? {} : { error }),
    });

    it('phases of coordinator/dkg-job.ts', () => {
      expect(progressLine(job('waiting', { phase: 'round1', done: 0, total: 5 }))).to.equal(
        'queued: waiting for the coordinator to start the key generation',
      );
      expect(progressLine(job('active', { phase: 'round1', done: 0, total: 5 }))).to.equal(
        'DKG round 1/3: waiting for 5 nodes',
      );
      expect(progressLine(job('active', { phase: 'round3', done: 5, total: 5 }))).to.equal(
        'DKG round 3/3: 5 of 5 nodes',
      );
      expect(progressLine(job('active', { phase: 'round2' }))).to.equal('DKG round 2/3');
      expect(progressLine(job('active', { phase: 'store', done: 0, total: 1 }))).to.equal(
        'storing the key package',
      );
      expect(progressLine(job('completed', { phase: 'store', done: 1, total: 1 }))).to.equal(
        'done',
      );
      expect(progressLine(job('failed'))).to.equal(undefined);
      expect(progressLine(job('delayed'))).to.equal('waiting to retry the key generation');
      expect(progressLine(job('active', { phase: 'mystery', done: 2, total: 4 }))).to.equal(
        'key generation running (step 2 of 4)',
      );
    });

    it('retryLine: why the last attempt failed, while the job is retried', () => {
      const error = { code: 'ERR_TOO_FEW_NODES', message: 'node 3 did not answer' };
      expect(retryLine(job('delayed', {}, error))).to.equal(
        'an attempt failed (ERR_TOO_FEW_NODES: node 3 did not answer); the coordinator retries it',
      );
      expect(retryLine(job('active'))).to.equal(undefined);
      expect(retryLine(job('failed', {}, error))).to.equal(undefined);
    });
  });
});
