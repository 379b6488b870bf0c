/**
 * Runs the demo end to end the way CI does: compile with tsc (the decorated service class needs
 * real decorator output), then `node --conditions=@x/source dist/main.js` against a temporary
 * store, with the local stand-ins' latency cut to a few ms so the suite stays quick.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisHandle } from '../../../packages/core/test/redis-server.ts';
import { freePort, redisUnavailable, startRedis } from '../../../packages/core/test/redis-server.ts';
import type { OperationRecord, PassFigures } from '../src/measure.ts';
import type { CrashReport } from '../src/scenarios/crash.ts';

const appDir = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = promisify(execFile);

interface DemoDocument {
  ok: boolean;
  problems: string[];
  local: boolean;
  models: string;
  store: { kind: string; label: string; tiers: boolean; owned: boolean };
  cold: PassFigures;
  warm: PassFigures;
  operations: OperationRecord[];
  ledgerCrash: CrashReport;
  storeStats: {
    store: { backend: string };
    overall: { hits: number; misses: number; entries: number; tokensSaved: number };
    /** Ledger records and other non-cache entries. */
    otherEntries: number | null;
    namespaces: Record<string, { hits: number; misses: number }>;
  };
}

interface DemoRun {
  code: number;
  stdout: string;
  stderr: string;
}

async function demo(args: string[], env: Record<string, string | undefined> = {}): Promise<DemoRun> {
  const childEnv: Record<string, string | undefined> = { ...process.env, DEMO_LATENCY_MS: '5', ...env };
  // Never reach a real provider from the tests, whatever the environment holds.
  delete childEnv.OPENAI_API_KEY;
  delete childEnv.ANTHROPIC_API_KEY;
  if (!('LLM_CACHE_URL' in env)) delete childEnv.LLM_CACHE_URL;
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      ['--conditions=@x/source', 'dist/main.js', ...args],
      {
        cwd: appDir,
        env: childEnv,
        maxBuffer: 16 * 1024 * 1024,
      },
    );
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? -1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

async function demoJson(args: string[], env: Record<string, string | undefined> = {}): Promise<DemoDocument> {
  const result = await demo(['--json', ...args], env);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as DemoDocument;
}

/** A killed process and its retry: each side effect happened once, the email was replayed. */
function expectCrashSurvived(crash: CrashReport): void {
  expect(crash.ok, crash.problems.join('\n')).toBe(true);
  expect(crash.first.exit).toBe('killed');
  expect(crash.first.started).toEqual(['post_announcement']);
  const email = crash.retry.outcomes.find((outcome) => outcome.tool === 'send_welcome_email')!;
  expect(email.source).toBe('replayed');
  expect(email.value.sentBy).toBe(crash.first.pid);
  const post = crash.retry.outcomes.find((outcome) => outcome.tool === 'post_announcement')!;
  expect(post).toMatchObject({ source: 'executed', attempt: 2, recovered: true });
  expect(crash.outbox.map((line) => [line.effect, line.pid])).toEqual([
    ['email', crash.first.pid],
    ['announcement', crash.retry.pid],
  ]);
}

/** The warm run was served from the cache: every lookup a hit, no model call, the same answers. */
function expectWarmFromCache(document: DemoDocument, level: string): void {
  expect(document.ok, document.problems.join('\n')).toBe(true);
  expect(document.local).toBe(true);
  expect(document.warm.calls).toBeGreaterThanOrEqual(25);
  expect(document.warm.hits).toBe(document.warm.calls);
  expect(document.warm.modelCalls).toBe(0);
  // The tools were called again by the frameworks, and the ledger served every call.
  expect(document.warm.toolCalls).toBeGreaterThanOrEqual(4);
  expect(document.warm.toolExecutions).toBe(0);
  expect(document.warm.inputTokensSaved + document.warm.outputTokensSaved).toBeGreaterThan(0);
  expect(document.warm.costSavedUsd).toBeGreaterThan(0);
  for (const operation of document.operations) {
    expect(operation.warm!.hits, `${operation.adapter} › ${operation.operation}`).toBe(operation.warm!.calls);
    expect(operation.warm!.servedBy).toEqual([level]);
    expect(operation.sameAnswer).toBe(true);
  }
}

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'llm-cache-demo-'));
  dirs.push(dir);
  return dir;
}

beforeAll(async () => {
  const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');
  try {
    await run(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: appDir });
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    throw new Error(`tsc -p apps/demo/tsconfig.build.json failed:\n${stdout}${stderr}`);
  }
}, 120_000);

afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('pnpm demo over SQLite', () => {
  it('runs cold then warm, and the warm run is served from the SQLite store', async () => {
    const dir = tempDir();
    const document = await demoJson([], { LLM_CACHE_DIR: dir });

    expect(document.store).toMatchObject({ kind: 'sqlite', tiers: false, owned: true });
    expect(existsSync(join(dir, 'demo.db'))).toBe(true);
    expect(document.cold.hits).toBe(0);
    expect(document.cold.modelCalls).toBeGreaterThan(0);
    expect(document.cold.toolExecutions).toBe(document.cold.toolCalls);
    expectWarmFromCache(document, 'sqlite');
    expectCrashSurvived(document.ledgerCrash);
    const adapters = new Set(document.operations.map((operation) => operation.adapter));
    expect([...adapters]).toEqual(['demo/ai-sdk', 'demo/langchain', 'demo/decorators']);

    // `llm-cache stats` read the same store: every lookup of both runs, nothing else.
    expect(document.storeStats.store.backend).toBe('sqlite');
    expect(document.storeStats.overall.hits).toBe(document.warm.hits);
    expect(document.storeStats.overall.misses).toBe(document.cold.calls);
    expect(document.storeStats.overall.entries).toBeGreaterThan(0);
    expect(document.storeStats.otherEntries).toBeGreaterThan(0);

    // Its own store is reset on the next run — entries, counters and the ledger's records alike.
    const again = await demoJson([], { LLM_CACHE_DIR: dir });
    expect(again.cold.hits).toBe(0);
    const { entries, hits, misses, tokensSaved } = document.storeStats.overall;
    expect(again.storeStats.overall).toMatchObject({ entries, hits, misses, tokensSaved });
    expect(again.storeStats.otherEntries).toBe(document.storeStats.otherEntries);
  });

  it('prints a table per adapter, the llm-cache stats output and a verdict', async () => {
    const result = await demo([], { LLM_CACHE_DIR: tempDir() });
    expect(result.code, result.stderr).toBe(0);
    const out = result.stdout;
    expect(out).toContain('LOCAL STAND-IN');
    for (const title of [
      'AI SDK — @x/ai-sdk-cache',
      'LangChain — @x/langchain-cache',
      'Decorators — @x/cache-decorators',
    ]) {
      expect(out).toContain(title);
    }
    for (const operation of [
      'generateText ×3',
      'streamText',
      'Output.object',
      'tool loop',
      'embedMany',
      'withCache(model).stream()',
      'CachedEmbeddings',
      '@cachedLlmCall introPage',
    ]) {
      expect(out).toContain(operation);
    }
    expect(out).toContain('Tool ledger — a crash and a retry');
    expect(out).toContain('each side effect reached the outbox exactly once');
    expect(out).toMatch(/\$ llm-cache stats --url sqlite:\/\//);
    // The CLI's report covers the ledger's counters too (its exact layout is the CLI's business).
    const cliOutput = out.slice(out.indexOf('$ llm-cache stats'));
    expect(cliOutput).toMatch(/NAMESPACE\s+ENTRIES/);
    expect(cliOutput).toMatch(/ledger/i);
    expect(out).toContain('OK: the warm run was served entirely from the cache.');
  });

  it('starts cold on every run in a shared store, and --keep shows the entries survived the restart', async () => {
    const url = `sqlite://${join(tempDir(), 'shared.db')}`;
    const first = await demoJson([], { LLM_CACHE_URL: url });
    expect(first.store.owned).toBe(false);

    // Only the demo's namespaces were cleared: the cold run misses again, the counters add up.
    const second = await demoJson([], { LLM_CACHE_URL: url });
    expect(second.cold.hits).toBe(0);
    // The stand-ins are deterministic: a new process computes the same answers.
    expect(second.operations.map((operation) => operation.sample)).toEqual(
      first.operations.map((operation) => operation.sample),
    );
    expectWarmFromCache(second, 'sqlite');
    expect(second.storeStats.overall.hits).toBe(first.warm.hits + second.warm.hits);

    // A new process that keeps the entries: even the "cold" run is served from the file.
    const kept = await demoJson(['--keep'], { LLM_CACHE_URL: url });
    expect(kept.cold.hits).toBe(kept.cold.calls);
    expect(kept.cold.modelCalls).toBe(0);
  });

  it('--tiers serves the warm run from the memory level in front of the store', async () => {
    const document = await demoJson(['--tiers'], { LLM_CACHE_DIR: tempDir() });
    expect(document.store.tiers).toBe(true);
    expectWarmFromCache(document, 'memory');
  });

  it('rejects what it cannot run with one line and exit code 2', async () => {
    const unknown = await demo(['--bogus']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr.trim()).toBe('demo: unknown option "--bogus" — run with --help for the options');

    const memory = await demo([], { LLM_CACHE_URL: 'memory://' });
    expect(memory.code).toBe(2);
    expect(memory.stderr).toMatch(/^demo: LLM_CACHE_URL "memory:\/\/" is not a store the demo can show/);

    const conflict = await demo(['--redis'], { LLM_CACHE_URL: 'sqlite://x.db' });
    expect(conflict.code).toBe(2);
    expect(conflict.stderr).toContain('--redis was given but LLM_CACHE_URL is "sqlite://x.db"');
  });
});

const redisSkip = redisUnavailable();

describe.skipIf(redisSkip !== undefined)('pnpm demo --redis', () => {
  let redis: RedisHandle;
  beforeAll(async () => {
    redis = await startRedis();
  }, 30_000);
  afterAll(async () => {
    await redis?.stop();
  });

  it('runs against a real redis-server and the warm run is served from Redis', async () => {
    const document = await demoJson(['--redis'], { LLM_CACHE_URL: `${redis.url}/0?prefix=demo-test:` });
    expect(document.store).toMatchObject({ kind: 'redis', tiers: false, owned: false });
    expectWarmFromCache(document, 'redis');
    expectCrashSurvived(document.ledgerCrash);
    expect(document.storeStats.store.backend).toBe('redis');
    expect(document.storeStats.overall.hits).toBe(document.warm.hits);
  });

  it('says in one line when Redis cannot be reached', async () => {
    const port = await freePort();
    const result = await demo(['--redis'], { LLM_CACHE_URL: `redis://127.0.0.1:${port}` });
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(
      /^demo: cannot reach the store Redis redis:\/\/127\.0\.0\.1:\d+: .* — start redis-server/,
    );
  });
});
