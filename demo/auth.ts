/**
 * Who is calling the archive's API: every /api request carries an access token of the identity
 * provider bound to a DPoP key (`Authorization: DPoP <token>`) and a fresh DPoP proof of that
 * very request (`DPoP: <proof>`, RFC 9449 section 7.1). The token is checked as the nodes check
 * it (shared/access-token.ts), except that any tenant is accepted: the caller's tenant is what
 * the token says. The proof is checked against the method and the archive's public URL (section
 * 4.3, whole htu), with a replay cache of its own.
 */
import type { Request } from 'express';
import { AccessTokenVerifier, type OidcSettings } from '../shared/access-token.ts';
import { TENANT_PATTERN } from '../shared/document.ts';
import { dpopToken, DpopVerifier } from '../shared/dpop-proof.ts';
import { KmaasError } from '../shared/errors.ts';
import { JtiCache } from '../shared/jti-cache.ts';

/** The signed-in user behind a request. */
export interface Caller {
  /** The token's `sub`. */
  subject: string;
  tenant: string;
}

export class RequestAuth {
  readonly tokens: AccessTokenVerifier;
  readonly #proofs: DpopVerifier;
  readonly #publicUrl: () => string;

  /**
   * @param publicUrl the archive's origin as browsers address it (http://127.0.0.1:8080); a
   *   function, since a server on port 0 learns it only once it listens.
   */
  constructor(settings: OidcSettings, publicUrl: () => string, now: () => number = Date.now) {
    this.tokens = new AccessTokenVerifier(settings, { now });
    this.#proofs = new DpopVerifier({
      maxAgeSeconds: settings.dpopMaxAgeSeconds,
      clockSkewSeconds: settings.clockSkewSeconds,
      replay: new JtiCache({ now }),
      now,
    });
    this.#publicUrl = publicUrl;
  }

  /** The token first (ERR_TOKEN_*), then the proof (ERR_DPOP_*). */
  async check(req: Request): Promise<Caller> {
    const token = dpopToken(req.get('authorization'));
    if (token === undefined) {
      throw new KmaasError(
        'ERR_TOKEN_MISSING',
        'access token: expected Authorization: DPoP <access token>',
      );
    }
    const verified = await this.tokens.verifyAnyTenant(token);
    // The tenant goes into the database and into file listings: the nodes' own pattern.
    if (!TENANT_PATTERN.test(verified.tenant)) {
      throw new KmaasError('ERR_TOKEN_TENANT', 'access token: the tenant claim is not a tenant');
    }
    await this.#proofs.verifyResource({
      proof: req.get('dpop'),
      token,
      jkt: verified.jkt,
      htm: req.method,
      // Origin + path by concatenation: a path like //host/x must not move the origin.
      htu: new URL(this.#publicUrl()).origin + req.path,
    });
    return { subject: verified.subject, tenant: verified.tenant };
  }
}
