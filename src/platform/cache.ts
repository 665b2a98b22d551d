/**
 * A small string cache with a time to live, behind a two-method port: in process
 * (LRU-bounded, expiry read from an injected clock) or in Redis (SET … PX / GET).
 *
 * A cache is an optimisation, never a dependency: the Redis variant answers a miss when
 * Redis fails and drops the write, so a caller never sees an exception from it. Each
 * failure is counted and reported through `onError` (the composition root turns that into
 * a metric or a rate-limited log line). How long a failing command may take is the
 * client's business: `createRedis` fails fast and bounds every command by its timeout.
 */
import type { Redis } from 'ioredis';
import { coerceError } from './errors.js';

export interface TtlCache {
  get(key: string): Promise<string | undefined>;
  /** Stores `value` for `ttlMs` milliseconds; a ttl ≤ 0 stores nothing. */
  set(key: string, value: string, ttlMs: number): Promise<void>;
}

export interface MemoryCacheOptions {
  /** At most this many entries; the least recently used goes first. */
  readonly maxEntries: number;
  /** Milliseconds since the epoch; injected for tests. Default `Date.now`. */
  readonly now?: () => number;
}

export interface MemoryCache extends TtlCache {
  /** Entries held, expired ones not yet evicted included. */
  readonly size: number;
}

/**
 * In process. A `Map` keeps insertion order, so re-inserting on every hit makes its first
 * key the least recently used one. Expired entries go when they are read or pushed out
 * by the bound; no timer runs.
 */
export function createMemoryCache(options: MemoryCacheOptions): MemoryCache {
  const { maxEntries } = options;
  if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError(`maxEntries must be a whole number ≥ 1, got ${maxEntries}`);
  const now = options.now ?? Date.now;
  const entries = new Map<string, { value: string; expiresAt: number }>();
  return {
    get size() {
      return entries.size;
    },
    async get(key) {
      const entry = entries.get(key);
      if (entry === undefined) return undefined;
      entries.delete(key);
      if (entry.expiresAt <= now()) return undefined;
      entries.set(key, entry);
      return entry.value;
    },
    async set(key, value, ttlMs) {
      if (!(ttlMs > 0)) return;
      entries.delete(key);
      entries.set(key, { value, expiresAt: now() + ttlMs });
      while (entries.size > maxEntries) {
        const oldest = entries.keys().next();
        if (oldest.done === true) break;
        entries.delete(oldest.value);
      }
    },
  };
}

export interface RedisCacheOptions {
  /** Called once per failed command; the cache has already answered a miss or dropped the write. */
  readonly onError?: (operation: 'get' | 'set', error: Error) => void;
}

export interface RedisCache extends TtlCache {
  /** Commands that failed since the cache was created. */
  failures(): number;
}

/** In Redis under `prefix` (e.g. "loanbook:cache:"), shared by every instance. */
export function createRedisCache(redis: Redis, prefix: string, options: RedisCacheOptions = {}): RedisCache {
  let failures = 0;
  const failed = (operation: 'get' | 'set', error: unknown) => {
    failures++;
    options.onError?.(operation, coerceError(error));
  };
  return {
    failures: () => failures,
    async get(key) {
      try {
        return (await redis.get(prefix + key)) ?? undefined;
      } catch (error) {
        failed('get', error);
        return undefined;
      }
    },
    async set(key, value, ttlMs) {
      if (!(ttlMs > 0)) return;
      try {
        // PX takes whole milliseconds; round up so a tiny ttl still expires, never persists.
        await redis.set(prefix + key, value, 'PX', Math.ceil(ttlMs));
      } catch (error) {
        failed('set', error);
      }
    },
  };
}
