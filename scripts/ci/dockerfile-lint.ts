/**
 * Dockerfile review rules, checked in CI on deploy/docker/Dockerfile (hadolint-like, on
 * dockerfile-ast's parse so comments, line continuations and JSON forms are understood):
 *
 *   npx tsx scripts/ci/dockerfile-lint.ts [Dockerfile]          findings; exit 1 if any
 *   npx tsx scripts/ci/dockerfile-lint.ts --facts [Dockerfile]  the runtime stage as JSON
 *
 * `--facts` is what scripts/ci/image-smoke.sh runs the image's runtime steps from (user,
 * environment, entrypoint, healthcheck, what is copied from where), so the smoke test and
 * the Dockerfile cannot drift apart.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DockerfileParser, ModifiableInstruction, PropertyInstruction, type Dockerfile, type Instruction, type Property } from 'dockerfile-ast';

export type RuleId =
  | 'parse'
  | 'multi-stage'
  | 'from-pinned'
  | 'runtime-base'
  | 'user-non-root'
  | 'healthcheck'
  | 'no-add'
  | 'npm-ci'
  | 'prod-deps-only'
  | 'apt-get'
  | 'no-sudo'
  | 'expose-port'
  | 'exec-form'
  | 'workdir-absolute'
  | 'one-per-stage'
  | 'copy-from-stage'
  | 'no-secrets'
  | 'maintainer';

export interface Finding {
  readonly rule: RuleId;
  /** 1-based line of the offending instruction (0 when the finding is about the whole file). */
  readonly line: number;
  readonly message: string;
}

interface Stage {
  readonly index: number;
  /** `AS name`, lower-cased as Docker matches it; undefined for an unnamed stage. */
  readonly name: string | undefined;
  /** The FROM argument with build arguments resolved to their defaults. */
  readonly image: string;
  readonly line: number;
  readonly instructions: readonly Instruction[];
}

/** The runtime (final) stage as the smoke test needs it; environment and workdir include the parent stages'. */
export interface ImageFacts {
  /** The Node.js release of the base image (from the `node:<version>-…` tag). */
  readonly nodeVersion: string;
  readonly user: string;
  readonly workdir: string;
  readonly env: Readonly<Record<string, string>>;
  readonly entrypoint: readonly string[];
  readonly cmd: readonly string[];
  readonly expose: readonly number[];
  readonly healthcheck: {
    readonly cmd: readonly string[];
    readonly interval: string;
    readonly timeout: string;
    readonly startPeriod: string;
    readonly retries: number;
  };
  /** COPY instructions of the runtime stage, in order. */
  readonly copies: readonly CopyFacts[];
  /** Each build stage the runtime stage copies from, by name: its WORKDIR, ENV and RUN commands (parents' included). */
  readonly stages: Readonly<Record<string, BuildStageFacts>>;
}

export interface CopyFacts {
  /** A stage name, or "context" for the build context. */
  readonly from: string;
  readonly sources: readonly string[];
  readonly dest: string;
}

export interface BuildStageFacts {
  readonly workdir: string;
  readonly env: Readonly<Record<string, string>>;
  /** COPY and RUN in order, so the smoke script can replay the stage. */
  readonly steps: readonly ({ readonly copy: CopyFacts } | { readonly run: string })[];
}

const line1 = (i: Instruction) => i.getRange().start.line + 1;
const keyword = (i: Instruction) => i.getKeyword().toUpperCase();
const args = (i: Instruction) => (i.getArgumentsContent() ?? '').trim();

/** Substitutes ${VAR}, ${VAR:-default} and $VAR from `vars` (what BuildKit does for FROM). */
function expand(text: string, vars: ReadonlyMap<string, string>): string {
  return text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, braced: string | undefined, def: string | undefined, bare: string | undefined) => {
    const name = (braced ?? bare) as string;
    return vars.get(name) ?? def ?? '';
  });
}

