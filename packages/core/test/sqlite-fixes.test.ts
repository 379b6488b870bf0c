/**
 * Fixes to the SQLite and memory backends (review 7): quota evictions, long timers, `add` of a
 * refused value, another application's database, keys SQLite cannot keep apart, values over
 * SQLite's length limit.
 */
import { constants } from 'node:buffer';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CacheBackend, StoredEntry } from '../src/backends/backend.ts';
import type { MemoryBackend } from '../src/backends/memory.ts';
import { memoryBackend } from '../src/backends/memory.ts';
import type { SqliteBackend } from '../src/backends/sqlite.ts';
import { sqliteBackend } from '../src/backends/sqlite.ts';
import { createCache } from '../src/cache.ts';
import { CacheError } from '../src/errors.ts';
import type { FakeClock } from './support.ts';
import { fakeClock } from './support.ts';

let dir: string;
let path: string;
const closing: { close(): unknown }[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'cache-sqlite-fixes-'));
  path = join(dir, 'cache.db');
});

afterEach(async () => {
  for (const each of closing.splice(0).reverse()) await each.close();
  rmSync(dir, { recursive: true, force: true });
});

function track<T extends { close(): unknown }>(value: T): T {
  closing.push(value);
  return value;
}

const text = (value: string) => new TextEncoder().encode(value);
const entry = (value: string, tags?: string[]): StoredEntry => ({ value: text(value), tags });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The CacheError a promise (or a call) fails with; fails the test when it does not. */
async function failure(run: () => unknown): Promise<CacheError> {
  try {
    await run();
  } catch (error) {
    expect(CacheError.isInstance(error), String(error)).toBe(true);
    return error as CacheError;
  }
  throw new Error('expected a CacheError, got none');
}

async function keysOf(backend: CacheBackend, prefix?: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of backend.keys(prefix === undefined ? {} : { prefix })) keys.push(key);
  return keys.sort();
}

type Kind = 'sqlite' | 'memory';
const KINDS: Kind[] = ['sqlite', 'memory'];

function open(
  kind: Kind,
  options: { clock?: FakeClock; maxBytes?: number } = {},
): SqliteBackend | MemoryBackend {
  return track(kind === 'sqlite' ? sqliteBackend({ path, ...options }) : memoryBackend(options));
}

describe('quota trims count only live entries as evictions', () => {
  it.each(KINDS)(
    '%s store: expired entries swept by a trim are not evictions; a live one is, with its event',
    async (kind) => {
      const clock = fakeClock();
      const cache = track(
        createCache({
          store: open(kind, { clock }),
          clock,
          memory: false,
          quotas: { default: { maxEntries: 3 } },
        }),
      );
      const evicted: { key: string; level: string; reason: string }[] = [];
      cache.on('evict', ({ key, level, reason }) => evicted.push({ key, level, reason }));
      for (const key of ['a', 'b', 'c']) await cache.set(key, 1, { ttl: 1000 });
      clock.advance(5000);
      // Over the quota only with expired entries: the trim sweeps one, evicts nothing.
      await cache.set('live', 1);
      expect((await cache.stats()).evictions).toBe(0);
      expect(evicted).toEqual([]);
      // The two other expired ones make room for the next two writes; the one after evicts `live`.
      for (const key of ['live2', 'live3', 'live4']) await cache.set(key, 1);
      expect(evicted).toEqual([{ key: cache.key('live'), level: kind, reason: 'quota' }]);
      expect((await cache.stats()).evictions).toBe(1);
      expect((await cache.getAllStats()).levels[kind]?.evictions).toBe(1);
      expect(await cache.get('live')).toBeUndefined();
      expect(await cache.get('live4')).toBe(1);
    },
  );
});

