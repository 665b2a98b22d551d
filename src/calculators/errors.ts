/**
 * Engine errors as HTTP problems. The engine names the argument at fault in
 * snake_case, with indexes (`payments[2].date`); that becomes a JSON pointer
 * into the request body.
 */
import { AppError, defineProblems, pointerFromPath } from '../platform/errors.js';
import { type EngineError, isEngineError } from '../engine/index.js';

export const CalculatorProblem = defineProblems({
  unknown_convention: {
    status: 400,
    title: 'Unknown day count convention',
    description: 'The day count convention is not one Loanbook implements. The detail lists the supported names (ISDA 2006 §4.16).',
  },
  date_order: {
    status: 400,
    title: 'Dates out of order',
    description: 'A date comes before the date it must follow, such as an end date before the start date or a payment before the first advance.',
  },
  no_solution: {
    status: 422,
    title: 'No rate solves these cash flows',
    description: 'The rate equation has no root: the cash flows do not change sign, or the payments do not repay the amounts advanced.',
  },
});

const PROBLEM_OF: Record<EngineError['code'], string> = {
  invalid_amount: 'validation_failed',
  invalid_rate: 'validation_failed',
  invalid_date: 'validation_failed',
  invalid_argument: 'validation_failed',
  unknown_currency: 'validation_failed',
  unknown_frequency: 'validation_failed',
  unknown_convention: 'unknown_convention',
  date_order: 'date_order',
  no_root: 'no_solution',
};

/** `payments[2].date` → `#/payments/2/date`. */
export function fieldPointer(field: string): string {
  const path = field.split(/[.[\]]/).filter(Boolean);
  return pointerFromPath(path);
}

/** Maps an EngineError to an AppError with the field as a body pointer; anything else passes through. */
export function engineProblem(error: unknown, fieldPrefix: readonly string[] = []): unknown {
  if (!isEngineError(error)) return error;
  const code = PROBLEM_OF[error.code];
  const pointer = error.field === undefined ? undefined : fieldPointer([...fieldPrefix, error.field].join('.'));
  return new AppError(code, {
    detail: error.message,
    errors: pointer === undefined ? undefined : [{ pointer, location: 'body', detail: error.message }],
    extensions: { reason: error.code },
  });
}

/** Runs an engine computation, turning its EngineErrors into problems. */
export function withEngine<T>(compute: () => T): T {
  try {
    return compute();
  } catch (error) {
    throw engineProblem(error);
  }
}
