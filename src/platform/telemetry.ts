/**
 * OpenTelemetry traces, off unless an OTLP endpoint is configured. Instrumentation is
 * manual and small: a SERVER span per HTTP request (Fastify hooks), a CLIENT span per
 * database query made under a traced request or job (a wrapper at the pg pool), and a
 * CONSUMER span per job attempt. No require-in-the-middle patching: it does not see
 * ESM imports or the PGlite bridge, and it would trace the exporter's own requests.
 *
 * What never leaves the process: query parameters (they hold personal data and money),
 * string and number literals inside SQL text, query strings, request and response
 * bodies and headers, and error messages (a database error can quote the value it
 * refused). Spans carry SQLSTATEs, status codes and route templates instead.
 *
 * Off, nothing is registered: the OpenTelemetry API stays its no-op default, the
 * request hooks and the pool wrapper are not installed (see createHttpServer and
 * buildApp), and a job attempt costs one non-recording span.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import {
  context,
  diag,
  DiagLogLevel,
  isSpanContextValid,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type ContextManager,
  type Span,
} from '@opentelemetry/api';
import {
  ATTR_DB_COLLECTION_NAME,
  ATTR_DB_NAMESPACE,
  ATTR_DB_OPERATION_NAME,
  ATTR_DB_QUERY_TEXT,
  ATTR_DB_RESPONSE_STATUS_CODE,
  ATTR_DB_SYSTEM_NAME,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_SERVICE_NAME,
  ATTR_SERVICE_VERSION,
  ATTR_URL_PATH,
  ATTR_URL_SCHEME,
  DB_SYSTEM_NAME_VALUE_POSTGRESQL,
} from '@opentelemetry/semantic-conventions';
import type { FastifyRequest } from 'fastify';
import type pg from 'pg';
import type { Config } from './config.js';
import { startErrorReporting, type ErrorReporter } from './error-reporting.js';
import type { App } from './http.js';
import type { Logger } from './logger.js';
import { packageVersion } from './paths.js';

/** The instrumentation scope of every span this service makes. */
const tracer = trace.getTracer('loanbook', packageVersion);

/** Longest attribute value exported (SQL text of a large batch insert is cut here). */
const ATTRIBUTE_VALUE_MAX_CHARS = 4096;

export interface Telemetry {
  /** Present when SENTRY_DSN is set. */
  readonly errorReporter: ErrorReporter | undefined;
  readonly tracing: boolean;
  /** Exports the spans ended so far and sends pending error events. */
  flush(): Promise<void>;
  /** Flushes, then unregisters everything; call last when the process stops. */
  shutdown(): Promise<void>;
}

/**
 * Starts tracing (when config.otel.tracesUrl is set) and error reporting (when
 * config.sentryDsn is set). The SDKs are loaded only when they are used.
 */
export async function startTelemetry(config: Config, logger: Logger): Promise<Telemetry> {
  const [tracing, errorReporter] = await Promise.all([startTracing(config, logger), startErrorReporting(config, logger)]);
  return {
    errorReporter,
    tracing: tracing !== undefined,
    async flush() {
      await Promise.all([tracing?.flush(), errorReporter?.flush(2000)]);
    },
    async shutdown() {
      await Promise.all([
        tracing?.shutdown().catch((e: unknown) => logger.warn({ err: { message: (e as Error).message } }, 'trace export at shutdown failed')),
        errorReporter?.close(2000),
      ]);
    },
  };
}

interface Tracing {
  flush(): Promise<void>;
  shutdown(): Promise<void>;
}

