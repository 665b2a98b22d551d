/**
 * Where a database's sessions spend their time, by sampling: every few milliseconds one
 * extra connection reads pg_stat_activity (and who holds the audit chain's advisory
 * lock), and /proc gives each backend's CPU time. A phase's report is the mean number of
 * sessions in each state, what the audit lock's holder was doing while it held it, and
 * the CPU the backends (and an optional client process) used.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { sleep } from './servicing-fixtures.js';

/** src/platform/audit.ts AUDIT_LOCK_KEY: a one-bigint advisory key is (classid 0, objid key). */
const AUDIT_LOCK_OBJID = 0x4c42_4155;
const CLOCK_TICKS_PER_SECOND = 100;

export const CATEGORIES = ['running', 'audit lock wait', 'row lock wait', 'other lock wait', 'WAL / IO', 'waiting for client in transaction', 'idle between transactions', 'other'] as const;
export type Category = (typeof CATEGORIES)[number];

interface Row {
  pid: number;
  state: string | null;
  wait_event_type: string | null;
  wait_event: string | null;
  holder: boolean;
}

function categoryOf(r: Row): Category {
  if (r.state === 'idle') return 'idle between transactions';
  if (r.state === 'idle in transaction') return 'waiting for client in transaction';
  if (r.state !== 'active') return 'other';
  if (r.wait_event_type === null) return 'running';
  if (r.wait_event_type === 'Lock') return r.wait_event === 'advisory' ? 'audit lock wait' : r.wait_event === 'transactionid' || r.wait_event === 'tuple' ? 'row lock wait' : 'other lock wait';
  if (r.wait_event_type === 'IO' || (r.wait_event_type === 'LWLock' && /^WAL/.test(r.wait_event ?? ''))) return 'WAL / IO';
  return 'other';
}

/** utime + stime of a process, in seconds; undefined once it has exited. */
function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

export interface PhaseReport {
  readonly samples: number;
  /** Mean sessions in each category. */
  readonly sessions: Readonly<Record<Category, number>>;
  /** Share of samples in which some session held the audit lock. */
  readonly auditHeld: number;
  /** While held: share of samples in which the holder was in each category. */
  readonly holder: Readonly<Record<Category, number>>;
  /** CPU seconds used by the database's backends (first to last sighting) and by the client process. */
  readonly backendCpu: number;
  readonly clientCpu: number;
}

export interface SessionSampler {
  /** Starts a phase over the sessions named `application` (application_name); `clientPid` is a process whose CPU counts as the client's (pgbench). */
  begin(application: string, clientPid?: number): void;
  end(): PhaseReport;
  close(): Promise<void>;
}

export async function startSampler(url: string, intervalMs = 20): Promise<SessionSampler> {
  const client = new pg.Client({ connectionString: url, application_name: 'bench-sampler' });
  await client.connect();
  const zero = () => Object.fromEntries(CATEGORIES.map((c) => [c, 0])) as Record<Category, number>;
  interface Phase {
    application: string;
    samples: number;
    sessions: Record<Category, number>;
    held: number;
    holder: Record<Category, number>;
    cpu: Map<number, { first: number; last: number }>;
    clientPid?: number | undefined;
    clientFirst?: number;
    clientLast?: number;
  }
  // A holder, so the sampling loop sees the phase begin() sets (a plain `let` narrows to null here).
  const active: { phase: Phase | null } = { phase: null };
  let stopped = false;

  const loop = (async () => {
    while (!stopped) {
      const current = active.phase;
      if (current !== null) {
        const { rows } = await client.query<Row>(
          `select a.pid, a.state, a.wait_event_type, a.wait_event,
                  exists (select 1 from pg_locks l where l.pid = a.pid and l.locktype = 'advisory' and l.classid = 0 and l.objid = $1 and l.granted) as holder
           from pg_stat_activity a
           where a.datname = current_database() and a.backend_type = 'client backend' and a.application_name = $2`,
          [AUDIT_LOCK_OBJID, current.application],
        );
        if (active.phase === current) {
          current.samples++;
          let held = false;
          for (const r of rows) {
            const category = categoryOf(r);
            current.sessions[category]++;
            if (r.holder) {
              held = true;
              current.holder[category]++;
            }
            // A client's backends exit with it, so their CPU is read at every sample; the
            // pool's stay, and are read when first seen and at the end (cheaper for this process).
            const seen = current.cpu.get(r.pid);
            if (seen === undefined || current.clientPid !== undefined) {
              const cpu = cpuSeconds(r.pid);
              if (cpu !== undefined) {
                if (seen) seen.last = cpu;
                else current.cpu.set(r.pid, { first: cpu, last: cpu });
              }
            }
          }
          if (held) current.held++;
          if (current.clientPid !== undefined) {
            const cpu = cpuSeconds(current.clientPid);
            if (cpu !== undefined) {
              current.clientFirst ??= cpu;
              current.clientLast = cpu;
            }
          }
        }
      }
      await sleep(intervalMs);
    }
  })();

  return {
    begin(application, clientPid) {
      active.phase = { application, samples: 0, sessions: zero(), held: 0, holder: zero(), cpu: new Map(), clientPid };
    },
    end() {
      const p = active.phase;
      active.phase = null;
      if (p === null) throw new Error('no phase begun');
      const n = Math.max(1, p.samples);
      let backendCpu = 0;
      for (const [pid, seen] of p.cpu) backendCpu += (cpuSeconds(pid) ?? seen.last) - seen.first;
      return {
        samples: p.samples,
        sessions: Object.fromEntries(CATEGORIES.map((c) => [c, p.sessions[c] / n])) as Record<Category, number>,
        auditHeld: p.held / n,
        holder: Object.fromEntries(CATEGORIES.map((c) => [c, p.held === 0 ? 0 : p.holder[c] / p.held])) as Record<Category, number>,
        backendCpu,
        clientCpu: (p.clientLast ?? 0) - (p.clientFirst ?? 0),
      };
    },
    async close() {
      stopped = true;
      await loop;
      await client.end();
    },
  };
}
