/**
 * The Redis connection (REDIS_URL). Commands fail fast when Redis is away instead of
 * queueing, so callers can fall back; the client keeps reconnecting with a capped backoff.
 */
import { Redis } from 'ioredis';
import type { Logger } from './logger.js';

export function createRedis(url: string, logger: Logger): Redis {
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    commandTimeout: 1000,
    lazyConnect: false,
    retryStrategy: (attempt) => Math.min(attempt * 200, 5000),
  });
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
