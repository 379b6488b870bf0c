import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { memoryBackend } from './backends/memory.ts';
import { sqliteBackend } from './backends/sqlite.ts';
import type { Cache, CacheOptions } from './cache.ts';
import { createCache } from './cache.ts';
import { CacheError, QuotaExceededError } from './errors.ts';
import type { Usage } from './stats/pricing.ts';

function manualClock(start = 1_700_000_000_000) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

let dir: string;
const open: Cache[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'x-cache-'));
});

afterEach(async () => {
  for (const cache of open.splice(0)) await cache.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The same backend, answering `method` 30 ms late (as a remote store can). */
function slowReads<B extends object>(
  backend: B,
  method: 'get' | 'getMany' | 'deleteByPrefix' | 'set',
  delayMs = 30,
): B {
  return new Proxy(backend, {
    get(target, property) {
      const member = Reflect.get(target, property, target);
      if (typeof member !== 'function') return member;
      if (property !== method) return member.bind(target);
      return async (...args: unknown[]) => {
        const found = await member.apply(target, args);
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        return found;
      };
    },
  });
}

function make(options: CacheOptions = {}): Cache {
  const cache = createCache(options);
  open.push(cache);
  return cache;
}

function counter<T>(value: T) {
  const fn = async () => {
    fn.calls++;
    return typeof value === 'function' ? (value as () => T)() : value;
  };
  fn.calls = 0;
  return fn;
}

describe('createCache > getOrCompute', () => {
  it('computes once, then serves the stored value as a hit', async () => {
    const cache = make();
    const compute = counter({ text: 'hello' });
    const key = { name: 'chat', request: { model: 'gpt-4o-mini', prompt: 'hi' } };
    expect(await cache.getOrCompute(key, compute)).toEqual({ text: 'hello' });
    const second = await cache.getOrComputeResult(key, compute);
    expect(second).toMatchObject({ value: { text: 'hello' }, hit: true, level: 'memory', tier: 'responses' });
    expect(compute.calls).toBe(1);
    const stats = await cache.stats();
    expect(stats).toMatchObject({ hits: 1, misses: 1, sets: 1, hitRate: 0.5 });
  });

  it('never hands two callers the same mutable object', async () => {
    const cache = make();
    const key = { name: 'chat', request: 'p' };
    await cache.getOrCompute(key, async () => ({ list: [1] }));
    const a = await cache.get<{ list: number[] }>(key);
    a!.list.push(2);
    expect(await cache.get(key)).toEqual({ list: [1] });
  });

  it('keys on the whole request: key order does not matter, any field does', async () => {
    const cache = make();
    const compute = counter('x');
    await cache.getOrCompute({ name: 'chat', request: { a: 1, b: 2 } }, compute);
    await cache.getOrCompute({ name: 'chat', request: { b: 2, a: 1 } }, compute);
    expect(compute.calls).toBe(1);
    await cache.getOrCompute({ name: 'chat', request: { a: 1, b: 3 } }, compute);
    await cache.getOrCompute({ name: 'other', request: { a: 1, b: 2 } }, compute);
    expect(compute.calls).toBe(3);
  });

  it('expires entries after their TTL (strings like 7d and ttlHours)', async () => {
    const clock = manualClock();
    const cache = make({ clock });
    const compute = counter('v');
    await cache.getOrCompute('a', compute, { ttl: '2h' });
    await cache.getOrCompute('b', compute, { ttlHours: 1 });
    clock.advance(59 * 60_000);
    await cache.getOrCompute('a', compute);
    await cache.getOrCompute('b', compute);
    expect(compute.calls).toBe(2);
    clock.advance(2 * 60_000);
    await cache.getOrCompute('b', compute);
    expect(compute.calls).toBe(3);
    await cache.getOrCompute('a', compute);
    expect(compute.calls).toBe(3);
    clock.advance(60 * 60_000);
    await cache.getOrCompute('a', compute);
    expect(compute.calls).toBe(4);
  });

  it('uses the tier default TTL (responses keep 7 days)', async () => {
    const clock = manualClock();
    const cache = make({ clock });
    const compute = counter('v');
    await cache.getOrCompute('k', compute);
    clock.advance(6 * 86_400_000);
    await cache.getOrCompute('k', compute);
    expect(compute.calls).toBe(1);
    clock.advance(2 * 86_400_000);
    await cache.getOrCompute('k', compute);
    expect(compute.calls).toBe(2);
  });

  it('rejects a malformed TTL with a typed error naming the accepted forms', async () => {
    const cache = make();
    const error = await cache.getOrCompute('k', async () => 1, { ttl: '7 days' as never }).catch((e) => e);
    expect(CacheError.isInstance(error)).toBe(true);
    expect(error.code).toBe('E_INVALID_OPTION');
    expect(error.message).toContain("'7d'");
  });

  it('forceRefresh recomputes and replaces; noStore leaves the cache untouched', async () => {
    const cache = make();
    let n = 0;
    const compute = async () => ++n;
    expect(await cache.getOrCompute('k', compute)).toBe(1);
    expect(await cache.getOrCompute('k', compute, { forceRefresh: true })).toBe(2);
    expect(await cache.getOrCompute('k', compute)).toBe(2);
    expect(await cache.getOrCompute('other', compute, { noStore: true })).toBe(3);
    expect(await cache.has('other')).toBe(false);
  });

  it('a forced call computes itself instead of joining a computation already on its way', async () => {
    const cache = make();
    let computes = 0;
    const first = cache.getOrCompute('k', async () => {
      computes++;
      await new Promise((resolve) => setTimeout(resolve, 50));
      return 'first';
    });
    // The first call is computing (its flight registered) before the forced one starts.
    while (computes === 0) await new Promise((resolve) => setImmediate(resolve));
    const forced = cache.getOrCompute(
      'k',
      async () => {
        computes++;
        return 'forced';
      },
      { forceRefresh: true },
    );
    expect(await forced).toBe('forced');
    expect(await first).toBe('first');
    expect(computes).toBe(2);
  });

  it('forced calls made at once share one computation', async () => {
    const cache = make();
    let computes = 0;
    const compute = async () => {
      computes++;
      await new Promise((resolve) => setTimeout(resolve, 20));
      return computes;
    };
    const forced = await Promise.all(
      [1, 2, 3].map(() => cache.getOrCompute('k', compute, { forceRefresh: true })),
    );
    expect(forced).toEqual([1, 1, 1]);
    expect(computes).toBe(1);
  });

  it('a slow bulk call that answers does not end a stall: only a lookup answered in time does', async () => {
    const slow = slowReads(
      slowReads(sqliteBackend({ path: join(dir, 'stall-bulk.db') }), 'get', 300),
      'deleteByPrefix',
      400,
    );
    const cache = make({
      store: { backend: slow, timeout: 50, bulkTimeout: '2s', breaker: false },
      memory: false,
    });
    const failed: string[] = [];
    cache.on('error', (event) => failed.push(event.operation));
    // Started before the stall, under the long bulk deadline.
    const clearing = cache.clear();
    expect(await cache.getOrCompute('a', () => 'A')).toBe('A');
    expect(failed).toEqual(['get']);
    await clearing;
    // Reads still take 300 ms: the level stays stalled and the next call skips it at once.
    const started = performance.now();
    expect(await cache.getOrCompute('b', () => 'B')).toBe('B');
    expect(failed).toEqual(['get']);
    expect(performance.now() - started).toBeLessThan(45);
  });

  it('admits values through shouldCache and never stores undefined', async () => {
    const cache = make();
    const compute = counter({ finishReason: 'length' });
    const shouldCache = (value: { finishReason: string }) => value.finishReason === 'stop';
    await cache.getOrCompute('k', compute, { shouldCache });
    await cache.getOrCompute('k', compute, { shouldCache });
    expect(compute.calls).toBe(2);
    const undef = counter(undefined);
    await cache.getOrCompute('u', undef);
    await cache.getOrCompute('u', undef);
    expect(undef.calls).toBe(2);
  });

  it('a shouldCache that throws keeps the value out but still answers the caller', async () => {
    const cache = make();
    const compute = counter('plain text');
    const reported: unknown[] = [];
    const policy = {
      shouldCache: (value: string) => (JSON.parse(value) as { ok: boolean }).ok,
      onStoreError: (error: unknown) => reported.push(error),
    };
    expect(await cache.getOrCompute('k', compute, policy)).toBe('plain text');
    expect(await cache.getOrCompute('k', compute, policy)).toBe('plain text');
    expect(compute.calls).toBe(2);
    expect(await cache.has('k')).toBe(false);
    expect(reported).toHaveLength(2);
    expect(reported[0]).toBeInstanceOf(SyntaxError);
    expect((await cache.stats()).droppedWrites).toBe(2);
  });

  it('never caches errors and hands every concurrent caller the same error', async () => {
    const cache = make();
    let calls = 0;
    const failing = async () => {
      calls++;
      await new Promise((resolve) => setTimeout(resolve, 5));
      throw new Error('provider down');
    };
    const results = await Promise.allSettled(
      Array.from({ length: 5 }, () => cache.getOrCompute('k', failing)),
    );
    expect(
      results.every((r) => r.status === 'rejected' && (r.reason as Error).message === 'provider down'),
    ).toBe(true);
    expect(calls).toBe(1);
    expect(await cache.getOrCompute('k', async () => 'ok')).toBe('ok');
  });

  it('runs compute once for N concurrent identical misses and gives each caller its own copy', async () => {
    const cache = make();
    let calls = 0;
    const compute = async () => {
      calls++;
      await new Promise((resolve) => setTimeout(resolve, 10));
      return { answer: 42 };
    };
    const values = await Promise.all(Array.from({ length: 50 }, () => cache.getOrCompute('same', compute)));
    expect(calls).toBe(1);
    expect(values.every((v) => v.answer === 42)).toBe(true);
    expect(new Set(values).size).toBe(50);
    const stats = await cache.stats();
    expect(stats.misses).toBe(1);
    expect(stats.coalesced).toBe(49);
  });

  it('a call that wants its answer stored does not join a noStore call', async () => {
    const cache = make();
    let calls = 0;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const compute = async () => {
      calls++;
      await gate;
      return `answer ${calls}`;
    };
    const peek = cache.getOrCompute('k', compute, { noStore: true });
    const wanted = cache.getOrCompute('k', compute);
    const peekToo = cache.getOrCompute('k', compute, { noStore: true });
    release();
    expect(await peek).toBe('answer 2');
    expect(await wanted).toBe('answer 2');
    expect(await peekToo).toBe('answer 2');
    expect(calls).toBe(2);
    // The stored answer is the one the plain call asked for.
    expect(await cache.getOrCompute('k', compute)).toBe('answer 2');
    expect(calls).toBe(2);
  });

  it('a computation under way when its key is invalidated is neither joined nor stored', async () => {
    const cache = make({ store: sqliteBackend({ path: join(dir, 'inflight-invalidate.db') }) });
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const key = { name: 'doc', request: 1 };
    const first = cache.getOrCompute(key, async () => {
      await gate;
      return 'old';
    });
    await new Promise((resolve) => setTimeout(resolve, 10));
    await cache.invalidate('doc');
    const second = cache.getOrCompute(key, async () => 'new');
    release();
    expect(await first).toBe('old');
    expect(await second).toBe('new');
    expect(await cache.get(key)).toBe('new');
  });

  it('a computation under way is not stored over a tag invalidation or an overwrite', async () => {
    const cache = make({ store: sqliteBackend({ path: join(dir, 'inflight-tags.db') }) });
    const slow = (value: string) => {
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const compute = async () => {
        await gate;
        return value;
      };
      return { release, compute };
    };
    const tagged = slow('old');
    const pending = cache.getOrCompute('t', tagged.compute, { tags: ['docs'] });
    await new Promise((resolve) => setTimeout(resolve, 10));
    await cache.invalidateTags(['docs']);
    tagged.release();
    expect(await pending).toBe('old');
    expect(await cache.has('t')).toBe(false);

    const overwritten = slow('computed before the set');
    const racing = cache.getOrCompute('o', overwritten.compute);
    await new Promise((resolve) => setTimeout(resolve, 10));
    await cache.set('o', 'set meanwhile');
    overwritten.release();
    await racing;
    expect(await cache.get('o')).toBe('set meanwhile');
  });

  it('a read of the store under way when its key is invalidated does not bring it back into memory', async () => {
    const path = join(dir, 'read-invalidate.db');
    const writer = make({ store: sqliteBackend({ path }) });
    await writer.set('k', 'old');
    // The same SQLite file, read slowly (as a remote store can be).
    const store = sqliteBackend({ path });
    const slowStore = slowReads(store, 'get');
    const reader = make({ store: slowStore });
    const reading = reader.get('k');
    await new Promise((resolve) => setTimeout(resolve, 10));
    await reader.invalidate('kv');
    expect(await reading).toBe('old');
    expect(await reader.get('k')).toBeUndefined();
  });

  it('concurrent ttl-0 calls still share one computation', async () => {
    const cache = make();
    let calls = 0;
    const slow = async () => {
      calls++;
      await new Promise((resolve) => setTimeout(resolve, 10));
      return 'v';
    };
    await Promise.all([1, 2, 3].map(() => cache.getOrCompute('k', slow, { ttl: 0 })));
    expect(calls).toBe(1);
  });

  it('a call that wants its answer stored does not join a ttl-0 call either', async () => {
    const cache = make();
    let calls = 0;
    const slow = async () => {
      calls++;
      await new Promise((resolve) => setTimeout(resolve, 10));
      return 'v';
    };
    await Promise.all([cache.getOrCompute('k', slow, { ttl: 0 }), cache.getOrCompute('k', slow)]);
    expect(calls).toBe(2);
    expect(await cache.has('k')).toBe(true);
  });

  it('a batch read under way when a key is invalidated does not bring it back into memory', async () => {
    const path = join(dir, 'batch-invalidate.db');
    const writer = make({ store: sqliteBackend({ path }) });
    await writer.set('k', 'old');
    const store = sqliteBackend({ path });
    const slowStore = slowReads(store, 'getMany');
    const reader = make({ store: slowStore });
    const reading = reader.getMany(['k']);
    await new Promise((resolve) => setTimeout(resolve, 10));
    await reader.delete('k');
    expect(await reading).toEqual(['old']);
    expect(await reader.get('k')).toBeUndefined();
  });

  it('gives concurrent callers their own copies even when the value is not stored', async () => {
    const cache = make();
    const compute = async () => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      return { list: [1] };
    };
    const [a, b] = await Promise.all([
      cache.getOrCompute('n', compute, { noStore: true }),
      cache.getOrCompute('n', compute, { noStore: true }),
    ]);
    expect(a).toEqual(b);
    expect(a).not.toBe(b);
  });

  it('serves a stale value within grace when the recompute fails', async () => {
    const clock = manualClock();
    const cache = make({ clock });
    await cache.getOrCompute('k', async () => 'old', { ttl: '1m', grace: '1h' });
    clock.advance(2 * 60_000);
    const result = await cache.getOrComputeResult(
      'k',
      async () => {
        throw new Error('provider down');
      },
      { ttl: '1m', grace: '1h' },
    );
    expect(result).toMatchObject({ value: 'old', hit: true, stale: true });
    clock.advance(2 * 3_600_000);
    await expect(
      cache.getOrCompute('k', async () => Promise.reject(new Error('still down')), {
        ttl: '1m',
        grace: '1h',
      }),
    ).rejects.toThrow('still down');
    expect((await cache.stats()).staleHits).toBe(1);
  });

  it('serves its stale copy when the call it joined fails, and reports the failure', async () => {
    const clock = manualClock();
    const cache = make({ clock });
    const errors: unknown[] = [];
    cache.on('error', (event) => errors.push(event));
    await cache.getOrCompute('k', async () => 'old', { ttl: '1m', grace: '1h' });
    clock.advance(2 * 60_000);
    const down = async () => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      throw new Error('provider down');
    };
    // A forced refresh has no stale copy of its own; the normal call that joins it does.
    const forced = cache.getOrCompute('k', down, { ttl: '1m', grace: '1h', forceRefresh: true });
    const normal = cache.getOrCompute('k', down, { ttl: '1m', grace: '1h' });
    await expect(forced).rejects.toThrow('provider down');
    expect(await normal).toBe('old');
    expect(errors).toContainEqual(expect.objectContaining({ operation: 'compute', key: expect.any(String) }));
  });

  it('a set kept for no time (ttl 0) replaces the value it overwrites', async () => {
    const cache = make({ store: sqliteBackend({ path: join(dir, 'ttl0.db') }) });
    await cache.set('k', 'old');
    await cache.set('k', 'new', { ttl: 0 });
    expect(await cache.get('k')).toBeUndefined();
    await cache.getOrCompute('j', async () => 'old');
    expect(await cache.getOrCompute('j', async () => 'fresh', { forceRefresh: true, ttl: 0 })).toBe('fresh');
    expect(await cache.get('j')).toBeUndefined();
  });

  it('stale-while-revalidate: one refresh and one error event however many stale callers come', async () => {
    const clock = manualClock();
    const cache = make({ clock });
    const errors: string[] = [];
    cache.on('error', (event) => errors.push(event.operation));
    const policy = { ttl: '1s', grace: '1h', staleWhileRevalidate: true } as const;
    await cache.getOrCompute('k', async () => 'old', policy);
    clock.advance(2000);
    let computes = 0;
    const down = async (): Promise<string> => {
      computes++;
      await new Promise((resolve) => setTimeout(resolve, 20));
      throw new Error('provider down');
    };
    const served = await Promise.all(Array.from({ length: 5 }, () => cache.getOrCompute('k', down, policy)));
    expect(served).toEqual(['old', 'old', 'old', 'old', 'old']);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(computes).toBe(1);
    expect(errors).toEqual(['revalidate']);
  });

  it("refuses a tier name with '/', which would share keys with another tier's namespace", () => {
    const cache = make();
    expect(() => cache.tier('team/a' as never)).toThrow(
      /tier "team\/a": a tier name cannot contain '\/'.*"team-a"/,
    );
    expect(() => createCache({ tiers: { 'team/a': {} } as never })).toThrow(
      expect.objectContaining({ code: 'E_INVALID_NAME' }),
    );
    expect(
      cache
        .tier('team-a' as never)
        .withNamespace('a/default')
        .key('q'),
    ).toMatch(/^team-a\/a\/default:/);
  });

  it('refuses durations that cannot work, naming what to pass instead', () => {
    const memory = memoryBackend();
    expect(() => createCache({ store: { backend: memory, timeout: 0 } })).toThrow(
      /timeout must be more than 0 ms.*Infinity for none/,
    );
    expect(() => createCache({ store: { backend: memory, timeout: '0ms' } })).toThrow(
      /timeout must be more than 0 ms/,
    );
    expect(() => createCache({ store: { backend: memory, bulkTimeout: 0 } })).toThrow(
      /bulkTimeout must be more than 0 ms/,
    );
    expect(() => createCache({ lockTtl: 0 })).toThrow(/lockTtl must be more than 0 ms/);
    expect(() => createCache({ lockTtl: Number.POSITIVE_INFINITY })).toThrow(/lockTtl must be finite/);
    expect(() =>
      createCache({ store: { backend: memory, breaker: { openFor: Number.POSITIVE_INFINITY } } }),
    ).toThrow(/breaker.openFor must be finite/);
    for (const attempt of [
      () => createCache({ lockTtl: 0 }),
      () => createCache({ store: { backend: memory, timeout: 0 } }),
    ]) {
      expect(attempt).toThrow(expect.objectContaining({ code: 'E_INVALID_OPTION' }));
    }
    // Infinity where it has a meaning: no timeout, wait for the lock's holder however long.
    expect(() =>
      createCache({
        store: { backend: memory, timeout: Number.POSITIVE_INFINITY },
        lockWait: Number.POSITIVE_INFINITY,
      }),
    ).not.toThrow();
  });

  it('stale-while-revalidate answers at once and refreshes in the background', async () => {
    const clock = manualClock();
    const cache = make({ clock });
    await cache.getOrCompute('k', async () => 'old', { ttl: '1m', grace: '1h' });
    clock.advance(2 * 60_000);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const policy = { ttl: '1m', grace: '1h', staleWhileRevalidate: true } as const;
    const first = await cache.getOrComputeResult(
      'k',
      async () => {
        await gate;
        return 'new';
      },
      policy,
    );
    expect(first).toMatchObject({ value: 'old', stale: true });
    release();
    await new Promise((resolve) => setTimeout(resolve, 0));
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(await cache.get('k')).toBe('new');
  });

  it('emits hit, miss, set and evict events', async () => {
    const cache = make({ tiers: { responses: { memory: { maxEntries: 1 } } } });
    const seen: string[] = [];
    cache.on('hit', (e) => seen.push(`hit:${e.level}`));
    cache.on('miss', () => seen.push('miss'));
    cache.on('set', () => seen.push('set'));
    cache.on('evict', (e) => seen.push(`evict:${e.reason}`));
    await cache.getOrCompute('a', async () => 1);
    await cache.getOrCompute('a', async () => 1);
    await cache.getOrCompute('b', async () => 2);
    expect(seen).toEqual(['miss', 'set', 'hit:memory', 'miss', 'evict:size', 'set']);
  });

  it("names the field of the caller's value that cannot be stored, not the entry's wrapper", async () => {
    const cache = make();
    const failure = (value: unknown) =>
      cache.set('k', value).then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(await failure({ answer: { f: () => 1 } })).toMatchObject({
      code: 'E_UNSERIALIZABLE',
      path: 'answer.f',
      message: expect.stringMatching(/cannot store answer\.f: functions cannot be stored/),
    });
    expect(await failure([1, { g: Symbol('x') }])).toMatchObject({ path: '[1].g' });
    expect(await failure(() => 1)).toMatchObject({
      path: '',
      message: expect.stringMatching(/cannot store the value: functions/),
    });
  });
});

