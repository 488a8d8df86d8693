/**
 * Requests Node's HTTP parser refuses (shared/http-parse-errors.ts) get a coded JSON error over a
 * raw socket, and the server goes on serving.
 */
import { expect } from 'chai';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { answerParseErrors } from '../../shared/http-parse-errors.ts';

/** Send raw bytes and read everything until the server closes. */
async function raw(port: number, bytes: string): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => undefined);
  socket.write(bytes);
  await once(socket, 'close');
  return Buffer.concat(chunks).toString('utf8');
}

function parse(reply: string): { status: number; body: { error: { code: string } } } {
  const [head, body] = reply.split('\r\n\r\n');
  return {
    status: Number(head!.split(' ')[1]),
    body: JSON.parse(body!) as { error: { code: string } },
  };
}

describe('HTTP requests the parser refuses', () => {
  let server: Server;
  let port: number;
  before(async () => {
    server = createServer((_req, res) => res.end('ok'));
    answerParseErrors(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  after(() => server.close());

  it('a request line over the header limit: 431 ERR_HEADERS_TOO_LARGE', async () => {
    const reply = await raw(port, `GET /?name=${'a'.repeat(100_000)} HTTP/1.1\r\nhost: x\r\n\r\n`);
    const { status, body } = parse(reply);
    expect(status).to.equal(431);
    expect(body.error.code).to.equal('ERR_HEADERS_TOO_LARGE');
    expect(reply.toLowerCase()).to.include('content-type: application/json');
  });

  it('bytes that are not HTTP: 400 ERR_MALFORMED_REQUEST', async () => {
    const { status, body } = parse(await raw(port, 'HELLO THERE\r\n\r\n'));
    expect(status).to.equal(400);
    expect(body.error.code).to.equal('ERR_MALFORMED_REQUEST');
  });

  it('the server still answers a well-formed request', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/`);
    expect(await res.text()).to.equal('ok');
  });
});
