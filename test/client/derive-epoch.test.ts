/**
 * Client derivation across a reshare (PLAN.md "Evaluate with epochs", client side): when the
 * evaluate answer names another epoch than the cached key package, the SDK fetches the package
 * again, checks it against the pin on the group key (which a reshare keeps), and verifies the
 * partials against it; the keys stay the same. The next epoch's shares are made in the test with
 * plain Shamir resharing (test/helpers/plain-reshare.ts), not by any code under test.
 */
import { expect } from 'chai';
import { CoordinatorHttp } from '../../client/http.ts';
import { deriveKeys } from '../../client/derive.ts';
import { MemoryPinStore } from '../../client/index.ts';
import { KeyPackages } from '../../client/key-packages.ts';
import { plainReshare } from '../helpers/plain-reshare.ts';
import { FakeCoordinator, type FakeKey } from './helpers/fake-coordinator.ts';
import { expectCode } from './helpers/streams.ts';

const DOCS = ['invoice-1.pdf', 'invoice-2.pdf', 'contract.docx', 'notes.txt'];

describe('client/derive: epochs', () => {
  let fake: FakeCoordinator;
  let key: FakeKey;

  const context = () => {
    const http = new CoordinatorHttp({ baseUrl: fake.url });
    const pins = new MemoryPinStore([
      { tenant: 'acme', version: 1, groupKey: key.keyPackage.groupKey },
    ]);
    // One document per batch and four batches at once: they all meet the new epoch together.
    return {
      http,
      packages: new KeyPackages({ http, pins }),
      auth: fake.clientAuth,
      maxBatch: 1,
      concurrency: 4,
    };
  };

  /** Key 1 of acme reshared from 1-5 (t = 3) to 2-7 with t = 4, dealt by nodes 1, 3 and 5. */
  const reshare = (): FakeKey => {
    const dealers = key.shares.filter((s) => [1, 3, 5].includes(s.id));
    const next = plainReshare(
      { tenant: 'acme', version: 1, epoch: 1 },
      dealers,
      4,
      [2, 3, 4, 5, 6, 7],
    );
    const moved = { ...key, threshold: 4, shares: next.shares, keyPackage: next.keyPackage };
    fake.keys.set('acme/1', moved);
    return moved;
  };

  const packageFetches = () => fake.requests.filter((r) => r === 'GET /v1/tenants/acme/keys/1');
  const evaluations = () => fake.requests.filter((r) => r.endsWith('/evaluate')).length;

  beforeEach(async () => {
    fake = new FakeCoordinator();
    await fake.start();
    key = fake.addKey('acme', 1, 3);
  });

  afterEach(() => fake.close());

  it('gives the same keys after a reshare, fetching the new package once', async () => {
    const ctx = context();
    const before = await deriveKeys(ctx, 'acme', 1, DOCS);
    expect(packageFetches()).to.have.length(1);

    const moved = reshare();
    expect(moved.keyPackage.groupKey).to.equal(key.keyPackage.groupKey);
    expect(moved.keyPackage.verificationShares).to.not.deep.equal(
      key.keyPackage.verificationShares,
    );
    const after = await deriveKeys(ctx, 'acme', 1, DOCS);

    expect(after.keys).to.deep.equal(before.keys);
    expect(after.rejected).to.deep.equal([]);
    expect(after.nodes.every((n) => n >= 2 && n <= 7)).to.equal(true);
    expect(packageFetches()).to.have.length(2);
    expect((await ctx.packages.get('acme', 1)).epoch).to.equal(2);
    // Each request names the epoch of the package the client holds when it sends it.
    expect(fake.evaluateEpochs[0]).to.equal(1);
    await deriveKeys(ctx, 'acme', 1, DOCS.slice(0, 1));
    expect(fake.evaluateEpochs.at(-1)).to.equal(2);
  });

  it('refuses a new-epoch package that does not carry the pinned group key', async () => {
    const ctx = context();
    await deriveKeys(ctx, 'acme', 1, DOCS.slice(0, 1));
    // Another key altogether, served as epoch 2 of acme 1.
    const other = new FakeCoordinator().addKey('acme', 1, 3);
    const forged = { ...other, keyPackage: { ...other.keyPackage, epoch: 2 } };
    fake.keys.set('acme/1', forged);
    await expectCode(deriveKeys(ctx, 'acme', 1, DOCS.slice(0, 1)), 'ERR_PINNED_KEY_MISMATCH');
  });

  it('asks once more, then fails with ERR_EPOCH_MISMATCH, when the package stays behind', async () => {
    const ctx = context();
    await deriveKeys(ctx, 'acme', 1, DOCS.slice(0, 1));
    const before = evaluations();
    // The answers say epoch 2 while the package served is still epoch 1.
    fake.answerEpoch = () => 2;
    await expectCode(deriveKeys(ctx, 'acme', 1, DOCS.slice(0, 1)), 'ERR_EPOCH_MISMATCH');
    expect(evaluations() - before).to.equal(2);
  });

  it('succeeds on the second try when the package catches up', async () => {
    const ctx = context();
    const before = await deriveKeys(ctx, 'acme', 1, DOCS.slice(0, 1));
    // The first answer after the reshare names epoch 2 while the package served is still epoch 1;
    // by the second the coordinator serves the new package.
    const moved = reshare();
    const stale = key.keyPackage;
    let served = 0;
    fake.servePackage = (pkg) => (served++ === 0 ? stale : pkg);
    const after = await deriveKeys(ctx, 'acme', 1, DOCS.slice(0, 1));
    expect(after.keys).to.deep.equal(before.keys);
    expect((await ctx.packages.get('acme', 1)).epoch).to.equal(moved.keyPackage.epoch);
  });
});
