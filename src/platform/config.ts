/**
 * The one place that reads the environment. `loadConfig(process.env)` runs once in the
 * composition root (src/cli.ts); everything else receives the frozen result.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { z } from 'zod';

export type RunEnv = 'development' | 'test' | 'production';
export type SecretSource = 'env' | 'generated';

export interface Config {
  readonly env: RunEnv;
  readonly port: number;
  readonly host: string;
  /** Set: PostgreSQL through node-postgres. Unset: embedded PGlite in `dataDir`. */
  readonly databaseUrl: string | undefined;
  readonly redisUrl: string | undefined;
  readonly dataDir: string;
  readonly secretKey: string;
  readonly encryptionKey: Buffer;
  readonly secretSources: { readonly secretKey: SecretSource; readonly encryptionKey: SecretSource };
  /** Keys being rotated out (SECRET_KEY_PREVIOUS): access tokens they signed still verify. */
  readonly previousSecretKeys: readonly string[];
  /** Keys being rotated out (ENCRYPTION_KEY_PREVIOUS): values they encrypted still decrypt and still match lookups. */
  readonly previousEncryptionKeys: readonly Buffer[];
  readonly accessTokenExpireMinutes: number;
  readonly refreshTokenExpireDays: number;
  readonly allowedOrigins: readonly string[];
  readonly rateLimit: { readonly requests: number; readonly windowMs: number };
  readonly loginRateLimit: { readonly failures: number; readonly windowMs: number };
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  readonly adminEmail: string | undefined;
  readonly adminPassword: string | undefined;
  /** Trust X-Forwarded-* from these proxy addresses (Fastify `trustProxy`); `true` trusts any peer. */
  readonly trustProxy: boolean | string;
  /** When set, /metrics is served on this port only (not on the API port). */
  readonly metricsPort: number | undefined;
  readonly db: {
    readonly poolMax: number;
    readonly statementTimeoutMs: number;
    readonly connectionTimeoutMs: number;
    readonly idleInTransactionTimeoutMs: number;
    /** PostgreSQL: longest wait for a free pooled connection before 503 database_unavailable. */
    readonly acquireTimeoutMs: number;
    /** PostgreSQL reachability probe; undefined when DB_PROBE_INTERVAL_MS=0. */
    readonly probe: { readonly intervalMs: number; readonly timeoutMs: number } | undefined;
  };
  readonly http: {
    readonly bodyLimitBytes: number;
    readonly jsonMaxDepth: number;
    readonly requestTimeoutMs: number;
    readonly headersTimeoutMs: number;
    readonly keepAliveTimeoutMs: number;
    readonly shutdownGraceMs: number;
    /** Requests in progress at once (probes and /metrics aside); beyond it, 503 at once. */
    readonly maxInFlight: number;
  };
  readonly idempotencyRetentionHours: number;
  readonly sentryDsn: string | undefined;
  readonly otelExporterEndpoint: string | undefined;
  /** OpenTelemetry traces (src/platform/telemetry.ts); off when `tracesUrl` is undefined. */
  readonly otel: {
    /** OTLP/HTTP JSON traces URL: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces. */
    readonly tracesUrl: string | undefined;
    /** Sent with every export (OTEL_EXPORTER_OTLP_HEADERS), e.g. a vendor's API key. */
    readonly headers: Readonly<Record<string, string>>;
    readonly serviceName: string;
    readonly sampler: OtelSampler;
    /** The ratio of the traceidratio samplers (OTEL_TRACES_SAMPLER_ARG, default 1). */
    readonly samplerRatio: number;
  };
  /** Jobs of each kind run at once per process (`loanbook worker`, or `serve` when jobsInProcess). */
  readonly workerConcurrency: number;
  /** Whether `serve` runs the job workers itself. Default: yes on the embedded database, no with DATABASE_URL. */
  readonly jobsInProcess: boolean;
  /** `loanbook serve` processes (WEB_CONCURRENCY; `--workers` overrides): 1 is one process, more a node:cluster of them. */
  readonly webConcurrency: number;
  /** `loanbook worker`'s /health/live, /health/ready and /metrics port; undefined when WORKER_HTTP_PORT=0 turns it off. */
  readonly workerHttpPort: number | undefined;
  readonly calculationThreadPoolSize: number;
  readonly serperApiKey: string | undefined;
  readonly geminiApiKey: string | undefined;
  /** External providers (origination): base URLs (overridable for a proxy), model, per-call timeout (≤ 3 s). */
  readonly providers: {
    readonly serperUrl: string;
    readonly geminiUrl: string;
    readonly geminiModel: string;
    readonly timeoutMs: number;
    /** Whether the underwriters' narrative may receive the applicant's personal data (default: never). */
    readonly narrativeIncludesPii: boolean;
  };
  readonly origination: {
    /** Velocity rule: applications per applicant (blind index) per 24 hours. */
    readonly applicationsPerDay: number;
    /** Review approvals of more than this amount (decimal string, major units) need a second underwriter. */
    readonly dualApprovalAbove: string;
  };
  /** 'HH:MM' (UTC): when serving processes close the business date each day; unset: only on request. */
  readonly eodSchedule: string | undefined;
  /** Loans per end-of-day chunk transaction. */
  readonly eodChunkSize: number;
  /** End-of-day chunks in flight at once, each over its own slice of the book. */
  readonly eodConcurrency: number;
  /** `loanbook backup` / `restore`: default destination, PostgreSQL client tools, S3-compatible storage. */
  readonly backup: {
    /** BACKUP_LOCATION: a directory or s3://bucket/prefix; unset: DATA_DIR/backups (embedded) or --to required. */
    readonly location: string | undefined;
    /** PG_BIN_DIR: where pg_dump and pg_restore are; unset: on PATH. */
    readonly pgBinDir: string | undefined;
    readonly s3: {
      /** S3_ENDPOINT (MinIO, R2, …); unset: AWS (https://s3.<region>.amazonaws.com). Path-style addressing. */
      readonly endpoint: string | undefined;
      readonly region: string;
      readonly accessKeyId: string | undefined;
      readonly secretAccessKey: string | undefined;
    };
  };
  /** The outbox relay (src/platform/event-relay.ts): NATS JetStream when natsUrl is set, else the log. */
  readonly events: {
    readonly natsUrl: string | undefined;
    /** JetStream stream holding the events (NATS_STREAM, default LOANBOOK). */
    readonly natsStream: string;
    /** Events go to `<prefix>.<topic>` (NATS_SUBJECT_PREFIX, default loanbook). */
    readonly natsSubjectPrefix: string;
    /** Wait between relay polls that found nothing more to do (OUTBOX_POLL_INTERVAL_MS, default 1000). */
    readonly pollIntervalMs: number;
  };
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

