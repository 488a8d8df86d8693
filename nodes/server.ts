/**
 * The share node's network face (docs/CONTRACTS.md, "Share node"): one HTTP server with
 *
 *   GET /healthz  -> { ok: true, node, keys, identity } (no credential; a key count and the
 *                 node's identity public keys). No route takes a body: one that comes with a
 *                 body is refused unread, 413 ERR_BODY_TOO_LARGE, and the connection closed.
 *   /v1/ws        WebSocket upgrade for the coordinator, `Authorization: Bearer <cluster token>`
 *                 (RFC 6750 section 2.1), refused with 401 before any WebSocket exists. A
 *                 message over MAX_MESSAGE_BYTES gets an ERR_BODY_TOO_LARGE reply; a frame over
 *                 MAX_PAYLOAD closes the socket (1009).
 *
 * startNode opens the store (ERR_WRONG_NODE_SECRET stops it there), loads every key into memory,
 * opens the audit log (audit-log.ts; every evaluation and DKG message is recorded), then
 * listens. close() is idempotent and runs every cleanup step even when one fails.
 */
import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import { ERROR_CODES, toKmaasError, type ErrorCode } from '../shared/errors.ts';
import { PROTOCOL_VERSION } from '../shared/messages.ts';
import type { Rng } from '../shared/shamir.ts';
import { bearerToken, tokenMatches } from '../shared/bearer.ts';
import { answerParseErrors } from '../shared/http-parse-errors.ts';
import { EvaluationAuth } from '../shared/evaluation-auth.ts';
import { AuditLog } from './audit-log.ts';
import { auditRequest } from './audit-request.ts';
import {
  DEFAULT_RATE_ELEMENTS_PER_MIN,
  DEFAULT_RESHARE_FINISH_AFTER_MS,
  type NodeConfig,
} from './config.ts';
import type { NodeContext } from './context.ts';
import { startCeremonyExpiry } from './dkg-expiry.ts';
import { LIE_FILE } from './evaluate.ts';
import { NodeIdentity } from './identity.ts';
import { Keyring } from './keyring.ts';
import { createLogger } from './logger.ts';
import { createDispatcher } from './protocol.ts';
import { ElementRateLimit } from './rate-limit.ts';
import { reshareGate, reshareStatus, startReshareFinisher } from './reshare.ts';
import { NodeStore } from './store.ts';

export const WS_PATH = '/v1/ws';
/**
 * Far above any valid message (a full batch is ~12 KiB, a 32-node DKG round under 100 KiB): a
 * bigger message gets an ERR_BODY_TOO_LARGE reply, unparsed, and the socket stays open.
 */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
/**
 * What `ws` buffers at most: a frame beyond it cannot be answered (ws closes the socket with 1009
 * before any handler sees it), so the coded limit above sits well below it.
 */
export const MAX_PAYLOAD = 4 * MAX_MESSAGE_BYTES;
/** A coordinator that stops answering pings is dropped after one missed interval. */
const PING_INTERVAL_MS = 30_000;

export interface NodeHandle {
  /** The port actually bound (also when the configuration asked for port 0). */
  port: number;
  /** ws://host:port/v1/ws */
  url: string;
  /** Idempotent; resolves when the server, every socket and the database are closed. */
  close(): Promise<void>;
}

export interface StartOptions {
  /** Randomness for DKG and proofs; default the crypto RNG. Tests only. */
  rng?: Rng;
  /** Replaces the per-minute limit of the configuration (shorter windows). Tests only. */
  rateLimit?: ElementRateLimit;
  /** Replaces the verifier built from `config.oidc` (a test clock, no JWKS cooldown). Tests only. */
  auth?: EvaluationAuth;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

function errorBody(code: ErrorCode, message: string) {
  return { error: { code, message } };
}

/** The node's HTTP routes take no body: any request that carries one is refused unread. */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** The id of an oversized message from its first bytes, without parsing all of it. */
function leadingId(data: Buffer): string {
  const head = data.subarray(0, 512).toString('utf8');
  return /"id"\s*:\s*"([A-Za-z0-9._:-]{1,128})"/.exec(head)?.[1] ?? 'unknown';
}

/** Refuse an upgrade with a plain HTTP response; the socket never becomes a WebSocket. */
function refuseUpgrade(socket: Duplex, code: ErrorCode, message: string): void {
  const { status } = ERROR_CODES[code];
  const text = JSON.stringify(errorBody(code, message));
  const reason = status === 401 ? 'Unauthorized' : 'Not Found';
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\n` +
      'Connection: close\r\n' +
      'Content-Type: application/json\r\n' +
      (status === 401 ? 'WWW-Authenticate: Bearer\r\n' : '') +
      `Content-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
  );
}

