/**
 * The loan tape behind `loanbook forecast TAPE.csv`: a streaming CSV reader that validates
 * every line into struct-of-arrays Float64Array buffers (O(loans) memory, no object per
 * loan), the command's options as projection assumptions, the projection in slices (so the
 * command can show progress), and the periods as CSV or JSON. Analytics on Float64, like
 * every projection (src/engine/projection.ts): nothing here is money of record.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import {
  MAX_TERM_MONTHS,
  normalizeAssumptions,
  preparePool,
  PROJECTION_BASIS,
  projectionFromTotals,
  projectionTotals,
  type LoanArrays,
  type NormalizedAssumptions,
  type PoolProjection,
  type PricingInput,
  type ProjectionAssumptions,
} from '../engine/index.js';
import { periodRows, summaryView } from './model.js';

/** The columns a tape must have (any order, any case); others are ignored. */
export const TAPE_COLUMNS = ['loan_id', 'balance', 'annual_rate', 'net_rate', 'remaining_term', 'age'] as const;
export type TapeColumn = (typeof TAPE_COLUMNS)[number];

/** A tape that cannot be read: the message names the file and, where there is one, the line and column. */
export class TapeError extends Error {
  override readonly name = 'TapeError';
  constructor(
    readonly detail: string,
    readonly file: string,
    readonly line?: number,
    readonly column?: TapeColumn,
  ) {
    super(line === undefined ? `${file}: ${detail}` : `${file} line ${line}: ${detail}`);
  }
}

/** Command-line options that cannot be used; the message names the option. */
export class ForecastOptionError extends Error {
  override readonly name = 'ForecastOptionError';
}

/** A loan tape as the engine's loan arrays (net rates always filled in), one element per loan. */
export interface LoanTape extends LoanArrays {
  readonly file: string;
  readonly count: number;
  readonly netRate: Float64Array;
}

export interface TapeOptions {
  /** What the file is called in messages (the path as given). */
  readonly file: string;
  /** Annual servicing fee: the net rate of a line whose net_rate is empty is its gross rate minus this. */
  readonly servicingFee?: number | null | undefined;
}

const NUMBER = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

/** A decimal number written plainly (no hex, no blanks, no thousands separators); undefined otherwise. */
export function parseDecimal(text: string): number | undefined {
  const t = text.trim();
  if (!NUMBER.test(t)) return undefined;
  const v = Number(t);
  return Number.isFinite(v) ? v : undefined;
}

function shown(raw: string): string {
  return JSON.stringify(raw.length > 40 ? `${raw.slice(0, 40)}…` : raw);
}

/**
 * The fields of one CSV record (RFC 4180): fields separated by commas, a field may be
 * enclosed in double quotes, and a quote inside a quoted field is written twice. A record
 * may not span lines here (loan tapes have no line breaks in their fields): an unclosed
 * quote is an error on its line. Returns the problem as a string when the line is malformed.
 */
