import { readFileSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import * as core from '@x/cache-core';
import { costOf, createCache, DEFAULT_PRICES } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { beforeEach, describe, expect, it } from 'vitest';
import { ledgerApi } from '../src/ledger.ts';
import { cli, DAY, fixedClock, HOUR, INTRO_USAGE, json, type Seeded, useSeededStore } from './helpers.ts';

/** The tool ledger of @x/cache-core, when this core has it (typed loosely: the CLI does not depend on it). */
const createToolLedger = (core as unknown as Record<string, any>).createToolLedger;

const fixture = useSeededStore();
let path: string;
let url: string;
let seeded: Seeded;
beforeEach(() => {
  ({ path, url, seeded } = fixture);
});

describe('llm-cache stats', () => {
  it('reports entries, bytes, hits, misses, hit rate, tokens and cost saved per tier and namespace (json)', async () => {
    const result = await cli(['stats', '--url', url, '--format', 'json']);
    expect(result.code).toBe(0);
    const report = json(result.stdout);
    const saved = 3 * costOf(INTRO_USAGE, DEFAULT_PRICES);
    expect(report.store).toEqual({ url, backend: 'sqlite' });
    expect(report.overall).toMatchObject({
      entries: 7,
      hits: 3,
      misses: 1,
      hitRate: 0.75,
      staleHits: 0,
      errors: 0,
      evictions: 0,
      inputTokensSaved: 300,
      outputTokensSaved: 2700,
      tokensSaved: 3000,
    });
    expect(report.overall.costSavedUsd).toBeCloseTo(saved, 12);
    expect(report.overall.bytes).toBeGreaterThan(256);
    expect(Object.keys(report.tiers)).toEqual(['embeddings', 'responses', 'templates', 'tools']);
    expect(report.tiers.responses).toMatchObject({ entries: 3, hits: 3, misses: 1, hitRate: 0.75, sets: 4 });
    expect(report.tiers.tools).toMatchObject({ entries: 2, hits: 0, misses: 0, hitRate: 0 });
    expect(report.namespaces['tenant-a']).toMatchObject({ entries: 1 });
    expect(report.namespaces.default).toMatchObject({ entries: 5, hits: 3, tokensSaved: 3000 });
    expect(report.tiers.tools.bytes).toBe(
      report.namespaces['tenant-a'].bytes + report.namespaces['tenant-b'].bytes,
    );
    expect(report.scopes).toHaveLength(5);
    expect(report.levels.memory).toMatchObject({ hits: 3 });
    expect(report.expiredAwaitingPrune).toBe(1);
    expect(report.otherEntries).toBe(1);
  });

  it('prints a readable table by default', async () => {
    const result = await cli(['stats', '--url', url]);
    expect(result.code).toBe(0);
    const out = result.stdout;
    expect(out).toContain(`Store: ${url} (sqlite)`);
    expect(out).toMatch(/Overall: 7 entries, [\d.]+ (B|KiB) · 3 hits \/ 1 misses \(75\.0% hit rate\)/);
    expect(out).toMatch(/Saved: +3,000 tokens \(300 in \/ 2,700 out\), \$0\.\d{4}/);
    expect(out).toMatch(
      /^TIER +ENTRIES +BYTES +HITS +MISSES +HIT RATE +STALE +ERRORS +EVICTIONS +TOKENS SAVED +COST SAVED$/m,
    );
    expect(out).toMatch(/^responses +3 +[\d.]+ (B|KiB) +3 +1 +75\.0% +0 +0 +0 +3,000 +\$0\.\d{4}$/m);
    expect(out).toMatch(/^tools +2 .* +- +0 +0 +0 +0 +\$0\.00$/m);
    expect(out).toMatch(/^NAMESPACE +ENTRIES/m);
    expect(out).toMatch(/^tenant-b +1 /m);
    expect(out).toMatch(/^LEVEL +HITS +ERRORS +SKIPPED +EVICTIONS\nmemory +3 +0 +0 +0$/m);
    expect(out).toContain('Note: expired entries waiting to be pruned: 1 (llm-cache prune).');
    expect(out).toContain('Note: records in the store that are not cache entries (ledger, …): 1.');
  });

  it('narrows to one tier or namespace, and skips sizes with --no-sizes', async () => {
    const tools = json((await cli(['stats', '--url', url, '--tier', 'tools', '--format', 'json'])).stdout);
    expect(Object.keys(tools.tiers)).toEqual(['tools']);
    expect(Object.keys(tools.namespaces)).toEqual(['tenant-a', 'tenant-b']);
    expect(tools.overall.entries).toBe(2);
    const tenant = json(
      (await cli(['stats', '--url', url, '--namespace', 'tenant-a', '--format', 'json'])).stdout,
    );
    expect(tenant.overall.entries).toBe(1);
    const counters = json((await cli(['stats', '--url', url, '--no-sizes', '--format', 'json'])).stdout);
    expect(counters.overall).toMatchObject({ entries: null, bytes: null, hits: 3 });
    expect((await cli(['stats', '--url', url, '--no-sizes'])).stdout).not.toContain('ENTRIES');
  });

  it('counts store failures (kept per level) in the overall errors', async () => {
    const store = sqliteBackend({ path });
    // What an application records when its store times out or its circuit breaker skips calls:
    // each failure per level, and the 3 on a tier's keys in that tier's scope too.
    await store.incrementCounters('l:redis', { errors: 4, skipped: 2 });
    await store.incrementCounters('t:responses:default', { errors: 3 });
    await store.close();
    const report = json((await cli(['stats', '--url', url, '--format', 'json'])).stdout);
    expect(report.overall.errors).toBe(4);
    expect(report.tiers.responses.errors).toBe(3);
    expect(report.levels.redis).toEqual({ hits: 0, errors: 4, skipped: 2, evictions: 0 });
    const table = (await cli(['stats', '--url', url])).stdout;
    expect(table).toContain('· 4 errors ·');
    expect(table).toMatch(/^redis +0 +4 +2 +0$/m);
  });

  it.skipIf(!ledgerApi())(
    'shows idempotency keys by state and tool executions vs replays, per task with --task-id',
    async () => {
      const store = sqliteBackend({ path });
      const cache = createCache({ store, statsFlushInterval: 0 });
      const ledger = createToolLedger({
        cache,
        tools: { send_email: { kind: 'write' }, git_status: { kind: 'read', ttl: '1h' } },
      });
      const call = (tool: string, input: unknown, taskId: string, execute: () => Promise<unknown>) =>
        ledger.executeOrReplay({ tool, input, scope: { taskId }, execute }).catch(() => undefined);
      // run-1 sends an email and checks git; its retry replays both. run-2 fails to send another.
      for (const taskId of ['run-1', 'run-1']) {
        await call('send_email', { to: 'ada' }, taskId, async () => 'sent');
        await call('git_status', {}, taskId, async () => ({ exitCode: 0, stdout: 'clean', stderr: '' }));
      }
      await call('send_email', { to: 'bob' }, 'run-2', async () => {
        throw new Error('smtp down');
      });
      await cache.close();

      const table = (await cli(['stats', '--url', url])).stdout;
      expect(table).toMatch(
        /^Idempotency keys\nNAMESPACE +SUCCEEDED +PENDING +FAILED +ABANDONED +TOTAL\ndefault +1 +0 +1 +0 +2$/m,
      );
      expect(table).toMatch(/^NAMESPACE +TOOL +CALLS +EXECUTIONS +REPLAYS +FAILURES +REPLAY RATE$/m);
      expect(table).toMatch(/^default +git_status +2 +1 +1 +0 +50\.0%$/m);
      expect(table).toMatch(/^default +send_email +3 +2 +1 +1 +33\.3%$/m);
      expect(table).toMatch(/^default +total +5 +3 +2 +1 +40\.0%$/m);

      const all = json((await cli(['stats', '--url', url, '--format', 'json'])).stdout);
      expect(all.ledger.source).toBe('ledger');
      expect(all.ledger.namespaces.default.records).toEqual({
        succeeded: 1,
        pending: 0,
        failed: 1,
        abandoned: 0,
        total: 2,
      });
      expect(all.ledger.namespaces.default.totals).toMatchObject({ calls: 5, executions: 3, replays: 2 });
      expect(all.ledger.namespaces.default.replayRate).toBeCloseTo(0.4, 12);

      const one = json((await cli(['stats', '--url', url, '--task-id', 'run-2', '--format', 'json'])).stdout);
      expect(one.taskId).toBe('run-2');
      expect(one.ledger.namespaces.default.records).toMatchObject({ succeeded: 0, failed: 1, total: 1 });
      expect(one.ledger.namespaces.default.tools).toEqual({
        send_email: expect.objectContaining({ calls: 1, executions: 1, replays: 0, failures: 1 }),
      });
      expect(one.notes[0]).toMatch(/cache counters cover the whole store/);
      const oneTable = (await cli(['stats', '--url', url, '--task-id', 'run-1'])).stdout;
      expect(oneTable).toContain('Idempotency keys for task run-1');
      expect(oneTable).toMatch(/^default +send_email +2 +1 +1 +0 +50\.0%$/m);
      const unknown = await cli(['stats', '--url', url, '--task-id', 'run-9']);
      expect(unknown.code).toBe(0);
      expect(unknown.stdout).toContain('No idempotency keys or tool calls recorded for task run-9.');

      // Ledger records are not cache entries: clearing the cache leaves them.
      await cli(['clear', '--url', url, '--yes']);
      const after = json((await cli(['stats', '--url', url, '--format', 'json'])).stdout);
      expect(after.ledger.namespaces.default.records.total).toBe(2);
    },
  );

  it('lists counters of other writers as stored', async () => {
    const store = sqliteBackend({ path });
    await store.incrementCounters('jobs:nightly', { done: 5, skipped: 1 });
    await store.close();
    const table = (await cli(['stats', '--url', url])).stdout;
    expect(table).toMatch(/^Other counters in the store\nSCOPE +DONE +SKIPPED\njobs:nightly +5 +1$/m);
    const report = json((await cli(['stats', '--url', url, '--format', 'json'])).stdout);
    expect(report.counters).toEqual({ 'jobs:nightly': { done: 5, skipped: 1 } });
  });
});

describe('llm-cache ls', () => {
  it('lists live keys parsed into tier, namespace and name, with size, age and TTL left', async () => {
    const result = await cli(['ls', '--url', url]);
    expect(result.code).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^TIER +NAMESPACE +NAME +HASH +SIZE +AGE +TTL$/);
    // Sorted by key; the expired entry is gone, the stale one is kept for its grace period.
    expect(lines.slice(1).map((line) => line.split(/ +/).slice(0, 3).join(' '))).toEqual([
      'embeddings default embed',
      'responses default grace_answer',
      'responses default intro_page',
      'responses default word_problem',
      'templates default lesson',
      'tools tenant-a git_status',
      'tools tenant-b git_status',
    ]);
    const intro = lines.find((line) => line.includes('intro_page'))!;
    expect(intro).toContain(seeded.intro.slice(-43, -31));
    expect(intro).toMatch(/ 2h 0m +6d 21h$/);
    expect(lines.find((line) => line.includes('grace_answer'))).toMatch(/ stale 1h 0m$/);
    expect(lines.find((line) => line.includes('tenant-a'))).toMatch(/ \d+ B +2h 0m +6d 21h$/);
    // Records that are not cache entries (the ledger's) only with --all.
    const all = await cli(['ls', '--url', url, '--all']);
    expect(all.stdout).toMatch(/^- +- +ledger-record:run-1:step-1 +3 B +\? +never$/m);
    expect(all.stdout.trimEnd().split('\n')).toHaveLength(9);
  });

  it('gives exact times and sizes as JSON', async () => {
    const result = await cli(['ls', '--url', url, '--format', 'json']);
    const listing = json(result.stdout);
    expect(listing).toMatchObject({ total: 7, truncated: false });
    const intro = listing.entries.find((entry: { key: string }) => entry.key === seeded.intro);
    expect(intro).toMatchObject({
      tier: 'responses',
      namespace: 'default',
      name: 'intro_page',
      hash: seeded.intro.slice(-43),
      createdAt: seeded.t0,
      expiresAt: seeded.t0 + 7 * DAY,
      storeExpiresAt: seeded.t0 + 7 * DAY,
      stale: false,
      tags: ['math'],
      codec: 'json',
    });
    expect(intro.ageMs).toBeGreaterThanOrEqual(2 * HOUR);
    expect(intro.ttlMs).toBeLessThanOrEqual(7 * DAY - 2 * HOUR);
    expect(intro.ttlMs + intro.ageMs).toBe(7 * DAY);
    const stale = listing.entries.find((entry: { key: string }) => entry.key === seeded.stale);
    expect(stale).toMatchObject({
      stale: true,
      expiresAt: seeded.t0 + HOUR,
      storeExpiresAt: seeded.t0 + 3 * HOUR,
    });
  });

  it('filters by prefix, tier and namespace, and limits', async () => {
    const prefix = json(
      (await cli(['ls', 'responses/default:intro', '--url', url, '--format', 'json'])).stdout,
    );
    expect(prefix.entries.map((entry: { key: string }) => entry.key)).toEqual([seeded.intro]);
    const tier = json((await cli(['ls', '--url', url, '--tier', 'tools', '--format', 'json'])).stdout);
    expect(tier.entries.map((entry: { key: string }) => entry.key)).toEqual([seeded.toolA, seeded.toolB]);
    const both = json(
      (await cli(['ls', '--url', url, '--tier', 'tools', '--namespace', 'tenant-b', '--format', 'json']))
        .stdout,
    );
    expect(both.entries.map((entry: { key: string }) => entry.key)).toEqual([seeded.toolB]);
    const namespace = json(
      (await cli(['ls', '--url', url, '--namespace', 'tenant-a', '--format', 'json'])).stdout,
    );
    expect(namespace.total).toBe(1);
    const limited = await cli(['ls', '--url', url, '--limit', '2']);
    expect(limited.stdout.trimEnd().split('\n')).toHaveLength(4);
    expect(limited.stdout).toContain('… 5 more of 7 (--limit 0 shows all)');
    const limitedJson = json((await cli(['ls', '--url', url, '--limit', '2', '--format', 'json'])).stdout);
    expect(limitedJson).toMatchObject({ total: 7, truncated: true });
    expect(limitedJson.entries).toHaveLength(2);
    expect((await cli(['ls', 'nothing-here', '--url', url])).stdout).toBe('No entries.\n');
  });
});