describe('createCache > tiers and levels', () => {
  it('reads through to SQLite, promotes to memory, and survives a restart', async () => {
    const path = join(dir, 'cache.db');
    const first = make({ store: sqliteBackend({ path }) });
    const compute = counter('persisted');
    await first.getOrCompute({ name: 'chat', request: 'hi' }, compute);
    await first.close();

    const second = make({ store: sqliteBackend({ path }) });
    const result = await second.getOrComputeResult({ name: 'chat', request: 'hi' }, compute);
    expect(result).toMatchObject({ value: 'persisted', hit: true, level: 'sqlite' });
    const again = await second.getOrComputeResult({ name: 'chat', request: 'hi' }, compute);
    expect(again.level).toBe('memory');
    expect(compute.calls).toBe(1);
  });

  it('forceRefresh recomputes with a store that locks across processes (SQLite)', async () => {
    const cache = make({ store: sqliteBackend({ path: join(dir, 'force.db') }) });
    let n = 0;
    const compute = async () => ++n;
    expect(await cache.getOrCompute('k', compute)).toBe(1);
    expect(await cache.getOrCompute('k', compute, { forceRefresh: true })).toBe(2);
    expect(await cache.getOrCompute('k', compute)).toBe(2);
  });

  it('keeps named tiers apart, each with its own default TTL', async () => {
    const clock = manualClock();
    const cache = make({ clock, tiers: { tools: { ttl: '10m' } } });
    const tools = cache.tier('tools');
    const compute = counter('r');
    await tools.getOrCompute({ name: 'git_status', request: {} }, compute);
    await cache.getOrCompute({ name: 'git_status', request: {} }, compute);
    expect(compute.calls).toBe(2);
    clock.advance(11 * 60_000);
    await tools.getOrCompute({ name: 'git_status', request: {} }, compute);
    await cache.getOrCompute({ name: 'git_status', request: {} }, compute);
    expect(compute.calls).toBe(3);
  });

  it('caps the memory level with maxTtl while the store keeps the entry', async () => {
    const clock = manualClock();
    const path = join(dir, 'c.db');
    const cache = make({ clock, store: sqliteBackend({ path, clock }), memory: { maxTtl: '1m' } });
    await cache.getOrCompute('k', async () => 'v');
    clock.advance(2 * 60_000);
    expect((await cache.getResult('k'))?.level).toBe('sqlite');
  });

  it('degrades to the memory level when the store fails, counts it, and never throws', async () => {
    const db = new Database(join(dir, 'broken.db'));
    const cache = make({ store: sqliteBackend({ database: db }) });
    const errors: string[] = [];
    cache.on('error', (e) => errors.push(`${e.level}:${e.operation}`));
    await cache.getOrCompute('before', async () => 'ok');
    db.close();
    const compute = counter('computed');
    expect(await cache.getOrCompute('during', compute)).toBe('computed');
    expect(await cache.getOrCompute('during', compute)).toBe('computed');
    expect(compute.calls).toBe(1);
    expect(await cache.getOrCompute('before', async () => 'recomputed')).toBe('ok');
    expect(errors).toContain('sqlite:set');
    const stats = await cache.getAllStats();
    expect(stats.levels.sqlite?.errors).toBeGreaterThan(0);
    // Counted for the tier and namespace whose keys failed too.
    expect(stats.totals.errors).toBeGreaterThan(0);
    expect(stats.tiers.responses?.errors).toBeGreaterThan(0);
    expect((await cache.stats()).errors).toBeGreaterThan(0);
  });

  it('getMany reads a batch in order across levels', async () => {
    const path = join(dir, 'm.db');
    const a = make({ store: sqliteBackend({ path }) });
    await a.set({ name: 'e', request: 1 }, 'one');
    await a.set({ name: 'e', request: 3 }, 'three');
    await a.close();
    const b = make({ store: sqliteBackend({ path }) });
    await b.set({ name: 'e', request: 4 }, 'four');
    const values = await b.getMany([
      { name: 'e', request: 1 },
      { name: 'e', request: 2 },
      { name: 'e', request: 3 },
      { name: 'e', request: 4 },
    ]);
    expect(values).toEqual(['one', undefined, 'three', 'four']);
  });

  it('treats a corrupt stored entry as a miss, deletes it and counts it', async () => {
    const path = join(dir, 'corrupt.db');
    const db = new Database(path);
    const cache = make({ store: sqliteBackend({ database: db }), memory: false });
    await cache.set('k', { big: 'value' });
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type='table'").all() as {
      name: string;
    }[];
    const table = tables.map((t) => t.name).find((name) => /entr/i.test(name))!;
    const columns = db.prepare(`PRAGMA table_info(${table})`).all() as { name: string; type: string }[];
    const blob = columns.find((c) => /blob/i.test(c.type))!.name;
    db.prepare(`UPDATE ${table} SET ${blob} = substr(${blob}, 1, length(${blob}) - 3)`).run();
    const compute = counter('fresh');
    expect(await cache.getOrCompute('k', compute)).toBe('fresh');
    expect(compute.calls).toBe(1);
    expect((await cache.stats()).corrupt).toBe(1);
    expect(await cache.getOrCompute('k', compute)).toBe('fresh');
    expect(compute.calls).toBe(1);
  });
});

