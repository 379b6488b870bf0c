/**
 * Conformance suite for `CacheBackend` implementations. Third-party backends run it from their
 * own tests:
 *
 * ```ts
 * import { runBackendConformance } from '@x/cache-core/testing';
 * runBackendConformance('my backend', () => ({ open: ({ clock }) => myBackend({ clock }) }));
 * ```
 *
 * Time is a fake clock the backend must use for expiry (and lock leases), so nothing sleeps.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CacheBackend, StoredEntry } from '../backends/backend.ts';
import { supportsCompareAndSwap } from '../backends/backend.ts';

export interface ConformanceClock {
  now(): number;
  /** Moves time forward by `ms`. */
  advance(ms: number): void;
}

export interface ConformanceContext {
  /** Pass it to the backend (e.g. its `clock` option): every expiry test advances it. */
  clock: ConformanceClock;
}

export interface ConformanceHarness {
  /** Opens the backend under test; for persistent backends, opening again after close() must see the same data. */
  open(ctx: ConformanceContext): CacheBackend | Promise<CacheBackend>;
  /** Called after each test (delete temp files, flush Redis db…). */
  cleanup?(): void | Promise<void>;
}

export interface ConformanceOptions {
  /** Run the close/reopen test. @default backend.capabilities.persistent */
  persistent?: boolean;
  /** Run the `add` tests. @default backend.capabilities.createIfAbsent */
  createIfAbsent?: boolean;
  /** Run the lock tests. @default backend.capabilities.locks */
  locks?: boolean;
  /** Size of the value in the large-value test. @default 10 MiB */
  largeValueBytes?: number;
  /** Run the `compareAndSwap` tests. @default backend.capabilities.compareAndSwap (or the method's presence) */
  compareAndSwap?: boolean;
}

/** Where the fake clock starts: a fixed instant, so failures reproduce. */
const START = Date.UTC(2030, 0, 1);

/**
 * Registers a vitest `describe` block that checks `harness` against the backend contract.
 * `harness` is called once per test, so each test gets its own harness state (e.g. a temp path).
 * Optional features default to what the backend's `capabilities` claim.
 */