describe('reading commands and the LRU order', () => {
  it('ls, inspect and export leave the last-access times (and so the eviction order) alone', async () => {
    const accessed = () => {
      const db = new DatabaseSync(path, { readOnly: true });
      try {
        return db.prepare('SELECT key, accessed_at FROM cache_entries ORDER BY key').all();
      } finally {
        db.close();
      }
    };
    const before = accessed();
    expect(before.length).toBeGreaterThan(5);
    expect((await cli(['ls', '--url', url, '--all'])).code).toBe(0);
    expect((await cli(['inspect', seeded.intro, '--url', url])).code).toBe(0);
    expect((await cli(['export', `${path}.jsonl`, '--url', url])).code).toBe(0);
    // The seeding app wrote everything two hours ago; a read counted as a use would be "now".
    expect(accessed()).toEqual(before);
  });

  it.skipIf(!ledgerApi())('stats reads ledger records without changing the file', async () => {
    // A tool ledger that ran two hours ago: idempotency records and per-task history.
    const clock = fixedClock(seeded.t0);
    const store = sqliteBackend({ path, clock });
    const cache = createCache({ store, clock, statsFlushInterval: 0 });
    const ledger = createToolLedger({ cache, clock, tools: { send_email: { kind: 'write' } } });
    for (const taskId of ['run-1', 'run-1', 'run-2']) {
      await ledger.executeOrReplay({
        tool: 'send_email',
        input: { to: taskId },
        scope: { taskId },
        execute: async () => 'sent',
      });
    }
    await cache.close();
    const accessed = () => {
      const db = new DatabaseSync(path, { readOnly: true });
      try {
        return db
          .prepare("SELECT key, accessed_at FROM cache_entries WHERE key GLOB '~ledger/*' ORDER BY key")
          .all();
      } finally {
        db.close();
      }
    };
    const rows = accessed();
    expect(rows.some((row) => String(row.key).includes(':idem:'))).toBe(true);
    expect(rows.some((row) => String(row.key).includes(':hist:'))).toBe(true);
    const bytes = readFileSync(path);
    for (const args of [[], ['--task-id', 'run-1'], ['--format', 'json', '--task-id', 'run-2']]) {
      const result = await cli(['stats', '--url', url, ...args]);
      expect(result.code, args.join(' ')).toBe(0);
      expect(accessed(), args.join(' ')).toEqual(rows);
      expect(readFileSync(path).equals(bytes), args.join(' ')).toBe(true);
    }
    const report = json((await cli(['stats', '--url', url, '--format', 'json'])).stdout);
    expect(report.ledger.namespaces.default.records).toMatchObject({ succeeded: 2, total: 2 });
  });
});

