/**
 * `loanbook forecast TAPE.csv`: the tape reader (header in any order and case, extra
 * columns ignored, RFC 4180 quoting, every malformed line named by its number and column),
 * the options, the projection in slices against the engine's projectLoans, and the command
 * run as a user runs it — a child process with no configuration and no database.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { PROJECTION_COLUMNS, projectLoans, type LoanArrays, type PoolProjection, type ProjectionAssumptions } from '../../src/engine/index.js';
import { summaryView } from '../../src/forecasting/model.js';
import {
  ForecastOptionError,
  forecastSettings,
  parseLoanTape,
  projectTape,
  readLoanTape,
  splitCsvLine,
  TapeError,
  type ForecastFlags,
} from '../../src/forecasting/tape.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const tempDirs: string[] = [];

afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lb-tape-'));
  tempDirs.push(dir);
  return dir;
}

/** The TapeError `parse` rejects with; fails the test when it resolves or rejects with something else. */
async function tapeError(parse: Promise<unknown>): Promise<TapeError> {
  try {
    await parse;
  } catch (e) {
    if (e instanceof TapeError) return e;
    throw e;
  }
  throw new Error('expected a TapeError');
}

function arrays(t: LoanArrays) {
  return {
    balance: [...t.balance],
    rate: [...t.rate],
    netRate: t.netRate ? [...t.netRate] : undefined,
    remainingTerm: [...t.remainingTerm],
    age: [...t.age],
  };
}

// Header shuffled and in mixed case, with extra columns (one of them quoted, holding a comma).
const TAPE_LINES = [
  'State,AGE,"Notes, free text",Remaining_Term,net_rate,LOAN_ID,annual_rate,balance',
  'CA,12,"refi, ""cash-out""",348,0.06,L-1,0.065,200000',
  '',
  'NY,0,,360,,"L,2",0.07,150000.50',
  'TX,30,n/a,150,0.05,L-3,0.055,80000',
  'WA,6,,354,,L-4,0.045,0',
];

