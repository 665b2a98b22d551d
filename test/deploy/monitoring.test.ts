/**
 * deploy/monitoring against the code: every metric an alert rule or a dashboard panel
 * queries is one Loanbook exports (read from the registry of a built app with its job
 * queue, as `loanbook serve` and `loanbook worker` build it) or one of the few external
 * exporters' listed below; the guide's four alerts keep their names and metrics; every
 * alert has a runbook link to its playbook; the dashboards use the data-source variable;
 * the scrape configs point at the ports the processes listen on.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { buildApp, type BuiltApp } from '../../src/app.js';
import { registerJobHandlers } from '../../src/job-handlers.js';
import { createJobQueue } from '../../src/platform/jobs.js';
import { createMetrics } from '../../src/platform/metrics.js';
import { EXTERNAL_METRICS, metricNames } from '../../scripts/ci/promql.js';
import { testConfig } from '../support/app.js';
import { createTestDatabase, silentLogger, type TestDatabase } from '../support/db.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MON = join(ROOT, 'deploy', 'monitoring');

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const alertGroups = (YAML.parse(readFileSync(join(MON, 'alerts.yml'), 'utf8')) as { groups: { name: string; rules: Rule[] }[] }).groups;
const rules = alertGroups.flatMap((g) => g.rules);
const alerts = rules.filter((r): r is Rule & { alert: string } => r.alert !== undefined);

interface Panel {
  type: string;
  title: string;
  id: number;
  datasource?: { type: string; uid: string };
  targets?: { expr: string; refId: string; datasource?: { uid: string } }[];
  panels?: Panel[];
}
const dashboardDir = join(MON, 'grafana', 'dashboards');
const dashboards = readdirSync(dashboardDir)
  .filter((f) => f.endsWith('.json'))
  .map((f) => ({ file: f, json: JSON.parse(readFileSync(join(dashboardDir, f), 'utf8')) as { uid: string; schemaVersion: number; panels: Panel[]; templating: { list: { name: string; type: string; query: string }[] } } }));
const panelsOf = (ps: readonly Panel[]): Panel[] => ps.flatMap((p) => [p, ...panelsOf(p.panels ?? [])]);

/** Every PromQL expression, with where it comes from. */
const expressions: { where: string; expr: string }[] = [
  ...rules.map((r) => ({ where: `alerts.yml ${r.alert ?? r.record}`, expr: r.expr })),
  ...dashboards.flatMap((d) => panelsOf(d.json.panels).flatMap((p) => (p.targets ?? []).map((t) => ({ where: `${d.file} "${p.title}" ${t.refId}`, expr: t.expr })))),
];

describe('the PromQL metric-name extractor', () => {
  it('finds selectors and skips functions, keywords, label lists, label matchers, strings, ranges and numbers', () => {
    expect(metricNames('sum by (job, le) (rate(http_request_duration_seconds_bucket{status=~"5..", route="/v1/x"}[5m])) > 0.95')).toEqual(new Set(['http_request_duration_seconds_bucket']));
    expect(metricNames('a / on (instance) group_left(kind) b')).toEqual(new Set(['a', 'b']));
    expect(metricNames('sum by (job) (x) / count without(le) (y)')).toEqual(new Set(['x', 'y']));
    expect(metricNames('sum(rate(x_total[5m])) without (pod) or vector(0) unless y offset 5m')).toEqual(new Set(['x_total', 'y']));
    expect(metricNames('time() - max(ts_seconds) > 30 * 3600 and 1e3 < bool z')).toEqual(new Set(['ts_seconds', 'z']));
    expect(metricNames('{__name__="named_metric", job="sum"} + label_replace(m, "dst", "$1", "src", "(.*)")')).toEqual(new Set(['named_metric', 'm']));
    expect(metricNames('max_over_time(deriv(g[15m:1m])[1h:]) + on() group_right up')).toEqual(new Set(['g', 'up']));
    expect(metricNames('rate(x{job=~"$job"}[$__rate_interval]) * ${factor}')).toEqual(new Set(['x']));
  });
});

