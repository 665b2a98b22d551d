/**
 * The engine's one error type. Every invalid input is reported with a stable
 * code and, where one argument is at fault, the name of that argument, so a
 * caller (an HTTP route, a job) can map it to its own error format without
 * parsing messages.
 */
export type EngineErrorCode =
  | 'invalid_amount'
  | 'invalid_rate'
  | 'invalid_date'
  | 'invalid_argument'
  | 'unknown_currency'
  | 'unknown_convention'
  | 'unknown_frequency'
  | 'date_order'
  | 'no_root';

export class EngineError extends Error {
  override readonly name = 'EngineError';
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    /** The argument (or input field) at fault, in the caller's snake_case where it has one. */
    readonly field?: string,
  ) {
    super(message);
  }
}

export function isEngineError(error: unknown): error is EngineError {
  return error instanceof EngineError;
}