export function runBackendConformance(
  name: string,
  harness: () => ConformanceHarness,
  options: ConformanceOptions = {},
): void {
  const largeValueBytes = options.largeValueBytes ?? 10 * 1024 * 1024;

  describe(`backend conformance: ${name}`, () => {
    let current: ConformanceHarness;
    let ctx: ConformanceContext;
    let backend: CacheBackend;
    const opened: CacheBackend[] = [];
    const closedByTest = new Set<CacheBackend>();

    const open = async (): Promise<CacheBackend> => {
      const instance = await current.open(ctx);
      opened.push(instance);
      return instance;
    };
    const feature = (flag: boolean | undefined, capability: keyof CacheBackend['capabilities']): boolean =>
      flag ?? backend.capabilities[capability] ?? false;

    beforeEach(async () => {
      let now = START;
      ctx = {
        clock: {
          now: () => now,
          advance: (ms) => {
            now += ms;
          },
        },
      };
      current = harness();
      backend = await open();
    });

    afterEach(async () => {
      // Close what the test left open; closing twice is not part of the contract.
      const closing = opened.splice(0);
      for (const each of closing) {
        if (!closedByTest.has(each)) await each.close();
      }
      closedByTest.clear();
      await current.cleanup?.();
    });

    const close = async (instance: CacheBackend): Promise<void> => {
      closedByTest.add(instance);
      await instance.close();
    };

    it('reports the contract version, a name and capabilities', () => {
      expect(backend.specificationVersion).toBe('v1');
      expect(typeof backend.name).toBe('string');
      expect(backend.name.length).toBeGreaterThan(0);
      for (const flag of ['createIfAbsent', 'locks', 'pubsub', 'persistent', 'shared'] as const) {
        expect(typeof backend.capabilities[flag]).toBe('boolean');
      }
      if (backend.capabilities.createIfAbsent) expect(typeof backend.add).toBe('function');
      if (backend.capabilities.locks) {
        expect(typeof backend.acquireLock).toBe('function');
        expect(typeof backend.releaseLock).toBe('function');
      }
    });

    it('gets, sets, checks and deletes', async () => {
      expect(await backend.get('ns:a:1')).toBeUndefined();
      expect(await backend.has('ns:a:1')).toBe(false);
      await backend.set('ns:a:1', entry('one'));
      expectEntry(await backend.get('ns:a:1'), 'one');
      expect(await backend.has('ns:a:1')).toBe(true);
      expect(await backend.delete('ns:a:1')).toBe(true);
      expect(await backend.get('ns:a:1')).toBeUndefined();
      expect(await backend.has('ns:a:1')).toBe(false);
      expect(await backend.delete('ns:a:1')).toBe(false);
    });

    it('returns values as Uint8Array and keeps expiresAt and tags', async () => {
      const expiresAt = ctx.clock.now() + 60_000;
      await backend.set('ns:a:1', { value: bytes('v'), expiresAt, tags: ['t1', 't2'] });
      const got = await backend.get('ns:a:1');
      expect(got?.value).toBeInstanceOf(Uint8Array);
      expect(got?.expiresAt).toBe(expiresAt);
      expect([...(got?.tags ?? [])].sort()).toEqual(['t1', 't2']);
      await backend.set('ns:a:2', entry('w'));
      const plain = await backend.get('ns:a:2');
      expect(plain?.expiresAt).toBeUndefined();
      expect(plain?.tags === undefined || plain.tags.length === 0).toBe(true);
    });

    it('overwrites an entry', async () => {
      await backend.set('ns:a:1', entry('first'));
      await backend.set('ns:a:1', entry('second value'));
      expectEntry(await backend.get('ns:a:1'), 'second value');
      const stats = await backend.stats();
      expect(stats.entries).toBe(1);
      expect(stats.bytes).toBe('second value'.length);
    });

    it('getMany keeps the order of the keys and reports misses as undefined', async () => {
      await backend.setMany([
        ['ns:a:1', entry('one')],
        ['ns:a:3', entry('three')],
      ]);
      const got = await backend.getMany(['ns:a:3', 'ns:a:2', 'ns:a:1', 'ns:a:3']);
      expect(got).toHaveLength(4);
      expectEntry(got[0], 'three');
      expect(got[1]).toBeUndefined();
      expectEntry(got[2], 'one');
      expectEntry(got[3], 'three');
      expect(await backend.getMany([])).toEqual([]);
    });

    it('peekMany, when offered, reads like getMany: order, misses and expiry', async (test) => {
      if (!backend.peekMany) return test.skip();
      const now = ctx.clock.now();
      await backend.set('ns:p:1', entry('one'));
      await backend.set('ns:p:short', { value: bytes('s'), expiresAt: now + 100, tags: ['t'] });
      const got = await backend.peekMany(['ns:p:short', 'ns:p:none', 'ns:p:1']);
      expectEntry(got[0], 's');
      expect(got[0]?.tags).toEqual(['t']);
      expect(got[1]).toBeUndefined();
      expectEntry(got[2], 'one');
      ctx.clock.advance(100);
      expect((await backend.peekMany(['ns:p:short', 'ns:p:1']))[0]).toBeUndefined();
      expect(await backend.peekMany([])).toEqual([]);
    });

    it('setMany stores every entry with its expiry and tags', async () => {
      const now = ctx.clock.now();
      await backend.setMany([
        ['ns:a:1', { value: bytes('one'), tags: ['odd'] }],
        ['ns:a:2', { value: bytes('two'), expiresAt: now + 1000 }],
        ['ns:a:3', { value: bytes('three'), tags: ['odd'] }],
      ]);
      await backend.setMany([]);
      expect((await backend.stats()).entries).toBe(3);
      ctx.clock.advance(1000);
      expect(await backend.get('ns:a:2')).toBeUndefined();
      expect(await backend.deleteByTag('odd')).toBe(2);
      expect(await collect(backend.keys())).toEqual([]);
    });

    it('treats entries as absent once expired, on every read', async () => {
      const now = ctx.clock.now();
      await backend.set('ns:a:short', { value: bytes('s'), expiresAt: now + 100 });
      await backend.set('ns:a:long', { value: bytes('l'), expiresAt: now + 10_000 });
      await backend.set('ns:a:forever', entry('f'));
      ctx.clock.advance(99);
      expectEntry(await backend.get('ns:a:short'), 's');
      ctx.clock.advance(1);
      expect(await backend.get('ns:a:short')).toBeUndefined();
      expect(await backend.has('ns:a:short')).toBe(false);
      const many = await backend.getMany(['ns:a:short', 'ns:a:long']);
      expect(many[0]).toBeUndefined();
      expectEntry(many[1], 'l');
      expect((await collect(backend.keys())).sort()).toEqual(['ns:a:forever', 'ns:a:long']);
      expect(await collect(backend.keys({ prefix: 'ns:a:s' }))).toEqual([]);
      expect(await backend.delete('ns:a:short')).toBe(false);
    });

    it('prune removes exactly the expired entries', async () => {
      const now = ctx.clock.now();
      await backend.set('ns:a:1', { value: bytes('1'), expiresAt: now + 100 });
      await backend.set('ns:a:2', { value: bytes('2'), expiresAt: now + 200 });
      await backend.set('ns:a:3', { value: bytes('3'), expiresAt: now + 5000 });
      await backend.set('ns:a:4', entry('4'));
      ctx.clock.advance(200);
      expect(await backend.prune()).toBe(2);
      expect(await backend.prune()).toBe(0);
      const stats = await backend.stats();
      expect(stats.entries).toBe(2);
      expect(stats.bytes).toBe(2);
      expect((await collect(backend.keys())).sort()).toEqual(['ns:a:3', 'ns:a:4']);
    });

    it('an overwrite replaces the expiry', async () => {
      const now = ctx.clock.now();
      await backend.set('ns:a:1', { value: bytes('old'), expiresAt: now + 100 });
      await backend.set('ns:a:1', entry('new'));
      ctx.clock.advance(1000);
      expectEntry(await backend.get('ns:a:1'), 'new');
      await backend.set('ns:a:1', { value: bytes('newer'), expiresAt: ctx.clock.now() + 100 });
      ctx.clock.advance(100);
      expect(await backend.get('ns:a:1')).toBeUndefined();
    });

    it('deleteByTag removes exactly the tagged entries', async () => {
      await backend.set('ns:a:1', { value: bytes('1'), tags: ['red'] });
      await backend.set('ns:a:2', { value: bytes('2'), tags: ['red', 'blue'] });
      await backend.set('ns:a:3', { value: bytes('3'), tags: ['blue'] });
      await backend.set('ns:a:4', entry('4'));
      expect(await backend.deleteByTag('red')).toBe(2);
      expect((await collect(backend.keys())).sort()).toEqual(['ns:a:3', 'ns:a:4']);
      expect(await backend.deleteByTag('red')).toBe(0);
      expect(await backend.deleteByTag('unknown')).toBe(0);
      expect(await backend.deleteByTag('blue')).toBe(1);
      expect(await collect(backend.keys())).toEqual(['ns:a:4']);
    });

    it('keeps tags consistent across overwrite and delete', async () => {
      await backend.set('ns:a:1', { value: bytes('1'), tags: ['old'] });
      await backend.set('ns:a:1', { value: bytes('1b'), tags: ['new'] });
      expect(await backend.deleteByTag('old')).toBe(0);
      expectEntry(await backend.get('ns:a:1'), '1b');
      expect(await backend.deleteByTag('new')).toBe(1);
      expect(await backend.has('ns:a:1')).toBe(false);

      await backend.set('ns:a:2', { value: bytes('2'), tags: ['gone'] });
      await backend.delete('ns:a:2');
      await backend.set('ns:a:2', entry('2 untagged'));
      expect(await backend.deleteByTag('gone')).toBe(0);
      expectEntry(await backend.get('ns:a:2'), '2 untagged');

      await backend.set('ns:a:3', { value: bytes('3'), tags: ['dup', 'dup'] });
      expect(await backend.deleteByTag('dup')).toBe(1);
    });

    it('deleteByPrefix removes exactly the keys under the prefix', async () => {
      for (const key of ['a:1', 'a:2', 'a:x:3', 'ab:1', 'a', 'b:a:1', 'A:1'])
        await backend.set(key, entry(key));
      expect(await backend.deleteByPrefix('a:')).toBe(3);
      expect((await collect(backend.keys())).sort()).toEqual(['A:1', 'a', 'ab:1', 'b:a:1']);
      expect(await backend.deleteByPrefix('a:')).toBe(0);
      expect(await backend.deleteByPrefix('ab')).toBe(1);
      expect((await collect(backend.keys())).sort()).toEqual(['A:1', 'a', 'b:a:1']);
    });

    it('deleteByPrefix and keys handle prefixes ending in non-ASCII characters', async () => {
      const keys = [
        '😀:1',
        '😀:2',
        '😁:1',
        '😀',
        'ÿ:1',
        'Ā:1',
        '\uffff:1',
        '\u{10000}:1',
        'x\u{10ffff}:1',
        'y:1',
      ];
      for (const key of keys) await backend.set(key, entry(key));
      expect((await collect(backend.keys({ prefix: '😀' }))).sort()).toEqual(['😀', '😀:1', '😀:2']);
      expect(await collect(backend.keys({ prefix: '\uffff' }))).toEqual(['\uffff:1']);
      expect(await backend.deleteByPrefix('😀:')).toBe(2);
      expect(await backend.deleteByPrefix('ÿ')).toBe(1);
      expect(await backend.deleteByPrefix('\uffff')).toBe(1);
      expect(await backend.deleteByPrefix('x\u{10ffff}')).toBe(1);
      expect((await collect(backend.keys())).sort()).toEqual(
        ['y:1', 'Ā:1', '\u{10000}:1', '😀', '😁:1'].sort(),
      );
    });

    it('clear removes everything', async () => {
      await backend.set('ns:a:1', { value: bytes('1'), tags: ['t'] });
      await backend.set('other:a:1', entry('2'));
      await backend.clear();
      expect(await collect(backend.keys())).toEqual([]);
      expect(await backend.get('ns:a:1')).toBeUndefined();
      const stats = await backend.stats();
      expect(stats.entries).toBe(0);
      expect(stats.bytes).toBe(0);
      expect(await backend.deleteByTag('t')).toBe(0);
      await backend.set('ns:a:1', entry('back'));
      expectEntry(await backend.get('ns:a:1'), 'back');
    });

    it('lists keys, with and without a prefix, across pages', async () => {
      const keys = Array.from({ length: 23 }, (_, i) => `ns:k:${String(i).padStart(2, '0')}`);
      for (const key of keys) await backend.set(key, entry(key));
      await backend.set('other:k:1', entry('o'));
      expect((await collect(backend.keys())).sort()).toEqual([...keys, 'other:k:1'].sort());
      expect((await collect(backend.keys({ prefix: 'ns:' }))).sort()).toEqual(keys);
      expect((await collect(backend.keys({ prefix: 'ns:', batchSize: 5 }))).sort()).toEqual(keys);
      expect((await collect(backend.keys({ prefix: 'ns:k:1', batchSize: 3 }))).sort()).toEqual(
        keys.filter((key) => key.startsWith('ns:k:1')),
      );
      expect(await collect(backend.keys({ prefix: 'none:' }))).toEqual([]);
    });

    it('reports entries and value bytes in stats', async () => {
      const empty = await backend.stats();
      expect(empty.entries).toBe(0);
      expect(empty.bytes).toBe(0);
      expect(empty.evictions).toBe(0);
      await backend.set('ns:a:1', { value: new Uint8Array(10) });
      await backend.set('ns:a:2', { value: new Uint8Array(32) });
      await backend.set('ns:a:2', { value: new Uint8Array(20) });
      expect(await backend.stats()).toMatchObject({ entries: 2, bytes: 30 });
      await backend.delete('ns:a:1');
      expect(await backend.stats()).toMatchObject({ entries: 1, bytes: 20 });
    });

    it('stores binary values with every byte value, and empty values', async () => {
      const all = Uint8Array.from({ length: 512 }, (_, i) => i % 256);
      await backend.set('ns:bin:1', { value: all });
      await backend.set('ns:bin:empty', { value: new Uint8Array(0) });
      // A view into a larger buffer must be stored as just its own bytes.
      const backing = Uint8Array.from({ length: 64 }, (_, i) => 255 - i);
      await backend.set('ns:bin:view', { value: backing.subarray(8, 24) });
      expect(equalBytes((await backend.get('ns:bin:1'))?.value, all)).toBe(true);
      const empty = await backend.get('ns:bin:empty');
      expect(empty).toBeDefined();
      expect(empty?.value.byteLength).toBe(0);
      expect(equalBytes((await backend.get('ns:bin:view'))?.value, backing.slice(8, 24))).toBe(true);
    });

    it(`stores a large value (${largeValueBytes} bytes)`, async () => {
      const large = new Uint8Array(largeValueBytes);
      for (let i = 0; i < large.length; i += 4096) large[i] = (i / 4096) % 251;
      large[large.length - 1] = 7;
      await backend.set('ns:large:1', { value: large });
      const got = await backend.get('ns:large:1');
      expect(got?.value.byteLength).toBe(largeValueBytes);
      expect(equalBytes(got?.value, large)).toBe(true);
      expect((await backend.stats()).bytes).toBe(largeValueBytes);
    });

    it('treats keys as opaque strings, unicode included', async () => {
      const keys = [
        'ns:emoji:👩‍👩‍👧‍👦🎉',
        'ns:cjk:緩存鍵の値',
        'ns:nfc:\u00e9',
        'ns:nfd:e\u0301',
        'ns:same:\u00e9',
        'ns:same:e\u0301',
        'ns:rtl:مرحبا',
        'ns:space: \t\n',
        'ns:quote:\'"%_\\',
      ];
      for (const [i, key] of keys.entries()) await backend.set(key, { value: bytes(`v${i}`), tags: [key] });
      for (const [i, key] of keys.entries()) expectEntry(await backend.get(key), `v${i}`);
      expect((await collect(backend.keys())).sort()).toEqual([...keys].sort());
      // Composed and decomposed forms are different keys.
      expect(await backend.delete('ns:same:\u00e9')).toBe(true);
      expectEntry(await backend.get('ns:same:e\u0301'), 'v5');
      expect(await backend.deleteByTag('ns:cjk:緩存鍵の値')).toBe(1);
      expect(await backend.deleteByPrefix('ns:emoji:👩')).toBe(1);
      // LIKE wildcards in a prefix are literal characters.
      expect(await backend.deleteByPrefix('ns:quote:\'"%')).toBe(1);
      expect(await backend.deleteByPrefix('ns:%')).toBe(0);
    });

    it('accepts 100 concurrent writers', async () => {
      const keys = Array.from({ length: 100 }, (_, i) => `ns:c:${i}`);
      await Promise.all(keys.map((key, i) => backend.set(key, { value: bytes(key), tags: [`g${i % 4}`] })));
      const got = await backend.getMany(keys);
      for (const [i, key] of keys.entries()) expectEntry(got[i], key);
      expect((await backend.stats()).entries).toBe(100);
      await Promise.all(keys.map((key, i) => backend.set(key, entry(`${key}#${i}`))));
      for (const key of keys.slice(0, 10)) expectEntry(await backend.get(key), `${key}#${keys.indexOf(key)}`);
      expect(await backend.deleteByTag('g1')).toBe(0);
    });

    it('add creates only when absent (capability createIfAbsent)', async (test) => {
      if (!feature(options.createIfAbsent, 'createIfAbsent')) return test.skip();
      const add = backend.add!.bind(backend);
      const now = ctx.clock.now();
      expect(await add('ns:add:1', { value: bytes('first'), expiresAt: now + 100 })).toBe(true);
      expect(await add('ns:add:1', entry('second'))).toBe(false);
      expectEntry(await backend.get('ns:add:1'), 'first');
      ctx.clock.advance(100);
      expect(await add('ns:add:1', { value: bytes('third'), tags: ['t'] })).toBe(true);
      expectEntry(await backend.get('ns:add:1'), 'third');
      expect(await backend.deleteByTag('t')).toBe(1);
      await backend.set('ns:add:2', entry('set'));
      expect(await add('ns:add:2', entry('add'))).toBe(false);
    });

    it('add is atomic under concurrency (capability createIfAbsent)', async (test) => {
      if (!feature(options.createIfAbsent, 'createIfAbsent')) return test.skip();
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => backend.add!('ns:add:race', entry(`writer ${i}`))),
      );
      expect(results.filter(Boolean)).toHaveLength(1);
      expectEntry(await backend.get('ns:add:race'), `writer ${results.indexOf(true)}`);
    });

    it('locks are exclusive, released by their owner only, and expire (capability locks)', async (test) => {
      if (!feature(options.locks, 'locks')) return test.skip();
      const acquire = backend.acquireLock!.bind(backend);
      const release = backend.releaseLock!.bind(backend);
      expect(await acquire('job', 'alice', 1000)).toBe(true);
      expect(await acquire('job', 'bob', 1000)).toBe(false);
      expect(await acquire('other job', 'bob', 1000)).toBe(true);
      expect(await release('job', 'bob')).toBe(false);
      expect(await acquire('job', 'bob', 1000)).toBe(false);
      expect(await release('job', 'alice')).toBe(true);
      expect(await release('job', 'alice')).toBe(false);
      expect(await acquire('job', 'bob', 1000)).toBe(true);
      ctx.clock.advance(999);
      expect(await acquire('job', 'carol', 1000)).toBe(false);
      ctx.clock.advance(1);
      expect(await acquire('job', 'carol', 1000)).toBe(true);
      expect(await release('job', 'bob')).toBe(false);
      expect(await acquire('job', 'bob', 1000)).toBe(false);
      expect(await release('job', 'carol')).toBe(true);
    });

    it('persists across close and reopen (capability persistent)', async (test) => {
      if (!feature(options.persistent, 'persistent')) return test.skip();
      const now = ctx.clock.now();
      await backend.set('ns:p:1', { value: bytes('kept'), tags: ['t'] });
      await backend.set('ns:p:2', { value: bytes('expiring'), expiresAt: now + 1000 });
      await backend.set('ns:p:3', { value: Uint8Array.from({ length: 256 }, (_, i) => i) });
      await close(backend);
      const reopened = await open();
      expectEntry(await reopened.get('ns:p:1'), 'kept');
      expectEntry(await reopened.get('ns:p:2'), 'expiring');
      expect((await reopened.get('ns:p:3'))?.value).toEqual(Uint8Array.from({ length: 256 }, (_, i) => i));
      expect(await reopened.stats()).toMatchObject({ entries: 3, bytes: 4 + 8 + 256 });
      ctx.clock.advance(1000);
      expect(await reopened.get('ns:p:2')).toBeUndefined();
      expect(await reopened.deleteByTag('t')).toBe(1);
      expect((await collect(reopened.keys())).sort()).toEqual(['ns:p:3']);
    });

    const swaps = (): boolean => options.compareAndSwap ?? supportsCompareAndSwap(backend);

    it('compareAndSwap creates only when absent, expired entries included (capability compareAndSwap)', async (test) => {
      if (!swaps()) return test.skip();
      const swap = backend.compareAndSwap!.bind(backend);
      const now = ctx.clock.now();
      expect(await swap('ns:cas:1', null, { value: bytes('first'), expiresAt: now + 100 })).toBe(true);
      expect(await swap('ns:cas:1', null, entry('second'))).toBe(false);
      expectEntry(await backend.get('ns:cas:1'), 'first');
      ctx.clock.advance(100);
      // An expired entry is absent: its old bytes no longer match, and "absent" does.
      expect(await swap('ns:cas:1', bytes('first'), entry('stale match'))).toBe(false);
      expect(await swap('ns:cas:1', null, entry('third'))).toBe(true);
      expectEntry(await backend.get('ns:cas:1'), 'third');
    });

    it('compareAndSwap replaces or deletes only on the exact bytes (capability compareAndSwap)', async (test) => {
      if (!swaps()) return test.skip();
      const swap = backend.compareAndSwap!.bind(backend);
      await backend.set('ns:cas:2', entry('v1'));
      expect(await swap('ns:cas:2', bytes('v0'), entry('v2'))).toBe(false);
      expect(await swap('ns:cas:2', bytes('v1 '), entry('v2'))).toBe(false);
      expect(await swap('ns:cas:2', bytes('v'), entry('v2'))).toBe(false);
      expectEntry(await backend.get('ns:cas:2'), 'v1');
      expect(await swap('ns:cas:2', bytes('v1'), entry('v2'))).toBe(true);
      expectEntry(await backend.get('ns:cas:2'), 'v2');
      // Compared as bytes, not text: every byte value, empty values too.
      const binary = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) % 256);
      expect(await swap('ns:cas:2', bytes('v2'), { value: binary })).toBe(true);
      const flipped = binary.slice();
      flipped[299] = (flipped[299]! + 1) % 256;
      expect(await swap('ns:cas:2', flipped, entry('nope'))).toBe(false);
      expect(await swap('ns:cas:2', binary, { value: new Uint8Array(0) })).toBe(true);
      expect(await swap('ns:cas:2', new Uint8Array(0), null)).toBe(true);
      expect(await backend.has('ns:cas:2')).toBe(false);
      expect(await swap('ns:cas:2', bytes('v2'), null)).toBe(false);
      expect((await backend.stats()).entries).toBe(0);
    });

    it('compareAndSwap keeps expiry and tags like set (capability compareAndSwap)', async (test) => {
      if (!swaps()) return test.skip();
      const swap = backend.compareAndSwap!.bind(backend);
      const now = ctx.clock.now();
      expect(await swap('ns:cas:3', null, { value: bytes('a'), tags: ['old'] })).toBe(true);
      expect(
        await swap('ns:cas:3', bytes('a'), { value: bytes('b'), tags: ['new'], expiresAt: now + 50 }),
      ).toBe(true);
      expect(await backend.deleteByTag('old')).toBe(0);
      expect((await backend.get('ns:cas:3'))?.expiresAt).toBe(now + 50);
      expect(await swap('ns:cas:3', bytes('b'), { value: bytes('c'), tags: ['new'] })).toBe(true);
      expect(await backend.deleteByTag('new')).toBe(1);
      // A write that is already expired leaves nothing behind.
      await backend.set('ns:cas:4', entry('x'));
      expect(await swap('ns:cas:4', bytes('x'), { value: bytes('y'), expiresAt: now - 1 })).toBe(true);
      expect(await backend.get('ns:cas:4')).toBeUndefined();
    });

    it('compareAndSwap is atomic: concurrent read-modify-write loses no update (capability compareAndSwap)', async (test) => {
      if (!swaps()) return test.skip();
      const swap = backend.compareAndSwap!.bind(backend);
      const racers = await Promise.all(
        Array.from({ length: 20 }, (_, i) => swap('ns:cas:race', null, entry(`writer ${i}`))),
      );
      expect(racers.filter(Boolean)).toHaveLength(1);
      const increment = async (): Promise<number> => {
        for (let attempts = 1; ; attempts++) {
          const current = await backend.get('ns:cas:counter');
          const value = current ? Number(new TextDecoder().decode(current.value)) : 0;
          if (await swap('ns:cas:counter', current?.value ?? null, entry(String(value + 1)))) return attempts;
        }
      };
      const attempts = await Promise.all(Array.from({ length: 25 }, () => increment()));
      expectEntry(await backend.get('ns:cas:counter'), '25');
      expect(attempts.every((n) => n >= 1)).toBe(true);
    });
  });
}

function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function entry(text: string): StoredEntry {
  return { value: bytes(text) };
}

function expectEntry(got: StoredEntry | undefined, text: string): void {
  expect(got, `expected an entry holding "${text}"`).toBeDefined();
  expect(new TextDecoder().decode(got?.value)).toBe(text);
}

function equalBytes(actual: Uint8Array | undefined, expected: Uint8Array): boolean {
  if (actual === undefined || actual.byteLength !== expected.byteLength) return false;
  // Buffer.compare is a memcmp: comparing 10 MiB element by element through expect is slow.
  return Buffer.compare(actual, expected) === 0;
}

async function collect(iterable: AsyncIterable<string>): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of iterable) keys.push(key);
  return keys;
}
