/**
 * The local identity provider's HTTP server. The socket is bound first (127.0.0.1 by default, port
 * 0 picks a free one), because the issuer identifier, http://<host>:<port> unless KMAAS_IDP_ISSUER
 * names another (a container's service name), is part of the provider's configuration and of
 * every token it signs. Requests under /interaction/ go to the login
 * interaction, all others to oidc-provider (discovery, JWKS, authorization, token).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { IdpConfig } from './config.ts';
import { INTERACTION_PREFIX, interactionHandler } from './interactions.ts';
import { loadOrCreateSigningKeys } from './keys.ts';
import { renderErrorPage } from './pages.ts';
import { createProvider } from './provider.ts';
import { loadUsers } from './users.ts';

export interface IdpHandle {
  port: number;
  issuer: string;
  /** Key ids of the signing keys, as the JWKS serves them. */
  kids: string[];
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export async function startIdp(config: IdpConfig, logger: Logger): Promise<IdpHandle> {
  // Read everything that can be wrong before binding, so a bad file never opens a port.
  const users = loadUsers(config.usersFile);
  const jwks = await loadOrCreateSigningKeys(config.keysFile);

  let handler: Handler = (_req, res) => {
    res.statusCode = 503;
    res.end(renderErrorPage('Starting', 'The identity provider is starting.'));
  };
  const server = createServer((req, res) => handler(req, res));
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const issuer = config.issuer ?? `http://${host}:${port}`;

  const provider = createProvider({
    issuer,
    users,
    jwks,
    redirectUris: config.redirectUris,
    resource: config.resource,
    logger,
  });
  const oidc = provider.callback();
  const interactions = interactionHandler(provider, users, logger, config.redirectUris);
  handler = (req, res) => {
    if (req.url?.startsWith(INTERACTION_PREFIX)) void interactions(req, res);
    else void oidc(req, res);
  };

  let closed: Promise<void> | undefined;
  return {
    port,
    issuer,
    kids: jwks.keys.map((k) => k.kid!),
    close: () =>
      (closed ??= new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      })),
  };
}
