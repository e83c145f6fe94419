/**
 * version.ts — the agent's name and version, read once from package.json.
 */
import { readFileSync } from 'node:fs';
import { repoRoot } from './paths.js';

export const AGENT_NAME = 'sidelight';
export const AGENT_VERSION: string = (
  JSON.parse(readFileSync(`${repoRoot()}/package.json`, 'utf8')) as { version: string }
).version;
