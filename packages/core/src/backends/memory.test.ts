import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CacheError } from '../errors.ts';
import { isSyncBackend } from './backend.ts';
import type { MemoryEvictionReason } from './memory.ts';
import { memoryBackend } from './memory.ts';

function fakeClock(start = 1_000) {
  let now = start;
  return {
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

const bytes = (size: number, fill = 1) => new Uint8Array(size).fill(fill);
const text = (value: string) => new TextEncoder().encode(value);

function recorder() {
  const evicted: [string, MemoryEvictionReason][] = [];
  return { evicted, onEvict: (key: string, reason: MemoryEvictionReason) => evicted.push([key, reason]) };
}

async function keysOf(backend: { keys(): AsyncIterable<string> }): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of backend.keys()) keys.push(key);
  return keys;
}

describe('memoryBackend', () => {
  it('describes itself and exposes the sync fast path', () => {
    const backend = memoryBackend();
    expect(backend.name).toBe('memory');
    expect(isSyncBackend(backend)).toBe(true);
    expect(backend.capabilities).toEqual({
      createIfAbsent: true,
      locks: false,
      pubsub: false,
      persistent: false,
      shared: false,
    });
  });

  it('evicts the least recently used entry beyond maxEntries, counting reads as use', async () => {
    const { evicted, onEvict } = recorder();
    const backend = memoryBackend({ maxEntries: 3, onEvict });
    backend.setSync('n:a', { value: text('a') });
    backend.setSync('n:b', { value: text('b') });
    backend.setSync('n:c', { value: text('c') });
    expect(backend.getSync('n:a')).toBeDefined();
    backend.setSync('n:d', { value: text('d') });
    expect(evicted).toEqual([['n:b', 'size']]);
    expect((await keysOf(backend)).sort()).toEqual(['n:a', 'n:c', 'n:d']);
    // Overwriting is a use too.
    backend.setSync('n:c', { value: text('c2') });
    backend.setSync('n:e', { value: text('e') });
    expect(evicted.at(-1)).toEqual(['n:a', 'size']);
    expect(await backend.stats()).toEqual({ entries: 3, bytes: 4, evictions: 2 });
  });

  it('never evicts idempotency records or their blobs, and keeps them outside the bounds', async () => {
    const { evicted, onEvict } = recorder();
    const clock = fakeClock();
    const backend = memoryBackend({ maxEntries: 2, clock, onEvict });
    const record = '~ledger/ns:idem:k1';
    const blob = '~ledger/ns:blob:h1';
    await backend.compareAndSwap(record, null, { value: text('r'), expiresAt: clock.now() + 100 });
    await backend.compareAndSwap(blob, null, { value: text('b') });
    // Records and blobs are not counted: two cache entries fit beside them.
    await backend.set('n:a', { value: text('a') });
    await backend.set('n:b', { value: text('b') });
    expect(evicted).toEqual([]);
    // Over the bound: the least recently used cache entry goes, although the record and blob are older.
    await backend.set('n:c', { value: text('c') });
    expect(evicted).toEqual([['n:a', 'size']]);
    // However many records there are, cache entries keep their room; the history is not a record.
    for (let i = 2; i < 50; i++)
      await backend.compareAndSwap(`~ledger/ns:idem:k${i}`, null, { value: text('r') });
    await backend.set('~ledger/ns:hist:t::1', { value: text('h') });
    await backend.set('n:d', { value: text('d') });
    expect(await backend.has('n:d')).toBe(true);
    expect(await backend.has(record)).toBe(true);
    expect(await backend.has(blob)).toBe(true);
    expect((await backend.stats()).entries).toBe(50 + 2);
    // They still leave when they expire.
    clock.advance(100);
    await backend.set('n:e', { value: text('e') });
    expect(await backend.has(record)).toBe(false);
  });

  it('has() and keys() do not count as use', async () => {
    const { evicted, onEvict } = recorder();
    const backend = memoryBackend({ maxEntries: 2, onEvict });
    await backend.set('n:a', { value: text('a') });
    await backend.set('n:b', { value: text('b') });
    expect(await backend.has('n:a')).toBe(true);
    await keysOf(backend);
    await backend.set('n:c', { value: text('c') });
    expect(evicted).toEqual([['n:a', 'size']]);
  });

  it('bounds bytes by the documented footprint: value bytes + 2 per key and tag character', async () => {
    const { evicted, onEvict } = recorder();
    // Each entry: 10 value bytes + 2 * 3 key chars = 16; three fit in 50, a fourth does not.
    const backend = memoryBackend({ maxBytes: 50, onEvict });
    for (const key of ['n:1', 'n:2', 'n:3']) await backend.set(key, { value: bytes(10) });
    expect(evicted).toEqual([]);
    await backend.set('n:4', { value: bytes(10) });
    expect(evicted).toEqual([['n:1', 'size']]);
    // Tags count too: 10 + 6 + 2 * 10 = 36 leaves room for only this entry and nothing else of 16.
    await backend.set('n:5', { value: bytes(10), tags: ['0123456789'] });
    expect((await keysOf(backend)).sort()).toEqual(['n:5']);
    expect((await backend.stats()).bytes).toBe(10);
  });

  it('never holds more than maxBytes, whatever the write sequence', async () => {
    const maxBytes = 1000;
    const backend = memoryBackend({ maxBytes });
    let seed = 7;
    const random = () => {
      seed = (seed * 48271) % 2147483647;
      return seed / 2147483647;
    };
    for (let i = 0; i < 2000; i++) {
      const key = `n:${Math.floor(random() * 50)}`;
      await backend.set(key, {
        value: bytes(Math.floor(random() * 300)),
        tags: random() < 0.3 ? ['t'] : undefined,
      });
      let footprint = 0;
      for (const each of await keysOf(backend)) {
        const stored = backend.getSync(each)!;
        footprint += stored.value.byteLength + 2 * (each.length + (stored.tags ?? []).join('').length);
      }
      expect(footprint).toBeLessThanOrEqual(maxBytes);
    }
  });

  it('does not store a value larger than maxBytes, and drops the value it would replace', async () => {
    const { evicted, onEvict } = recorder();
    const backend = memoryBackend({ maxBytes: 100, onEvict });
    await backend.set('n:small', { value: bytes(10) });
    await backend.set('n:big', { value: bytes(50) });
    await backend.set('n:big', { value: bytes(200) });
    expect(await backend.get('n:big')).toBeUndefined();
    expect(await backend.get('n:small')).toBeDefined();
    expect(evicted).toEqual([]);
    expect(await backend.stats()).toMatchObject({ entries: 1, bytes: 10 });
  });

  it('compareAndSwap refuses a value over maxBytes instead of reporting a write it did not make', async () => {
    const backend = memoryBackend({ maxBytes: 1_000 });
    const big = { value: new Uint8Array(5_000) };
    const attempt = await backend.compareAndSwap('k', null, big).catch((error) => error);
    expect(CacheError.isInstance(attempt) && attempt.code).toBe('E_INVALID_OPTION');
    expect(backend.getSync('k')).toBeUndefined();
    expect(await backend.compareAndSwap('k', null, { value: text('small') })).toBe(true);
    await expect(backend.compareAndSwap('k', text('small'), big)).rejects.toThrow(/maxBytes/);
    expect(backend.getSync('k')?.value).toEqual(text('small'));
  });

  it('removes expired entries lazily on read and reports them as expired', async () => {
    const clock = fakeClock();
    const { evicted, onEvict } = recorder();
    const backend = memoryBackend({ clock, onEvict });
    backend.setSync('n:a', { value: text('a'), expiresAt: clock.now() + 10, tags: ['t'] });
    clock.advance(10);
    expect(backend.getSync('n:a')).toBeUndefined();
    expect(evicted).toEqual([['n:a', 'expired']]);
    expect(await backend.stats()).toMatchObject({ entries: 0, bytes: 0, evictions: 0 });
    expect(await backend.deleteByTag('t')).toBe(0);
  });

  it('prefers reporting an expired LRU victim as expired, and does not count it as an eviction', async () => {
    const clock = fakeClock();
    const { evicted, onEvict } = recorder();
    const backend = memoryBackend({ clock, maxEntries: 2, onEvict });
    await backend.set('n:a', { value: text('a'), expiresAt: clock.now() + 5 });
    await backend.set('n:b', { value: text('b') });
    clock.advance(5);
    await backend.set('n:c', { value: text('c') });
    expect(evicted).toEqual([['n:a', 'expired']]);
    expect((await backend.stats()).evictions).toBe(0);
  });

  it('prune sweeps expired entries and reports each to onEvict', async () => {
    const clock = fakeClock();
    const { evicted, onEvict } = recorder();
    const backend = memoryBackend({ clock, onEvict });
    for (let i = 0; i < 10; i++) await backend.set(`n:${i}`, { value: bytes(1), expiresAt: clock.now() + i });
    clock.advance(5);
    expect(await backend.prune()).toBe(6);
    expect(evicted.map(([key]) => key).sort()).toEqual(['n:0', 'n:1', 'n:2', 'n:3', 'n:4', 'n:5']);
    expect(evicted.every(([, reason]) => reason === 'expired')).toBe(true);
    expect((await backend.stats()).entries).toBe(4);
  });

  it('keeps the tag index consistent through eviction', async () => {
    const backend = memoryBackend({ maxEntries: 2 });
    await backend.set('n:a', { value: text('a'), tags: ['shared', 'a'] });
    await backend.set('n:b', { value: text('b'), tags: ['shared'] });
    await backend.set('n:c', { value: text('c'), tags: ['shared'] });
    expect(await backend.deleteByTag('a')).toBe(0);
    expect(await backend.deleteByTag('shared')).toBe(2);
    expect(await backend.stats()).toMatchObject({ entries: 0, bytes: 0 });
  });

  it('copies tags so that mutating the caller array cannot desync the index', async () => {
    const backend = memoryBackend();
    const tags = ['before'];
    await backend.set('n:a', { value: text('a'), tags });
    tags[0] = 'after';
    expect(await backend.deleteByTag('after')).toBe(0);
    expect(await backend.deleteByTag('before')).toBe(1);
  });

  it('statsFor reports namespaces, tiers and arbitrary prefixes', async () => {
    const backend = memoryBackend();
    await backend.set('t1/ns:a:1', { value: bytes(10) });
    await backend.set('t1/ns:b:1', { value: bytes(20) });
    await backend.set('t1/other:a:1', { value: bytes(5) });
    await backend.set('t2/ns:a:1', { value: bytes(7) });
    await backend.set('t1/loose', { value: bytes(3) });
    expect(await backend.statsFor('t1/ns:')).toEqual({ entries: 2, bytes: 30 });
    expect(await backend.statsFor('t1/')).toEqual({ entries: 4, bytes: 38 });
    expect(await backend.statsFor('t1/ns:a:')).toEqual({ entries: 1, bytes: 10 });
    expect(await backend.statsFor('t3/ns:')).toEqual({ entries: 0, bytes: 0 });
    expect(await backend.statsFor('')).toEqual({ entries: 5, bytes: 45 });
    await backend.delete('t1/ns:a:1');
    await backend.set('t1/ns:b:1', { value: bytes(1) });
    expect(await backend.statsFor('t1/ns:')).toEqual({ entries: 1, bytes: 1 });
    await backend.clear();
    expect(await backend.statsFor('t1/')).toEqual({ entries: 0, bytes: 0 });
  });

  it('trim evicts least recently used entries under the prefix only', async () => {
    const clock = fakeClock();
    const { evicted, onEvict } = recorder();
    const backend = memoryBackend({ clock, onEvict });
    for (const key of ['q:1', 'other:1', 'q:2', 'q:3', 'other:2', 'q:4'])
      await backend.set(key, { value: bytes(10) });
    backend.getSync('q:1');
    expect(await backend.trim('q:', { maxEntries: 2 })).toBe(2);
    expect(evicted).toEqual([
      ['q:2', 'quota'],
      ['q:3', 'quota'],
    ]);
    expect((await keysOf(backend)).sort()).toEqual(['other:1', 'other:2', 'q:1', 'q:4']);
    expect(await backend.trim('q:', { maxBytes: 10 })).toBe(1);
    expect(await backend.statsFor('q:')).toEqual({ entries: 1, bytes: 10 });
    expect(await backend.trim('q:', { maxEntries: 5 })).toBe(0);
    expect(await backend.trim('q:', {})).toBe(0);
    expect((await backend.stats()).evictions).toBe(3);
  });

  it('trim reports expired entries it meets as expired', async () => {
    const clock = fakeClock();
    const { evicted, onEvict } = recorder();
    const backend = memoryBackend({ clock, onEvict });
    await backend.set('q:1', { value: bytes(1), expiresAt: clock.now() + 1 });
    await backend.set('q:2', { value: bytes(1) });
    clock.advance(1);
    expect(await backend.trim('q:', { maxEntries: 1 })).toBe(1);
    expect(evicted).toEqual([['q:1', 'expired']]);
    expect((await backend.stats()).evictions).toBe(0);
  });

  it('trim names only the live entries it evicted to onEvicted, as SQLite does', async () => {
    const clock = fakeClock();
    const backend = memoryBackend({ clock });
    await backend.set('q:1', { value: bytes(1), expiresAt: clock.now() + 1 });
    await backend.set('q:2', { value: bytes(1) });
    await backend.set('q:3', { value: bytes(1) });
    clock.advance(1);
    const named: string[] = [];
    // Two must go: the expired one (swept, not an eviction), then the least recently used.
    expect(await backend.trim('q:', { maxEntries: 1 }, (key) => named.push(key))).toBe(2);
    expect(named).toEqual(['q:2']);
    expect((await backend.stats()).evictions).toBe(1);
  });

  it('rejects invalid options with a fix in the message', () => {
    expect(() => memoryBackend({ maxEntries: -1 })).toThrowError(/maxEntries must be a non-negative integer/);
    expect(() => memoryBackend({ maxBytes: 1.5 })).toThrowError(/maxBytes/);
    try {
      memoryBackend({ maxEntries: Number.NaN });
    } catch (error) {
      expect(CacheError.isInstance(error) && error.code).toBe('E_INVALID_OPTION');
    }
  });

  it('rejects use after close, while getSync just misses', async () => {
    const backend = memoryBackend();
    await backend.set('n:a', { value: text('a') });
    await backend.close();
    await backend.close();
    expect(backend.getSync('n:a')).toBeUndefined();
    await expect(backend.get('n:a')).rejects.toMatchObject({ code: 'E_CLOSED' });
    expect(() => backend.setSync('n:a', { value: text('a') })).toThrowError(/closed/);
  });

  it('keeps heap overhead under 50% of the payload for 100k entries of 2 KB', () => {
    // A child process: measuring needs --expose-gc and a heap that no other test shares.
    const dir = mkdtempSync(join(tmpdir(), 'cache-memory-'));
    try {
      const script = join(dir, 'measure.mjs');
      const memoryModule = pathToFileURL(fileURLToPath(new URL('./memory.ts', import.meta.url))).href;
      writeFileSync(
        script,
        `import { memoryBackend } from ${JSON.stringify(memoryModule)};
const N = 100_000, SIZE = 2048;
const backend = memoryBackend({ maxEntries: N, maxBytes: 2 ** 30 });
gc(); gc();
const before = process.memoryUsage();
for (let i = 0; i < N; i++) {
  const key = 'responses/default:chat:' + i.toString(16).padStart(64, '0');
  backend.setSync(key, { value: new Uint8Array(SIZE), expiresAt: Date.now() + 1e9, tags: ['responses/default#user'] });
}
gc(); gc();
const after = process.memoryUsage();
const used = after.heapUsed - before.heapUsed + after.arrayBuffers - before.arrayBuffers;
const stats = await backend.stats();
process.stdout.write(JSON.stringify({ overhead: (used - N * SIZE) / (N * SIZE), entries: stats.entries }));
`,
      );
      const output = execFileSync(
        process.execPath,
        ['--expose-gc', '--experimental-strip-types', '--no-warnings', script],
        { encoding: 'utf8' },
      );
      const { overhead, entries } = JSON.parse(output) as { overhead: number; entries: number };
      expect(entries).toBe(100_000);
      expect(overhead).toBeLessThanOrEqual(0.5);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
