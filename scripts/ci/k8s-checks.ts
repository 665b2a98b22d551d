/**
 * Checks for deploy/k8s: every YAML document is validated against the Kubernetes OpenAPI
 * schemas (kubernetes-models, Kubernetes 1.27), plus the rules a schema cannot express —
 * the security context, probes and rollout strategy Loanbook relies on, that the settings
 * are variables the app reads, and that the objects refer to each other correctly
 * (Service → pods, HPA → Deployment, NetworkPolicy → labels, …).
 *
 * Used by scripts/ci/k8s-validate.ts (prints a report) and test/deploy/k8s.test.ts.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { decodeEncryptionKey, secretKeyWeakness } from '../../src/platform/config.js';
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { IJob } from 'kubernetes-models/batch/v1/Job';
import type { IHorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import type { INetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import type { IIngress } from 'kubernetes-models/networking.k8s.io/v1/Ingress';
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import type { IProbe } from 'kubernetes-models/v1/Probe';
import type { ISecret } from 'kubernetes-models/v1/Secret';
import type { IService } from 'kubernetes-models/v1/Service';

/** The uid and gid of the `loanbook` user in deploy/docker/Dockerfile. */
export const IMAGE_UID = 10001;
export const NAMESPACE = 'loanbook';
/** Placeholder every value of a Secret template must contain. */
export const SECRET_PLACEHOLDER = 'REPLACE_ME';
const INGRESS_CONTROLLER_NAMESPACE = 'ingress-nginx';
const MONITORING_NAMESPACE = 'monitoring';
/** The app's defaults for the settings the manifests must agree with (src/platform/config.ts, src/cli.ts). */
const DEFAULTS = { PORT: '8000', SHUTDOWN_GRACE_MS: '10000', WORKER_HTTP_PORT: '9465' } as const;
/** Keys that must never sit in a ConfigMap (they belong in the Secret). */
const SECRET_ENV = /^(DATABASE_URL|REDIS_URL|SECRET_KEY.*|ENCRYPTION_KEY.*|SENTRY_DSN|ADMIN_PASSWORD|.*_API_KEY|AWS_SECRET_ACCESS_KEY)$/;
const KUSTOMIZATION_API = 'kustomize.config.k8s.io/v1beta1';

export interface Manifest {
  /** Path relative to the manifests root. */
  readonly file: string;
  readonly index: number;
  readonly object: Record<string, unknown>;
}

export interface Finding {
  readonly rule: string;
  /** "file#index Kind/name". */
  readonly where: string;
  readonly message: string;
}

export interface AppFacts {
  /** Environment variables the app reads (src/platform/config.ts). */
  readonly envNames: ReadonlySet<string>;
  /** Metric names the app exports. */
  readonly metricNames: ReadonlySet<string>;
  /** Why a SECRET_KEY value is unusable, or undefined when the app would accept it. */
  readonly secretKeyWeakness: (value: string) => string | undefined;
  /** A decoded key, or why an ENCRYPTION_KEY value is unusable. */
  readonly decodeEncryptionKey: (value: string) => Buffer | string;
}

// ---------------------------------------------------------------------------------------
// Loading

/** Every YAML document under `root` (recursively), in file order. YAML errors are findings. */
export function loadManifests(root: string): { manifests: Manifest[]; findings: Finding[] } {
  const manifests: Manifest[] = [];
  const findings: Finding[] = [];
  for (const path of yamlFiles(root)) {
    const file = relative(root, path);
    parseManifestText(readFileSync(path, 'utf8'), file, manifests, findings);
  }
  return { manifests, findings };
}

/** Parses one file's documents into `manifests` (empty documents skipped). */
export function parseManifestText(text: string, file: string, manifests: Manifest[], findings: Finding[]): void {
  parseAllDocuments(text).forEach((doc, index) => {
    if (doc.errors.length > 0) {
      findings.push({ rule: 'yaml', where: `${file}#${index}`, message: doc.errors.map((e) => e.message).join('; ') });
      return;
    }
    const object: unknown = doc.toJS();
    if (object === null || object === undefined) return;
    if (typeof object !== 'object' || Array.isArray(object)) {
      findings.push({ rule: 'yaml', where: `${file}#${index}`, message: 'document is not a mapping' });
      return;
    }
    manifests.push({ file, index, object: object as Record<string, unknown> });
  });
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) return yamlFiles(path);
      return /\.ya?ml$/.test(name) ? [path] : [];
    });
}

/** The environment variables src/platform/config.ts validates (the keys of its envSchema). */
export function appEnvNames(configSource: string): Set<string> {
  const block = /const envSchema = z\.object\(\{\n([\s\S]*?)\n\}\);/.exec(configSource);
  if (!block?.[1]) throw new Error('envSchema not found in src/platform/config.ts');
  return new Set([...block[1].matchAll(/^ {2}([A-Z][A-Z0-9_]*):/gm)].map((m) => m[1] as string));
}

/** Metric names registered in src/ (prom-client `name: '…'`). */
export function appMetricNames(srcRoot: string): Set<string> {
  const names = new Set<string>();
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts')) {
        for (const m of readFileSync(path, 'utf8').matchAll(/\bname:\s*'([a-z_][a-z0-9_]*)'/g)) names.add(m[1] as string);
      }
    }
  };
  walk(srcRoot);
  return names;
}

