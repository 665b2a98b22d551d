/**
 * `loanbook_ledger_imbalance_minor{currency}`: the general ledger's net (debits − credits,
 * minor units) per currency over every journal line. Each entry is refused at commit
 * unless it balances, so the net is 0 in a sound ledger; anything else means rows got in
 * around the constraint triggers (a restore or a manual fix with triggers disabled) and
 * the books cannot be trusted until it is explained.
 *
 * It sums every line, so it is the most expensive sampled read: at most once a minute,
 * under a statement timeout. A ledger too large to sum within it shows as
 * loanbook_metrics_sample_errors_total{sampler="ledger"} rising, and the gauge keeps its
 * last value.
 */
import type { Kysely } from 'kysely';
import type { Logger } from '../platform/logger.js';
import { createSampler, readWithTimeout, registerSampledGauge, type Metrics } from '../platform/metrics.js';
import { ledgerNetByCurrency, type LedgerDb } from './repository.js';

export function registerLedgerMetrics(metrics: Metrics, logger: Logger, db: Kysely<LedgerDb>, options: { maxAgeMs?: number; statementTimeoutMs?: number } = {}): void {
  const timeout = options.statementTimeoutMs ?? 5000;
  const sampler = createSampler(metrics, logger, { name: 'ledger', maxAgeMs: options.maxAgeMs ?? 60_000, read: () => readWithTimeout(db, timeout, ledgerNetByCurrency) });
  registerSampledGauge(metrics.registry, sampler, {
    name: 'loanbook_ledger_imbalance_minor',
    help: 'General ledger net (debits minus credits) per currency in minor units; 0 when the ledger balances',
    labelNames: ['currency'] as const,
    // Metrics are floats: exact up to 2^53 minor units, far beyond any imbalance worth reading.
    values: (net) => [...net].map(([currency, v]) => [{ currency }, Number(v)] as const),
  });
}
