/**
 * log.ts — the agent's own log: leveled, one line per message on stderr, so stdout stays
 * free for span lines. A single module-level level; set once at start.
 */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
const ORDER: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

let current: LogLevel = 'info';

export function setLogLevel(level: LogLevel): void {
  current = level;
}

function write(level: LogLevel, msg: string): void {
  if (ORDER[level] > ORDER[current]) return;
  process.stderr.write(`${new Date().toISOString()} ${level.padEnd(5)} ${msg}\n`);
}

export const log = {
  error: (m: string) => write('error', m),
  warn: (m: string) => write('warn', m),
  info: (m: string) => write('info', m),
  debug: (m: string) => write('debug', m),
};
