/**
 * nodes/reshare-envelope.ts and nodes/reshare-transcript.ts: sealed pieces round-trip and every
 * wrong context, bit or signer names the dealer; dealing and vote signatures bind what they sign.
 */
import { expect } from 'chai';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { fromB64, toB64 } from '../../shared/encoding.ts';
import { openPieces, sealPieces, type PieceContext } from '../../nodes/reshare-envelope.ts';
import {
  dealingSignatureValid,
  keysDigest,
  signDealing,
  signVote,
  transcriptOf,
  voteValid,
} from '../../nodes/reshare-transcript.ts';
import { expectCode } from './helpers.ts';

function fixedIdentity(seed: number) {
  const signingKey = new Uint8Array(32).fill(seed);
  const encryptionKey = new Uint8Array(32).fill(seed + 100);
  return {
    signingPublicKey: ed25519.getPublicKey(signingKey),
    encryptionPublicKey: x25519.getPublicKey(encryptionKey),
    sign: (msg: Uint8Array) => ed25519.sign(msg, signingKey),
    sharedSecret: (peer: Uint8Array) => x25519.getSharedSecret(encryptionKey, peer),
  };
}

describe('nodes/reshare-envelope: sealed pieces', () => {
  const dealer = fixedIdentity(1);
  const receiver = fixedIdentity(2);
  const other = fixedIdentity(3);
  const ctx: PieceContext = {
    reshareId: 'r' + 'a'.repeat(31),
    chunk: 0,
    dealer: 1,
    to: 2,
    dealers: [1, 3],
  };
  const scalars = new Uint8Array(96).map((_, i) => i);

  it('round-trips', () => {
    const p = sealPieces(ctx, scalars, receiver.encryptionPublicKey, dealer);
    expect(p.from).to.equal(1);
    expect(p.to).to.equal(2);
    expect(openPieces(ctx, p, 3, dealer.signingPublicKey, receiver)).to.deep.equal(scalars);
  });

  const cases: [string, (p: ReturnType<typeof sealPieces>) => unknown][] = [
    [
      'another chunk',
      (p) => openPieces({ ...ctx, chunk: 1 }, p, 3, dealer.signingPublicKey, receiver),
    ],
    [
      'another dealer set',
      (p) => openPieces({ ...ctx, dealers: [1, 2] }, p, 3, dealer.signingPublicKey, receiver),
    ],
    [
      'another reshare',
      (p) =>
        openPieces(
          { ...ctx, reshareId: 'r' + 'b'.repeat(31) },
          p,
          3,
          dealer.signingPublicKey,
          receiver,
        ),
    ],
    ['another recipient', (p) => openPieces(ctx, p, 3, dealer.signingPublicKey, other)],
    ['another signer key', (p) => openPieces(ctx, p, 3, other.signingPublicKey, receiver)],
    ['a wrong count', (p) => openPieces(ctx, p, 2, dealer.signingPublicKey, receiver)],
    [
      'a flipped ciphertext bit',
      (p) => {
        const c = fromB64(p.ciphertext, 'c');
        c[0]! ^= 1;
        return openPieces(
          ctx,
          { ...p, ciphertext: toB64(c) },
          3,
          dealer.signingPublicKey,
          receiver,
        );
      },
    ],
    [
      'bad base64',
      (p) => openPieces(ctx, { ...p, ephemeral: '***' }, 3, dealer.signingPublicKey, receiver),
    ],
  ];
  for (const [name, open] of cases) {
    it(`${name} is refused naming the dealer`, () => {
      const p = sealPieces(ctx, scalars, receiver.encryptionPublicKey, dealer);
      expectCode(() => open(p), 'ERR_RESHARE_DEALER', { culprits: [1] });
    });
  }
});

describe('nodes/reshare-transcript: dealing and vote signatures', () => {
  const dealer = fixedIdentity(1);
  const facts = {
    reshareId: 'r' + 'a'.repeat(31),
    dealers: [1, 2],
    chunk: 0,
    dealing: [{ tenant: 'acme', version: 1, oldPackage: '00'.repeat(32), commitments: ['AA'] }],
  };

  it('a dealing signature binds the dealing', () => {
    const sig = signDealing(facts, dealer);
    expect(dealingSignatureValid(facts, sig, dealer.signingPublicKey)).to.equal(true);
    expect(dealingSignatureValid({ ...facts, chunk: 1 }, sig, dealer.signingPublicKey)).to.equal(
      false,
    );
    expect(
      dealingSignatureValid({ ...facts, dealers: [1, 3] }, sig, dealer.signingPublicKey),
    ).to.equal(false);
    expect(dealingSignatureValid(facts, 'AAAA', dealer.signingPublicKey)).to.equal(false);
  });

  it('a vote binds the transcript', () => {
    const t = {
      reshareId: facts.reshareId,
      proposal: 'ab'.repeat(32),
      epoch: 2,
      dealers: [1, 2],
      keys: [{ tenant: 'acme', version: 1 }],
      chunks: ['cd'.repeat(32)],
    };
    const transcript = transcriptOf(t);
    expect(transcript).to.match(/^[0-9a-f]{64}$/);
    expect(transcriptOf({ ...t, epoch: 3 })).to.not.equal(transcript);
    expect(transcriptOf({ ...t, keys: [{ tenant: 'acme', version: 2 }] })).to.not.equal(transcript);
    const vote = signVote(transcript, dealer);
    expect(voteValid(transcript, vote, dealer.signingPublicKey)).to.equal(true);
    expect(
      voteValid(transcriptOf({ ...t, dealers: [1, 3] }), vote, dealer.signingPublicKey),
    ).to.equal(false);
    expect(keysDigest([{ tenant: 'a', version: 1 }])).to.not.equal(
      keysDigest([{ tenant: 'a', version: 2 }]),
    );
  });
});
