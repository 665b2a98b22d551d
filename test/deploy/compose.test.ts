import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { configVariables, read } from './env-vars.js';

interface Healthcheck {
  test?: string[] | string;
  disable?: boolean;
}
interface Service {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  environment?: Record<string, string>;
  env_file?: { path: string; required: boolean }[];
  ports?: string[];
  volumes?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: Healthcheck;
  restart?: string;
  stop_grace_period?: string;
  deploy?: { replicas?: number };
  read_only?: boolean;
  cap_drop?: string[];
}
interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

const composeDir = new URL('../../deploy/compose/', import.meta.url);
const compose = parse(read('deploy/compose/compose.yaml'), { merge: true }) as Compose;
const services = compose.services;
const service = (name: string): Service => {
  const s = services[name];
  if (!s) throw new Error(`compose.yaml has no service ${name}`);
  return s;
};
const loanbookServices = ['api', 'worker', 'migrate'];
const seconds = (d: string): number => {
  const m = /^(\d+)(ms|s|m)$/.exec(d);
  if (!m) throw new Error(`not a duration: ${d}`);
  return Number(m[1]) * (m[2] === 'm' ? 60 : m[2] === 'ms' ? 0.001 : 1);
};
const healthText = (h: Healthcheck | undefined) => (Array.isArray(h?.test) ? h.test.join(' ') : (h?.test ?? ''));

