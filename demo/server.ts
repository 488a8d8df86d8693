/**
 * The archive (DESIGN.md section 5, demo/): the application of the use case. It serves the page
 * and the browser SDK, and keeps what the browser uploads: envelopes (ciphertext) and the
 * metadata the uploader declared. It never holds a key: the page derives every document key
 * from the share nodes, through the coordinator, and encrypts and decrypts in the browser.
 *
 *   GET    /                      the page (demo/public), also at /callback (the login redirect)
 *   GET    /build/kmaas-sdk.js    the browser SDK bundle (built by the caller, see start.ts)
 *   GET    /config.json           issuer, client id, redirect URI, coordinator URL, pinned keys
 *   POST   /api/documents?name=&type=   an envelope as the raw body -> 201 { document }
 *   GET    /api/documents         -> { documents: [...] } of every tenant (the shared archive)
 *   GET    /api/documents/:id     the envelope, streamed
 *   DELETE /api/documents/:id     the uploader only -> 204
 *
 * Every /api request needs `Authorization: DPoP <token>` and a DPoP proof of the request
 * (auth.ts). Errors are `{ error: { code, message, details? } }` with the codes of
 * shared/errors.ts. The list is everyone's on purpose: a user of another tenant can try to open
 * a document, and it is the share nodes, not the archive, that refuse to derive its key.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { pipeline } from 'node:stream/promises';
import { randomUUID } from 'node:crypto';
import pino, { type DestinationStream, type Logger } from 'pino';
import { z } from 'zod';
import { FilePinStore } from '../cli/pin-file.ts';
import { ALLOWED_ALGORITHMS, type OidcSettings } from '../shared/access-token.ts';
import { KmaasError, toKmaasError } from '../shared/errors.ts';
import { RequestAuth, type Caller } from './auth.ts';
import { ArchiveStore } from './store.ts';
import { receiveEnvelope } from './upload.ts';
import { answerParseErrors } from '../shared/http-parse-errors.ts';

/** The page's documents may be up to 100 MiB each (the issue's figure). */
export const DEFAULT_MAX_DOCUMENT_BYTES = 100 * 1024 * 1024;
/** Envelope overhead allowed on top: the header (at most 64 KiB) and the tags, generously. */
const ENVELOPE_OVERHEAD_BYTES = 1024 * 1024;
/** The login redirect comes back here; the page finishes the sign-in. */
export const CALLBACK_PATH = '/callback';
/** The identity provider's one client (idp/config.ts DEV_CLIENT_ID). */
export const DEFAULT_CLIENT_ID = 'kmaas-dev';

const PUBLIC_DIR = fileURLToPath(new URL('./public/', import.meta.url));

export interface Pin {
  tenant: string;
  version: number;
  groupKey: string;
}

export interface ArchiveOptions {
  /** Where the database and the envelopes live. */
  dataDir: string;
  host?: string;
  /** 0 (the default): a free port. */
  port?: number;
  /**
   * A server already listening, to answer on instead of host and port (a test that must know
   * the archive's origin before the cluster that has to allow it starts).
   */
  server?: Server;
  /** The archive's origin as browsers address it; default http://<host>:<port>. */
  publicUrl?: string;
  /** How access tokens are checked (the identity provider's issuer, audience, ...). */
  oidc: OidcSettings;
  clientId?: string;
  /** The coordinator's URL, as the browser reaches it (it must allow the archive's origin). */
  coordinatorUrl: string;
  /**
   * The group keys the page pins (client/pins.ts). A function, read on every /config.json, so
   * that tenants made later show up. Known shortcoming: the page trusts what the archive serves
   * here, as it trusts the script the archive serves; see the README's "Run the archive demo".
   */
  pins: () => Pin[] | Promise<Pin[]>;
  /** Path of the built browser SDK (scripts/lib/build-sdk.ts). */
  sdkBundle: string;
  /** Plaintext bytes per document at most. Default 100 MiB. */
  maxDocumentBytes?: number;
  logger?: Logger;
}

export interface ArchiveHandle {
  url: string;
  port: number;
  store: ArchiveStore;
  close(): Promise<void>;
}

interface Locals {
  log: Logger;
  caller?: Caller;
}