describe('createCache > invalidation', () => {
  it('invalidates one call, a whole name, a tag, and a tier', async () => {
    const cache = make();
    await cache.set({ name: 'intro_page', request: { topic: 'fractions' } }, 'a', { tags: ['math'] });
    await cache.set({ name: 'intro_page', request: { topic: 'decimals' } }, 'b');
    await cache.set({ name: 'word_problem', request: { n: 1 } }, 'c', { tags: ['math'] });
    await cache.tier('tools').set({ name: 'git_log', request: {} }, 'log');

    expect(await cache.invalidate('intro_page', { topic: 'fractions' })).toBe(1);
    expect(await cache.get({ name: 'intro_page', request: { topic: 'fractions' } })).toBeUndefined();
    expect(await cache.get({ name: 'intro_page', request: { topic: 'decimals' } })).toBe('b');

    await cache.invalidateTags(['math']);
    expect(await cache.get({ name: 'word_problem', request: { n: 1 } })).toBeUndefined();

    await cache.invalidate('intro_page');
    expect(await cache.get({ name: 'intro_page', request: { topic: 'decimals' } })).toBeUndefined();

    expect(await cache.tier('tools').get({ name: 'git_log', request: {} })).toBe('log');
    await cache.tier('tools').clear();
    expect(await cache.tier('tools').get({ name: 'git_log', request: {} })).toBeUndefined();
  });

  it('follows the dependency map: git_commit invalidates git_status and git_log', async () => {
    const cache = make({
      store: sqliteBackend({ path: join(dir, 'd.db') }),
      dependencies: { git_commit: ['git_status', 'git_log'], git_log: ['git_blame'] },
    });
    const tools = cache.tier('tools');
    await tools.set({ name: 'git_status', request: { repo: '.' } }, 'clean');
    await tools.set({ name: 'git_log', request: { repo: '.' } }, 'log');
    await tools.set({ name: 'git_blame', request: { file: 'a' } }, 'blame');
    await tools.set({ name: 'read_file', request: { file: 'a' } }, 'text');
    await tools.invalidate('git_commit');
    expect(await tools.get({ name: 'git_status', request: { repo: '.' } })).toBeUndefined();
    expect(await tools.get({ name: 'git_log', request: { repo: '.' } })).toBeUndefined();
    expect(await tools.get({ name: 'git_blame', request: { file: 'a' } })).toBeUndefined();
    expect(await tools.get({ name: 'read_file', request: { file: 'a' } })).toBe('text');
  });

  it('clearAll also empties tiers that only another process uses', async () => {
    const path = join(dir, 'tiers.db');
    const other = make({ store: sqliteBackend({ path }), tiers: { summaries: { ttl: '1d' } } });
    await other.tier('summaries').set('s', 'summary');
    const cache = make({ store: sqliteBackend({ path }) });
    await cache.clearAll();
    const fresh = make({
      store: sqliteBackend({ path }),
      tiers: { summaries: { ttl: '1d' } },
      memory: false,
    });
    expect(await fresh.tier('summaries').get('s')).toBeUndefined();
  });

  it('clearAll empties every tier and level and resets the counters', async () => {
    const cache = make({ store: sqliteBackend({ path: join(dir, 'all.db') }) });
    await cache.getOrCompute('a', async () => 1);
    await cache.tier('embeddings').set('b', [0.1]);
    await cache.clearAll();
    expect(await cache.get('a')).toBeUndefined();
    expect(await cache.tier('embeddings').get('b')).toBeUndefined();
    const stats = await cache.getAllStats();
    expect(stats.totals.sets).toBe(0);
    expect(stats.tiers.responses?.entries).toBe(0);
  });
});

