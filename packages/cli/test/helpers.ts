import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Cache, CacheBackend, Clock } from '@x/cache-core';
import { createCache } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { afterAll, beforeEach } from 'vitest';

export const BIN = fileURLToPath(new URL('../src/bin.ts', import.meta.url));
export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the real binary in a child process, as a shell user would: `node --conditions=@x/source
 * src/bin.ts …` (Node strips the types; no build needed). LLM_CACHE_* variables of the developer's
 * shell are dropped so they cannot leak into a test.
 */
export function cli(
  args: readonly string[],
  options: { env?: Record<string, string | undefined>; input?: string | Buffer; cwd?: string } = {},
): Promise<CliResult> {
  const env: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(process.env))
    if (!name.startsWith('LLM_CACHE_')) env[name] = value;
  Object.assign(env, options.env);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=@x/source', BIN, ...args], {
      env,
      cwd: options.cwd ?? process.cwd(),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({
        code,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      }),
    );
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
  });
}

/** A fresh directory under os.tmpdir(); removed by `cleanup()`. */
export function tempDirs(): { make(): string; cleanup(): void } {
  const made: string[] = [];
  return {
    make() {
      const dir = mkdtempSync(join(tmpdir(), 'llm-cache-cli-'));
      made.push(dir);
      return dir;
    },
    cleanup() {
      for (const dir of made) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function fixedClock(at: number): Clock {
  return { now: () => at };
}

export const INTRO = { name: 'intro_page', request: { subject: 'math', topic: 'fractions', grade: 5 } };
export const INTRO_USAGE = { inputTokens: 100, outputTokens: 900, model: 'gpt-4o-mini' };
export const BINARY = Uint8Array.from({ length: 256 }, (_, i) => i);
export const VECTOR = new Float32Array([0.25, -1.5, 3]);
export const RICH = {
  when: new Date('2024-05-01T10:00:00Z'),
  seen: new Set(['a', 'b']),
  index: new Map<string, number>([['x', 1]]),
  big: 12345678901234567890n,
};

/** Storage keys of what `seedApp` wrote, for assertions. */
export interface Seeded {
  t0: number;
  intro: string;
  wordProblem: string;
  expired: string;
  stale: string;
  embedding: string;
  toolA: string;
  toolB: string;
  template: string;
  /** A record that is not a cache entry (as the idempotency ledger would write). */
  other: string;
}

/**
 * Plays an application that used the cache two hours ago (its clock is fixed at `t0`): entries in
 * several tiers and namespaces, binary and rich values, TTLs, grace and tags, 3 hits and 1 miss
 * with saved usage. An hour-long entry has expired; one with grace is stale but kept.
 */
export async function seedApp(store: CacheBackend, t0: number): Promise<Seeded> {
  const cache: Cache = createCache({ store, clock: fixedClock(t0), statsFlushInterval: 0 });
  await cache.set(
    INTRO,
    { text: 'Fractions are parts of a whole.' },
    { ttl: '7d', tags: ['math'], usage: INTRO_USAGE },
  );
  for (let i = 0; i < 3; i++) await cache.getOrCompute(INTRO, () => ({ text: 'recomputed' }));
  const wordProblem = { name: 'word_problem', request: { subject: 'math', id: 1 } };
  await cache.getOrCompute(wordProblem, () => 'Two trains leave…', { ttl: '1d', tags: ['math'] });
  const expired = { name: 'old_answer', request: 1 };
  await cache.set(expired, 'gone', { ttl: '1h' });
  const stale = { name: 'grace_answer', request: 1 };
  await cache.set(stale, 'still served if the model is down', { ttl: '1h', grace: '2h' });
  const embeddings = cache.tier('embeddings');
  await embeddings.set({ name: 'embed', request: 'hello' }, VECTOR);
  const toolsA = cache.tier('tools').withNamespace('tenant-a');
  const toolsB = cache.tier('tools').withNamespace('tenant-b');
  await toolsA.set({ name: 'git_status', request: {} }, BINARY, { ttl: '7d', tags: ['git'] });
  await toolsB.set({ name: 'git_status', request: {} }, new Uint8Array([9, 9, 9]), {
    ttl: '7d',
    tags: ['git'],
  });
  const templates = cache.tier('templates');
  await templates.set({ name: 'lesson', request: { v: 2 } }, RICH, { ttl: '30d' });
  const other = 'ledger-record:run-1:step-1';
  await store.set(other, { value: new Uint8Array([1, 2, 3]) });
  const seeded: Seeded = {
    t0,
    intro: cache.key(INTRO),
    wordProblem: cache.key(wordProblem),
    expired: cache.key(expired),
    stale: cache.key(stale),
    embedding: embeddings.key({ name: 'embed', request: 'hello' }),
    toolA: toolsA.key({ name: 'git_status', request: {} }),
    toolB: toolsB.key({ name: 'git_status', request: {} }),
    template: templates.key({ name: 'lesson', request: { v: 2 } }),
    other,
  };
  await cache.close();
  return seeded;
}

/** The entry lines of an export (not the header, whose timestamp differs, nor counters), sorted by key. */
export function exportedRecords(text: string): Array<Record<string, unknown>> {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((record) => 'key' in record)
    .sort((a, b) => String(a.key).localeCompare(String(b.key)));
}

/** The counter lines of an export, by scope. */
export function exportedCounters(text: string): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const record = JSON.parse(line) as { scope?: string; counters?: Record<string, number> };
    if (record.scope !== undefined && record.counters) out[record.scope] = record.counters;
  }
  return out;
}

export function json<T = any>(text: string): T {
  return JSON.parse(text) as T;
}

export interface SeededStore {
  dir: string;
  path: string;
  url: string;
  seeded: Seeded;
}

/**
 * Gives every test its own SQLite store in os.tmpdir(), seeded by an "application" that ran two
 * hours ago (`seedApp`). Registers the vitest hooks; read the fields inside a test.
 */
export function useSeededStore(): SeededStore {
  const dirs = tempDirs();
  const state = {} as SeededStore;
  beforeEach(async () => {
    state.dir = dirs.make();
    state.path = join(state.dir, 'llm-cache.db');
    state.url = `sqlite://${state.path}`;
    const t0 = Date.now() - 2 * HOUR;
    state.seeded = await seedApp(sqliteBackend({ path: state.path, clock: fixedClock(t0) }), t0);
  });
  afterAll(() => dirs.cleanup());
  return state;
}

/** Live keys of a SQLite store, sorted. */
export async function liveKeys(path: string): Promise<string[]> {
  const store = sqliteBackend({ path });
  const keys: string[] = [];
  for await (const key of store.keys()) keys.push(key);
  await store.close();
  return keys.sort();
}
