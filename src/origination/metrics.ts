/**
 * Origination metrics, with the seed's names kept exact: `loan_applications_total{status,decision}`
 * and `loan_processing_duration_seconds{stage}` (each pipeline stage, and `total`), plus
 * decisions by policy version (automated and shadow) for champion/challenger dashboards.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import type { StageName } from './model.js';

export interface OriginationMetricsPort {
  application(status: 'success' | 'error' | 'refused', decision: string): void;
  stage(stage: StageName | 'total' | 'narrative', seconds: number): void;
  decision(kind: 'automated' | 'shadow' | 'review', policy: string, outcome: string): void;
}

export function createOriginationMetrics(registry: Registry): OriginationMetricsPort {
  const applications = new Counter({
    name: 'loan_applications_total',
    help: 'Total number of loan applications',
    labelNames: ['status', 'decision'] as const,
    registers: [registry],
  });
  const processing = new Histogram({
    name: 'loan_processing_duration_seconds',
    help: 'Time spent processing loan applications, by pipeline stage (and total)',
    labelNames: ['stage'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const decisions = new Counter({
    name: 'loanbook_decisions_total',
    help: 'Credit decisions by kind (automated, shadow, review), policy version (name@version) and outcome',
    labelNames: ['kind', 'policy', 'outcome'] as const,
    registers: [registry],
  });
  return {
    application: (status, decision) => applications.inc({ status, decision }),
    stage: (stage, seconds) => processing.observe({ stage }, seconds),
    decision: (kind, policy, outcome) => decisions.inc({ kind, policy, outcome }),
  };
}