export function splitCsvLine(line: string): string[] | string {
  if (!line.includes('"')) return line.split(',');
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    if (line[i] === '"') {
      let value = '';
      let j = i + 1;
      for (;;) {
        const q = line.indexOf('"', j);
        if (q === -1) return `field ${fields.length + 1}: a quoted field is not closed on its line`;
        value += line.slice(j, q);
        if (line[q + 1] === '"') {
          value += '"';
          j = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
      fields.push(value);
      if (i === line.length) return fields;
      if (line[i] !== ',') return `field ${fields.length}: a closing quote must be followed by a comma or the end of the line`;
      i += 1;
    } else {
      const comma = line.indexOf(',', i);
      const value = comma === -1 ? line.slice(i) : line.slice(i, comma);
      if (value.includes('"')) return `field ${fields.length + 1}: a field with a quote in it must be enclosed in quotes`;
      fields.push(value);
      if (comma === -1) return fields;
      i = comma + 1;
    }
  }
}

/** A Float64Array that doubles its capacity when full (amortized O(1) append, O(n) memory). */
class Column {
  private data: Float64Array;
  constructor(capacity: number) {
    this.data = new Float64Array(capacity);
  }
  set(k: number, v: number): void {
    if (k === this.data.length) {
      const next = new Float64Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[k] = v;
  }
  /** The first n values, without a copy. */
  values(n: number): Float64Array {
    return this.data.subarray(0, n);
  }
}

/** The fields of the current line by column, with the checks that name the line and column. One per tape, reused line after line. */
class TapeLine {
  private lineNo = 0;
  private fields: readonly string[] = [];
  constructor(
    private readonly file: string,
    private readonly index: Readonly<Record<TapeColumn, number>>,
  ) {}
  next(lineNo: number, fields: readonly string[]): void {
    this.lineNo = lineNo;
    this.fields = fields;
  }
  text(column: TapeColumn): string {
    return (this.fields[this.index[column]] as string).trim();
  }
  fail(column: TapeColumn, problem: string): never {
    throw new TapeError(`${column} ${shown(this.text(column))} ${problem}`, this.file, this.lineNo, column);
  }
  number(column: TapeColumn): number {
    const t = this.text(column);
    if (t === '') throw new TapeError(`${column} is empty`, this.file, this.lineNo, column);
    return parseDecimal(t) ?? this.fail(column, 'is not a number');
  }
  months(column: TapeColumn, min: number): number {
    const v = this.number(column);
    return Number.isInteger(v) && v >= min && v <= MAX_TERM_MONTHS ? v : this.fail(column, `must be a whole number of months from ${min} to ${MAX_TERM_MONTHS}`);
  }
}

/**
 * Parses a loan tape from its lines (the first non-blank line is the header). Blank lines are
 * skipped; every other line is one loan and must be valid, or a TapeError names it.
 */
export async function parseLoanTape(lines: AsyncIterable<string> | Iterable<string>, options: TapeOptions): Promise<LoanTape> {
  const { file } = options;
  const fee = options.servicingFee ?? null;
  let lineNo = 0;
  let line: TapeLine | undefined;
  let width = 0;
  let n = 0;
  const capacity = 1024;
  const balance = new Column(capacity);
  const rate = new Column(capacity);
  const netRate = new Column(capacity);
  const remainingTerm = new Column(capacity);
  const age = new Column(capacity);

  for await (const raw of lines) {
    lineNo += 1;
    const text = lineNo === 1 && raw.charCodeAt(0) === 0xfeff ? raw.slice(1) : raw;
    if (text.trim() === '') continue;
    const fields = splitCsvLine(text);
    if (typeof fields === 'string') throw new TapeError(fields, file, lineNo);

    if (line === undefined) {
      line = new TapeLine(file, headerIndex(fields, file, lineNo));
      width = fields.length;
      continue;
    }
    if (fields.length !== width) throw new TapeError(`has ${fields.length} field(s); the header has ${width}`, file, lineNo);
    line.next(lineNo, fields);
    if (line.text('loan_id') === '') throw new TapeError('loan_id is empty', file, lineNo, 'loan_id');
    const b = line.number('balance');
    if (b < 0) line.fail('balance', 'must not be negative');
    const r = line.number('annual_rate');
    if (r > 1 || r < 0) line.fail('annual_rate', 'must be an annual rate from 0 to 1 (0.06 = 6 %)');
    let nr: number;
    if (line.text('net_rate') === '') {
      nr = fee === null ? r : r - fee;
      if (nr < 0) line.fail('annual_rate', `is less than the servicing fee ${fee} (net_rate is empty)`);
    } else {
      nr = line.number('net_rate');
      if (nr > 1 || nr < 0) line.fail('net_rate', 'must be an annual rate from 0 to 1 (0.06 = 6 %)');
      if (nr > r) line.fail('net_rate', `must not exceed annual_rate ${shown(line.text('annual_rate'))}`);
    }
    const term = line.months('remaining_term', 1);
    const g = line.months('age', 0);

    balance.set(n, b);
    rate.set(n, r);
    netRate.set(n, nr);
    remainingTerm.set(n, term);
    age.set(n, g);
    n += 1;
  }
  if (line === undefined) throw new TapeError(`no header row (the file is empty); expected the columns ${TAPE_COLUMNS.join(', ')}`, file);
  if (n === 0) throw new TapeError('no loans after the header row', file);
  return {
    file,
    count: n,
    balance: balance.values(n),
    rate: rate.values(n),
    netRate: netRate.values(n),
    remainingTerm: remainingTerm.values(n),
    age: age.values(n),
  };
}

function headerIndex(fields: readonly string[], file: string, lineNo: number): Record<TapeColumn, number> {
  const names = fields.map((f) => f.trim().toLowerCase());
  const index: Partial<Record<TapeColumn, number>> = {};
  for (const column of TAPE_COLUMNS) {
    const first = names.indexOf(column);
    if (first !== -1 && names.indexOf(column, first + 1) !== -1) throw new TapeError(`the header has column ${column} twice`, file, lineNo, column);
    if (first !== -1) index[column] = first;
  }
  const missing = TAPE_COLUMNS.filter((c) => index[c] === undefined);
  if (missing.length > 0) {
    throw new TapeError(
      `the header lacks column${missing.length > 1 ? 's' : ''} ${missing.join(', ')} (required: ${TAPE_COLUMNS.join(', ')}, in any order)`,
      file,
      lineNo,
      missing[0],
    );
  }
  return index as Record<TapeColumn, number>;
}

function readProblem(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory';
  return code ?? String(e);
}

/**
 * Reads a tape file line by line (node:readline over a file stream). `onProgress` hears the
 * bytes read so far and the file's size.
 */
export async function readLoanTape(
  path: string,
  options: { readonly servicingFee?: number | null | undefined; readonly onProgress?: (bytesRead: number, size: number) => void } = {},
): Promise<LoanTape> {
  let size: number;
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new TapeError('is not a file', path);
    size = s.size;
  } catch (e) {
    if (e instanceof TapeError) throw e;
    throw new TapeError(`cannot be read: ${readProblem(e)}`, path);
  }
  const stream = createReadStream(path, { encoding: 'utf8', highWaterMark: 1 << 16 });
  const { onProgress } = options;
  if (onProgress) stream.on('data', () => onProgress(stream.bytesRead, size));
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  try {
    // A read error (EISDIR, EIO) rejects the iteration.
    return await parseLoanTape(lines, { file: path, servicingFee: options.servicingFee });
  } catch (e) {
    if (e instanceof TapeError) throw e;
    throw new TapeError(`cannot be read: ${readProblem(e)}`, path);
  } finally {
    lines.close();
    stream.destroy();
  }
}

// ---------------------------------------------------------------------------
// The command's options

/** The options of `loanbook forecast` as commander hands them over (strings, unparsed). */
export interface ForecastFlags {
  readonly psa?: string | undefined;
  readonly cpr?: string | undefined;
  readonly smm?: string | undefined;
  readonly sda?: string | undefined;
  readonly cdr?: string | undefined;
  readonly mdr?: string | undefined;
  readonly severity?: string | undefined;
  readonly lag?: string | undefined;
  readonly advances?: boolean | undefined;
  readonly horizon?: string | undefined;
  readonly servicingFee?: string | undefined;
  readonly price?: string | undefined;
  readonly discountRate?: string | undefined;
  readonly out?: string | undefined;
}

export interface ForecastSettings {
  /** The tape's net rates are filled in per line, so the engine gets no servicing fee. */
  readonly assumptions: NormalizedAssumptions;
  /** Applied while reading the tape, to lines with an empty net_rate. */
  readonly servicingFee: number | null;
  readonly horizonMonths: number | undefined;
  readonly pricing: PricingInput;
  readonly out: { readonly path: string; readonly format: 'csv' | 'json' } | null;
}

/** PSA and SDA speeds, in percent, as the HTTP API bounds them. */
const MAX_SPEED = 10_000;

function flagNumber(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const v = parseDecimal(text);
  if (v === undefined) throw new ForecastOptionError(`${flag} ${shown(text)} is not a number`);
  return v;
}

function fraction(flag: string, text: string | undefined): number | undefined {
  const v = flagNumber(flag, text);
  if (v !== undefined && (v < 0 || v > 1)) throw new ForecastOptionError(`${flag} must be a fraction from 0 to 1 (0.06 = 6 %), not ${text}`);
  return v;
}

function speed(flag: string, text: string | undefined): number | undefined {
  const v = flagNumber(flag, text);
  if (v !== undefined && (v < 0 || v > MAX_SPEED)) throw new ForecastOptionError(`${flag} must be a speed in percent from 0 to ${MAX_SPEED} (150 = 150 %), not ${text}`);
  return v;
}

function wholeMonths(flag: string, text: string | undefined, min: number, max: number): number | undefined {
  const v = flagNumber(flag, text);
  if (v !== undefined && !(Number.isInteger(v) && v >= min && v <= max)) throw new ForecastOptionError(`${flag} must be a whole number of months from ${min} to ${max}, not ${text}`);
  return v;
}

/** Exactly one of the given options; `required` says whether none is allowed. */
function oneOf<T>(choices: readonly (readonly [string, T | undefined])[], required: boolean): [string, T] | null {
  const given = choices.filter((c): c is readonly [string, T] => c[1] !== undefined);
  const names = choices.map((c) => c[0]).join(', ');
  if (given.length > 1) throw new ForecastOptionError(`give one of ${names}, not ${given.map((g) => g[0]).join(' and ')}`);
  if (given.length === 0) {
    if (required) throw new ForecastOptionError(`a prepayment assumption is required: give one of ${names}`);
    return null;
  }
  const [name, value] = given[0] as readonly [string, T];
  return [name, value];
}

/** Validates the options into projection settings; throws ForecastOptionError naming the option. */
export function forecastSettings(flags: ForecastFlags): ForecastSettings {
  const prepayment = oneOf(
    [
      ['--psa', speed('--psa', flags.psa)],
      ['--cpr', fraction('--cpr', flags.cpr)],
      ['--smm', fraction('--smm', flags.smm)],
    ],
    true,
  ) as [string, number];
  const defaults = oneOf(
    [
      ['--sda', speed('--sda', flags.sda)],
      ['--cdr', fraction('--cdr', flags.cdr)],
      ['--mdr', fraction('--mdr', flags.mdr)],
    ],
    false,
  );
  const assumptions: ProjectionAssumptions = {
    prepayment: prepayment[0] === '--psa' ? { model: 'psa', speed: prepayment[1] } : { model: prepayment[0] === '--cpr' ? 'cpr' : 'smm', rate: prepayment[1] },
    default: defaults === null ? null : defaults[0] === '--sda' ? { model: 'sda', speed: defaults[1] } : { model: defaults[0] === '--cdr' ? 'cdr' : 'mdr', rate: defaults[1] },
    severity: fraction('--severity', flags.severity) ?? 0,
    monthsToLiquidation: wholeMonths('--lag', flags.lag, 0, 360) ?? 0,
    servicerAdvances: flags.advances ?? true,
  };
  const price = flagNumber('--price', flags.price);
  if (price !== undefined && !(price > 0 && price <= 1000)) throw new ForecastOptionError(`--price must be a price per 100 of balance, more than 0 and at most 1000, not ${flags.price}`);
  const discountRate = fraction('--discount-rate', flags.discountRate);
  let out: ForecastSettings['out'] = null;
  if (flags.out !== undefined) {
    const ext = /\.(csv|json)$/i.exec(flags.out)?.[1]?.toLowerCase();
    if (ext !== 'csv' && ext !== 'json') throw new ForecastOptionError(`--out must name a .csv or .json file, not ${shown(flags.out)}`);
    out = { path: flags.out, format: ext };
  }
  return {
    assumptions: normalizeAssumptions(assumptions),
    servicingFee: fraction('--servicing-fee', flags.servicingFee) ?? null,
    horizonMonths: wholeMonths('--horizon', flags.horizon, 1, MAX_TERM_MONTHS),
    pricing: { price, discountRate },
    out,
  };
}

// ---------------------------------------------------------------------------
// Projection and output

/** Loans projected per slice: progress is reported after each. */
export const TAPE_SLICE = 50_000;

/**
 * Projects a tape slice by slice into one set of monthly sums (each slice adds into the same
 * totals, so memory stays O(months)), then builds the columns and the summary. The same
 * numbers as projectLoans over the whole tape, up to the order of floating-point addition.
 */
export function projectTape(
  tape: LoanArrays,
  settings: Pick<ForecastSettings, 'assumptions' | 'horizonMonths' | 'pricing'>,
  options: { readonly sliceSize?: number; readonly onProgress?: (loansDone: number, loans: number) => void } = {},
): PoolProjection {
  const pool = preparePool(tape);
  const a = settings.assumptions;
  const slice = Math.max(1, Math.floor(options.sliceSize ?? TAPE_SLICE));
  const n = pool.count;
  let totals = projectionTotals(pool, a, { from: 0, to: Math.min(n, slice), horizonMonths: settings.horizonMonths });
  options.onProgress?.(Math.min(n, slice), n);
  for (let from = slice; from < n; from += slice) {
    const to = Math.min(n, from + slice);
    totals = projectionTotals(pool, a, { from, to, into: totals });
    options.onProgress?.(to, n);
  }
  return projectionFromTotals(totals, a, settings.pricing);
}

/** The periods as CSV: a header of the API's column names, then one row per month (shortest round-trip numbers). */
export function periodsCsv(p: PoolProjection): string {
  const rows = periodRows(p);
  const names = Object.keys(rows[0] ?? {});
  const lines = [names.join(',')];
  for (const row of rows) lines.push(names.map((name) => String(row[name])).join(','));
  return `${lines.join('\n')}\n`;
}

function assumptionsView(a: NormalizedAssumptions, servicingFee: number | null) {
  return {
    prepayment: a.prepayment,
    default: a.default,
    severity: a.severity,
    months_to_liquidation: a.monthsToLiquidation,
    servicer_advances: a.servicerAdvances,
    default_stop_months: a.defaultStopMonths,
    servicing_fee: servicingFee,
  };
}

/** The forecast as JSON, shaped like the API's answer: assumptions, summary and periods. */
export function forecastJson(p: PoolProjection, tape: { readonly file: string }, settings: Pick<ForecastSettings, 'assumptions' | 'servicingFee'>): string {
  return `${JSON.stringify(
    {
      basis: p.basis,
      tape: tape.file,
      loans: p.loans,
      months: p.months,
      original_balance: p.originalBalance,
      assumptions: assumptionsView(settings.assumptions, settings.servicingFee),
      summary: summaryView(p.summary),
      periods: periodRows(p),
    },
    null,
    2,
  )}\n`;
}

const amount = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const count = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

/** A display of a floating-point amount: two decimals, thousands grouped. */
export function formatAmount(v: number): string {
  return amount.format(v);
}

function percent(v: number): string {
  return `${(v * 100).toFixed(4)} %`;
}

/** The summary as the command prints it. */
export function summaryText(p: PoolProjection, file: string, options: { readonly horizonMonths?: number | undefined } = {}): string {
  const s = p.summary;
  const rows: [string, string][] = [
    ['loans', count.format(p.loans)],
    ['original balance', formatAmount(p.originalBalance)],
    ['months', String(p.months)],
    ['total principal', formatAmount(s.totalPrincipal)],
    ['total interest', formatAmount(s.totalInterest)],
    ['total loss', formatAmount(s.totalLoss)],
    ['cumulative default rate', percent(s.cumulativeDefaultRate)],
    ['WAL', `${s.walYears.toFixed(4)} years`],
    [
      'yield at price',
      s.price === null ? '- (give --price)' : s.yield === null ? `${s.price} / no yield solves this price` : `${s.price} / ${percent(s.yield)} (bond-equivalent)`,
    ],
    ['modified duration', s.modifiedDuration === null ? '- (give --price)' : `${s.modifiedDuration.toFixed(4)} years`],
    ['NPV', s.npv === null || s.discountRate === null ? '- (give --discount-rate)' : `${formatAmount(s.npv)} at ${percent(s.discountRate)}`],
  ];
  if (options.horizonMonths !== undefined) rows.push(['balance left at horizon', formatAmount(s.endingBalance)]);
  const width = Math.max(...rows.map((r) => r[0].length));
  return (
    `forecast of ${file}: analytics on 64-bit floating point (${PROJECTION_BASIS}), not money of record\n` +
    rows.map(([label, value]) => `  ${label.padEnd(width)}  ${value}\n`).join('')
  );
}
