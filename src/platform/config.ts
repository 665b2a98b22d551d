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
  };
  readonly http: {
    readonly bodyLimitBytes: number;
    readonly jsonMaxDepth: number;
    readonly requestTimeoutMs: number;
    readonly headersTimeoutMs: number;
    readonly keepAliveTimeoutMs: number;
    readonly shutdownGraceMs: number;
  };
  readonly idempotencyRetentionHours: number;
  readonly sentryDsn: string | undefined;
  readonly otelExporterEndpoint: string | undefined;
  /** Jobs of each kind run at once per process (`loanbook worker`, or `serve` when jobsInProcess). */
  readonly workerConcurrency: number;
  /** Whether `serve` runs the job workers itself. Default: yes on the embedded database, no with DATABASE_URL. */
  readonly jobsInProcess: boolean;
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
  HTTP_REQUEST_TIMEOUT_MS: intFrom(30_000, 1000, 600_000),
  HTTP_HEADERS_TIMEOUT_MS: intFrom(10_000, 1000, 120_000),
  SHUTDOWN_GRACE_MS: intFrom(10_000, 0, 120_000),
  IDEMPOTENCY_RETENTION_HOURS: intFrom(24, 1, 24 * 90),
  SENTRY_DSN: optionalString,
  OTEL_EXPORTER_OTLP_ENDPOINT: optionalString,
  WORKER_CONCURRENCY: intFrom(4, 1, 256),
  JOBS_IN_PROCESS: z.enum(['true', 'false']).optional(),
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
});

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
    },
    http: {
      bodyLimitBytes: 1024 * 1024,
      jsonMaxDepth: 32,
      requestTimeoutMs: e.HTTP_REQUEST_TIMEOUT_MS,
      headersTimeoutMs: e.HTTP_HEADERS_TIMEOUT_MS,
      keepAliveTimeoutMs: 5_000,
      shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
    },
    idempotencyRetentionHours: e.IDEMPOTENCY_RETENTION_HOURS,
    sentryDsn: e.SENTRY_DSN,
    otelExporterEndpoint: e.OTEL_EXPORTER_OTLP_ENDPOINT,
    workerConcurrency: e.WORKER_CONCURRENCY,
    jobsInProcess: e.JOBS_IN_PROCESS === undefined ? e.DATABASE_URL === undefined : e.JOBS_IN_PROCESS === 'true',
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
