/**
 * cdp.ts (bench) — a minimal Chrome DevTools Protocol client for the V8 CPU profiler of a Node
 * process started with `--inspect=127.0.0.1:PORT`, over Node's global WebSocket.
 *
 * Why not `node --cpu-prof`: the profiler's SIGPROF interrupts the kernel's BPF verifier, whose
 * program load then fails with EAGAIN after libbpf's retries (seen on kernel 6.18 with the agent's
 * object, at sampling intervals from 1 ms to 100 ms). Started over the inspector once the agent is
 * ready, the profiler samples only the measured load, after every program is loaded and attached.
 *
 * One connection per CpuProfiler; close() ends it. The profile has the .cpuprofile format.
 */

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class CpuProfiler {
  private ws: WebSocket | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  /** Connect to the first target listed by the inspector on 127.0.0.1:port. */
  async connect(port: number, timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    let url: string | undefined;
    while (!url) {
      try {
        const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { webSocketDebuggerUrl?: string }[];
        url = list[0]?.webSocketDebuggerUrl;
      } catch {
        /* not listening yet */
      }
      if (!url) {
        if (Date.now() > end) throw new Error(`no inspector target on 127.0.0.1:${port}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const ws = new WebSocket(url);
    this.ws = ws;
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener('open', () => resolve(), { once: true });
      ws.addEventListener('error', () => reject(new Error(`inspector websocket ${url} failed`)), { once: true });
    });
    ws.addEventListener('message', (ev: MessageEvent) => {
      const msg = JSON.parse(String(ev.data)) as { id?: number; result?: unknown; error?: { message: string } };
      if (msg.id === undefined) return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(msg.error.message));
      else p.resolve(msg.result);
    });
    ws.addEventListener('close', () => {
      for (const p of this.pending.values()) p.reject(new Error('inspector connection closed'));
      this.pending.clear();
    });
  }

  private send<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const ws = this.ws;
    if (!ws) return Promise.reject(new Error('not connected'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Start sampling every intervalUs microseconds. */
  async start(intervalUs = 1000): Promise<void> {
    await this.send('Profiler.enable');
    await this.send('Profiler.setSamplingInterval', { interval: intervalUs });
    await this.send('Profiler.start');
  }

  /** Stop and return the profile (.cpuprofile JSON object). */
  async stop(): Promise<unknown> {
    const r = await this.send<{ profile: unknown }>('Profiler.stop');
    return r.profile;
  }

  close(): void {
    this.ws?.close();
    this.ws = undefined;
  }
}