describe('parseLoanTape', () => {
  it('reads the required columns in any order and case, ignores the others, and fills an empty net_rate with the gross rate', async () => {
    const tape = await parseLoanTape(TAPE_LINES, { file: 'tape.csv' });
    expect(tape.count).toBe(4);
    expect(arrays(tape)).toStrictEqual({
      balance: [200000, 150000.5, 80000, 0],
      rate: [0.065, 0.07, 0.055, 0.045],
      netRate: [0.06, 0.07, 0.05, 0.045],
      remainingTerm: [348, 360, 150, 354],
      age: [12, 0, 30, 6],
    });
  });

  it('with a servicing fee, an empty net_rate is the gross rate minus the fee; a given net_rate stands', async () => {
    const tape = await parseLoanTape(TAPE_LINES, { file: 'tape.csv', servicingFee: 0.005 });
    expect([...tape.netRate]).toStrictEqual([0.06, 0.07 - 0.005, 0.05, 0.045 - 0.005]);
  });

  it('grows its buffers past their first capacity without losing a loan', async () => {
    const lines = ['loan_id,balance,annual_rate,net_rate,remaining_term,age'];
    for (let k = 0; k < 5000; k++) lines.push(`L${k},${k},0.05,,${1 + (k % 360)},${k % 7}`);
    const tape = await parseLoanTape(lines, { file: 'big.csv' });
    expect(tape.count).toBe(5000);
    expect(tape.balance).toHaveLength(5000);
    expect(tape.balance[4999]).toBe(4999);
    expect(tape.remainingTerm[4999]).toBe(1 + (4999 % 360));
    expect(tape.age[4999]).toBe(4999 % 7);
  });

  it('splits RFC 4180 records: quoted fields, doubled quotes, empty fields', () => {
    expect(splitCsvLine('a,"b,c","say ""hi""",,""')).toStrictEqual(['a', 'b,c', 'say "hi"', '', '']);
    expect(splitCsvLine('"a"x,b')).toBe('field 1: a closing quote must be followed by a comma or the end of the line');
    expect(splitCsvLine('a,"b')).toBe('field 2: a quoted field is not closed on its line');
    expect(splitCsvLine('a,b"c')).toBe('field 2: a field with a quote in it must be enclosed in quotes');
  });

  const HEADER = 'loan_id,balance,annual_rate,net_rate,remaining_term,age';
  it.each([
    ['L2,100,abc,,360,0', 'annual_rate', 'annual_rate "abc" is not a number'],
    ['L2,1e999,0.05,,360,0', 'balance', 'balance "1e999" is not a number'],
    ['L2,0x10,0.05,,360,0', 'balance', 'balance "0x10" is not a number'],
    ['L2,,0.05,,360,0', 'balance', 'balance is empty'],
    ['L2,-1,0.05,,360,0', 'balance', 'balance "-1" must not be negative'],
    ['L2,100,6,,360,0', 'annual_rate', 'annual_rate "6" must be an annual rate from 0 to 1 (0.06 = 6 %)'],
    ['L2,100,0.05,0.06,360,0', 'net_rate', 'net_rate "0.06" must not exceed annual_rate "0.05"'],
    ['L2,100,0.05,-0.01,360,0', 'net_rate', 'net_rate "-0.01" must be an annual rate from 0 to 1 (0.06 = 6 %)'],
    ['L2,100,0.05,,0,0', 'remaining_term', 'remaining_term "0" must be a whole number of months from 1 to 1200'],
    ['L2,100,0.05,,12.5,0', 'remaining_term', 'remaining_term "12.5" must be a whole number of months from 1 to 1200'],
    ['L2,100,0.05,,360,-1', 'age', 'age "-1" must be a whole number of months from 0 to 1200'],
    [',100,0.05,,360,0', 'loan_id', 'loan_id is empty'],
  ])('line %s is refused, naming the file, the line and the column', async (bad, column, problem) => {
    // Line 3 of the file: the blank line 2 still counts.
    const e = await tapeError(parseLoanTape([HEADER, '', bad, 'L4,100,0.05,,360,0'], { file: 'tape.csv' }));
    expect(e.message).toBe(`tape.csv line 3: ${problem}`);
    expect({ file: e.file, line: e.line, column: e.column }).toStrictEqual({ file: 'tape.csv', line: 3, column });
  });

  it('refuses a line with the wrong number of fields, or a broken quote, by its number', async () => {
    const short = await tapeError(parseLoanTape([HEADER, 'L1,100,0.05,,360,0', 'L2,100,0.05,360,0'], { file: 't.csv' }));
    expect(short.message).toBe('t.csv line 3: has 5 field(s); the header has 6');
    const quote = await tapeError(parseLoanTape([HEADER, '"L1,100,0.05,,360,0'], { file: 't.csv' }));
    expect(quote.message).toBe('t.csv line 2: field 1: a quoted field is not closed on its line');
  });

  it('refuses a gross rate below the servicing fee when net_rate is empty', async () => {
    const e = await tapeError(parseLoanTape([HEADER, 'L1,100,0.004,,360,0'], { file: 't.csv', servicingFee: 0.005 }));
    expect(e.message).toBe('t.csv line 2: annual_rate "0.004" is less than the servicing fee 0.005 (net_rate is empty)');
  });

  it('names the missing columns, a repeated one, an empty file and a tape without loans', async () => {
    const missing = await tapeError(parseLoanTape(['loan_id,Balance,annual_rate,remaining_term,extra', 'L1,1,0.05,360,x'], { file: 't.csv' }));
    expect(missing.message).toBe(
      't.csv line 1: the header lacks columns net_rate, age (required: loan_id, balance, annual_rate, net_rate, remaining_term, age, in any order)',
    );
    expect(missing.column).toBe('net_rate');
    const twice = await tapeError(parseLoanTape([`${HEADER},BALANCE`], { file: 't.csv' }));
    expect(twice.message).toBe('t.csv line 1: the header has column balance twice');
    expect((await tapeError(parseLoanTape(['', '  '], { file: 't.csv' }))).message).toBe(
      't.csv: no header row (the file is empty); expected the columns loan_id, balance, annual_rate, net_rate, remaining_term, age',
    );
    expect((await tapeError(parseLoanTape([HEADER, ''], { file: 't.csv' }))).message).toBe('t.csv: no loans after the header row');
  });
});

