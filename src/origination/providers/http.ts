/**
 * The JSON-over-HTTP client every external provider goes through (Node's global fetch).
 *
 * An upstream problem is a value, never an exception: the caller gets
 * `{ ok: false, failure, detail }` and the decision pipeline sends the application to
 * manual review. What the client guards against:
 *
 * - a slow upstream: each attempt is aborted after `timeoutMs` (at most 3 s), body included;
 * - a flaky one: timeouts, network errors, 5xx and 429 are retried a bounded number of
 *   times with exponential backoff and full jitter (another 4xx is our mistake and is
 *   not repeated; a 429 whose Retry-After is longer than the backoff cap is not waited for);
 * - a dead one: a circuit breaker opens after `failureThreshold` consecutive failed calls,
 *   refuses calls (`circuit_open`, no request sent) for `coolDownMs`, then lets one
 *   single-attempt trial through: success closes it, failure opens it again;
 * - a hostile or broken one: bodies past `maxBodyBytes` are cut off (`oversized`), bodies
 *   that are not JSON are `malformed`, and redirects are refused (fetch would replay our
 *   API-key header to wherever a redirect points).
 *
 * Details are built from status codes and error codes only, never from response bodies
 * or headers, and every configured secret is scrubbed from them before they leave.
 * Worst case for one call: attempts × timeoutMs plus the backoff between them.
 */
import type { ProviderFailure } from '../model.js';
import { coerceError } from '../../platform/errors.js';
import type { Logger } from '../../platform/logger.js';

export type ProviderResponse =
  | { readonly ok: true; readonly status: number; readonly body: unknown }
  | { readonly ok: false; readonly failure: ProviderFailure; readonly detail: string };

export type CircuitState = 'closed' | 'open' | 'half_open';

/** The ceiling on one attempt: a provider must never hold a decision for longer. */
export const MAX_PROVIDER_TIMEOUT_MS = 3000;
export const DEFAULT_MAX_BODY_BYTES = 256 * 1024;

export interface ProviderHttpOptions {
  /** Provider name, the prefix of every detail and the `provider` field of log lines. */
  readonly name: string;
  /** Per attempt; default and ceiling MAX_PROVIDER_TIMEOUT_MS (the composition root passes config.providers.timeoutMs). */
  readonly timeoutMs?: number;
  /** Attempts after the first one; default 2. */
  readonly retries?: number;
  /** Full-jitter backoff: before retry n, sleep random() × min(maxDelayMs, baseDelayMs × 2^(n-1)). */
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
  readonly maxBodyBytes?: number;
  readonly breaker?: { readonly failureThreshold?: number; readonly coolDownMs?: number };
  /** Strings that must never appear in a detail or a log line (the API key). */
  readonly secrets?: readonly string[];
  readonly logger?: Pick<Logger, 'warn'>;
  /** Injected for tests. */
  readonly now?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly random?: () => number;
}

export interface ProviderHttpClient {
  postJson(url: string, body: unknown, headers: Readonly<Record<string, string>>): Promise<ProviderResponse>;
  circuitState(): CircuitState;
}

/** One attempt's outcome, with what the retry loop and the breaker need to know. */
type Attempt =
  | { readonly ok: true; readonly status: number; readonly body: unknown }
  | {
      readonly ok: false;
      readonly failure: ProviderFailure;
      readonly detail: string;
      readonly retryable: boolean;
      /** Whether it says the upstream is unwell (counts towards opening the circuit). */
      readonly unhealthy: boolean;
      readonly retryAfterMs?: number;
    };

export function createProviderHttpClient(options: ProviderHttpOptions): ProviderHttpClient {
  const timeoutMs = Math.min(options.timeoutMs ?? MAX_PROVIDER_TIMEOUT_MS, MAX_PROVIDER_TIMEOUT_MS);
  if (!(timeoutMs > 0)) throw new RangeError(`timeoutMs must be > 0, got ${options.timeoutMs}`);
  const retries = options.retries ?? 2;
  const baseDelayMs = options.baseDelayMs ?? 100;
  const maxDelayMs = options.maxDelayMs ?? 1000;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const random = options.random ?? Math.random;
  const secrets = (options.secrets ?? []).filter((s) => s.length > 0);
  const breaker = createCircuitBreaker({
    failureThreshold: options.breaker?.failureThreshold ?? 5,
    coolDownMs: options.breaker?.coolDownMs ?? 30_000,
    now: options.now ?? Date.now,
    onOpen: () => options.logger?.warn({ provider: options.name }, 'provider circuit opened'),
  });
  const scrub = (text: string) => secrets.reduce((t, s) => t.split(s).join('[redacted]'), text);

  const fail = (failure: ProviderFailure, detail: string, attempts: number): ProviderResponse => {
    const scrubbed = scrub(`${options.name}: ${detail}`);
    // A refused call is not logged: the circuit opening was, once.
    if (attempts > 0) options.logger?.warn({ provider: options.name, failure, attempts, detail: scrubbed }, 'provider call failed');
    return { ok: false, failure, detail: scrubbed };
  };

  /** null: do not retry (a Retry-After longer than we are prepared to wait). */
  const backoffMs = (retry: number, retryAfterMs: number | undefined): number | null => {
    if (retryAfterMs !== undefined && retryAfterMs > maxDelayMs) return null;
    const jitter = random() * Math.min(maxDelayMs, baseDelayMs * 2 ** (retry - 1));
    return Math.max(jitter, retryAfterMs ?? 0);
  };

  return {
    circuitState: () => breaker.state(),
    async postJson(url, body, headers) {
      const admission = breaker.admit();
      if (admission === 'refused') return fail('circuit_open', 'circuit open after repeated failures; not called', 0);
      const init = { method: 'POST', headers: { accept: 'application/json', 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) };
      // A half-open trial is one attempt: it asks whether the upstream is back, not for a result at any cost.
      const attempts = admission === 'trial' ? 1 : 1 + retries;
      let attempt: Attempt;
      let made = 0;
      for (;;) {
        made++;
        attempt = await attemptOnce(url, init, timeoutMs, maxBodyBytes);
        if (attempt.ok || !attempt.retryable || made >= attempts) break;
        const delay = backoffMs(made, attempt.retryAfterMs);
        if (delay === null) break;
        await sleep(delay);
      }
      breaker.settle(admission, attempt.ok || !attempt.unhealthy);
      if (attempt.ok) return { ok: true, status: attempt.status, body: attempt.body };
      return fail(attempt.failure, made > 1 ? `${attempt.detail} (after ${made} attempts)` : attempt.detail, made);
    },
  };
}