async function startTracing(config: Config, logger: Logger): Promise<Tracing | undefined> {
  const { tracesUrl } = config.otel;
  if (tracesUrl === undefined) return undefined;
  const [sdk, { OTLPTraceExporter }, { resourceFromAttributes }, { W3CTraceContextPropagator }] = await Promise.all([
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/core'),
  ]);
  const ratio = config.otel.samplerRatio;
  const samplers = {
    always_on: () => new sdk.AlwaysOnSampler(),
    always_off: () => new sdk.AlwaysOffSampler(),
    traceidratio: () => new sdk.TraceIdRatioBasedSampler(ratio),
    parentbased_always_on: () => new sdk.ParentBasedSampler({ root: new sdk.AlwaysOnSampler() }),
    parentbased_always_off: () => new sdk.ParentBasedSampler({ root: new sdk.AlwaysOffSampler() }),
    parentbased_traceidratio: () => new sdk.ParentBasedSampler({ root: new sdk.TraceIdRatioBasedSampler(ratio) }),
  } as const;
  // OTLP/HTTP with the JSON encoding (this exporter's only one).
  const exporter = new OTLPTraceExporter({ url: tracesUrl, headers: { ...config.otel.headers } });
  const provider = new sdk.BasicTracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: config.otel.serviceName,
      [ATTR_SERVICE_VERSION]: packageVersion,
      'service.instance.id': randomUUID(),
      // The current name and the one many backends still group by.
      'deployment.environment.name': config.env,
      'deployment.environment': config.env,
    }),
    sampler: samplers[config.otel.sampler](),
    spanLimits: { attributeValueLengthLimit: ATTRIBUTE_VALUE_MAX_CHARS },
    spanProcessors: [new sdk.BatchSpanProcessor(exporter)],
  });

  // Export failures (collector down) reach the log at warn; the SDK's chatter below that does not.
  const log = logger.child({ component: 'otel' });
  diag.setLogger(
    {
      error: (message) => log.warn(message),
      warn: (message) => log.warn(message),
      info: (message) => log.debug(message),
      debug: () => undefined,
      verbose: () => undefined,
    },
    DiagLogLevel.WARN,
  );
  context.setGlobalContextManager(new AsyncLocalStorageContextManager());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  logger.info({ traces_url: redactUrl(tracesUrl), service: config.otel.serviceName, sampler: config.otel.sampler }, 'tracing on');
  return {
    flush: () => provider.forceFlush(),
    async shutdown() {
      try {
        await provider.shutdown();
      } finally {
        trace.disable();
        propagation.disable();
        context.disable();
        diag.disable();
      }
    },
  };
}

/** Credentials in a collector URL stay out of the log. */
function redactUrl(u: string): string {
  const url = new URL(u);
  if (url.username !== '' || url.password !== '') url.username = '***';
  url.password = '';
  return url.toString();
}

/**
 * The active context follows the async call chain (AsyncLocalStorage). Functions can be
 * bound; event emitters cannot (nothing here binds one), so `bind` returns them as they are.
 */
export class AsyncLocalStorageContextManager implements ContextManager {
  private readonly storage = new AsyncLocalStorage<Context>();

  active(): Context {
    return this.storage.getStore() ?? ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return this.storage.run(ctx, () => fn.apply(thisArg, args));
  }

  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== 'function') return target;
    const run = (self: unknown, args: unknown[]): unknown => this.with(ctx, () => (target as (...a: unknown[]) => unknown).apply(self, args));
    return function (this: unknown, ...args: unknown[]) {
      return run(this, args);
    } as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.storage.disable();
    return this;
  }
}

const requestSpans = new WeakMap<FastifyRequest, Span>();

/**
 * One SERVER span per request, named by method and route template. Registered before any
 * other hook (createHttpServer), so authentication's queries are children too. The span's
 * context, entered at onRequest, reaches the handler: Fastify runs the rest of the chain
 * in the request's async context even when the body arrives in later socket events.
 */