describe('createCache > invalidation racing reads and computations', () => {
  const tick = () => new Promise((resolve) => setImmediate(resolve));

  it.each([
    ['delete', (cache: Cache) => cache.delete('k')],
    ['invalidateTags', (cache: Cache) => cache.invalidateTags(['t'])],
    ['clear', (cache: Cache) => cache.clear()],
    ['clearAll', (cache: Cache) => cache.clearAll()],
  ])('a read racing %s does not put the old value back in the memory level', async (_, remove) => {
    const path = join(dir, 'race.db');
    const cache = make({ store: sqliteBackend({ path }) });
    await cache.set('k', 'v1', { tags: ['t'] });
    // The read starts after the memory copy is gone and reads the store before its copy goes.
    await Promise.all([remove(cache), cache.get('k')]);
    expect(await cache.get('k')).toBeUndefined();
    const after = await cache.getOrComputeResult('k', () => 'v2');
    expect(after).toMatchObject({ value: 'v2', hit: false });
    const fresh = make({ store: sqliteBackend({ path }), memory: false });
    expect(await fresh.get('k')).toBe('v2');
  });

  it('a computation invalidated while its write waits for the quota check stores nothing', async () => {
    const path = join(dir, 'quota-race.db');
    // Writes answered 50 ms late: the first write holds the namespace's quota queue meanwhile.
    const cache = make({
      store: slowReads(sqliteBackend({ path }), 'set', 50),
      quotas: { capped: { maxEntries: 100, onExceed: 'reject' } },
    });
    const capped = cache.withNamespace('capped');
    let computed = false;
    const earlier = capped.set('other', 'x');
    const pending = capped.getOrCompute('k', () => {
      computed = true;
      return 'old';
    });
    while (!computed) await tick();
    await capped.delete('k');
    expect(await pending).toBe('old');
    await earlier;
    expect(await capped.get('k')).toBeUndefined();
    const fresh = make({ store: sqliteBackend({ path }), memory: false });
    expect(await fresh.withNamespace('capped').get('k')).toBeUndefined();
    expect(await fresh.withNamespace('capped').get('other')).toBe('x');
  });

  it.each([
    ['memory only', () => undefined],
    ['SQLite (a cross-process lock)', () => sqliteBackend({ path: join(dir, 'force-race.db') })],
  ])('forceRefresh wins over a computation already under way (%s)', async (_, store) => {
    const cache = make({ store: store() });
    const older = cache.getOrCompute('k', async () => {
      await new Promise((resolve) => setTimeout(resolve, 60));
      return 'old';
    });
    await new Promise((resolve) => setTimeout(resolve, 10));
    const forced = cache.getOrComputeResult(
      'k',
      async () => {
        await new Promise((resolve) => setTimeout(resolve, 100));
        return 'new';
      },
      { forceRefresh: true },
    );
    expect(await older).toBe('old');
    expect(await forced).toMatchObject({ value: 'new', hit: false });
    expect(await cache.get('k')).toBe('new');
  });

  it('a forced refresh that finishes first is not overwritten by the older computation', async () => {
    for (const store of [undefined, sqliteBackend({ path: join(dir, 'forced-first.db') })]) {
      const cache = make({ store });
      const older = cache.getOrCompute('k', async () => {
        await new Promise((resolve) => setTimeout(resolve, 120));
        return 'old';
      });
      await new Promise((resolve) => setTimeout(resolve, 10));
      expect(await cache.getOrCompute('k', async () => 'new', { forceRefresh: true })).toBe('new');
      expect(await older).toBe('old');
      expect(await cache.get('k')).toBe('new');
    }
  });

  it.each<[string, { noStore?: boolean; shouldCache?: () => boolean }, () => Promise<string>]>([
    ['stores nothing (noStore)', { noStore: true }, async () => 'bypass'],
    ['fails', {}, async () => Promise.reject(new Error('provider down'))],
    ['is refused (shouldCache)', { shouldCache: () => false }, async () => 'refused'],
  ])(
    'a forced refresh that %s leaves the older computation free to store',
    async (_, extra, forcedCompute) => {
      for (const store of [undefined, sqliteBackend({ path: join(dir, `forced-${Math.random()}.db`) })]) {
        const cache = make({ store });
        const older = cache.getOrCompute('k', async () => {
          await new Promise((resolve) => setTimeout(resolve, 60));
          return 'old';
        });
        await new Promise((resolve) => setTimeout(resolve, 10));
        await cache.getOrCompute('k', forcedCompute, { forceRefresh: true, ...extra }).catch(() => undefined);
        expect(await older).toBe('old');
        expect(await cache.get('k')).toBe('old');
      }
    },
  );

  it('grace: Infinity keeps the stale copy for as long as the store keeps it', async () => {
    const clock = manualClock();
    const cache = make({ clock, store: sqliteBackend({ path: join(dir, 'grace.db') }) });
    await cache.getOrCompute('k', () => 'old', { ttl: '1m', grace: Number.POSITIVE_INFINITY });
    clock.advance(30 * 24 * 3_600_000);
    const result = await cache.getOrComputeResult(
      'k',
      () => {
        throw new Error('provider down');
      },
      { ttl: '1m', grace: Number.POSITIVE_INFINITY },
    );
    expect(result).toMatchObject({ value: 'old', stale: true });
  });
});