/** The facts about this repository's app that the manifests must agree with. */
export function loanbookFacts(repoRoot: string): AppFacts {
  return {
    envNames: appEnvNames(readFileSync(join(repoRoot, 'src/platform/config.ts'), 'utf8')),
    metricNames: appMetricNames(join(repoRoot, 'src')),
    secretKeyWeakness,
    decodeEncryptionKey,
  };
}

// ---------------------------------------------------------------------------------------
// Schema validation

interface Validatable {
  validate(): void;
}
type ModelClass = (new (data: Record<string, unknown>) => Validatable) & { apiVersion: string; kind: string };

export function describe(m: Manifest): string {
  const name = (m.object.metadata as { name?: unknown } | undefined)?.name;
  return `${m.file}#${m.index} ${String(m.object.kind)}/${typeof name === 'string' ? name : '?'}`;
}

function isKustomization(m: Manifest): boolean {
  return m.object.apiVersion === KUSTOMIZATION_API && m.object.kind === 'Kustomization';
}

/** The kubernetes-models class for an apiVersion/kind, or undefined when there is none. */
async function modelFor(apiVersion: unknown, kind: unknown): Promise<ModelClass | undefined> {
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return undefined;
  if (!/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion) || !/^[A-Z][A-Za-z]+$/.test(kind)) return undefined;
  try {
    const mod = (await import(/* @vite-ignore */ `kubernetes-models/${apiVersion}/${kind}`)) as Record<string, unknown>;
    const model = mod[kind] as ModelClass | undefined;
    return model?.apiVersion === apiVersion && model.kind === kind ? model : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Validates each document against its OpenAPI schema. The schemas accept fields they do
 * not declare (the API server would reject or drop them), so the validator's reads are
 * recorded and any field it never looked at is reported as unknown.
 */
export async function validateSchemas(manifests: readonly Manifest[]): Promise<Finding[]> {
  const findings: Finding[] = [];
  for (const m of manifests) {
    if (isKustomization(m)) continue;
    const where = describe(m);
    const Model = await modelFor(m.object.apiVersion, m.object.kind);
    if (!Model) {
      findings.push({ rule: 'schema-kind', where, message: `unknown apiVersion/kind ${String(m.object.apiVersion)}/${String(m.object.kind)}` });
      continue;
    }
    const instance = new Model(m.object);
    const recorder = recordReads(instance);
    try {
      instance.validate.call(recorder.proxy);
    } catch (e) {
      findings.push({ rule: 'schema', where, message: e instanceof Error ? e.message : String(e) });
    }
    for (const path of recorder.unread()) findings.push({ rule: 'schema-unknown-field', where, message: `unknown field ${path}` });
  }
  return findings;
}

function recordReads(root: object): { proxy: object; unread(): string[] } {
  const reads = new WeakMap<object, Set<string>>();
  const proxies = new WeakMap<object, object>();
  const wrap = (value: unknown): unknown => {
    if (value === null || typeof value !== 'object') return value;
    const known = proxies.get(value);
    if (known) return known;
    const seen = new Set<string>();
    reads.set(value, seen);
    const proxy = new Proxy(value, {
      get(target, key, receiver) {
        if (typeof key === 'string') seen.add(key);
        return wrap(Reflect.get(target, key, receiver));
      },
    });
    proxies.set(value, proxy);
    return proxy;
  };
  const proxy = wrap(root) as object;
  const unread = (): string[] => {
    const out: string[] = [];
    const walk = (value: unknown, path: string): void => {
      if (value === null || typeof value !== 'object') return;
      const seen = reads.get(value);
      if (!seen) return;
      for (const [key, child] of Object.entries(value)) {
        if (seen.has(key)) walk(child, `${path}/${key}`);
        else out.push(`${path}/${key}`);
      }
    };
    walk(root, '');
    return out;
  };
  return { proxy, unread };
}

// ---------------------------------------------------------------------------------------
// Policy checks

interface Workload {
  readonly manifest: Manifest;
  readonly kind: 'Deployment' | 'Job';
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  readonly pod: IPodSpec;
}

type Selector = NonNullable<NonNullable<IDeployment['spec']>['selector']>;

export function matchesSelector(selector: Selector | undefined, labels: Readonly<Record<string, string>>): boolean {
  if (!selector) return false;
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const value = labels[e.key];
    const ok =
      e.operator === 'In' ? value !== undefined && (e.values ?? []).includes(value)
      : e.operator === 'NotIn' ? value === undefined || !(e.values ?? []).includes(value)
      : e.operator === 'Exists' ? value !== undefined
      : e.operator === 'DoesNotExist' ? value === undefined
      : false;
    if (!ok) return false;
  }
  return true;
}

function isEmptySelector(selector: Selector | undefined): boolean {
  return selector !== undefined && Object.keys(selector.matchLabels ?? {}).length === 0 && (selector.matchExpressions ?? []).length === 0;
}

/** A Kubernetes quantity ("250m", "1", "512Mi") as a number of base units. */
export function parseQuantity(q: string | number): number | undefined {
  if (typeof q === 'number') return q;
  const m = /^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(q);
  if (!m) return undefined;
  const factor: Record<string, number> = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 };
  return Number(m[1]) * (m[2] ? (factor[m[2]] as number) : 1);
}