function stagesOf(df: Dockerfile): Stage[] {
  const globals = new Map<string, string>();
  for (const arg of df.getInitialARGs()) {
    const p = arg.getProperty();
    if (p) globals.set(p.getName(), expand(p.getValue() ?? '', globals));
  }
  const froms = df.getFROMs();
  const all = df.getInstructions();
  return froms.map((from, index) => {
    const start = from.getRange().start.line;
    const end = froms[index + 1]?.getRange().start.line ?? Number.POSITIVE_INFINITY;
    return {
      index,
      name: from.getBuildStage()?.toLowerCase() ?? undefined,
      image: expand(from.getImage() ?? '', globals),
      line: start + 1,
      instructions: all.filter((i) => i.getRange().start.line > start && i.getRange().start.line < end),
    };
  });
}

/** The stage a FROM or COPY --from names (by name or index), if it is one of ours. */
function stageNamed(stages: readonly Stage[], ref: string, before: number): Stage | undefined {
  const r = ref.toLowerCase();
  return stages.find((s) => s.index < before && (s.name === r || String(s.index) === r));
}

/** The chain of stages from the external base image down to `stage`. */
function lineage(stages: readonly Stage[], stage: Stage): Stage[] {
  const chain = [stage];
  for (let parent = stageNamed(stages, stage.image, stage.index); parent; parent = stageNamed(stages, parent.image, parent.index)) chain.unshift(parent);
  return chain;
}

/** Exec-form JSON arguments, or undefined for the shell form. */
function execForm(text: string): string[] | undefined {
  if (!text.startsWith('[')) return undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    return Array.isArray(parsed) && parsed.every((a) => typeof a === 'string') ? parsed : undefined;
  } catch {
    return undefined;
  }
}

function flag(i: Instruction, name: string): string | undefined {
  if (!(i instanceof ModifiableInstruction)) return undefined;
  return i.getFlags().find((f) => f.getName() === name)?.getValue() ?? undefined;
}

/** NAME=value pairs of an ENV or ARG instruction. */
const properties = (i: Instruction): Property[] => (i instanceof PropertyInstruction ? i.getProperties() : []);

/** Arguments after the flags (`--from=…`, `--chown=…`, `--mount=…`). */
function positional(i: Instruction): string[] {
  const text = args(i);
  const json = execForm(text.replace(/^(--\S+\s+)+/, ''));
  if (json) return json;
  return i
    .getArguments()
    .map((a) => a.getValue())
    .filter((v) => !v.startsWith('--'));
}

/** ENV (and ARG defaults) set along the chain, in order; later wins. */
function environment(chain: readonly Stage[]): Map<string, string> {
  const env = new Map<string, string>();
  for (const stage of chain) {
    for (const i of stage.instructions) {
      if (keyword(i) !== 'ENV') continue;
      for (const p of properties(i)) {
        env.set(p.getName(), expand(p.getValue() ?? '', env));
      }
    }
  }
  return env;
}

function healthcheckCommand(i: Instruction): { form: 'exec' | 'shell' | 'none'; argv: string[] } {
  const m = /^(?:--\S+\s+)*(CMD|NONE)\b\s*([\s\S]*)$/i.exec(args(i));
  if (!m || m[1]?.toUpperCase() === 'NONE') return { form: 'none', argv: [] };
  const rest = (m[2] ?? '').trim();
  const json = execForm(rest);
  return json ? { form: 'exec', argv: json } : { form: 'shell', argv: ['/bin/sh', '-c', rest] };
}

const SECRET_NAME = /(SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE_KEY|ENCRYPTION_KEY|API_KEY|ACCESS_KEY)/i;

