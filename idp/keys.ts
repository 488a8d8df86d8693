/**
 * The provider's signing keys: a JWKS of private JWKs. With a keys file the set is read from it,
 * or generated and written there (mode 600) on first start, so a restarted provider serves the
 * same key ids and tokens it issued before stay verifiable. One ES256 (P-256) key signs the
 * access tokens and ID tokens; its `kid` is its RFC 7638 thumbprint.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from 'jose';
import { z } from 'zod';
import { KmaasError } from '../shared/errors.ts';

export const SIGNING_ALG = 'ES256';

export interface PrivateJwks {
  keys: JWK[];
}

const b64url = z.string().regex(/^[A-Za-z0-9_-]+$/);

// What the provider needs of an ES256 key; other members are kept as they are.
const es256Key = z.looseObject({
  kty: z.literal('EC'),
  crv: z.literal('P-256'),
  x: b64url,
  y: b64url,
  d: b64url,
  kid: z.string().min(1),
  alg: z.literal(SIGNING_ALG).optional(),
  use: z.literal('sig').optional(),
});

const jwksSchema = z.object({ keys: z.array(es256Key).min(1) });

export async function generateSigningKeys(): Promise<PrivateJwks> {
  const { privateKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
  const jwk = await exportJWK(privateKey);
  jwk.kid = await calculateJwkThumbprint(jwk);
  jwk.alg = SIGNING_ALG;
  jwk.use = 'sig';
  return { keys: [jwk] };
}

/** The keys of `file`, created when it does not exist; fresh keys when there is no file. */
export async function loadOrCreateSigningKeys(file: string | undefined): Promise<PrivateJwks> {
  if (file === undefined) return generateSigningKeys();
  if (existsSync(file)) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch {
      throw new KmaasError('ERR_CONFIG', `KMAAS_IDP_KEYS_FILE: ${file} is not JSON`, {
        field: 'KMAAS_IDP_KEYS_FILE',
      });
    }
    const parsed = jwksSchema.safeParse(raw);
    if (!parsed.success) {
      throw new KmaasError(
        'ERR_CONFIG',
        `KMAAS_IDP_KEYS_FILE: ${file} is not a JWKS of private ES256 (P-256) keys with kid`,
        { field: 'KMAAS_IDP_KEYS_FILE', path: parsed.error.issues[0]?.path.join('.') },
      );
    }
    return { keys: parsed.data.keys };
  }
  const jwks = await generateSigningKeys();
  // `flag: 'wx'`: never overwrite a file another process created meanwhile.
  writeFileSync(file, JSON.stringify(jwks, null, 2), { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return jwks;
}