export function installRequestTracing(app: App): void {
  app.addHook('onRequest', (request, _reply, done) => {
    const parent = propagation.extract(ROOT_CONTEXT, request.headers);
    const route = request.routeOptions.url;
    const attributes: Attributes = {
      [ATTR_HTTP_REQUEST_METHOD]: request.method,
      [ATTR_URL_SCHEME]: request.protocol,
      'loanbook.request_id': request.id,
    };
    if (route !== undefined) {
      attributes[ATTR_HTTP_ROUTE] = route;
      // Unmatched paths are whatever a client typed; matched ones hold only ids.
      attributes[ATTR_URL_PATH] = request.url.split('?')[0];
    }
    const span = tracer.startSpan(route === undefined ? request.method : `${request.method} ${route}`, { kind: SpanKind.SERVER, attributes }, parent);
    const ctx = trace.setSpan(parent, span);
    requestSpans.set(request, span);
    // The request's log lines (the access log included) lead to its trace.
    const sc = span.spanContext();
    if (isSpanContextValid(sc)) request.log = request.log.child({ trace_id: sc.traceId });
    context.with(ctx, done);
  });
  app.addHook('onResponse', (request, reply, done) => {
    endRequestSpan(request, reply.statusCode);
    done();
  });
  app.addHook('onRequestAbort', (request, done) => {
    endRequestSpan(request, undefined);
    done();
  });
}

function endRequestSpan(request: FastifyRequest, status: number | undefined): void {
  const span = requestSpans.get(request);
  if (!span) return;
  requestSpans.delete(request);
  if (status === undefined) {
    span.setAttribute(ATTR_ERROR_TYPE, 'aborted');
  } else {
    span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
    // A 4xx is the client's mistake, not a failed server span.
    if (status >= 500) {
      span.setAttribute(ATTR_ERROR_TYPE, String(status));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
  }
  span.end();
}

type QueryFn = (...args: unknown[]) => unknown;
const tracedPools = new WeakSet<pg.Pool>();
const tracedClients = new WeakSet<object>();

/**
 * CLIENT spans for the queries made under a recording span (a request or a job); queries
 * outside one (pg-boss polling, maintenance) make no trace of their own. Kysely checks a
 * client out and queries it with promises, so the caller's context is the active one;
 * `pool.query` is traced at the pool instead, because its internal callback runs in the
 * context of whichever caller released the connection it waited for.
 */
export function traceQueries(pool: pg.Pool): void {
  if (tracedPools.has(pool)) return;
  tracedPools.add(pool);
  const poolQuery = pool.query.bind(pool) as QueryFn;
  (pool as unknown as { query: QueryFn }).query = (...args: unknown[]) => traced(poolQuery, pool, args, undefined);
  pool.on('acquire', (client) => {
    if (tracedClients.has(client)) return;
    tracedClients.add(client);
    const clientQuery = client.query.bind(client) as QueryFn;
    const database = (client as { database?: unknown }).database;
    (client as unknown as { query: QueryFn }).query = (...args: unknown[]) =>
      // The callback form is pool.query's own call (traced above).
      typeof args.at(-1) === 'function' ? clientQuery(...args) : traced(clientQuery, client, args, typeof database === 'string' ? database : undefined);
  });
}

function traced(query: QueryFn, self: object, args: unknown[], database: string | undefined): unknown {
  const parent = context.active();
  if (trace.getSpan(parent)?.isRecording() !== true || typeof args.at(-1) === 'function') return query.apply(self, args);
  const first = args[0];
  const text = typeof first === 'string' ? first : typeof (first as { text?: unknown } | null)?.text === 'string' ? (first as { text: string }).text : undefined;
  const attributes: Attributes = { [ATTR_DB_SYSTEM_NAME]: DB_SYSTEM_NAME_VALUE_POSTGRESQL };
  if (database !== undefined) attributes[ATTR_DB_NAMESPACE] = database;
  let name: string = DB_SYSTEM_NAME_VALUE_POSTGRESQL;
  if (text !== undefined) {
    const summary = summarizeSql(text);
    attributes[ATTR_DB_QUERY_TEXT] = sanitizeSql(text);
    if (summary.operation !== undefined) attributes[ATTR_DB_OPERATION_NAME] = summary.operation;
    if (summary.collection !== undefined) attributes[ATTR_DB_COLLECTION_NAME] = summary.collection;
    name = [summary.operation, summary.collection].filter((p) => p !== undefined).join(' ') || name;
  }
  const span = tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, parent);
  let result: unknown;
  try {
    result = query.apply(self, args);
  } catch (e) {
    endQuerySpan(span, e);
    throw e;
  }
  if (typeof (result as PromiseLike<unknown> | undefined)?.then === 'function') {
    (result as PromiseLike<unknown>).then(
      () => endQuerySpan(span, undefined),
      (e: unknown) => endQuerySpan(span, e),
    );
  } else {
    endQuerySpan(span, undefined);
  }
  return result;
}