describe('createCache > close', () => {
  it('keeps a store shared with another cache open until the last of them closes', async () => {
    const path = join(dir, 'shared-close.db');
    const store = sqliteBackend({ path });
    const first = createCache({ store });
    const second = createCache({ store });
    await first.close();
    await second.set('k', 'still stored');
    const reader = make({ store: sqliteBackend({ path }), memory: false });
    expect(await reader.get('k')).toBe('still stored');
    await second.close();
    await expect(store.get('k')).rejects.toMatchObject({ code: 'E_CLOSED' });
  });

  it('lets go of the store locks of computations still running, so other processes need not wait', async () => {
    const path = join(dir, 'close-locks.db');
    const closing = createCache({ store: sqliteBackend({ path }) });
    let started = false;
    const running = closing.getOrCompute('k', async () => {
      started = true;
      await new Promise((resolve) => setTimeout(resolve, 300));
      return 'from the closed cache';
    });
    while (!started) await new Promise((resolve) => setImmediate(resolve));
    await closing.close();
    // Another process (another cache on the file) computes at once instead of waiting for the lock.
    const other = make({ store: sqliteBackend({ path }), lockWait: '20s' });
    const t0 = Date.now();
    expect(await other.getOrCompute('k', () => 'computed here')).toBe('computed here');
    expect(Date.now() - t0).toBeLessThan(250);
    expect(await running).toBe('from the closed cache');
  });
});

