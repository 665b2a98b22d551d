/**
 * loanbook/engine — pure loan math. No I/O, no clock, no logger; every function
 * is synchronous and depends only on its arguments. See docs/engine.md.
 */
export * from './errors.js';
export * from './rounding.js';
export * from './ratio.js';
export * from './currency.js';
export * from './money.js';
export * from './dates.js';
export * from './day-count.js';
export * from './calendar.js';
export * from './schedule.js';
export * from './accrual.js';
export * from './allocation.js';
export * from './apr.js';
export * from './irr.js';
export * from './projection.js';
export * from './monte-carlo.js';
