/**
 * Prometheus metrics with the names the deployment guides use. One registry per app
 * (tests build many apps in one process); Node process metrics are included.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { App } from './http.js';

export interface Metrics {
  readonly registry: Registry;
  readonly httpRequestsTotal: Counter<'method' | 'route' | 'status'>;
  readonly httpRequestDuration: Histogram<'method' | 'route' | 'status'>;
  readonly activeRequests: Gauge;
  readonly rateLimitStoreFallbacks: Counter;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    httpRequestsTotal: new Counter({
      name: 'http_requests_total',
      help: 'HTTP requests by method, route template and status code',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [registry],
    }),
    httpRequestDuration: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request duration in seconds, by method, route template and status code',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    activeRequests: new Gauge({
      name: 'active_requests',
      help: 'HTTP requests in flight',
      registers: [registry],
    }),
    rateLimitStoreFallbacks: new Counter({
      name: 'loanbook_rate_limit_store_fallbacks_total',
      help: 'Rate-limit decisions taken in process because Redis was unavailable',
      registers: [registry],
    }),
  };
}

/** Requests counted in `active_requests` and not yet released. */
const inFlight = new WeakSet<object>();

/**
 * Counts and times every request; the route label is the template, never the raw URL.
 *
 * `active_requests` is released exactly once per request that incremented it: onResponse
 * and onRequestAbort may both fire for one request, and an earlier onRequest hook (a CORS
 * preflight answered in its hook, an authentication lookup that throws) can end a request
 * before this hook ever ran. The duration is Fastify's own `reply.elapsedTime`, measured
 * from the moment the request arrived, so those requests are timed too.
 */
export function installHttpMetrics(app: App, metrics: Metrics): void {
  const release = (request: object) => {
    if (inFlight.delete(request)) metrics.activeRequests.dec();
  };
  app.addHook('onRequest', async (request) => {
    inFlight.add(request);
    metrics.activeRequests.inc();
  });
  app.addHook('onResponse', async (request, reply) => {
    release(request);
    const route = request.routeOptions.url ?? 'unmatched';
    const labels = { method: request.method, route, status: String(reply.statusCode) };
    metrics.httpRequestsTotal.inc(labels);
    metrics.httpRequestDuration.observe(labels, reply.elapsedTime / 1000);
  });
  app.addHook('onRequestAbort', async (request) => {
    release(request);
  });
}

export function registerMetricsRoute(app: App, metrics: Metrics): void {
  app.get('/metrics', { config: { auth: 'public', rateLimit: false }, schema: { hide: true } }, async (_request, reply) => {
    void reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
}