describe('alerts and dashboards query only metrics Loanbook exports (or the listed exporters)', () => {
  let tdb: TestDatabase;
  let built: BuiltApp;
  const exported = new Set<string>();

  beforeAll(async () => {
    // As `loanbook serve` and `loanbook worker` build it: one registry, the job queue's metrics on it.
    tdb = await createTestDatabase();
    const metrics = createMetrics();
    const jobs = createJobQueue({ database: tdb.database, logger: silentLogger, concurrency: 1, registry: metrics.registry });
    const config = testConfig();
    built = await buildApp({ config, logger: silentLogger, database: tdb.database, metrics, jobs });
    registerJobHandlers(jobs, { app: built, config, logger: silentLogger });
    for (const m of metrics.registry.getMetricsAsArray()) {
      const { name, type } = m as unknown as { name: string; type: string };
      if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exported.add(name + suffix);
      else if (type === 'summary') for (const suffix of ['', '_sum', '_count']) exported.add(name + suffix);
      else exported.add(name);
    }
  });
  afterAll(async () => {
    await built?.app.close();
    await tdb?.destroy();
  });

  it('every metric name in every expression is exported or external', () => {
    const unknown: string[] = [];
    const used = new Set<string>();
    for (const { where, expr } of expressions) {
      const names = metricNames(expr);
      expect(names.size, `${where} selects no metric: ${expr}`).toBeGreaterThan(0);
      for (const name of names) {
        used.add(name);
        if (!exported.has(name) && !(name in EXTERNAL_METRICS)) unknown.push(`${name} (${where})`);
      }
    }
    expect(unknown).toEqual([]);
    // The list holds only what is used: a stale entry would let a typo through later.
    expect(Object.keys(EXTERNAL_METRICS).filter((m) => !used.has(m))).toEqual([]);
    expect(expressions.length).toBeGreaterThan(40);
  });
});

describe('alert rules', () => {
  it("keeps the guide's four alerts on its metrics", () => {
    const expr = (name: string) => alerts.find((a) => a.alert === name)?.expr ?? '';
    expect(metricNames(expr('HighErrorRate'))).toEqual(new Set(['http_requests_total']));
    expect(metricNames(expr('SlowResponseTime'))).toEqual(new Set(['http_request_duration_seconds_bucket']));
    expect(metricNames(expr('PodCrashLooping'))).toEqual(new Set(['kube_pod_container_status_restarts_total']));
    expect(metricNames(expr('HighMemoryUsage'))).toEqual(new Set(['container_memory_usage_bytes', 'container_spec_memory_limit_bytes']));
  });

  it('covers ledger balance, outbox and job backlogs, failed and late end of day, decision p99 and database readiness', () => {
    const byMetric = (metric: string) => alerts.filter((a) => metricNames(a.expr).has(metric)).map((a) => a.alert);
    expect(byMetric('loanbook_ledger_imbalance_minor')).toEqual(['LedgerOutOfBalance']);
    expect(byMetric('loanbook_outbox_oldest_pending_age_seconds')).toEqual(['OutboxBacklogGrowing']);
    expect(byMetric('loanbook_jobs_oldest_queued_age_seconds')).toEqual(['JobBacklogGrowing']);
    expect(byMetric('loanbook_jobs_total')).toEqual(['JobsFailing']);
    expect(byMetric('loanbook_eod_unfinished_runs')).toEqual(['EodRunFailed']);
    expect(byMetric('loanbook_eod_business_date_timestamp_seconds')).toEqual(['EodLate']);
    expect(byMetric('loan_processing_duration_seconds_bucket')).toEqual(['DecisionLatencyHigh']);
    expect(byMetric('loanbook_component_up')).toEqual(['DatabaseNotReady', 'RedisDegraded']);
  });

  it('every alert has a severity, a summary and a runbook link to its playbook heading', () => {
    const docs = readFileSync(join(ROOT, 'docs/operations.md'), 'utf8');
    expect(new Set(alerts.map((a) => a.alert)).size).toBe(alerts.length);
    for (const a of alerts) {
      expect(['critical', 'warning'], a.alert).toContain(a.labels?.severity);
      expect(a.annotations?.summary, a.alert).toBeTruthy();
      expect(a.annotations?.runbook_url, a.alert).toBe(`docs/operations.md#alert-${a.alert.toLowerCase()}`);
      // GitHub's anchor for the heading "### Alert: Name" is #alert-name.
      expect(docs.split('\n'), `playbook heading for ${a.alert}`).toContain(`### Alert: ${a.alert}`);
    }
  });
});

