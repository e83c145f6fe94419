/**
 * render.ts — re-renders results.md and machine.md of a results directory from its
 * results.json (after the report format changed, say), and LATEST.md if the directory is the one
 * bench/results/latest points to. Touches nothing else.
 *
 *   node --import tsx bench/render.ts bench/results/<dir>
 */
import { existsSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { Results } from './bench.js';
import { renderMachine, renderResults } from './lib/report.js';

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: render.ts RESULTS_DIR\n');
  process.exit(2);
}
const results = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as Results;
results.discarded ??= [];
results.errors ??= [];
writeFileSync(join(dir, 'results.md'), renderResults(results, ''));
writeFileSync(join(dir, 'machine.md'), renderMachine(results));
const root = resolve(import.meta.dirname, 'results');
const latest = join(root, 'latest');
if (existsSync(latest) && readlinkSync(latest) === basename(resolve(dir)) && resolve(dir, '..') === root) {
  writeFileSync(join(root, 'LATEST.md'), renderResults(results, `${basename(resolve(dir))}/`));
}
process.stdout.write(`${join(dir, 'results.md')}\n`);
