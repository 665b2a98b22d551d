/**
 * Validates deploy/k8s: every document against the Kubernetes schemas, then the policy
 * checks in k8s-checks.ts; when kubectl is on the PATH, also renders each kustomization
 * (`kubectl kustomize`) and checks it yields the documents its files hold.
 *
 *   npx tsx scripts/ci/k8s-validate.ts [dir]      (default deploy/k8s)
 *
 * Prints the documents by kind, every finding, and one result line; exits 1 on a finding.
 */
import { execFileSync } from 'node:child_process';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { loadManifests, loanbookFacts, validateManifestDirectory } from './k8s-checks.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

function kubectlAvailable(): boolean {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Renders each kustomization and compares the objects with the documents of the files it lists. */
function renderKustomizations(root: string): string[] {
  const problems: string[] = [];
  const { manifests } = loadManifests(root);
  for (const k of manifests.filter((m) => m.object.kind === 'Kustomization')) {
    const dir = join(root, dirname(k.file));
    const resources = (k.object.resources ?? []) as string[];
    const expected = manifests.filter((m) => resources.some((r) => join(dirname(k.file), r) === m.file)).length;
    try {
      const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      const rendered = parseAllDocuments(out).filter((d) => d.toJS() !== null).length;
      console.log(`kubectl kustomize ${relative(repo, dir) || '.'}: ${rendered} objects`);
      if (rendered !== expected) problems.push(`${k.file}: kustomize rendered ${rendered} objects, the listed files hold ${expected}`);
    } catch (e) {
      problems.push(`${k.file}: kubectl kustomize failed: ${(e as { stderr?: string }).stderr ?? String(e)}`);
    }
  }
  return problems;
}

async function main(): Promise<void> {
  const root = resolve(repo, process.argv[2] ?? 'deploy/k8s');
  const report = await validateManifestDirectory(root, loanbookFacts(repo));
  console.log(`${root}: ${report.documents} documents in ${report.files} files`);
  for (const [kind, n] of Object.entries(report.kinds).sort()) console.log(`  ${kind}: ${n}`);
  const problems = report.findings.map((f) => `[${f.rule}] ${f.where}: ${f.message}`);
  if (kubectlAvailable()) problems.push(...renderKustomizations(root));
  else console.log('kubectl not found: kustomize rendering not checked');
  for (const p of problems) console.log(`FAIL ${p}`);
  if (problems.length > 0) {
    console.log(`RESULT: FAILED: ${problems.length} problems in ${report.documents} Kubernetes documents`);
    process.exit(1);
  }
  console.log(`RESULT: OK: ${report.documents} Kubernetes documents valid against the 1.27 schemas and the deployment policy`);
}

await main();