const HOW_TO_SECRET_KEY = 'generate one with: openssl rand -base64 48';
const HOW_TO_ENCRYPTION_KEY = 'generate one with: openssl rand -base64 32';

/** Values that appear in tutorials and templates; never acceptable as a signing key. */
const KNOWN_WEAK_SECRETS = new Set([
  'secret',
  'changeme',
  'change-me',
  'your-secret-key',
  'your-secret-key-change-in-production',
  'supersecret',
  'development',
]);

const optionalString = z
  .string()
  .transform((s) => s.trim())
  .optional()
  .transform((s) => (s === undefined || s === '' ? undefined : s));

const intFrom = (def: number, min: number, max: number) =>
  z
    .string()
    .optional()
    .transform((s, ctx) => {
      if (s === undefined || s.trim() === '') return def;
      if (!/^\d+$/.test(s.trim())) {
        ctx.addIssue({ code: 'custom', message: `must be a whole number, got "${s}"` });
        return z.NEVER;
      }
      const n = Number(s.trim());
      if (n < min || n > max) {
        ctx.addIssue({ code: 'custom', message: `must be between ${min} and ${max}, got ${n}` });
        return z.NEVER;
      }
      return n;
    });

/** "60", "60s", "15m", "1h" → milliseconds. A bare number is seconds. */
const durationMs = (defSeconds: number) =>
  z
    .string()
    .optional()
    .transform((s, ctx) => {
      if (s === undefined || s.trim() === '') return defSeconds * 1000;
      const m = /^(\d+)\s*(s|m|h)?$/.exec(s.trim());
      if (!m) {
        ctx.addIssue({ code: 'custom', message: `must be seconds ("60") or a duration ("60s", "15m", "1h"), got "${s}"` });
        return z.NEVER;
      }
      const n = Number(m[1]);
      const unit = m[2] === 'h' ? 3600 : m[2] === 'm' ? 60 : 1;
      const ms = n * unit * 1000;
      if (ms < 1000 || ms > 86_400_000) {
        ctx.addIssue({ code: 'custom', message: 'must be between 1 second and 24 hours' });
        return z.NEVER;
      }
      return ms;
    });

