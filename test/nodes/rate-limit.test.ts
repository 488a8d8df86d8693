/**
 * The node's own rate limit (nodes/rate-limit.ts, DESIGN.md section 4) over the real WebSocket:
 * a burst past the budget of one (tenant, subject) is refused with ERR_RATE_LIMITED and the wait,
 * other tenants keep their own budget, the budget refills with its window, and requests the
 * handler refuses for their credential cost nothing. The subject is the access token's `sub`. The window is 1 s so that refilling is quick.
 */
import { expect } from 'chai';
import { Point, toB64 } from '../../shared/encoding.ts';
import type { NodeReply } from '../../shared/messages.ts';
import { ElementRateLimit } from '../../nodes/rate-limit.ts';
import { startNode, type NodeHandle } from '../../nodes/server.ts';
import type { TestUser } from '../helpers/oidc.ts';
import {
  evaluateBody,
  ISSUER,
  NodeClient,
  nodeConfig,
  randomSecret,
  removeDir,
  silentLogger,
  tempDir,
} from './helpers.ts';

const ELEMENT = toB64(Point.BASE.toBytes());
const POINTS = 10;

function code(reply: NodeReply): string {
  return reply.ok ? 'ok' : reply.error.code;
}

describe('node rate limit', () => {
  let dir: string;
  let node: NodeHandle;
  let client: NodeClient;

  beforeEach(async () => {
    dir = await tempDir();
    node = await startNode(nodeConfig(1, dir, randomSecret()), silentLogger(), {
      rateLimit: new ElementRateLimit({ points: POINTS, durationSeconds: 1 }),
    });
    client = await NodeClient.connect(node.url);
  });

  afterEach(async () => {
    await client.close();
    await node.close();
    await removeDir(dir);
  });

  // No key is installed: a request the limit lets through reaches the handler, which refuses
  // it with ERR_UNKNOWN_TENANT. That is the "let through" signal here.
  const users = new Map<string, TestUser>();
  before(async () => {
    for (const tenant of ['acme', 'globex']) users.set(tenant, await ISSUER.user(tenant, 'alice'));
  });

  async function evaluate(tenant: string, elements: number, token?: string): Promise<NodeReply> {
    const blinded = Array.from({ length: elements }, () => ELEMENT);
    const body = await evaluateBody(users.get(tenant)!, tenant, 1, blinded);
    if (token !== undefined) body.auth.token = token;
    return client.request('evaluate', body);
  }

  it('refuses a burst past the budget with ERR_RATE_LIMITED and retryAfterSeconds', async () => {
    expect(code(await evaluate('acme', 6))).to.equal('ERR_UNKNOWN_TENANT');
    expect(code(await evaluate('acme', 4))).to.equal('ERR_UNKNOWN_TENANT');
    const refused = await evaluate('acme', 1);
    expect(code(refused)).to.equal('ERR_RATE_LIMITED');
    if (refused.ok) throw new Error('expected a refusal');
    expect(refused.error.details).to.deep.equal({ retryAfterSeconds: 1 });
  });

  it('counts each tenant on its own', async () => {
    expect(code(await evaluate('acme', POINTS))).to.equal('ERR_UNKNOWN_TENANT');
    expect(code(await evaluate('acme', 1))).to.equal('ERR_RATE_LIMITED');
    expect(code(await evaluate('globex', POINTS))).to.equal('ERR_UNKNOWN_TENANT');
  });

  it('refills when the window ends', async () => {
    expect(code(await evaluate('acme', POINTS))).to.equal('ERR_UNKNOWN_TENANT');
    const refused = await evaluate('acme', 1);
    expect(code(refused)).to.equal('ERR_RATE_LIMITED');
    const wait = refused.ok ? 0 : (refused.error.details?.retryAfterSeconds as number);
    await new Promise((resolve) => setTimeout(resolve, wait * 1000 + 50));
    expect(code(await evaluate('acme', POINTS))).to.equal('ERR_UNKNOWN_TENANT');
  });

  it('charges nothing for a request refused for its credential', async () => {
    for (let i = 0; i < 3; i++) {
      expect(code(await evaluate('acme', POINTS, 'not.a-token.at-all'))).to.equal(
        'ERR_TOKEN_MALFORMED',
      );
    }
    expect(code(await evaluate('acme', POINTS))).to.equal('ERR_UNKNOWN_TENANT');
  });
});

describe('ElementRateLimit', () => {
  it('counts each subject on its own', async () => {
    const limit = new ElementRateLimit({ points: POINTS, durationSeconds: 1 });
    const alice = 'alice';
    const bob = 'alice:acme';
    expect(await limit.take('acme', alice, POINTS)).to.equal(undefined);
    expect((await limit.take('acme', alice, 1))?.code).to.equal('ERR_RATE_LIMITED');
    expect(await limit.take('acme', bob, POINTS)).to.equal(undefined);
  });

  it('does nothing when the budget is 0', async () => {
    const limit = ElementRateLimit.perMinute(0);
    expect(limit.enabled).to.equal(false);
    expect(await limit.take('acme', 'x', 1_000_000)).to.equal(undefined);
  });
});
