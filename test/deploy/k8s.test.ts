/**
 * deploy/k8s against the Kubernetes schemas and the deployment policy (scripts/ci/k8s-checks.ts).
 * The manifests as committed pass; each broken variant below is a real mistake the checks
 * must catch, so a check that stopped working fails here.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Document, type Scalar, type YAMLSeq } from 'yaml';
import {
  appEnvNames,
  checkPolicies,
  IMAGE_UID,
  loadManifests,
  parseManifestText,
  validateManifestDirectory,
  validateSchemas,
  loanbookFacts,
  type Finding,
  type Manifest,
} from '../../scripts/ci/k8s-checks.js';

const repo = join(import.meta.dirname, '../..');
const read = (path: string): string => readFileSync(join(repo, path), 'utf8');
const root = join(repo, 'deploy/k8s');
const app = loanbookFacts(repo);
const { manifests } = loadManifests(root);
const policy = (set: readonly Manifest[]): Finding[] => checkPolicies(set, { app, fileExists: (p) => existsSync(join(root, p)) });

/** The committed manifests with one object (a kustomization: by file) edited as a YAML document; the originals stay intact. */
function withChange(kind: string, name: string, edit: (doc: Document) => void): Manifest[] {
  let found = false;
  const out = manifests.map((m) => {
    const id = kind === 'Kustomization' ? m.file : (m.object.metadata as { name?: string } | undefined)?.name;
    if (m.object.kind !== kind || id !== name) return m;
    found = true;
    const doc = new Document(m.object);
    edit(doc);
    return { ...m, object: doc.toJS() as Record<string, unknown> };
  });
  if (!found) throw new Error(`no ${kind}/${name} in deploy/k8s`);
  return out;
}

/** Paths into a workload: its pod spec and its (first) container. */
const POD = ['spec', 'template', 'spec'];
const C = [...POD, 'containers', 0];
const rules = (findings: readonly Finding[]): string[] => findings.map((f) => f.rule);

describe('deploy/k8s as committed', () => {
  it('passes the schema and every policy check', async () => {
    const report = await validateManifestDirectory(root, app);
    expect(report.findings).toEqual([]);
    expect(report.kinds).toMatchObject({
      Namespace: 1,
      ConfigMap: 2,
      Secret: 1,
      Deployment: 2,
      Job: 1,
      Service: 1,
      Ingress: 1,
      HorizontalPodAutoscaler: 1,
      PodDisruptionBudget: 2,
      NetworkPolicy: 5,
      Kustomization: 2,
    });
  });

  it("runs pods as the image's user (the last USER of deploy/docker/Dockerfile)", () => {
    const users = [...read('deploy/docker/Dockerfile').matchAll(/^USER\s+(\S+)/gm)].map((m) => m[1]);
    expect(users.at(-1)).toBe(`${IMAGE_UID}:${IMAGE_UID}`);
  });

  it('reads the variable names from src/platform/config.ts', () => {
    const names = appEnvNames(read('src/platform/config.ts'));
    expect(names).toContain('DATABASE_URL');
    expect(names).toContain('SHUTDOWN_GRACE_MS');
    expect(names).not.toContain('NOT_A_SETTING');
  });

  it('scales on the seed metrics: CPU 70 %, memory 80 %, 1000 requests per second per pod', () => {
    const hpa = manifests.find((m) => m.object.kind === 'HorizontalPodAutoscaler')?.object as { spec: { metrics: unknown } };
    expect(hpa.spec.metrics).toEqual([
      { type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 70 } } },
      { type: 'Resource', resource: { name: 'memory', target: { type: 'Utilization', averageUtilization: 80 } } },
      { type: 'Pods', pods: { metric: { name: 'http_requests_per_second' }, target: { type: 'AverageValue', averageValue: '1000' } } },
    ]);
  });
});