describe('deploy/compose/compose.yaml', () => {
  it('runs the whole stack: proxy, api, worker, migrate, postgres, redis, nats, prometheus, grafana', () => {
    expect(Object.keys(services).sort()).toEqual(['api', 'grafana', 'migrate', 'nats', 'postgres', 'prometheus', 'proxy', 'redis', 'worker']);
    expect(service('api').command).toEqual(['serve']);
    expect(service('worker').command).toEqual(['worker']);
    expect(service('migrate').command).toEqual(['migrate', 'up']);
    expect(service('nats').command).toContain('--jetstream');
    expect(service('postgres').image).toMatch(/^postgres:(1[5-9]|[2-9]\d)\b/);
  });

  it('runs two API replicas that publish no host port of their own (the proxy does)', () => {
    expect(service('api').deploy?.replicas).toBe(2);
    expect(service('api').ports).toBeUndefined();
    expect(service('proxy').ports).toEqual(['${LOANBOOK_HTTP_PORT:-8000}:8080']);
  });

  it('has a healthcheck on every long-running service; the one-shot migrate is judged by its exit code', () => {
    for (const [name, s] of Object.entries(services)) {
      if (name === 'migrate') {
        expect(s.restart).toBe('no');
        expect(s.healthcheck).toEqual({ disable: true });
        continue;
      }
      expect(s.healthcheck?.test, name).toBeInstanceOf(Array);
      expect((s.healthcheck?.test as string[])[0], name).toMatch(/^CMD(-SHELL)?$/);
    }
    expect(healthText(service('api').healthcheck)).toContain('/health/live');
    expect(healthText(service('worker').healthcheck)).toContain(`:${service('worker').environment?.WORKER_HTTP_PORT}/health/live`);
  });

  it('migrates before api and worker start, and only once postgres is healthy', () => {
    for (const name of ['api', 'worker']) {
      expect(service(name).depends_on?.migrate, name).toEqual({ condition: 'service_completed_successfully' });
      expect(service(name).depends_on?.postgres, name).toEqual({ condition: 'service_healthy' });
    }
    expect(service('migrate').depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
  });

  it('depends only on services that exist, with a healthcheck wherever it waits for one', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const [target, { condition }] of Object.entries(s.depends_on ?? {})) {
        expect(services[target], `${name} depends on ${target}`).toBeDefined();
        expect(['service_started', 'service_healthy', 'service_completed_successfully']).toContain(condition);
        if (condition === 'service_healthy') expect(services[target]?.healthcheck?.test, `${name} waits for ${target} to be healthy`).toBeDefined();
      }
    }
  });

  it('gives api and worker longer to stop than their SIGTERM drain takes', () => {
    for (const name of ['api', 'worker']) {
      const s = service(name);
      const drainMs = Number(s.environment?.SHUTDOWN_GRACE_MS ?? 10_000);
      expect(seconds(s.stop_grace_period ?? '10s') * 1000, name).toBeGreaterThan(drainMs);
    }
  });

  it('runs the Loanbook services from the image, production, read-only, without capabilities, env from the env file', () => {
    for (const name of loanbookServices) {
      const s = service(name);
      expect(s.build, name).toEqual({ context: '../..', dockerfile: 'deploy/docker/Dockerfile' });
      expect(s.env_file, name).toEqual([{ path: '.env', required: false }]);
      expect(s.environment?.ENV, name).toBe('production');
      expect(s.read_only, name).toBe(true);
      expect(s.cap_drop, name).toEqual(['ALL']);
    }
  });

  it('sets only environment variables the configuration reads (a typo would silently do nothing)', () => {
    const known = configVariables();
    for (const name of loanbookServices) {
      const unknown = Object.keys(service(name).environment ?? {}).filter((v) => !known.has(v));
      expect(unknown, name).toEqual([]);
    }
  });

  it('pins every image to a tag (never latest)', () => {
    for (const [name, s] of Object.entries(services)) {
      const image = (s.image ?? '').replace(/\$\{[A-Z_]+:-([^}]+)\}/, '$1');
      expect(image, name).toMatch(/^[a-z0-9./-]+:[A-Za-z0-9._-]+$/);
      expect(image.endsWith(':latest'), name).toBe(false);
    }
  });

  it('mounts files that exist in the repository', () => {
    const sources = Object.values(services).flatMap((s) => (s.volumes ?? []).map((v) => v.split(':')[0] as string).filter((src) => src.startsWith('.')));
    expect(sources.length).toBeGreaterThanOrEqual(5);
    for (const src of sources) expect(existsSync(fileURLToPath(new URL(src, composeDir))), src).toBe(true);
    const { context, dockerfile } = service('migrate').build ?? { context: '', dockerfile: '' };
    expect(existsSync(fileURLToPath(new URL(`${context}/${dockerfile}`, composeDir)))).toBe(true);
    // env_file .env is the operator's copy of .env.example (never committed).
    expect(existsSync(fileURLToPath(new URL('.env.example', composeDir)))).toBe(true);
  });

  it('declares every named volume it uses', () => {
    const named = Object.values(services).flatMap((s) => (s.volumes ?? []).map((v) => v.split(':')[0] as string).filter((src) => !src.startsWith('.') && !src.startsWith('/')));
    for (const v of named) expect(compose.volumes, v).toHaveProperty(v);
  });

  it('agrees with the monitoring files it mounts: Prometheus scrapes the api and worker metrics ports, Grafana reads Prometheus', () => {
    const prometheus = parse(read('deploy/monitoring/prometheus-compose.yml')) as {
      scrape_configs: { job_name: string; dns_sd_configs?: { names: string[]; port: number }[] }[];
    };
    const targets = prometheus.scrape_configs.flatMap((c) => c.dns_sd_configs ?? []).flatMap((d) => d.names.map((n) => [n, d.port] as const));
    expect(targets).toEqual(
      expect.arrayContaining([
        ['api', Number(service('api').environment?.METRICS_PORT)],
        ['worker', Number(service('worker').environment?.WORKER_HTTP_PORT)],
      ]),
    );
    for (const [name] of targets) expect(services[name], `Prometheus scrapes ${name}`).toBeDefined();
    const volumes = service('prometheus').volumes ?? [];
    expect(volumes).toContain('../monitoring/prometheus-compose.yml:/etc/prometheus/prometheus.yml:ro');
    expect(volumes).toContain('../monitoring/alerts.yml:/etc/prometheus/alerts.yml:ro');

    const datasources = parse(read('deploy/monitoring/grafana/provisioning/datasources/prometheus.yml')) as { datasources: { url: string }[] };
    expect(datasources.datasources.map((d) => d.url)).toContain('http://prometheus:9090');
  });

  it('points the proxy at the api service on the port the image listens on', () => {
    const nginx = read('deploy/compose/nginx.conf');
    expect(nginx).toMatch(/server api:8000 resolve/);
    expect(service('api').environment?.PORT ?? '8000').toBe('8000');
    expect(healthText(service('proxy').healthcheck)).toContain('/proxy-health');
    expect(nginx).toContain('location = /proxy-health');
  });
});
