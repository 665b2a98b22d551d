/**
 * The error catalogue and its RFC 9457 rendering. Every error a client can see has a
 * stable `code`, a status and a title here; domain parts add their own catalogues
 * through `defineProblems`. Unknown throwables become `internal_error` and are logged
 * once at the boundary; their message never reaches the client.
 */

export interface ProblemDefinition {
  readonly status: number;
  readonly title: string;
  /** What the problem means and what a client can do about it (served at /problems/{code}). */
  readonly description: string;
}

export interface FieldError {
  /** JSON pointer into the request part named by `location` (RFC 6901, as a URI fragment). */
  readonly pointer: string;
  readonly location: 'body' | 'query' | 'path' | 'header';
  readonly detail: string;
}

export interface ProblemBody {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly code: string;
  readonly instance?: string;
  readonly request_id?: string;
  readonly errors?: readonly FieldError[];
  readonly [extension: string]: unknown;
}

const catalogue = new Map<string, ProblemDefinition>();

/** Registers a part's problems; codes are global and must be unique. */
export function defineProblems<const T extends Record<string, ProblemDefinition>>(defs: T): { [K in keyof T]: K } {
  const codes = {} as { [K in keyof T]: K };
  for (const [code, def] of Object.entries(defs)) {
    if (!/^[a-z][a-z0-9_]*$/.test(code)) throw new Error(`problem code "${code}" must be lower snake case`);
    const existing = catalogue.get(code);
    if (existing && existing !== def) throw new Error(`problem code "${code}" is defined twice`);
    catalogue.set(code, def);
    (codes as Record<string, string>)[code] = code;
  }
  return codes;
}

export function problemDefinition(code: string): ProblemDefinition | undefined {
  return catalogue.get(code);
}

export function allProblems(): ReadonlyMap<string, ProblemDefinition> {
  return catalogue;
}

export function problemType(code: string): string {
  return `/problems/${code}`;
}

export const PlatformProblem = defineProblems({
  validation_failed: {
    status: 400,
    title: 'Request validation failed',
    description: 'One or more fields are missing, unknown or invalid. `errors[]` names each field by JSON pointer.',
  },
  malformed_json: { status: 400, title: 'Malformed JSON', description: 'The request body is not valid JSON.' },
  json_too_deep: {
    status: 400,
    title: 'JSON nested too deeply',
    description: 'The request body nests objects or arrays deeper than the server accepts.',
  },
  unsupported_media_type: {
    status: 415,
    title: 'Unsupported media type',
    description: 'Request bodies must be application/json.',
  },
  payload_too_large: {
    status: 413,
    title: 'Payload too large',
    description: 'The request body is larger than the limit (1 MiB).',
  },
  unauthenticated: {
    status: 401,
    title: 'Authentication required',
    description: 'Send a valid, unexpired access token as `Authorization: Bearer <token>`.',
  },
  forbidden: {
    status: 403,
    title: 'Forbidden',
    description: 'Your role may not call this operation. The roles that may are listed as `x-roles` in the OpenAPI document.',
  },
  not_found: { status: 404, title: 'Not found', description: 'No resource exists at this address (or you may not see it).' },
  method_not_allowed: {
    status: 405,
    title: 'Method not allowed',
    description: 'The resource exists but does not support this method; the Allow header lists the methods it does.',
  },
  bad_request: {
    status: 400,
    title: 'Bad request',
    description: 'The request is not valid HTTP, or its URL cannot be decoded.',
  },
  request_timeout: { status: 408, title: 'Request timeout', description: 'The request took too long to arrive.' },
  uri_too_long: {
    status: 414,
    title: 'URI too long',
    description: 'A path segment of the URL is longer than the server accepts.',
  },
  request_header_fields_too_large: {
    status: 431,
    title: 'Request header fields too large',
    description: 'The request headers are larger than the server accepts.',
  },
  idempotency_key_missing: {
    status: 400,
    title: 'Idempotency-Key required',
    description: 'This operation moves money or creates a resource; send a unique Idempotency-Key header (1–255 visible ASCII characters).',
  },
  idempotency_key_invalid: {
    status: 400,
    title: 'Idempotency-Key invalid',
    description: 'The Idempotency-Key header must be 1–255 visible ASCII characters.',
  },
  idempotency_key_in_use: {
    status: 409,
    title: 'Idempotency-Key in use',
    description: 'A request with this Idempotency-Key is still being processed. Retry after the Retry-After interval.',
  },
  idempotency_key_reused: {
    status: 422,
    title: 'Idempotency-Key reused',
    description: 'This Idempotency-Key was already used with a different request. Use a new key for a new request.',
  },
  rate_limited: {
    status: 429,
    title: 'Too many requests',
    description: 'The rate limit for this client was reached. Retry after the Retry-After interval.',
  },
  service_unavailable: {
    status: 503,
    title: 'Service unavailable',
    description: 'The service is starting, shutting down or overloaded. Retry later.',
  },
  database_unavailable: {
    status: 503,
    title: 'Database unavailable',
    description:
      'The database cannot serve the request right now: it is restarting or unreachable, or every connection stayed busy for ' +
      'DB_POOL_ACQUIRE_TIMEOUT_MS. Nothing was changed by this request. Retry after the Retry-After interval (with the same ' +
      'Idempotency-Key for a POST).',
  },
  internal_error: {
    status: 500,
    title: 'Internal server error',
    description: 'An unexpected error occurred. It has been logged with the request id; nothing was changed by a failed request.',
  },
});

export interface AppErrorOptions {
  readonly detail?: string;
  readonly errors?: readonly FieldError[];
  readonly headers?: Readonly<Record<string, string>>;
  /** Extra members for the problem body (RFC 9457 extensions), e.g. `{ state: 'active' }`. */
  readonly extensions?: Readonly<Record<string, unknown>>;
  readonly cause?: unknown;
}

/** A catalogued, expected failure. Throw it (or return it) and the boundary renders it. */
export class AppError extends Error {
  override readonly name = 'AppError';
  readonly code: string;
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  readonly errors: readonly FieldError[] | undefined;
  readonly headers: Readonly<Record<string, string>>;
  readonly extensions: Readonly<Record<string, unknown>>;

  constructor(code: string, options: AppErrorOptions = {}) {
    const def = catalogue.get(code);
    if (!def) throw new Error(`unknown problem code "${code}"`);
    super(options.detail ?? def.title, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = def.status;
    this.title = def.title;
    this.detail = options.detail ?? def.title;
    this.errors = options.errors;
    this.headers = options.headers ?? {};
    this.extensions = options.extensions ?? {};
  }

  toProblem(instance?: string, requestId?: string): ProblemBody {
    return {
      ...this.extensions,
      type: problemType(this.code),
      title: this.title,
      status: this.status,
      detail: this.detail,
      code: this.code,
      ...(instance === undefined ? {} : { instance }),
      ...(requestId === undefined ? {} : { request_id: requestId }),
      ...(this.errors === undefined ? {} : { errors: this.errors }),
    };
  }
}

export function isAppError(e: unknown): e is AppError {
  return e instanceof AppError;
}

/** Normalises anything thrown into an Error, for logging. */
export function coerceError(e: unknown): Error {
  if (e instanceof Error) return e;
  return new Error(typeof e === 'string' ? e : `non-error thrown: ${safeStringify(e)}`);
}

function safeStringify(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** RFC 6901 escaping of one reference token. */
export function pointerFromPath(path: readonly PropertyKey[]): string {
  return '#' + path.map((p) => '/' + String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('');
}