describe('dashboards', () => {
  it("hold the guide's four panels and use the data-source variable everywhere", () => {
    expect(dashboards.map((d) => d.file)).toContain('loanbook.json');
    for (const { file, json } of dashboards) {
      expect(json.schemaVersion, file).toBeGreaterThanOrEqual(36);
      expect(json.templating.list).toContainEqual(expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }));
      const panels = panelsOf(json.panels);
      expect(new Set(panels.map((p) => p.id)).size, `${file}: panel ids are unique`).toBe(panels.length);
      for (const p of panels.filter((x) => x.type !== 'row')) {
        expect(p.datasource?.uid, `${file} "${p.title}"`).toBe('${datasource}');
        for (const target of p.targets ?? []) expect(target.datasource?.uid, `${file} "${p.title}"`).toBe('${datasource}');
      }
    }
    const panels = panelsOf(dashboards.find((d) => d.file === 'loanbook.json')!.json.panels);
    expect(panels.map((p) => p.title)).toEqual(expect.arrayContaining(['Request Rate', 'Error Rate', 'Response Time (p95)', 'Approval Rate']));
    const rows = panels.filter((p) => p.type === 'row').map((p) => p.title);
    expect(rows).toEqual(expect.arrayContaining(['Loan book', 'Delinquency', 'End of day', 'Jobs and outbox']));
  });

  it('approval rate is computed from loan_applications_total{decision="approved"}', () => {
    const approval = panelsOf(dashboards.find((d) => d.file === 'loanbook.json')!.json.panels).find((p) => p.title === 'Approval Rate');
    expect(approval?.targets?.[0]?.expr).toContain('loan_applications_total{decision="approved"}');
  });
});

describe('scrape configs', () => {
  it('compose: every api replica on METRICS_PORT 9464 and every worker on 9465, by DNS; the rules loaded', () => {
    const cfg = YAML.parse(readFileSync(join(MON, 'prometheus-compose.yml'), 'utf8')) as { rule_files: string[]; scrape_configs: { job_name: string; dns_sd_configs?: { names: string[]; type: string; port: number }[] }[] };
    expect(cfg.rule_files).toEqual(['alerts.yml']);
    const dns = cfg.scrape_configs.flatMap((s) => (s.dns_sd_configs ?? []).map((d) => ({ job: s.job_name, ...d })));
    expect(dns).toEqual([
      expect.objectContaining({ job: 'loanbook-api', names: ['api'], type: 'A', port: 9464 }),
      expect.objectContaining({ job: 'loanbook-worker', names: ['worker'], type: 'A', port: 9465 }),
    ]);
  });

  it('kubernetes: valid service discovery blocks (Debian promtool cannot check them), the pods kept by label and annotation, namespace and pod labels set', () => {
    const cfg = YAML.parse(readFileSync(join(MON, 'prometheus.yml'), 'utf8')) as {
      rule_files: string[];
      scrape_configs: { job_name: string; kubernetes_sd_configs?: Record<string, unknown>[]; relabel_configs?: { source_labels?: string[]; target_label?: string; action?: string; regex?: string }[] }[];
    };
    expect(cfg.rule_files).toEqual(['alerts.yml']);
    // The fields of kubernetes_sd_config in Prometheus 2.x (docs: configuration/#kubernetes_sd_config).
    const fields = new Set(['api_server', 'role', 'kubeconfig_file', 'namespaces', 'selectors', 'attach_metadata', 'basic_auth', 'authorization', 'oauth2', 'proxy_url', 'follow_redirects', 'enable_http2', 'tls_config']);
    const roles = new Set(['node', 'service', 'pod', 'endpoints', 'endpointslice', 'ingress']);
    const blocks = cfg.scrape_configs.flatMap((s) => s.kubernetes_sd_configs ?? []);
    expect(blocks.length).toBeGreaterThan(0);
    for (const b of blocks) {
      expect(Object.keys(b).filter((k) => !fields.has(k))).toEqual([]);
      expect(roles).toContain(b.role);
      if (b.namespaces !== undefined) expect(Object.keys(b.namespaces as object).every((k) => k === 'names' || k === 'own_namespace')).toBe(true);
    }
    const loanbook = cfg.scrape_configs.find((s) => s.job_name === 'loanbook')!;
    const keep = loanbook.relabel_configs?.find((r) => r.action === 'keep');
    expect(keep?.source_labels).toEqual(['__meta_kubernetes_pod_label_app_kubernetes_io_name', '__meta_kubernetes_pod_annotation_prometheus_io_scrape']);
    expect(keep?.regex).toBe('loanbook;true');
    const targets = new Set(loanbook.relabel_configs?.map((r) => r.target_label));
    for (const label of ['__address__', 'namespace', 'pod', 'component']) expect(targets).toContain(label);
    // The deployments' annotations name the ports the config relabels to.
    for (const [file, port] of [['api-deployment.yaml', '9464'], ['worker-deployment.yaml', '9465']] as const) {
      expect(readFileSync(join(ROOT, 'deploy', 'k8s', file), 'utf8')).toContain(`prometheus.io/port: "${port}"`);
    }
  });
});
