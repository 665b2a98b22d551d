/**
 * The small plain-HTTP server beside the API for probes and scrapes: `/metrics` on
 * METRICS_PORT (one process, or the cluster primary's aggregate), and `/health/live`,
 * `/health/ready`, `/metrics` of a `loanbook worker` on WORKER_HTTP_PORT. node:http, not
 * Fastify: three read-only routes, no auth, no body, and it must keep answering while
 * the process drains. Answers look like the API's: the same health bodies, problem+json
 * errors and baseline headers.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { AppError, coerceError } from './errors.js';
import { runHealthChecks, type HealthCheck } from './health.js';
import { BASELINE_SECURITY_HEADERS } from './http-errors.js';
import type { Logger } from './logger.js';

export interface MetricsSource {
  readonly contentType: string;
  metrics(): Promise<string>;
}

export interface OpsHttpOptions {
  readonly logger: Logger;
  readonly metrics?: MetricsSource;
  /** Serves /health/live and /health/ready when given. */
  readonly health?: {
    readonly checks: readonly HealthCheck[];
    /** True once shutdown has begun: ready answers 503 while live stays 200. */
    readonly isShuttingDown: () => boolean;
    readonly version: string;
    readonly timeoutMs?: number;
  };
}

export interface OpsHttpServer {
  /** Resolves with the bound port (0 asks the OS for a free one). */
  listen(port: number, host: string): Promise<number>;
  close(): Promise<void>;
  readonly server: Server;
}

export function createOpsHttpServer(options: OpsHttpOptions): OpsHttpServer {
  const { logger, metrics, health } = options;
  const send = (req: IncomingMessage, res: ServerResponse, status: number, contentType: string, body: string) => {
    res.writeHead(status, { ...BASELINE_SECURITY_HEADERS, 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  const problem = (req: IncomingMessage, res: ServerResponse, error: AppError) =>
    send(req, res, error.status, 'application/problem+json', JSON.stringify(error.toProblem()));

  const routes = new Map<string, () => Promise<{ status: number; contentType: string; body: string }>>();
  if (metrics) {
    routes.set('/metrics', async () => ({ status: 200, contentType: metrics.contentType, body: await metrics.metrics() }));
  }
  if (health) {
    const json = 'application/json; charset=utf-8';
    routes.set('/health/live', async () => ({
      status: 200,
      contentType: json,
      body: JSON.stringify({ status: 'ok', version: health.version, uptime_seconds: Math.round(process.uptime()) }),
    }));
    routes.set('/health/ready', async () => {
      const report = await runHealthChecks(health.checks, health.timeoutMs ?? 2000);
      const body = health.isShuttingDown() ? { ...report, status: 'fail' as const, shutting_down: true } : report;
      return { status: body.status === 'fail' ? 503 : 200, contentType: json, body: JSON.stringify({ ...body, version: health.version }) };
    });
  }

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const route = routes.get(path);
    if (route === undefined) return problem(req, res, new AppError('not_found'));
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return problem(req, res, new AppError('method_not_allowed'));
    }
    route()
      .then((r) => send(req, res, r.status, r.contentType, r.body))
      .catch((e: unknown) => {
        logger.error({ err: coerceError(e), path }, 'ops endpoint failed');
        problem(req, res, new AppError('internal_error'));
      });
  });
  // Probes and scrapes open a connection each; none may hold a drain open.
  server.keepAliveTimeout = 1000;

  return {
    server,
    listen: (port, host) =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          server.on('error', (e) => logger.error({ err: coerceError(e) }, 'ops HTTP server error'));
          const address = server.address();
          resolve(typeof address === 'object' && address !== null ? address.port : port);
        });
      }),
    close: () =>
      new Promise((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
