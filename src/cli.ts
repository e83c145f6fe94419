#!/usr/bin/env node
/**
 * cli.ts — the `sidelight` command: `run` (the agent), `check` (can it run here, and why
 * not), `map` (the running agent's service map), `--help`, `--version`. Parses arguments with commander, loads the config (bad
 * config: a message naming the key, exit 2, nothing attached), and turns SIGINT/SIGTERM
 * into a clean stop (flush, detach, exit 0).
 */
import { Command, CommanderError, Option } from 'commander';
import { Agent } from './agent.js';
import { runCheck, formatReport } from './check.js';
import { ConfigError, describeConfig, loadConfig, type Config } from './config.js';
import { log, setLogLevel } from './log.js';
import { SidelightNativeError } from './native.js';
import { fetchMap, MAP_FORMATS, renderMap, type MapFormat } from './servicemap.js';
import { AGENT_VERSION } from './version.js';

function loadOrExit(file: string | undefined): Config {
  try {
    return loadConfig({ ...(file ? { file } : {}), env: process.env });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`sidelight: invalid configuration\n${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
}

function explain(e: unknown): string {
  if (e instanceof SidelightNativeError) {
    const hint =
      e.errno === 1 || e.errno === 13
        ? '\n  permission denied: run as root, or grant CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH (see README)'
        : '';
    return `${e.step}: ${e.message}${hint}\n  run \`sidelight check\` for details`;
  }
  return e instanceof Error ? e.message : String(e);
}

/** A listen address as a place to connect to: the wildcard addresses mean this host. */
function loopbackFor(address: string): string {
  return address.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
}

async function run(opts: { config?: string; output?: string }): Promise<void> {
  const config = loadOrExit(opts.config);
  if (opts.output !== undefined) config.export.file = opts.output; // the flag wins over export.file
  setLogLevel(config.log.level);
  log.info(`sidelight ${AGENT_VERSION} starting`);
  // settings that differ from the defaults at info (describeConfig marks them "(from …)"), all at debug
  for (const line of describeConfig(config).split('\n')) {
    if (line.includes('(from ') || line.startsWith('export.traces =')) log.info(`config: ${line}`);
    else log.debug(`config: ${line}`);
  }
  if (!config.export.traces) {
    log.info(
      process.env.OTEL_SDK_DISABLED?.toLowerCase() === 'true'
        ? 'export disabled (OTEL_SDK_DISABLED=true)'
        : 'no OTLP endpoint configured: printing spans here as trace trees (set OTEL_EXPORTER_OTLP_ENDPOINT to export)',
    );
  }
  let agent: Agent;
  try {
    agent = new Agent(config);
  } catch (e) {
    process.stderr.write(`sidelight: cannot start: ${explain(e)}\n`);
    process.exit(1);
  }
  let stopping = false;
  const stop = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    log.info(`${sig}: flushing and detaching`);
    agent.stop().then(
      () => process.exit(0),
      (e: unknown) => {
        log.error(`stop failed: ${explain(e)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  try {
    await agent.start();
  } catch (e) {
    process.stderr.write(`sidelight: cannot start: ${explain(e)}\n`);
    await agent.stop().catch(() => {});
    process.exit(1);
  }
}

export async function main(argv: string[]): Promise<void> {
  const program = new Command();
  program
    .name('sidelight')
    .description('Sidecar-less eBPF observability: HTTP requests seen by the kernel, as OpenTelemetry spans')
    .version(AGENT_VERSION, '-v, --version')
    .showHelpAfterError()
    .exitOverride();
  program
    .command('run')
    .description('run the agent (prints spans, or exports them when an OTLP endpoint is configured)')
    .option('-c, --config <file>', 'YAML config file (see config/default.yaml)')
    .option('-o, --output <file>', 'also write spans to FILE as OTLP JSON lines (the Collector file exporter format; export.file)')
    .action(run);
  program
    .command('check')
    .description('tell whether the agent can run on this machine, and why not')
    .option('-c, --config <file>', 'YAML config file')
    .option('--json', 'print the report as JSON')
    .action((opts: { config?: string; json?: boolean }) => {
      const config = loadOrExit(opts.config);
      const report = runCheck(config);
      process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}\n`);
      process.exitCode = report.canRun ? 0 : 1;
    });
  program
    .command('map')
    .description("print the running agent's service map (from its health server's GET /map)")
    .option('-c, --config <file>', 'YAML config file (for health.address)')
    .option('-a, --address <host:port>', 'health server address (default: health.address, 0.0.0.0/[::] read as loopback)')
    .addOption(new Option('-f, --format <format>', 'output format').choices([...MAP_FORMATS]).default('text'))
    .action(async (opts: { config?: string; address?: string; format: MapFormat }) => {
      const address = opts.address ?? loopbackFor(loadOrExit(opts.config).health.address);
      try {
        process.stdout.write(renderMap(await fetchMap(address), opts.format));
      } catch (e) {
        process.stderr.write(`sidelight map: ${(e as Error).message}\n`);
        process.exitCode = 1;
      }
    });
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode);
    throw e;
  }
}

await main(process.argv);
