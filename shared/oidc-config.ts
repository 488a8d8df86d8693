/**
 * The KMAAS_OIDC_* settings (DESIGN.md section 4), validated the same way by the node and the
 * coordinator configurations: the field schemas here, one per setting, and the step from the
 * validated values to the OidcSettings that shared/access-token.ts takes.
 */
import { z } from 'zod';
import {
  DEFAULT_AUDIENCE,
  DEFAULT_CLOCK_SKEW_SECONDS,
  DEFAULT_DPOP_MAX_AGE_SECONDS,
  DEFAULT_TENANT_CLAIM,
  type OidcSettings,
} from './access-token.ts';

const httpUrl = z
  .string()
  .refine((s) => /^https?:\/\/\S+$/.test(s) && URL.canParse(s), 'expected an http(s) URL');

const seconds = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

/** Setting -> schema; the camelCase names are those of the configuration files. */
export const oidcFields = {
  oidcIssuer: httpUrl,
  oidcAudience: z.string().min(1).max(1024).default(DEFAULT_AUDIENCE),
  oidcTenantClaim: z.string().min(1).max(256).default(DEFAULT_TENANT_CLAIM),
  oidcJwksUri: httpUrl.optional(),
  clockSkewSeconds: seconds(0, 600).default(DEFAULT_CLOCK_SKEW_SECONDS),
  dpopMaxAgeSeconds: seconds(1, 3600).default(DEFAULT_DPOP_MAX_AGE_SECONDS),
};

/** Setting -> environment variable. */
export const OIDC_ENV = {
  oidcIssuer: 'KMAAS_OIDC_ISSUER',
  oidcAudience: 'KMAAS_OIDC_AUDIENCE',
  oidcTenantClaim: 'KMAAS_OIDC_TENANT_CLAIM',
  oidcJwksUri: 'KMAAS_OIDC_JWKS_URI',
  clockSkewSeconds: 'KMAAS_CLOCK_SKEW_SECONDS',
  dpopMaxAgeSeconds: 'KMAAS_DPOP_MAX_AGE_SECONDS',
} as const satisfies Record<keyof typeof oidcFields, string>;

type Parsed = z.output<z.ZodObject<typeof oidcFields>>;

export function oidcSettings(s: Parsed): OidcSettings {
  return {
    issuer: s.oidcIssuer,
    audience: s.oidcAudience,
    tenantClaim: s.oidcTenantClaim,
    ...(s.oidcJwksUri === undefined ? {} : { jwksUri: s.oidcJwksUri }),
    clockSkewSeconds: s.clockSkewSeconds,
    dpopMaxAgeSeconds: s.dpopMaxAgeSeconds,
  };
}
