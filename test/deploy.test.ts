/**
 * deploy/: the manifests validated against the Kubernetes API schemas (kubernetes-models:
 * the OpenAPI schemas of the Kubernetes API, compiled to validators), and the Helm chart run
 * through a real Helm (built from the Go module proxy by scripts/helm.sh): `helm lint`, and
 * `helm template` rendering objects that pass the same schemas and agree with the plain
 * manifest on what matters (RBAC rules, capabilities, probes, mounts).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import test from 'ava';
import { parseAllDocuments } from 'yaml';
import { repoRoot } from '../src/paths.js';
import { need } from './helpers/kernel.js';

type Obj = { apiVersion: string; kind: string; metadata: { name: string }; [k: string]: any };

const HELM = `${repoRoot()}/.tools/helm`;
const CHART = `${repoRoot()}/deploy/chart/sidelight`;

function parseDocs(text: string, where: string): Obj[] {
  const docs = parseAllDocuments(text);
  for (const d of docs) if (d.errors.length) throw new Error(`${where}: ${d.errors.map((e) => e.message).join('; ')}`);
  return docs.map((d) => d.toJS() as Obj).filter(Boolean);
}

/** Validate one object against its Kubernetes schema; the error message when invalid. */
async function schemaErrors(o: Obj): Promise<string | undefined> {
  const [group, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : ['', o.apiVersion];
  const path = group ? `kubernetes-models/${group}/${version}/${o.kind}` : `kubernetes-models/${version}/${o.kind}`;
  const mod = (await import(path)) as Record<string, new (d: unknown) => { validate(): void }>;
  const Model = mod[o.kind];
  if (!Model) return `${o.kind}: no schema in ${path}`;
  try {
    new Model(o).validate();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

async function assertValid(t: import('ava').ExecutionContext, objs: Obj[], where: string): Promise<void> {
  for (const o of objs) t.is(await schemaErrors(o), undefined, `${where}: ${o.kind}/${o.metadata.name}`);
}

test('the schema check catches what the API server would reject', async (t) => {
  const bad: Obj = { apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: 'x' }, spec: { template: { spec: { containers: [{ name: 1 }] } } } };
  const err = await schemaErrors(bad);
  t.regex(err ?? '', /must have required property selector/);
  t.regex(err ?? '', /containers\/0\/name must be string/);
});

test('deploy/kubernetes/sidelight.yaml: every object valid against the Kubernetes schemas', async (t) => {
  const objs = parseDocs(readFileSync(`${repoRoot()}/deploy/kubernetes/sidelight.yaml`, 'utf8'), 'sidelight.yaml');
  t.true(objs.length >= 5);
  await assertValid(t, objs, 'sidelight.yaml');
});

test('deploy/chart: helm lint passes; helm template renders valid objects that match the plain manifest', async (t) => {
  if (!need(t, existsSync(HELM) ? undefined : 'helm not built (bash scripts/helm.sh)')) return;
  const lint = execFileSync(HELM, ['lint', '--strict', CHART], { encoding: 'utf8' });
  t.regex(lint, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  const rendered = parseDocs(execFileSync(HELM, ['template', 'sidelight', CHART, '--namespace', 'sidelight'], { encoding: 'utf8' }), 'helm template');
  await assertValid(t, rendered, 'helm template');
  const plain = parseDocs(readFileSync(`${repoRoot()}/deploy/kubernetes/sidelight.yaml`, 'utf8'), 'sidelight.yaml');
  const byKind = (objs: Obj[], kind: string): Obj => objs.find((o) => o.kind === kind)!;
  t.deepEqual(
    rendered.map((o) => o.kind).sort(),
    plain.map((o) => o.kind).filter((k) => k !== 'Namespace').sort(),
    'the chart renders the same objects (the namespace comes from helm install --namespace)',
  );
  const norm = (r: { apiGroups: string[]; resources: string[]; verbs: string[] }[]) => r.map((x) => ({ ...x, resources: [...x.resources].sort(), verbs: [...x.verbs].sort() }));
  t.deepEqual(norm(byKind(rendered, 'ClusterRole').rules), norm(byKind(plain, 'ClusterRole').rules), 'same RBAC rules');
  const container = (o: Obj) => o.spec.template.spec.containers[0];
  const [rc, pc] = [container(byKind(rendered, 'DaemonSet')), container(byKind(plain, 'DaemonSet'))];
  t.deepEqual(rc.securityContext, pc.securityContext, 'same capabilities and security context');
  t.deepEqual(rc.livenessProbe.httpGet, pc.livenessProbe.httpGet);
  // the overload test (reliability-outage) holds /healthz to this timeout at 2% of a CPU
  t.is(pc.livenessProbe.timeoutSeconds, 5);
  t.is(rc.livenessProbe.timeoutSeconds, 5);
  t.deepEqual(rc.readinessProbe.httpGet, pc.readinessProbe.httpGet);
  t.deepEqual(
    rc.volumeMounts.map((v: { mountPath: string }) => v.mountPath).sort(),
    pc.volumeMounts.map((v: { mountPath: string }) => v.mountPath).sort(),
  );
  const rs = byKind(rendered, 'DaemonSet').spec.template.spec;
  t.true(rs.hostPID);
  t.deepEqual(rc.env.find((e: { name: string }) => e.name === 'NODE_NAME'), { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
});
