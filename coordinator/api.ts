/**
 * The coordinator's public HTTP API (docs/CONTRACTS.md "Coordinator"), express 5. Every answer
 * is JSON; every error is { error: { code, message, details? } } with the status that
 * shared/errors.ts gives its code, whatever went wrong: bad JSON, an oversized body, an unknown
 * route or a failure deep inside. Each request gets an id (X-Request-Id, taken from the client
 * when well-formed) and a child logger bound to it. Errors from express and its body parser that
 * are the client's doing (a malformed percent-encoding in the path, a corrupt compressed body,
 * anything marked `expose` with a 4xx status) get a 4xx code too; only our own failures are
 * ERR_INTERNAL. ERR_OVERLOADED and ERR_RATE_LIMITED carry a Retry-After header.
 *
 * Body limits: BODY_LIMIT_BYTES on the routes that take a JSON body, zero on every other
 * route (a request that carries a body there is refused). Over the limit is 413
 * ERR_BODY_TOO_LARGE, refused on the declared Content-Length before a byte is read, or by the
 * parser once a chunked body passes it; a body left unread closes the connection after the
 * answer, so it is never drained.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import express, { type NextFunction, type Request, type Response } from 'express';
import { checkTenant } from '../shared/document.ts';
import { KmaasError, type ErrorCode } from '../shared/errors.ts';
import { RETRY_AFTER_SECONDS } from './admission.ts';
import { corsMiddleware } from './cors.ts';
import { requireBearer } from '../shared/bearer.ts';
import { describeJob, type DkgQueue } from './dkg-job.ts';
import type { VerifiedToken } from '../shared/access-token.ts';
import { authenticateClient, evaluate, type EvaluateDeps } from './evaluate.ts';
import type { Logger } from './logger.ts';
import type { NodePool } from './node-pool.ts';
import type { Redacted } from '../shared/redacted.ts';
import { registryUnavailable, type Registry } from './registry.ts';
import { clusterStatus, type EpochSource } from './cluster-status.ts';
import { submitProposal, type ProposalDeps } from './proposals.ts';
import type { CoordinatorMetrics } from './metrics.ts';

/** Far above any legitimate body (256 blinded elements are about 12 KiB). */
export const BODY_LIMIT_BYTES = 256 * 1024;

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;
const VERSION_PARAM = /^[1-9][0-9]{0,9}$/;

export interface ApiDeps {
  adminToken: Redacted<string>;
  pool: NodePool;
  registry: Registry;
  queue: DkgQueue;
  evaluate: EvaluateDeps;
  proposals: ProposalDeps;
  /**
   * Whether the coordinator's Redis connection is up. An uncoded failure while it is not is
   * taken for Redis being unreachable (ioredis rejects queued commands with plain errors): a
   * retryable 503 ERR_REGISTRY_UNAVAILABLE, not a 500.
   */
  redisReady?: () => boolean;
  logger: Logger;
  /** The coordinator's epoch record (coordinator/epoch.ts); without it status asks the nodes. */
  epochs?: EpochSource;
  /** GET /metrics serves these; absent: no such route. */
  metrics?: CoordinatorMetrics;
  /** Web origins whose pages may call the API (coordinator/cors.ts); default none. */
  corsOrigins?: readonly string[];
}

interface Locals {
  log: Logger;
  /** The client's access token, once clientOnly has verified it for the tenant of the path. */
  client?: { token: string; verified: VerifiedToken };
}

function logOf(res: Response): Logger {
  return (res.locals as Locals).log;
}

function versionParam(text: string): number {
  const version = VERSION_PARAM.test(text) ? Number(text) : NaN;
  if (!(version <= 0xffffffff)) {
    throw new KmaasError('ERR_VALIDATION', 'version: expected a positive 32-bit integer', {
      field: 'version',
    });
  }
  return version;
}

