/**
 * The chaos run's fault-injecting TCP proxy (scripts/chaos/proxy.ts) on loopback, in front of a
 * tiny echo server: each mode does what the chaos report assumes of it.
 */
import { expect } from 'chai';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { FaultProxy } from '../../../scripts/chaos/proxy.ts';

/** A client socket and everything it has received so far. */
async function open(
  port: number,
): Promise<{ socket: Socket; received: () => string; closed: Promise<void> }> {
  const socket = connect({ host: '127.0.0.1', port });
  let data = '';
  socket.on('data', (chunk: Buffer) => (data += chunk.toString()));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, received: () => data, closed };
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await sleep(10);
  expect(check(), what).to.equal(true);
}

describe('chaos fault-injecting TCP proxy', () => {
  let echo: Server;
  let proxy: FaultProxy;
  let port: number;
  const sockets = new Set<Socket>();

  beforeEach(async () => {
    echo = createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
      s.pipe(s);
    });
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    const addr = echo.address();
    proxy = new FaultProxy({ targetPort: typeof addr === 'object' && addr ? addr.port : 0 });
    port = await proxy.listen();
  });

  afterEach(async () => {
    await proxy.close();
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => echo.close(() => resolve()));
  });

  it('pass: bytes go to the server and back unchanged', async () => {
    const c = await open(port);
    c.socket.write('hello');
    await until('echo', () => c.received() === 'hello');
    c.socket.destroy();
  });

  it('latency: each way waits at least ms; chunks keep their order despite jitter', async () => {
    const c = await open(port);
    proxy.setMode({ kind: 'latency', ms: 150, jitterMs: 100 });
    const t0 = performance.now();
    for (const part of ['a', 'b', 'c', 'd']) c.socket.write(part);
    await until('echo', () => c.received() === 'abcd');
    expect(performance.now() - t0).to.be.at.least(295);
    proxy.setMode({ kind: 'pass' });
    c.socket.write('e');
    await until('echo after latency', () => c.received() === 'abcde');
    c.socket.destroy();
  });

  it('drop: nothing is forwarded, new connections hang, and all of it flows once back in pass', async () => {
    const c = await open(port);
    proxy.setMode({ kind: 'drop' });
    c.socket.write('x');
    const late = await open(port);
    late.socket.write('y');
    await sleep(300);
    expect(c.received()).to.equal('');
    expect(late.received()).to.equal('');
    proxy.setMode({ kind: 'pass' });
    await until('held bytes', () => c.received() === 'x' && late.received() === 'y');
    c.socket.destroy();
    late.socket.destroy();
  });

  it('cut: open connections are reset, new ones refused until the mode changes', async () => {
    const c = await open(port);
    proxy.setMode({ kind: 'cut' });
    await c.closed;
    // Reset as it arrives: the client sees the connection fail or close, never an answer.
    const refused = connect({ host: '127.0.0.1', port });
    refused.on('error', () => undefined);
    await new Promise((resolve) => refused.once('close', resolve));
    expect(proxy.stats).to.include({ reset: 1, refused: 1 });
    proxy.setMode({ kind: 'pass' });
    const again = await open(port);
    again.socket.write('back');
    await until('echo after cut', () => again.received() === 'back');
    again.socket.destroy();
  });
});
