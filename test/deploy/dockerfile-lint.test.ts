import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { imageFacts, lintDockerfile, type RuleId } from '../../scripts/ci/dockerfile-lint.js';

const real = readFileSync(new URL('../../deploy/docker/Dockerfile', import.meta.url), 'utf8');

/** The real Dockerfile with one change; fails the test if the text to change is not there. */
function withChange(from: string | RegExp, to: string): string {
  const changed = real.replace(from, to);
  expect(changed, `the Dockerfile no longer contains ${String(from)}`).not.toBe(real);
  return changed;
}

const rulesFired = (text: string): RuleId[] => [...new Set(lintDockerfile(text).map((f) => f.rule))].sort();

describe('dockerfile-lint on deploy/docker/Dockerfile', () => {
  it('passes the real Dockerfile', () => {
    expect(lintDockerfile(real)).toEqual([]);
  });

  // Each variant breaks exactly one thing in the real file: exactly that rule must fire.
  const variants: [RuleId, string, () => string][] = [
    ['from-pinned', 'a build stage on an untagged image', () => withChange('FROM base AS build', 'FROM node AS build')],
    ['from-pinned', 'a build stage on :latest', () => withChange('FROM base AS build', 'FROM node:latest AS build')],
    ['runtime-base', 'a runtime stage on Node 22', () => withChange('ARG NODE_VERSION=24.22.3', 'ARG NODE_VERSION=22.12.0')],
    ['runtime-base', 'a full (non-slim) Node image', () => withChange('ARG NODE_IMAGE=node:${NODE_VERSION}-bookworm-slim', 'ARG NODE_IMAGE=node:${NODE_VERSION}-bookworm')],
    ['user-non-root', 'USER root', () => withChange('USER 10001:10001', 'USER root')],
    ['user-non-root', 'USER 0', () => withChange('USER 10001:10001', 'USER 0:0')],
    ['user-non-root', 'a user name Kubernetes cannot verify', () => withChange('USER 10001:10001', 'USER loanbook')],
    ['user-non-root', 'no USER', () => withChange('USER 10001:10001\n', '')],
    ['healthcheck', 'no HEALTHCHECK', () => withChange(/HEALTHCHECK [^\n]*\\\n[^\n]*\n/, '')],
    ['healthcheck', 'HEALTHCHECK NONE', () => withChange(/HEALTHCHECK [^\n]*\\\n[^\n]*\n/, 'HEALTHCHECK NONE\n')],
    ['healthcheck', 'a HEALTHCHECK on the readiness probe', () => withChange("/health/live'", "/health/ready'")],
    ['no-add', 'ADD of a remote URL', () => withChange('COPY package.json ./\n', 'COPY package.json ./\nADD https://example.com/tool.tar.gz /opt/\n')],
    ['no-add', 'ADD of a local directory', () => withChange('COPY migrations ./migrations', 'ADD migrations ./migrations')],
    ['npm-ci', 'npm install in the build stage', () => withChange('RUN --mount=type=cache,target=/root/.npm npm ci\n', 'RUN npm install\n')],
    ['prod-deps-only', 'node_modules copied from the build stage', () => withChange('COPY --from=prod-deps /app/node_modules', 'COPY --from=build /app/node_modules')],
    ['prod-deps-only', 'a production stage that installs everything', () => withChange('npm ci --omit=dev', 'npm ci')],
    [
      'apt-get',
      'apt-get without --no-install-recommends or list cleanup',
      () => withChange('RUN groupadd', 'RUN apt-get update && apt-get install -y curl\nRUN groupadd'),
    ],
    ['apt-get', 'apt-get upgrade', () => withChange('RUN groupadd', 'RUN apt-get update && apt-get upgrade -y && rm -rf /var/lib/apt/lists/*\nRUN groupadd')],
    ['no-sudo', 'sudo in RUN', () => withChange('RUN npm run build', 'RUN sudo npm run build')],
    ['expose-port', 'EXPOSE not matching PORT', () => withChange('EXPOSE 8000', 'EXPOSE 3000')],
    ['expose-port', 'no ENV PORT', () => withChange('    PORT=8000 \\\n', '')],
    ['exec-form', 'shell-form ENTRYPOINT', () => withChange('ENTRYPOINT ["node", "/app/dist/src/cli.js"]', 'ENTRYPOINT node /app/dist/src/cli.js')],
    ['exec-form', 'shell-form CMD', () => withChange('CMD ["serve"]', 'CMD serve')],
    ['workdir-absolute', 'a relative WORKDIR', () => withChange('WORKDIR /app', 'WORKDIR app')],
    ['one-per-stage', 'two CMDs in the runtime stage', () => withChange('CMD ["serve"]', 'CMD ["worker"]\nCMD ["serve"]')],
    ['copy-from-stage', 'COPY --from a stage that does not exist', () => withChange('COPY --from=build /app/dist', 'COPY --from=compile /app/dist')],
    ['no-secrets', 'a secret baked into ENV', () => withChange('    DATA_DIR=/data', '    DATA_DIR=/data \\\n    SECRET_KEY=correct-horse-battery-staple-0123456789')],
    ['no-secrets', 'a default for a secret build argument', () => withChange('ARG SOURCE=""', 'ARG SOURCE=""\nARG NPM_TOKEN=npm_abc123')],
    ['maintainer', 'MAINTAINER', () => withChange('FROM base AS runtime\n', 'FROM base AS runtime\nMAINTAINER ops@example.com\n')],
  ];
  for (const [rule, what, make] of variants) {
    it(`${rule}: fires on ${what}, and nothing else does`, () => {
      expect(rulesFired(make())).toEqual([rule]);
    });
  }

  it('multi-stage: fires on a single-stage Dockerfile', () => {
    const single = [
      'FROM node:24.22.3-bookworm-slim',
      'WORKDIR /app',
      'COPY . .',
      'RUN npm ci --omit=dev',
      'ENV PORT=8000',
      'USER 10001',
      'EXPOSE 8000',
      `HEALTHCHECK CMD ["node", "-e", "fetch('http://127.0.0.1:8000/health/live')"]`,
      'ENTRYPOINT ["node", "dist/src/cli.js"]',
      'CMD ["serve"]',
    ].join('\n');
    expect(rulesFired(single)).toEqual(['multi-stage']);
  });

  it('reports the line of the offending instruction', () => {
    const bad = withChange('USER 10001:10001', 'USER root');
    const line = bad.split('\n').findIndex((l) => l === 'USER root') + 1;
    expect(lintDockerfile(bad)).toEqual([{ rule: 'user-non-root', line, message: expect.stringContaining('root') as string }]);
  });

  it('--facts describes the runtime stage the smoke script runs', () => {
    const facts = imageFacts(real);
    expect(facts).toMatchObject({
      nodeVersion: expect.stringMatching(/^24\.\d+\.\d+$/) as string,
      user: '10001:10001',
      workdir: '/app',
      entrypoint: ['node', '/app/dist/src/cli.js'],
      cmd: ['serve'],
      expose: [8000],
      env: { ENV: 'production', PORT: '8000', DATA_DIR: '/data' },
    });
    expect(facts.healthcheck.cmd.join(' ')).toContain('/health/live');
    expect(facts.copies.map((c) => c.from)).toEqual(['prod-deps', 'build', 'context', 'context']);
    expect(facts.stages['prod-deps']).toMatchObject({
      workdir: '/app',
      steps: [{ copy: { from: 'context', sources: ['package.json', 'package-lock.json'], dest: './' } }, { run: expect.stringMatching(/^npm ci --omit=dev/) as string }],
    });
  });
});