export function createApi(deps: ApiDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');

  app.use((req: Request, res: Response, next: NextFunction) => {
    const given = req.get('x-request-id');
    const reqId = given !== undefined && REQUEST_ID.test(given) ? given : randomUUID();
    res.setHeader('x-request-id', reqId);
    const log = deps.logger.child({ reqId });
    (res.locals as Locals).log = log;
    const started = performance.now();
    res.on('finish', () => {
      log.info(
        {
          method: req.method,
          route: (req.route as { path?: string } | undefined)?.path ?? null,
          status: res.statusCode,
          ms: Math.round(performance.now() - started),
        },
        'request',
      );
    });
    next();
  });

  // Before the body limit: a preflight carries no body and is answered here.
  app.use(corsMiddleware(deps.corsOrigins ?? []));

  // Every route has an explicit body limit: BODY_LIMIT_BYTES for those that take JSON, none
  // for the others. A declared length over the limit is refused before anything is read.
  app.use((req: Request, res: Response, next: NextFunction) => {
    const limit = takesBody(req) ? BODY_LIMIT_BYTES : 0;
    const length = req.get('content-length');
    const declared = length === undefined ? undefined : Number(length);
    const chunked = req.get('transfer-encoding') !== undefined;
    const tooLarge = () =>
      new KmaasError(
        'ERR_BODY_TOO_LARGE',
        limit === 0
          ? `body: ${req.method} ${req.path.slice(0, 200)} takes no body`
          : `body exceeds ${limit} bytes`,
        { field: 'body', limit },
      );
    if ((declared !== undefined && declared > limit) || (limit === 0 && chunked)) throw tooLarge();
    if (chunked) {
      // The JSON parser would read a chunked body to its end before answering 413: count here
      // and answer as soon as the limit is passed. The parser's listener is added in this same
      // tick (the next middlewares run synchronously), before the stream starts flowing.
      let received = 0;
      const count = (chunk: Buffer) => {
        received += chunk.length;
        if (received <= limit) return;
        req.off('data', count);
        if (res.headersSent) return;
        res.setHeader('connection', 'close');
        res.status(413).json({ error: tooLarge().toBody() });
      };
      req.on('data', count);
    }
    next();
  });

  // Bodies are parsed per route, after the credential check, so that an unauthenticated caller
  // never gets a body read.
  const json = express.json({ limit: BODY_LIMIT_BYTES });

  app.get('/healthz', (_req, res) => {
    res.json({
      ok: true,
      nodes: { connected: deps.pool.connected().length, total: deps.pool.ids().length },
    });
  });

  app.get('/v1/status', async (_req, res) => {
    res.json(
      await clusterStatus({
        pool: deps.pool,
        registry: deps.registry,
        nodeTimeoutMs: deps.evaluate.nodeTimeoutMs,
        ...(deps.epochs === undefined ? {} : { epochs: deps.epochs }),
      }),
    );
  });

  // Open like /v1/status: node health and counts, nothing secret (coordinator/metrics.ts).
  const metrics = deps.metrics;
  if (metrics) {
    app.get('/metrics', async (_req, res) => {
      const { contentType, body } = await metrics.render();
      res.setHeader('content-type', contentType);
      res.send(body);
    });
  }

  // An outer gate only: what makes a proposal lawful is the operators' signatures, which every
  // node checks itself.
  const adminOnly = (req: Request, _res: Response, next: NextFunction): void => {
    requireBearer(req.get('authorization'), deps.adminToken, 'proposal submission');
    next();
  };

  type KeyParams = { tenant: string; version: string };
  const clientOnly = async (
    req: Request<KeyParams>,
    res: Response,
    next: NextFunction,
  ): Promise<void> => {
    const tenant = checkTenant(req.params.tenant);
    (res.locals as Locals).client = await authenticateClient(
      deps.evaluate,
      req.get('authorization'),
      tenant,
    );
    next();
  };

  app.post('/v1/proposals', adminOnly, json, async (req, res) => {
    const result = await submitProposal(deps.proposals, req.body as unknown, logOf(res));
    res.status('jobId' in result ? 202 : 200).json(result);
  });

  // Tenants are made by operator proposals only; the old route says where to go.
  app.post('/v1/tenants', () => {
    throw new KmaasError(
      'ERR_NOT_FOUND',
      'tenants are created by operator proposals: POST /v1/proposals ' +
        '(kmaas proposal create, kmaas proposal sign, kmaas proposal submit)',
      { use: 'POST /v1/proposals' },
    );
  });

  app.get('/v1/jobs/:id', async (req, res) => {
    // Jobs live in Redis alone: while it cannot be reached, a retryable 503, not a 500.
    res.json(
      await describeJob(deps.queue, req.params.id).catch((err: unknown) => {
        throw registryUnavailable(err);
      }),
    );
  });

  app.get('/v1/tenants/:tenant', async (req, res) => {
    const tenant = checkTenant(req.params.tenant);
    const versions = await deps.registry.tenant(tenant);
    const retired = new Set(await deps.registry.retiredVersions(tenant));
    res.json({
      tenant,
      versions: versions.map(({ version, threshold, groupKey }) => ({
        version,
        threshold,
        groupKey,
        ...(retired.has(version) ? { retired: true } : {}),
      })),
    });
  });

  app.get('/v1/tenants/:tenant/keys/:version', async (req, res) => {
    const tenant = checkTenant(req.params.tenant);
    res.json(await deps.registry.keyPackage(tenant, versionParam(req.params.version)));
  });

  const evaluateRoute = async (req: Request<KeyParams>, res: Response): Promise<void> => {
    const client = (res.locals as Locals).client!;
    const result = await evaluate(
      deps.evaluate,
      {
        tenant: checkTenant(req.params.tenant),
        version: versionParam(req.params.version),
        body: req.body as unknown,
        token: client.token,
        verified: client.verified,
        dpop: req.get('dpop'),
      },
      logOf(res),
    );
    res.json(result);
  };
  app.post('/v1/tenants/:tenant/keys/:version/evaluate', clientOnly, json, evaluateRoute);

  app.use((req: Request, _res: Response, next: NextFunction) => {
    next(new KmaasError('ERR_NOT_FOUND', `no route ${req.method} ${req.path.slice(0, 200)}`));
  });

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    let e = asKmaasError(err, { path: req.path, contentEncoding: req.get('content-encoding') });
    if (e.code === 'ERR_INTERNAL' && deps.redisReady?.() === false) e = registryUnavailable(err);
    const log = (res.locals as Partial<Locals>).log ?? deps.logger;
    if (e.code === 'ERR_INTERNAL') log.error({ err }, 'request failed');
    else if (e.code === 'ERR_REGISTRY_UNAVAILABLE') log.warn({ code: e.code }, e.message);
    if (res.headersSent) return;
    // A body left unread (refused unread, or too large) is not drained: the connection closes.
    if (!req.complete) res.setHeader('connection', 'close');
    if (e.code === 'ERR_OVERLOADED' || e.code === 'ERR_RATE_LIMITED')
      res.setHeader('retry-after', String(retryAfter(e)));
    res.status(e.status).json({ error: e.toBody() });
  });

  return app;
}

