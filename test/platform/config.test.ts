/**
 * loadConfig: defaults, validation that names the variable, production refusing weak
 * or missing secrets, and embedded mode generating its secrets once into DATA_DIR.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, decodeEncryptionKey, fingerprint, loadConfig, secretKeyWeakness } from '../../src/platform/config.js';

const STRONG_SECRET = 'k8#Vq2!zLm9@Wx4$Rt7^Yp1&Nc6*Hb3(Gd5)Fs0';
const STRONG_KEY = Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 11) % 256)).toString('base64');

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'loanbook-config-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Loads with the secrets given, DATA_DIR in a fresh temp dir, plus `env`. */
function load(env: Record<string, string | undefined>, cwd = tempDir()) {
  return loadConfig({ SECRET_KEY: STRONG_SECRET, ENCRYPTION_KEY: STRONG_KEY, ...env }, { cwd });
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig: defaults', () => {
  it('uses the documented defaults when nothing is set', () => {
    const cwd = tempDir();
    const c = loadConfig({}, { cwd });
    expect(c.env).toBe('development');
    expect(c.port).toBe(8000);
    expect(c.host).toBe('127.0.0.1');
    expect(c.accessTokenExpireMinutes).toBe(15);
    expect(c.refreshTokenExpireDays).toBe(14);
    expect(c.rateLimit).toEqual({ requests: 100, windowMs: 60_000 });
    expect(c.loginRateLimit).toEqual({ failures: 5, windowMs: 15 * 60_000 });
    expect(c.allowedOrigins).toEqual([]);
    expect(c.logLevel).toBe('info');
    expect(c.trustProxy).toBe(false);
    expect(c.databaseUrl).toBeUndefined();
    expect(c.redisUrl).toBeUndefined();
    expect(c.metricsPort).toBeUndefined();
    expect(c.dataDir).toBe(join(cwd, '.loanbook', 'data'));
    expect(c.http).toEqual({
      bodyLimitBytes: 1024 * 1024,
      jsonMaxDepth: 32,
      requestTimeoutMs: 30_000,
      headersTimeoutMs: 10_000,
      keepAliveTimeoutMs: 5_000,
      shutdownGraceMs: 10_000,
      maxInFlight: 160,
    });
    expect(c.db).toEqual({
      poolMax: 10,
      statementTimeoutMs: 30_000,
      connectionTimeoutMs: 5_000,
      idleInTransactionTimeoutMs: 60_000,
      acquireTimeoutMs: 500,
      probe: { intervalMs: 1_000, timeoutMs: 2_000 },
    });
    expect(c.idempotencyRetentionHours).toBe(24);
    expect(c.workerConcurrency).toBe(4);
    expect(c.jobsInProcess).toBe(true);
    expect(c.calculationThreadPoolSize).toBe(2);
  });

  it('is frozen', () => {
    const c = load({});
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('binds 0.0.0.0 in production and is silent under test unless LOG_LEVEL says otherwise', () => {
    expect(load({ ENV: 'production' }).host).toBe('0.0.0.0');
    expect(load({ ENV: 'test' }).logLevel).toBe('silent');
    expect(load({ ENV: 'test', LOG_LEVEL: 'debug' }).logLevel).toBe('debug');
    expect(load({ HOST: '::' }).host).toBe('::');
  });

  it('reads the values it is given', () => {
    const c = load({
      PORT: ' 8080 ',
      ACCESS_TOKEN_EXPIRE_MINUTES: '5',
      RATE_LIMIT_REQUESTS: '250',
      DATABASE_URL: 'postgres://u@db:5432/loanbook',
      REDIS_URL: 'rediss://cache:6380',
      METRICS_PORT: '9100',
      HTTP_REQUEST_TIMEOUT_MS: '20000',
      HTTP_HEADERS_TIMEOUT_MS: '5000',
      ADMIN_EMAIL: 'ops@example.test',
    });
    expect(c.port).toBe(8080);
    expect(c.accessTokenExpireMinutes).toBe(5);
    expect(c.rateLimit.requests).toBe(250);
    expect(c.databaseUrl).toBe('postgres://u@db:5432/loanbook');
    expect(c.redisUrl).toBe('rediss://cache:6380');
    expect(c.metricsPort).toBe(9100);
    expect(c.http.requestTimeoutMs).toBe(20_000);
    expect(c.http.headersTimeoutMs).toBe(5_000);
    expect(c.adminEmail).toBe('ops@example.test');
    expect(c.secretKey).toBe(STRONG_SECRET);
    expect(c.encryptionKey.equals(Buffer.from(STRONG_KEY, 'base64'))).toBe(true);
    expect(c.secretSources).toEqual({ secretKey: 'env', encryptionKey: 'env' });
  });

  it('reads the database failure bounds; DB_PROBE_INTERVAL_MS=0 turns the probe off', () => {
    const c = load({ DB_POOL_ACQUIRE_TIMEOUT_MS: '250', DB_PROBE_INTERVAL_MS: '500', DB_PROBE_TIMEOUT_MS: '1500' });
    expect(c.db).toMatchObject({ acquireTimeoutMs: 250, probe: { intervalMs: 500, timeoutMs: 1500 } });
    expect(load({ DB_PROBE_INTERVAL_MS: '0' }).db.probe).toBeUndefined();
    expect(() => load({ DB_POOL_ACQUIRE_TIMEOUT_MS: '0' })).toThrow(/DB_POOL_ACQUIRE_TIMEOUT_MS: must be between 10 and 120000/);
  });

  it('treats empty values as unset', () => {
    const c = load({ PORT: '', DATABASE_URL: '  ', ALLOWED_ORIGINS: '' });
    expect(c.port).toBe(8000);
    expect(c.databaseUrl).toBeUndefined();
    expect(c.allowedOrigins).toEqual([]);
  });
});

describe('loadConfig: invalid values name the variable', () => {
  it.each([
    ['PORT', 'abc', 'PORT: must be a whole number, got "abc"'],
    ['PORT', '70000', 'PORT: must be between 0 and 65535, got 70000'],
    ['PORT', '80.5', 'PORT: must be a whole number'],
    ['ACCESS_TOKEN_EXPIRE_MINUTES', '0', 'ACCESS_TOKEN_EXPIRE_MINUTES: must be between 1 and 1440, got 0'],
    ['ACCESS_TOKEN_EXPIRE_MINUTES', '-5', 'ACCESS_TOKEN_EXPIRE_MINUTES: must be a whole number'],
    ['RATE_LIMIT_REQUESTS', 'lots', 'RATE_LIMIT_REQUESTS: must be a whole number'],
    ['ENV', 'prod', 'ENV:'],
    ['LOG_LEVEL', 'verbose', 'LOG_LEVEL:'],
    ['DATABASE_URL', 'mysql://db/x', 'DATABASE_URL: must be a postgres:// or postgresql:// URL'],
    ['REDIS_URL', 'http://cache', 'REDIS_URL: must be a redis:// or rediss:// URL'],
    ['ADMIN_EMAIL', 'not-an-email', 'ADMIN_EMAIL: must be an email address'],
    ['ADMIN_PASSWORD', 'short', 'ADMIN_PASSWORD: must be at least 12 characters'],
    ['METRICS_PORT', '99999', 'METRICS_PORT: must be a port number'],
    ['METRICS_PORT', 'nine', 'METRICS_PORT: must be a port number'],
    ['TRUST_PROXY', 'yes', 'TRUST_PROXY: must be true, false, or a comma-separated list of proxy addresses'],
    ['TRUST_PROXY', '2', 'TRUST_PROXY: hop counts are not supported; list the proxy addresses instead'],
    ['TRUST_PROXY', '10.0.0.0/40', 'TRUST_PROXY:'],
    ['TRUST_PROXY', '10.0.0.1,proxy.internal', 'TRUST_PROXY:'],
  ])('%s=%s', (name, value, message) => {
    const err = configError(() => load({ [name]: value }));
    expect(err.message).toContain(message);
    expect(err.message.startsWith('invalid configuration:')).toBe(true);
  });

  it('lists every problem at once', () => {
    const err = configError(() => load({ PORT: 'x', WORKER_CONCURRENCY: '0', RATE_LIMIT_WINDOW: 'soon' }));
    expect(err.message).toContain('PORT:');
    expect(err.message).toContain('WORKER_CONCURRENCY:');
    expect(err.message).toContain('RATE_LIMIT_WINDOW:');
  });

  it('refuses a headers timeout longer than the request timeout', () => {
    const err = configError(() => load({ HTTP_REQUEST_TIMEOUT_MS: '5000', HTTP_HEADERS_TIMEOUT_MS: '10000' }));
    expect(err.message).toContain('HTTP_HEADERS_TIMEOUT_MS (10000) must not exceed HTTP_REQUEST_TIMEOUT_MS (5000)');
  });
});

describe('loadConfig: RATE_LIMIT_WINDOW', () => {
  it.each([
    ['60', 60_000],
    ['90s', 90_000],
    ['15m', 900_000],
    ['1h', 3_600_000],
    ['24h', 86_400_000],
  ])('%s → %i ms', (value, ms) => {
    expect(load({ RATE_LIMIT_WINDOW: value }).rateLimit.windowMs).toBe(ms);
  });

  it.each(['1d', '0', '25h', '-1m', '1.5h', 'm'])('refuses %s', (value) => {
    expect(configError(() => load({ RATE_LIMIT_WINDOW: value })).message).toContain('RATE_LIMIT_WINDOW:');
  });

  it('LOGIN_RATE_LIMIT_WINDOW takes the same forms', () => {
    expect(load({ LOGIN_RATE_LIMIT_WINDOW: '30m' }).loginRateLimit.windowMs).toBe(1_800_000);
  });
});

describe('loadConfig: ALLOWED_ORIGINS', () => {
  it('splits, trims and keeps origins in the form browsers send', () => {
    const c = load({ ALLOWED_ORIGINS: ' https://app.example.test , http://localhost:5173,https://App.Example.test:443,http://[::1]:8080' });
    expect(c.allowedOrigins).toEqual(['https://app.example.test', 'http://localhost:5173', 'https://app.example.test', 'http://[::1]:8080']);
  });

  it.each([
    '*',
    'https://app.example.test/path',
    'https://app.example.test/',
    'app.example.test',
    'https://*.example.test',
    'ftp://files.example.test',
    'https://user:pw@app.example.test',
    'https://app.example.test?x=1',
  ])('refuses %s', (origin) => {
    const err = configError(() => load({ ALLOWED_ORIGINS: `https://ok.example.test,${origin}` }));
    expect(err.message).toContain(`ALLOWED_ORIGINS: "${origin}" is not an origin`);
  });
});

describe('loadConfig: TRUST_PROXY', () => {
  it.each([
    [undefined, false],
    ['false', false],
    ['true', true],
    ['127.0.0.1', '127.0.0.1'],
    ['10.0.0.0/8, 192.168.0.0/16', '10.0.0.0/8, 192.168.0.0/16'],
    ['loopback,uniquelocal', 'loopback,uniquelocal'],
    ['fd00::/8', 'fd00::/8'],
    ['10.0.0.0/255.0.0.0', '10.0.0.0/255.0.0.0'],
  ])('%s → %s', (value, expected) => {
    expect(load({ TRUST_PROXY: value }).trustProxy).toEqual(expected);
  });
});

describe('loadConfig: secrets in production', () => {
  it('refuses missing secrets and says how to make them', () => {
    const dir = tempDir();
    const err = configError(() => loadConfig({ ENV: 'production', DATA_DIR: join(dir, 'data') }, { cwd: dir }));
    expect(err.message).toContain('SECRET_KEY is required when ENV=production; generate one with: openssl rand -base64 48');
    expect(err.message).toContain('ENCRYPTION_KEY is required when ENV=production; generate one with: openssl rand -base64 32');
    // Nothing was generated on the way.
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses a missing ENCRYPTION_KEY even when SECRET_KEY is set', () => {
    const err = configError(() => load({ ENV: 'production', ENCRYPTION_KEY: undefined }));
    expect(err.message).toContain('ENCRYPTION_KEY is required when ENV=production');
    expect(err.message).not.toContain('SECRET_KEY');
  });

  it.each([
    ['changeme', 'SECRET_KEY is too short (8 characters; at least 32 are required); generate one with: openssl rand'],
    ['your-secret-key-change-in-production', 'SECRET_KEY is a well-known placeholder; generate one with: openssl rand'],
    ['a'.repeat(64), 'SECRET_KEY has too little variety'],
    ['abababababababababababababababababab', 'SECRET_KEY has too little variety'],
  ])('refuses the weak SECRET_KEY %s', (secret, message) => {
    expect(configError(() => load({ ENV: 'production', SECRET_KEY: secret })).message).toContain(message);
  });

  it.each([
    ['not base64!', 'ENCRYPTION_KEY is not base64; generate one with: openssl rand -base64 32'],
    [Buffer.alloc(16, 7).toString('base64'), 'ENCRYPTION_KEY must decode to exactly 32 bytes (got 16)'],
    [Buffer.alloc(33, 7).toString('base64'), 'ENCRYPTION_KEY must decode to exactly 32 bytes (got 33)'],
    [Buffer.alloc(32).toString('base64'), 'ENCRYPTION_KEY has too little variety'],
  ])('refuses the weak ENCRYPTION_KEY %s', (key, message) => {
    expect(configError(() => load({ ENV: 'production', ENCRYPTION_KEY: key })).message).toContain(message);
  });

  it('refuses a weak secret outside production too', () => {
    expect(configError(() => load({ ENV: 'development', SECRET_KEY: 'changeme' })).message).toContain('SECRET_KEY is too short');
  });

  it('accepts strong secrets, in base64 or base64url', () => {
    const c = load({ ENV: 'production' });
    expect(c.secretSources).toEqual({ secretKey: 'env', encryptionKey: 'env' });
    const url = Buffer.from(STRONG_KEY, 'base64').toString('base64url');
    expect(load({ ENV: 'production', ENCRYPTION_KEY: url }).encryptionKey.equals(Buffer.from(STRONG_KEY, 'base64'))).toBe(true);
  });

  it('secretKeyWeakness and decodeEncryptionKey agree with loadConfig', () => {
    expect(secretKeyWeakness(STRONG_SECRET)).toBeUndefined();
    expect(secretKeyWeakness('short')).toBe('is too short (5 characters; at least 32 are required)');
    expect(Buffer.isBuffer(decodeEncryptionKey(STRONG_KEY))).toBe(true);
    expect(decodeEncryptionKey('%%%')).toBe('is not base64');
  });
});

describe('loadConfig: generated secrets in embedded mode', () => {
  it('generates missing secrets once into DATA_DIR/secrets.json (0600) and reuses them', () => {
    const cwd = tempDir();
    const first = loadConfig({ DATA_DIR: 'state' }, { cwd });
    expect(first.dataDir).toBe(join(cwd, 'state'));
    expect(first.secretSources).toEqual({ secretKey: 'generated', encryptionKey: 'generated' });
    expect(secretKeyWeakness(first.secretKey)).toBeUndefined();
    expect(first.encryptionKey.length).toBe(32);

    const file = join(cwd, 'state', 'secrets.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const stored = JSON.parse(readFileSync(file, 'utf8')) as { secretKey: string; encryptionKey: string };
    expect(stored.secretKey).toBe(first.secretKey);
    expect(Buffer.from(stored.encryptionKey, 'base64').equals(first.encryptionKey)).toBe(true);

    const second = loadConfig({ DATA_DIR: 'state' }, { cwd });
    expect(second.secretKey).toBe(first.secretKey);
    expect(second.encryptionKey.equals(first.encryptionKey)).toBe(true);
    expect(fingerprint(second.secretKey)).toBe(fingerprint(first.secretKey));
    expect(readdirSync(join(cwd, 'state'))).toEqual(['secrets.json']);
  });

  it('generates different secrets for different data directories', () => {
    const a = loadConfig({}, { cwd: tempDir() });
    const b = loadConfig({}, { cwd: tempDir() });
    expect(a.secretKey).not.toBe(b.secretKey);
    expect(a.encryptionKey.equals(b.encryptionKey)).toBe(false);
  });

  it('uses a secret from the environment over the stored one, and generates only what is missing', () => {
    const cwd = tempDir();
    const c = loadConfig({ SECRET_KEY: STRONG_SECRET }, { cwd });
    expect(c.secretKey).toBe(STRONG_SECRET);
    expect(c.secretSources).toEqual({ secretKey: 'env', encryptionKey: 'generated' });
    const again = loadConfig({}, { cwd });
    expect(again.encryptionKey.equals(c.encryptionKey)).toBe(true);
    expect(again.secretKey).not.toBe(STRONG_SECRET);
  });

  it('does not touch DATA_DIR when both secrets are given', () => {
    const cwd = tempDir();
    load({ DATA_DIR: 'state' }, cwd);
    expect(readdirSync(cwd)).toEqual([]);
  });

  it.each([
    ['not JSON', '{"secretKey": '],
    ['missing a field', JSON.stringify({ secretKey: STRONG_SECRET })],
    ['holding a short encryption key', JSON.stringify({ secretKey: STRONG_SECRET, encryptionKey: Buffer.alloc(8, 1).toString('base64') })],
    ['holding a weak secret key', JSON.stringify({ secretKey: 'short', encryptionKey: STRONG_KEY })],
    ['null', 'null'],
  ])('refuses a secrets.json that is %s with a ConfigError', (_why, content) => {
    const cwd = tempDir();
    mkdirSync(join(cwd, 'state'));
    writeFileSync(join(cwd, 'state', 'secrets.json'), content, { mode: 0o600 });
    const err = configError(() => loadConfig({ DATA_DIR: 'state' }, { cwd }));
    expect(err.message).toBe(
      `${join(cwd, 'state', 'secrets.json')} is damaged; restore it from a backup or set SECRET_KEY and ENCRYPTION_KEY`,
    );
  });
});

describe('loadConfig: JOBS_IN_PROCESS', () => {
  it('defaults to running the workers in the serving process on the embedded database, and not with DATABASE_URL', () => {
    expect(load({}).jobsInProcess).toBe(true);
    expect(load({ DATABASE_URL: 'postgres://db/loanbook' }).jobsInProcess).toBe(false);
    expect(load({ DATABASE_URL: 'postgres://db/loanbook', JOBS_IN_PROCESS: 'true' }).jobsInProcess).toBe(true);
    expect(load({ JOBS_IN_PROCESS: 'true' }).jobsInProcess).toBe(true);
  });

  it('refuses false on the embedded database (no other process could run the jobs), and values other than true or false', () => {
    expect(configError(() => load({ JOBS_IN_PROCESS: 'false' })).message).toContain('JOBS_IN_PROCESS=false needs DATABASE_URL');
    expect(configError(() => load({ JOBS_IN_PROCESS: 'yes' })).message).toContain('JOBS_IN_PROCESS:');
  });
});