/** The OTEL_TRACES_SAMPLER values of the OpenTelemetry environment specification that make sense here. */
export const OTEL_SAMPLERS = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
] as const;
export type OtelSampler = (typeof OTEL_SAMPLERS)[number];

function isHttpUrl(u: string): boolean {
  try {
    const url = new URL(u);
    return url.protocol === 'http:' || url.protocol === 'https:';
  } catch {
    return false;
  }
}

/** The OTel spec's base-URL rule: the signal path is appended to OTEL_EXPORTER_OTLP_ENDPOINT (one slash between). */
function otlpSignalUrl(base: string, path: string): string {
  return `${base.endsWith('/') ? base : `${base}/`}${path}`;
}

/** OTEL_EXPORTER_OTLP_HEADERS ("k1=v1,k2=v2", values URL-encoded); undefined when malformed. */
function parseOtlpHeaders(value: string): Record<string, string> | undefined {
  const headers: Record<string, string> = {};
  for (const pair of value.split(',')) {
    if (pair.trim() === '') continue;
    const eq = pair.indexOf('=');
    const key = pair.slice(0, eq).trim();
    if (eq <= 0 || !/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(key)) return undefined;
    try {
      headers[key.toLowerCase()] = decodeURIComponent(pair.slice(eq + 1).trim());
    } catch {
      return undefined;
    }
  }
  return headers;
}

