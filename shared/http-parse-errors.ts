/**
 * Requests Node's HTTP parser refuses before any handler runs (a header block over the limit,
 * bytes that are not HTTP/1.1) would otherwise get a bare status line and no body. Here they get
 * the same coded JSON error as every other refusal, and the connection is closed.
 */
import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { KmaasError } from './errors.ts';

interface ParseError extends Error {
  code?: string;
}

function refusalOf(err: ParseError): KmaasError {
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    return new KmaasError(
      'ERR_HEADERS_TOO_LARGE',
      'the request line and headers exceed the size limit (a name or query that long belongs in a body)',
    );
  }
  return new KmaasError('ERR_MALFORMED_REQUEST', 'the request is not well-formed HTTP/1.1');
}

export function answerParseErrors(server: Server): void {
  server.on('clientError', (err: ParseError, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const e = refusalOf(err);
    const body = JSON.stringify({ error: e.toBody() });
    socket.end(
      `HTTP/1.1 ${e.status} ${e.status === 431 ? 'Request Header Fields Too Large' : 'Bad Request'}\r\n` +
        'content-type: application/json; charset=utf-8\r\n' +
        `content-length: ${Buffer.byteLength(body)}\r\n` +
        'connection: close\r\n\r\n' +
        body,
    );
  });
}