describe('createCache > a store slower than its timeout', () => {
  it('stays stalled while it answers late, instead of costing a caller a timeout on every probe', async () => {
    const store = slowReads(sqliteBackend({ path: join(dir, 'slow.db') }), 'get', 100);
    const cache = make({ store: { backend: store, timeout: 20, breaker: false }, memory: false });
    const failures: string[] = [];
    cache.on('error', (event) => failures.push(event.operation));
    for (let i = 0; i < 20; i++) {
      await cache.get(`k${i}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect(failures).toEqual(['get']);
    expect((await cache.getAllStats()).levels.sqlite?.skipped).toBeGreaterThanOrEqual(19);
  });
});

describe('createCache > a store that answers small reads fast and real ones too slowly', () => {
  it('is held stalled for a while, instead of costing a caller a timeout on every call', async () => {
    const sqlite = sqliteBackend({ path: join(dir, 'flaky.db') });
    // A missing key (the probe's) answers at once; reads of real keys take longer than the timeout.
    const store = new Proxy(sqlite, {
      get(target, property) {
        const member = Reflect.get(target, property, target);
        if (typeof member !== 'function') return member;
        if (property !== 'get') return member.bind(target);
        return async (key: string) => {
          const found = await member.call(target, key);
          if (!key.startsWith('~')) await new Promise((resolve) => setTimeout(resolve, 120));
          return found;
        };
      },
    });
    const cache = make({ store: { backend: store, timeout: 30, breaker: false }, memory: false });
    const failures: string[] = [];
    cache.on('error', (event) => failures.push(event.operation));
    for (let i = 0; i < 15; i++) {
      await cache.get(`k${i}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // The first timeout stalls it; the stall ends on the fast probe, the next read times out and
    // the stall that follows is held (1 s): a couple of timeouts in all, not one per call.
    expect(failures.length).toBeGreaterThanOrEqual(1);
    expect(failures.length).toBeLessThanOrEqual(3);
  });
});

describe('createCache > caches sharing one SQLite backend', () => {
  it('drop what another cache overwrote or deleted from their memory levels', async () => {
    const store = sqliteBackend({ path: join(dir, 'shared-instance.db'), busPollMs: 5 });
    const a = make({ store });
    const b = make({ store });
    await a.ready();
    await b.ready();
    await a.set('k', 'old');
    expect(await b.getResult('k')).toMatchObject({ value: 'old', level: 'sqlite' });
    expect(await b.getResult('k')).toMatchObject({ value: 'old', level: 'memory' });
    await a.set('k', 'new');
    let seen: unknown;
    for (let i = 0; i < 100 && seen !== 'new'; i++) {
      seen = await b.get('k');
      if (seen !== 'new') await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(seen).toBe('new');
    await a.delete('k');
    for (let i = 0; i < 100 && seen !== undefined; i++) {
      seen = await b.get('k');
      if (seen !== undefined) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(seen).toBeUndefined();
  });
});

describe('createCache > namespaces and quotas', () => {
  it('never serves one namespace entries from another', async () => {
    const path = join(dir, 'ns.db');
    const cache = make({ store: sqliteBackend({ path }) });
    const tenantA = cache.withNamespace('tenant-a');
    const tenantB = cache.withNamespace('tenant-b');
    await tenantA.set({ name: 'chat', request: 'same prompt' }, 'answer for A', { tags: ['t'] });
    expect(await tenantB.get({ name: 'chat', request: 'same prompt' })).toBeUndefined();
    await tenantB.set({ name: 'chat', request: 'same prompt' }, 'answer for B', { tags: ['t'] });
    await tenantA.invalidateTags(['t']);
    expect(await tenantB.get({ name: 'chat', request: 'same prompt' })).toBe('answer for B');
    const sizes = (await cache.getAllStats()).namespaces;
    expect(sizes['tenant-a']).toMatchObject({ entries: 0 });
    expect(sizes['tenant-b']).toMatchObject({ entries: 1 });
    expect(sizes['tenant-b']!.bytes).toBeGreaterThan(0);
    await tenantB.clear();
    expect(await tenantB.get({ name: 'chat', request: 'same prompt' })).toBeUndefined();
  });

  it('getOrCompute reports a bad key as a rejected promise, never a synchronous throw, on every level layout', async () => {
    const layouts: CacheOptions[] = [
      {},
      { store: sqliteBackend({ path: join(dir, 'bad-key-store.db') }), memory: false },
      { store: sqliteBackend({ path: join(dir, 'bad-key-tiered.db') }) },
    ];
    for (const options of layouts) {
      const cache = make(options);
      let computed = 0;
      // An invalid name fails while the key is built: the call still returns a (rejected) promise.
      const call = cache.getOrCompute({ name: 'bad name with spaces', request: 1 }, () => ++computed);
      expect(call).toBeInstanceOf(Promise);
      await expect(call).rejects.toMatchObject({ code: 'E_INVALID_NAME' });
      expect(computed).toBe(0);
      // A good key on the same cache still computes once and then hits.
      expect(await cache.getOrCompute({ name: 'ok', request: 1 }, () => ++computed)).toBe(1);
      expect(await cache.getOrCompute({ name: 'ok', request: 1 }, () => ++computed)).toBe(1);
    }
  });

  it('rejects invalid namespace names with a typed error', () => {
    const cache = make();
    expect(() => cache.withNamespace('bad:name')).toThrow(/namespace/);
  });

  it('refuses a namespace too long to fit beside its tier in a key, saying how long it may be', async () => {
    const cache = make();
    // 118 characters fit beside "responses/" (128 in all); the view works end to end.
    const longest = cache.withNamespace('n'.repeat(118));
    expect(await longest.getOrCompute({ name: 'chat', request: { a: 1 } }, () => 'ok')).toBe('ok');
    for (const create of [() => cache.withNamespace('n'.repeat(120)), () => longest.tier('embeddings')]) {
      let error: unknown;
      try {
        create();
      } catch (caught) {
        error = caught;
      }
      expect(error).toMatchObject({ code: 'E_INVALID_NAME' });
      expect((error as Error).message).toMatch(/use a namespace of at most 11[78] characters/);
    }
  });

  it('enforces a quota by evicting the least recently used entries', async () => {
    // A clock that moves between writes: the levels agree on which entry is least recently used.
    const clock = manualClock();
    const cache = make({
      clock,
      store: sqliteBackend({ path: join(dir, 'q.db'), clock }),
      quotas: { small: { maxEntries: 3 } },
    });
    const small = cache.withNamespace('small');
    const evicted: string[] = [];
    cache.on('evict', (event) => evicted.push(`${event.level}:${event.reason}:${event.key}`));
    for (let i = 0; i < 5; i++) {
      await small.set({ name: 'n', request: i }, i);
      clock.advance(1000);
    }
    const stats = await cache.getAllStats();
    expect(stats.tiers.responses?.entries).toBeLessThanOrEqual(3);
    expect(await cache.withNamespace('small').stats()).toMatchObject({ evictions: 2 });
    // Each entry the quota pushed out is named, in each level, with the reason.
    const first = small.key({ name: 'n', request: 0 });
    const second = small.key({ name: 'n', request: 1 });
    expect(evicted).toEqual([
      `memory:quota:${first}`,
      `sqlite:quota:${first}`,
      `memory:quota:${second}`,
      `sqlite:quota:${second}`,
    ]);
  });

  it('enforces a quota by refusing writes when asked to', async () => {
    const cache = make({
      store: sqliteBackend({ path: join(dir, 'r.db') }),
      memory: false,
      quotas: { capped: { maxEntries: 2, onExceed: 'reject' } },
    });
    const capped = cache.withNamespace('capped');
    await capped.set('a', 1);
    await capped.set('b', 2);
    await expect(capped.set('c', 3)).rejects.toBeInstanceOf(QuotaExceededError);
    const compute = counter(4);
    expect(await capped.getOrCompute('d', compute)).toBe(4);
    expect((await capped.stats()).droppedWrites).toBe(1);
    // A full namespace can still refresh what it holds: an overwrite adds no entry.
    await capped.set('a', 10);
    expect(await capped.get('a')).toBe(10);
    // Given onStoreError, set reports a refusal there and counts it instead of throwing.
    const refused: unknown[] = [];
    await capped.set('e', 5, { onStoreError: (error) => refused.push(error) });
    expect(refused).toHaveLength(1);
    expect(refused[0]).toBeInstanceOf(QuotaExceededError);
    expect((await capped.stats()).droppedWrites).toBe(2);
  });

  it('rejects writes over a quota also when they are made at the same time', async () => {
    const cache = make({
      store: sqliteBackend({ path: join(dir, 'reject-together.db') }),
      quotas: { capped: { maxEntries: 2, onExceed: 'reject' } },
    });
    const capped = cache.withNamespace('capped');
    const outcomes = await Promise.allSettled(['a', 'b', 'c', 'd', 'e'].map((key, i) => capped.set(key, i)));
    expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(2);
    expect(outcomes.filter((outcome) => outcome.status === 'rejected')).toHaveLength(3);
    expect((await cache.getAllStats()).namespaces.capped).toMatchObject({ entries: 2 });
  });
});

describe('createCache > quotas and expired entries', () => {
  // The store's clock moves with the cache's: expired rows stay in the file until pruned.
  const setup = (quotas: CacheOptions['quotas'], file: string) => {
    const clock = manualClock();
    const cache = make({
      clock,
      store: sqliteBackend({ path: join(dir, file), clock, touchGranularityMs: 0 }),
      memory: false,
      quotas,
    });
    return { clock, cache };
  };

  it('a rejecting quota does not count entries that have expired', async () => {
    const { clock, cache } = setup({ capped: { maxEntries: 2, onExceed: 'reject' } }, 'expired-reject.db');
    const capped = cache.withNamespace('capped');
    await capped.set('a', 1, { ttl: '1s' });
    await capped.set('b', 2, { ttl: '1s' });
    clock.advance(60_000);
    expect(await capped.get('a')).toBeUndefined();
    await capped.set('c', 3);
    await capped.set('d', 4);
    expect([await capped.get('c'), await capped.get('d')]).toEqual([3, 4]);
    await expect(capped.set('e', 5)).rejects.toBeInstanceOf(QuotaExceededError);
  });

  for (const [level, file] of [
    ['sqlite', 'expired-evict.db'],
    ['memory', undefined],
  ] as const) {
    it(`an evicting quota drops expired entries before live ones (${level})`, async () => {
      const quotas = { small: { maxEntries: 2 } };
      const { clock, cache } =
        file === undefined ? { clock: manualClock(), cache: undefined } : setup(quotas, file);
      const small = (cache ?? make({ clock, quotas })).withNamespace('small');
      await small.set('keep', 'long-lived', { ttl: '1d' });
      clock.advance(10);
      await small.set('short', 'x', { ttl: '1s' });
      clock.advance(60_000);
      await small.set('new', 'y', { ttl: '1d' });
      expect(await small.get('keep')).toBe('long-lived');
      expect(await small.get('new')).toBe('y');
    });
  }
});

describe('createCache > stats', () => {
  it('records the usage a hit replaced as tokens and money saved', async () => {
    const cache = make();
    const usage = { inputTokens: 1000, outputTokens: 500, model: 'gpt-4o-mini' };
    await cache.getOrCompute('k', async () => 'answer', { usage });
    await cache.getOrCompute('k', async () => 'answer', { usage });
    await cache.getOrCompute('k', async () => 'answer', { usage });
    const stats = await cache.stats();
    expect(stats.inputTokensSaved).toBe(2000);
    expect(stats.outputTokensSaved).toBe(1000);
    expect(stats.costSavedUsd).toBeCloseTo((2000 * 0.15 + 1000 * 0.6) / 1e6, 12);
  });

  it('counts a usage with missing token counts as what it has, and still persists the counters', async () => {
    const path = join(dir, 'partial-usage.db');
    const open = () => make({ store: sqliteBackend({ path }), memory: false, statsFlushInterval: 0 });
    const cache = open();
    // A provider reported output tokens only.
    const usage = () => ({ outputTokens: 100, model: 'gpt-4o' }) as unknown as Usage;
    await cache.getOrCompute('x', async () => 'v', { usage });
    await cache.getOrCompute('x', async () => 'v', { usage });
    const live = await cache.stats();
    expect(live).toMatchObject({ hits: 1, misses: 1, inputTokensSaved: 0, outputTokensSaved: 100 });
    expect(Number.isFinite(live.costSavedUsd)).toBe(true);
    await cache.close();
    const reopened = open();
    expect(await reopened.stats()).toMatchObject({ hits: 1, misses: 1, outputTokensSaved: 100 });
  });

  it('estimates usage with a real tokenizer when the compute reports none', async () => {
    const cache = make({ pricing: { 'my-model': { input: 1, output: 2 } } });
    const text = 'The quick brown fox jumps over the lazy dog.';
    await cache.getOrCompute({ name: 'intro', request: 'unbelievable' }, async () => text, {
      usage: 'estimate',
      model: 'my-model',
    });
    await cache.getOrCompute({ name: 'intro', request: 'unbelievable' }, async () => text, {
      usage: 'estimate',
      model: 'my-model',
    });
    const stats = await cache.stats();
    // o200k_base: the sentence is 10 tokens, far from its 44 characters / 4.
    expect(stats.outputTokensSaved).toBe(10);
    expect(stats.inputTokensSaved).toBeGreaterThan(0);
    expect(stats.costSavedUsd).toBeCloseTo((stats.inputTokensSaved * 1 + 10 * 2) / 1e6, 12);
  });

  it('estimates no output tokens for a vector (an embedding)', async () => {
    const cache = make();
    await cache.getOrCompute(
      { name: 'embed', request: 'hello world' },
      async () => new Float32Array([0.1, 0.2]),
      {
        usage: 'estimate',
      },
    );
    await cache.getOrCompute(
      { name: 'embed', request: 'hello world' },
      async () => new Float32Array([0.1, 0.2]),
      {
        usage: 'estimate',
      },
    );
    await cache.getOrCompute({ name: 'embed2', request: 'hello world' }, async () => [0.1, 0.2], {
      usage: 'estimate',
    });
    await cache.getOrCompute({ name: 'embed2', request: 'hello world' }, async () => [0.1, 0.2], {
      usage: 'estimate',
    });
    const stats = await cache.stats();
    expect(stats.outputTokensSaved).toBe(0);
    expect(stats.inputTokensSaved).toBe(4);
  });

  it('persists counters in the store so they survive a restart and add up across instances', async () => {
    const path = join(dir, 'stats.db');
    const first = make({ store: sqliteBackend({ path }) });
    await first.getOrCompute('k', async () => 'v', { usage: { inputTokens: 10, outputTokens: 5 } });
    await first.getOrCompute('k', async () => 'v');
    await first.close();
    const second = make({ store: sqliteBackend({ path }) });
    await second.getOrCompute('k', async () => 'v');
    const all = await second.getAllStats();
    expect(all.totals).toMatchObject({ hits: 2, misses: 1, sets: 1, inputTokensSaved: 20 });
    expect(all.tiers.responses).toMatchObject({ hits: 2, entries: 1 });
    expect(all.namespaces.default).toMatchObject({ hits: 2 });
    expect(all.levels.sqlite?.hits).toBe(1);
    expect(all.levels.memory?.hits).toBe(1);
  });
});

describe('createCache > enabled: false', () => {
  it('computes every time and stores nothing', async () => {
    const cache = make({ enabled: false });
    const compute = counter('v');
    await cache.getOrCompute('k', compute);
    await cache.getOrCompute('k', compute);
    expect(compute.calls).toBe(2);
    expect(await cache.get('k')).toBeUndefined();
  });
});

describe('createCache > adapter hooks', () => {
  it('accepts a storage key built once with key(), only for its own tier and namespace', async () => {
    const cache = make();
    const storageKey = cache.key({ name: 'chat', request: { prompt: 'hi' } });
    await cache.set({ storageKey }, 'stored once');
    expect(await cache.get({ name: 'chat', request: { prompt: 'hi' } })).toBe('stored once');
    expect(await cache.getResult({ storageKey })).toMatchObject({ value: 'stored once', key: storageKey });
    const error = await cache
      .tier('tools')
      .get({ storageKey })
      .catch((e) => e);
    expect(CacheError.isInstance(error)).toBe(true);
    expect((error as CacheError).code).toBe('E_INVALID_KEY');
    await expect(cache.withNamespace('other').get({ storageKey })).rejects.toThrow(/does not belong/);
  });

  it('counts callers an adapter coalesced itself, with the usage they saved', async () => {
    const cache = make();
    cache.recordCoalesced({ inputTokens: 10, outputTokens: 5, model: 'gpt-4o-mini' });
    cache.recordCoalesced();
    expect(await cache.stats()).toMatchObject({ coalesced: 2, inputTokensSaved: 10, outputTokensSaved: 5 });
  });

  it('reports a write it could not make through onStoreError and still returns the value', async () => {
    const cache = make();
    const errors: unknown[] = [];
    const value = await cache.getOrCompute('k', async () => ({ fn: () => 1 }), {
      onStoreError: (e) => errors.push(e),
    });
    expect(typeof value.fn).toBe('function');
    expect(errors).toHaveLength(1);
    expect((errors[0] as Error).message).toContain('fn');
  });
});
