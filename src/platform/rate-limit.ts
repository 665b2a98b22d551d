/**
 * Fixed-window rate limiting behind a small store port: Redis when REDIS_URL is set
 * (shared by every instance), in process otherwise. If Redis fails, the limiter falls
 * back to the in-process store for that request and logs it: limits become per
 * instance for as long as Redis is away, and no request turns into a 5xx.
 */
import type { Redis } from 'ioredis';
import type { Counter } from 'prom-client';
import { AppError, coerceError } from './errors.js';
import type { App } from './http.js';
import type { Logger } from './logger.js';

export interface RateLimitHit {
  /** Hits in the current window, this one included. */
  readonly count: number;
  /** Milliseconds until the window resets. */
  readonly resetMs: number;
}

export interface RateLimitStore {
  readonly kind: 'memory' | 'redis';
  hit(key: string, windowMs: number): Promise<RateLimitHit>;
  /** Current count without counting a hit. */
  peek(key: string): Promise<RateLimitHit | null>;
  reset(key: string): Promise<void>;
}

export function createMemoryRateLimitStore(now: () => number = Date.now): RateLimitStore & { close(): void } {
  const windows = new Map<string, { count: number; resetAt: number }>();
  const sweep = setInterval(() => {
    const t = now();
    for (const [k, w] of windows) if (w.resetAt <= t) windows.delete(k);
  }, 60_000);
  sweep.unref();
  return {
    kind: 'memory',
    async hit(key, windowMs) {
      const t = now();
      let w = windows.get(key);
      if (!w || w.resetAt <= t) {
        w = { count: 0, resetAt: t + windowMs };
        windows.set(key, w);
      }
      w.count++;
      return { count: w.count, resetMs: w.resetAt - t };
    },
    async peek(key) {
      const t = now();
      const w = windows.get(key);
      return w && w.resetAt > t ? { count: w.count, resetMs: w.resetAt - t } : null;
    },
    async reset(key) {
      windows.delete(key);
    },
    close() {
      clearInterval(sweep);
    },
  };
}

// INCR and set the expiry on the first hit, atomically; returns [count, pttl].
const HIT_SCRIPT = `
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local t = redis.call('PTTL', KEYS[1])
if t < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); t = tonumber(ARGV[1]) end
return {c, t}
`;

export function createRedisRateLimitStore(redis: Redis, prefix = 'loanbook:rl:'): RateLimitStore {
  return {
    kind: 'redis',
    async hit(key, windowMs) {
      const [count, ttl] = (await redis.eval(HIT_SCRIPT, 1, prefix + key, String(windowMs))) as [number, number];
      return { count, resetMs: ttl };
    },
    async peek(key) {
      const [count, ttl] = await Promise.all([redis.get(prefix + key), redis.pttl(prefix + key)]);
      return count === null || ttl < 0 ? null : { count: Number(count), resetMs: ttl };
    },
    async reset(key) {
      await redis.del(prefix + key);
    },
  };
}

/**
 * A store that uses `primary` and, when it throws, the in-process `fallback`.
 * `onFallback` is called for each failed call (metrics and a rate-limited log line).
 */
export function withFallback(
  primary: RateLimitStore,
  fallback: RateLimitStore,
  onFallback: (err: Error) => void,
): RateLimitStore {
  const guard = async <T>(op: () => Promise<T>, alt: () => Promise<T>): Promise<T> => {
    try {
      return await op();
    } catch (e) {
      onFallback(coerceError(e));
      return alt();
    }
  };
  return {
    kind: primary.kind,
    hit: (key, windowMs) => guard(() => primary.hit(key, windowMs), () => fallback.hit(key, windowMs)),
    peek: (key) => guard(() => primary.peek(key), () => fallback.peek(key)),
    reset: (key) => guard(() => primary.reset(key), () => fallback.reset(key)),
  };
}

export interface RateLimiterOptions {
  readonly store: RateLimitStore;
  readonly requests: number;
  readonly windowMs: number;
}

/** Headers per draft-ietf-httpapi-ratelimit-headers-07, plus Retry-After on 429. */
export function rateLimitHeaders(limit: number, windowMs: number, hit: RateLimitHit): Record<string, string> {
  const resetSeconds = Math.max(1, Math.ceil(hit.resetMs / 1000));
  return {
    'ratelimit-limit': String(limit),
    'ratelimit-remaining': String(Math.max(0, limit - hit.count)),
    'ratelimit-reset': String(resetSeconds),
    'ratelimit-policy': `${limit};w=${Math.round(windowMs / 1000)}`,
  };
}

export function rateLimited(detail: string, headers: Record<string, string>, resetMs: number): AppError {
  return new AppError('rate_limited', {
    detail,
    headers: { ...headers, 'retry-after': String(Math.max(1, Math.ceil(resetMs / 1000))) },
  });
}

/**
 * Per-user limit (per IP when anonymous) on every route that does not opt out.
 * Runs after authentication so a signed-in user is counted by id, not address.
 */
export function installRateLimit(app: App, options: RateLimiterOptions): void {
  app.addHook('onRequest', async (request, reply) => {
    if (request.routeOptions.config.rateLimit === false) return;
    const key = request.principal ? `u:${request.principal.userId}` : `ip:${request.ip}`;
    const hit = await options.store.hit(key, options.windowMs);
    const headers = rateLimitHeaders(options.requests, options.windowMs, hit);
    if (hit.count > options.requests) {
      throw rateLimited(`Limit of ${options.requests} requests per ${Math.round(options.windowMs / 1000)} s reached.`, headers, hit.resetMs);
    }
    for (const [k, v] of Object.entries(headers)) void reply.header(k, v);
  });
}

/** Logs a Redis failure at most once per interval, and counts every one. */
export function fallbackReporter(logger: Logger, counter: Counter, intervalMs = 30_000): (err: Error) => void {
  let lastLog = 0;
  return (err) => {
    counter.inc();
    const t = Date.now();
    if (t - lastLog >= intervalMs) {
      lastLog = t;
      logger.warn({ err: { message: err.message } }, 'rate-limit store unavailable; using the in-process limiter');
    }
  };
}
