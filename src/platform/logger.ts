/**
 * pino JSON logs. Secrets and personal data are redacted by path before a line is
 * written; request logs carry request_id and correlation_id.
 */
import { pino } from 'pino';
import type { DestinationStream, Logger as PinoLogger, LevelWithSilent } from 'pino';

export type Logger = PinoLogger;

/** Fields that must never reach a log line, at any depth we log them at. */
export const REDACT_PATHS: readonly string[] = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'res.headers["set-cookie"]',
  ...[
    // Credentials, wherever a header map or a body is logged.
    'authorization',
    'cookie',
    '"set-cookie"',
    '"x-api-key"',
    'api_key',
    'apiKey',
    'password',
    'new_password',
    'current_password',
    'token',
    'access_token',
    'refresh_token',
    'accessToken',
    'refreshToken',
    'secret',
    'secretKey',
    'secret_key',
    'encryptionKey',
    'encryption_key',
    // Personal data.
    'email',
    'applicant_name',
    'first_name',
    'last_name',
    'full_name',
    'national_id',
    'ssn',
    'tax_id',
    'date_of_birth',
    'phone',
    'address',
    'account_number',
    'iban',
  ].flatMap((f) => {
    const member = f.startsWith('"') ? `[${f}]` : `.${f}`;
    return [f.startsWith('"') ? `[${f}]` : f, `*${member}`, `*.*${member}`];
  }),
];

export interface LoggerOptions {
  readonly level: LevelWithSilent;
  readonly name?: string;
}

/** JSON lines to `destination` (stdout when omitted; tests pass a stream to read them back). */
export function createLogger(options: LoggerOptions, destination?: DestinationStream): Logger {
  const pinoOptions = {
    name: options.name ?? 'loanbook',
    level: options.level,
    base: { service: 'loanbook' },
    timestamp: pino.stdTimeFunctions.isoTime,
    messageKey: 'message',
    formatters: { level: (label: string) => ({ level: label }) },
    redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
  };
  return destination === undefined ? pino(pinoOptions) : pino(pinoOptions, destination);
}