describe('readLoanTape', () => {
  it('streams a file with a byte-order mark and CRLF line ends', async () => {
    const file = join(tempDir(), 'tape.csv');
    writeFileSync(file, `\uFEFF${TAPE_LINES.join('\r\n')}\r\n`);
    const tape = await readLoanTape(file);
    expect(tape.file).toBe(file);
    expect(arrays(tape)).toStrictEqual(arrays(await parseLoanTape(TAPE_LINES, { file })));
  });

  it('names a file that cannot be read', async () => {
    const dir = tempDir();
    expect((await tapeError(readLoanTape(join(dir, 'none.csv')))).message).toBe(`${join(dir, 'none.csv')}: cannot be read: no such file`);
    expect((await tapeError(readLoanTape(dir))).message).toBe(`${dir}: is not a file`);
  });
});

describe('forecastSettings', () => {
  it('maps the options onto the engine assumptions, with the defaults filled in', () => {
    const s = forecastSettings({ psa: '150', sda: '100', severity: '0.35', lag: '12', horizon: '120', price: '101', discountRate: '0.05', out: 'p.JSON' });
    expect(s.assumptions).toStrictEqual({
      prepayment: { model: 'psa', speed: 150 },
      default: { model: 'sda', speed: 100 },
      severity: 0.35,
      monthsToLiquidation: 12,
      servicerAdvances: true,
      defaultStopMonths: 12,
      servicingFee: null,
    });
    expect({ horizon: s.horizonMonths, pricing: s.pricing, out: s.out, fee: s.servicingFee }).toStrictEqual({
      horizon: 120,
      pricing: { price: 101, discountRate: 0.05 },
      out: { path: 'p.JSON', format: 'json' },
      fee: null,
    });
    const t = forecastSettings({ cpr: '0.06', mdr: '0.001', advances: false, servicingFee: '0.0025' });
    expect(t.assumptions).toMatchObject({ prepayment: { model: 'cpr', rate: 0.06 }, default: { model: 'mdr', rate: 0.001 }, servicerAdvances: false, severity: 0 });
    expect(t.servicingFee).toBe(0.0025);
  });

  it.each<[ForecastFlags, string]>([
    [{}, 'a prepayment assumption is required: give one of --psa, --cpr, --smm'],
    [{ psa: '100', smm: '0.01' }, 'give one of --psa, --cpr, --smm, not --psa and --smm'],
    [{ psa: '100', cdr: '0.02', sda: '100' }, 'give one of --sda, --cdr, --mdr, not --sda and --cdr'],
    [{ cpr: '6' }, '--cpr must be a fraction from 0 to 1 (0.06 = 6 %), not 6'],
    [{ psa: 'fast' }, '--psa "fast" is not a number'],
    [{ psa: '-5' }, '--psa must be a speed in percent from 0 to 10000 (150 = 150 %), not -5'],
    [{ psa: '100', lag: '1.5' }, '--lag must be a whole number of months from 0 to 360, not 1.5'],
    [{ psa: '100', horizon: '0' }, '--horizon must be a whole number of months from 1 to 1200, not 0'],
    [{ psa: '100', price: '0' }, '--price must be a price per 100 of balance, more than 0 and at most 1000, not 0'],
    [{ psa: '100', out: 'periods.xlsx' }, '--out must name a .csv or .json file, not "periods.xlsx"'],
  ])('refuses %j: %s', (flags, message) => {
    expect(() => forecastSettings(flags)).toThrow(new ForecastOptionError(message));
  });
});

const SAMPLE_LOANS: LoanArrays = {
  balance: Float64Array.of(200000, 150000.5, 80000, 0, 310000),
  rate: Float64Array.of(0.065, 0.07, 0.055, 0.045, 0.0625),
  netRate: Float64Array.of(0.06, 0.07, 0.05, 0.045, 0.06),
  remainingTerm: Float64Array.of(348, 360, 150, 354, 240),
  age: Float64Array.of(12, 0, 30, 6, 60),
};