/**
 * Characters a file name may not hold: Unicode's invisible format characters (category Cf).
 * Among them are the bidirectional controls (U+061C, U+200E/F, U+202A-202E, U+2066-2069), which
 * can make "invoice_fdp.exe" read as "invoice_exe.pdf", and the zero-width ones (U+200B-200D,
 * U+2060, U+FEFF), which make two names that look the same differ. Every tenant sees the list.
 */
const INVISIBLE = /\p{Cf}/u;

const uploadQuery = z.object({
  name: z
    .string()
    .min(1)
    .max(255)
    .refine((s) => ![...s].some((c) => c < ' ' || c === '\x7f'), 'no control characters')
    .refine(
      (s) => !INVISIBLE.test(s),
      'no invisible format characters (Unicode category Cf: bidirectional controls such as U+202E, zero-width ones such as U+200B)',
    )
    .refine((s) => s.trim() !== '', 'a name, not only spaces'),
  type: z
    .string()
    .max(127)
    .regex(/^[a-z0-9][a-z0-9!#$&^_.+-]*\/[a-z0-9][a-z0-9!#$&^_.+-]*$/i, 'expected a MIME type')
    .default('application/octet-stream'),
});

export function createArchiveLogger(
  level = process.env.LOG_LEVEL ?? 'info',
  destination?: DestinationStream,
): Logger {
  return pino(
    {
      level,
      base: { service: 'archive' },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Second line of defence: the code never logs these.
      redact: {
        paths: ['authorization', 'dpop', 'token', '*.authorization', '*.dpop', '*.token'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}

/** Start the archive; resolves once it accepts connections. */
export async function startArchive(opts: ArchiveOptions): Promise<ArchiveHandle> {
  const log = opts.logger ?? createArchiveLogger();
  const host = opts.host ?? '127.0.0.1';
  const store = ArchiveStore.open(opts.dataDir);
  let publicUrl = opts.publicUrl?.replace(/\/+$/, '');
  const auth = new RequestAuth(opts.oidc, () => publicUrl!);
  const maxDocumentBytes = opts.maxDocumentBytes ?? DEFAULT_MAX_DOCUMENT_BYTES;
  const app = createApp({ ...opts, store, auth, log, maxDocumentBytes, url: () => publicUrl! });
  let server: Server;
  if (opts.server) {
    server = opts.server;
    server.on('request', app);
  } else {
    server = createServer(app);
    answerParseErrors(server);
    server.listen(opts.port ?? 0, host);
    try {
      await once(server, 'listening');
    } catch (err) {
      store.close();
      throw err;
    }
  }
  const port = (server.address() as AddressInfo).port;
  publicUrl ??= `http://${host}:${port}`;
  log.info({ port, url: publicUrl, dataDir: opts.dataDir }, 'archive listening');
  let closing: Promise<void> | undefined;
  return {
    url: publicUrl,
    port,
    store,
    close: () =>
      (closing ??= (async () => {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        store.close();
      })()),
  };
}

interface AppDeps extends ArchiveOptions {
  store: ArchiveStore;
  auth: RequestAuth;
  log: Logger;
  maxDocumentBytes: number;
  url: () => string;
}

function createApp(deps: AppDeps): express.Express {
  const { store, log: rootLog } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');

  app.use((req: Request, res: Response, next: NextFunction) => {
    const reqId = randomUUID();
    const log = rootLog.child({ reqId });
    (res.locals as Locals).log = log;
    const started = performance.now();
    res.setHeader('x-request-id', reqId);
    res.setHeader('x-content-type-options', 'nosniff');
    // The login redirect's code and state must not travel on in a Referer.
    res.setHeader('referrer-policy', 'no-referrer');
    res.on('finish', () => {
      const caller = (res.locals as Locals).caller;
      log.info(
        {
          method: req.method,
          route: (req.route as { path?: string } | undefined)?.path ?? null,
          status: res.statusCode,
          ms: Math.round(performance.now() - started),
          ...(caller ? { tenant: caller.tenant, subject: caller.subject } : {}),
        },
        'request',
      );
    });
    next();
  });

  app.get('/healthz', (_req, res) => {
    res.json({ ok: true });
  });

  // The page: its own scripts only; it talks to itself, the coordinator and the identity
  // provider; documents are shown from blob: URLs.
  const page = (_req: Request, res: Response) => {
    const origins = [deps.coordinatorUrl, deps.oidc.issuer].map((u) => new URL(u).origin);
    res.setHeader(
      'content-security-policy',
      [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "media-src 'self' blob:",
        "frame-src 'self' blob:",
        "object-src 'self' blob:",
        `connect-src 'self' ${origins.join(' ')}`,
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'self'",
      ].join('; '),
    );
    res.setHeader('cache-control', 'no-store');
    res.sendFile('index.html', { root: PUBLIC_DIR });
  };
  app.get('/', page);
  app.get(CALLBACK_PATH, page);

  // No icon; answered so that browsers do not log a 404 on every page load.
  app.get('/favicon.ico', (_req, res) => {
    res.status(204).end();
  });

  app.get('/build/kmaas-sdk.js', (_req, res) => {
    res.setHeader('cache-control', 'no-store');
    res.type('text/javascript').sendFile(deps.sdkBundle);
  });
  app.get('/build/kmaas-sdk.js.map', (_req, res, next) => {
    res.type('application/json').sendFile(`${deps.sdkBundle}.map`, (err) => {
      if (err) next(new KmaasError('ERR_NOT_FOUND', 'no source map'));
    });
  });

  app.get('/config.json', async (_req, res) => {
    const url = deps.url();
    res.setHeader('cache-control', 'no-store');
    res.json({
      issuer: deps.oidc.issuer,
      clientId: deps.clientId ?? DEFAULT_CLIENT_ID,
      redirectUri: url + CALLBACK_PATH,
      resource: deps.oidc.audience,
      coordinatorUrl: deps.coordinatorUrl,
      pins: await deps.pins(),
      maxDocumentBytes: deps.maxDocumentBytes,
    });
  });

  app.use(express.static(PUBLIC_DIR, { index: false, maxAge: 0 }));

  const authenticated = async (req: Request, res: Response, next: NextFunction) => {
    try {
      (res.locals as Locals).caller = await deps.auth.check(req);
      next();
    } catch (err) {
      next(err);
    }
  };
  const callerOf = (res: Response): Caller => (res.locals as Locals).caller!;

  // Known shortcoming: no quota or rate limit per user; any signed-in user may fill the disk.
  app.post('/api/documents', authenticated, async (req, res) => {
    const caller = callerOf(res);
    const query = uploadQuery.safeParse(req.query);
    if (!query.success) {
      const issue = query.error.issues[0]!;
      const field = String(issue.path[0] ?? 'query');
      throw new KmaasError('ERR_VALIDATION', `${field}: ${issue.message}`, { field });
    }
    const maxEnvelopeBytes = deps.maxDocumentBytes + ENVELOPE_OVERHEAD_BYTES;
    const declared = Number(req.get('content-length') ?? NaN);
    if (declared > maxEnvelopeBytes) {
      throw new KmaasError('ERR_BODY_TOO_LARGE', `body: exceeds ${maxEnvelopeBytes} bytes`, {
        field: 'body',
        limit: maxEnvelopeBytes,
      });
    }
    const path = store.tempPath();
    const received = await receiveEnvelope(req, {
      path,
      maxEnvelopeBytes,
      maxPlaintextBytes: deps.maxDocumentBytes,
      onHeader: (header) => {
        // An envelope sealed for another tenant could never be opened by this uploader's
        // tenant: refused before the rest is written.
        if (header.tenant !== caller.tenant) {
          throw new KmaasError(
            'ERR_TOKEN_TENANT',
            `the envelope is for tenant ${header.tenant}; you are signed in for ${caller.tenant}`,
            { tenant: header.tenant },
          );
        }
      },
    });
    const doc = await store.commit(path, {
      name: query.data.name,
      type: query.data.type,
      size: received.plaintextSize,
      envelopeSize: received.envelopeSize,
      tenant: caller.tenant,
      owner: caller.subject,
      documentId: received.header.documentId,
      keyVersion: received.header.keyVersion,
    });
    (res.locals as Locals).log.info(
      { id: doc.id, tenant: doc.tenant, size: doc.size, envelopeSize: doc.envelopeSize },
      'document stored',
    );
    res.status(201).json({ document: doc });
  });

  app.get('/api/documents', authenticated, (_req, res) => {
    res.setHeader('cache-control', 'no-store');
    res.json({ documents: store.list() });
  });

  app.get('/api/documents/:id', authenticated, async (req, res) => {
    const doc = store.get(String(req.params.id));
    res.setHeader('content-type', 'application/octet-stream');
    res.setHeader('content-length', String(doc.envelopeSize));
    res.setHeader('cache-control', 'no-store');
    await pipeline(createReadStream(store.blobPath(doc.id)), res);
  });

  app.delete('/api/documents/:id', authenticated, async (req, res) => {
    const caller = callerOf(res);
    const doc = store.get(String(req.params.id));
    if (doc.tenant !== caller.tenant || doc.owner !== caller.subject) {
      throw new KmaasError('ERR_NOT_OWNER', 'only the uploader may delete a document');
    }
    await store.delete(doc.id);
    res.status(204).end();
  });

  app.use((req: Request, _res: Response, next: NextFunction) => {
    next(new KmaasError('ERR_NOT_FOUND', `no route ${req.method} ${req.path.slice(0, 200)}`));
  });

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const log = (res.locals as Partial<Locals>).log ?? rootLog;
    // The client hung up (an upload cancelled, a download left): nothing went wrong here.
    if (clientWentAway(err, req, res)) {
      const { code, message } = err as { code?: unknown; message?: unknown };
      log.info({ method: req.method, path: req.path, code, reason: message }, 'client went away');
      res.destroy();
      return;
    }
    const e = asArchiveError(err);
    if (e.code === 'ERR_INTERNAL') log.error({ err }, 'request failed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // A body left unread (a refused upload): close rather than read the rest.
    if (!req.complete) res.setHeader('connection', 'close');
    if (e.status === 401) res.setHeader('www-authenticate', wwwAuthenticate(e));
    res.status(e.status).json({ error: e.toBody() });
  });

  return app;
}

/**
 * The challenge of a 401 (RFC 9449 section 7.1, RFC 6750 section 3): the DPoP scheme with the
 * algorithms a proof may use; and, when credentials came but failed, the error code
 * (invalid_dpop_proof for the proof, invalid_token for the token) and our message.
 */
export function wwwAuthenticate(e: KmaasError): string {
  const params = [`algs="${DPOP_ALGS}"`];
  if (e.code !== 'ERR_TOKEN_MISSING') {
    const error = /^ERR_DPOP_/.test(e.code) ? 'invalid_dpop_proof' : 'invalid_token';
    // Quoted-string: no quotes or backslashes, printable ASCII only.
    const description = e.message.replace(/[^\x20-\x7e]|["\\]/g, "'").slice(0, 200);
    params.unshift(`error="${error}"`, `error_description="${description}"`);
  }
  return `DPoP ${params.join(', ')}`;
}

const DPOP_ALGS = ALLOWED_ALGORITHMS.join(' ');

/**
 * Node's codes of a connection the other end closed (in backquotes: they are not KMaaS codes,
 * which test/shared/errors.test.ts looks for in single quotes).
 */
const HANG_UP_CODES = new Set([`ERR_STREAM_PREMATURE_CLOSE`, `ECONNRESET`, `EPIPE`]);

/**
 * A failure that is the client leaving: its request aborted mid-body ("aborted", ECONNRESET),
 * or the response closed before the download was sent (ERR_STREAM_PREMATURE_CLOSE).
 */
function clientWentAway(err: unknown, req: Request, res: Response): boolean {
  if (err instanceof KmaasError) return false;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && HANG_UP_CODES.has(code)) return true;
  return req.destroyed || res.destroyed || (!res.writableFinished && req.socket.destroyed);
}

/** Ours pass through; a client's 4xx from express (a bad path) is ERR_VALIDATION. */
function asArchiveError(err: unknown): KmaasError {
  if (err instanceof KmaasError) return err;
  if (err instanceof URIError) {
    return new KmaasError('ERR_VALIDATION', 'path: malformed percent-encoding');
  }
  const status = (err as { status?: unknown } | null)?.status;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new KmaasError(status === 404 ? 'ERR_NOT_FOUND' : 'ERR_VALIDATION', 'bad request');
  }
  return toKmaasError(err);
}

/** The pins of a pins file as the CLI writes it; none when it is missing or does not parse. */
export function pinsFromFile(path: string): Promise<Pin[]> {
  return new FilePinStore(path).all().catch(() => []);
}
