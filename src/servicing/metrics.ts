/** Servicing's own metrics, registered on the application's registry. */
import { Counter, Histogram, type Registry } from 'prom-client';
import type { ServicingMetricsPort } from './service.js';

export function createServicingMetrics(registry: Registry): ServicingMetricsPort & { readonly retries: Counter<'reason'> } {
  const retries = new Counter({
    name: 'loanbook_servicing_retries_total',
    help: 'Servicing transactions retried after a serialization failure or deadlock',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const commands = new Histogram({
    name: 'loanbook_servicing_command_duration_seconds',
    help: 'Servicing commands (disbursement, payment, charge, reversal, …) by outcome',
    labelNames: ['command', 'outcome'] as const,
    buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  return {
    retries,
    retried: (reason) => retries.inc({ reason }),
    command: (command, outcome, seconds) => commands.observe({ command, outcome }, seconds),
  };
}
