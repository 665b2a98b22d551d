/**
 * Probes: /health/live (the process answers), /health/ready (every component this
 * instance depends on), /health (overall, same checks). A critical component that
 * fails makes ready 503; a non-critical one (Redis, with its in-process fallback)
 * reports "degraded" and keeps the instance in rotation.
 */
import type { App } from './http.js';

export interface HealthCheck {
  readonly name: string;
  /** A failing critical check takes the instance out of rotation. */
  readonly critical: boolean;
  check(): Promise<void>;
}

export type ComponentStatus = 'ok' | 'fail';

export interface HealthReport {
  readonly status: 'ok' | 'degraded' | 'fail';
  readonly components: Record<string, { status: ComponentStatus; latency_ms: number; critical: boolean; error?: string }>;
}

export async function runHealthChecks(checks: readonly HealthCheck[], timeoutMs: number): Promise<HealthReport> {
  const components: HealthReport['components'] = {};
  await Promise.all(
    checks.map(async (c) => {
      const start = performance.now();
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          c.check(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
          }),
        ]);
        components[c.name] = { status: 'ok', latency_ms: Math.round(performance.now() - start), critical: c.critical };
      } catch (e) {
        // Only the message: connection strings and stacks stay in the logs.
        const error = e instanceof Error ? e.message.split('\n')[0]?.slice(0, 200) : 'failed';
        components[c.name] = {
          status: 'fail',
          latency_ms: Math.round(performance.now() - start),
          critical: c.critical,
          error: redactUrls(error ?? 'failed'),
        };
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  const failed = Object.values(components).filter((c) => c.status === 'fail');
  const status = failed.some((c) => c.critical) ? 'fail' : failed.length > 0 ? 'degraded' : 'ok';
  return { status, components };
}

function redactUrls(s: string): string {
  return s.replace(/[a-z]+:\/\/[^\s]+/gi, '<url>');
}

export interface HealthOptions {
  readonly checks: readonly HealthCheck[];
  readonly timeoutMs?: number;
  /** True once shutdown has begun: ready answers 503 so the balancer drains this instance. */
  readonly isShuttingDown: () => boolean;
  readonly version: string;
}

export function registerHealthRoutes(app: App, options: HealthOptions): void {
  const cfg = { auth: 'public' as const, rateLimit: false };
  const timeoutMs = options.timeoutMs ?? 2000;
  const full = async () => {
    const report = await runHealthChecks(options.checks, timeoutMs);
    if (options.isShuttingDown()) return { ...report, status: 'fail' as const, shutting_down: true };
    return report;
  };
  app.get('/health/live', { config: cfg, schema: { tags: ['health'], summary: 'Liveness: the process answers' } }, async () => ({
    status: 'ok',
    version: options.version,
    uptime_seconds: Math.round(process.uptime()),
  }));
  for (const url of ['/health', '/health/ready']) {
    app.get(
      url,
      {
        config: cfg,
        schema: {
          tags: ['health'],
          summary: url === '/health' ? 'Overall health with every component' : 'Readiness: 503 unless every critical component is up',
        },
      },
      async (_request, reply) => {
        const report = await full();
        return reply.code(report.status === 'fail' ? 503 : 200).send({ ...report, version: options.version });
      },
    );
  }
}
