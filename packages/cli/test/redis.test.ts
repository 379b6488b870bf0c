import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import * as core from '@x/cache-core';
import { createCache } from '@x/cache-core';
import { redisBackend } from '@x/cache-core/redis';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { type RedisHandle, redisUnavailable, startRedis } from '../../core/test/redis-server.ts';
import { run } from '../src/cli.ts';
import { ledgerApi } from '../src/ledger.ts';
import {
  BINARY,
  cli,
  DAY,
  exportedRecords,
  fixedClock,
  HOUR,
  INTRO,
  json,
  RICH,
  type Seeded,
  seedApp,
  tempDirs,
  VECTOR,
} from './helpers.ts';

/** The tool ledger of @x/cache-core, when this core has it (the CLI does not depend on it by name). */
const createToolLedger = (core as unknown as Record<string, any>).createToolLedger;

// Skips loudly without redis-server (and fails instead under LLM_CACHE_REQUIRE_REDIS=1, as in CI).
const unavailable = redisUnavailable();

describe.skipIf(unavailable)('llm-cache on Redis', () => {
  const dirs = tempDirs();
  let redis: RedisHandle;
  let prefix: string;
  let url: string;
  let seeded: Seeded;

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
    dirs.cleanup();
  });

  /** Each test gets its own key prefix on the shared server, seeded like the SQLite suites. */
  beforeEach(async () => {
    prefix = `cli-${randomUUID().slice(0, 8)}:`;
    const parsed = new URL(redis.url);
    parsed.searchParams.set('prefix', prefix);
    url = parsed.toString();
    const t0 = Date.now() - 2 * HOUR;
    seeded = await seedApp(redisBackend({ url: redis.url, keyPrefix: prefix, clock: fixedClock(t0) }), t0);
  });

  function appCache(options: { memory?: boolean } = {}) {
    return createCache({
      store: redisBackend({ url: redis.url, keyPrefix: prefix }),
      ...(options.memory ? {} : { memory: false }),
      statsFlushInterval: 0,
    });
  }

  it('reports stats from the counters applications flushed to Redis', async () => {
    const report = json((await cli(['stats', '--url', url, '--format', 'json'])).stdout);
    expect(report.store.backend).toBe('redis');
    expect(report.overall).toMatchObject({
      entries: 7,
      hits: 3,
      misses: 1,
      hitRate: 0.75,
      tokensSaved: 3000,
    });
    expect(report.tiers.tools).toMatchObject({ entries: 2 });
    expect(report.namespaces['tenant-b']).toMatchObject({ entries: 1 });
    expect(report.otherEntries).toBe(1);
    expect(report.expiredAwaitingPrune).toBeNull();
    const table = await cli(['stats', '--url', url]);
    expect(table.stdout).toMatch(/^responses +3 +[\d.]+ (B|KiB) +3 +1 +75\.0% /m);
  });

  it('lists and inspects entries with their age and TTL left', async () => {
    const listing = json((await cli(['ls', '--url', url, '--all', '--format', 'json'])).stdout);
    expect(listing.entries.map((entry: { key: string }) => entry.key)).toEqual(
      [
        seeded.embedding,
        seeded.other,
        seeded.stale,
        seeded.intro,
        seeded.wordProblem,
        seeded.template,
        seeded.toolA,
        seeded.toolB,
      ].sort(),
    );
    const table = await cli(['ls', '--url', url, '--tier', 'responses']);
    expect(table.stdout).toMatch(/intro_page .* 2h 0m +6d 21h$/m);
    expect(table.stdout).toMatch(/grace_answer .* stale 1h 0m$/m);
    const inspected = await cli(['inspect', 'tools/tenant-a:git', '--url', url]);
    expect(inspected.code).toBe(0);
    expect(inspected.stdout).toContain(`key        ${seeded.toolA}\n`);
    expect(inspected.stdout).toContain(
      `expires    ${new Date(seeded.t0 + 7 * DAY).toISOString()} (in 6d 21h)`,
    );
    expect(inspected.stdout).toContain('tags       git\n');
    expect(inspected.stdout).toContain('value\n<256 bytes> 00 01 02');
  });

  it('moves a store between SQLite and Redis exactly, in both directions', async () => {
    const fromRedis = await cli(['export', '--url', url]);
    expect(fromRedis.code).toBe(0);
    const records = exportedRecords(fromRedis.stdout);
    expect(records).toHaveLength(8);

    const sqlitePath = join(dirs.make(), 'copy.db');
    const toSqlite = await cli(['import', '--url', `sqlite://${sqlitePath}`], { input: fromRedis.stdout });
    expect(toSqlite.stdout).toBe('Imported 8 entries and the statistics counters.\n');
    const fromSqlite = await cli(['export', '--url', `sqlite://${sqlitePath}`]);
    expect(exportedRecords(fromSqlite.stdout)).toEqual(records);

    const back = new URL(url);
    back.searchParams.set('prefix', `${prefix}copy:`);
    const toRedis = await cli(['import', '-', '--url', back.toString()], { input: fromSqlite.stdout });
    expect(toRedis.stdout).toBe('Imported 8 entries and the statistics counters.\n');
    expect(exportedRecords((await cli(['export', '--url', back.toString()])).stdout)).toEqual(records);

    const copy = createCache({
      store: redisBackend({ url: redis.url, keyPrefix: `${prefix}copy:` }),
      memory: false,
      statsFlushInterval: 0,
    });
    expect(
      await copy.tier('tools').withNamespace('tenant-a').get({ name: 'git_status', request: {} }),
    ).toEqual(BINARY);
    expect(await copy.tier('embeddings').get({ name: 'embed', request: 'hello' })).toEqual(VECTOR);
    expect(await copy.tier('templates').get({ name: 'lesson', request: { v: 2 } })).toEqual(RICH);
    expect(await copy.tier('tools').withNamespace('tenant-b').invalidateTags(['git'])).toBe(1);
    await copy.close();
    const sqlite = createCache({
      store: sqliteBackend({ path: sqlitePath }),
      memory: false,
      statsFlushInterval: 0,
    });
    expect(await sqlite.getResult(INTRO)).toMatchObject({
      value: { text: 'Fractions are parts of a whole.' },
    });
    await sqlite.close();
  });

  it('moves the statistics counters from SQLite to Redis with the entries', async () => {
    const sqlitePath = join(dirs.make(), 'app.db');
    const t0 = Date.now() - 2 * HOUR;
    await seedApp(sqliteBackend({ path: sqlitePath, clock: fixedClock(t0) }), t0);
    const source = `sqlite://${sqlitePath}`;
    const before = json((await cli(['stats', '--url', source, '--format', 'json'])).stdout);
    const exported = await cli(['export', '--url', source]);
    const target = new URL(url);
    target.searchParams.set('prefix', `${prefix}moved:`);
    const imported = await cli(['import', '--url', target.toString()], { input: exported.stdout });
    expect(imported.stdout).toBe('Imported 8 entries and the statistics counters.\n');
    const after = json((await cli(['stats', '--url', target.toString(), '--format', 'json'])).stdout);
    expect(after.overall).toMatchObject({ hits: 3, misses: 1, tokensSaved: 3000 });
    // Everything but the bytes, which each store counts its own way, and the cost's last digits
    // (Redis keeps floats in decimal).
    const counted = (report: { overall: Record<string, unknown> }) => ({
      ...report.overall,
      bytes: 0,
      entries: 0,
      costSavedUsd: 0,
    });
    expect(counted(after)).toEqual(counted(before));
    expect(after.overall.costSavedUsd).toBeCloseTo(before.overall.costSavedUsd, 12);
    expect(after.tiers.responses.hits).toBe(before.tiers.responses.hits);
    expect(after.levels).toEqual(before.levels);
  });

  it('invalidations reach the memory level of an application running against the same Redis', async () => {
    const app = appCache({ memory: true });
    await app.ready();
    let computed = 0;
    const compute = () => {
      computed++;
      return { text: 'recomputed' };
    };
    // Read once so the entry sits in the application's memory level.
    await app.getOrCompute(INTRO, compute);
    expect((await app.getOrComputeResult(INTRO, compute)).level).toBe('memory');
    const result = await cli(['invalidate', '--tag', 'math', '--url', url]);
    expect(result.stdout).toBe('Invalidated 2 entries.\n');
    await vi.waitFor(async () => expect(await app.has(INTRO)).toBe(false), { timeout: 5000 });
    await app.getOrCompute(INTRO, compute);
    expect(computed).toBe(1);

    await app.getOrCompute({ name: 'fresh', request: 1 }, () => 'x');
    expect(await app.has({ name: 'fresh', request: 1 })).toBe(true);
    await cli(['clear', '--tier', 'responses', '--url', url, '--yes']);
    await vi.waitFor(async () => expect(await app.has({ name: 'fresh', request: 1 })).toBe(false), {
      timeout: 5000,
    });
    await app.close();
  });

  it('import makes running applications drop the memory-level copies of the keys it replaces', async () => {
    const file = join(dirs.make(), 'backup.jsonl');
    expect((await cli(['export', file, '--url', url])).code).toBe(0);
    const app = appCache({ memory: true });
    await app.ready();
    const exported = await app.get(INTRO);
    // Changed after the export: the new value is in Redis and in the app's memory level.
    await app.set(INTRO, { text: 'changed after the export' });
    expect((await app.getResult(INTRO))?.level).toBe('memory');
    // Restoring the backup: the app must read the restored value, not its memory-level copy.
    expect((await cli(['import', file, '--url', url])).code).toBe(0);
    await vi.waitFor(async () => expect(await app.get(INTRO)).toEqual(exported), { timeout: 5000 });
    await app.close();
  });

  it('leaves no connection open when the export file cannot be written', async () => {
    const admin = new Redis(redis.url);
    const clients = async () =>
      String(await admin.call('CLIENT', 'LIST'))
        .trim()
        .split('\n').length;
    const before = await clients();
    const quiet = { write: () => true, once: () => quiet, isTTY: false };
    const code = await run(['export', join(dirs.make(), 'missing', 'out.jsonl'), '--url', url], {
      stdout: quiet as never,
      stderr: quiet as never,
      env: {},
    });
    expect(code).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await clients()).toBe(before);
    admin.disconnect();
  });

  it('prunes entries that expired, and clears only its own key prefix', async () => {
    const pruned = await cli(['prune', '--url', url, '--format', 'json']);
    expect(json(pruned.stdout)).toEqual({ removed: 1 });
    const neighbour = new URL(url);
    neighbour.searchParams.set('prefix', `${prefix}other:`);
    await cli(['warm', '-', '--url', neighbour.toString()], { input: '{"name":"keep","value":1}\n' });
    const cleared = await cli(['clear', '--all', '--url', url, '--yes']);
    expect(cleared.code).toBe(0);
    expect(json((await cli(['ls', '--url', url, '--format', 'json'])).stdout).total).toBe(0);
    expect(json((await cli(['stats', '--url', url, '--format', 'json'])).stdout).overall.hits).toBe(0);
    expect(json((await cli(['ls', '--url', neighbour.toString(), '--format', 'json'])).stdout).total).toBe(1);
  });

  it("with an empty key prefix, stats and clear --all leave other applications' c:* keys alone", async () => {
    // `?prefix=` shares the keyspace with other applications: database 9 of the test server.
    const db = new URL(redis.url);
    db.pathname = '/9';
    const id = randomUUID().slice(0, 8);
    const other = new Redis(db.toString());
    await other.set(`c:session:${id}`, 'alice');
    await other.hset(`c:cart:${id}`, { qty: '2' });
    await other.hset(`c:t:profile:${id}`, { name: 'bob' });
    const t0 = Date.now() - 2 * HOUR;
    await seedApp(redisBackend({ url: db.toString(), keyPrefix: '', clock: fixedClock(t0) }), t0);
    const bare = `${db.toString()}?prefix=`;

    const stats = await cli(['stats', '--url', bare, '--format', 'json']);
    expect(stats.stderr).toBe('');
    expect(stats.code).toBe(0);
    expect(json(stats.stdout).overall).toMatchObject({ hits: 3, misses: 1 });
    expect(JSON.stringify(json(stats.stdout).counters)).not.toContain(id);

    const cleared = await cli(['clear', '--all', '--yes', '--url', bare]);
    expect(cleared.code).toBe(0);
    expect(json((await cli(['stats', '--url', bare, '--format', 'json'])).stdout).overall.hits).toBe(0);
    expect(await other.get(`c:session:${id}`)).toBe('alice');
    expect(await other.hgetall(`c:cart:${id}`)).toEqual({ qty: '2' });
    expect(await other.hgetall(`c:t:profile:${id}`)).toEqual({ name: 'bob' });
    await other.del(`c:session:${id}`, `c:cart:${id}`, `c:t:profile:${id}`);
    other.disconnect();
  });

  it('refuses a Redis URL whose path is not a database number, or without a host or //, in one line with exit 2', async () => {
    // (The path first: before the fix the others would reach for localhost:6379.)
    const named = await cli(['stats', '--url', `${redis.url}/my-app`]);
    expect(named.stderr).toBe(
      `llm-cache: invalid URL "${redis.url}/my-app" — the path is the database number (redis://host:6379/2), not "/my-app"; use ?prefix=app: to keep applications apart\n`,
    );
    expect(named.code).toBe(2);
    for (const bad of [
      'redis:///:s3cret@127.0.0.1:1',
      'redis:/:s3cret@127.0.0.1:1',
      'redis:user:s3cret@127.0.0.1:1',
      'rediss:/:s3cret@127.0.0.1',
    ]) {
      const result = await cli(['ls', '--url', bad]);
      expect(result.code, bad).toBe(2);
      expect(result.stderr, bad).toMatch(
        /^llm-cache: invalid URL "redis?s?:\/{0,3}\*\*\*@127\.0\.0\.1(:1)?" — expected rediss?:\/\/\[:password@\]host:port.*\n$/,
      );
      expect(result.stderr + result.stdout, bad).not.toContain('s3cret');
    }
  });

  it('warms entries that the application then hits', async () => {
    const input = `${JSON.stringify({ name: 'faq', request: { q: 'refunds' }, value: 'Within 30 days.', ttl: '1d' })}\n`;
    const result = await cli(['warm', '-', '--url', url], { input });
    expect(result.stdout).toBe('Warmed 1 entry.\n');
    const app = appCache();
    const hit = await app.getOrComputeResult({ name: 'faq', request: { q: 'refunds' } }, () => 'computed');
    expect(hit).toMatchObject({ hit: true, value: 'Within 30 days.' });
    await app.close();
  });

  it.skipIf(!ledgerApi())('reports the tool ledger kept in Redis, per task', async () => {
    const cache = createCache({
      store: redisBackend({ url: redis.url, keyPrefix: prefix }),
      statsFlushInterval: 0,
    });
    const ledger = createToolLedger({ cache, tools: { deploy: { kind: 'write' } } });
    for (const taskId of ['release-1', 'release-1', 'release-2']) {
      await ledger.executeOrReplay({
        tool: 'deploy',
        input: { v: taskId },
        scope: { taskId },
        execute: async () => 'ok',
      });
    }
    await cache.close();
    const all = json((await cli(['stats', '--url', url, '--format', 'json'])).stdout);
    expect(all.ledger.namespaces.default.records).toMatchObject({ succeeded: 2, total: 2 });
    expect(all.ledger.namespaces.default.tools.deploy).toMatchObject({ calls: 3, executions: 2, replays: 1 });
    const one = await cli(['stats', '--url', url, '--task-id', 'release-1']);
    expect(one.stdout).toMatch(/^default +deploy +2 +1 +1 +0 +50\.0%$/m);
  });
});
