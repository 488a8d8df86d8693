/**
 * shared/proposal.ts: the quorum check every node makes, as a table of "this proposal, this
 * policy, gives this code", and the properties of the signed bytes and the id.
 */
import { expect } from 'chai';
import { ed25519 } from '@noble/curves/ed25519.js';
import { toB64 } from '../../shared/encoding.ts';
import { KmaasError, type ErrorCode } from '../../shared/errors.ts';
import {
  draftProposal,
  parseProposal,
  proposalId,
  signingBytes,
  verifyQuorum,
  type Proposal,
} from '../../shared/proposal.ts';
import {
  OPERATOR_KEYS,
  POLICY,
  signWith,
  strangerIdentity,
  TEST_CLUSTER_ID,
} from '../helpers/operators.ts';

const NOW = Date.parse('2030-01-01T00:00:00Z');
const committee = [1, 2, 3].map(strangerIdentity);

function unsigned(overrides: Partial<Parameters<typeof draftProposal>[0]> = {}): Proposal {
  return draftProposal({
    cluster: TEST_CLUSTER_ID,
    operation: 'tenant.create',
    tenant: 'acme',
    version: 1,
    threshold: 2,
    committee,
    expiresAt: new Date(NOW + 3_600_000),
    ...overrides,
  });
}

function expectRefused(p: Proposal, code: ErrorCode, now = NOW): KmaasError {
  let thrown: unknown;
  try {
    verifyQuorum(p, POLICY, now);
  } catch (err) {
    thrown = err;
  }
  expect(thrown, `expected ${code}`).to.be.instanceOf(KmaasError);
  expect((thrown as KmaasError).code, (thrown as KmaasError).message).to.equal(code);
  return thrown as KmaasError;
}

const stranger = ed25519.utils.randomSecretKey();

describe('shared/proposal: verifyQuorum', () => {
  it('a proposal signed by 2 of 3 known operators passes, naming both', () => {
    const p = signWith(unsigned(), [0, 2]);
    expect(verifyQuorum(p, POLICY, NOW)).to.deep.equal({
      id: proposalId(p),
      signers: ['operator-1', 'operator-3'],
    });
  });

  const table: [string, () => Proposal, ErrorCode, number?][] = [
    ['no signature at all', () => unsigned(), 'ERR_PROPOSAL_QUORUM'],
    ['1 of the 2 required signatures', () => signWith(unsigned(), [1]), 'ERR_PROPOSAL_QUORUM'],
    [
      'one operator signing twice counts once',
      () => {
        const once = signWith(unsigned(), [0]);
        return { ...once, signatures: [...once.signatures, ...once.signatures] };
      },
      'ERR_PROPOSAL_QUORUM',
    ],
    [
      'an unknown operator does not count',
      () => {
        const p = signWith(unsigned(), [0]);
        return {
          ...p,
          signatures: [
            ...p.signatures,
            { operator: 'mallory', signature: toB64(ed25519.sign(signingBytes(p), stranger)) },
          ],
        };
      },
      'ERR_PROPOSAL_QUORUM',
    ],
    [
      "a stranger's signature under a known operator's name does not count",
      () => {
        const p = signWith(unsigned(), [0]);
        const forged = toB64(ed25519.sign(signingBytes(p), stranger));
        return {
          ...p,
          signatures: [...p.signatures, { operator: 'operator-2', signature: forged }],
        };
      },
      'ERR_PROPOSAL_QUORUM',
    ],
    [
      'signed for another cluster',
      () => signWith(unsigned({ cluster: 'another-cluster' })),
      'ERR_PROPOSAL_CLUSTER',
    ],
    ['expired', () => signWith(unsigned()), 'ERR_PROPOSAL_EXPIRED', NOW + 3_600_000],
    [
      'edited after signing (threshold)',
      () => ({ ...signWith(unsigned()), threshold: 3 }),
      'ERR_PROPOSAL_QUORUM',
    ],
    [
      'edited after signing (committee key)',
      () => {
        const p = signWith(unsigned());
        return { ...p, committee: [strangerIdentity(1), ...p.committee!.slice(1)] };
      },
      'ERR_PROPOSAL_QUORUM',
    ],
    [
      'edited after signing (expiry pushed back)',
      () => ({ ...signWith(unsigned()), expiresAt: new Date(NOW + 7_200_000).toISOString() }),
      'ERR_PROPOSAL_QUORUM',
    ],
    [
      'expiring more than 30 days ahead',
      () => signWith(unsigned({ expiresAt: new Date(NOW + 31 * 86_400_000) })),
      'ERR_PROPOSAL_INVALID',
    ],
  ];
  for (const [name, make, code, now] of table) {
    it(`${name} gives ${code}`, () => {
      expectRefused(make(), code, now);
    });
  }

  it('acceptExpired (catch-up: the proposal already acted) skips only the expiry', () => {
    const p = signWith(unsigned());
    const later = NOW + 3_600_000;
    expect(verifyQuorum(p, POLICY, later, { acceptExpired: true }).signers).to.have.length(2);
    const one = signWith(unsigned(), [0]);
    expect(() => verifyQuorum(one, POLICY, later, { acceptExpired: true }))
      .to.throw(KmaasError)
      .with.property('code', 'ERR_PROPOSAL_QUORUM');
  });

  it('a quorum failure names who signed validly, invalidly, and who is unknown', () => {
    const p = signWith(unsigned(), [0]);
    const e = expectRefused(
      {
        ...p,
        signatures: [
          ...p.signatures,
          { operator: 'mallory', signature: p.signatures[0]!.signature },
          { operator: 'operator-2', signature: p.signatures[0]!.signature },
        ],
      },
      'ERR_PROPOSAL_QUORUM',
    );
    expect(e.details).to.deep.include({
      required: 2,
      valid: ['operator-1'],
      invalid: ['operator-2'],
      unknown: ['mallory'],
    });
  });

  it('the id and the signed bytes ignore signatures and key order', () => {
    const p = unsigned();
    const signed = signWith(p);
    expect(proposalId(signed)).to.equal(proposalId(p));
    const reordered = Object.fromEntries(Object.entries(signed).reverse()) as Proposal;
    expect(proposalId(reordered)).to.equal(proposalId(p));
    expect(verifyQuorum(reordered, POLICY, NOW).signers).to.have.length(2);
    expect(new TextDecoder().decode(signingBytes(p).slice(0, 27))).to.equal(
      'KMaaS-v1 operator proposal\0',
    );
  });

  it('each operation gets the parameters it needs (ERR_PROPOSAL_INVALID)', () => {
    const base = { ...unsigned(), signatures: [] };
    const bad: [string, Record<string, unknown>][] = [
      ['tenant.create of version 2', { version: 2 }],
      ['key.rotate of version 1', { operation: 'key.rotate' }],
      ['key.retire with a threshold', { operation: 'key.retire' }],
      ['no threshold', { threshold: undefined }],
      ['no committee', { committee: undefined }],
      ['a node twice', { committee: [committee[0], committee[0]] }],
      ['a short nonce', { nonce: 'abc' }],
      ['an unknown field', { extra: true }],
      ['another format', { format: 'kmaas-proposal/2' }],
    ];
    for (const [name, change] of bad) {
      let code: string | undefined;
      try {
        parseProposal({ ...base, ...change });
      } catch (err) {
        code = (err as KmaasError).code;
      }
      expect(code, name).to.equal('ERR_PROPOSAL_INVALID');
    }
    expect(OPERATOR_KEYS).to.have.length(3);
  });
});
