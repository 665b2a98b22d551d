/**
 * Load shedding (HTTP_MAX_IN_FLIGHT): with the limit reached, the next request is 503 with
 * Retry-After before any of its work starts; probes still answer; a finished or aborted
 * request frees its place.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/platform/http.js';
import { loadConfig } from '../../src/platform/config.js';
import { createBareServer, deferred } from './http-support.js';

let app: App;
let gate = deferred();
let handlerRuns = 0;

beforeAll(async () => {
  app = await createBareServer(
    (a) => {
      const cfg = { config: { auth: 'public' as const } };
      a.get('/slow', cfg, async () => {
        handlerRuns += 1;
        await gate.promise;
        return { ok: true };
      });
      a.get('/health/live', cfg, async () => ({ status: 'ok' }));
    },
    undefined,
    { maxInFlight: 2 },
  );
});
afterAll(async () => app.close());

describe('admission limit', () => {
  it('answers 503 with Retry-After beyond the limit, before the handler runs; probes pass; places are freed', async () => {
    gate = deferred();
    handlerRuns = 0;
    const first = app.inject({ method: 'GET', url: '/slow' });
    const second = app.inject({ method: 'GET', url: '/slow' });
    await expect.poll(() => handlerRuns).toBe(2);

    const refused = await app.inject({ method: 'GET', url: '/slow' });
    expect(refused.statusCode).toBe(503);
    expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(refused.headers['retry-after']).toBe('1');
    expect(refused.json<{ code: string; detail: string }>()).toMatchObject({ code: 'service_unavailable', detail: expect.stringContaining('HTTP_MAX_IN_FLIGHT') as unknown });
    expect(handlerRuns).toBe(2);

    expect((await app.inject({ method: 'GET', url: '/health/live' })).statusCode).toBe(200);

    gate.resolve();
    expect((await first).statusCode).toBe(200);
    expect((await second).statusCode).toBe(200);
    // Both places are free again: two more run at once.
    gate = deferred();
    const again = [app.inject({ method: 'GET', url: '/slow' }), app.inject({ method: 'GET', url: '/slow' })];
    await expect.poll(() => handlerRuns).toBe(4);
    gate.resolve();
    expect((await Promise.all(again)).map((r) => r.statusCode)).toEqual([200, 200]);
  });

  it('a refused request does not take a place', async () => {
    gate = deferred();
    handlerRuns = 0;
    const held = [app.inject({ method: 'GET', url: '/slow' }), app.inject({ method: 'GET', url: '/slow' })];
    await expect.poll(() => handlerRuns).toBe(2);
    for (let i = 0; i < 5; i += 1) expect((await app.inject({ method: 'GET', url: '/slow' })).statusCode).toBe(503);
    gate.resolve();
    await Promise.all(held);
    gate = deferred();
    gate.resolve();
    expect((await app.inject({ method: 'GET', url: '/slow' })).statusCode).toBe(200);
  });
});

describe('HTTP_MAX_IN_FLIGHT', () => {
  const base = { ENV: 'test', SECRET_KEY: 'test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz', ENCRYPTION_KEY: Buffer.from('0123456789abcdef0123456789ABCDEF').toString('base64'), DATA_DIR: '/nonexistent' };
  it('defaults to 16 per pooled connection, at least 64, and can be set', () => {
    expect(loadConfig(base).http.maxInFlight).toBe(160);
    expect(loadConfig({ ...base, DB_POOL_MAX: '2' }).http.maxInFlight).toBe(64);
    expect(loadConfig({ ...base, HTTP_MAX_IN_FLIGHT: '500' }).http.maxInFlight).toBe(500);
  });
});