describe('llm-cache inspect', () => {
  it('shows header, tags, age, TTL left, size, usage and the value, by key or by hash prefix', async () => {
    const hash = seeded.intro.slice(-43, -31);
    for (const input of [seeded.intro, hash, 'responses/default:intro_page:']) {
      const result = await cli(['inspect', input, '--url', url]);
      expect(result.code, input).toBe(0);
      const out = result.stdout;
      expect(out).toContain(`key        ${seeded.intro}\n`);
      expect(out).toContain('tier       responses\nnamespace  default\nname       intro_page\n');
      expect(out).toMatch(/^size {7}\d+ B stored · payload \d+ B json · format v1$/m);
      expect(out).toContain(`created    ${new Date(seeded.t0).toISOString()} (2h 0m ago)`);
      expect(out).toContain(`expires    ${new Date(seeded.t0 + 7 * DAY).toISOString()} (in 6d 21h)`);
      expect(out).toContain('tags       math\n');
      expect(out).toMatch(/^usage {6}100 in \/ 900 out tokens · gpt-4o-mini · saves \$0\.\d{4} per hit$/m);
      expect(out).toContain('value\n{\n  "text": "Fractions are parts of a whole."\n}\n');
    }
  });

  it('previews binary, typed arrays, Map / Set / Date / bigint, and stale entries', async () => {
    const binary = await cli(['inspect', seeded.toolA, '--url', url]);
    expect(binary.stdout).toContain('value\n<256 bytes> 00 01 02 03');
    expect(binary.stdout).toContain('3f … (192 more bytes)');
    const full = await cli(['inspect', seeded.toolA, '--url', url, '--full']);
    expect(full.stdout).toContain(' fd fe ff\n');
    const vector = await cli(['inspect', seeded.embedding, '--url', url]);
    expect(vector.stdout).toContain('value\nFloat32Array(3) [ 0.25, -1.5, 3 ]');
    const rich = await cli(['inspect', seeded.template, '--url', url]);
    expect(rich.stdout).toContain('2024-05-01T10:00:00.000Z');
    expect(rich.stdout).toContain("Set(2) { 'a', 'b' }");
    expect(rich.stdout).toContain("Map(1) { 'x' => 1 }");
    expect(rich.stdout).toContain('12345678901234567890n');
    const stale = await cli(['inspect', seeded.stale, '--url', url]);
    expect(stale.stdout).toContain(
      `expires    ${new Date(seeded.t0 + HOUR).toISOString()} (stale for 1h 0m, kept for its grace period until ${new Date(seeded.t0 + 3 * HOUR).toISOString()})`,
    );
    const other = await cli(['inspect', seeded.other, '--url', url]);
    expect(other.code).toBe(1);
    expect(other.stdout).toMatch(/^header +unreadable: /m);
  });

  it('cuts long previews at --max-chars and reports everything as JSON', async () => {
    const cut = await cli(['inspect', seeded.intro, '--url', url, '--max-chars', '10']);
    expect(cut.stdout).toContain('value\n{\n  "text"… (');
    expect(cut.stdout).toContain('more characters; --full shows all)');
    const result = await cli(['inspect', seeded.toolA, '--url', url, '--format', 'json']);
    const report = json(result.stdout);
    expect(report).toMatchObject({
      key: seeded.toolA,
      tier: 'tools',
      namespace: 'tenant-a',
      name: 'git_status',
      tags: ['git'],
      storedTags: ['tools/tenant-a#git'],
      createdAt: seeded.t0,
      expiresAt: seeded.t0 + 7 * DAY,
      codec: 'json-tagged',
      truncated: true,
      usage: null,
      decodeError: null,
    });
    expect(report.preview).toMatch(/^<256 bytes> 00 01/);
  });

  it('never cuts an emoji (a surrogate pair) in half', async () => {
    const cache = createCache({ store: sqliteBackend({ path }), memory: false, statsFlushInterval: 0 });
    const value = { text: 'Hello 🌍 world' };
    await cache.set({ name: 'greeting', request: 1 }, value);
    const key = cache.key({ name: 'greeting', request: 1 });
    await cache.close();
    const whole = JSON.stringify(value, null, 2);
    // --max-chars ends between the two halves of 🌍: the preview stops before it.
    const max = whole.indexOf('🌍') + 1;
    const kept = whole.slice(0, max - 1);
    const suffix = `… (${whole.length - kept.length} more characters; --full shows all)`;
    const args = ['inspect', key, '--url', url, '--max-chars', String(max)];
    const report = json((await cli([...args, '--format', 'json'])).stdout);
    expect(report.truncated).toBe(true);
    expect(report.preview).toBe(`${kept}${suffix}`);
    expect(report.preview.isWellFormed()).toBe(true);
    const table = await cli(args);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain(`value\n${kept}${suffix}\n`);
    expect(table.stdout).not.toContain('\uFFFD');
    // One more code unit takes the whole pair.
    const after = json((await cli([...args.slice(0, -1), String(max + 1), '--format', 'json'])).stdout);
    expect(after.preview).toBe(
      `${whole.slice(0, max + 1)}… (${whole.length - max - 1} more characters; --full shows all)`,
    );
    expect(after.preview).toContain('🌍');
  });

  it.each([
    ['a family (ZWJ sequence)', '👨‍👩‍👧', 3],
    ['a flag (two regional indicators)', '🇫🇷', 2],
    ['a letter and its combining accent', 'e\u0301', 1],
  ])('never cuts %s in half', async (_, cluster, into) => {
    const cache = createCache({ store: sqliteBackend({ path }), memory: false, statsFlushInterval: 0 });
    const value = `Bonjour ${cluster} tout le monde`;
    await cache.set({ name: 'cluster', request: 1 }, value);
    const key = cache.key({ name: 'cluster', request: 1 });
    await cache.close();
    const whole = JSON.stringify(value, null, 2);
    // --max-chars ends `into` code units inside the cluster: the preview stops before all of it.
    const max = whole.indexOf(cluster) + into;
    const report = json(
      (await cli(['inspect', key, '--url', url, '--max-chars', String(max), '--format', 'json'])).stdout,
    );
    expect(report.preview).toBe(`"Bonjour … (${whole.length - 9} more characters; --full shows all)`);
    const whole1 = json(
      (
        await cli([
          'inspect',
          key,
          '--url',
          url,
          '--max-chars',
          String(9 + cluster.length),
          '--format',
          'json',
        ])
      ).stdout,
    );
    expect(whole1.preview.startsWith(`"Bonjour ${cluster}…`)).toBe(true);
  });

  it("takes a hash that starts with '-' as the key, not as options", async () => {
    const cache = createCache({ store: sqliteBackend({ path }), memory: false, statsFlushInterval: 0 });
    let request = 0;
    while (!cache.key({ name: 'dash', request }).split(':')[2]!.startsWith('-')) request++;
    await cache.set({ name: 'dash', request }, 'found me');
    const hash = cache.key({ name: 'dash', request }).split(':')[2]!;
    await cache.close();
    const inspected = await cli(['inspect', hash.slice(0, 10), '--url', url]);
    expect(inspected.code).toBe(0);
    expect(inspected.stdout).toContain('"found me"');
    const invalidated = await cli(['invalidate', '--key', hash.slice(0, 10), '--url', url]);
    expect(invalidated.stdout).toBe('Invalidated 1 entry.\n');
  });

  it('exits 1 with one line for a missing or ambiguous key', async () => {
    const missing = await cli(['inspect', 'responses/default:nope', '--url', url]);
    expect(missing).toMatchObject({ code: 1, stdout: '' });
    expect(missing.stderr).toBe(
      'llm-cache: no live entry matches "responses/default:nope" — list keys with llm-cache ls\n',
    );
    const expired = await cli(['inspect', seeded.expired, '--url', url]);
    expect(expired.code).toBe(1);
    const ambiguous = await cli(['inspect', 'tools/', '--url', url]);
    expect(ambiguous.code).toBe(1);
    expect(ambiguous.stderr).toMatch(
      /^llm-cache: "tools\/" matches several entries \(.*\) — give more of the key\n$/,
    );
  });
});
