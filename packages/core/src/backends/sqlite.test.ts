import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createCache } from '../cache.ts';
import { CacheError } from '../errors.ts';
import type { SqliteBackend, SqliteBackendOptions } from './sqlite.ts';
import { sqliteBackend } from './sqlite.ts';
import { loadSqliteDriver } from './sqlite-driver.ts';
import { MIGRATIONS, migrate, schemaVersion } from './sqlite-schema.ts';

function fakeClock(start = 1_000_000) {
  let now = start;
  return {
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

const text = (value: string) => new TextEncoder().encode(value);
const decode = (value: Uint8Array | undefined) =>
  value === undefined ? undefined : new TextDecoder().decode(value);
const bytes = (size: number) => new Uint8Array(size).fill(3);

async function keysOf(backend: SqliteBackend, prefix?: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of backend.keys(prefix === undefined ? {} : { prefix })) keys.push(key);
  return keys.sort();
}

let dir: string;
let path: string;
const open: SqliteBackend[] = [];
const raw: Database.Database[] = [];

/** Opens a backend on the test's file, closed after the test. */
function backend(options: SqliteBackendOptions = {}): SqliteBackend {
  const instance = sqliteBackend({ path, ...options });
  open.push(instance);
  return instance;
}

/** A plain connection to inspect the file the way another process would. */
function inspect(options: Database.Options = {}): Database.Database {
  const db = new Database(path, options);
  raw.push(db);
  return db;
}

/** The indexes of cache_entries: each one costs every write that touches its columns. */
function indexesOf(db: Database.Database): string[] {
  return db
    .prepare<[], string>("SELECT name FROM pragma_index_list('cache_entries') ORDER BY name")
    .pluck()
    .all();
}

/**
 * Another connection, on a thread of its own, that takes the file's write lock (running `sql`
 * under it, if given) and keeps it `holdMs` before committing: the lock is really held while this
 * thread blocks in SQLite's busy wait. Resolves once the lock is taken; `released` once it is not.
 */
async function holdWriteLock(holdMs: number, sql = ''): Promise<{ released: Promise<void> }> {
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
    const Database = require(workerData.driver);
    const db = new Database(workerData.path);
    db.exec('BEGIN IMMEDIATE');
    db.exec(workerData.sql);
    parentPort.postMessage('locked');
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.holdMs);
    db.exec('COMMIT');
    db.close();`,
    {
      eval: true,
      workerData: { driver: createRequire(import.meta.url).resolve('better-sqlite3'), path, sql, holdMs },
    },
  );
  const released = new Promise<void>((resolve, reject) => {
    worker.once('error', reject);
    worker.once('exit', () => resolve());
  });
  await new Promise<void>((resolve, reject) => {
    worker.once('message', () => resolve());
    released.then(() => reject(new Error('the lock holder exited before it took the lock')), reject);
  });
  return { released };
}

function planOf(db: Database.Database, sql: string): string {
  return db
    .prepare(`EXPLAIN QUERY PLAN ${sql}`)
    .all()
    .map((row) => (row as { detail: string }).detail)
    .join('; ');
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'cache-sqlite-'));
  path = join(dir, 'cache.db');
});

afterEach(async () => {
  for (const instance of open.splice(0)) await instance.close();
  for (const db of raw.splice(0)) db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('sqliteBackend', () => {
  it('describes itself', () => {
    const cache = backend();
    expect(cache.name).toBe('sqlite');
    expect(cache.capabilities).toEqual({
      createIfAbsent: true,
      locks: true,
      pubsub: true,
      persistent: true,
      shared: true,
    });
  });

  it('compareAndSwap refuses a value over maxBytes instead of reporting a write it did not make', async () => {
    const cache = backend({ maxBytes: 1_000 });
    const attempt = await cache.compareAndSwap('k', null, { value: bytes(5_000) }).catch((error) => error);
    expect(CacheError.isInstance(attempt) && attempt.code).toBe('E_INVALID_OPTION');
    expect((attempt as Error).message).toMatch(/maxBytes/);
    expect(await cache.get('k')).toBeUndefined();
    // Within the bound it swaps as usual, and a refused swap leaves the current value alone.
    expect(await cache.compareAndSwap('k', null, { value: bytes(10) })).toBe(true);
    await expect(cache.compareAndSwap('k', bytes(10), { value: bytes(5_000) })).rejects.toThrow(/maxBytes/);
    expect((await cache.get('k'))?.value).toEqual(bytes(10));
  });

  it('creates missing directories and switches the file to WAL mode', () => {
    path = join(dir, 'a', 'b', 'cache.db');
    backend();
    expect(inspect().pragma('journal_mode', { simple: true })).toBe('wal');
  });

  describe('LRU eviction', () => {
    it('evicts the least recently used entries beyond maxEntries, counting buffered reads', async () => {
      const clock = fakeClock();
      const cache = backend({ clock, maxEntries: 3, touchGranularityMs: 0 });
      for (const key of ['n:a', 'n:b', 'n:c']) {
        await cache.set(key, { value: text(key) });
        clock.advance(10);
      }
      // This read is only buffered in memory; eviction must flush it before choosing a victim.
      expect(decode((await cache.get('n:a'))?.value)).toBe('n:a');
      clock.advance(10);
      await cache.set('n:d', { value: text('n:d') });
      expect(await keysOf(cache)).toEqual(['n:a', 'n:c', 'n:d']);
      expect(await cache.stats()).toMatchObject({ entries: 3, evictions: 1 });
    });

    it('leaves the eviction order alone for reads made with peekMany (listing, export)', async () => {
      const clock = fakeClock();
      const cache = backend({ clock, maxEntries: 3, touchGranularityMs: 0 });
      for (const key of ['n:a', 'n:b', 'n:c']) {
        await cache.set(key, { value: text(key) });
        clock.advance(10);
      }
      expect((await cache.peekMany(['n:a', 'n:b'])).map((entry) => decode(entry?.value))).toEqual([
        'n:a',
        'n:b',
      ]);
      clock.advance(10);
      await cache.set('n:d', { value: text('n:d') });
      // a was read, but only peeked: it is still the least recently used and goes first.
      expect(await keysOf(cache)).toEqual(['n:b', 'n:c', 'n:d']);
    });

    it('evicts by value bytes beyond maxBytes and refuses a single value larger than it', async () => {
      const clock = fakeClock();
      const cache = backend({ clock, maxBytes: 100, touchGranularityMs: 0 });
      await cache.set('n:a', { value: bytes(40) });
      clock.advance(1);
      await cache.set('n:b', { value: bytes(40) });
      clock.advance(1);
      await cache.get('n:a');
      clock.advance(1);
      await cache.set('n:c', { value: bytes(40) });
      expect(await keysOf(cache)).toEqual(['n:a', 'n:c']);
      expect(await cache.stats()).toMatchObject({ entries: 2, bytes: 80, evictions: 1 });

      await cache.set('n:c', { value: bytes(101) });
      expect(await cache.get('n:c')).toBeUndefined();
      expect(await keysOf(cache)).toEqual(['n:a']);
      expect(await cache.add('n:z', { value: bytes(101) })).toBe(false);
    });

    it('never evicts the entry being written, even when setMany exceeds the bound', async () => {
      const clock = fakeClock();
      const cache = backend({ clock, maxEntries: 2 });
      await cache.setMany([1, 2, 3, 4].map((i) => [`n:${i}`, { value: text(String(i)) }] as const));
      const keys = await keysOf(cache);
      expect(keys).toHaveLength(2);
      expect(keys).toContain('n:4');
    });

    it('drops expired rows first, without counting them as evictions', async () => {
      const clock = fakeClock();
      const cache = backend({ clock, maxEntries: 2 });
      await cache.set('n:old', { value: text('old') });
      clock.advance(1);
      await cache.set('n:short', { value: text('short'), expiresAt: clock.now() + 5 });
      clock.advance(5);
      await cache.set('n:new', { value: text('new') });
      expect(await keysOf(cache)).toEqual(['n:new', 'n:old']);
      expect((await cache.stats()).evictions).toBe(0);
    });

    it('shares recency across instances on the same file', async () => {
      const clock = fakeClock();
      const writer = backend({ clock, maxEntries: 2, touchGranularityMs: 0 });
      const reader = backend({ clock, touchGranularityMs: 0 });
      await writer.set('n:a', { value: text('a') });
      clock.advance(1);
      await writer.set('n:b', { value: text('b') });
      clock.advance(1);
      await reader.get('n:a');
      await reader.flush();
      clock.advance(1);
      await writer.set('n:c', { value: text('c') });
      expect(await keysOf(writer)).toEqual(['n:a', 'n:c']);
    });

    it('keeps idempotency records and their blobs on top of the bounds: they never crowd cache entries out', async () => {
      const clock = fakeClock();
      const cache = backend({ clock, maxEntries: 100, maxBytes: 1_000 });
      // 150 records and blobs: alone over both bounds (150 entries, 1 500 bytes).
      for (let i = 0; i < 150; i++) {
        await cache.set(`~ledger/ns:${i % 2 ? 'idem' : 'blob'}:${i}`, { value: bytes(10) });
        clock.advance(1);
      }
      // The ledger's history is not protected: it counts, and goes like a cache entry.
      await cache.set('~ledger/ns:hist:1', { value: bytes(10) });
      clock.advance(1);
      for (let i = 0; i < 50; i++) {
        await cache.set(`t/ns:a:${i}`, { value: bytes(10) });
        clock.advance(1);
      }
      expect(await keysOf(cache, 't/')).toHaveLength(50);
      expect(await cache.stats()).toEqual({ entries: 201, bytes: 2_010, evictions: 0 });
      // Past the bounds, the least recently used of the rest go: the history entry, then a:0…
      for (let i = 50; i < 120; i++) {
        await cache.set(`t/ns:a:${i}`, { value: bytes(5) });
        clock.advance(1);
      }
      const kept = await keysOf(cache, 't/');
      expect(kept).toHaveLength(100);
      expect(kept).not.toContain('t/ns:a:19');
      expect(kept).toContain('t/ns:a:20');
      expect(await cache.get('~ledger/ns:hist:1')).toBeUndefined();
      expect(await keysOf(cache, '~ledger/')).toHaveLength(150);
      expect(await cache.stats()).toEqual({ entries: 250, bytes: 2_150, evictions: 21 });
    });

    it('walks an LRU index without idempotency records to pick victims, so they are never stepped over', async () => {
      const clock = fakeClock();
      const seed = backend({ clock });
      await seed.setMany(
        Array.from({ length: 2_000 }, (_, i) => [`~ledger/ns:idem:${i}`, { value: bytes(1) }] as const),
      );
      clock.advance(1);
      await seed.setMany(Array.from({ length: 10 }, (_, i) => [`t/ns:a:${i}`, { value: bytes(1) }] as const));
      const log: string[] = [];
      const traced = inspect({ verbose: (sql) => log.push(String(sql)) });
      const cache = sqliteBackend({ database: traced, clock, maxEntries: 10 });
      open.push(cache);
      clock.advance(1);
      log.length = 0;
      await cache.set('t/ns:a:new', { value: bytes(1) });
      expect(await keysOf(cache, 't/')).not.toContain('t/ns:a:0');
      expect(await keysOf(cache, 't/')).toHaveLength(10);
      const pick = log.find((sql) => /ORDER BY accessed_at/.test(sql));
      expect(pick).toBeDefined();
      const planner = inspect();
      const plan = planOf(planner, pick!);
      expect(plan).not.toMatch(/TEMP B-TREE/);
      // The index the walk follows holds no idempotency record or blob: the 2 000 older records
      // cannot be on its way.
      const index = /USING (?:COVERING )?INDEX (\w+)/.exec(plan)?.[1];
      const definition = planner.prepare('SELECT sql FROM sqlite_schema WHERE name = ?').pluck().get(index);
      expect(definition).toMatch(
        /WHERE NOT \(key >= '~ledger\/' AND \(key GLOB '~ledger\/\*:idem:\*' OR key GLOB '~ledger\/\*:blob:\*'\)\)$/,
      );
    });

    it('add evicts like set', async () => {
      const clock = fakeClock();
      const cache = backend({ clock, maxEntries: 1 });
      expect(await cache.add('n:a', { value: text('a') })).toBe(true);
      clock.advance(1);
      expect(await cache.add('n:b', { value: text('b') })).toBe(true);
      expect(await keysOf(cache)).toEqual(['n:b']);
    });
  });

  describe('reads', () => {
    it('do not write: touches stay in memory until a flush', async () => {
      const clock = fakeClock();
      const cache = backend({
        clock,
        touchFlushIntervalMs: 60_000,
        touchFlushSize: 10_000,
        touchGranularityMs: 0,
      });
      await cache.set('n:a', { value: text('a') });
      const observer = inspect();
      const version = () => observer.pragma('data_version', { simple: true });
      const accessedAt = () =>
        observer.prepare("SELECT accessed_at FROM cache_entries WHERE key = 'n:a'").pluck().get() as number;
      const before = version();
      const writtenAt = accessedAt();
      clock.advance(500);
      for (let i = 0; i < 100; i++) await cache.get('n:a');
      await cache.getMany(['n:a', 'n:missing']);
      await cache.has('n:a');
      expect(version()).toBe(before);
      await cache.flush();
      expect(version()).not.toBe(before);
      expect(accessedAt()).toBe(writtenAt + 500);
    });

    it('flush touches after touchFlushSize distinct keys, on a timer, and on close', async () => {
      const clock = fakeClock();
      const sized = backend({
        clock,
        touchFlushSize: 3,
        touchFlushIntervalMs: 60_000,
        touchGranularityMs: 0,
      });
      await sized.setMany(['n:1', 'n:2', 'n:3'].map((key) => [key, { value: text(key) }] as const));
      const observer = inspect();
      const accessedAt = (key: string) =>
        observer.prepare('SELECT accessed_at FROM cache_entries WHERE key = ?').pluck().get(key) as number;

      clock.advance(100);
      for (const key of ['n:1', 'n:2', 'n:3']) await sized.get(key);
      await vi.waitFor(() => expect(accessedAt('n:3')).toBe(clock.now()));

      const timed = backend({
        clock,
        touchFlushSize: 10_000,
        touchFlushIntervalMs: 5,
        touchGranularityMs: 0,
      });
      clock.advance(100);
      await timed.get('n:1');
      await vi.waitFor(() => expect(accessedAt('n:1')).toBe(clock.now()));

      const closing = sqliteBackend({ path, clock, touchFlushIntervalMs: 60_000, touchGranularityMs: 0 });
      clock.advance(100);
      await closing.get('n:2');
      await closing.close();
      expect(accessedAt('n:2')).toBe(clock.now());
    });

    it('a background flush that meets a locked file retries instead of blocking', async () => {
      const clock = fakeClock();
      // If the background flush waited for the lock, this timeout would stall the test for a minute.
      const cache = backend({ clock, touchFlushIntervalMs: 5, busyTimeoutMs: 60_000, touchGranularityMs: 0 });
      await cache.set('n:a', { value: text('a') });
      const other = inspect();
      other.exec('BEGIN IMMEDIATE');
      clock.advance(100);
      await cache.get('n:a');
      await new Promise((resolve) => setTimeout(resolve, 50));
      other.exec('COMMIT');
      await vi.waitFor(() =>
        expect(other.prepare("SELECT accessed_at FROM cache_entries WHERE key = 'n:a'").pluck().get()).toBe(
          clock.now(),
        ),
      );
    });

    it('serve a hit with one SELECT by primary key', async () => {
      const seed = backend();
      await seed.set('t/ns:a:1', { value: text('v') });
      const log: string[] = [];
      const traced = inspect({ verbose: (sql) => log.push(String(sql)) });
      const cache = sqliteBackend({ database: traced });
      open.push(cache);
      log.length = 0;
      expect(decode((await cache.get('t/ns:a:1'))?.value)).toBe('v');
      expect(log).toHaveLength(1);
      expect(planOf(inspect(), log[0]!)).toMatch(
        /^SEARCH cache_entries USING INDEX sqlite_autoindex_cache_entries_1 \(key=\?\)$/,
      );
    });
  });

  describe('scans', () => {
    it('opening a pre-filled file reads nothing from the entries table; stats come from the totals row', async () => {
      const seed = backend();
      await seed.setMany(
        Array.from(
          { length: 2000 },
          (_, i) => [`t/ns:a:${i}`, { value: bytes(100), tags: ['all'] }] as const,
        ),
      );
      await seed.close();
      // Tamper with the totals: if stats came from counting rows they would not show this.
      const tamper = inspect();
      tamper.exec('UPDATE cache_totals SET entries = 424242, bytes = 7 WHERE id = 1');
      tamper.exec("UPDATE cache_namespace_totals SET entries = 4242 WHERE namespace = 't/ns:'");

      const log: string[] = [];
      const traced = inspect({ verbose: (sql) => log.push(String(sql)) });
      const cache = sqliteBackend({ database: traced, maxEntries: 1_000_000 });
      open.push(cache);
      expect(log.filter((sql) => /cache_entries/.test(sql))).toEqual([]);
      expect(await cache.get('t/ns:a:5')).toBeDefined();
      expect(await cache.stats()).toMatchObject({ entries: 424242, bytes: 7 });
      expect(await cache.statsFor('t/ns:')).toMatchObject({ entries: 4242 });
      expect(await cache.statsFor('t/')).toMatchObject({ entries: 4242 });
      await cache.set('t/ns:a:new', { value: bytes(1) });
      const planner = inspect();
      for (const sql of log.filter((each) => /cache_entries/.test(each))) {
        expect(planOf(planner, sql), sql).not.toMatch(/SCAN cache_entries/);
      }
    });

    it('prefix operations are index range scans, never LIKE or full scans', async () => {
      const cache = backend();
      await cache.setMany(
        ['a:1', 'a:2', 'ab:1', 'b:1'].map((key) => [key, { value: text(key), tags: ['t'] }] as const),
      );
      const log: string[] = [];
      const traced = inspect({ verbose: (sql) => log.push(String(sql)) });
      const probe = sqliteBackend({ database: traced });
      open.push(probe);
      log.length = 0;
      expect(await keysOf(probe, 'a:')).toEqual(['a:1', 'a:2']);
      expect(await probe.statsFor('a:1')).toEqual({ entries: 1, bytes: 3 });
      expect(await probe.trim('a:', { maxEntries: 1 })).toBe(1);
      expect(await probe.deleteByPrefix('a:')).toBe(1);
      expect(await probe.deleteByTag('t')).toBe(2);
      const planner = inspect();
      const statements = log.filter((sql) => /cache_entries/.test(sql));
      expect(statements.length).toBeGreaterThanOrEqual(5);
      for (const sql of statements) {
        expect(sql).not.toMatch(/\bLIKE\b/i);
        const plan = planOf(planner, sql);
        expect(plan, sql).not.toMatch(/SCAN cache_entries(?! USING)/);
        // A trim walks its namespace's index (the key range narrows it); the rest scan the range.
        if (/INDEXED BY cache_entries_namespace_/.test(sql)) expect(plan, sql).toMatch(/\(<expr>=\?/);
        else if (/key >= /.test(sql)) expect(plan, sql).toMatch(/\(key>\? AND key<\?\)/);
      }
    });
  });

  describe('sharing a file', () => {
    it('sees writes, deletes and invalidations of another instance', async () => {
      const first = backend();
      const second = backend();
      await first.set('t/ns:a:1', { value: text('from first'), tags: ['x'] });
      expect(decode((await second.get('t/ns:a:1'))?.value)).toBe('from first');
      expect(await second.deleteByTag('x')).toBe(1);
      expect(await first.get('t/ns:a:1')).toBeUndefined();
      expect(await first.add('t/ns:a:2', { value: text('first') })).toBe(true);
      expect(await second.add('t/ns:a:2', { value: text('second') })).toBe(false);
      expect(await first.acquireLock('job', 'first', 10_000)).toBe(true);
      expect(await second.acquireLock('job', 'second', 10_000)).toBe(false);
      expect(await second.releaseLock('job', 'second')).toBe(false);
      expect(await first.releaseLock('job', 'first')).toBe(true);
      expect(await second.acquireLock('job', 'second', 10_000)).toBe(true);
      expect(await first.stats()).toMatchObject({ entries: 1, bytes: 5 });
    });

    it('loses nothing and never tears an entry with 4 processes writing at once', async () => {
      const script = join(dir, 'writer.mjs');
      const moduleUrl = pathToFileURL(fileURLToPath(new URL('./sqlite.ts', import.meta.url))).href;
      writeFileSync(script, writerScript(moduleUrl));
      const writers = 4;
      const perWriter = 200;
      const children = Array.from({ length: writers }, (_, id) =>
        spawn(
          process.execPath,
          [
            '--experimental-strip-types',
            '--no-warnings',
            '--conditions=@x/source',
            script,
            path,
            String(id),
            String(perWriter),
          ],
          { stdio: ['pipe', 'pipe', 'pipe'] },
        ),
      );
      const outputs = children.map((child) => {
        let stdout = '';
        let stderr = '';
        const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
          child.on('close', (code) => resolve({ code, stdout, stderr })),
        );
        const ready = new Promise<void>((resolve, reject) => {
          child.stdout.on('data', (chunk) => {
            stdout += chunk;
            if (stdout.includes('ready')) resolve();
          });
          void exited.then(() => reject(new Error(`writer exited before it was ready: ${stderr}`)));
        });
        child.stderr.on('data', (chunk) => (stderr += chunk));
        return { ready, exited };
      });
      // A barrier, so that the writes really overlap instead of following process start-up order.
      await Promise.all(outputs.map((each) => each.ready));
      for (const child of children) child.stdin.end('go\n');
      const results = await Promise.all(outputs.map((each) => each.exited));
      for (const result of results) expect(result, result.stderr).toMatchObject({ code: 0 });
      // Writers did overlap: some read back the hot key just written by another process.
      const foreign = results.reduce(
        (sum, result) => sum + Number(/foreign (\d+)/.exec(result.stdout)?.[1]),
        0,
      );
      expect(foreign).toBeGreaterThan(0);

      const cache = backend();
      let expectedBytes = 0;
      for (let id = 0; id < writers; id++) {
        const keys = await keysOf(cache, `w${id}:`);
        expect(keys).toHaveLength(perWriter);
        for (let i = 0; i < perWriter; i++) {
          const key = `w${id}:k:${i}`;
          const stored = await cache.get(key);
          expect(stored, key).toBeDefined();
          expect(checkPayload(stored!.value), key).toBe(key);
          expect(stored!.tags).toEqual([`writer-${id}`]);
          expectedBytes += stored!.value.byteLength;
        }
      }
      const hot = await cache.get('hot:k:0');
      const label = checkPayload(hot!.value);
      expect(label).toMatch(/^hot-\d-\d+$/);
      expectedBytes += hot!.value.byteLength;
      // The totals maintained by triggers in four processes add up exactly.
      expect(await cache.stats()).toMatchObject({ entries: writers * perWriter + 1, bytes: expectedBytes });
      // The tags of the final write, and only those, survived the overwrites from other processes.
      expect(hot!.tags).toEqual([`hot-${label!.split('-')[1]}`]);
      let hotTagged = 0;
      for (let id = 0; id < writers; id++) hotTagged += await cache.deleteByTag(`hot-${id}`);
      expect(hotTagged).toBe(1);
      expect((await cache.readCounters()).proc).toEqual({ writes: writers * perWriter * 2 });
      const check = inspect();
      expect(check.pragma('integrity_check', { simple: true })).toBe('ok');
      expect(check.prepare('SELECT count(*) FROM cache_entries').pluck().get()).toBe(writers * perWriter);
    }, 60_000);
  });

  describe('invalidation bus', () => {
    const received = (into: string[]) => (message: string) => into.push(message);
    const until = async (check: () => boolean) => {
      for (let i = 0; i < 200 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
    };

    it('delivers messages between connections in order, and to subscribers of the same backend', async () => {
      const a = backend({ busPollMs: 5 });
      const b = backend({ busPollMs: 5 });
      const onA: string[] = [];
      const onB: string[] = [];
      await a.subscribe('bus', received(onA));
      await b.subscribe('bus', received(onB));
      await b.subscribe('other', received([]));
      for (const n of [1, 2, 3]) void a.publish('bus', `a${n}`);
      await a.publish('other', 'elsewhere');
      await until(() => onB.length >= 3 && onA.length >= 3);
      expect(onB).toEqual(['a1', 'a2', 'a3']);
      expect(onA).toEqual(['a1', 'a2', 'a3']);
      // A's own subscriber hears it too, once (its own commits do not move data_version).
      await b.publish('bus', 'b1');
      await until(() => onA.length >= 4);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(onA).toEqual(['a1', 'a2', 'a3', 'b1']);
    });

    it('delivers between backends sharing one passed-in connection, once each, also when other connections commit', async () => {
      const db = inspect();
      const a = sqliteBackend({ database: db, busPollMs: 5 });
      const b = sqliteBackend({ database: db, busPollMs: 5 });
      const other = backend({ busPollMs: 5 });
      open.push(a, b);
      const onA: string[] = [];
      const onB: string[] = [];
      await a.subscribe('bus', received(onA));
      await b.subscribe('bus', received(onB));
      await a.publish('bus', 'a1');
      await b.publish('bus', 'b1');
      await until(() => onB.length >= 2 && onA.length >= 2);
      // Another connection's commit moves data_version: the polls read past a1 and b1 again.
      await other.publish('bus', 'x1');
      await until(() => onB.length >= 3 && onA.length >= 3);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(onA).toEqual(['a1', 'b1', 'x1']);
      expect(onB).toEqual(['a1', 'b1', 'x1']);
      // A closed backend hears nothing more; the other still does.
      await a.close();
      await b.publish('bus', 'b2');
      await until(() => onB.length >= 4);
      expect(onA).toEqual(['a1', 'b1', 'x1']);
      expect(onB).toEqual(['a1', 'b1', 'x1', 'b2']);
    });

    it('keeps the memory levels of two caches over one passed-in connection coherent', async () => {
      const db = inspect();
      const c1 = createCache({ store: sqliteBackend({ database: db, busPollMs: 5 }) });
      const c2 = createCache({ store: sqliteBackend({ database: db, busPollMs: 5 }) });
      try {
        await Promise.all([c1.ready(), c2.ready()]);
        // Past the first polls (which read whatever is new whatever data_version says).
        await new Promise((resolve) => setTimeout(resolve, 50));
        await c1.set('k', 'v1');
        // Now in c2's memory level too.
        expect(await c2.get('k')).toBe('v1');
        await c1.set('k', 'v2');
        let seen: unknown;
        for (let i = 0; i < 50 && seen !== 'v2'; i++) {
          seen = await c2.get('k');
          if (seen !== 'v2') await new Promise((resolve) => setTimeout(resolve, 10));
        }
        expect(seen).toBe('v2');
      } finally {
        await c1.close();
        await c2.close();
      }
    });

    it('retries a bus write another connection’s lock refused, so the message still arrives', async () => {
      const a = backend({ busPollMs: 5, busyTimeoutMs: 20 });
      const b = backend({ busPollMs: 5 });
      const onB: string[] = [];
      await b.subscribe('bus', received(onB));
      const locker = inspect();
      locker.exec('BEGIN IMMEDIATE');
      const published = a.publish('bus', 'through the lock');
      // Held past a's busy timeout: the first write fails with SQLITE_BUSY.
      await new Promise((resolve) => setTimeout(resolve, 150));
      locker.exec('COMMIT');
      await published;
      await until(() => onB.length > 0);
      expect(onB).toEqual(['through the lock']);
    });

    it('retries a refused bus write without waiting on the lock, so the event loop is not held for busyTimeoutMs each time', async () => {
      const a = backend({ busyTimeoutMs: 300 });
      const locker = inspect();
      locker.exec('BEGIN IMMEDIATE');
      let blocked = 0;
      let last = performance.now();
      const monitor = setInterval(() => {
        const now = performance.now();
        if (now - last > 30) blocked += now - last;
        last = now;
      }, 5);
      try {
        const published = a.publish('bus', 'late');
        await new Promise((resolve) => setTimeout(resolve, 1500));
        locker.exec('COMMIT');
        await published;
      } finally {
        clearInterval(monitor);
      }
      // The first attempt waits its busy timeout once (300 ms); the retries over the next 1.2 s
      // must not each wait another 300 ms.
      expect(blocked).toBeLessThan(800);
      expect(inspect().prepare('SELECT message FROM cache_bus').pluck().all()).toEqual(['late']);
    });

    it('delivers a message another connection commits while a subscriber starts listening', async () => {
      const db = new Database(path);
      raw.push(db);
      const b = sqliteBackend({ database: db, busPollMs: 5 });
      open.push(b);
      const writer = inspect();
      // Another process commits a bus row just before b's first look at data_version.
      const pragma = db.pragma.bind(db);
      let injected = false;
      db.pragma = ((source: string, options?: Database.PragmaOptions) => {
        if (source === 'data_version' && !injected) {
          injected = true;
          writer
            .prepare('INSERT INTO cache_bus (channel, message, at) VALUES (?, ?, ?)')
            .run('bus', 'meanwhile', Date.now());
        }
        return pragma(source, options);
      }) as typeof db.pragma;
      const onB: string[] = [];
      await b.subscribe('bus', received(onB));
      // No other commit follows: the message must not wait for one.
      await until(() => onB.length > 0);
      expect(injected).toBe(true);
      expect(onB).toEqual(['meanwhile']);
    });

    it('stops quietly when the application closes the connection it passed in before close()', async () => {
      const db = new Database(path);
      const shared = sqliteBackend({
        database: db,
        touchFlushIntervalMs: 20,
        touchGranularityMs: 0,
        busPollMs: 5,
      });
      await shared.subscribe('bus', () => undefined);
      await shared.set('k', { value: text('v') });
      await shared.get('k');
      db.close();
      const uncaught: unknown[] = [];
      const onError = (error: unknown) => uncaught.push(error);
      process.on('uncaughtException', onError);
      try {
        // Past the touch flush timer and many bus polls.
        await new Promise((resolve) => setTimeout(resolve, 150));
      } finally {
        process.off('uncaughtException', onError);
      }
      expect(uncaught).toEqual([]);
      await shared.close();
    });

    it('prunes old messages on a backend’s first publish and on prune(), so short-lived writers do not grow the file', async () => {
      let now = Date.UTC(2030, 0, 1);
      const clock = { now: () => now };
      const count = () => inspect().prepare('SELECT count(*) AS n FROM cache_bus').get() as { n: number };
      const first = backend({ clock });
      for (let i = 0; i < 10; i++) void first.publish('bus', `m${i}`);
      await first.publish('bus', 'last');
      await first.close();
      expect(count().n).toBe(11);
      now += 2 * 60_000;
      const second = backend({ clock });
      await second.publish('bus', 'new');
      expect(count().n).toBe(1);
      now += 2 * 60_000;
      await second.prune();
      expect(count().n).toBe(0);
    });
  });

  describe('schema', () => {
    it('records its version in cache_meta and keeps data and version on reopen', async () => {
      const first = backend();
      await first.set('n:a', { value: text('a') });
      await first.close();
      const db = inspect();
      expect(schemaVersion(db)).toBe(MIGRATIONS.length);
      const again = backend();
      expect(decode((await again.get('n:a'))?.value)).toBe('a');
      expect(schemaVersion(db)).toBe(MIGRATIONS.length);
    });

    it('upgrades a file written by an older schema version, keeping its entries', async () => {
      const old = new Database(path);
      expect(migrate(old, MIGRATIONS.slice(0, 1))).toBe(1);
      old.exec(
        "INSERT INTO cache_entries (key, expires_at, accessed_at, size, tags, value) VALUES ('t/ns:a:1', NULL, 1, 3, '[\"x\"]', x'010203')",
      );
      old.close();
      const cache = backend();
      expect(schemaVersion(inspect())).toBe(MIGRATIONS.length);
      expect((await cache.get('t/ns:a:1'))?.value).toEqual(new Uint8Array([1, 2, 3]));
      await cache.incrementCounters('s', { hits: 1 });
      expect(await cache.readCounters()).toEqual({ s: { hits: 1 } });
      expect(await cache.deleteByTag('x')).toBe(1);
    });

    it('upgrades a v3 file to v4 keeping every entry, and counts its idempotency records apart from then on', async () => {
      const old = new Database(path);
      expect(migrate(old, MIGRATIONS.slice(0, 3))).toBe(3);
      const insert = old.prepare(
        'INSERT INTO cache_entries (key, expires_at, accessed_at, size, tags, value) VALUES (?, ?, ?, ?, ?, ?)',
      );
      const rows: [string, number | null, number, string | null, Uint8Array][] = [
        ['~ledger/ns:idem:1', null, 1, null, bytes(30)],
        ['~ledger/ns:blob:2', 9e15, 2, null, bytes(40)],
        ['~ledger/ns:hist:3', null, 3, null, bytes(5)],
        ['t/ns:a:1', null, 4, '["x"]', bytes(10)],
        ['t/ns:a:2', 9e15, 5, null, bytes(20)],
      ];
      for (const [key, expiresAt, accessedAt, tags, value] of rows) {
        insert.run(key, expiresAt, accessedAt, value.byteLength, tags, value);
      }
      old.close();
      const clock = fakeClock(10);
      const cache = backend({ clock, maxEntries: 3 });
      const db = inspect();
      expect(schemaVersion(db)).toBe(4);
      expect(db.prepare("SELECT value FROM cache_meta WHERE name = 'readable_from'").pluck().get()).toBe(1);
      for (const [key, , , tags, value] of rows) {
        const stored = await cache.get(key);
        expect(stored?.value, key).toEqual(value);
        expect(stored?.tags, key).toEqual(tags === null ? undefined : JSON.parse(tags));
      }
      expect(await cache.stats()).toMatchObject({ entries: 5, bytes: 105 });
      expect(db.prepare('SELECT entries, bytes FROM cache_protected_totals').get()).toEqual({
        entries: 2,
        bytes: 70,
      });
      // The bound counts the 3 others only; the records stay whatever happens.
      await cache.set('t/ns:a:3', { value: bytes(1) });
      expect(await keysOf(cache)).toEqual([
        't/ns:a:1',
        't/ns:a:2',
        't/ns:a:3',
        '~ledger/ns:blob:2',
        '~ledger/ns:idem:1',
      ]);
      // A v3 build still writing to the file keeps the new totals right (triggers), and its
      // eviction query finds an index that skips the records.
      db.prepare('INSERT INTO cache_entries (key, accessed_at, size, value) VALUES (?, 1, 3, ?)').run(
        '~ledger/ns:idem:old',
        bytes(3),
      );
      db.prepare("DELETE FROM cache_entries WHERE key = '~ledger/ns:blob:2'").run();
      expect(db.prepare('SELECT entries, bytes FROM cache_protected_totals').get()).toEqual({
        entries: 2,
        bytes: 33,
      });
      const v3Eviction =
        'SELECT key, size, expires_at FROM cache_entries WHERE key <> ? AND NOT (key >= ' +
        "'~ledger/' AND (key GLOB '~ledger/*:idem:*' OR key GLOB '~ledger/*:blob:*')) ORDER BY accessed_at LIMIT ?";
      expect(db.prepare(`EXPLAIN QUERY PLAN ${v3Eviction}`).all('k', 1)).toMatchObject([
        { detail: 'SCAN cache_entries USING INDEX cache_entries_evictable' },
      ]);
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    });

    it('the v4 upgrade builds one index under the write lock: writes maintain no per-namespace index', async () => {
      const expected = [
        'cache_entries_evictable',
        'cache_entries_expires_at',
        'sqlite_autoindex_cache_entries_1',
      ];
      const old = new Database(path);
      migrate(old, MIGRATIONS.slice(0, 3));
      old
        .prepare("INSERT INTO cache_entries (key, accessed_at, size, value) VALUES ('t/ns:a:1', 1, 1, x'01')")
        .run();
      old.close();
      const upgraded = backend({ maxEntries: 10 });
      await upgraded.set('t/ns:a:2', { value: bytes(1) });
      expect(indexesOf(inspect())).toEqual(expected);
      // Likewise for a file created at v4.
      path = join(dir, 'fresh.db');
      const fresh = backend();
      await fresh.set('t/ns:a:1', { value: bytes(1) });
      expect(indexesOf(inspect())).toEqual(expected);
      // What an ordinary write (the backend's upsert) updates: the key, expiry and LRU indexes only.
      const db = inspect();
      const opened = db
        .prepare<[], { opcode: string; p2: number }>(
          'EXPLAIN INSERT INTO cache_entries (key, expires_at, accessed_at, size, tags, value) ' +
            "VALUES ('n:a', NULL, 1, 1, NULL, x'01') ON CONFLICT (key) DO UPDATE SET " +
            'expires_at = excluded.expires_at, accessed_at = excluded.accessed_at, size = excluded.size, ' +
            'tags = excluded.tags, value = excluded.value',
        )
        .all()
        .filter((op) => op.opcode === 'OpenWrite')
        .map((op) => op.p2);
      const written = db
        .prepare<[], { name: string; rootpage: number }>(
          "SELECT name, rootpage FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'cache_entries' ORDER BY name",
        )
        .all()
        .filter((index) => opened.includes(index.rootpage))
        .map((index) => index.name);
      expect(written).toEqual(expected);
    });

    it('opening a file another connection is migrating waits for it instead of failing', async () => {
      // A v3 build's file (in WAL mode, as every build leaves it).
      const old = new Database(path);
      old.pragma('journal_mode = WAL');
      migrate(old, MIGRATIONS.slice(0, 3));
      old
        .prepare("INSERT INTO cache_entries (key, accessed_at, size, value) VALUES ('t/ns:a:1', 1, 1, x'01')")
        .run();
      old.close();
      // Another process's v4 migration, taking longer than this one's busy timeout.
      const other = await holdWriteLock(
        600,
        `${MIGRATIONS[3]};
        INSERT OR REPLACE INTO cache_meta (name, value) VALUES ('schema_version', 4), ('readable_from', 1);`,
      );
      const started = performance.now();
      const cache = backend({ busyTimeoutMs: 50 });
      expect(performance.now() - started).toBeGreaterThan(300);
      await other.released;
      expect(schemaVersion(inspect())).toBe(4);
      expect((await cache.get('t/ns:a:1'))?.value).toEqual(new Uint8Array([1]));
      await cache.set('t/ns:a:2', { value: bytes(2) });
      expect(await cache.stats()).toMatchObject({ entries: 2, bytes: 3 });
      expect(inspect().pragma('integrity_check', { simple: true })).toBe('ok');
    });

    it('gives up waiting for another connection’s lock after its deadline, with E_TIMEOUT', () => {
      const old = new Database(path);
      migrate(old, MIGRATIONS.slice(0, 3));
      old.close();
      const other = inspect();
      other.exec('BEGIN IMMEDIATE');
      const db = inspect({ timeout: 20 });
      const started = performance.now();
      let caught: unknown;
      try {
        migrate(db, MIGRATIONS, undefined, 300);
      } catch (error) {
        caught = error;
      }
      expect(performance.now() - started).toBeGreaterThanOrEqual(290);
      expect(CacheError.isInstance(caught) && caught.code).toBe('E_TIMEOUT');
      expect((caught as Error).message).toMatch(/another connection's lock .* upgrade its cache schema/);
      expect(schemaVersion(db)).toBe(3);
      other.exec('ROLLBACK');
      expect(migrate(db)).toBe(MIGRATIONS.length);
    });

    it('does not wait on a snapshot of its own: a passed-in database in a read transaction fails at once', () => {
      const old = new Database(path);
      old.pragma('journal_mode = WAL');
      migrate(old, MIGRATIONS.slice(0, 3));
      old.close();
      // The application's connection reads in a transaction; another connection writes meanwhile.
      const app = inspect({ timeout: 20 });
      app.exec('BEGIN');
      app.prepare('SELECT count(*) FROM cache_entries').get();
      inspect()
        .prepare("INSERT INTO cache_entries (key, accessed_at, size, value) VALUES ('t/ns:a:1', 1, 1, x'01')")
        .run();
      const started = performance.now();
      expect(() => migrate(app, MIGRATIONS, undefined, 5000)).toThrow();
      // Its own snapshot cannot move while it waits: no point waiting for the deadline.
      expect(performance.now() - started).toBeLessThan(1000);
      app.exec('ROLLBACK');
      expect(migrate(app)).toBe(MIGRATIONS.length);
    });

    it('refuses a file from a newer schema it cannot use, with a message naming the fix', () => {
      const db = new Database(path);
      migrate(db);
      db.prepare("UPDATE cache_meta SET value = 99 WHERE name IN ('schema_version', 'readable_from')").run();
      db.close();
      expect(() => backend()).toThrowError(/schema v99 .* upgrade @x\/cache-core/);
    });

    it('uses a file from a newer schema that declares this version can still read it, and leaves it as is', async () => {
      const db = new Database(path);
      expect(migrate(db)).toBe(MIGRATIONS.length);
      expect(db.prepare("SELECT value FROM cache_meta WHERE name = 'readable_from'").pluck().get()).toBe(1);
      // A later build added a table (an additive migration) and kept readable_from.
      db.exec('CREATE TABLE cache_future (id INTEGER PRIMARY KEY)');
      db.prepare("UPDATE cache_meta SET value = ? WHERE name = 'schema_version'").run(MIGRATIONS.length + 1);
      db.close();
      const cache = backend();
      await cache.set('n:a', { value: text('a') });
      expect(decode((await cache.get('n:a'))?.value)).toBe('a');
      expect(schemaVersion(inspect())).toBe(MIGRATIONS.length + 1);
    });

    it('uses its own cache_ tables and leaves a passed database, its user_version and its tables alone', async () => {
      const db = inspect();
      db.exec('CREATE TABLE entries (id INTEGER PRIMARY KEY); PRAGMA user_version = 7');
      const cache = sqliteBackend({ database: db });
      await cache.set('n:a', { value: text('a') });
      await cache.close();
      expect(db.open).toBe(true);
      expect(db.pragma('user_version', { simple: true })).toBe(7);
      expect(db.prepare('SELECT count(*) FROM entries').pluck().get()).toBe(0);
      expect(db.prepare('SELECT count(*) FROM cache_entries').pluck().get()).toBe(1);
    });
  });

  describe('quotas', () => {
    it('statsFor uses namespace totals for namespaces and tiers, and ranges otherwise', async () => {
      const cache = backend();
      await cache.set('t1/ns:a:1', { value: bytes(10) });
      await cache.set('t1/ns:b:1', { value: bytes(20) });
      await cache.set('t1/other:a:1', { value: bytes(5) });
      await cache.set('t2/ns:a:1', { value: bytes(7) });
      await cache.set('t1/loose', { value: bytes(3) });
      expect(await cache.statsFor('t1/ns:')).toEqual({ entries: 2, bytes: 30 });
      expect(await cache.statsFor('t1/')).toEqual({ entries: 4, bytes: 38 });
      expect(await cache.statsFor('t1/ns:a:')).toEqual({ entries: 1, bytes: 10 });
      expect(await cache.statsFor('t3/ns:')).toEqual({ entries: 0, bytes: 0 });
      expect(await cache.statsFor('')).toEqual({ entries: 5, bytes: 45 });
      await cache.delete('t1/ns:a:1');
      await cache.set('t1/ns:b:1', { value: bytes(1) });
      expect(await cache.statsFor('t1/ns:')).toEqual({ entries: 1, bytes: 1 });
      await cache.clear();
      expect(await cache.statsFor('t1/')).toEqual({ entries: 0, bytes: 0 });
    });

    it('trim evicts least recently used entries under the prefix only', async () => {
      const clock = fakeClock();
      const cache = backend({ clock, touchGranularityMs: 0 });
      for (const key of ['q:1', 'other:1', 'q:2', 'q:3', 'other:2', 'q:4']) {
        await cache.set(key, { value: bytes(10) });
        clock.advance(1);
      }
      await cache.get('q:1');
      expect(await cache.trim('q:', { maxEntries: 2 })).toBe(2);
      expect(await keysOf(cache)).toEqual(['other:1', 'other:2', 'q:1', 'q:4']);
      expect(await cache.trim('q:', { maxBytes: 10 })).toBe(1);
      expect(await cache.statsFor('q:')).toEqual({ entries: 1, bytes: 10 });
      expect(await cache.trim('q:', { maxEntries: 5 })).toBe(0);
      expect((await cache.stats()).evictions).toBe(3);
    });

    it('trim walks the namespace in index order, expired entries first, and removes only the overshoot', async () => {
      const clock = fakeClock();
      const seed = backend({ clock, touchGranularityMs: 0 });
      for (const key of ['t/q:live:1', 't/other:1', 't/q:live:2', 't/q:live:3', 't/q:live:4']) {
        await seed.set(key, { value: bytes(10) });
        clock.advance(1);
      }
      for (const key of ['t/q:exp:1', 't/q:exp:2', 't/q:exp:3', 't/other:exp']) {
        await seed.set(key, { value: bytes(10), expiresAt: clock.now() + 5 });
      }
      clock.advance(10);
      await seed.get('t/q:live:1');
      const log: string[] = [];
      const traced = inspect({ verbose: (sql) => log.push(String(sql)) });
      const cache = sqliteBackend({ database: traced, clock, touchGranularityMs: 0 });
      open.push(cache);
      await seed.flush();
      clock.advance(1);
      log.length = 0;
      // 7 entries under t/q:, 2 over: two of the three expired ones go, no live one.
      expect(await cache.trim('t/q:', { maxEntries: 5 })).toBe(2);
      expect((await cache.stats()).evictions).toBe(0);
      expect(await cache.statsFor('t/q:')).toEqual({ entries: 5, bytes: 50 });
      // 5 over 2: the last expired one, then live:2 and live:3 (live:1 was read since).
      const evicted: string[] = [];
      expect(await cache.trim('t/q:', { maxEntries: 2 }, (key) => evicted.push(key))).toBe(3);
      expect(evicted).toEqual(['t/q:live:2', 't/q:live:3']);
      expect(await keysOf(cache, 't/q:')).toEqual(['t/q:live:1', 't/q:live:4']);
      // A longer prefix stays inside its key range.
      expect(await cache.trim('t/q:live:', { maxEntries: 1 })).toBe(1);
      expect(await keysOf(cache, 't/')).toEqual(['t/other:1', 't/q:live:1']);
      const planner = inspect();
      const selects = log.filter((sql) => /^SELECT key, size, expires_at FROM cache_entries/.test(sql));
      expect(selects.length).toBeGreaterThanOrEqual(4);
      for (const sql of selects) {
        const plan = planOf(planner, sql);
        // Never a sort of the namespace: a search of its index, stepped only as far as needed.
        expect(plan, sql).not.toMatch(/TEMP B-TREE/);
        expect(plan, sql).toMatch(
          /^SEARCH cache_entries USING INDEX cache_entries_namespace_\w+ \(<expr>=\?/,
        );
      }
    });

    it('a namespace trim builds its indexes the first time it has to evict; a file that has them just uses them', async () => {
      const namespaceIndexes = (db: Database.Database) =>
        indexesOf(db).filter((name) => name.startsWith('cache_entries_namespace_'));
      const clock = fakeClock();
      const cache = backend({ clock });
      for (const key of ['t/q:1', 't/q:2', 't/q:3', 't/other:1']) {
        await cache.set(key, { value: bytes(10) });
        clock.advance(1);
      }
      const db = inspect();
      // Within its quota: nothing to walk, nothing built.
      expect(await cache.trim('t/q:', { maxEntries: 3 })).toBe(0);
      expect(namespaceIndexes(db)).toEqual([]);
      expect(await cache.trim('t/q:', { maxEntries: 2 })).toBe(1);
      expect(namespaceIndexes(db)).toEqual([
        'cache_entries_namespace_accessed_at',
        'cache_entries_namespace_expires_at',
      ]);
      expect(await keysOf(cache)).toEqual(['t/other:1', 't/q:2', 't/q:3']);

      // A file whose v4 migration (the first v4 build) created them: used as they are.
      path = join(dir, 'first-v4.db');
      const early = inspect();
      migrate(early);
      early.exec(`
        CREATE INDEX cache_entries_namespace_accessed_at
          ON cache_entries (substr(key, 1, instr(key, ':')), accessed_at);
        CREATE INDEX cache_entries_namespace_expires_at
          ON cache_entries (substr(key, 1, instr(key, ':')), expires_at) WHERE expires_at IS NOT NULL;`);
      const log: string[] = [];
      const traced = inspect({ verbose: (sql) => log.push(String(sql)) });
      const other = sqliteBackend({ database: traced, clock });
      open.push(other);
      await other.setMany(['t/q:1', 't/q:2', 't/q:3'].map((key) => [key, { value: bytes(1) }] as const));
      log.length = 0;
      expect(await other.trim('t/q:', { maxEntries: 1 })).toBe(2);
      expect(log.filter((sql) => /CREATE INDEX/.test(sql))).toEqual([]);
      const selects = log.filter((sql) => /^SELECT key, size, expires_at FROM cache_entries/.test(sql));
      expect(selects).toHaveLength(2);
      for (const sql of selects) {
        expect(planOf(early, sql), sql).toMatch(
          /^SEARCH cache_entries USING INDEX cache_entries_namespace_\w+ \(<expr>=\?/,
        );
      }
    });

    it('a namespace trim does not wait on another connection to build its indexes: it sorts this once, builds them later', async () => {
      const clock = fakeClock();
      const cache = backend({ clock, touchGranularityMs: 0 });
      for (const key of ['t/q:1', 't/q:2', 't/q:3', 't/q:4']) {
        await cache.set(key, { value: bytes(10) });
        clock.advance(1);
      }
      await cache.set('t/q:exp', { value: bytes(10), expiresAt: clock.now() + 1 });
      clock.advance(5);
      await cache.get('t/q:1');
      const db = inspect();
      const other = await holdWriteLock(400);
      // Waits for the lock (busyTimeoutMs) to trim, not to build: same order, expired first.
      const evicted: string[] = [];
      expect(await cache.trim('t/q:', { maxEntries: 2 }, (key) => evicted.push(key))).toBe(3);
      expect(evicted).toEqual(['t/q:2', 't/q:3']);
      await other.released;
      expect(indexesOf(db).filter((name) => name.startsWith('cache_entries_namespace_'))).toEqual([]);
      await cache.set('t/q:5', { value: bytes(10) });
      expect(await cache.trim('t/q:', { maxEntries: 2 }, (key) => evicted.push(key))).toBe(1);
      expect(evicted).toEqual(['t/q:2', 't/q:3', 't/q:4']);
      expect(indexesOf(db).filter((name) => name.startsWith('cache_entries_namespace_'))).toHaveLength(2);
      expect(await keysOf(cache)).toEqual(['t/q:1', 't/q:5']);
    });
  });

  it('a read rewrites the last-use time at most once per granularity', async () => {
    const clock = fakeClock();
    const cache = backend({ clock, touchFlushSize: 1, touchGranularityMs: 60_000 });
    await cache.set('n:a', { value: text('a') });
    const observer = inspect();
    const accessedAt = () =>
      observer.prepare("SELECT accessed_at FROM cache_entries WHERE key = 'n:a'").pluck().get() as number;
    const writtenAt = accessedAt();
    clock.advance(59_000);
    await cache.get('n:a');
    await cache.flush();
    expect(accessedAt()).toBe(writtenAt);
    clock.advance(1_000);
    await cache.get('n:a');
    await cache.flush();
    expect(accessedAt()).toBe(writtenAt + 60_000);
  });

  describe('locks', () => {
    it('release removes the owner’s row even after its lease ran out, never another owner’s', async () => {
      const clock = fakeClock();
      const cache = backend({ clock });
      const rows = () => inspect().prepare('SELECT name, owner FROM cache_locks ORDER BY name').all();
      expect(await cache.acquireLock('late', 'a', 1_000)).toBe(true);
      expect(await cache.acquireLock('taken', 'a', 1_000)).toBe(true);
      clock.advance(2_000);
      // 'taken' lapsed and went to b: a's release must leave it alone.
      expect(await cache.acquireLock('taken', 'b', 1_000)).toBe(true);
      expect(await cache.releaseLock('taken', 'a')).toBe(false);
      // 'late' lapsed with nobody taking it: a no longer held it, but its row goes.
      expect(await cache.releaseLock('late', 'a')).toBe(false);
      expect(rows()).toEqual([{ name: 'taken', owner: 'b' }]);
      expect(await cache.releaseLock('taken', 'b')).toBe(true);
      expect(rows()).toEqual([]);
    });

    it('prune removes the rows of lapsed locks (a killed holder’s), not live ones', async () => {
      const script = join(dir, 'holder.mjs');
      const moduleUrl = pathToFileURL(fileURLToPath(new URL('./sqlite.ts', import.meta.url))).href;
      writeFileSync(
        script,
        `import { sqliteBackend } from ${JSON.stringify(moduleUrl)};
const cache = sqliteBackend({ path: process.argv[2] });
await cache.acquireLock('job-1', 'killed', 1000);
await cache.acquireLock('job-2', 'killed', 600000);
process.stdout.write('held\\n');
setInterval(() => {}, 1000);
`,
      );
      const child = spawn(
        process.execPath,
        ['--experimental-strip-types', '--no-warnings', '--conditions=@x/source', script, path],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stderr = '';
      child.stderr.on('data', (chunk) => (stderr += chunk));
      const exited = new Promise((resolve) => child.on('close', resolve));
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (chunk) => String(chunk).includes('held') && resolve());
        void exited.then(() => reject(new Error(`holder exited early: ${stderr}`)));
      });
      child.kill('SIGKILL');
      await exited;
      const cache = backend({ clock: { now: () => Date.now() + 2_000 } });
      const names = () => inspect().prepare('SELECT name FROM cache_locks ORDER BY name').pluck().all();
      expect(names()).toEqual(['job-1', 'job-2']);
      expect(await cache.prune()).toBe(0);
      expect(names()).toEqual(['job-2']);
      expect(await cache.acquireLock('job-2', 'other', 1_000)).toBe(false);
    }, 30_000);
  });

  describe('counters', () => {
    it('increments atomically, reads back and clears by scope prefix', async () => {
      const first = backend();
      const second = backend();
      await Promise.all([
        first.incrementCounters('t:a:x', { hits: 1, savedUsd: 0.25 }),
        second.incrementCounters('t:a:x', { hits: 2, misses: 0 }),
        second.incrementCounters('t:b:y', { hits: 5 }),
        first.incrementCounters('l:memory', { errors: 1 }),
      ]);
      expect(await first.readCounters()).toEqual({
        't:a:x': { hits: 3, savedUsd: 0.25 },
        't:b:y': { hits: 5 },
        'l:memory': { errors: 1 },
      });
      await first.clearCounters('t:');
      expect(await second.readCounters()).toEqual({ 'l:memory': { errors: 1 } });
      await first.clearCounters();
      expect(await second.readCounters()).toEqual({});
      await expect(first.incrementCounters('s', { hits: Number.NaN })).rejects.toMatchObject({
        code: 'E_INVALID_OPTION',
      });
    });
  });

  describe('errors', () => {
    it('names the fix when better-sqlite3 cannot be loaded', () => {
      const missing = Object.assign(new Error("Cannot find module 'better-sqlite3'"), {
        code: 'MODULE_NOT_FOUND',
      });
      let caught: unknown;
      try {
        loadSqliteDriver(() => {
          throw missing;
        });
      } catch (error) {
        caught = error;
      }
      expect(CacheError.isInstance(caught)).toBe(true);
      const error = caught as CacheError;
      expect(error.code).toBe('E_MISSING_DEPENDENCY');
      expect(error.message).toBe(
        '[@x/cache-core] [sqlite] cannot load "better-sqlite3": install it (pnpm add better-sqlite3) ' +
          'or pass an open Database as `database`',
      );
      expect(error.cause).toBe(missing);
      expect(loadSqliteDriver()).toBe(Database);
    });

    it('reports a lock held too long by another connection as E_TIMEOUT', async () => {
      const cache = backend({ busyTimeoutMs: 20 });
      const other = inspect();
      other.exec('BEGIN IMMEDIATE');
      await expect(cache.set('n:a', { value: text('a') })).rejects.toMatchObject({
        code: 'E_TIMEOUT',
        message: expect.stringMatching(/raise busyTimeoutMs/),
      });
      other.exec('ROLLBACK');
      await cache.set('n:a', { value: text('a') });
    });

    it('rejects conflicting or invalid options', () => {
      const db = inspect();
      expect(() => sqliteBackend({ path, database: db })).toThrowError(/either `path` or `database`/);
      expect(() => backend({ maxEntries: -5 })).toThrowError(/maxEntries/);
      expect(() => backend({ busyTimeoutMs: Infinity })).toThrowError(/busyTimeoutMs/);
      const closed = new Database(':memory:');
      closed.close();
      expect(() => sqliteBackend({ database: closed })).toThrowError(/is closed/);
    });

    it('reports an unusable path with a fix', () => {
      writeFileSync(join(dir, 'file'), 'not a directory');
      expect(() => sqliteBackend({ path: join(dir, 'file', 'cache.db') })).toThrowError(
        /cannot open .* writable/,
      );
    });

    it('rejects use after close', async () => {
      const cache = sqliteBackend({ path });
      await cache.close();
      await cache.close();
      await expect(cache.get('n:a')).rejects.toMatchObject({ code: 'E_CLOSED' });
      await expect(cache.set('n:a', { value: text('a') })).rejects.toMatchObject({ code: 'E_CLOSED' });
    });
  });
});

/** `label|filler|label`: a torn or mixed-up value cannot pass (the writer script has a copy). */
function checkPayload(value: Uint8Array): string | undefined {
  const [head, filler, tail, ...rest] = new TextDecoder().decode(value).split('|');
  if (head === undefined || filler === undefined || head !== tail || rest.length > 0) return undefined;
  return filler === head.repeat(Math.ceil(filler.length / head.length)).slice(0, filler.length)
    ? head
    : undefined;
}

function writerScript(moduleUrl: string): string {
  return `import { sqliteBackend } from ${JSON.stringify(moduleUrl)};
const [path, id, count] = process.argv.slice(2);
const payload = (label, size) =>
  new TextEncoder().encode(label + '|' + label.repeat(Math.ceil(size / label.length)).slice(0, size) + '|' + label);
const check = (value) => {
  const [head, filler, tail, ...rest] = new TextDecoder().decode(value).split('|');
  if (head === undefined || filler === undefined || head !== tail || rest.length > 0) return undefined;
  return filler === head.repeat(Math.ceil(filler.length / head.length)).slice(0, filler.length) ? head : undefined;
};
// Opened before the barrier, so that opening (and migrating) does not stagger the writers.
const cache = sqliteBackend({ path, touchFlushSize: 20, touchFlushIntervalMs: 5 });
process.stdout.write('ready\\n');
await new Promise((resolve) => process.stdin.once('data', resolve));
let foreign = 0;
for (let i = 0; i < Number(count); i++) {
  const key = 'w' + id + ':k:' + i;
  await cache.set(key, { value: payload(key, 1000 + ((i * 37) % 9000)), tags: ['writer-' + id] });
  await cache.set('hot:k:0', { value: payload('hot-' + id + '-' + i, 3000 + ((i * 101) % 6000)), tags: ['hot-' + id] });
  const hot = await cache.get('hot:k:0');
  const hotLabel = hot === undefined ? undefined : check(hot.value);
  if (hotLabel === undefined) throw new Error('torn hot entry at ' + i);
  if (!hotLabel.startsWith('hot-' + id + '-')) foreign++;
  const own = await cache.get(key);
  if (own === undefined || check(own.value) !== key) throw new Error('lost own write ' + key);
  await cache.incrementCounters('proc', { writes: 2 });
}
await cache.close();
process.stdout.write('foreign ' + foreign + '\\n');
`;
}
