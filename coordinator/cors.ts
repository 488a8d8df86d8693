/**
 * Cross-origin access to the coordinator API from web pages (Fetch standard, "CORS protocol"),
 * for the browser SDK: a page on an origin listed in KMAAS_CORS_ORIGINS may call the API's GET and
 * POST routes with the Authorization, DPoP and Content-Type headers, and read X-Request-Id and
 * Retry-After. Origins are matched exactly (scheme, host and port); there is no wildcard, and no
 * Access-Control-Allow-Credentials: the SDK sends its credentials in headers, never as cookies,
 * so a page of an unlisted origin gets nothing a plain request would not.
 *
 * A preflight (OPTIONS with Access-Control-Request-Method) is answered here with 204 and, for a
 * listed origin, the allowed methods and headers; for another origin with no CORS headers, which
 * the browser takes as a refusal.
 */
import type { NextFunction, Request, Response } from 'express';

export const CORS_METHODS = 'GET, POST';
export const CORS_ALLOWED_HEADERS = 'Authorization, DPoP, Content-Type, X-Request-Id';
export const CORS_EXPOSED_HEADERS = 'X-Request-Id, Retry-After';
/** How long a browser may reuse a preflight answer, in seconds. */
export const CORS_MAX_AGE_SECONDS = 600;

export function corsMiddleware(origins: readonly string[]) {
  const allowed = new Set(origins);
  return (req: Request, res: Response, next: NextFunction): void => {
    if (allowed.size === 0) {
      next();
      return;
    }
    // The answer depends on the Origin header: caches must keep one per origin.
    res.vary('Origin');
    const origin = req.get('origin');
    const listed = origin !== undefined && allowed.has(origin);
    const preflight = req.method === 'OPTIONS' && req.get('access-control-request-method');
    if (listed) {
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('access-control-expose-headers', CORS_EXPOSED_HEADERS);
    }
    if (!preflight) {
      next();
      return;
    }
    if (listed) {
      res.setHeader('access-control-allow-methods', CORS_METHODS);
      res.setHeader('access-control-allow-headers', CORS_ALLOWED_HEADERS);
      res.setHeader('access-control-max-age', String(CORS_MAX_AGE_SECONDS));
    }
    res.status(204).end();
  };
}
