/** Kysely table types for migrations/0009_forecasting.sql. */
import type { Generated, JSONColumnType } from 'kysely';

type Json = JSONColumnType<Record<string, unknown>, string, string>;

export interface ForecastScenariosTable {
  id: string;
  name: string;
  description: Generated<string>;
  tags: Generated<string[]>;
  assumptions: Json;
  version: Generated<number>;
  created_by: string | null;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

export interface ForecastsTable {
  id: string;
  kind: 'calculate' | 'batch' | 'forecast' | 'book';
  status: 'queued' | 'running' | 'succeeded' | 'failed';
  created_by: string | null;
  created_at: Generated<Date>;
  finished_at: Date | null;
  inputs_hash: string;
  inputs: Json;
  scenario_id: string | null;
  job_id: string | null;
  loans: number;
  months: number | null;
  summary: JSONColumnType<Record<string, unknown> | null, string | null, string | null>;
  result: JSONColumnType<Record<string, unknown> | null, string | null, string | null>;
  error: string | null;
}

export interface ForecastingTables {
  forecast_scenarios: ForecastScenariosTable;
  forecasts: ForecastsTable;
}