const envSchema = z.object({
  ENV: z.enum(['development', 'test', 'production']).default('development'),
  PORT: intFrom(8000, 0, 65535),
  HOST: optionalString,
  DATABASE_URL: optionalString.refine((u) => u === undefined || /^postgres(ql)?:\/\//.test(u), {
    message: 'must be a postgres:// or postgresql:// URL',
  }),
  REDIS_URL: optionalString.refine((u) => u === undefined || /^rediss?:\/\//.test(u), {
    message: 'must be a redis:// or rediss:// URL',
  }),
  DATA_DIR: optionalString,
  SECRET_KEY: optionalString,
  ENCRYPTION_KEY: optionalString,
  SECRET_KEY_PREVIOUS: optionalString,
  ENCRYPTION_KEY_PREVIOUS: optionalString,
  ACCESS_TOKEN_EXPIRE_MINUTES: intFrom(15, 1, 1440),
  REFRESH_TOKEN_EXPIRE_DAYS: intFrom(14, 1, 365),
  ALLOWED_ORIGINS: optionalString,
  RATE_LIMIT_REQUESTS: intFrom(100, 1, 1_000_000),
  RATE_LIMIT_WINDOW: durationMs(60),
  LOGIN_RATE_LIMIT_FAILURES: intFrom(5, 1, 1000),
  LOGIN_RATE_LIMIT_WINDOW: durationMs(15 * 60),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
  ADMIN_EMAIL: optionalString.refine((e) => e === undefined || z.email().safeParse(e).success, {
    message: 'must be an email address',
  }),
  ADMIN_PASSWORD: optionalString.refine((p) => p === undefined || p.length >= 12, {
    message: 'must be at least 12 characters',
  }),
  TRUST_PROXY: optionalString
    .refine((v) => v === undefined || !/^\d+$/.test(v), {
      // Fastify 5 treats a hop count as "trust nobody" (a client could otherwise spoof
      // X-Forwarded-For by sending enough hops), so a number would silently do nothing.
      message: 'hop counts are not supported; list the proxy addresses instead (e.g. "loopback,uniquelocal" or "10.0.0.0/8")',
    })
    .refine((v) => v === undefined || /^\d+$/.test(v) || trustProxyIsValid(v), {
      message: 'must be true, false, or a comma-separated list of proxy addresses (IP, CIDR, loopback, linklocal, uniquelocal)',
    }),
  METRICS_PORT: optionalString.refine((p) => p === undefined || (/^\d+$/.test(p) && Number(p) >= 1 && Number(p) <= 65535), {
    message: 'must be a port number (1-65535)',
  }),
  DB_POOL_MAX: intFrom(10, 1, 500),
  DB_STATEMENT_TIMEOUT_MS: intFrom(30_000, 100, 3_600_000),
  DB_CONNECTION_TIMEOUT_MS: intFrom(5_000, 100, 120_000),
  DB_POOL_ACQUIRE_TIMEOUT_MS: intFrom(500, 10, 120_000),
  DB_PROBE_INTERVAL_MS: intFrom(1_000, 0, 60_000),
  DB_PROBE_TIMEOUT_MS: intFrom(2_000, 100, 60_000),
  HTTP_REQUEST_TIMEOUT_MS: intFrom(30_000, 1000, 600_000),
  HTTP_HEADERS_TIMEOUT_MS: intFrom(10_000, 1000, 120_000),
  HTTP_MAX_IN_FLIGHT: intFrom(0, 0, 100_000),
  SHUTDOWN_GRACE_MS: intFrom(10_000, 0, 120_000),
  IDEMPOTENCY_RETENTION_HOURS: intFrom(24, 1, 24 * 90),
  SENTRY_DSN: optionalString.refine((d) => d === undefined || /^https?:\/\/[^@/\s]+@[^/\s]+\/(?:[^\s]*\/)?\d+$/.test(d), {
    message: 'must be a Sentry DSN such as https://<public key>@o0.ingest.sentry.io/<project id>',
  }),
  OTEL_EXPORTER_OTLP_ENDPOINT: optionalString.refine((u) => u === undefined || isHttpUrl(u), { message: 'must be an http(s) URL such as http://otel-collector:4318' }),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: optionalString.refine((u) => u === undefined || isHttpUrl(u), {
    message: 'must be an http(s) URL such as http://otel-collector:4318/v1/traces',
  }),
  OTEL_EXPORTER_OTLP_HEADERS: optionalString.refine((h) => h === undefined || parseOtlpHeaders(h) !== undefined, {
    message: 'must be comma-separated key=value pairs (values URL-encoded), e.g. "x-api-key=abc,x-team=ops"',
  }),
  OTEL_SERVICE_NAME: optionalString,
  OTEL_TRACES_SAMPLER: z.enum(OTEL_SAMPLERS).default('parentbased_always_on'),
  OTEL_TRACES_SAMPLER_ARG: optionalString.refine((v) => v === undefined || (/^(0(\.\d+)?|1(\.0+)?)$/.test(v)), {
    message: 'must be a ratio from 0 to 1, e.g. "0.1"',
  }),
  WORKER_CONCURRENCY: intFrom(4, 1, 256),
  JOBS_IN_PROCESS: z.enum(['true', 'false']).optional(),
  WEB_CONCURRENCY: intFrom(1, 1, 256),
  WORKER_HTTP_PORT: intFrom(9465, 0, 65535),
  CALCULATION_THREAD_POOL_SIZE: intFrom(2, 1, 256),
  SERPER_API_KEY: optionalString,
  GEMINI_API_KEY: optionalString,
  SERPER_URL: optionalString.refine((u) => u === undefined || /^https?:\/\//.test(u), { message: 'must be an http(s) URL' }),
  GEMINI_URL: optionalString.refine((u) => u === undefined || /^https?:\/\//.test(u), { message: 'must be an http(s) URL' }),
  GEMINI_MODEL: optionalString.refine((m) => m === undefined || /^[a-z0-9.-]+$/.test(m), { message: 'must be a model name such as "gemini-2.5-flash"' }),
  PROVIDER_TIMEOUT_MS: intFrom(3000, 100, 3000),
  NARRATIVE_INCLUDE_PII: z.enum(['true', 'false']).default('false'),
  APPLICATIONS_PER_DAY: intFrom(5, 1, 10_000),
  REVIEW_DUAL_APPROVAL_ABOVE: optionalString.refine((v) => v === undefined || /^\d{1,15}(\.\d{1,2})?$/.test(v), {
    message: 'must be an amount such as "50000.00"',
  }),
  EOD_SCHEDULE: optionalString.refine((v) => v === undefined || /^([01]\d|2[0-3]):[0-5]\d$/.test(v), { message: 'must be a UTC time of day as HH:MM, e.g. "00:30"' }),
  EOD_CHUNK_SIZE: intFrom(500, 1, 100_000),
  EOD_CONCURRENCY: intFrom(2, 1, 64),
  BACKUP_LOCATION: optionalString,
  PG_BIN_DIR: optionalString,
  S3_ENDPOINT: optionalString.refine((u) => u === undefined || /^https?:\/\/[^/?#]+\/?[^?#]*$/.test(u), { message: 'must be an http(s) base URL such as https://minio.internal:9000' }),
  S3_REGION: optionalString.refine((r) => r === undefined || /^[a-z0-9-]+$/.test(r), { message: 'must be a region name such as eu-west-1' }),
  AWS_ACCESS_KEY_ID: optionalString,
  AWS_SECRET_ACCESS_KEY: optionalString,
  NATS_URL: optionalString.refine((u) => u === undefined || u.split(',').every((s) => isNatsUrl(s.trim())), {
    message: 'must be a nats:// or tls:// URL (several separated by commas), e.g. "nats://nats:4222"',
  }),
  NATS_STREAM: optionalString.refine((v) => v === undefined || /^[A-Za-z0-9_-]{1,64}$/.test(v), {
    message: 'must be a JetStream stream name: up to 64 letters, digits, "_" or "-"',
  }),
  NATS_SUBJECT_PREFIX: optionalString.refine((v) => v === undefined || /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(v), {
    message: 'must be subject tokens separated by dots, without wildcards, e.g. "loanbook" or "acme.loanbook"',
  }),
  OUTBOX_POLL_INTERVAL_MS: intFrom(1000, 10, 60_000),
});

function isNatsUrl(u: string): boolean {
  try {
    const url = new URL(u);
    return (url.protocol === 'nats:' || url.protocol === 'tls:') && url.hostname !== '';
  } catch {
    return false;
  }
}

export interface LoadConfigOptions {
  /** Where relative DATA_DIR resolves from; defaults to the process working directory. */
  readonly cwd?: string;
}

/** Parse, validate and freeze the configuration. Throws ConfigError with every problem listed. */
export function loadConfig(
  env: Readonly<Record<string, string | undefined>> = process.env,
  options: LoadConfigOptions = {},
): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  const production = e.ENV === 'production';
  const dataDir = resolve(options.cwd ?? process.cwd(), e.DATA_DIR ?? './.loanbook/data');

  const problems: string[] = [];
  let secretKey = e.SECRET_KEY;
  let encryptionKey: Buffer | undefined;
  if (secretKey !== undefined) {
    const weakness = secretKeyWeakness(secretKey);
    if (weakness) problems.push(`SECRET_KEY ${weakness}; ${HOW_TO_SECRET_KEY}`);
  }
  if (e.ENCRYPTION_KEY !== undefined) {
    const decoded = decodeEncryptionKey(e.ENCRYPTION_KEY);
    if (typeof decoded === 'string') problems.push(`ENCRYPTION_KEY ${decoded}; ${HOW_TO_ENCRYPTION_KEY}`);
    else encryptionKey = decoded;
  }
  const previousSecretKeys = splitList(e.SECRET_KEY_PREVIOUS);
  previousSecretKeys.forEach((k, i) => {
    const weakness = secretKeyWeakness(k);
    if (weakness) problems.push(`SECRET_KEY_PREVIOUS (entry ${i + 1}) ${weakness}`);
  });
  const previousEncryptionKeys: Buffer[] = [];
  splitList(e.ENCRYPTION_KEY_PREVIOUS).forEach((k, i) => {
    const decoded = decodeEncryptionKey(k);
    if (typeof decoded === 'string') problems.push(`ENCRYPTION_KEY_PREVIOUS (entry ${i + 1}) ${decoded}`);
    else previousEncryptionKeys.push(decoded);
  });
  if (e.HTTP_HEADERS_TIMEOUT_MS > e.HTTP_REQUEST_TIMEOUT_MS) {
    problems.push(
      `HTTP_HEADERS_TIMEOUT_MS (${e.HTTP_HEADERS_TIMEOUT_MS}) must not exceed HTTP_REQUEST_TIMEOUT_MS (${e.HTTP_REQUEST_TIMEOUT_MS}); ` +
        'the whole request cannot arrive before its headers',
    );
  }
  if (e.JOBS_IN_PROCESS === 'false' && e.DATABASE_URL === undefined) {
    problems.push(
      'JOBS_IN_PROCESS=false needs DATABASE_URL: the embedded database belongs to the serving process, so no `loanbook worker` could run the jobs',
    );
  }
  if (production) {
    if (secretKey === undefined) problems.push(`SECRET_KEY is required when ENV=production; ${HOW_TO_SECRET_KEY}`);
    if (e.ENCRYPTION_KEY === undefined) {
      problems.push(`ENCRYPTION_KEY is required when ENV=production; ${HOW_TO_ENCRYPTION_KEY}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);

  const secretSources = {
    secretKey: secretKey === undefined ? ('generated' as const) : ('env' as const),
    encryptionKey: encryptionKey === undefined ? ('generated' as const) : ('env' as const),
  };
  if (secretKey === undefined || encryptionKey === undefined) {
    const stored = loadOrCreateGeneratedSecrets(dataDir);
    secretKey ??= stored.secretKey;
    encryptionKey ??= Buffer.from(stored.encryptionKey, 'base64');
  }

  const allowedOrigins = (e.ALLOWED_ORIGINS ?? '')
    .split(',')
    .map((o) => o.trim())
    .filter((o) => o.length > 0)
    .map((origin) => {
      const normalised = normaliseOrigin(origin);
      if (normalised === undefined) {
        throw new ConfigError(
          `invalid configuration:\n  ALLOWED_ORIGINS: "${origin}" is not an origin (scheme://host[:port], no path, no wildcard)`,
        );
      }
      return normalised;
    });

  const config: Config = {
    env: e.ENV,
    port: e.PORT,
    host: e.HOST ?? (production ? '0.0.0.0' : '127.0.0.1'),
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    dataDir,
    secretKey,
    encryptionKey,
    secretSources,
    previousSecretKeys,
    previousEncryptionKeys,
    accessTokenExpireMinutes: e.ACCESS_TOKEN_EXPIRE_MINUTES,
    refreshTokenExpireDays: e.REFRESH_TOKEN_EXPIRE_DAYS,
    allowedOrigins,
    rateLimit: { requests: e.RATE_LIMIT_REQUESTS, windowMs: e.RATE_LIMIT_WINDOW },
    loginRateLimit: { failures: e.LOGIN_RATE_LIMIT_FAILURES, windowMs: e.LOGIN_RATE_LIMIT_WINDOW },
    logLevel: e.LOG_LEVEL ?? (e.ENV === 'test' ? 'silent' : 'info'),
    adminEmail: e.ADMIN_EMAIL,
    adminPassword: e.ADMIN_PASSWORD,
    trustProxy: parseTrustProxy(e.TRUST_PROXY),
    metricsPort: e.METRICS_PORT === undefined ? undefined : Number(e.METRICS_PORT),
    db: {
      poolMax: e.DB_POOL_MAX,
      statementTimeoutMs: e.DB_STATEMENT_TIMEOUT_MS,
      connectionTimeoutMs: e.DB_CONNECTION_TIMEOUT_MS,
      idleInTransactionTimeoutMs: 60_000,
      acquireTimeoutMs: e.DB_POOL_ACQUIRE_TIMEOUT_MS,
      probe: e.DB_PROBE_INTERVAL_MS === 0 ? undefined : { intervalMs: e.DB_PROBE_INTERVAL_MS, timeoutMs: e.DB_PROBE_TIMEOUT_MS },
    },
    http: {
      bodyLimitBytes: 1024 * 1024,
      jsonMaxDepth: 32,
      requestTimeoutMs: e.HTTP_REQUEST_TIMEOUT_MS,
      headersTimeoutMs: e.HTTP_HEADERS_TIMEOUT_MS,
      keepAliveTimeoutMs: 5_000,
      shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
      // Default: 16 requests per pooled connection, at least 64. Beyond what the pool can
      // serve within DB_POOL_ACQUIRE_TIMEOUT_MS, admitting more only makes every one slower.
      maxInFlight: e.HTTP_MAX_IN_FLIGHT === 0 ? Math.max(64, 16 * e.DB_POOL_MAX) : e.HTTP_MAX_IN_FLIGHT,
    },
    idempotencyRetentionHours: e.IDEMPOTENCY_RETENTION_HOURS,
    sentryDsn: e.SENTRY_DSN,
    otelExporterEndpoint: e.OTEL_EXPORTER_OTLP_ENDPOINT,
    otel: {
      tracesUrl: e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? (e.OTEL_EXPORTER_OTLP_ENDPOINT === undefined ? undefined : otlpSignalUrl(e.OTEL_EXPORTER_OTLP_ENDPOINT, 'v1/traces')),
      headers: Object.freeze(parseOtlpHeaders(e.OTEL_EXPORTER_OTLP_HEADERS ?? '') ?? {}),
      serviceName: e.OTEL_SERVICE_NAME ?? 'loanbook',
      sampler: e.OTEL_TRACES_SAMPLER,
      samplerRatio: e.OTEL_TRACES_SAMPLER_ARG === undefined ? 1 : Number(e.OTEL_TRACES_SAMPLER_ARG),
    },
    workerConcurrency: e.WORKER_CONCURRENCY,
    jobsInProcess: e.JOBS_IN_PROCESS === undefined ? e.DATABASE_URL === undefined : e.JOBS_IN_PROCESS === 'true',
    webConcurrency: e.WEB_CONCURRENCY,
    workerHttpPort: e.WORKER_HTTP_PORT === 0 ? undefined : e.WORKER_HTTP_PORT,
    calculationThreadPoolSize: e.CALCULATION_THREAD_POOL_SIZE,
    serperApiKey: e.SERPER_API_KEY,
    geminiApiKey: e.GEMINI_API_KEY,
    providers: {
      serperUrl: e.SERPER_URL ?? 'https://google.serper.dev',
      geminiUrl: e.GEMINI_URL ?? 'https://generativelanguage.googleapis.com',
      geminiModel: e.GEMINI_MODEL ?? 'gemini-2.5-flash',
      timeoutMs: e.PROVIDER_TIMEOUT_MS,
      narrativeIncludesPii: e.NARRATIVE_INCLUDE_PII === 'true',
    },
    origination: {
      applicationsPerDay: e.APPLICATIONS_PER_DAY,
      dualApprovalAbove: e.REVIEW_DUAL_APPROVAL_ABOVE ?? '50000.00',
    },
    eodSchedule: e.EOD_SCHEDULE,
    eodChunkSize: e.EOD_CHUNK_SIZE,
    eodConcurrency: e.EOD_CONCURRENCY,
    backup: {
      location: e.BACKUP_LOCATION,
      pgBinDir: e.PG_BIN_DIR,
      s3: {
        endpoint: e.S3_ENDPOINT,
        region: e.S3_REGION ?? 'us-east-1',
        accessKeyId: e.AWS_ACCESS_KEY_ID,
        secretAccessKey: e.AWS_SECRET_ACCESS_KEY,
      },
    },
    events: {
      natsUrl: e.NATS_URL,
      natsStream: e.NATS_STREAM ?? 'LOANBOOK',
      natsSubjectPrefix: e.NATS_SUBJECT_PREFIX ?? 'loanbook',
      pollIntervalMs: e.OUTBOX_POLL_INTERVAL_MS,
    },
  };
  return Object.freeze(config);
}

/**
 * An origin as a browser sends it in the Origin header (lower-case host, no default
 * port), so a configured "https://App.example.com:443" still matches; undefined when the
 * value is not a bare http(s) origin.
 */
function normaliseOrigin(value: string): string | undefined {
  if (value === '*' || !/^https?:\/\/[^/\s?#*]+$/i.test(value)) return undefined;
  try {
    const url = new URL(value);
    if (url.username !== '' || url.password !== '') return undefined;
    return url.origin;
  } catch {
    return undefined;
  }
}

const PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/** What Fastify's trustProxy (proxy-addr) accepts; anything else would fail at start-up with a less clear error. */
function trustProxyIsValid(v: string): boolean {
  if (v === 'true' || v === 'false') return true;
  return v.split(',').every((raw) => {
    const entry = raw.trim();
    if (PROXY_NAMES.has(entry)) return true;
    const [address = '', range, ...rest] = entry.split('/');
    const family = isIP(address);
    if (family === 0 || rest.length > 0) return false;
    if (range === undefined) return true;
    if (/^\d+$/.test(range)) return Number(range) <= (family === 4 ? 32 : 128);
    return family === 4 && isIP(range) === 4;
  });
}

function parseTrustProxy(v: string | undefined): boolean | string {
  if (v === undefined || v === 'false') return false;
  if (v === 'true') return true;
  return v;
}

/** A comma-separated list of keys (base64 never contains a comma); blanks dropped. */
function splitList(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((k) => k.trim())
    .filter((k) => k.length > 0);
}

/** Returns why a signing key is weak, or undefined when it is acceptable. */
export function secretKeyWeakness(key: string): string | undefined {
  if (key.length < 32) return `is too short (${key.length} characters; at least 32 are required)`;
  if (KNOWN_WEAK_SECRETS.has(key.toLowerCase())) return 'is a well-known placeholder';
  if (new Set(key).size < 10) return 'has too little variety (fewer than 10 distinct characters)';
  return undefined;
}

/** Decodes a base64 AES-256 key, or returns why it is unusable. */
export function decodeEncryptionKey(value: string): Buffer | string {
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(value)) return 'is not base64';
  const key = Buffer.from(value, value.includes('-') || value.includes('_') ? 'base64url' : 'base64');
  if (key.length !== 32) return `must decode to exactly 32 bytes (got ${key.length})`;
  if (new Set(key).size < 8) return 'has too little variety to be a random key';
  return key;
}

interface GeneratedSecrets {
  readonly secretKey: string;
  readonly encryptionKey: string;
}

const SECRETS_FILE = 'secrets.json';

/**
 * Embedded mode: secrets are generated on first start and kept in the data directory
 * (DATA_DIR/secrets.json, mode 0600), so tokens and encrypted fields survive restarts.
 */
function loadOrCreateGeneratedSecrets(dataDir: string): GeneratedSecrets {
  const file = join(dataDir, SECRETS_FILE);
  const existing = readGeneratedSecrets(file);
  if (existing) return existing;
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const secrets: GeneratedSecrets = {
    secretKey: randomBytes(48).toString('base64url'),
    encryptionKey: randomBytes(32).toString('base64'),
  };
  try {
    writeFileSync(file, JSON.stringify(secrets, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
  } catch (err) {
    // Another process started at the same moment and wrote first: use its secrets.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      const winner = readGeneratedSecrets(file);
      if (winner) return winner;
    }
    throw err;
  }
  chmodSync(file, 0o600);
  return secrets;
}

/** The stored secrets, undefined when the file does not exist; a ConfigError when it is unusable. */
function readGeneratedSecrets(file: string): GeneratedSecrets | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(`${file} cannot be read (${(err as Error).message}); fix its permissions or set SECRET_KEY and ENCRYPTION_KEY`);
  }
  const damaged = () =>
    new ConfigError(`${file} is damaged; restore it from a backup or set SECRET_KEY and ENCRYPTION_KEY`);
  let raw: Partial<GeneratedSecrets>;
  try {
    raw = JSON.parse(text) as Partial<GeneratedSecrets>;
  } catch {
    throw damaged();
  }
  if (
    raw === null ||
    typeof raw.secretKey !== 'string' ||
    typeof raw.encryptionKey !== 'string' ||
    secretKeyWeakness(raw.secretKey) !== undefined ||
    typeof decodeEncryptionKey(raw.encryptionKey) === 'string'
  ) {
    throw damaged();
  }
  return { secretKey: raw.secretKey, encryptionKey: raw.encryptionKey };
}

/** A short, non-secret fingerprint for logs ("which key is this instance using?"). */
export function fingerprint(secret: string | Buffer): string {
  return createHash('sha256').update(secret).digest('hex').slice(0, 8);
}
