/**
 * drain.ts on a plain node:http server over loopback: the listener closes, kept-alive
 * connections are served with `Connection: close` instead of being cut, and the drain
 * ends when the last connection has closed, or reports the deadline.
 */
import { Agent, createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { trackHttpDrain } from '../../src/platform/drain.js';

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    s.close();
  }
});

async function start(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const server = createServer(handler);
  server.keepAliveTimeout = 60_000; // longer than any test: only the drain may end a connection
  servers.push(server);
  const drain = trackHttpDrain(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, drain, port: (server.address() as AddressInfo).port };
}

function get(port: number, agent: Agent | false): Promise<{ status: number; connection: string | undefined; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, reused: req.reusedSocket }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('trackHttpDrain', () => {
  it('closes the listener, serves a request on an idle kept-alive connection with Connection: close, then resolves true', async () => {
    const { drain, port } = await start((_req, res) => res.end('ok'));
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    expect(await get(port, agent)).toMatchObject({ status: 200, connection: 'keep-alive', reused: false });
    expect(drain.openConnections()).toBe(1);

    const drained = drain.drain(60_000);
    expect(drain.draining).toBe(true);
    await expect(get(port, false)).rejects.toThrow(/ECONNREFUSED/);
    // The idle connection was not cut: the next request on it is answered, and told to close.
    expect(await get(port, agent)).toStrictEqual({ status: 200, connection: 'close', reused: true });
    expect(await drained).toBe(true);
    expect(drain.openConnections()).toBe(0);
    agent.destroy();
  });

  it('a response still in flight at the drain is sent with Connection: close', async () => {
    let finish!: () => void;
    let onArrival!: () => void;
    const arrived = new Promise<void>((r) => (onArrival = r));
    const { drain, port } = await start((_req, res) => {
      finish = () => res.end('late');
      onArrival();
    });
    const agent = new Agent({ keepAlive: true });
    const response = get(port, agent);
    await arrived;
    const drained = drain.drain(60_000);
    finish();
    expect(await response).toMatchObject({ status: 200, connection: 'close' });
    expect(await drained).toBe(true);
    agent.destroy();
  });

  it('resolves false at the deadline while a connection stays open', async () => {
    const { drain, port } = await start((_req, res) => res.end('ok'));
    const agent = new Agent({ keepAlive: true });
    await get(port, agent); // now idle, and the keep-alive timeout is a minute away
    expect(await drain.drain(50)).toBe(false);
    expect(drain.openConnections()).toBe(1);
    agent.destroy();
  });
});
