/**
 * Runs the servicing simulation (test/servicing/simulation.ts) over many seeds, on
 * demand. CI runs a few hundred seeds in the test suite; this runs thousands.
 *
 *   npx tsx scripts/simulate.ts --seeds 5000 [--from N] [--steps 60]
 *   npx tsx scripts/simulate.ts --seed 1234 --steps 60      one seed, log printed
 *   DB_TARGET=postgres npx tsx scripts/simulate.ts ...       on the machine's PostgreSQL
 *
 * --from defaults to FC_SEED (else the fixed default base seed). Stops at the first
 * failing seed, prints it with its command log and exits 1; --keep-going runs every
 * seed and prints each distinct failure once. A fresh database every --fresh-db seeds
 * (default 500) keeps the book-wide checks fast.
 */
import { parseArgs } from 'node:util';
import { createTestApp, type TestApp } from '../test/support/app.js';
import { baseSeed, createSimulation, mergeCoverage, SimulationFailure, type Coverage, type Simulation } from '../test/servicing/simulation.js';

const USAGE = 'usage: npx tsx scripts/simulate.ts --seeds <count> [--from <seed>] [--steps <n>] [--keep-going] [--fresh-db <seeds>] | --seed <n> [--steps <n>]';

function positive(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) {
    console.error(`--${name} must be a non-negative integer, got ${text}\n${USAGE}`);
    process.exit(2);
  }
  return n;
}

/** A failure's reason with its numbers and dates blanked: failures of one bug share it. */
function signature(reason: string): string {
  return (reason.split('\n')[0] ?? '')
    .replace(/^L\d+ \([^)]*\): /, '')
    .replace(/\d{4}-\d{2}-\d{2}/g, 'D')
    .replace(/-?\d+(\.\d+)?n?/g, 'N');
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string' },
      from: { type: 'string' },
      seed: { type: 'string' },
      steps: { type: 'string' },
      'keep-going': { type: 'boolean', default: false },
      'fresh-db': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const steps = positive('steps', values.steps, 60);
  const single = values.seed === undefined ? undefined : positive('seed', values.seed, 0);
  const count = single !== undefined ? 1 : positive('seeds', values.seeds, 1000);
  const from = single ?? positive('from', values.from, baseSeed(process.env));
  const freshEvery = Math.max(1, positive('fresh-db', values['fresh-db'], 500));
  const keepGoing = values['keep-going'] === true;
  console.log(`simulating seeds ${from}..${from + count - 1} (${count}), ${steps} steps each, on ${process.env.DB_TARGET === 'postgres' ? 'postgres' : 'pglite'}`);

  const coverage: Coverage = {};
  const failures = new Map<string, SimulationFailure[]>();
  let failed = 0;
  let t: TestApp | undefined;
  let sim: Simulation | undefined;
  const started = performance.now();
  let lastReport = started;
  try {
    for (let i = 0; i < count; i++) {
      if (t === undefined || sim === undefined || (i > 0 && i % freshEvery === 0)) {
        await t?.close();
        t = await createTestApp();
        sim = await createSimulation(t);
      }
      const seed = from + i;
      try {
        const report = await sim.runSeed(seed, { steps });
        mergeCoverage(coverage, report.coverage);
        if (single !== undefined) console.log(report.log.join('\n'));
      } catch (error) {
        if (!(error instanceof SimulationFailure)) throw error;
        failed++;
        const key = signature(error.reason);
        const seen = failures.get(key);
        if (seen) seen.push(error);
        else {
          failures.set(key, [error]);
          console.error(`\n${error.message}\n`);
        }
        if (!keepGoing) break;
        // A failed seed may leave loans active that a later seed's end of day would pick up.
        await t.close();
        t = undefined;
      }
      const now = performance.now();
      if (now - lastReport > 5000 || i + 1 === count) {
        lastReport = now;
        const s = (now - started) / 1000;
        console.log(`[${i + 1}/${count}] ${s.toFixed(1)} s, ${((i + 1) / s).toFixed(1)} seeds/s, ${failed} failing`);
      }
    }
  } finally {
    await t?.close();
  }

  const seconds = (performance.now() - started) / 1000;
  console.log(`\n${count} seeds × ${steps} steps in ${seconds.toFixed(1)} s; explored:`);
  for (const [k, v] of Object.entries(coverage).sort(([a], [b]) => a.localeCompare(b))) console.log(`  ${k.padEnd(48)} ${v}`);
  if (failures.size === 0) return 0;
  console.error(`\n${failed} failing seed(s), ${failures.size} distinct failure(s):`);
  for (const [key, list] of failures) {
    const shortest = [...list].sort((a, b) => a.step - b.step)[0] as SimulationFailure;
    console.error(`  ${list.length}× ${key}\n     first at step ${shortest.step}: npx tsx scripts/simulate.ts --seed ${shortest.seed} --steps ${shortest.steps}   (seeds ${list.slice(0, 8).map((f) => f.seed).join(', ')}${list.length > 8 ? ', …' : ''})`);
  }
  return 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
