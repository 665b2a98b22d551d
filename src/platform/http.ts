/**
 * The HTTP server factory: Fastify with zod schemas (validation and OpenAPI from one
 * source), problem+json errors, limits, security headers, CORS, compression, request
 * and correlation ids. Domain parts register their routes on the returned instance;
 * nothing here knows a domain.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import compress from '@fastify/compress';
import cors from '@fastify/cors';
import helmet from '@fastify/helmet';
import Fastify, { LogController } from 'fastify';
import type { FastifyInstance, RouteOptions } from 'fastify';
import FindMyWay from 'find-my-way';
import type { HTTPMethod } from 'find-my-way';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { withCheckoutBudget } from './database.js';
import { AppError, coerceError } from './errors.js';
import { BASELINE_SECURITY_HEADERS, installErrorHandling, sendProblem, writeClientError } from './http-errors.js';
import type { Logger } from './logger.js';
import { installOpenApi } from './openapi.js';
import { installRequestTracing } from './telemetry.js';

export { BASELINE_SECURITY_HEADERS, sendProblem } from './http-errors.js';
export { registerDocsRoutes } from './openapi.js';

/** Who is calling: set by the authentication hook from a verified token. */
export interface Principal {
  readonly userId: string;
  readonly role: string;
  readonly sessionId: string;
}

/** Verifies a bearer token. Returns null for every kind of invalid token (one 401 for all). */
export interface Authenticator {
  authenticate(bearerToken: string): Promise<Principal | null>;
}

/** `'public'` or the roles that may call the route. Every route declares one. */
export type RouteAuth = 'public' | readonly string[];

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: RouteAuth;
    /** Money-moving and creating POSTs: 'required'. Other POSTs may opt in with 'optional'. */
    idempotency?: 'required' | 'optional';
    /** Set false for probes and scrapes. */
    rateLimit?: boolean;
  }
  interface FastifyRequest {
    principal: Principal | null;
    correlationId: string;
  }
}

export type App = FastifyInstance<Server, IncomingMessage, ServerResponse, Logger, ZodTypeProvider>;

export interface HttpOptions {
  readonly logger: Logger;
  readonly bodyLimitBytes: number;
  readonly jsonMaxDepth: number;
  readonly requestTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly trustProxy: boolean | string;
  readonly allowedOrigins: readonly string[];
  readonly authenticator: Authenticator;
  readonly openapi: { readonly title: string; readonly version: string; readonly description: string };
  /** A span per request (OpenTelemetry); its hooks come before all others. */
  readonly tracing?: boolean;
  /** Requests in progress at once; the next gets 503 before any work is done for it. Default: no limit. */
  readonly maxInFlight?: number;
  /** How long an admitted request may wait for database connections, all its checkouts together (DB_POOL_ACQUIRE_TIMEOUT_MS). */
  readonly checkoutBudgetMs?: number;
}