describe('projectTape', () => {
  const settings = forecastSettings({ psa: '150', sda: '100', severity: '0.35', lag: '12', price: '101' });

  it('in one slice is exactly projectLoans', () => {
    const whole = projectLoans(SAMPLE_LOANS, settings.assumptions, { pricing: settings.pricing });
    const sliced = projectTape(SAMPLE_LOANS, settings);
    expect(sliced.summary).toStrictEqual(whole.summary);
    expect(sliced.columns).toStrictEqual(whole.columns);
  });

  it('in slices of two loans reports each slice and adds up to projectLoans (to rounding of the sums)', () => {
    const progress: [number, number][] = [];
    const whole = projectLoans(SAMPLE_LOANS, settings.assumptions, { pricing: settings.pricing });
    const sliced = projectTape(SAMPLE_LOANS, settings, { sliceSize: 2, onProgress: (done, total) => progress.push([done, total]) });
    expect(progress).toStrictEqual([
      [2, 5],
      [4, 5],
      [5, 5],
    ]);
    expect({ months: sliced.months, loans: sliced.loans, originalBalance: sliced.originalBalance }).toStrictEqual({
      months: whole.months,
      loans: 5,
      originalBalance: whole.originalBalance,
    });
    for (const [key] of PROJECTION_COLUMNS) {
      const a = sliced.columns[key];
      const b = whole.columns[key];
      for (let m = 0; m < whole.months; m++) expect(Math.abs((a[m] as number) - (b[m] as number))).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(b[m] as number)));
    }
    expect(sliced.summary.totalPrincipal).toBeCloseTo(whole.summary.totalPrincipal, 6);
    expect(sliced.summary.yield).toBeCloseTo(whole.summary.yield!, 12);
  });
});