describe('the schema check rejects', () => {
  const parse = (text: string): Manifest[] => {
    const out: Manifest[] = [];
    parseManifestText(text, 'test.yaml', out, []);
    return out;
  };
  const deployment = (spec: string) => `
apiVersion: apps/v1
kind: Deployment
metadata: { name: x }
spec:
  selector: { matchLabels: { a: b } }
  template:
    metadata: { labels: { a: b } }
    spec: { containers: [{ name: c, image: "i:1", ${spec} }] }
`;

  it('accepts a minimal valid Deployment', async () => {
    expect(await validateSchemas(parse(deployment('imagePullPolicy: Always')))).toEqual([]);
  });

  it('a field of the wrong type', async () => {
    const findings = await validateSchemas(parse(deployment('ports: [{ containerPort: "8000" }]')));
    expect(rules(findings)).toEqual(['schema']);
    expect(findings[0]?.message).toContain('containerPort must be integer');
  });

  it('a malformed quantity', async () => {
    const findings = await validateSchemas(parse(deployment('resources: { limits: { memory: "512 MB" } }')));
    expect(rules(findings)).toContain('schema');
  });

  it('a field Kubernetes does not have (the schema alone would let it through)', async () => {
    const findings = await validateSchemas(parse(deployment('readinesProbe: { httpGet: { path: /health/ready, port: 8000 } }')));
    expect(findings).toEqual([
      { rule: 'schema-unknown-field', where: 'test.yaml#0 Deployment/x', message: 'unknown field /spec/template/spec/containers/0/readinesProbe' },
    ]);
  });

  it('a kind without a schema', async () => {
    const findings = await validateSchemas(parse('apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: { name: x }\n'));
    expect(rules(findings)).toEqual(['schema-kind']);
  });
});

