import { expect } from 'vitest';
import { EngineError } from '../../src/engine/index.js';

/** The EngineError `fn` throws; fails the test when it throws nothing or something else. */
export function engineError(fn: () => unknown): EngineError {
  try {
    fn();
  } catch (error) {
    if (error instanceof EngineError) return error;
    throw error;
  }
  throw new Error('expected an EngineError');
}

/** Asserts `fn` throws an EngineError with this code (and field, when given). */
export function expectEngineError(fn: () => unknown, code: string, field?: string): void {
  const error = engineError(fn);
  expect(error.code).toBe(code);
  if (field !== undefined) expect(error.field).toBe(field);
}
