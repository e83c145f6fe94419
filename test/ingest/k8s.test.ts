/**
 * Pod identity on received OTLP, as in a cluster: Kubernetes metadata from a fake API server
 * (the real client library and informers), a sender in its own network namespace whose
 * address is a pod IP (curl POSTing OTLP/JSON to the receiver on the "node" side of a veth
 * pair), a resource that names its pod by k8s.pod.uid, and the real Collector as the sink.
 */
import { execFileSync } from 'node:child_process';
import test from 'ava';
import { KubernetesMetadata } from '../../src/enrich/k8s.js';
import { ProcessCache } from '../../src/enrich/process.js';
import { OtlpReceiver } from '../../src/ingest/receiver.js';
import { Senders } from '../../src/ingest/senders.js';
import { collectorBinary } from '../helpers/collector.js';
import { FakeK8s, pod, replicaSet } from '../helpers/fakek8s.js';
import { need } from '../helpers/kernel.js';
import { createNetns } from '../helpers/netns.js';
import { sinkConfig, spansOf, startOtelcol } from '../helpers/otelcol.js';
import { freePort } from '../helpers/servers.js';

const why = (process.geteuid?.() !== 0 ? 'needs root (network namespaces)' : undefined) ?? (collectorBinary() ? undefined : '.tools/otelcol missing');

function body(name: string, resource: { key: string; value: { stringValue: string } }[]): string {
  return JSON.stringify({
    resourceSpans: [
      {
        resource: { attributes: resource },
        scopeSpans: [
          {
            spans: [
              { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', name, kind: 2, startTimeUnixNano: '1700000000000000001', endTimeUnixNano: '1700000000000000002' },
            ],
          },
        ],
      },
    ],
  });
}

test('a sender on a pod IP gets its pod identity; a resource naming its pod uid gets that pod; the sender’s own attributes win', async (t) => {
  if (!need(t, why)) return;
  const n = 200 + (process.pid % 50);
  const ns = createNetns(`sl-ingest-${process.pid}`);
  const hostIf = `slh${process.pid % 100000}`;
  const podIf = `slp${process.pid % 100000}`;
  const nodeIp = `10.${n}.7.1`;
  const podIp = `10.${n}.7.2`;
  const f = await FakeK8s.start();
  const sink = await startOtelcol(sinkConfig);
  let recv: OtlpReceiver | undefined;
  let m: KubernetesMetadata | undefined;
  try {
    execFileSync('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', podIf]);
    execFileSync('ip', ['link', 'set', podIf, 'netns', ns.name]);
    execFileSync('ip', ['addr', 'add', `${nodeIp}/30`, 'dev', hostIf]);
    execFileSync('ip', ['link', 'set', hostIf, 'up']);
    ns.run('ip', ['addr', 'add', `${podIp}/30`, 'dev', podIf]);
    ns.run('ip', ['link', 'set', podIf, 'up']);

    f.apply(replicaSet('shop', 'web-5d9f8c', 'rs-uid', { name: 'web', uid: 'deploy-uid' }));
    f.apply(pod({ namespace: 'shop', name: 'web-5d9f8c-abcde', uid: 'pod-web', ip: podIp, containers: { web: `containerd://${'b'.repeat(64)}` }, owner: { kind: 'ReplicaSet', name: 'web-5d9f8c', uid: 'rs-uid' } }));
    f.apply(pod({ namespace: 'jobs', name: 'batch-1', uid: 'pod-batch', ip: '10.244.9.9', containers: { worker: `containerd://${'c'.repeat(64)}` } }));
    m = new KubernetesMetadata({ nodeName: 'node-a', client: f.kubeConfig(), peers: false, syncTimeoutMs: 5000 });
    await m.start();
    const end = Date.now() + 10_000;
    while ((!m.podByIp(podIp) || !m.podByUid('pod-batch')) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));

    const senders = new Senders({ maxConnections: 64, maxSenders: 64, senderBytesPerSecond: 0, totalBytesPerSecond: 0 }, new ProcessCache({ maxProcesses: 64 }));
    senders.setKubernetes(m, 'prod');
    const port = await freePort();
    recv = new OtlpReceiver(
      { enabled: true, grpcAddress: '', httpAddress: `0.0.0.0:${port}`, maxRequestBytes: 1 << 20, queueBytes: 1 << 24, senderBytesPerSecond: 0, totalBytesPerSecond: 0, maxSenders: 64, tls: { certFile: '', keyFile: '' }, dedup: true },
      { traces: { url: `http://127.0.0.1:${sink.grpcPort}`, protocol: 'grpc', headers: {}, timeoutMs: 5000, compression: 'none', insecure: false } },
      { delayMs: 50 },
      senders,
    );
    await recv.start();

    // from inside the "pod": curl to the node address, as an SDK with OTEL_EXPORTER_OTLP_ENDPOINT=http://$(HOST_IP):4318 would
    // (spawned, not run synchronously: the receiver answering it lives on this event loop)
    const curl = ns.spawn('curl', ['-sS', '-m', '10', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'content-type: application/json', '--data-binary', body('from-pod', [{ key: 'service.name', value: { stringValue: 'mine' } }]), `http://${nodeIp}:${port}/v1/traces`]);
    let out = '';
    curl.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    curl.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((r) => curl.once('close', r));
    t.is(out, '200');
    // from this node, naming another pod by uid
    const r = await fetch(`http://127.0.0.1:${port}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: body('by-uid', [{ key: 'k8s.pod.uid', value: { stringValue: 'pod-batch' } }]),
    });
    t.is(r.status, 200);

    const spans = await sink.waitFor('traces.jsonl', (l) => {
      const s = spansOf(l);
      return s.length >= 2 ? s : undefined;
    });
    const a = spans.find((s) => s.span['name'] === 'from-pod')!.resource;
    t.deepEqual(a['service.name'], { stringValue: 'mine' }, 'never overwritten');
    t.deepEqual(a['k8s.namespace.name'], { stringValue: 'shop' });
    t.deepEqual(a['k8s.pod.name'], { stringValue: 'web-5d9f8c-abcde' });
    t.deepEqual(a['k8s.pod.uid'], { stringValue: 'pod-web' });
    t.deepEqual(a['k8s.deployment.name'], { stringValue: 'web' });
    t.deepEqual(a['k8s.container.name'], { stringValue: 'web' });
    t.deepEqual(a['container.id'], { stringValue: 'b'.repeat(64) });
    t.deepEqual(a['k8s.cluster.name'], { stringValue: 'prod' });
    const b = spans.find((s) => s.span['name'] === 'by-uid')!.resource;
    t.deepEqual(b['k8s.namespace.name'], { stringValue: 'jobs' });
    t.deepEqual(b['k8s.pod.name'], { stringValue: 'batch-1' });
    t.deepEqual(b['service.namespace'], { stringValue: 'jobs' });
  } finally {
    await recv?.stop(1000);
    await m?.stop();
    await f.close();
    await sink.stop();
    try {
      execFileSync('ip', ['link', 'del', hostIf], { stdio: 'ignore' });
    } catch {
      /* gone with the namespace */
    }
    ns.remove();
  }
});
