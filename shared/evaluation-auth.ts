/**
 * The end user's authentication of one evaluation (DESIGN.md section 4): an access token from
 * the configured issuer (access-token.ts) and a DPoP proof by the key it is bound to that covers
 * this very request (dpop-proof.ts). Each node runs it on every evaluation, with a replay cache;
 * the coordinator runs it without one, to refuse early and to learn the rate-limit subject.
 * Node-side; never imported by the client.
 *
 * @example
 *   const auth = new EvaluationAuth(settings, { replay: new JtiCache() });
 *   const { subject } = await auth.verify({ token, dpop }, { tenant, version, blinded });
 */
import {
  AccessTokenVerifier,
  type AccessTokenOptions,
  type OidcSettings,
  type VerifiedToken,
} from './access-token.ts';
import { DpopVerifier } from './dpop-proof.ts';
import { JtiCache } from './jti-cache.ts';

export interface EvaluationCredential {
  /** The access token, from `Authorization: DPoP <token>`. */
  token?: string | undefined;
  /** The proof, from the `DPoP` header. */
  dpop?: string | undefined;
}

export interface EvaluationTarget {
  tenant: string;
  version: number;
  /** The blinded elements exactly as sent (base64url). */
  blinded: readonly string[];
}

export interface EvaluationAuthOptions extends AccessTokenOptions {
  /**
   * Remember each proof's jti and refuse it a second time: true for nodes (the default), false
   * for the coordinator, which must not spend a proof that the nodes still have to see.
   */
  checkReplay?: boolean;
  /** Bound of the replay cache (jti-cache.ts). */
  maxReplayEntries?: number;
}

export class EvaluationAuth {
  readonly tokens: AccessTokenVerifier;
  readonly #proofs: DpopVerifier;

  constructor(settings: OidcSettings, opts: EvaluationAuthOptions = {}) {
    this.tokens = new AccessTokenVerifier(settings, opts);
    const now = opts.now ?? Date.now;
    const replay =
      opts.checkReplay === false
        ? undefined
        : new JtiCache({
            now,
            ...(opts.maxReplayEntries ? { maxEntries: opts.maxReplayEntries } : {}),
          });
    this.#proofs = new DpopVerifier({
      maxAgeSeconds: settings.dpopMaxAgeSeconds,
      clockSkewSeconds: settings.clockSkewSeconds,
      now,
      ...(replay ? { replay } : {}),
    });
  }

  /** See AccessTokenVerifier.prefetch. */
  prefetch(): Promise<void> {
    return this.tokens.prefetch();
  }

  /**
   * The token first (ERR_TOKEN_*), then the proof (ERR_DPOP_*); resolves with the verified token,
   * whose `subject` is the rate-limit and audit subject.
   */
  async verify(cred: EvaluationCredential, target: EvaluationTarget): Promise<VerifiedToken> {
    const verified = await this.tokens.verify(cred.token, target.tenant);
    await this.verifyProof(cred, verified, target);
    return verified;
  }

  /**
   * The proof alone, for a token already verified by `tokens.verify` (the coordinator checks the
   * token before it reads the body, and the proof once it has the blinded elements).
   */
  async verifyProof(
    cred: EvaluationCredential,
    verified: VerifiedToken,
    target: EvaluationTarget,
  ): Promise<void> {
    await this.#proofs.verify({
      proof: cred.dpop,
      token: cred.token ?? '',
      jkt: verified.jkt,
      tenant: target.tenant,
      version: target.version,
      blinded: target.blinded,
    });
  }
}
