/**
 * Transactions retried on the failures PostgreSQL asks the client to retry: a
 * serialization failure (40001) or a deadlock (40P01). Bounded attempts, full-jitter
 * exponential backoff, every retry reported (the caller counts it in a metric).
 */
import type { Kysely, Transaction } from 'kysely';

const RETRYABLE = new Set(['40001', '40P01']);

export function isRetryableDbError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && RETRYABLE.has(String((error as { code?: unknown }).code));
}

export interface RetryOptions {
  readonly attempts?: number;
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
  readonly isolation?: 'read committed' | 'repeatable read' | 'serializable';
  readonly onRetry?: (reason: string, attempt: number) => void;
  /** Injected for deterministic tests; default Math.random. */
  readonly random?: () => number;
}

export async function inTransactionWithRetry<DB, T>(db: Kysely<DB>, work: (trx: Transaction<DB>) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const attempts = options.attempts ?? 5;
  const base = options.baseDelayMs ?? 5;
  const cap = options.maxDelayMs ?? 200;
  const random = options.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    try {
      const builder = db.transaction();
      return await (options.isolation === undefined ? builder : builder.setIsolationLevel(options.isolation)).execute(work);
    } catch (error) {
      if (!isRetryableDbError(error) || attempt >= attempts) throw error;
      options.onRetry?.(String((error as { code: unknown }).code) === '40P01' ? 'deadlock' : 'serialization_failure', attempt);
      const delay = random() * Math.min(cap, base * 2 ** (attempt - 1));
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
