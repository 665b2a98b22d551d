/**
 * The TTL cache: in process (expiry by an injected clock, LRU bound) and on the REAL
 * Redis (TEST_REDIS=1), including a Redis that is not there, where reads miss and
 * writes are dropped without an exception reaching the caller.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createMemoryCache, createRedisCache } from '../../src/platform/cache.js';
import { createRedis } from '../../src/platform/redis.js';
import { hasRedis, redisTestUrl, silentLogger } from '../support/db.js';
import { freePort } from '../support/net.js';

describe('memory cache', () => {
  it('answers a value until its ttl has passed, then a miss (expiry read from the injected clock)', async () => {
    let now = 1_000_000;
    const cache = createMemoryCache({ maxEntries: 10, now: () => now });
    await cache.set('k', 'v', 600_000);
    expect(await cache.get('k')).toBe('v');
    now += 599_999;
    expect(await cache.get('k')).toBe('v');
    now += 1;
    expect(await cache.get('k')).toBeUndefined();
    expect(cache.size).toBe(0);
    expect(await cache.get('never-set')).toBeUndefined();
  });

  it('a new set replaces the value and restarts its ttl; a ttl ≤ 0 stores nothing', async () => {
    let now = 0;
    const cache = createMemoryCache({ maxEntries: 10, now: () => now });
    await cache.set('k', 'one', 100);
    now = 90;
    await cache.set('k', 'two', 100);
    now = 150;
    expect(await cache.get('k')).toBe('two');
    await cache.set('zero', 'x', 0);
    await cache.set('negative', 'x', -5);
    expect(await cache.get('zero')).toBeUndefined();
    expect(await cache.get('negative')).toBeUndefined();
    await cache.set('k', 'ignored', 0);
    expect(await cache.get('k')).toBe('two');
  });

  it('holds at most maxEntries, evicting the least recently used (a read counts as use)', async () => {
    const cache = createMemoryCache({ maxEntries: 3, now: () => 0 });
    await cache.set('a', '1', 1000);
    await cache.set('b', '2', 1000);
    await cache.set('c', '3', 1000);
    expect(await cache.get('a')).toBe('1'); // b is now the least recently used
    await cache.set('d', '4', 1000);
    expect(cache.size).toBe(3);
    expect(await cache.get('b')).toBeUndefined();
    expect(await cache.get('a')).toBe('1');
    expect(await cache.get('c')).toBe('3');
    expect(await cache.get('d')).toBe('4');
    // Overwriting an existing key does not evict another one.
    await cache.set('c', '33', 1000);
    expect(cache.size).toBe(3);
    expect(await cache.get('a')).toBe('1');
  });

  it('refuses a bound that is not a whole number ≥ 1', () => {
    expect(() => createMemoryCache({ maxEntries: 0 })).toThrow(RangeError);
    expect(() => createMemoryCache({ maxEntries: 1.5 })).toThrow(RangeError);
  });
});

describe.runIf(hasRedis)('redis cache (real Redis)', () => {
  let admin: Redis;
  const clients: Redis[] = [];
  const prefix = `loanbook:test:cache:${randomUUID()}:`;

  beforeAll(async () => {
    admin = new Redis(redisTestUrl, { lazyConnect: true });
    await admin.connect();
  });
  afterEach(() => {
    for (const c of clients.splice(0)) c.disconnect();
  });
  afterAll(async () => {
    const keys = await admin.keys(`${prefix}*`);
    if (keys.length > 0) await admin.del(...keys);
    admin.disconnect();
  });

  const client = (url: string) => {
    const r = createRedis(url, silentLogger);
    clients.push(r);
    return r;
  };

  it('stores under the prefix with SET … PX, reads it back, and misses on an unknown key', async () => {
    const cache = createRedisCache(client(redisTestUrl), prefix);
    await cache.set('acme', '{"status":"verified"}', 600_000);
    expect(await cache.get('acme')).toBe('{"status":"verified"}');
    expect(await admin.get(`${prefix}acme`)).toBe('{"status":"verified"}');
    const ttl = await admin.pttl(`${prefix}acme`);
    expect(ttl).toBeGreaterThan(590_000);
    expect(ttl).toBeLessThanOrEqual(600_000);
    expect(await cache.get('unknown')).toBeUndefined();
    expect(cache.failures()).toBe(0);
  });

  it('a key Redis has expired is a miss', async () => {
    const cache = createRedisCache(client(redisTestUrl), prefix);
    await cache.set('short', 'v', 600_000);
    // Expire it in Redis now instead of waiting for the clock.
    await admin.pexpire(`${prefix}short`, 1);
    await new Promise((r) => setTimeout(r, 20));
    expect(await cache.get('short')).toBeUndefined();
  });

  it('a Redis that is not there: get answers undefined, set is dropped, nothing throws, each failure is reported', async () => {
    const errors: string[] = [];
    const cache = createRedisCache(client(`redis://127.0.0.1:${await freePort()}`), prefix, {
      onError: (operation) => errors.push(operation),
    });
    await expect(cache.set('k', 'v', 1000)).resolves.toBeUndefined();
    await expect(cache.get('k')).resolves.toBeUndefined();
    await expect(cache.get('k')).resolves.toBeUndefined();
    expect(errors).toEqual(['set', 'get', 'get']);
    expect(cache.failures()).toBe(3);
  });

  it('a client closed for good behaves the same', async () => {
    const redis = client(redisTestUrl);
    const cache = createRedisCache(redis, prefix);
    await cache.set('before', 'v', 60_000);
    expect(await cache.get('before')).toBe('v');
    redis.disconnect();
    await expect(cache.get('before')).resolves.toBeUndefined();
    await expect(cache.set('after', 'v', 60_000)).resolves.toBeUndefined();
    expect(cache.failures()).toBe(2);
    expect(await admin.exists(`${prefix}after`)).toBe(0);
  });
});
