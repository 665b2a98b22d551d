/** Kysely table types for migrations/0006_origination.sql. */
import type { ColumnType, Generated, JSONColumnType } from 'kysely';

type Json = JSONColumnType<Record<string, unknown>, string, string>;

export interface PolicyVersionsTable {
  id: string;
  name: string;
  version: number;
  description: Generated<string>;
  content: Json;
  content_hash: string;
  created_at: Generated<Date>;
  created_by: string | null;
}

export interface PolicyAssignmentsTable {
  role: 'champion' | 'challenger';
  policy_id: string;
  assigned_at: Generated<Date>;
  assigned_by: string | null;
}

export interface ApplicationsTable {
  id: string;
  borrower_id: string | null;
  submitted_by: string;
  channel: 'v1' | 'loan_apply';
  applicant_name: string;
  email: string | null;
  national_id: string | null;
  date_of_birth: string | null;
  applicant_index: string;
  input: Json;
  input_hash: string;
  product_id: string | null;
  currency: string;
  amount: ColumnType<bigint, bigint | string, bigint | string>;
  status: 'decided' | 'in_review' | 'accepted';
  outcome: string;
  decision_id: string;
  loan_id: string | null;
  created_at: Date;
  updated_at: Date;
}

export interface ApplicationDecisionsTable {
  id: string;
  application_id: string;
  kind: 'automated' | 'shadow' | 'review';
  policy_id: string | null;
  scorecard_version: string | null;
  pricing_version: string | null;
  input_hash: string;
  outcome: string;
  result: Json;
  result_hash: string;
  timings: Json;
  decided_at: Date;
  decided_by: string | null;
  note: string | null;
}

export interface ApplicationNarrativesTable {
  application_id: string;
  decision_id: string;
  status: 'written' | 'unavailable' | 'skipped';
  provider: string | null;
  text: string | null;
  detail: string | null;
  created_at: Date;
}

export interface OriginationTables {
  policy_versions: PolicyVersionsTable;
  policy_assignments: PolicyAssignmentsTable;
  applications: ApplicationsTable;
  application_decisions: ApplicationDecisionsTable;
  application_narratives: ApplicationNarrativesTable;
}
