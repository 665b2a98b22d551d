/** From a loan's ledger vectors to journal lines (pure): what changed between posted and target. */
import type { AccountCode, JournalLineInput } from '../ledger/model.js';

export type GlVector = Readonly<Record<AccountCode, bigint>>;

/** Lines that move the ledger from `posted` to `target` (balanced when both vectors are). */
export function differenceLines(posted: Partial<GlVector>, target: GlVector, currency: string): JournalLineInput[] {
  const lines: JournalLineInput[] = [];
  for (const account of Object.keys(target) as AccountCode[]) {
    const diff = target[account] - (posted[account] ?? 0n);
    if (diff !== 0n) lines.push({ account, currency, side: diff > 0n ? 'debit' : 'credit', amount: diff > 0n ? diff : -diff });
  }
  return lines;
}

/** Adds `target − posted` into a running per-(currency, account) sum. */
export function accumulateDifference(into: Map<string, bigint>, posted: Partial<GlVector>, target: GlVector, currency: string): void {
  for (const account of Object.keys(target) as AccountCode[]) {
    const diff = target[account] - (posted[account] ?? 0n);
    if (diff === 0n) continue;
    const key = `${currency}:${account}`;
    into.set(key, (into.get(key) ?? 0n) + diff);
  }
}

/** The lines of a running sum (one entry may hold several currencies; each balances). */
export function linesOfSum(sum: ReadonlyMap<string, bigint>): JournalLineInput[] {
  const lines: JournalLineInput[] = [];
  for (const [key, diff] of [...sum].sort(([a], [b]) => a.localeCompare(b))) {
    if (diff === 0n) continue;
    const [currency, account] = key.split(':') as [string, AccountCode];
    lines.push({ account, currency, side: diff > 0n ? 'debit' : 'credit', amount: diff > 0n ? diff : -diff });
  }
  return lines;
}