export interface PolicyOptions {
  readonly app: AppFacts;
  /** Whether a path relative to the manifests root exists (kustomization resources). */
  readonly fileExists: (relativePath: string) => boolean;
}

/** Every rule over the whole set of manifests; an empty list means the set is deployable as documented. */
export function checkPolicies(manifests: readonly Manifest[], options: PolicyOptions): Finding[] {
  const findings: Finding[] = [];
  const fail = (rule: string, m: Manifest | string, message: string): void => {
    findings.push({ rule, where: typeof m === 'string' ? m : describe(m), message });
  };
  const of = <T>(kind: string): { m: Manifest; o: T }[] =>
    manifests.filter((m) => m.object.kind === kind && !isKustomization(m)).map((m) => ({ m, o: m.object as T }));

  const configMaps = of<IConfigMap>('ConfigMap');
  const secrets = of<ISecret>('Secret');
  const deployments = of<IDeployment>('Deployment');
  const jobs = of<IJob>('Job');
  const services = of<IService>('Service');
  const ingresses = of<IIngress>('Ingress');
  const hpas = of<IHorizontalPodAutoscaler>('HorizontalPodAutoscaler');
  const pdbs = of<IPodDisruptionBudget>('PodDisruptionBudget');
  const policies = of<INetworkPolicy>('NetworkPolicy');
  const kustomizations = manifests.filter(isKustomization);

  const workloads: Workload[] = [
    ...deployments.map(({ m, o }) => ({ manifest: m, kind: 'Deployment' as const, name: o.metadata?.name ?? '', tpl: o.spec?.template })),
    ...jobs.map(({ m, o }) => ({ manifest: m, kind: 'Job' as const, name: o.metadata?.name ?? '', tpl: o.spec?.template })),
  ].flatMap(({ tpl, ...w }) =>
    tpl?.spec ? [{ ...w, labels: tpl.metadata?.labels ?? {}, annotations: tpl.metadata?.annotations ?? {}, pod: tpl.spec }] : [],
  );
  const deploymentWorkloads = workloads.filter((w) => w.kind === 'Deployment');
  const configMapData = new Map(configMaps.map(({ o }) => [o.metadata?.name ?? '', o.data ?? {}]));
  const hpaTargets = new Set(hpas.map(({ o }) => o.spec?.scaleTargetRef.name));

  /** The environment a container starts with: ConfigMaps from envFrom, then `env` (which wins). */
  const effectiveEnv = (c: IContainer): Map<string, string | undefined> => {
    const env = new Map<string, string | undefined>();
    for (const from of c.envFrom ?? []) {
      const data = from.configMapRef ? configMapData.get(from.configMapRef.name ?? '') : undefined;
      for (const [k, v] of Object.entries(data ?? {})) env.set(k, v);
    }
    for (const e of c.env ?? []) env.set(e.name, e.value);
    return env;
  };
  const setting = (env: Map<string, string | undefined>, name: keyof typeof DEFAULTS): number =>
    Number(env.get(name) ?? DEFAULTS[name]);
  const containerPort = (c: IContainer, port: string | number | undefined): number | undefined =>
    typeof port === 'number' ? (c.ports ?? []).find((p) => p.containerPort === port)?.containerPort
    : (c.ports ?? []).find((p) => p.name === port)?.containerPort;
  const deploymentsMatching = (selector: Selector | undefined): Workload[] =>
    deploymentWorkloads.filter((w) => matchesSelector(selector, w.labels));

  // Namespaces: one namespace for everything of ours.
  for (const m of manifests) {
    if (isKustomization(m) || m.object.kind === 'Namespace' || m.file.startsWith('optional/')) continue;
    const ns = (m.object.metadata as { namespace?: string } | undefined)?.namespace;
    if (ns !== NAMESPACE) fail('namespace', m, `metadata.namespace must be "${NAMESPACE}" (got ${String(ns)})`);
  }
  if (!of<{ metadata?: { name?: string } }>('Namespace').some(({ o }) => o.metadata?.name === NAMESPACE)) {
    fail('namespace', 'deploy/k8s', `no Namespace "${NAMESPACE}"`);
  }

  // Images: one explicit release for every Loanbook container; the kustomizations (which
  // override it at deploy time) agree with each other and name the manifests' image.
  const images = new Set<string>();
  for (const w of workloads) {
    for (const c of w.pod.containers) {
      const image = c.image ?? '';
      const tag = /:([^/:@]+)$/.exec(image)?.[1];
      if (!tag || tag === 'latest') fail('image', w.manifest, `container ${c.name}: image "${image}" needs an explicit release tag`);
      images.add(image);
    }
  }
  if (images.size > 1) fail('image', 'deploy/k8s', `the API, worker and migration must run one image; found ${[...images].join(', ')}`);
  const repository = [...images][0]?.replace(/:[^/:@]+$/, '');
  const overrides = new Set<string>();
  for (const k of kustomizations) {
    const entries = (k.object.images ?? []) as { name?: string; newName?: string; newTag?: string }[];
    if (entries.length !== 1 || entries[0]?.name !== repository || !entries[0]?.newTag || entries[0].newTag === 'latest') {
      fail('image', k, `images: needs one entry for ${String(repository)} with a release newTag`);
    }
    overrides.add(JSON.stringify(entries));
  }
  if (overrides.size > 1) fail('image', 'deploy/k8s', `the kustomizations deploy different images: ${[...overrides].join(' vs ')}`);

  // Every workload: security, resources, /tmp, environment.
  for (const w of workloads) {
    const { pod } = w;
    const psc = pod.securityContext;
    if (psc?.runAsNonRoot !== true) fail('pod-security', w.manifest, 'spec.securityContext.runAsNonRoot must be true');
    if (psc?.runAsUser !== IMAGE_UID) fail('pod-security', w.manifest, `spec.securityContext.runAsUser must be ${IMAGE_UID} (the image's user)`);
    if (psc?.runAsGroup !== IMAGE_UID || psc.fsGroup !== IMAGE_UID) fail('pod-security', w.manifest, `runAsGroup and fsGroup must be ${IMAGE_UID}`);
    if (psc?.seccompProfile?.type !== 'RuntimeDefault') fail('pod-security', w.manifest, 'seccompProfile.type must be RuntimeDefault');
    if (pod.automountServiceAccountToken !== false) fail('pod-security', w.manifest, 'automountServiceAccountToken must be false (the app never calls the Kubernetes API)');
    if (pod.hostNetwork || pod.hostPID || pod.hostIPC) fail('pod-security', w.manifest, 'host namespaces are not allowed');

    for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
      const sc = c.securityContext;
      const label = `container ${c.name}`;
      if (sc?.allowPrivilegeEscalation !== false) fail('container-security', w.manifest, `${label}: allowPrivilegeEscalation must be false`);
      if (sc?.readOnlyRootFilesystem !== true) fail('container-security', w.manifest, `${label}: readOnlyRootFilesystem must be true`);
      if (!(sc?.capabilities?.drop ?? []).includes('ALL')) fail('container-security', w.manifest, `${label}: capabilities.drop must include ALL`);
      if ((sc?.capabilities?.add ?? []).length > 0) fail('container-security', w.manifest, `${label}: no capabilities may be added`);
      if (sc?.privileged === true || sc?.runAsNonRoot === false || (sc?.runAsUser !== undefined && sc.runAsUser !== IMAGE_UID)) {
        fail('container-security', w.manifest, `${label}: must not run privileged or as another user`);
      }

      const tmp = (c.volumeMounts ?? []).find((v) => v.mountPath === '/tmp');
      const volume = tmp && (pod.volumes ?? []).find((v) => v.name === tmp.name);
      if (!volume?.emptyDir) fail('tmp', w.manifest, `${label}: /tmp must be an emptyDir volume (the root filesystem is read-only)`);

      for (const kind of ['cpu', 'memory'] as const) {
        const request = c.resources?.requests?.[kind];
        const limit = c.resources?.limits?.[kind];
        if (request === undefined || limit === undefined) {
          fail('resources', w.manifest, `${label}: needs requests and limits for ${kind}`);
        } else if ((parseQuantity(request) ?? Infinity) > (parseQuantity(limit) ?? -Infinity)) {
          fail('resources', w.manifest, `${label}: ${kind} request ${request} exceeds its limit ${limit}`);
        }
      }

      const refs = c.envFrom ?? [];
      const cm = refs.find((r) => r.configMapRef)?.configMapRef?.name;
      const secret = refs.find((r) => r.secretRef)?.secretRef?.name;
      if (!cm || !configMapData.has(cm)) fail('env', w.manifest, `${label}: envFrom needs the ConfigMap (found ${String(cm)})`);
      if (!secret || !secrets.some(({ o }) => o.metadata?.name === secret)) fail('env', w.manifest, `${label}: envFrom needs the Secret described by the template (found ${String(secret)})`);
      for (const e of c.env ?? []) {
        if (!options.app.envNames.has(e.name)) fail('env', w.manifest, `${label}: env ${e.name} is not a variable the app reads`);
      }
    }
  }

  // Deployments: rollout, probes, scraping, graceful stop.
  for (const w of deploymentWorkloads) {
    const d = w.manifest.object as unknown as IDeployment;
    const strategy = d.spec?.strategy;
    if (strategy?.type !== 'RollingUpdate' || ![0, '0', '0%'].includes(strategy.rollingUpdate?.maxUnavailable ?? '')) {
      fail('strategy', w.manifest, 'strategy must be RollingUpdate with maxUnavailable 0');
    }
    const surge = strategy?.rollingUpdate?.maxSurge;
    if (surge === undefined || surge === 0 || surge === '0' || surge === '0%') fail('strategy', w.manifest, 'maxSurge must be at least 1');
    if (!matchesSelector(d.spec?.selector, w.labels)) fail('selector', w.manifest, 'spec.selector does not match the pod template labels');
    for (const other of deploymentWorkloads) {
      if (other !== w && matchesSelector(d.spec?.selector, other.labels)) fail('selector', w.manifest, `spec.selector also matches the pods of ${other.name}`);
    }
    if (hpaTargets.has(w.name) && d.spec?.replicas !== undefined) {
      fail('replicas', w.manifest, 'an HPA scales this Deployment: spec.replicas would reset its count on every apply');
    }

    const c = w.pod.containers[0];
    if (!c || w.pod.containers.length !== 1) {
      fail('containers', w.manifest, 'expected exactly one container');
      continue;
    }
    const env = effectiveEnv(c);
    const command = (c.args ?? []).join(' ');
    const role = command === 'serve' || command.startsWith('serve ') ? 'api' : command === 'worker' ? 'worker' : undefined;
    if (!role) {
      fail('containers', w.manifest, `args must be ["serve"] or ["worker"], got ${JSON.stringify(c.args)}`);
      continue;
    }
    const healthPort = role === 'api' ? setting(env, 'PORT') : setting(env, 'WORKER_HTTP_PORT');
    const metricsPort = role === 'api' ? Number(env.get('METRICS_PORT') ?? healthPort) : healthPort;

    const probes: [string, IProbe | undefined, string][] = [
      ['startupProbe', c.startupProbe, '/health/live'],
      ['livenessProbe', c.livenessProbe, '/health/live'],
      ['readinessProbe', c.readinessProbe, '/health/ready'],
    ];
    for (const [name, probe, path] of probes) {
      if (!probe?.httpGet) {
        fail('probes', w.manifest, `${name} is missing (an httpGet on ${path})`);
        continue;
      }
      if (probe.httpGet.path !== path) fail('probes', w.manifest, `${name} must GET ${path}, not ${String(probe.httpGet.path)}`);
      const port = containerPort(c, probe.httpGet.port);
      if (port !== healthPort) fail('probes', w.manifest, `${name} port ${String(probe.httpGet.port)} is not the port ${role} serves health on (${healthPort})`);
    }

    const a = w.annotations;
    if (a['prometheus.io/scrape'] !== 'true' || a['prometheus.io/path'] !== '/metrics') {
      fail('metrics', w.manifest, 'pod annotations prometheus.io/scrape "true" and prometheus.io/path /metrics are required');
    }
    if (Number(a['prometheus.io/port']) !== metricsPort || containerPort(c, metricsPort) === undefined) {
      fail('metrics', w.manifest, `prometheus.io/port must be ${metricsPort}, a declared container port (got ${String(a['prometheus.io/port'])})`);
    }

    const graceMs = setting(env, 'SHUTDOWN_GRACE_MS');
    const sleep = c.lifecycle?.preStop?.exec?.command;
    const sleepSeconds = sleep?.[0] === 'sleep' && sleep.length === 2 ? Number(sleep[1]) : undefined;
    const served = services.some(({ o }) => matchesSelector({ matchLabels: o.spec?.selector ?? {} }, w.labels));
    if (served && !(sleepSeconds !== undefined && sleepSeconds >= 1)) {
      fail('graceful-stop', w.manifest, 'pods behind a Service need a preStop ["sleep", N] so endpoints drain before SIGTERM');
    }
    const budgetMs = (w.pod.terminationGracePeriodSeconds ?? 30) * 1000;
    if (budgetMs <= graceMs + (sleepSeconds ?? 0) * 1000) {
      fail('graceful-stop', w.manifest, `terminationGracePeriodSeconds (${budgetMs / 1000}) must exceed preStop (${sleepSeconds ?? 0} s) + SHUTDOWN_GRACE_MS (${graceMs} ms)`);
    }
  }

  // The migration Job.
  for (const { m, o } of jobs) {
    const pod = o.spec?.template.spec;
    if (o.spec?.backoffLimit === undefined) fail('job', m, 'backoffLimit must be set');
    if (o.spec?.ttlSecondsAfterFinished === undefined) fail('job', m, 'ttlSecondsAfterFinished must be set (finished Jobs are cleaned up)');
    if (pod?.restartPolicy !== 'Never' && pod?.restartPolicy !== 'OnFailure') fail('job', m, 'restartPolicy must be Never or OnFailure');
    if (JSON.stringify(pod?.containers[0]?.args) !== JSON.stringify(['migrate', 'up'])) fail('job', m, 'the Job runs `loanbook migrate up` (args ["migrate", "up"])');
  }

  // ConfigMaps read through envFrom: only variables the app reads, and no secrets.
  const envFromMaps = new Set(workloads.flatMap((w) => w.pod.containers.flatMap((c) => (c.envFrom ?? []).map((r) => r.configMapRef?.name))));
  for (const { m, o } of configMaps) {
    if (!envFromMaps.has(o.metadata?.name)) continue;
    for (const key of Object.keys(o.data ?? {})) {
      if (!options.app.envNames.has(key)) fail('configmap', m, `${key} is not a variable the app reads (src/platform/config.ts)`);
      if (SECRET_ENV.test(key)) fail('configmap', m, `${key} is a secret; it belongs in the Secret`);
    }
  }

  // Secrets: templates only, with placeholders the app itself refuses.
  const listed = new Set(kustomizations.flatMap((k) => ((k.object.resources ?? []) as string[]).map((r) => join(dirname(k.file), r))));
  for (const { m, o } of secrets) {
    if (!m.file.endsWith('.template.yaml')) fail('secret', m, 'a Secret may only be committed as a *.template.yaml with placeholders');
    if (listed.has(m.file)) fail('secret', m, 'the Secret template must not be listed in a kustomization (applying it would overwrite the real Secret)');
    if (o.data && Object.keys(o.data).length > 0) fail('secret', m, 'use stringData placeholders, not data');
    for (const [key, value] of Object.entries(o.stringData ?? {})) {
      if (!value.includes(SECRET_PLACEHOLDER)) fail('secret', m, `${key} must be a placeholder containing ${SECRET_PLACEHOLDER}`);
      if (!options.app.envNames.has(key)) fail('secret', m, `${key} is not a variable the app reads`);
    }
    const sk = o.stringData?.SECRET_KEY;
    if (sk !== undefined && options.app.secretKeyWeakness(sk) === undefined) fail('secret', m, 'the SECRET_KEY placeholder would be accepted by the app as a real key');
    const ek = o.stringData?.ENCRYPTION_KEY;
    if (ek !== undefined && typeof options.app.decodeEncryptionKey(ek) !== 'string') fail('secret', m, 'the ENCRYPTION_KEY placeholder would be accepted by the app as a real key');
  }

  // Service: ClusterIP, selecting exactly one Deployment's pods, to a declared port.
  for (const { m, o } of services) {
    if ((o.spec?.type ?? 'ClusterIP') !== 'ClusterIP') fail('service', m, 'the API is reached through the Ingress only: type must be ClusterIP');
    const selected = deploymentsMatching({ matchLabels: o.spec?.selector ?? {} });
    if (selected.length !== 1 || Object.keys(o.spec?.selector ?? {}).length === 0) {
      fail('service', m, `selector must match exactly one Deployment's pods (matches ${selected.map((w) => w.name).join(', ') || 'none'})`);
      continue;
    }
    const c = (selected[0] as Workload).pod.containers[0];
    for (const p of o.spec?.ports ?? []) {
      if (!c || containerPort(c, p.targetPort ?? p.port) === undefined) fail('service', m, `targetPort ${String(p.targetPort)} is not a container port`);
    }
  }

  // Ingress: TLS for every host, class nginx, backends that exist.
  for (const { m, o } of ingresses) {
    if (o.spec?.ingressClassName !== 'nginx') fail('ingress', m, 'ingressClassName must be nginx');
    const tlsHosts = new Set((o.spec?.tls ?? []).flatMap((t) => (t.secretName ? (t.hosts ?? []) : [])));
    for (const rule of o.spec?.rules ?? []) {
      if (!rule.host || !tlsHosts.has(rule.host)) fail('ingress', m, `host ${String(rule.host)} has no TLS entry with a secretName`);
      for (const p of rule.http?.paths ?? []) {
        const svc = services.find(({ o: s }) => s.metadata?.name === p.backend.service?.name);
        const port = p.backend.service?.port;
        if (!svc || !(svc.o.spec?.ports ?? []).some((sp) => sp.name === port?.name || sp.port === port?.number)) {
          fail('ingress', m, `backend ${String(p.backend.service?.name)}:${String(port?.name ?? port?.number)} is not a Service port`);
        }
      }
    }
  }

  // HPA: the seed's three metrics, on an existing Deployment.
  const adapterNames = adapterMetricNames(configMaps.map(({ o }) => o));
  for (const { m, o } of hpas) {
    const ref = o.spec?.scaleTargetRef;
    if (ref?.kind !== 'Deployment' || ref.apiVersion !== 'apps/v1' || !deploymentWorkloads.some((w) => w.name === ref.name)) {
      fail('hpa', m, `scaleTargetRef ${String(ref?.kind)}/${String(ref?.name)} is not a Deployment here`);
    }
    if ((o.spec?.minReplicas ?? 1) < 2) fail('hpa', m, 'minReplicas must be at least 2 (one pod is a single point of failure)');
    const metrics = o.spec?.metrics ?? [];
    for (const resource of ['cpu', 'memory']) {
      if (!metrics.some((x) => x.type === 'Resource' && x.resource?.name === resource)) fail('hpa', m, `no ${resource} metric`);
    }
    const rps = metrics.find((x) => x.type === 'Pods')?.pods?.metric.name;
    if (rps === undefined) fail('hpa', m, 'no requests-per-second (Pods) metric');
    else if (adapterNames.length > 0 && !adapterNames.some((a) => a.as === rps)) fail('hpa', m, `no prometheus-adapter rule produces ${rps}`);
  }
  for (const a of adapterNames) {
    if (!options.app.metricNames.has(a.series)) fail('hpa', 'prometheus-adapter', `rule reads ${a.series}, which the app does not export`);
  }

  // PodDisruptionBudgets: one per Deployment, never blocking every eviction.
  for (const { m, o } of pdbs) {
    const selected = deploymentsMatching(o.spec?.selector);
    if (selected.length !== 1) fail('pdb', m, `selector must match exactly one Deployment's pods (matches ${selected.length})`);
    const min = o.spec?.minAvailable;
    if (typeof min === 'number') {
      const target = selected[0];
      const hpa = hpas.find(({ o: h }) => h.spec?.scaleTargetRef.name === target?.name);
      const floor = hpa?.o.spec?.minReplicas ?? (target?.manifest.object as unknown as IDeployment | undefined)?.spec?.replicas ?? 1;
      if (min >= floor) fail('pdb', m, `minAvailable ${min} would block every drain at ${floor} replicas`);
    }
  }
  for (const w of deploymentWorkloads) {
    if (!pdbs.some(({ o }) => matchesSelector(o.spec?.selector, w.labels))) fail('pdb', w.manifest, 'no PodDisruptionBudget covers this Deployment');
  }

  checkNetworkPolicies(policies, workloads, services, (rule, m, message) => fail(rule, m, message));
  checkKustomizations(manifests, kustomizations, options, (rule, m, message) => fail(rule, m, message));
  return findings;
}

