/**
 * The login interaction (oidc-provider "interactions"): the provider sends the browser to
 * GET /interaction/:uid, which shows the form; the form posts username and password to
 * POST /interaction/:uid/login, which on success finishes the interaction with the account and
 * sends the browser back to the authorization endpoint. Consent is implied for the dev client
 * (provider.ts, loadExistingGrant), so login is the only prompt.
 *
 * A wrong password gets the form again with status 401 and a message; nothing about which of
 * username or password was wrong. Bodies are capped at MAX_FORM_BYTES.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type Provider from 'oidc-provider';
import { errors } from 'oidc-provider';
import type { Logger } from 'pino';
import { KmaasError } from '../shared/errors.ts';
import { renderErrorPage, renderLoginPage } from './pages.ts';
import type { UserDirectory } from './users.ts';

export const INTERACTION_PREFIX = '/interaction/';
export const MAX_FORM_BYTES = 4096;

const ROUTE = /^\/interaction\/([A-Za-z0-9_-]{1,64})(\/login)?$/;

/**
 * The pages' policy: no scripts or other resources, and the form may go only to this provider
 * and, at the end of the redirects its answer starts, to the client's redirect URIs. Browsers
 * apply form-action to every redirect that follows a form submission (Chromium does), so
 * `'self'` alone would block the last hop back to a browser app on another origin.
 */
export function contentSecurityPolicy(redirectOrigins: readonly string[]): string {
  const targets = ["'self'", ...new Set(redirectOrigins)].join(' ');
  return `default-src 'none'; form-action ${targets}`;
}

function sendPage(res: ServerResponse, status: number, html: string, csp: string): void {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Security-Policy', csp);
  res.end(html);
}

/** The urlencoded body, or ERR_BODY_TOO_LARGE past `limit` bytes (chunked bodies too). */
async function readForm(req: IncomingMessage, limit: number): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new KmaasError('ERR_BODY_TOO_LARGE', `form exceeds ${limit} bytes`);
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

export function interactionHandler(
  provider: Provider,
  users: UserDirectory,
  logger: Logger,
  /** The client's redirect URIs: where the form's redirects may end. */
  redirectUris: readonly string[] = [],
) {
  const csp = contentSecurityPolicy(
    redirectUris.flatMap((u) => {
      const origin = URL.parse(u)?.origin;
      return origin && origin !== 'null' ? [origin] : [];
    }),
  );
  const send = (res: ServerResponse, status: number, html: string) =>
    sendPage(res, status, html, csp);
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://idp.invalid');
    const match = ROUTE.exec(url.pathname);
    const isLogin = match?.[2] !== undefined;
    if (!match || req.method !== (isLogin ? 'POST' : 'GET')) {
      send(res, 404, renderErrorPage('Not found', 'No such page.'));
      return;
    }
    const uid = match[1]!;
    if (Number(req.headers['content-length'] ?? 0) > MAX_FORM_BYTES) {
      send(res, 413, renderErrorPage('Request too large', `form exceeds ${MAX_FORM_BYTES} bytes`));
      return;
    }
    try {
      const details = await provider.interactionDetails(req, res);
      if (details.uid !== uid) throw new errors.SessionNotFound('interaction does not match');
      const clientId = String(details.params.client_id);
      const action = `${INTERACTION_PREFIX}${uid}/login`;
      if (details.prompt.name !== 'login') {
        // Consent is implied (loadExistingGrant); any other prompt means an unsupported request.
        send(res, 400, renderErrorPage('Unsupported request', `prompt ${details.prompt.name}`));
        return;
      }
      if (!isLogin) {
        send(res, 200, renderLoginPage(action, clientId));
        return;
      }
      const form = await readForm(req, MAX_FORM_BYTES);
      const username = form.get('username') ?? '';
      const user = users.authenticate(username, form.get('password') ?? '');
      if (!user) {
        logger.info({ username: username.slice(0, 64) }, 'login failed');
        send(res, 401, renderLoginPage(action, clientId, 'Wrong username or password.'));
        return;
      }
      logger.info({ sub: user.sub, tenant: user.tenant }, 'login');
      await provider.interactionFinished(
        req,
        res,
        { login: { accountId: user.sub } },
        { mergeWithLastSubmission: false },
      );
    } catch (err) {
      if (err instanceof KmaasError && err.code === 'ERR_BODY_TOO_LARGE') {
        send(res, 413, renderErrorPage('Request too large', err.message));
      } else if (err instanceof errors.SessionNotFound) {
        send(res, 400, renderErrorPage('Sign-in expired', 'Start the sign-in again.'));
      } else {
        logger.error({ err }, 'interaction failed');
        send(res, 500, renderErrorPage('Sign-in failed', 'Internal error.'));
      }
    }
  };
}