// ---------------------------------------------------------------------------
// The command

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `loanbook …` as a child process with only PATH and HOME plus `env`: no configuration leaks in. */
function loanbook(args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const SLOW = { timeout: 120_000 };
const money = (v: number) => new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(v);

function summaryValue(stdout: string, label: string): string | undefined {
  return new RegExp(`^ {2}${label} +(.+)$`, 'm').exec(stdout)?.[1];
}

describe('loanbook forecast', SLOW, () => {
  const dir = tempDir();
  const tape = join(dir, 'tape.csv');
  // The SAMPLE_LOANS, with extra columns and a shuffled header; L-2 and L-4 leave net_rate empty (= gross).
  writeFileSync(
    tape,
    [
      'pool,age,remaining_term,annual_rate,loan_id,balance,net_rate,state',
      'A,12,348,0.065,L-1,200000,0.06,CA',
      'A,0,360,0.07,"L-2",150000.50,,NY',
      'B,30,150,0.055,L-3,80000,0.05,TX',
      'B,6,354,0.045,L-4,0,,WA',
      'B,60,240,0.0625,L-5,310000,0.06,"Washington, D.C."',
    ].join('\n'),
  );
  const args = ['--psa', '150', '--sda', '100', '--severity', '0.35', '--lag', '12', '--price', '101', '--discount-rate', '0.05'];
  const assumptions: ProjectionAssumptions = {
    prepayment: { model: 'psa', speed: 150 },
    default: { model: 'sda', speed: 100 },
    severity: 0.35,
    monthsToLiquidation: 12,
  };
  const expected: PoolProjection = projectLoans(SAMPLE_LOANS, assumptions, { pricing: { price: 101, discountRate: 0.05 } });
  // ENV=production without secrets and an empty DATA_DIR: loading the configuration would fail,
  // and opening the embedded database would write to DATA_DIR.
  const dataDir = tempDir();
  const env = { ENV: 'production', DATA_DIR: dataDir };

  it('prints the summary, labelled as floating-point analytics, writes the periods as CSV, and needs no configuration or database', async () => {
    const out = join(dir, 'periods.csv');
    const r = await loanbook(['forecast', tape, ...args, '--out', out], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const s = expected.summary;
    expect(r.stdout.split('\n')[0]).toBe(`forecast of ${tape}: analytics on 64-bit floating point (analytics_float64), not money of record`);
    expect({
      loans: summaryValue(r.stdout, 'loans'),
      months: summaryValue(r.stdout, 'months'),
      principal: summaryValue(r.stdout, 'total principal'),
      interest: summaryValue(r.stdout, 'total interest'),
      loss: summaryValue(r.stdout, 'total loss'),
      cdr: summaryValue(r.stdout, 'cumulative default rate'),
      wal: summaryValue(r.stdout, 'WAL'),
      yield: summaryValue(r.stdout, 'yield at price'),
      duration: summaryValue(r.stdout, 'modified duration'),
      npv: summaryValue(r.stdout, 'NPV'),
    }).toStrictEqual({
      loans: '5',
      months: String(expected.months),
      principal: money(s.totalPrincipal),
      interest: money(s.totalInterest),
      loss: money(s.totalLoss),
      cdr: `${(s.cumulativeDefaultRate * 100).toFixed(4)} %`,
      wal: `${s.walYears.toFixed(4)} years`,
      yield: `101 / ${(s.yield! * 100).toFixed(4)} % (bond-equivalent)`,
      duration: `${s.modifiedDuration!.toFixed(4)} years`,
      npv: `${money(s.npv!)} at 5.0000 %`,
    });
    expect(s.totalLoss).toBeGreaterThan(0); // the defaults and severity took effect
    expect(r.stdout.endsWith(`wrote ${expected.months} period(s) to ${out}\n`)).toBe(true);

    const [header, ...rows] = readFileSync(out, 'utf8').trimEnd().split('\n');
    expect(header).toBe(PROJECTION_COLUMNS.map(([, name]) => name).join(','));
    expect(rows).toHaveLength(expected.months);
    // Shortest round-trip numbers: the file holds the engine's values exactly.
    rows.forEach((row, m) => {
      expect(row.split(',').map(Number)).toStrictEqual(PROJECTION_COLUMNS.map(([key]) => expected.columns[key][m]));
    });
    expect(readdirSync(dataDir)).toStrictEqual([]);
  });

  it('--out .json holds the periods, the summary and the assumptions, equal to projectLoans on the same loans', async () => {
    const out = join(dir, 'forecast.json');
    const r = await loanbook(['forecast', tape, ...args, '--out', out], env);
    expect(r.code).toBe(0);
    const json = JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown> & { periods: Record<string, number>[] };
    expect(json).toMatchObject({ basis: 'analytics_float64', tape, loans: 5, months: expected.months, original_balance: expected.originalBalance });
    expect(json.summary).toStrictEqual(summaryView(expected.summary));
    expect(json.assumptions).toStrictEqual({
      prepayment: { model: 'psa', speed: 150 },
      default: { model: 'sda', speed: 100 },
      severity: 0.35,
      months_to_liquidation: 12,
      servicer_advances: true,
      default_stop_months: 12,
      servicing_fee: null,
    });
    expect(json.periods).toHaveLength(expected.months);
    expect(json.periods[0]).toStrictEqual(Object.fromEntries(PROJECTION_COLUMNS.map(([key, name]) => [name, expected.columns[key][0]])));
    expect(json.periods.map((p) => p.total_principal)).toStrictEqual([...expected.columns.totalPrincipal]);
    expect(readdirSync(dataDir)).toStrictEqual([]);
  });

  it.each([
    [['--cpr', '6'], 'loanbook: --cpr must be a fraction from 0 to 1 (0.06 = 6 %), not 6\n'],
    [['--sda', '100'], 'loanbook: a prepayment assumption is required: give one of --psa, --cpr, --smm\n'],
    [['--psa', '100', '--cpr', '0.06'], 'loanbook: give one of --psa, --cpr, --smm, not --psa and --cpr\n'],
    [['--psa', '100', '--out', 'periods.txt'], 'loanbook: --out must name a .csv or .json file, not "periods.txt"\n'],
    [['--psa', '100', '--bogus'], "loanbook: unknown option '--bogus' (see loanbook forecast --help)\n"],
  ])('bad options %j exit 2 with one line and no output', async (options, message) => {
    const r = await loanbook(['forecast', tape, ...options], env);
    expect(r).toStrictEqual({ code: 2, stdout: '', stderr: message });
  });

  it('a malformed tape exits 2 naming the file, the line and the column', async () => {
    const bad = join(dir, 'bad.csv');
    writeFileSync(bad, 'loan_id,balance,annual_rate,net_rate,remaining_term,age\nL1,100,0.05,,360,0\nL2,100,abc,,360,0\n');
    const r = await loanbook(['forecast', bad, '--psa', '100'], env);
    expect(r).toStrictEqual({ code: 2, stdout: '', stderr: `loanbook: ${bad} line 3: annual_rate "abc" is not a number\n` });
  });
});