/** The prometheus-adapter rules found in ConfigMaps: which series each reads and the metric it serves. */
function adapterMetricNames(configMaps: readonly IConfigMap[]): { series: string; as: string }[] {
  return configMaps
    .filter((c) => c.metadata?.labels?.['app.kubernetes.io/name'] === 'prometheus-adapter')
    .flatMap((c) => {
      const text = c.data?.['config.yaml'] ?? '';
      const parsed = parseAllDocuments(text)[0]?.toJS() as { rules?: { seriesQuery?: string; name?: { as?: string } }[] } | undefined;
      return (parsed?.rules ?? []).map((r) => ({ series: /^'?([a-z_:][a-z0-9_:]*)/.exec(r.seriesQuery ?? '')?.[1] ?? '', as: r.name?.as ?? '' }));
    });
}

type Fail = (rule: string, m: Manifest | string, message: string) => void;
type Peer = NonNullable<NonNullable<NonNullable<INetworkPolicy['spec']>['ingress']>[number]['from']>[number];

function namespaceOf(peer: Peer): string | undefined {
  return peer.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name'];
}

function checkNetworkPolicies(
  policies: readonly { m: Manifest; o: INetworkPolicy }[],
  workloads: readonly Workload[],
  services: readonly { m: Manifest; o: IService }[],
  fail: Fail,
): void {
  const mentionsLoanbook = (s: Selector | undefined): boolean =>
    Object.values(s?.matchLabels ?? {}).some((v) => v.includes('loanbook'));

  if (!policies.some(({ o }) => isEmptySelector(o.spec?.podSelector) && o.spec?.policyTypes?.includes('Ingress') && o.spec.policyTypes.includes('Egress') && !o.spec.ingress?.length && !o.spec.egress?.length)) {
    fail('networkpolicy', 'deploy/k8s', 'no default-deny policy (podSelector {}, Ingress and Egress, no rules)');
  }

  // Selectors naming our labels must select our pods (a typo would silently allow nothing).
  for (const { m, o } of policies) {
    const selectors = [
      o.spec?.podSelector,
      ...[...(o.spec?.ingress ?? []).flatMap((r) => r.from ?? []), ...(o.spec?.egress ?? []).flatMap((r) => r.to ?? [])]
        .filter((p) => !p.namespaceSelector)
        .map((p) => p.podSelector),
    ];
    for (const s of selectors) {
      if (mentionsLoanbook(s) && !workloads.some((w) => matchesSelector(s, w.labels))) {
        fail('networkpolicy', m, `selector ${JSON.stringify(s?.matchLabels)} matches no Loanbook pod`);
      }
    }
  }

  // Who may reach each Deployment: the app port only from the ingress controller, metrics only from monitoring.
  for (const w of workloads.filter((x) => x.kind === 'Deployment')) {
    const c = w.pod.containers[0];
    if (!c) continue;
    const metricsPort = Number(w.annotations['prometheus.io/port']);
    const servicePorts = new Set(
      services
        .filter(({ o }) => matchesSelector({ matchLabels: o.spec?.selector ?? {} }, w.labels))
        .flatMap(({ o }) => (o.spec?.ports ?? []).map((p) => (c.ports ?? []).find((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort)?.containerPort)),
    );
    const allowed: { port: number; from: string }[] = [];
    for (const { m, o } of policies.filter(({ o: p }) => p.spec?.policyTypes?.includes('Ingress') && matchesSelector(p.spec.podSelector, w.labels))) {
      for (const rule of o.spec?.ingress ?? []) {
        if (!rule.from?.length || !rule.ports?.length) {
          fail('networkpolicy', m, `an ingress rule for ${w.name} allows every source or every port`);
          continue;
        }
        for (const peer of rule.from) {
          const ns = namespaceOf(peer);
          if (peer.ipBlock || !ns) {
            fail('networkpolicy', m, `${w.name} may only be reached from named namespaces (${INGRESS_CONTROLLER_NAMESPACE}, ${MONITORING_NAMESPACE})`);
            continue;
          }
          for (const p of rule.ports) {
            const port = typeof p.port === 'number' ? p.port : (c.ports ?? []).find((cp) => cp.name === p.port)?.containerPort;
            if (port === undefined) fail('networkpolicy', m, `port ${String(p.port)} is not a container port of ${w.name}`);
            else allowed.push({ port, from: ns });
          }
        }
      }
    }
    for (const a of allowed) {
      const ok = (servicePorts.has(a.port) && a.from === INGRESS_CONTROLLER_NAMESPACE) || (a.port === metricsPort && a.from === MONITORING_NAMESPACE);
      if (!ok) fail('networkpolicy', w.manifest, `${w.name}: port ${a.port} is open to namespace ${a.from}`);
    }
    for (const port of servicePorts) {
      if (port !== undefined && !allowed.some((a) => a.port === port && a.from === INGRESS_CONTROLLER_NAMESPACE)) {
        fail('networkpolicy', w.manifest, `${w.name}: the ingress controller cannot reach the Service's port ${port}`);
      }
    }
    if (!allowed.some((a) => a.port === metricsPort && a.from === MONITORING_NAMESPACE)) {
      fail('networkpolicy', w.manifest, `${w.name}: Prometheus (namespace ${MONITORING_NAMESPACE}) cannot scrape port ${metricsPort}`);
    }
  }

  // Egress: what every Loanbook pod needs, and nothing unbounded.
  for (const { m, o } of policies) {
    if ((o.spec?.egress ?? []).some((r) => !r.to?.length || !r.ports?.length)) {
      fail('networkpolicy', m, 'an egress rule allows every destination or every port');
    }
  }
  const needs: [string, number, string][] = [
    ['DNS', 53, 'UDP'],
    ['PostgreSQL', 5432, 'TCP'],
    ['Redis', 6379, 'TCP'],
    ['NATS', 4222, 'TCP'],
    ['HTTPS (Serper, Gemini, Sentry)', 443, 'TCP'],
  ];
  for (const w of workloads) {
    const rules = policies
      .filter(({ o }) => o.spec?.policyTypes?.includes('Egress') && matchesSelector(o.spec.podSelector, w.labels))
      .flatMap(({ m, o }) => (o.spec?.egress ?? []).map((r) => ({ m, r })));
    for (const [what, port, protocol] of needs) {
      if (!rules.some(({ r }) => (r.ports ?? []).some((p) => p.port === port && (p.protocol ?? 'TCP') === protocol))) {
        fail('networkpolicy', w.manifest, `${w.name}: no egress to ${what} (${protocol} ${port})`);
      }
    }
  }

  // The database accepts connections from Loanbook pods only.
  const db = policies.filter(({ o }) => o.spec?.podSelector.matchLabels?.['app.kubernetes.io/name'] === 'postgresql');
  if (db.length === 0) fail('networkpolicy', 'deploy/k8s', 'no policy restricts ingress to the database pods (app.kubernetes.io/name=postgresql)');
  for (const { m, o } of db) {
    const peers = (o.spec?.ingress ?? []).flatMap((r) => r.from ?? []);
    if (!o.spec?.policyTypes?.includes('Ingress') || (o.spec.ingress ?? []).some((r) => !r.from?.length)) {
      fail('networkpolicy', m, 'the database policy must restrict Ingress to listed sources');
    }
    for (const p of peers) {
      const selected = workloads.filter((w) => matchesSelector(p.podSelector, w.labels));
      if (p.ipBlock || !p.podSelector || selected.length === 0 || (p.namespaceSelector && !namespaceOf(p))) {
        fail('networkpolicy', m, 'the database may only be reached from Loanbook pods');
      }
    }
  }
}

function checkKustomizations(manifests: readonly Manifest[], kustomizations: readonly Manifest[], options: PolicyOptions, fail: Fail): void {
  if (kustomizations.length === 0) fail('kustomization', 'deploy/k8s', 'no kustomization.yaml');
  const listed = new Map<string, string>();
  for (const k of kustomizations) {
    const known = new Set(['apiVersion', 'kind', 'resources', 'images', 'labels', 'namespace']);
    for (const key of Object.keys(k.object)) if (!known.has(key)) fail('kustomization', k, `unexpected field ${key}`);
    if (basename(k.file) !== 'kustomization.yaml') fail('kustomization', k, 'must be named kustomization.yaml');
    for (const r of (k.object.resources ?? []) as string[]) {
      const path = join(dirname(k.file), r);
      if (r.includes('..') || !options.fileExists(path)) fail('kustomization', k, `resource ${r} does not exist inside ${dirname(k.file)}`);
      if (listed.has(path)) fail('kustomization', k, `${r} is also listed by ${String(listed.get(path))}`);
      listed.set(path, k.file);
    }
  }
  const files = new Set(manifests.filter((m) => !isKustomization(m)).map((m) => m.file));
  for (const file of files) {
    if (file.endsWith('.template.yaml') || file.startsWith('optional/')) continue;
    if (!listed.has(file)) fail('kustomization', file, 'is not listed in any kustomization.yaml (templates end in .template.yaml; extras go in optional/)');
  }
}

// ---------------------------------------------------------------------------------------
// Everything at once

export interface Report {
  readonly documents: number;
  readonly files: number;
  readonly kinds: Readonly<Record<string, number>>;
  readonly findings: readonly Finding[];
}

/** Loads `root`, validates every document's schema and runs every policy check. */
export async function validateManifestDirectory(root: string, app: AppFacts): Promise<Report> {
  const absolute = resolve(root);
  const { manifests, findings } = loadManifests(absolute);
  findings.push(...(await validateSchemas(manifests)));
  findings.push(...checkPolicies(manifests, { app, fileExists: (p) => existsSync(join(absolute, p)) }));
  const kinds: Record<string, number> = {};
  for (const m of manifests) kinds[String(m.object.kind)] = (kinds[String(m.object.kind)] ?? 0) + 1;
  return { documents: manifests.length, files: new Set(manifests.map((m) => m.file)).size, kinds, findings };
}