async function attemptOnce(url: string, init: RequestInit, timeoutMs: number, maxBodyBytes: number): Promise<Attempt> {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  try {
    const response = await fetch(url, { ...init, redirect: 'manual', signal: controller.signal });
    if (response.status < 200 || response.status >= 300) {
      await discard(response);
      return statusFailure(response);
    }
    const text = await readCapped(response, maxBodyBytes, controller);
    if (text === null) return { ok: false, failure: 'oversized', detail: `response body over ${maxBodyBytes} bytes`, retryable: false, unhealthy: true };
    try {
      return { ok: true, status: response.status, body: JSON.parse(text) as unknown };
    } catch {
      return { ok: false, failure: 'malformed', detail: 'response body is not JSON', retryable: false, unhealthy: true };
    }
  } catch (error) {
    if (timedOut) return { ok: false, failure: 'timeout', detail: `no answer within ${timeoutMs} ms`, retryable: true, unhealthy: true };
    return { ok: false, failure: 'network', detail: `network error (${networkCode(error)})`, retryable: true, unhealthy: true };
  } finally {
    clearTimeout(timer);
  }
}

function statusFailure(response: Response): Attempt {
  const { status } = response;
  if (status >= 300 && status < 400) {
    return { ok: false, failure: 'upstream_error', detail: `unexpected redirect (HTTP ${status})`, retryable: false, unhealthy: true };
  }
  if (status === 429) {
    const retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
    return { ok: false, failure: 'upstream_error', detail: 'HTTP 429 (rate limited)', retryable: true, unhealthy: true, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) };
  }
  // Another 4xx means the upstream is up and refused what we sent (a bad key, a bad request):
  // repeating it cannot help, and it says nothing about the upstream's health.
  const server = status >= 500;
  return { ok: false, failure: 'upstream_error', detail: `HTTP ${status}`, retryable: server, unhealthy: server };
}

/** Retry-After as delay-seconds (RFC 9110 § 10.2.3); an HTTP-date is ignored. */
function parseRetryAfter(value: string | null): number | undefined {
  if (value === null || !/^\s*\d+\s*$/.test(value)) return undefined;
  return Number(value.trim()) * 1000;
}

/** The body as text, or null once it passes `maxBytes` (the transfer is aborted there). */
async function readCapped(response: Response, maxBytes: number, controller: AbortController): Promise<string | null> {
  const declared = Number(response.headers.get('content-length') ?? Number.NaN);
  if (declared > maxBytes) {
    controller.abort();
    return null;
  }
  if (response.body === null) return '';
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      controller.abort();
      return null;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function discard(response: Response): Promise<void> {
  try {
    await response.body?.cancel();
  } catch {
    // The status already says what we need; a body we do not read may fail to cancel.
  }
}

/** "ECONNREFUSED", "ENOTFOUND", "UND_ERR_SOCKET", …; undici puts the cause under `cause`. */
function networkCode(error: unknown): string {
  const cause: unknown = (coerceError(error) as { cause?: unknown }).cause ?? error;
  const code = typeof cause === 'object' && cause !== null ? (cause as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^[A-Z0-9_]{1,40}$/.test(code) ? code : 'unknown';
}

// ---- circuit breaker ----------------------------------------------------------------

type Admission = 'normal' | 'trial' | 'refused';

interface CircuitBreaker {
  state(): CircuitState;
  admit(): Admission;
  /** `healthy`: the call succeeded or failed in a way that says nothing against the upstream. */
  settle(admission: Admission, healthy: boolean): void;
}

function createCircuitBreaker(options: { failureThreshold: number; coolDownMs: number; now: () => number; onOpen: () => void }): CircuitBreaker {
  let consecutiveFailures = 0;
  let openedAt: number | null = null;
  let trialInFlight = false;
  const coolingDown = () => openedAt !== null && options.now() - openedAt < options.coolDownMs;
  return {
    state() {
      if (openedAt === null) return 'closed';
      return coolingDown() ? 'open' : 'half_open';
    },
    admit() {
      if (openedAt === null) return 'normal';
      if (coolingDown() || trialInFlight) return 'refused';
      trialInFlight = true;
      return 'trial';
    },
    settle(admission, healthy) {
      if (admission === 'trial') trialInFlight = false;
      if (healthy) {
        consecutiveFailures = 0;
        openedAt = null;
        return;
      }
      if (admission === 'trial') {
        openedAt = options.now();
        options.onOpen();
        return;
      }
      consecutiveFailures++;
      if (openedAt === null && consecutiveFailures >= options.failureThreshold) {
        openedAt = options.now();
        options.onOpen();
      }
    },
  };
}
