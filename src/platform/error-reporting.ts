/**
 * Error reporting to Sentry (or anything speaking its envelope protocol), on when
 * SENTRY_DSN is set. Only unexpected errors are reported: a request answered 500
 * internal_error, a job whose handler failed with anything but an expected failure, and
 * an exception or rejection nobody caught. 4xx answers, 503s during an outage and
 * JobErrors are outcomes the service handled, and are never reported.
 *
 * Sentry runs with a minimal integration set: no http or fetch instrumentation, no
 * console or local-variable capture, no OpenTelemetry set-up of its own (tracing is
 * telemetry.ts's, with our provider), no ESM loader hooks. Events carry no request body,
 * headers, cookies, query string or user; what could still hold personal data (error
 * messages, extra data) is scrubbed in beforeSend.
 */
import type { ErrorEvent } from '@sentry/node';
import { trace } from '@opentelemetry/api';
import type { FastifyRequest } from 'fastify';
import type { Config } from './config.js';
import { coerceError } from './errors.js';
import type { App } from './http.js';
import type { Logger } from './logger.js';
import { packageVersion } from './paths.js';

export type ErrorTags = Readonly<Record<string, string | number | undefined>>;

export interface ErrorReporter {
  /** Reports an unexpected error with searchable tags (request id, trace id, job id…); never throws. */
  report(error: unknown, tags: ErrorTags): void;
  /** Sends what is queued; false when the timeout passed first. */
  flush(timeoutMs: number): Promise<boolean>;
  /** Flushes and stops reporting. */
  close(timeoutMs: number): Promise<boolean>;
}

/** Undefined when SENTRY_DSN is unset (the Sentry SDK is then never loaded). */
export async function startErrorReporting(config: Config, logger: Logger): Promise<ErrorReporter | undefined> {
  const dsn = config.sentryDsn;
  if (dsn === undefined) return undefined;
  const Sentry = await import('@sentry/node');
  const client = Sentry.init({
    dsn,
    environment: config.env,
    release: `loanbook@${packageVersion}`,
    sendDefaultPii: false,
    skipOpenTelemetrySetup: true,
    registerEsmLoaderHooks: false,
    defaultIntegrations: false,
    integrations: [
      Sentry.eventFiltersIntegration(),
      // Errors with a `cause` (coerceError, JobError) arrive as one chained event.
      Sentry.linkedErrorsIntegration(),
      Sentry.contextLinesIntegration(),
      Sentry.nodeContextIntegration(),
      // Both keep Node's own outcome: the process still exits on an uncaught exception or
      // an unhandled rejection, after the event is sent.
      Sentry.onUncaughtExceptionIntegration(),
      Sentry.onUnhandledRejectionIntegration({ mode: 'strict' }),
    ],
    maxBreadcrumbs: 0,
    beforeSend: scrubEvent,
  });
  if (client === undefined) return undefined;
  logger.info({ environment: config.env }, 'error reporting on (Sentry)');
  return {
    report(error, tags) {
      try {
        const defined = Object.fromEntries(Object.entries(tags).filter((t): t is [string, string | number] => t[1] !== undefined));
        Sentry.captureException(error, { tags: defined, level: 'error' });
      } catch (e) {
        logger.warn({ err: coerceError(e) }, 'error report failed');
      }
    },
    flush: (timeoutMs) => Sentry.flush(timeoutMs),
    close: (timeoutMs) => Sentry.close(timeoutMs),
  };
}

const failures = new WeakMap<FastifyRequest, { error: unknown; traceId: string | undefined }>();

/**
 * Reports requests answered 500. The error is kept when it is thrown (onError runs before
 * the error handler decides the status) and reported once the status is known (onSend).
 */
export function installErrorReporting(app: App, reporter: ErrorReporter): void {
  app.addHook('onError', (request, _reply, error, done) => {
    const sc = trace.getActiveSpan()?.spanContext();
    failures.set(request, { error, traceId: sc !== undefined && trace.isSpanContextValid(sc) ? sc.traceId : undefined });
    done();
  });
  app.addHook('onSend', (request, reply, payload, done) => {
    const failure = failures.get(request);
    if (failure !== undefined) {
      failures.delete(request);
      if (reply.statusCode === 500) {
        reporter.report(failure.error, {
          request_id: request.id,
          correlation_id: request.correlationId,
          trace_id: failure.traceId,
          'http.method': request.method,
          'http.route': request.routeOptions.url ?? 'unmatched',
        });
      }
    }
    done(null, payload);
  });
}

/** Request headers an event may keep; everything else (Authorization, Cookie, API keys) goes. */
const SAFE_HEADERS = new Set(['content-type', 'content-length', 'user-agent', 'x-request-id', 'x-correlation-id']);

/**
 * What may still reach an event after the integrations above is scrubbed here: request
 * body, cookies, query string and credentials; the user; breadcrumbs; and, in every
 * message and extra value, anything shaped like personal data.
 */
export function scrubEvent(event: ErrorEvent): ErrorEvent {
  if (event.request !== undefined) {
    const { method, url, headers } = event.request;
    event.request = {
      ...(method !== undefined ? { method } : {}),
      ...(url !== undefined ? { url: url.split('?')[0] } : {}),
      ...(headers !== undefined ? { headers: Object.fromEntries(Object.entries(headers).filter(([k]) => SAFE_HEADERS.has(k.toLowerCase()))) } : {}),
    };
  }
  delete event.user;
  delete event.breadcrumbs;
  if (event.message !== undefined) event.message = scrubText(event.message);
  if (event.logentry?.message !== undefined) event.logentry.message = scrubText(event.logentry.message);
  for (const ex of event.exception?.values ?? []) {
    if (ex.value !== undefined) ex.value = scrubText(ex.value);
    // Source lines around each frame (contextLines): a literal in the code can be personal data too.
    for (const frame of ex.stacktrace?.frames ?? []) {
      if (frame.context_line !== undefined) frame.context_line = scrubText(frame.context_line);
      if (frame.pre_context !== undefined) frame.pre_context = frame.pre_context.map(scrubText);
      if (frame.post_context !== undefined) frame.post_context = frame.post_context.map(scrubText);
    }
  }
  if (event.extra !== undefined) event.extra = scrubValue(event.extra) as Record<string, unknown>;
  return event;
}

/** Shapes of personal data and credentials, most specific first. */
const PERSONAL_DATA: readonly (readonly [RegExp, string])[] = [
  [/\beyJ[\w-]+\.[\w-]+\.[\w-]+/g, '[token]'],
  [/\b(Bearer|Basic)\s+[\w.~+/=-]+/gi, '$1 [token]'],
  [/[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+/g, '[email]'],
  // IBANs, then card, account, phone and national id numbers (9+ digits, spaces or dashes between).
  [/\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]){11,30}\b/g, '[iban]'],
  [/(?<![\w-])\+?\d(?:[ -]?\d){8,}(?![\w-])/g, '[number]'],
];

export function scrubText(text: string): string {
  let out = text;
  for (const [pattern, replacement] of PERSONAL_DATA) out = out.replace(pattern, replacement);
  return out;
}

function scrubValue(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return scrubText(value);
  if (depth > 8 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => scrubValue(v, depth + 1));
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, scrubValue(v, depth + 1)]));
}
