/**
 * The coordinator's public HTTP API (docs/CONTRACTS.md "Coordinator"), express 5. Every answer
 * is JSON; every error is { error: { code, message, details? } } with the status that
 * shared/errors.ts gives its code, whatever went wrong: bad JSON, an oversized body, an unknown
 * route or a failure deep inside. Each request gets an id (X-Request-Id, taken from the client
 * when well-formed) and a child logger bound to it. Errors from express and its body parser that
 * are the client's doing (a malformed percent-encoding in the path, a corrupt compressed body,
 * anything marked `expose` with a 4xx status) get a 4xx code too; only our own failures are
 * ERR_INTERNAL. ERR_OVERLOADED and ERR_RATE_LIMITED carry a Retry-After header.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import express, { type NextFunction, type Request, type Response } from 'express';
import { checkTenant } from '../shared/document.ts';
import { KmaasError, type ErrorCode } from '../shared/errors.ts';
import { RETRY_AFTER_SECONDS } from './admission.ts';
import { requireBearer } from '../shared/bearer.ts';
import { describeJob, type DkgQueue } from './dkg-job.ts';
import { authenticateClient, evaluate, type EvaluateDeps } from './evaluate.ts';
import type { Logger } from './logger.ts';
import type { NodePool } from './node-pool.ts';
import type { Redacted } from '../shared/redacted.ts';
import type { Registry } from './registry.ts';
import { statusReply } from '../shared/messages.ts';
import { submitProposal, type ProposalDeps } from './proposals.ts';

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
  logger: Logger;
}

interface Locals {
  log: Logger;
  /** The client's bearer token, once clientOnly has accepted it. */
  token?: string;
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
    const [nodes, tenants] = await Promise.all([nodeStatuses(deps), deps.registry.tenantNames()]);
    // The cluster id the nodes check proposals against, when the connected nodes agree on one.
    const clusters = new Set(nodes.flatMap((n) => (n.cluster === undefined ? [] : [n.cluster])));
    const cluster = clusters.size === 1 ? [...clusters][0]! : null;
    res.json({ cluster, nodes, tenants });
  });

  // An outer gate only: what makes a proposal lawful is the operators' signatures, which every
  // node checks itself.
  const adminOnly = (req: Request, _res: Response, next: NextFunction): void => {
    requireBearer(req.get('authorization'), deps.adminToken, 'proposal submission');
    next();
  };

  const clientOnly = (req: Request, res: Response, next: NextFunction): void => {
    (res.locals as Locals).token = authenticateClient(deps.evaluate, req.get('authorization'));
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
    res.json(await describeJob(deps.queue, req.params.id));
  });

  app.get('/v1/tenants/:tenant', async (req, res) => {
    const tenant = checkTenant(req.params.tenant);
    const versions = await deps.registry.tenant(tenant);
    res.json({
      tenant,
      versions: versions.map(({ version, threshold, groupKey }) => ({
        version,
        threshold,
        groupKey,
      })),
    });
  });

  app.get('/v1/tenants/:tenant/keys/:version', async (req, res) => {
    const tenant = checkTenant(req.params.tenant);
    res.json(await deps.registry.keyPackage(tenant, versionParam(req.params.version)));
  });

  type KeyParams = { tenant: string; version: string };
  const evaluateRoute = async (req: Request<KeyParams>, res: Response): Promise<void> => {
    const result = await evaluate(
      deps.evaluate,
      {
        tenant: checkTenant(req.params.tenant),
        version: versionParam(req.params.version),
        body: req.body as unknown,
        token: (res.locals as Locals).token!,
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
    const e = asKmaasError(err, { path: req.path, contentEncoding: req.get('content-encoding') });
    const log = (res.locals as Partial<Locals>).log ?? deps.logger;
    if (e.code === 'ERR_INTERNAL') log.error({ err }, 'request failed');
    if (res.headersSent) return;
    if (e.code === 'ERR_OVERLOADED' || e.code === 'ERR_RATE_LIMITED')
      res.setHeader('retry-after', String(retryAfter(e)));
    res.status(e.status).json({ error: e.toBody() });
  });

  return app;
}

/** Each node's link state, with the identity keys and cluster id it reports (null when silent). */
async function nodeStatuses(deps: ApiDeps) {
  return Promise.all(
    deps.pool.all().map(async (link) => {
      const state = link.state();
      if (!state.connected) return { ...state, identity: null };
      try {
        const body = await link.request('status', {}, deps.evaluate.nodeTimeoutMs);
        const reply = statusReply.parse(body);
        return {
          ...state,
          identity: reply.identity ?? null,
          ...(reply.cluster === undefined ? {} : { cluster: reply.cluster }),
        };
      } catch {
        return { ...state, identity: null };
      }
    }),
  );
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
