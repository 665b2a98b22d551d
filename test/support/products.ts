/** A product definition for tests and scripts (no test-runner imports: scripts/ci uses it too). */
export const PRODUCT = {
  name: 'Personal loan',
  currency: 'USD',
  interest_method: 'declining_balance',
  amortization: 'equal_installments',
  day_count: '30/360',
  frequency: 'monthly',
  allocation_strategy: 'oldest_due_first',
  overpayment: 'credit_balance',
  min_amount: '100.00',
  max_amount: '1000000.00',
  min_term: 1,
  max_term: 480,
  min_rate: '0',
  max_rate: '0.36',
} as const;