describe('the policy check rejects', () => {
  const cases: [what: string, rule: string, message: string, broken: Manifest[]][] = [
    ['a missing readiness probe', 'probes', 'readinessProbe is missing', withChange('Deployment', 'loanbook-api', (d) => d.deleteIn([...C, 'readinessProbe']))],
    ['liveness on the readiness path', 'probes', 'livenessProbe must GET /health/live', withChange('Deployment', 'loanbook-api', (d) => d.setIn([...C, 'livenessProbe', 'httpGet', 'path'], '/health/ready'))],
    ['worker probes on the API port', 'probes', 'not the port worker serves health on (9465)', withChange('Deployment', 'loanbook-worker', (d) => {
      d.addIn([...C, 'ports'], { name: 'api', containerPort: 8000 });
      d.setIn([...C, 'livenessProbe', 'httpGet', 'port'], 'api');
    })],
    ['runAsNonRoot false', 'pod-security', 'runAsNonRoot must be true', withChange('Deployment', 'loanbook-api', (d) => d.setIn([...POD, 'securityContext', 'runAsNonRoot'], false))],
    ['no seccomp profile', 'pod-security', 'seccompProfile.type must be RuntimeDefault', withChange('Job', 'loanbook-migrate', (d) => d.deleteIn([...POD, 'securityContext', 'seccompProfile']))],
    ['a writable root filesystem', 'container-security', 'readOnlyRootFilesystem must be true', withChange('Deployment', 'loanbook-worker', (d) => d.setIn([...C, 'securityContext', 'readOnlyRootFilesystem'], false))],
    ['capabilities kept', 'container-security', 'capabilities.drop must include ALL', withChange('Job', 'loanbook-migrate', (d) => d.setIn([...C, 'securityContext', 'capabilities', 'drop'], []))],
    ['privilege escalation', 'container-security', 'allowPrivilegeEscalation must be false', withChange('Deployment', 'loanbook-api', (d) => d.deleteIn([...C, 'securityContext', 'allowPrivilegeEscalation']))],
    ['no /tmp volume', 'tmp', '/tmp must be an emptyDir', withChange('Deployment', 'loanbook-api', (d) => d.setIn([...C, 'volumeMounts'], []))],
    ['a container without limits', 'resources', 'needs requests and limits for memory', withChange('Job', 'loanbook-migrate', (d) => d.deleteIn([...C, 'resources', 'limits']))],
    ['a request above its limit', 'resources', 'memory request 1Gi exceeds its limit 512Mi', withChange('Deployment', 'loanbook-api', (d) => d.setIn([...C, 'resources', 'requests', 'memory'], '1Gi'))],
    ['maxUnavailable 1', 'strategy', 'maxUnavailable 0', withChange('Deployment', 'loanbook-api', (d) => d.setIn(['spec', 'strategy', 'rollingUpdate', 'maxUnavailable'], 1))],
    ['Recreate', 'strategy', 'maxUnavailable 0', withChange('Deployment', 'loanbook-worker', (d) => d.setIn(['spec', 'strategy'], { type: 'Recreate' }))],
    ['replicas on the HPA-owned Deployment', 'replicas', 'an HPA scales this Deployment', withChange('Deployment', 'loanbook-api', (d) => d.setIn(['spec', 'replicas'], 3))],
    ['a grace period shorter than the drain', 'graceful-stop', 'terminationGracePeriodSeconds (25) must exceed', withChange('Deployment', 'loanbook-api', (d) => d.setIn([...POD, 'terminationGracePeriodSeconds'], 25))],
    ['a worker grace shorter than its SHUTDOWN_GRACE_MS', 'graceful-stop', 'SHUTDOWN_GRACE_MS (60000 ms)', withChange('Deployment', 'loanbook-worker', (d) => d.setIn([...POD, 'terminationGracePeriodSeconds'], 60))],
    ['no preStop on the served API', 'graceful-stop', 'need a preStop', withChange('Deployment', 'loanbook-api', (d) => d.deleteIn([...C, 'lifecycle']))],
    ['scraping the API port', 'metrics', 'prometheus.io/port must be 9464', withChange('Deployment', 'loanbook-api', (d) => d.setIn(['spec', 'template', 'metadata', 'annotations', 'prometheus.io/port'], '8000'))],
    ['image :latest', 'image', 'needs an explicit release tag', withChange('Deployment', 'loanbook-worker', (d) => d.setIn([...C, 'image'], 'loanbook:latest'))],
    ['the Job on another release', 'image', 'must run one image', withChange('Job', 'loanbook-migrate', (d) => d.setIn([...C, 'image'], 'loanbook:0.0.9'))],
    ['the migration on another release than the app', 'image', 'the kustomizations deploy different images', withChange('Kustomization', 'migrate/kustomization.yaml', (d) => d.setIn(['images', 0, 'newTag'], '0.2.0'))],
    ['an env name the app does not read', 'env', 'env SHUTDOWN_GRACE is not a variable the app reads', withChange('Deployment', 'loanbook-worker', (d) => d.setIn([...C, 'env', 0, 'name'], 'SHUTDOWN_GRACE'))],
    ['a ConfigMap key the app does not read', 'configmap', 'WORKER_THREADS is not a variable the app reads', withChange('ConfigMap', 'loanbook', (d) => d.setIn(['data', 'WORKER_THREADS'], '4'))],
    ['a secret in the ConfigMap', 'configmap', 'DATABASE_URL is a secret', withChange('ConfigMap', 'loanbook', (d) => d.setIn(['data', 'DATABASE_URL'], 'postgres://db/loanbook'))],
    ['a real value in the Secret template', 'secret', 'REDIS_URL must be a placeholder', withChange('Secret', 'loanbook', (d) => d.setIn(['stringData', 'REDIS_URL'], 'redis://redis:6379'))],
    ['a placeholder the app would take as a key', 'secret', 'would be accepted by the app as a real key', withChange('Secret', 'loanbook', (d) => d.setIn(['stringData', 'SECRET_KEY'], 'REPLACE_ME with openssl rand -base64 48 output'))],
    ['a migrate Job that does something else', 'job', 'migrate up', withChange('Job', 'loanbook-migrate', (d) => d.setIn([...C, 'args'], ['migrate', 'status']))],
    ['a Job without a TTL', 'job', 'ttlSecondsAfterFinished must be set', withChange('Job', 'loanbook-migrate', (d) => d.deleteIn(['spec', 'ttlSecondsAfterFinished']))],
    ['a LoadBalancer Service', 'service', 'type must be ClusterIP', withChange('Service', 'loanbook-api', (d) => d.setIn(['spec', 'type'], 'LoadBalancer'))],
    ['a Service selecting API and worker', 'service', 'matches loanbook-api, loanbook-worker', withChange('Service', 'loanbook-api', (d) => d.deleteIn(['spec', 'selector', 'app.kubernetes.io/component']))],
    ['an Ingress without TLS', 'ingress', 'has no TLS entry', withChange('Ingress', 'loanbook-api', (d) => d.deleteIn(['spec', 'tls']))],
    ['an Ingress to a missing Service port', 'ingress', 'loanbook-api:web is not a Service port', withChange('Ingress', 'loanbook-api', (d) => d.setIn(['spec', 'rules', 0, 'http', 'paths', 0, 'backend', 'service', 'port'], { name: 'web' }))],
    ['an HPA on a missing Deployment', 'hpa', 'scaleTargetRef Deployment/loanbook is not a Deployment here', withChange('HorizontalPodAutoscaler', 'loanbook-api', (d) => d.setIn(['spec', 'scaleTargetRef', 'name'], 'loanbook'))],
    ['an HPA without the requests-per-second metric', 'hpa', 'no requests-per-second', withChange('HorizontalPodAutoscaler', 'loanbook-api', (d) => d.deleteIn(['spec', 'metrics', 2]))],
    ['an HPA metric no adapter rule serves', 'hpa', 'no prometheus-adapter rule produces requests_per_second', withChange('HorizontalPodAutoscaler', 'loanbook-api', (d) => d.setIn(['spec', 'metrics', 2, 'pods', 'metric', 'name'], 'requests_per_second'))],
    ['an adapter rule over a metric the app does not export', 'hpa', 'http_server_requests_total, which the app does not export', withChange('ConfigMap', 'prometheus-adapter', (d) =>
      d.setIn(['data', 'config.yaml'], String(d.getIn(['data', 'config.yaml'])).replaceAll('http_requests_total', 'http_server_requests_total')),
    )],
    ['a PDB selecting nothing', 'pdb', 'matches 0', withChange('PodDisruptionBudget', 'loanbook-worker', (d) => d.setIn(['spec', 'selector', 'matchLabels', 'app.kubernetes.io/component'], 'workers'))],
    ['a PDB that blocks every drain', 'pdb', 'would block every drain', withChange('PodDisruptionBudget', 'loanbook-api', (d) => {
      d.deleteIn(['spec', 'maxUnavailable']);
      d.setIn(['spec', 'minAvailable'], 2);
    })],
    ['no default deny', 'networkpolicy', 'no default-deny policy', withChange('NetworkPolicy', 'default-deny', (d) => d.setIn(['spec', 'policyTypes'], ['Ingress']))],
    ['a policy selector with a typo', 'networkpolicy', 'matches no Loanbook pod', withChange('NetworkPolicy', 'loanbook-api-ingress', (d) => d.setIn(['spec', 'podSelector', 'matchLabels', 'app.kubernetes.io/component'], 'apii'))],
    ['the API open to every source', 'networkpolicy', 'allows every source or every port', withChange('NetworkPolicy', 'loanbook-api-ingress', (d) => d.deleteIn(['spec', 'ingress', 0, 'from']))],
    ['the API port open to monitoring', 'networkpolicy', 'port 8000 is open to namespace monitoring', withChange('NetworkPolicy', 'loanbook-api-ingress', (d) => d.addIn(['spec', 'ingress', 1, 'ports'], { protocol: 'TCP', port: 8000 }))],
    ['the API port open to an address block', 'networkpolicy', 'may only be reached from named namespaces', withChange('NetworkPolicy', 'loanbook-api-ingress', (d) => d.addIn(['spec', 'ingress', 0, 'from'], { ipBlock: { cidr: '0.0.0.0/0' } }))],
    ['no egress to the database', 'networkpolicy', 'no egress to PostgreSQL', withChange('NetworkPolicy', 'loanbook-egress', (d) => d.deleteIn(['spec', 'egress', 1]))],
    ['unbounded egress', 'networkpolicy', 'allows every destination or every port', withChange('NetworkPolicy', 'loanbook-egress', (d) => d.addIn(['spec', 'egress'], {}))],
    ['the database open to every pod', 'networkpolicy', 'may only be reached from Loanbook pods', withChange('NetworkPolicy', 'postgresql-from-loanbook-only', (d) => d.setIn(['spec', 'ingress', 0, 'from'], [{ namespaceSelector: {} }]))],
    ['the Secret template in the kustomization', 'secret', 'must not be listed in a kustomization', withChange('Kustomization', 'kustomization.yaml', (d) => d.addIn(['resources'], 'secret.template.yaml'))],
    ['a manifest no kustomization lists', 'kustomization', 'is not listed in any kustomization.yaml', withChange('Kustomization', 'kustomization.yaml', (d) =>
      d.setIn(['resources'], (d.getIn(['resources']) as YAMLSeq<Scalar<string>>).items.map((i) => i.value).filter((r) => r !== 'pdb.yaml')),
    )],
  ];

  it.each(cases)('%s', (_what, rule, message, broken) => {
    const messages = policy(broken).filter((f) => f.rule === rule).map((f) => f.message);
    expect(messages.join('\n')).toContain(message);
  });

  it('names the object and the reason', () => {
    const findings = policy(withChange('Deployment', 'loanbook-api', (d) => d.deleteIn([...C, 'readinessProbe'])));
    expect(findings).toEqual([
      { rule: 'probes', where: 'api-deployment.yaml#0 Deployment/loanbook-api', message: 'readinessProbe is missing (an httpGet on /health/ready)' },
    ]);
  });

});