describe('timer options of 2^31 ms or more', () => {
  it('busPollMs and touchFlushIntervalMs are capped instead of overflowing into a 1 ms timer', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      const clock = fakeClock();
      const subscriber = track(
        sqliteBackend({
          path,
          clock,
          busPollMs: 2 ** 31,
          touchFlushIntervalMs: 2 ** 31,
          touchGranularityMs: 0,
        }),
      );
      const other = track(sqliteBackend({ path, clock }));
      const heard: string[] = [];
      await subscriber.subscribe('bus', (message) => heard.push(message));
      await other.set('ns:k', entry('v'));
      const written = clock.now();
      clock.advance(10);
      expect(await subscriber.get('ns:k')).toBeDefined(); // a read to record for the LRU
      await other.publish('bus', 'hello');
      await sleep(100);
      // The poll runs every ~24.8 days and the touches are flushed as rarely: nothing yet.
      expect(heard).toEqual([]);
      const raw = track(new Database(path, { readonly: true }));
      expect(raw.prepare("SELECT accessed_at FROM cache_entries WHERE key = 'ns:k'").pluck().get()).toBe(
        written,
      );
      expect(warnings).not.toContain('TimeoutOverflowWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });
});

describe('add of a value the store refuses', () => {
  it.each(KINDS)('%s: returns false for a value over maxBytes, as it stores nothing', async (kind) => {
    const backend = open(kind, { maxBytes: 1_000 });
    expect(await backend.add('ns:big', { value: new Uint8Array(5_000) })).toBe(false);
    expect(await backend.has('ns:big')).toBe(false);
    expect(await backend.add('ns:big', { value: new Uint8Array(10) })).toBe(true);
    expect(await backend.has('ns:big')).toBe(true);
  });

  it('both backends answer alike', async () => {
    const answers = [];
    for (const kind of KINDS) {
      const backend = open(kind, { maxBytes: 1_000 });
      answers.push([
        await backend.add('ns:a', { value: new Uint8Array(5_000) }),
        await backend.add('ns:a', { value: new Uint8Array(5) }),
        await backend.add('ns:a', { value: new Uint8Array(5) }),
        (await backend.stats()).entries,
      ]);
    }
    expect(answers[0]).toEqual([false, true, false, 1]);
    expect(answers[1]).toEqual(answers[0]);
  });
});

describe("another application's SQLite database", () => {
  /** An application database in rollback-journal mode, with a table named like the cache's. */
  function appDatabase(sql: string): Buffer {
    const db = new Database(path);
    db.exec(sql);
    db.close();
    return readFileSync(path);
  }

  const expectUntouched = (before: Buffer) => {
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(existsSync(`${path}-wal`)).toBe(false);
    const db = track(new Database(path, { readonly: true }));
    expect(db.pragma('journal_mode', { simple: true })).toBe('delete');
    expect(db.prepare("SELECT 1 FROM sqlite_schema WHERE name = 'cache_meta'").get()).toBeUndefined();
  };

  it('is refused untouched, naming another path as the fix, never deleting it', async () => {
    const before = appDatabase(
      "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('ada');" +
        'CREATE TABLE cache_entries (id INTEGER PRIMARY KEY, url TEXT)',
    );
    const error = await failure(() => createCache({ store: sqliteBackend({ path }) }));
    expect(error.code).toBe('E_INVALID_OPTION');
    expect(error.message).toMatch(/another application's SQLite database \(it holds users, cache_entries\)/);
    expect(error.message).toMatch(/Point `path` at a file of the cache's own/);
    expect(error.message).not.toMatch(/delete/);
    // Its tables collide with the cache's: sharing it through `database` is not suggested either.
    expect(error.message).not.toMatch(/`database`/);
    expectUntouched(before);
  });

  it('without colliding tables is refused too, pointing at `database` for a deliberate share', async () => {
    const before = appDatabase('CREATE TABLE users (id INTEGER PRIMARY KEY)');
    const error = await failure(() => sqliteBackend({ path }));
    expect(error.code).toBe('E_INVALID_OPTION');
    expect(error.message).toMatch(/pass the application's open connection as `database`/);
    expectUntouched(before);
    // The supported way: the application's connection, its journal mode left to it.
    const db = track(new Database(path));
    const shared = track(sqliteBackend({ database: db }));
    await shared.set('ns:a', entry('a'));
    expect(db.pragma('journal_mode', { simple: true })).toBe('delete');
  });

  it('passed as `database` with tables named like the cache’s, is refused without advice to delete it', async () => {
    appDatabase('CREATE TABLE cache_entries (id INTEGER PRIMARY KEY, url TEXT)');
    const db = track(new Database(path));
    const error = await failure(() => sqliteBackend({ database: db }));
    expect(error.code).toBe('E_INVALID_OPTION');
    expect(error.message).toMatch(/objects of its own named like the cache's \(cache_entries\)/);
    expect(error.message).not.toMatch(/delete/);
    expect(db.prepare("SELECT 1 FROM sqlite_schema WHERE name = 'cache_meta'").get()).toBeUndefined();
  });

  it('a file that is not an SQLite database is refused as such, untouched', async () => {
    writeFileSync(path, 'my notes, not a database\n'.repeat(200));
    const before = readFileSync(path);
    const error = await failure(() => sqliteBackend({ path }));
    expect(error.code).toBe('E_INVALID_OPTION');
    expect(error.message).toMatch(/is not an SQLite database/);
    // Deleting is suggested only for a damaged cache file, never as the way out for any file.
    expect(error.message).toMatch(/If it is a damaged cache file, delete it/);
    expect(error.message).not.toMatch(/or delete it/);
    expect(readFileSync(path).equals(before)).toBe(true);
  });

  it('an empty file and a cache store still open; only a cache store’s errors suggest deleting it', async () => {
    writeFileSync(path, '');
    const cache = sqliteBackend({ path });
    await cache.set('ns:a', entry('a'));
    await cache.close();
    const again = track(sqliteBackend({ path }));
    const shared = track(sqliteBackend({ database: track(new Database(path)) }));
    expect(await again.get('ns:a')).toBeDefined();
    // A store broken behind the backends' backs: the file is a cache, the connection an application's.
    track(new Database(path)).exec('DROP TABLE cache_entries');
    expect((await failure(() => again.get('ns:a'))).message).toMatch(/or delete it to start an empty cache$/);
    const error = await failure(() => shared.get('ns:a'));
    expect(error.code).toBe('E_BACKEND');
    expect(error.message).not.toMatch(/delete/);
  });
});

describe('keys and tags SQLite cannot keep apart', () => {
  const LONE_HIGH = '\uD83D'; // the first half of 😀
  const LONE_LOW = '\uDC00';

  it.each(KINDS)(
    '%s: writes refuse keys and tags with lone surrogates or NUL (E_INVALID_KEY)',
    async (kind) => {
      const backend = open(kind);
      const refused = [
        () => backend.set(`ns:${LONE_HIGH}`, entry('a')),
        () => backend.set('ns:a', entry('a', [`t${LONE_LOW}`])),
        () => backend.set('a\0b:1', entry('a')),
        () => backend.set('ns:a', entry('a', ['t\0'])),
        () =>
          backend.setMany([
            ['ns:fine', entry('fine')],
            [`ns:${LONE_LOW}`, entry('b')],
          ]),
        () => backend.add(`ns:${LONE_HIGH}`, entry('a')),
        () => backend.compareAndSwap(`ns:${LONE_HIGH}`, null, entry('a')),
        () => backend.compareAndSwap('ns:a', null, entry('a', [LONE_HIGH])),
      ];
      for (const write of refused) {
        const error = await failure(write);
        expect(error.code).toBe('E_INVALID_KEY');
        expect(error.message).toMatch(/lone surrogate|NUL/);
      }
      // Nothing was written, not even the valid entry of the refused batch.
      expect(await keysOf(backend)).toEqual([]);
      expect((await backend.stats()).entries).toBe(0);
    },
  );

  it.each(KINDS)(
    '%s: a malformed key or tag finds nothing and deletes nothing; a malformed prefix is refused',
    async (kind) => {
      const backend = open(kind);
      // U+FFFD is what SQLite turns a lone surrogate into.
      await backend.set('ns:\uFFFD', entry('replacement', ['\uFFFD']));
      expect(await backend.get(`ns:${LONE_HIGH}`)).toBeUndefined();
      expect(await backend.getMany([`ns:${LONE_HIGH}`, `ns:${LONE_LOW}`])).toEqual([undefined, undefined]);
      expect(await backend.peekMany!([`ns:${LONE_HIGH}`])).toEqual([undefined]);
      expect(await backend.has(`ns:${LONE_HIGH}`)).toBe(false);
      expect(await backend.delete(`ns:${LONE_HIGH}`)).toBe(false);
      expect(await backend.deleteByTag(LONE_LOW)).toBe(0);
      expect(await backend.compareAndSwap(`ns:\uFFFD`, text('other'), null)).toBe(false);
      for (const prefix of [`ns:${LONE_HIGH}`, LONE_LOW]) {
        for (const call of [
          () => backend.deleteByPrefix(prefix),
          () => keysOf(backend, prefix),
          () => backend.statsFor(prefix),
          () => backend.trim(prefix, { maxEntries: 0 }),
        ]) {
          expect((await failure(call)).code).toBe('E_INVALID_KEY');
        }
      }
      expect(await keysOf(backend)).toEqual(['ns:\uFFFD']);
      expect(await backend.deleteByTag('\uFFFD')).toBe(1);
    },
  );

  it('through the engine, storage keys differing only in lone surrogates are not served each other’s values', async () => {
    const cache = track(createCache({ store: track(sqliteBackend({ path })), memory: false }));
    const errors: unknown[] = [];
    cache.on('error', ({ error }) => errors.push(error));
    const prefix = cache.key('x').slice(0, cache.key('x').indexOf(':'));
    const first = { storageKey: `${prefix}:kv:${LONE_HIGH}` };
    const second = { storageKey: `${prefix}:kv:\uDBFF` };
    await cache.set(first, 'first');
    await cache.set(second, 'second');
    expect(await cache.get(first)).toBeUndefined();
    expect(errors.map((error) => (error as CacheError).code)).toEqual(['E_INVALID_KEY', 'E_INVALID_KEY']);
    // The engine's own keys are always well-formed: unicode keys and tags work as before.
    await cache.set('😀 ключ', 'value', { tags: ['tag 😀'] });
    expect(await cache.get('😀 ключ')).toBe('value');
    expect(await cache.invalidateTags(['tag 😀'])).toBe(1);
  });

  it('SQLite namespace totals stay right: a NUL before the first colon never reaches them', async () => {
    const backend = open('sqlite');
    expect((await failure(() => backend.set('a\0b:1', entry('x')))).code).toBe('E_INVALID_KEY');
    await backend.set('a:1', entry('xy'));
    expect(await backend.statsFor('a:')).toEqual({ entries: 1, bytes: 2 });
    expect(await backend.statsFor('a')).toEqual({ entries: 1, bytes: 2 });
    expect(await backend.statsFor('')).toEqual({ entries: 1, bytes: 2 });
  });
});

describe('values over SQLite’s length limit', () => {
  /** What better-sqlite3 sets SQLITE_LIMIT_LENGTH to. */
  const LIMIT = Math.min(1_000_000_000, constants.MAX_LENGTH, constants.MAX_STRING_LENGTH);
  // Zero-filled and never read: the pages are not touched, so this costs no real memory.
  const over = () => ({ value: new Uint8Array(LIMIT + 1) });

  it.each([
    ['unbounded', {}],
    ['bounded', { maxEntries: 1_000 }],
  ])('%s: set drops the old value and reports the limit, instead of serving it stale', async (_, options) => {
    const backend = track(sqliteBackend({ path, ...options }));
    await backend.set('ns:k', entry('old', ['t']));
    const error = await failure(() => backend.set('ns:k', over()));
    expect(error.code).toBe('E_INVALID_OPTION');
    expect(error.message).toContain(`a value of ${LIMIT + 1} bytes is over SQLite's length limit`);
    expect(error.message).toContain(`${LIMIT} bytes per entry`);
    expect(error.message).not.toMatch(/writable|delete it/);
    // better-sqlite3 refuses to bind it.
    expect(error.cause).toBeInstanceOf(RangeError);
    expect(await backend.get('ns:k')).toBeUndefined();
    expect(await backend.stats()).toMatchObject({ entries: 0, bytes: 0 });
    expect(await backend.deleteByTag('t')).toBe(0);
  });

  it('a row just over the limit (SQLITE_TOOBIG) is handled the same way', async () => {
    // Bounded: the refusal happens inside the write's transaction, which still commits the delete.
    const backend = track(sqliteBackend({ path, maxEntries: 1_000 }));
    await backend.set('ns:k', entry('old'));
    const error = await failure(() => backend.set('ns:k', { value: new Uint8Array(LIMIT - 8) }));
    expect(error.cause).toMatchObject({ code: 'SQLITE_TOOBIG' });
    expect(error.code).toBe('E_INVALID_OPTION');
    expect(error.message).toMatch(/over SQLite's length limit/);
    expect(await backend.get('ns:k')).toBeUndefined();
  }, 30_000);

  it('setMany writes the others, add and compareAndSwap change nothing, each with the clear error', async () => {
    const backend = track(sqliteBackend({ path }));
    await backend.set('ns:big', entry('old'));
    const error = await failure(() =>
      backend.setMany([
        ['ns:a', entry('a')],
        ['ns:big', over()],
        ['ns:b', entry('b')],
      ]),
    );
    expect(error.message).toMatch(/over SQLite's length limit/);
    expect(await keysOf(backend)).toEqual(['ns:a', 'ns:b']);
    expect((await failure(() => backend.add('ns:c', over()))).message).toMatch(/over SQLite's length limit/);
    expect(await backend.has('ns:c')).toBe(false);
    const swap = await failure(() => backend.compareAndSwap('ns:a', text('a'), over()));
    expect(swap.message).toMatch(/over SQLite's length limit/);
    expect(swap.message).not.toMatch(/was removed/);
    expect(new TextDecoder().decode((await backend.get('ns:a'))?.value)).toBe('a');
  });
});

describe('opening a database another connection has locked', () => {
  it('waits for the lock when reading the schema, as it does to migrate', async () => {
    // An application's own file, shared with the cache through `database` (rollback journal).
    const setup = new Database(path);
    setup.exec('CREATE TABLE app_rows (id INTEGER PRIMARY KEY)');
    setup.close();
    // Another process's connection holds an exclusive lock for 400 ms.
    const worker = new Worker(
      `const { workerData, parentPort } = require('node:worker_threads');
       const Database = require(workerData.driver);
       const db = new Database(workerData.path);
       db.exec('BEGIN EXCLUSIVE');
       db.exec('INSERT INTO app_rows DEFAULT VALUES');
       parentPort.postMessage('locked');
       Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 400);
       db.exec('COMMIT');
       db.close();`,
      { eval: true, workerData: { path, driver: createRequire(import.meta.url).resolve('better-sqlite3') } },
    );
    await new Promise((resolve) => worker.once('message', resolve));
    const database = new Database(path, { timeout: 50 });
    closing.push(database);
    const store = sqliteBackend({ database });
    await store.set('ns:k', { value: new Uint8Array([1]) });
    expect((await store.get('ns:k'))?.value).toEqual(new Uint8Array([1]));
    await store.close();
    await worker.terminate();
  });
});
