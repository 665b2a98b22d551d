/**
 * pino JSON logs. Secrets and personal data are redacted by path before a line is
 * written; request logs carry request_id and correlation_id.
 */
import { pino } from 'pino';
import type { Logger as PinoLogger, LevelWithSilent } from 'pino';

export type Logger = PinoLogger;

/** Fields that must never reach a log line, at any depth we log them at. */
export const REDACT_PATHS: readonly string[] = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'res.headers["set-cookie"]',
  ...[
    'password',
    'new_password',
    'current_password',
    'token',
    'access_token',
    'refresh_token',
    'secret',
    'secretKey',
    'encryptionKey',
    'email',
    'applicant_name',
    'full_name',
    'national_id',
    'date_of_birth',
    'phone',
    'address',
  ].flatMap((f) => [f, `*.${f}`, `*.*.${f}`]),
];

export function createLogger(options: { level: LevelWithSilent; name?: string }): Logger {
  return pino({
    name: options.name ?? 'loanbook',
    level: options.level,
    base: { service: 'loanbook' },
    timestamp: pino.stdTimeFunctions.isoTime,
    messageKey: 'message',
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
  });
}
