/**
 * Requests Node's HTTP parser refuses before any handler runs (a header block over the limit,
 * bytes that are not HTTP/1.1) would otherwise get a bare status line and no body. Here they get
 * the same coded JSON error as every other refusal, and the connection is closed. What is not a
 * parse error (a request timeout) is answered as Node answers it.
 */
import { STATUS_CODES, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { KmaasError } from './errors.ts';

interface ClientError extends Error {
  code?: string;
}

function refusalOf(code: string): KmaasError {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return new KmaasError(
        'ERR_HEADERS_TOO_LARGE',
        'the request line and headers exceed the size limit (a name or query that long belongs in a body)',
      );
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return new KmaasError('ERR_BODY_TOO_LARGE', 'chunk extensions exceed the size limit');
    default:
      return new KmaasError('ERR_MALFORMED_REQUEST', 'the request is not well-formed HTTP/1.1');
  }
}

/** Node's code (in backquotes: not a KMaaS code, which test/shared/errors.test.ts looks for). */
const NODE_REQUEST_TIMEOUT = `ERR_HTTP_REQUEST_TIMEOUT`;

function statusLine(status: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
}

export function answerParseErrors(server: Server): void {
  server.on('clientError', (err: ClientError, socket: Socket) => {
    // Nothing can be said on a socket that is gone. (A kept-alive socket has carried earlier
    // answers; the parser fails on a new request, so no answer is under way on it.)
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    // Ended, not destroyed: a reset would discard the answer while the client still sends (an
    // upload's body). A client that never closes its side is cut off after a while.
    socket.setTimeout(5000, () => socket.destroy());
    const code = err.code ?? '';
    if (!code.startsWith('HPE_')) {
      socket.end(
        code === NODE_REQUEST_TIMEOUT
          ? `${statusLine(408)}connection: close\r\n\r\n`
          : `${statusLine(400)}connection: close\r\n\r\n`,
      );
      return;
    }
    const e = refusalOf(code);
    const body = JSON.stringify({ error: e.toBody() });
    socket.end(
      statusLine(e.status) +
        'content-type: application/json; charset=utf-8\r\n' +
        `content-length: ${Buffer.byteLength(body)}\r\n` +
        'connection: close\r\n\r\n' +
        body,
    );
  });
}
