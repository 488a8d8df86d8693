/**
 * An SDK credential (ClientAuth) for a dev user of the local identity provider that stays valid
 * for runs longer than one access token (10 minutes): one sign-in with devLogin, then a new
 * sign-in with the same DPoP key once the token has less than a minute left. Concurrent requests
 * share one token and one renewal. For the benchmark and scripts; the CLI signs in once per run.
 */
import type { ClientAuth } from '../../client/derive.ts';
import { generateDpopKey } from '../../client/dpop.ts';
import { devLogin, type DevLoginResult } from '../../idp/dev-login.ts';

/** Renew this long before `exp`: a request signed now must still pass the nodes' check. */
const RENEW_BEFORE_MS = 60_000;

export interface DevAuth extends ClientAuth {
  /** Sign-ins so far (1 after devAuth resolves). */
  readonly logins: () => number;
}

export async function devAuth(opts: {
  issuer: string;
  username: string;
  password: string;
}): Promise<DevAuth> {
  const dpopKey = await generateDpopKey();
  let logins = 0;
  const login = async (): Promise<DevLoginResult> => {
    const result = await devLogin({ ...opts, dpopKey });
    logins++;
    return result;
  };
  let current = await login();
  let renewing: Promise<DevLoginResult> | undefined;
  return {
    dpopKey,
    logins: () => logins,
    accessToken: async () => {
      if (current.expiresAt - Date.now() > RENEW_BEFORE_MS) return current.accessToken;
      renewing ??= login().finally(() => (renewing = undefined));
      current = await renewing;
      return current.accessToken;
    },
  };
}