/** The SQLSTATE only: a database error's message can quote the value it refused. */
function endQuerySpan(span: Span, error: unknown): void {
  if (error !== undefined) {
    const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
    if (typeof code === 'string') span.setAttribute(ATTR_DB_RESPONSE_STATUS_CODE, code);
    span.setAttribute(ATTR_ERROR_TYPE, typeof code === 'string' ? code : error instanceof Error ? error.name : 'error');
    span.setStatus({ code: SpanStatusCode.ERROR });
  }
  span.end();
}

/**
 * SQL text without its literals: quoted strings, dollar-quoted strings and numbers become
 * `?`. Parameter placeholders ($1), identifiers (t1, "col2") and casts (::int8) stay.
 */
export function sanitizeSql(text: string): string {
  return text
    .replace(/\$([A-Za-z_]\w*)?\$[\s\S]*?\$\1\$/g, '?')
    .replace(/(?:(?<!\w)[EeBbXxUu])?'(?:[^']|'')*'/g, '?')
    .replace(/(?<![\w$."])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w"])/g, '?');
}

const OPERATION = /^\s*(?:\(\s*)*([A-Za-z]+)/;
const COLLECTION: Readonly<Record<string, RegExp>> = {
  SELECT: /\bfrom\s+("?[\w.]+"?(?:\."?\w+"?)?)/i,
  INSERT: /^\s*insert\s+into\s+("?[\w.]+"?(?:\."?\w+"?)?)/i,
  UPDATE: /^\s*update\s+("?[\w.]+"?(?:\."?\w+"?)?)/i,
  DELETE: /^\s*delete\s+from\s+("?[\w.]+"?(?:\."?\w+"?)?)/i,
};

/** The first keyword and, for plain DML, the table it names: a low-cardinality span name. */
export function summarizeSql(text: string): { operation: string | undefined; collection: string | undefined } {
  const operation = OPERATION.exec(text)?.[1]?.toUpperCase();
  const pattern = operation === undefined ? undefined : COLLECTION[operation];
  const collection = pattern?.exec(text)?.[1]?.replace(/"/g, '');
  return { operation, collection };
}

/** A job attempt's span: the handler runs inside it; it ends with the outcome. */
export interface JobSpan {
  /** For error reports: undefined when tracing is off. */
  readonly traceId: string | undefined;
  run<T>(fn: () => T): T;
  end(outcome: string, error: unknown): void;
}

/** A CONSUMER span per job attempt, the root of its own trace. */
export function startJobSpan(kind: string, id: string, attempt: number): JobSpan {
  const span = tracer.startSpan(
    `process ${kind}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        'messaging.system': 'pg-boss',
        'messaging.operation.type': 'process',
        'messaging.operation.name': 'process',
        'messaging.destination.name': kind,
        'messaging.message.id': id,
        'loanbook.job.attempt': attempt,
      },
    },
    ROOT_CONTEXT,
  );
  const ctx = trace.setSpan(ROOT_CONTEXT, span);
  const sc = span.spanContext();
  return {
    traceId: isSpanContextValid(sc) ? sc.traceId : undefined,
    run: (fn) => context.with(ctx, fn),
    end(outcome, error) {
      span.setAttribute('loanbook.job.outcome', outcome);
      if (error !== undefined) {
        span.setAttribute(ATTR_ERROR_TYPE, error instanceof Error ? error.name : 'error');
        span.setStatus({ code: SpanStatusCode.ERROR });
      }
      span.end();
    },
  };
}