/** The routes that take a JSON body, matched as express matches them (any case, a final /). */
const BODY_ROUTES = [
  /^\/v1\/proposals\/?$/i,
  // Gone, but an old client's body must not hide the answer that says where to go.
  /^\/v1\/tenants\/?$/i,
  /^\/v1\/tenants\/[^/]+\/keys\/[^/]+\/evaluate\/?$/i,
];

function takesBody(req: Request): boolean {
  return req.method === 'POST' && BODY_ROUTES.some((route) => route.test(req.path));
}

function retryAfter(e: KmaasError): number {
  const seconds = e.details?.retryAfterSeconds;
  return typeof seconds === 'number' && Number.isInteger(seconds) && seconds > 0
    ? seconds
    : RETRY_AFTER_SECONDS;
}

/** The code for a 4xx that express or a body parser raised without one of ours. */
const CLIENT_STATUS: Record<number, ErrorCode> = {
  401: 'ERR_UNAUTHORIZED',
  404: 'ERR_NOT_FOUND',
  413: 'ERR_BODY_TOO_LARGE',
};

interface HttpError {
  type?: unknown;
  status?: unknown;
  statusCode?: unknown;
  expose?: unknown;
  code?: unknown;
}

/**
 * Coded errors pass through. Of the rest: body-parser errors carry a `type`; a malformed
 * percent-encoding in a path parameter is a URIError from the router; a compressed body that
 * does not decompress is a zlib error with a 400 status and no `type`; any other error marked
 * `expose` with a 4xx status is the client's doing too. What remains is ours: ERR_INTERNAL.
 */
export function asKmaasError(
  err: unknown,
  req: { path: string; contentEncoding?: string | undefined },
): KmaasError {
  if (err instanceof KmaasError) return err;
  const http = (typeof err === 'object' && err !== null ? err : {}) as HttpError;
  const status = typeof http.status === 'number' ? http.status : http.statusCode;
  const clientError = typeof status === 'number' && status >= 400 && status < 500;
  if (err instanceof URIError) {
    const path = req.path.slice(0, 200);
    return new KmaasError('ERR_VALIDATION', `path: malformed percent-encoding in ${path}`, {
      field: 'path',
    });
  }
  const encoding = req.contentEncoding?.trim().toLowerCase();
  const compressed = encoding !== undefined && encoding !== '' && encoding !== 'identity';
  if (clientError && http.type === undefined && compressed) {
    return new KmaasError(
      'ERR_MALFORMED_JSON',
      'body: the Content-Encoding does not match the body, which cannot be decompressed',
      { field: 'body' },
    );
  }
  const type = http.type;
  const bodyErrors: Record<string, [ErrorCode, string]> = {
    'entity.parse.failed': ['ERR_MALFORMED_JSON', 'body is not valid JSON'],
    'entity.too.large': ['ERR_BODY_TOO_LARGE', `body exceeds ${BODY_LIMIT_BYTES} bytes`],
    'encoding.unsupported': ['ERR_VALIDATION', 'body: unsupported content encoding'],
    'charset.unsupported': ['ERR_VALIDATION', 'body: unsupported charset'],
    'request.size.invalid': ['ERR_VALIDATION', 'body: length does not match Content-Length'],
    'request.aborted': ['ERR_VALIDATION', 'body: request aborted'],
  };
  const known = typeof type === 'string' ? bodyErrors[type] : undefined;
  if (known) return new KmaasError(known[0], known[1], { field: 'body' });
  if (clientError && http.expose === true) {
    const code = CLIENT_STATUS[status] ?? 'ERR_VALIDATION';
    const message = err instanceof Error ? err.message.slice(0, 200) : 'bad request';
    return new KmaasError(code, `request: ${message}`);
  }
  return new KmaasError('ERR_INTERNAL', 'internal error');
}