const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
const UNAUTHENTICATED_DETAIL = 'The access token is missing, malformed, expired or revoked.';
const HTTP_METHODS: readonly HTTPMethod[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

export async function createHttpServer(options: HttpOptions): Promise<App> {
  const app = Fastify({
    loggerInstance: options.logger,
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'request_id' }),
    requestIdHeader: false,
    genReqId: (req) => {
      const incoming = req.headers['x-request-id'];
      return typeof incoming === 'string' && REQUEST_ID_PATTERN.test(incoming) ? incoming : randomUUID();
    },
    bodyLimit: options.bodyLimitBytes,
    requestTimeout: options.requestTimeoutMs,
    keepAliveTimeout: options.keepAliveTimeoutMs,
    connectionTimeout: options.requestTimeoutMs + options.headersTimeoutMs,
    trustProxy: options.trustProxy,
    // Fastify's own 503 while closing is plain JSON without our headers; the hook below answers instead.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 200 },
    // Undecodable URLs and over-long path parameters never reach the hooks or the error handler.
    frameworkErrors: (error, request, reply) => {
      void reply.headers(BASELINE_SECURITY_HEADERS).header('x-request-id', request.id).header('x-correlation-id', request.id);
      const err =
        error.code === 'FST_ERR_BAD_URL'
          ? new AppError('bad_request', { detail: 'The URL cannot be decoded.' })
          : error.code === 'FST_ERR_MAX_PARAM_LENGTH'
            ? new AppError('uri_too_long')
            : new AppError('internal_error');
      if (err.code === 'internal_error') request.log.error({ err: coerceError(error) }, 'framework error');
      void sendProblem(request, reply, err);
    },
    clientErrorHandler: (error, socket) => writeClientError(error, socket, options.logger),
    // One child logger per request carrying both ids (a second child per request is measurable).
    childLoggerFactory: (logger, bindings, childOptions, rawRequest) =>
      logger.child(
        { ...bindings, correlation_id: correlationIdOf(rawRequest, String(bindings.request_id ?? '')) },
        childOptions,
      ),
  }).withTypeProvider<ZodTypeProvider>() as unknown as App;
  app.server.headersTimeout = options.headersTimeoutMs;

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.decorateRequest('principal', null);
  app.decorateRequest('correlationId', '');

  if (options.tracing === true) installRequestTracing(app);
  installJsonParser(app, options.jsonMaxDepth);
  installRouteRegistry(app);
  installErrorHandling(app);

  // Request and correlation ids, echoed on every response (errors included).
  app.addHook('onRequest', async (request, reply) => {
    request.correlationId = correlationIdOf(request.raw, request.id);
    void reply.header('x-request-id', request.id).header('x-correlation-id', request.correlationId);
  });

  if (options.maxInFlight !== undefined) installAdmissionLimit(app, options.maxInFlight, options.checkoutBudgetMs);

  // One access-log line per request: the route template, never the raw URL (query strings
  // and path ids may carry personal data). Probes and scrapes log at debug.
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    const quiet = route.startsWith('/health') || route === '/metrics';
    request.log[quiet ? 'debug' : 'info'](
      {
        method: request.method,
        route,
        status: reply.statusCode,
        duration_ms: Math.round(reply.elapsedTime * 100) / 100,
        user_id: request.principal?.userId,
      },
      'request completed',
    );
  });

  await app.register(helmet, {
    global: true,
    contentSecurityPolicy: {
      useDefaults: false,
      directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"], baseUri: ["'none'"], formAction: ["'none'"] },
    },
    frameguard: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
    // HSTS only over TLS (directly, or a trusted proxy's X-Forwarded-Proto): see below.
    strictTransportSecurity: false,
    crossOriginResourcePolicy: { policy: 'same-origin' },
  });
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (request, reply) => {
    if (request.protocol === 'https') {
      void reply.header('strict-transport-security', 'max-age=31536000; includeSubDomains');
    }
    void reply.header('cache-control', 'no-store');
    if (closing) {
      // A request on a kept-alive connection after shutdown began: send it elsewhere.
      throw new AppError('service_unavailable', {
        detail: 'This instance is shutting down; retry the request.',
        headers: { connection: 'close', 'retry-after': '1' },
      });
    }
  });

  const allowed = new Set(options.allowedOrigins);
  // @fastify/cors answers an allowed Origin's OPTIONS without Access-Control-Request-Method
  // with a text/plain 400; refuse it here as a problem instead.
  app.addHook('onRequest', async (request) => {
    const origin = request.headers.origin;
    if (
      request.method === 'OPTIONS' &&
      origin !== undefined &&
      allowed.has(origin) &&
      request.headers['access-control-request-method'] === undefined
    ) {
      throw new AppError('validation_failed', {
        detail: 'A CORS preflight needs an Access-Control-Request-Method header.',
        errors: [{ pointer: '#/access-control-request-method', location: 'header', detail: 'required' }],
      });
    }
  });
  await app.register(cors, {
    // A foreign Origin gets no Access-Control-Allow-Origin at all (never reflected).
    origin: (origin, cb) => cb(null, origin !== undefined && allowed.has(origin) ? origin : false),
    methods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
    allowedHeaders: ['Authorization', 'Content-Type', 'Idempotency-Key', 'X-Request-Id', 'X-Correlation-Id'],
    exposedHeaders: [
      'X-Request-Id',
      'X-Correlation-Id',
      'Idempotent-Replayed',
      'Retry-After',
      'RateLimit-Limit',
      'RateLimit-Remaining',
      'RateLimit-Reset',
      'RateLimit-Policy',
    ],
    maxAge: 600,
    strictPreflight: true,
  });
  installAuthentication(app, options.authenticator);
  await installOpenApi(app, options.openapi);
  return app;
}

/** Response compression. Register after any onSend hook that needs the uncompressed body. */
export async function installCompression(app: App): Promise<void> {
  await app.register(compress, { global: true, threshold: 1024, encodings: ['br', 'gzip', 'deflate'] });
}

/**
 * JSON bodies: Fastify's own parser (prototype-poisoning protection on), after a
 * linear scan that refuses nesting deeper than `maxDepth` without recursing.
 */
function installJsonParser(app: App, maxDepth: number): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  // Only JSON bodies: Fastify's default text/plain parser would let any text through to validation.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = body as string;
    if (jsonDepth(text) > maxDepth) {
      done(new AppError('json_too_deep', { detail: `The body nests deeper than ${maxDepth} levels.` }), undefined);
      return;
    }
    void parse(request, text, done);
  });
}

/** X-Correlation-Id when it is a sane token, else the request id. */
function correlationIdOf(raw: IncomingMessage, requestId: string): string {
  const incoming = raw.headers['x-correlation-id'];
  return typeof incoming === 'string' && REQUEST_ID_PATTERN.test(incoming) ? incoming : requestId;
}

