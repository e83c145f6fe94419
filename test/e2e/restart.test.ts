/**
 * Crash and restart (issue 10): `kill -9` of the agent under traffic leaves no BPF program
 * loaded, does not disturb the application, and a new agent picks up a keep-alive
 * connection that was opened before it started (roles inferred from the first bytes).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { startAgentProcess, type AgentProcess } from '../helpers/agentproc.js';
import { progIdsHeldBy, stillLoaded } from '../helpers/bpf.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { NODE, startNodeServer } from '../helpers/servers.js';

test.serial('kill -9 under load: nothing left attached, the app unaffected, a restart picks up existing connections', async (t) => {
  if (!need(t, kernelUnavailable())) return;
  const srv = await startNodeServer();
  const dir = mkdtempSync(join(tmpdir(), 'sl-restart-'));
  writeFileSync(join(dir, 'c.yaml'), `filter:\n  ports:\n    include: [${srv.port}]\n`);
  // one keep-alive connection, a request every 20 ms for 8 s, all answers checked
  const client = spawn(
    NODE,
    [
      '-e',
      `const http = require('node:http'); const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
       let n = 0, ok = 0; const ports = new Set();
       const tick = () => http.get({ host: '127.0.0.1', port: ${srv.port}, path: '/ok/tick' + n++, agent }, (r) => { ports.add(r.socket.localPort); r.resume(); r.on('end', () => { if (r.statusCode === 200) ok++; }); });
       const iv = setInterval(tick, 20);
       setTimeout(() => { clearInterval(iv); setTimeout(() => { console.log(JSON.stringify({ n, ok, connections: ports.size })); process.exit(0); }, 300); }, 16000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  client.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<void>((r) => client.once('exit', () => r()));
  let first: AgentProcess | undefined;
  let second: AgentProcess | undefined;
  let secondCode: number | null | undefined;
  try {
    await new Promise((r) => setTimeout(r, 500)); // the connection exists before any agent
    first = await startAgentProcess({}, ['--config', join(dir, 'c.yaml')]);
    const held = progIdsHeldBy(first.pid);
    t.true(held.size >= 2, 'the agent holds its probes');
    // spans are printed as trace trees (held briefly for their root): poll, do not guess a delay
    const ticks = (a: { stdout(): string }): number => a.stdout().split('\n').filter((l) => /SERVER .* GET \/ok\/tick\d+ 200/.test(l)).length;
    const waitTicks = async (a: { stdout(): string }, n: number): Promise<void> => {
      for (const end = Date.now() + 5000; Date.now() < end && ticks(a) < n; ) await new Promise((r) => setTimeout(r, 100));
    };
    await waitTicks(first, 1);
    t.regex(first.stdout(), /SERVER .* GET \/ok\/tick\d+ 200/, 'spans from a connection that predates the agent');
    process.kill(first.pid, 'SIGKILL');
    await first.stop();
    t.deepEqual(await stillLoaded(held), [], 'kill -9 leaves no BPF program loaded or attached');

    second = await startAgentProcess({}, ['--config', join(dir, 'c.yaml')]);
    await waitTicks(second, 10);
    const lines = second.stdout().split('\n').filter((l) => /SERVER .* GET \/ok\/tick\d+ 200/.test(l));
    secondCode = await second.stop();
    t.true(lines.length >= 10, `the restarted agent sees the same keep-alive connection: ${lines.length} spans`);
    t.is(secondCode, 0);
  } finally {
    // ava throws on a failed assertion: never leave an agent (or the client) running
    await first?.stop();
    if (second && secondCode === undefined) await second.stop();
    await done;
    await srv.stop();
  }
  const r = JSON.parse(out) as { n: number; ok: number; connections: number };
  t.is(r.ok, r.n, 'every request of the application succeeded throughout');
  t.is(r.connections, 1, 'one connection, opened before the agents');
});