function pathOf(req: IncomingMessage): string {
  try {
    return new URL(req.url ?? '/', 'http://node').pathname;
  } catch {
    return '';
  }
}

/** Run every step, even after one throws; report all failures together at the end. */
async function runAll(steps: [string, () => unknown][], logger: Logger): Promise<void> {
  const failures: unknown[] = [];
  for (const [name, step] of steps) {
    try {
      await step();
    } catch (err) {
      logger.error({ err, step: name }, 'close step failed');
      failures.push(err);
    }
  }
  if (failures.length > 0) throw new AggregateError(failures, 'node close failed');
}

export async function startNode(
  config: NodeConfig,
  logger: Logger = createLogger(config.logLevel),
  options: StartOptions = {},
): Promise<NodeHandle> {
  // Every line names its node; a logger the caller already bound to it is used as it is.
  const log = logger.bindings().node === undefined ? logger.child({ node: config.nodeId }) : logger;
  const store = NodeStore.open(config.dataDir, config.nodeId, config.secret);
  let keyring: Keyring;
  let audit: AuditLog;
  let identity: NodeIdentity;
  try {
    identity = NodeIdentity.loadOrCreate(store);
    keyring = new Keyring(config.nodeId, store.currentEpoch());
    for (const key of store.listKeys()) keyring.add(key);
    for (const r of store.listRetired()) keyring.retire(r.tenant, r.version);
    const signer = identity;
    audit = await AuditLog.open(config.dataDir, {
      logger: log,
      signer: {
        node: config.nodeId,
        sign: (message) => signer.sign(message),
        publicKey: signer.signingPublicKey,
      },
    });
  } catch (err) {
    store.close();
    throw err;
  }
  // The issuer may start after the node: its keys are fetched in the background, and again on
  // each evaluation until they arrive (ERR_ISSUER_UNAVAILABLE meanwhile).
  const auth = options.auth ?? new EvaluationAuth(config.oidc);
  auth.prefetch().then(
    () => log.debug({ issuer: config.oidc.issuer }, 'identity provider keys fetched'),
    (err: unknown) =>
      log.warn(
        { issuer: config.oidc.issuer, code: toKmaasError(err).code },
        'identity provider not reachable yet; evaluations wait for it',
      ),
  );
  // Abandoned DKG ceremonies: expired now and hourly (dkg-expiry.ts).
  const stopExpiry = startCeremonyExpiry(store, log);
  const ctx: NodeContext = {
    nodeId: config.nodeId,
    store,
    keyring,
    identity,
    auth,
    policy: { clusterId: config.clusterId, ...config.operators },
    audit,
    rateLimit:
      options.rateLimit ??
      ElementRateLimit.perMinute(config.rateElementsPerMin ?? DEFAULT_RATE_ELEMENTS_PER_MIN),
    ...(options.rng ? { rng: options.rng } : {}),
    ...(config.failpoints?.length ? { failpoints: new Set(config.failpoints) } : {}),
    ...(config.failpoints?.includes('evaluate.lie')
      ? { lying: () => existsSync(join(config.dataDir, LIE_FILE)) }
      : {}),
  };
  // Resharing (reshare.ts): DKG waits while a reshare is open; status reports it.
  ctx.ceremonyGate = reshareGate(ctx);
  ctx.reshareStatus = reshareStatus(ctx);
  if (config.failpoints?.length) {
    log.warn(
      { failpoints: config.failpoints },
      'test failpoints are set: this node fails on purpose (kills itself or lies)',
    );
  }
  // Committed reshares finish on their own after a while: now, and periodically.
  const stopFinisher = startReshareFinisher(
    ctx,
    log,
    config.reshareFinishAfterMs ?? DEFAULT_RESHARE_FINISH_AFTER_MS,
  );

  const http = createServer((req, res) => {
    if (hasBody(req)) {
      // Closing the connection after the answer stops the rest of the body from being read.
      res.setHeader('connection', 'close');
      sendJson(res, 413, errorBody('ERR_BODY_TOO_LARGE', 'body: this node takes no request body'));
    } else if (req.method === 'GET' && pathOf(req) === '/healthz') {
      sendJson(res, 200, {
        ok: true,
        node: config.nodeId,
        keys: keyring.size,
        identity: identity.published(),
        cluster: config.clusterId,
      });
    } else {
      sendJson(res, 404, errorBody('ERR_NOT_FOUND', `no route ${req.method} ${pathOf(req)}`));
    }
  });
  answerParseErrors(http);
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD });
  const alive = new WeakSet<WebSocket>();

  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', (err) => log.debug({ err }, 'upgrade socket error'));
    if (pathOf(req) !== WS_PATH) {
      refuseUpgrade(socket, 'ERR_NOT_FOUND', `no WebSocket endpoint at ${pathOf(req)}`);
      return;
    }
    if (!tokenMatches(bearerToken(req.headers.authorization), config.clusterToken)) {
      log.warn(
        { remote: req.socket.remoteAddress },
        'WebSocket upgrade refused: bad cluster token',
      );
      refuseUpgrade(socket, 'ERR_UNAUTHORIZED', 'a valid cluster bearer token is required');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });

  wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    const connLog = log.child({ connection: randomUUID() });
    const dispatch = createDispatcher(ctx, connLog);
    connLog.info({ remote: req.socket.remoteAddress }, 'coordinator connected');
    alive.add(ws);
    ws.on('pong', () => alive.add(ws));
    ws.on('message', (data, isBinary) => {
      const bytes = Array.isArray(data)
        ? Buffer.concat(data)
        : Buffer.isBuffer(data)
          ? data
          : Buffer.from(data);
      if (bytes.length > MAX_MESSAGE_BYTES) {
        const id = leadingId(bytes);
        connLog.warn({ requestId: id, bytes: bytes.length }, 'message over the size limit refused');
        const error = {
          code: 'ERR_BODY_TOO_LARGE',
          message: `message of ${bytes.length} bytes exceeds ${MAX_MESSAGE_BYTES} bytes`,
          details: { limit: MAX_MESSAGE_BYTES },
        };
        ws.send(JSON.stringify({ v: PROTOCOL_VERSION, id, ok: false, error }));
        return;
      }
      if (isBinary) connLog.debug('binary frame read as UTF-8 text');
      void answer(bytes.toString('utf8'));
    });
    // Evaluation awaits the rate limit (rate-limit.ts); replies are matched by id, not by order.
    const answer = async (text: string): Promise<void> => {
      const { reply, json, subject } = await dispatch(text);
      auditRequest(ctx, json, reply, connLog, subject);
      ws.send(JSON.stringify(reply));
    };
    ws.on('error', (err) => connLog.warn({ err }, 'WebSocket error'));
    ws.on('close', (code) => connLog.info({ code }, 'coordinator disconnected'));
  });

  const pinger = setInterval(() => {
    for (const ws of wss.clients) {
      if (!alive.has(ws)) {
        ws.terminate();
        continue;
      }
      alive.delete(ws);
      ws.ping();
    }
  }, PING_INTERVAL_MS);
  pinger.unref();

  try {
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(config.port, config.host, () => {
        http.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    clearInterval(pinger);
    stopExpiry();
    stopFinisher();
    await audit
      .close(toKmaasError(err).code)
      .catch((e: unknown) => log.error({ err: e }, 'audit log close failed'));
    store.close();
    identity.destroy();
    throw err;
  }
  http.on('error', (err) => log.error({ err }, 'HTTP server error'));
  const address = http.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= runAll(
      [
        ['stop pings', () => clearInterval(pinger)],
        ['stop ceremony expiry', stopExpiry],
        ['stop reshare finisher', stopFinisher],
        [
          'close WebSockets',
          () => {
            for (const ws of wss.clients) ws.terminate();
          },
        ],
        ['close WebSocket server', () => new Promise<void>((r) => wss.close(() => r()))],
        [
          'close HTTP server',
          () =>
            new Promise<void>((resolve, reject) => {
              http.close((err) => (err ? reject(err) : resolve()));
              http.closeAllConnections();
            }),
        ],
        ['close audit log', () => audit.close()],
        ['close store', () => store.close()],
        ['erase identity keys', () => identity.destroy()],
      ],
      log,
    ).then(() => log.info('node closed')));

  log.debug({ port, keys: keyring.size }, 'node started');
  return { port, url: `ws://${host}:${port}${WS_PATH}`, close };
}
