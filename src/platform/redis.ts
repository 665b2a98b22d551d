/**
 * The Redis connection (REDIS_URL). Commands fail fast when Redis is away instead of
 * queueing, so callers can fall back; the client keeps reconnecting with a capped backoff.
 *
 * The one exception is start-up: commands issued before the first connection attempt has
 * settled wait for it (at most `connectTimeout`), instead of failing because the socket
 * is still opening. Without that, every instance would begin life with its first requests
 * counted in process and its readiness probe reporting Redis down.
 */
import { Redis } from 'ioredis';
import type { Logger } from './logger.js';

export function createRedis(url: string, logger: Logger): Redis {
  const redis = new Redis(url, {
    enableOfflineQueue: true,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    commandTimeout: 1000,
    lazyConnect: false,
    retryStrategy: (attempt) => Math.min(attempt * 200, 5000),
  });
  // From the first outcome on (connected, failed or closed), fail fast. With
  // maxRetriesPerRequest 0 a failed attempt rejects whatever was queued for it.
  const failFast = () => {
    redis.options.enableOfflineQueue = false;
    redis.off('ready', failFast).off('error', failFast).off('end', failFast);
  };
  redis.on('ready', failFast).on('error', failFast).on('end', failFast);
  let lastLogged = 0;
  redis.on('error', (err: Error) => {
    const now = Date.now();
    if (now - lastLogged > 30_000) {
      lastLogged = now;
      logger.warn({ err: { message: err.message } }, 'redis connection error');
    }
  });
  return redis;
}
