/**
 * How failures reach a client: one error handler that maps anything thrown (catalogued
 * AppErrors, zod validation, Fastify's own errors, stray throwables) to RFC 9457
 * problem+json, and the raw-socket answer for requests that never become a request.
 * Nothing a client sees carries a stack, SQL or the text of an unexpected error.
 */
import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors, isResponseSerializationError } from 'fastify-type-provider-zod';
import { DatabaseUnavailableError, isDatabaseUnavailable } from './database.js';
import { AppError, coerceError, isAppError, pointerFromPath, type FieldError } from './errors.js';
import type { App } from './http.js';
import type { Logger } from './logger.js';

/**
 * The headers every response carries. Helmet and the hooks in http.ts set them on every
 * routed response (errors included); this copy serves the few responses that never
 * reach a hook: URLs that cannot be decoded, and requests that are not valid HTTP.
 */
export const BASELINE_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': "default-src 'none';frame-ancestors 'none';base-uri 'none';form-action 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-resource-policy': 'same-origin',
  'cache-control': 'no-store',
};

/**
 * Requests that are not valid HTTP (or time out, or overflow the header limit) never
 * become a request object; the answer is written to the socket directly, still as a
 * problem with the baseline headers.
 */
export function writeClientError(error: Error & { code?: string }, socket: Socket, logger: Logger): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const code =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? 'request_timeout'
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? 'request_header_fields_too_large'
        : 'bad_request';
  const requestId = randomUUID();
  const problem = new AppError(code);
  const body = JSON.stringify(problem.toProblem(undefined, requestId));
  const head = [
    `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status] ?? ''}`,
    'content-type: application/problem+json',
    `content-length: ${Buffer.byteLength(body)}`,
    'connection: close',
    `x-request-id: ${requestId}`,
    ...Object.entries(BASELINE_SECURITY_HEADERS).map(([k, v]) => `${k}: ${v}`),
  ];
  logger.debug({ err: { message: error.message, code: error.code }, request_id: requestId }, 'client error');
  // A response already under way on this socket cannot be followed by another.
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  if (!socket.writable || inFlight?.headersSent === true) {
    socket.destroy();
    return;
  }
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`, () => socket.destroy());
}

export function installErrorHandling(app: App): void {
  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    let problem: AppError;
    try {
      problem = toAppError(error, request);
    } catch (mappingError) {
      // Fastify's fallback handler would send this error's message (and with it the
      // thrown value) to the client.
      request.log.error({ err: coerceError(mappingError), thrown: coerceError(error) }, 'error while mapping an error');
      problem = new AppError('internal_error');
    }
    return sendProblem(request, reply, problem);
  });
}

/** Renders an AppError as application/problem+json. */
export function sendProblem(request: FastifyRequest, reply: FastifyReply, err: AppError): FastifyReply {
  for (const [k, v] of Object.entries(err.headers)) void reply.header(k, v);
  return reply
    .code(err.status)
    .type('application/problem+json')
    .serializer((p: unknown) => JSON.stringify(p))
    .send(err.toProblem(request.url.split('?')[0], request.id));
}

/** Maps anything a handler or Fastify can throw to a catalogued problem. */
function toAppError(error: unknown, request: FastifyRequest): AppError {
  if (isAppError(error)) return error;
  if (typeof error !== 'object' || error === null) {
    // `throw "text"` or `throw null`: the type guards below need an object.
    request.log.error({ err: coerceError(error) }, 'unhandled error');
    return new AppError('internal_error');
  }
  if (hasZodFastifySchemaValidationErrors(error)) {
    const location = validationLocation(error.validationContext);
    const issues = error.validation as readonly { keyword: string; instancePath: string; message?: string; params?: unknown }[];
    const errors: FieldError[] = issues.flatMap((v) => {
      const path = v.instancePath.split('/').filter(Boolean);
      const keys = v.keyword === 'unrecognized_keys' ? ((v.params as { keys?: string[] }).keys ?? []) : [];
      if (keys.length > 0) {
        return keys.map((k) => ({ pointer: pointerFromPath([...path, k]), location, detail: 'unknown field' }));
      }
      return [{ pointer: pointerFromPath(path), location, detail: v.message ?? 'invalid' }];
    });
    return new AppError('validation_failed', {
      detail: `${errors.length} problem${errors.length === 1 ? '' : 's'} in the request ${location}.`,
      errors,
    });
  }
  if (isResponseSerializationError(error)) {
    request.log.error({ err: coerceError(error), issues: error.cause.issues }, 'response did not match its schema');
    return new AppError('internal_error');
  }
  const fe = error as Partial<FastifyError> & { statusCode?: number };
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('payload_too_large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
        ? new AppError('unsupported_media_type')
        : new AppError('malformed_json', { detail: 'Content-Length does not match the body.' });
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError('malformed_json', { detail: 'The body is empty; send a JSON object.' });
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new AppError('malformed_json');
    default:
      break;
  }
  if (error instanceof SyntaxError && fe.statusCode === 400) {
    return new AppError('malformed_json', { detail: 'The body is not valid JSON.' });
  }
  if (fe.statusCode === 408) return new AppError('request_timeout');
  if (fe.statusCode === 413) return new AppError('payload_too_large');
  if (fe.statusCode === 415) return new AppError('unsupported_media_type');
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    // A client error from a Fastify plugin we did not catalogue: keep the status, not the text.
    request.log.warn({ err: coerceError(error) }, 'uncatalogued client error');
    return fe.statusCode === 404 ? new AppError('not_found') : new AppError('validation_failed', { detail: 'The request is invalid.' });
  }
  if (isDatabaseUnavailable(error)) return databaseUnavailable(error, request);
  request.log.error({ err: coerceError(error) }, 'unhandled error');
  return new AppError('internal_error');
}

/**
 * The database cannot serve (down, restarting, unreachable, pool exhausted): a 503 the
 * client may retry, never a 500. A busy pool clears within a second; a restart takes longer.
 */
function databaseUnavailable(error: unknown, request: FastifyRequest): AppError {
  const exhausted = error instanceof DatabaseUnavailableError && error.reason === 'pool_exhausted';
  const err = coerceError(error);
  request.log.warn({ err: { message: err.message, code: (err as { code?: unknown }).code } }, 'database unavailable');
  return new AppError('database_unavailable', {
    detail: exhausted ? 'Every database connection is busy; retry shortly.' : 'The database is unavailable; retry shortly.',
    headers: { 'retry-after': exhausted ? '1' : '2' },
  });
}

function validationLocation(context: string | undefined): FieldError['location'] {
  switch (context) {
    case 'querystring':
      return 'query';
    case 'params':
      return 'path';
    case 'headers':
      return 'header';
    default:
      return 'body';
  }
}