/** Every rule a reviewer of deploy/docker/Dockerfile would apply; an empty list means it passes. */
export function lintDockerfile(text: string): Finding[] {
  const df = DockerfileParser.parse(text);
  const stages = stagesOf(df);
  const findings: Finding[] = [];
  const report = (rule: RuleId, line: number, message: string) => findings.push({ rule, line, message });

  if (stages.length === 0) {
    report('parse', 0, 'no FROM instruction: not a Dockerfile');
    return findings;
  }
  const final = stages[stages.length - 1] as Stage;
  const finalChain = lineage(stages, final);
  if (stages.length < 2) {
    report('multi-stage', final.line, 'single stage: build in one stage and copy only the output and production dependencies into the runtime stage');
  }

  for (const stage of stages) {
    if (stageNamed(stages, stage.image, stage.index)) continue;
    const image = stage.image;
    const atDigest = image.includes('@sha256:');
    const lastSegment = image.split('@')[0]?.split('/').pop() ?? '';
    const tag = lastSegment.includes(':') ? lastSegment.slice(lastSegment.indexOf(':') + 1) : undefined;
    if (!atDigest && (tag === undefined || tag === '' || tag === 'latest')) {
      report('from-pinned', stage.line, `FROM ${image}: pin the base image to an explicit tag (not "latest"), ideally with @sha256 digest`);
    }
  }

  const base = finalChain[0] as Stage;
  if (!/^(docker\.io\/(library\/)?)?node:24(\.\d+){0,2}-[a-z]+-slim(@sha256:[0-9a-f]{64})?$/.test(base.image)) {
    report('runtime-base', base.line, `the runtime stage is based on ${base.image}; it must be Node 24 LTS slim (node:24.x.y-<debian>-slim)`);
  }

  const users = finalChain.flatMap((s) => s.instructions.filter((i) => keyword(i) === 'USER'));
  const lastUser = users[users.length - 1];
  if (!lastUser) {
    report('user-non-root', final.line, 'the runtime stage has no USER: the process would run as root; add USER <uid>:<gid> (non-zero, numeric)');
  } else {
    const user = args(lastUser).split(':')[0] ?? '';
    if (user === 'root' || user === '0') report('user-non-root', line1(lastUser), `USER ${args(lastUser)}: the process must not run as root`);
    else if (!/^\d+$/.test(user)) {
      report('user-non-root', line1(lastUser), `USER ${args(lastUser)}: use a numeric uid so Kubernetes runAsNonRoot can verify it`);
    }
  }

  const env = environment(finalChain);
  const healthchecks = finalChain.flatMap((s) => s.instructions.filter((i) => keyword(i) === 'HEALTHCHECK'));
  const healthcheck = healthchecks[healthchecks.length - 1];
  const probe = healthcheck ? healthcheckCommand(healthcheck) : undefined;
  if (!healthcheck || !probe || probe.form === 'none') {
    report('healthcheck', final.line, 'the runtime stage has no HEALTHCHECK: add one that probes /health/live');
  } else if (!probe.argv.join(' ').includes('/health/live')) {
    report('healthcheck', line1(healthcheck), 'the HEALTHCHECK must probe /health/live (liveness; readiness belongs to the orchestrator)');
  }

  for (const stage of stages) {
    const seen = new Map<string, number>();
    for (const i of stage.instructions) {
      const k = keyword(i);
      const text = args(i);
      if (['CMD', 'ENTRYPOINT', 'HEALTHCHECK'].includes(k)) {
        if (seen.has(k)) report('one-per-stage', line1(i), `${k} appears more than once in a stage; only the last one (line ${line1(i)}) takes effect`);
        seen.set(k, line1(i));
      }
      if (k === 'ADD') {
        const remote = positional(i).some((a) => /^(https?|git):\/\//.test(a) || a.startsWith('git@'));
        report(
          'no-add',
          line1(i),
          remote ? 'ADD of a remote URL: download in a RUN step with a checksum, or COPY a vendored file' : 'use COPY, not ADD, for local files (ADD also unpacks archives)',
        );
      }
      if (k === 'MAINTAINER') report('maintainer', line1(i), 'MAINTAINER is deprecated: use LABEL org.opencontainers.image.authors');
      if (k === 'WORKDIR' && !text.startsWith('/') && !text.startsWith('$')) {
        report('workdir-absolute', line1(i), `WORKDIR ${text}: use an absolute path`);
      }
      if ((k === 'ENTRYPOINT' || k === 'CMD') && !execForm(text)) {
        report('exec-form', line1(i), `${k} ${text}: use the exec (JSON) form so the process is PID 1 and receives SIGTERM`);
      }
      if (k === 'COPY' || k === 'ADD') {
        const from = flag(i, 'from');
        if (from !== undefined && !stageNamed(stages, from, stage.index) && !from.includes(':') && !from.includes('/')) {
          report('copy-from-stage', line1(i), `COPY --from=${from}: no earlier stage has that name`);
        }
      }
      if (k === 'ENV' || k === 'ARG') {
        for (const p of properties(i)) {
          const value = p.getValue() ?? '';
          if (SECRET_NAME.test(p.getName()) && value !== '' && value !== '""' && value !== "''") {
            report('no-secrets', line1(i), `${k} ${p.getName()} has a value: secrets baked into an image are readable by anyone who pulls it; pass them at run time`);
          }
        }
      }
      if (k === 'RUN') {
        if (/(^|[;&|(]\s*)sudo\s/.test(text)) report('no-sudo', line1(i), 'sudo in RUN: the build runs as root already; use USER for the rest');
        if (/\bnpm\s+(install|i|add)\b/.test(text)) {
          report('npm-ci', line1(i), 'npm install: use `npm ci` (installs exactly the lock file, fails if it is out of date)');
        }
        if (/\bapt-get\b[^;&|]*\b(upgrade|dist-upgrade)\b/.test(text)) {
          report('apt-get', line1(i), 'apt-get upgrade in an image: update the base image tag instead');
        }
        if (/\bapt-get\b[^;&|]*\binstall\b/.test(text)) {
          if (!/--no-install-recommends/.test(text)) report('apt-get', line1(i), 'apt-get install without --no-install-recommends');
          if (!/\s-(y|[a-z]*y[a-z]*)\b|--yes|--assume-yes/.test(text)) report('apt-get', line1(i), 'apt-get install without -y (the build has no terminal)');
          if (!/rm -rf \/var\/lib\/apt\/lists/.test(text)) {
            report('apt-get', line1(i), 'apt-get install without `rm -rf /var/lib/apt/lists/*` in the same RUN: the package lists stay in the layer');
          }
        }
      }
    }
  }

  // The runtime stage's node_modules must come from `npm ci --omit=dev`, not from the build stage.
  const runsOf = (stage: Stage) => lineage(stages, stage).flatMap((s) => s.instructions.filter((i) => keyword(i) === 'RUN').map(args));
  const installsProductionOnly = (runs: readonly string[]) => runs.some((r) => /\bnpm\s+ci\b[^;&|]*--omit[= ]dev/.test(r));
  const modulesCopy = final.instructions.find((i) => keyword(i) === 'COPY' && positional(i).some((a) => /(^|\/)node_modules\/?$/.test(a)));
  if (modulesCopy) {
    const from = flag(modulesCopy, 'from');
    const source = from === undefined ? undefined : stageNamed(stages, from, final.index);
    if (!source || !installsProductionOnly(runsOf(source))) {
      report('prod-deps-only', line1(modulesCopy), `node_modules copied from ${from ?? 'the build context'}, which does not run \`npm ci --omit=dev\`: dev dependencies would ship`);
    }
  } else if (!installsProductionOnly(runsOf(final))) {
    report('prod-deps-only', final.line, 'the runtime stage neither copies node_modules from an `npm ci --omit=dev` stage nor runs it');
  }

  const port = env.get('PORT');
  const exposed = finalChain.flatMap((s) => s.instructions.filter((i) => keyword(i) === 'EXPOSE').flatMap((i) => positional(i)));
  const exposedPorts = exposed.map((p) => p.split('/')[0]);
  if (port === undefined) report('expose-port', final.line, 'the runtime stage sets no ENV PORT: the port the server listens on should be explicit');
  else if (!exposedPorts.includes(port)) {
    report('expose-port', final.line, `ENV PORT=${port} but EXPOSE lists ${exposed.length > 0 ? exposed.join(', ') : 'nothing'}: expose the port the server listens on`);
  }

  return findings.sort((a, b) => a.line - b.line);
}

/** The runtime stage, as scripts/ci/image-smoke.sh reproduces it. Throws when the Dockerfile does not say enough. */
export function imageFacts(text: string): ImageFacts {
  const df = DockerfileParser.parse(text);
  const stages = stagesOf(df);
  const final = stages[stages.length - 1];
  if (!final) throw new Error('no FROM instruction');
  const chain = lineage(stages, final);
  const all = chain.flatMap((s) => s.instructions);
  const last = (k: string) => all.filter((i) => keyword(i) === k).pop();
  const nodeVersion = /^(?:docker\.io\/(?:library\/)?)?node:(\d+(?:\.\d+){0,2})-/.exec(chain[0]?.image ?? '')?.[1];
  if (nodeVersion === undefined) throw new Error(`the runtime stage is not based on a node:<version>-… image (${chain[0]?.image})`);
  const entrypoint = last('ENTRYPOINT');
  const cmd = last('CMD');
  const healthcheck = last('HEALTHCHECK');
  const user = last('USER');
  const workdir = last('WORKDIR');
  if (!entrypoint || !cmd || !healthcheck || !user || !workdir) throw new Error('the runtime stage needs ENTRYPOINT, CMD, HEALTHCHECK, USER and WORKDIR');
  const probe = healthcheckCommand(healthcheck);
  const copyFacts = (i: Instruction): CopyFacts => {
    const parts = positional(i);
    return { from: flag(i, 'from') ?? 'context', sources: parts.slice(0, -1), dest: parts[parts.length - 1] ?? '' };
  };
  const copies = final.instructions.filter((i) => keyword(i) === 'COPY').map(copyFacts);
  const buildStages: Record<string, ImageFacts['stages'][string]> = {};
  for (const copy of copies) {
    const source = copy.from === 'context' ? undefined : stageNamed(stages, copy.from, final.index);
    if (!source) continue;
    const sourceChain = lineage(stages, source);
    const instructions = sourceChain.flatMap((s) => s.instructions);
    const sourceWorkdir = instructions.filter((i) => keyword(i) === 'WORKDIR').pop();
    buildStages[copy.from] = {
      workdir: sourceWorkdir ? args(sourceWorkdir) : '/',
      env: Object.fromEntries(environment(sourceChain)),
      steps: instructions
        .filter((i) => keyword(i) === 'RUN' || keyword(i) === 'COPY')
        .map((i) => (keyword(i) === 'RUN' ? { run: args(i) } : { copy: copyFacts(i) })),
    };
  }
  return {
    nodeVersion,
    user: args(user),
    workdir: args(workdir),
    env: Object.fromEntries(environment(chain)),
    entrypoint: execForm(args(entrypoint)) ?? ['/bin/sh', '-c', args(entrypoint)],
    cmd: execForm(args(cmd)) ?? ['/bin/sh', '-c', args(cmd)],
    expose: all.filter((i) => keyword(i) === 'EXPOSE').flatMap(positional).map((p) => Number(p.split('/')[0])),
    healthcheck: {
      cmd: probe.argv,
      interval: flag(healthcheck, 'interval') ?? '30s',
      timeout: flag(healthcheck, 'timeout') ?? '30s',
      startPeriod: flag(healthcheck, 'start-period') ?? '0s',
      retries: Number(flag(healthcheck, 'retries') ?? 3),
    },
    copies,
    stages: buildStages,
  };
}

function main(argv: readonly string[]): number {
  const facts = argv.includes('--facts');
  const file = resolve(argv.find((a) => !a.startsWith('--')) ?? 'deploy/docker/Dockerfile');
  const text = readFileSync(file, 'utf8');
  if (facts) {
    process.stdout.write(JSON.stringify(imageFacts(text), null, 2) + '\n');
    return 0;
  }
  const findings = lintDockerfile(text);
  for (const f of findings) process.stdout.write(`${file}:${f.line}: [${f.rule}] ${f.message}\n`);
  process.stdout.write(findings.length === 0 ? `dockerfile-lint: ${file}: ok\n` : `dockerfile-lint: ${file}: ${findings.length} problem(s)\n`);
  return findings.length === 0 ? 0 : 1;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exitCode = main(process.argv.slice(2));