/** Maximum bracket depth outside strings; O(n), no recursion. */
export function jsonDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 /* { */ || c === 91 /* [ */) {
      depth++;
      if (depth > max) max = depth;
    } else if (c === 125 /* } */ || c === 93 /* ] */) depth--;
  }
  return max;
}

/**
 * Keeps a second router of every path and method, so a request for a known path with
 * an unsupported method is a 405 with Allow, not a 404. Also enforces that every route
 * declares who may call it.
 */
function installRouteRegistry(app: App): void {
  const router = FindMyWay({ ignoreTrailingSlash: false, maxParamLength: 200 });
  const noop = () => undefined;
  app.addHook('onRoute', (route: RouteOptions) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    // Swagger UI's assets and CORS preflight are the only routes we do not declare ourselves.
    const isFramework = route.url.startsWith('/docs') || methods.every((m) => m === 'OPTIONS');
    if (route.config?.auth === undefined) {
      if (!isFramework) throw new Error(`route ${methods.join(',')} ${route.url} must declare config.auth`);
      route.config = { ...route.config, auth: 'public', rateLimit: true };
    }
    // The CORS preflight route (OPTIONS *) matches every path; counting it would turn every
    // unknown path into a 405.
    if (methods.every((m) => m === 'OPTIONS')) return;
    for (const m of methods) {
      if (m === 'HEAD' && router.hasRoute('HEAD', route.url)) continue;
      router.on(m as HTTPMethod, route.url, noop);
    }
  });
  app.setNotFoundHandler(async (request, reply) => {
    const path = request.url.split('?')[0] ?? '/';
    const allow = HTTP_METHODS.filter((m) => m !== request.method && router.find(m, path) !== null);
    if (allow.length > 0 && request.method !== 'OPTIONS') {
      const err = new AppError('method_not_allowed', {
        detail: `${request.method} is not supported here; use ${allow.join(', ')}.`,
        headers: { allow: allow.join(', ') },
      });
      return sendProblem(request, reply, err);
    }
    return sendProblem(request, reply, new AppError('not_found', { detail: `No route for ${request.method} ${path}.` }));
  });
}

/**
 * Resolves the bearer token (if any) to a principal before the body is read, then
 * enforces the route's declared roles. Every invalid token gets the same 401.
 */
function installAuthentication(app: App, authenticator: Authenticator): void {
  app.addHook('onRequest', async (request) => {
    const header = request.headers.authorization;
    if (typeof header === 'string' && header.length > 0) {
      const m = /^Bearer ([A-Za-z0-9._~+/=-]{1,4096})$/.exec(header);
      request.principal = m?.[1] ? await authenticator.authenticate(m[1]) : null;
    }
  });
}

/** The role check, registered after rate limiting so refused callers still count. */
export function installAuthorization(app: App): void {
  app.addHook('onRequest', async (request) => {
    const auth = request.routeOptions.config.auth;
    if (auth === undefined || auth === 'public') return;
    if (!request.principal) throw unauthenticated();
    if (!auth.includes(request.principal.role)) {
      throw new AppError('forbidden', {
        detail: `This operation is for ${auth.join(', ')}; your role is ${request.principal.role}.`,
      });
    }
  });
}

export function unauthenticated(): AppError {
  return new AppError('unauthenticated', {
    detail: UNAUTHENTICATED_DETAIL,
    headers: { 'www-authenticate': 'Bearer realm="loanbook"' },
  });
}


/**
 * Load shedding: at most `limit` requests in progress; the next is answered 503 with
 * Retry-After from its first hook, before its body is read, its token verified or a
 * database connection sought. Under a burst larger than the pool can serve, the excess is
 * turned away in milliseconds instead of queueing for a connection it would not get in
 * time (DB_POOL_ACQUIRE_TIMEOUT_MS). Probes and /metrics are not counted or refused: an
 * overloaded instance is alive, and says so.
 */
function installAdmissionLimit(app: App, limit: number, checkoutBudgetMs: number | undefined): void {
  const admitted = new WeakSet<object>();
  let inFlight = 0;
  const release = (request: object) => {
    if (admitted.delete(request)) inFlight -= 1;
  };
  app.addHook('onRequest', (request, _reply, done) => {
    const route = request.routeOptions.url ?? '';
    if (route.startsWith('/health') || route === '/metrics') {
      done();
      return;
    }
    if (inFlight >= limit) {
      done(
        new AppError('service_unavailable', {
          detail: `This instance has ${limit} requests in progress (HTTP_MAX_IN_FLIGHT); retry after the Retry-After interval.`,
          headers: { 'retry-after': '1' },
        }),
      );
      return;
    }
    inFlight += 1;
    admitted.add(request);
    // The rest of the request runs under one budget for connection checkouts.
    if (checkoutBudgetMs === undefined) done();
    else withCheckoutBudget(checkoutBudgetMs, done);
  });
  app.addHook('onResponse', async (request) => release(request));
  app.addHook('onRequestAbort', async (request) => release(request));
}
