/** Network helpers for tests: free ports and a TCP relay that can be cut, restored and stalled. */
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/** A port nothing listens on right now (bound once, then released). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A TCP relay in front of a real service (PostgreSQL, Redis) that a test can kill, revive and stall. */
export interface Relay {
  readonly port: number;
  /** Closes the listener and every relayed connection: the service looks gone. */
  kill(): Promise<void>;
  /** Listens again on the same port. */
  revive(): Promise<void>;
  /** While stalled, bytes are held (not lost) in both directions. */
  stall(on: boolean): void;
}

export async function startRelay(host: string, targetPort: number): Promise<Relay> {
  const sockets = new Set<Socket>();
  let stalled = false;
  const held: { to: Socket; data: Buffer }[] = [];
  const forward = (to: Socket, data: Buffer) => {
    if (stalled) held.push({ to, data });
    else to.write(data);
  };
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, host);
    sockets.add(client);
    sockets.add(upstream);
    client.on('data', (d: Buffer) => forward(upstream, d));
    upstream.on('data', (d: Buffer) => forward(client, d));
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    async kill() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      sockets.clear();
      await closed;
    },
    async revive() {
      await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
    },
    stall(on) {
      stalled = on;
      if (!on) for (const h of held.splice(0)) if (!h.to.destroyed) h.to.write(h.data);
    },
  };
}
