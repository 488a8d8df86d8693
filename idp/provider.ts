/**
 * Configuration of panva's oidc-provider for the local identity provider: OpenID Connect Core
 * authorization code flow for one public client, with
 *   - PKCE S256 (RFC 7636), required;
 *   - DPoP (RFC 9449): the token request must carry a proof, with a nonce the provider hands out
 *     (section 8), and the access token is bound to the proof's key by `cnf.jkt` (section 6.1);
 *   - Resource Indicators (RFC 8707): for the KMaaS API (urn:kmaas:api) the access token is a JWT
 *     (RFC 9068) signed with ES256, carrying sub, the tenant claim and cnf.jkt, for 10 minutes.
 * Accounts are the dev users; consent is implied for the dev client (loadExistingGrant below), so
 * the only interaction is the login form (interactions.ts). Storage is the provider's in-memory
 * adapter: codes, sessions and grants end with the process, the signing keys do not.
 */
import { randomBytes } from 'node:crypto';
import Provider, { errors, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';
import { ACCESS_TOKEN_TTL_SECONDS, API_SCOPE, DEV_CLIENT_ID, TENANT_CLAIM } from './config.ts';
import { SIGNING_ALG, type PrivateJwks } from './keys.ts';
import { renderErrorPage } from './pages.ts';
import type { UserDirectory } from './users.ts';

export interface ProviderOptions {
  issuer: string;
  users: UserDirectory;
  jwks: PrivateJwks;
  redirectUris: string[];
  resource: string;
  logger: Logger;
}

export function createProvider(opts: ProviderOptions): Provider {
  const { users, resource, logger } = opts;
  const resourceServer = {
    scope: API_SCOPE,
    audience: resource,
    accessTokenTTL: ACCESS_TOKEN_TTL_SECONDS,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: SIGNING_ALG } },
  } as const;

  const configuration: Configuration = {
    clients: [
      {
        client_id: DEV_CLIENT_ID,
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: opts.redirectUris,
        dpop_bound_access_tokens: true,
        id_token_signed_response_alg: SIGNING_ALG,
      },
    ],
    // oidc-provider 9 accepts only S256 (plain is gone); required for every client here.
    pkce: { required: () => true },
    responseTypes: ['code'],
    clientAuthMethods: ['none'],
    scopes: ['openid'],
    claims: { openid: ['sub'] },
    jwks: opts.jwks,
    // Signed cookies (koa): a fresh key per process, so a restart ends open sessions.
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      // No userinfo: an `openid` authorization with one resource then yields an access token
      // for that resource (oidc-provider's resource indicator rules).
      userinfo: { enabled: false },
      dPoP: {
        enabled: true,
        nonceSecret: randomBytes(32),
        // RFC 9449 section 8: every proof at the token endpoint carries a nonce of ours.
        requireNonce: () => true,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: (_ctx, _client, oneOf) => oneOf ?? resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, indicator) => {
          if (indicator !== resource) throw new errors.InvalidTarget();
          return resourceServer;
        },
      },
    },
    findAccount: (_ctx, sub) =>
      users.tenantOf(sub) === undefined ? undefined : { accountId: sub, claims: () => ({ sub }) },
    extraTokenClaims: (_ctx, token) => {
      if (!('accountId' in token) || token.resourceServer?.audience !== resource) return undefined;
      const tenant = users.tenantOf(token.accountId);
      return tenant === undefined ? undefined : { [TENANT_CLAIM]: tenant };
    },
    // Consent is implied for the dev client: it gets openid and the API scope on the resource.
    loadExistingGrant: async (ctx: KoaContextWithOIDC) => {
      const { client, session, result, provider } = ctx.oidc;
      if (!client || !session?.accountId) return undefined;
      const grantId = result?.consent?.grantId ?? session.grantIdFor(client.clientId);
      if (grantId) return provider.Grant.find(grantId);
      const grant = new provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope('openid');
      grant.addResourceScope(resource, API_SCOPE);
      await grant.save();
      return grant;
    },
    // A browser app served from a redirect URI's origin may call the token endpoint.
    clientBasedCORS: (_ctx, origin, client) =>
      client.redirectUris?.some((uri) => URL.parse(uri)?.origin === origin) ?? false,
    ttl: {
      AccessToken: (_ctx, token) =>
        token.resourceServer?.accessTokenTTL ?? ACCESS_TOKEN_TTL_SECONDS,
      AuthorizationCode: 60,
      IdToken: ACCESS_TOKEN_TTL_SECONDS,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
    renderError: (ctx, out) => {
      ctx.type = 'html';
      ctx.body = renderErrorPage('Sign-in failed', out.error_description ?? out.error);
    },
  };

  const provider = new Provider(opts.issuer, configuration);
  provider.on('server_error', (_ctx: unknown, err: Error) => logger.error({ err }, 'server error'));
  // A nonce challenge (use_dpop_nonce) is part of every token request here: debug, not info.
  const refused = (event: string) => (_ctx: unknown, err: errors.OIDCProviderError) =>
    logger[err.error === 'use_dpop_nonce' ? 'debug' : 'info'](
      { event, error: err.error, detail: err.error_detail ?? err.error_description },
      'refused',
    );
  provider.on('authorization.error', refused('authorization'));
  provider.on('grant.error', refused('grant'));
  provider.on('grant.success', (ctx: KoaContextWithOIDC) =>
    logger.info({ sub: ctx.oidc.entities.Account?.accountId }, 'token issued'),
  );
  return provider;
}
