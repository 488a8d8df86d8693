/**
 * A small JSON-over-HTTP client for the coordinator API (docs/CONTRACTS.md). Every failure comes
 * out as a KmaasError with a code from shared/errors.ts:
 *
 *   `{ error: { code, message, details } }` body  -> the same code (unknown codes: ERR_INTERNAL)
 *   other non-2xx answers                          -> a code chosen from the HTTP status
 *   no answer (refused, reset, DNS, timeout)       -> ERR_NODE_UNAVAILABLE
 *   a 2xx body that is not JSON                    -> ERR_MALFORMED_JSON
 *
 * Only `fetch` and `AbortSignal` are used, so the module runs in browsers as well as in Node.
 * Credentials travel in the Authorization header only and never appear in an error.
 */
import { isErrorCode, KmaasError, type ErrorCode } from '../shared/errors.ts';
import { errorBodySchema, parseJson } from '../shared/messages.ts';

/** The part of the fetch signature the client uses; tests and browsers may pass their own. */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface HttpClientOptions {
  /** The coordinator's base URL, e.g. `http://127.0.0.1:8080` (a path prefix is kept). */
  baseUrl: string;
  fetch?: FetchLike;
  /** Deadline for one request, answer body included. Default 30 s. */
  timeoutMs?: number;
}

export interface RequestOptions {
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
  /**
   * A DPoP-bound access token and its proof (RFC 9449 section 7.1): sent as
   * `Authorization: DPoP <token>` and `DPoP: <proof>`, instead of `token`.
   */
  dpop?: { token: string; proof: string };
  body?: unknown;
}

export const DEFAULT_TIMEOUT_MS = 30_000;

/** Status of an answer that carries no error body -> the closest documented code. */
function codeForStatus(status: number): ErrorCode {
  if (status === 401 || status === 403) return 'ERR_UNAUTHORIZED';
  if (status === 404) return 'ERR_NOT_FOUND';
  if (status === 413) return 'ERR_BODY_TOO_LARGE';
  if (status === 502 || status === 503 || status === 504) return 'ERR_NODE_UNAVAILABLE';
  if (status >= 400 && status < 500) return 'ERR_VALIDATION';
  return 'ERR_INTERNAL';
}

function parseBaseUrl(baseUrl: string): URL {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new KmaasError('ERR_CONFIG', 'baseUrl: expected an absolute http(s) URL', {
      field: 'baseUrl',
    });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new KmaasError('ERR_CONFIG', 'baseUrl: expected an http or https URL', {
      field: 'baseUrl',
    });
  }
  if (url.username || url.password) {
    // Credentials in a URL end up in logs and error messages; they belong in the token options.
    throw new KmaasError('ERR_CONFIG', 'baseUrl: must not carry credentials', { field: 'baseUrl' });
  }
  return url;
}

export class CoordinatorHttp {
  readonly origin: string;
  private readonly base: string;
  private readonly fetchImpl: FetchLike;
  private readonly timeoutMs: number;

  constructor(opts: HttpClientOptions) {
    const url = parseBaseUrl(opts.baseUrl);
    this.origin = url.origin;
    this.base = url.href.replace(/\/+$/, '');
    // Browsers refuse a fetch called with another `this`, so the global one is bound.
    this.fetchImpl = opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** The full URL of `path`, as requests send it (a DPoP proof's htu). */
  url(path: string): string {
    return this.base + path;
  }

  get(path: string, opts: RequestOptions = {}): Promise<unknown> {
    return this.request('GET', path, opts);
  }

  post(path: string, body: unknown, opts: RequestOptions = {}): Promise<unknown> {
    return this.request('POST', path, { ...opts, body });
  }

  /** One request; resolves with the parsed JSON of a 2xx answer. */
  async request(method: string, path: string, opts: RequestOptions = {}): Promise<unknown> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (opts.dpop !== undefined) {
      headers.authorization = `DPoP ${opts.dpop.token}`;
      headers.dpop = opts.dpop.proof;
    } else if (opts.token !== undefined) {
      headers.authorization = `Bearer ${opts.token}`;
    }
    const init: RequestInit = { method, headers, signal: AbortSignal.timeout(this.timeoutMs) };
    if (opts.body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }

    let status: number;
    let text: string;
    try {
      const res = await this.fetchImpl(this.url(path), init);
      status = res.status;
      text = await res.text();
    } catch (err) {
      throw this.unreachable(method, path, err);
    }

    if (status >= 200 && status < 300) {
      // A 202 or 204 may come without a body.
      return text === '' ? undefined : parseJson(text);
    }
    throw this.errorFromAnswer(method, path, status, text);
  }

  private unreachable(method: string, path: string, err: unknown): KmaasError {
    const timedOut = err instanceof Error && err.name === 'TimeoutError';
    const why = timedOut ? `no answer within ${this.timeoutMs} ms` : 'unreachable';
    return new KmaasError('ERR_NODE_UNAVAILABLE', `coordinator ${this.origin} ${why}`, {
      url: this.origin,
      method,
      path,
      ...(timedOut ? { timeoutMs: this.timeoutMs } : {}),
    });
  }

  private errorFromAnswer(method: string, path: string, status: number, text: string): KmaasError {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const coded = errorFromBody((body as { error?: unknown } | undefined)?.error);
    if (coded) return coded;
    return new KmaasError(
      codeForStatus(status),
      `coordinator answered ${method} ${path} with HTTP ${status}`,
      { status, method, path },
    );
  }
}

/**
 * `{ code, message, details? }` as a KmaasError (codes this client does not know become
 * ERR_INTERNAL), or undefined when `body` does not have that shape.
 */
export function errorFromBody(body: unknown): KmaasError | undefined {
  const parsed = errorBodySchema.safeParse(body);
  if (!parsed.success) return undefined;
  const { code, message, details } = parsed.data;
  return new KmaasError(isErrorCode(code) ? code : 'ERR_INTERNAL', message, details);
}

/** A path segment, escaped. Tenants and ids are validated elsewhere; this only keeps URLs sound. */
export function seg(value: string | number): string {
  return encodeURIComponent(String(value));
}
