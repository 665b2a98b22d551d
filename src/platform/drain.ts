/**
 * Draining an HTTP server without failing a request a client has already sent.
 *
 * `server.close()` (Node ≥ 19) also destroys every kept-alive connection that is idle at
 * that instant. A client may be writing its next request on one of them at that very
 * moment; it then sees ECONNRESET (or, once Fastify is closing, a 503) for a request it
 * had every reason to expect served. A load driver on keep-alive connections hits that
 * window on every restart. So the drain here:
 *
 * 1. stops accepting connections (the listening socket only; in a cluster worker this
 *    tells the primary to hand new connections to the other workers);
 * 2. keeps serving the connections it has: every response from now on carries
 *    `Connection: close`, so the client learns on its next request that this
 *    connection ends, and reconnects (to another process) for the one after;
 * 3. lets a connection that stays idle close by the server's keep-alive timeout, the
 *    same rule clients already live with outside a drain;
 * 4. is done when the last connection has closed, or at the deadline.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { Server as NetServer } from 'node:net';

export interface HttpDrain {
  /** Whether a drain has begun. */
  readonly draining: boolean;
  /**
   * Stops accepting connections and waits until every open one has closed. Resolves
   * true when they all did, false when `deadlineMs` passed first (the caller then closes
   * what is left).
   */
  drain(deadlineMs: number): Promise<boolean>;
  /** Connections still open. */
  openConnections(): number;
}

/** Install before the server listens, so every connection and request is seen. */
export function trackHttpDrain(server: Server): HttpDrain {
  const inFlight = new Set<ServerResponse>();
  let connections = 0;
  let draining = false;
  server.on('connection', (socket) => {
    connections++;
    socket.once('close', () => connections--);
  });
  // Before Fastify's handler: the header must be set before any hook can answer.
  server.prependListener('request', (_req: IncomingMessage, res: ServerResponse) => {
    if (draining) res.setHeader('connection', 'close');
    inFlight.add(res);
    res.once('close', () => inFlight.delete(res));
  });
  return {
    get draining() {
      return draining;
    },
    openConnections: () => connections,
    drain(deadlineMs) {
      draining = true;
      // Responses not yet started say so now; a connection whose response is already on
      // the wire learns it on its next request, or closes when idle.
      for (const res of inFlight) if (!res.headersSent) res.setHeader('connection', 'close');
      return new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), deadlineMs);
        timer.unref();
        const done = () => {
          clearTimeout(timer);
          resolve(true);
        };
        // net.Server's close: stops listening (if it was) and calls back once the last
        // connection has closed, without http.Server's closeIdleConnections() (the race
        // described above).
        NetServer.prototype.close.call(server, () => done());
      });
    },
  };
}
