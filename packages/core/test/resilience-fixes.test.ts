import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { redisBackend } from '../src/backends/redis.ts';
import { sqliteBackend } from '../src/backends/sqlite.ts';
import type { Cache } from '../src/cache.ts';
import { createCache } from '../src/cache.ts';
import type { RedisHandle } from './redis-server.ts';
import { redisUnavailable, startRedis } from './redis-server.ts';

// These tests freeze and reconfigure a server of their own, so REDIS_URL is not used here.
const skip =
  redisUnavailable() ?? (process.env.REDIS_URL ? 'REDIS_URL points at a shared server' : undefined);

let server: RedisHandle;
let admin: Redis;
let run = 0;
const fresh = (label: string) => `res${process.pid}-${++run}-${label}:`;

describe.skipIf(skip)('resilience against a real Redis', () => {
  beforeAll(async () => {
    server = await startRedis();
    admin = new Redis(server.url);
  }, 30_000);

  afterAll(async () => {
    admin?.disconnect();
    await server?.stop();
  });

  it('still sends deletes and bus messages while the breaker is open, so no process keeps the old value', async () => {
    const keyPrefix = fresh('breaker');
    const make = () =>
      createCache({
        store: {
          backend: redisBackend({ url: server.url, keyPrefix }),
          timeout: 500,
          breaker: { failures: 1, openFor: '30s' },
        },
      });
    const a = make();
    const b = make();
    await Promise.all([a.ready(), b.ready()]);
    await a.set('doc', 'OLD');
    expect(await b.get('doc')).toBe('OLD'); // now in b's memory level too
    const opened: string[] = [];
    a.on('error', (event) => {
      if (event.operation === 'breaker-open') opened.push(event.level ?? '');
    });
    // A write refused (out of memory) opens a's breaker while Redis itself stays up.
    await admin.config('SET', 'maxmemory', '1');
    try {
      await a.set('x1', 'v');
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
    expect(opened).toEqual(['redis']);
    await a.delete('doc');
    await expect.poll(() => b.get('doc'), { timeout: 3000 }).toBeUndefined();
    const reader = createCache({ store: redisBackend({ url: server.url, keyPrefix }), memory: false });
    expect(await reader.get('doc')).toBeUndefined();
    await Promise.all([a.close(), b.close(), reader.close()]);
  });

  it('counts a freeze as one failure however many calls were in flight: hits resume when Redis does', async () => {
    const keyPrefix = fresh('freeze');
    const cache = createCache({
      store: {
        backend: redisBackend({ url: server.url, keyPrefix }),
        timeout: 150,
        breaker: { failures: 3, openFor: '30s' },
      },
      memory: false,
    });
    const keys = Array.from({ length: 8 }, (_, i) => `k${i}`);
    for (const key of keys) await cache.set(key, `stored ${key}`);
    server.process!.kill('SIGSTOP');
    try {
      // Eight callers in flight when Redis freezes: each gets its value computed.
      const values = await Promise.all(keys.map((key) => cache.getOrCompute(key, () => `computed ${key}`)));
      expect(values).toEqual(keys.map((key) => `computed ${key}`));
    } finally {
      server.process!.kill('SIGCONT');
    }
    // Served by Redis again long before the breaker's 30 s would be over.
    await expect
      .poll(async () => (await cache.getOrComputeResult('k0', () => 'computed again')).level, {
        timeout: 5000,
        interval: 100,
      })
      .toBe('redis');
    await cache.close();
  });

  it('settles the breaker probe even when a delete sent beside it stalled the level first', async () => {
    const keyPrefix = fresh('probe');
    const cache = createCache({
      store: {
        backend: redisBackend({ url: server.url, keyPrefix }),
        timeout: 200,
        breaker: { failures: 1, openFor: 300 },
      },
      memory: false,
    });
    await admin.config('SET', 'maxmemory', '1');
    try {
      await cache.set('x', 'v'); // refused: the breaker opens
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
    await sleep(400);
    server.process!.kill('SIGSTOP');
    try {
      // The get is the breaker's probe; the delete, sent first, times out first and stalls Redis.
      await Promise.all([cache.delete('other'), cache.get('a')]);
    } finally {
      server.process!.kill('SIGCONT');
    }
    const writer = createCache({ store: redisBackend({ url: server.url, keyPrefix }), memory: false });
    await writer.set('a', 'fresh');
    await expect.poll(() => cache.get('a'), { timeout: 5000, interval: 200 }).toBe('fresh');
    await Promise.all([cache.close(), writer.close()]);
  });

  it('counts invalidations that time out during a freeze as the same failure', async () => {
    const keyPrefix = fresh('bulk-freeze');
    const cache = createCache({
      store: {
        backend: redisBackend({ url: server.url, keyPrefix }),
        timeout: 150,
        breaker: { failures: 3, openFor: '30s' },
      },
      memory: false,
    });
    await cache.set('a', 'stored');
    server.process!.kill('SIGSTOP');
    try {
      expect(await cache.getOrCompute('a', () => 'computed')).toBe('computed');
      for (let i = 0; i < 4; i++) await cache.invalidate(`tool${i}`);
    } finally {
      server.process!.kill('SIGCONT');
    }
    await expect
      .poll(async () => (await cache.getOrComputeResult('a', () => 'computed again')).level, {
        timeout: 5000,
        interval: 100,
      })
      .toBe('redis');
    await cache.close();
  });

  it('lets go of a lock whose request timed out but landed later', async () => {
    const keyPrefix = fresh('late-lock');
    const backend = redisBackend({ url: server.url, keyPrefix });
    // Redis freezes just as the lock request is sent, and wakes 400 ms later to take it.
    const acquire = backend.acquireLock.bind(backend);
    let freeze = true;
    backend.acquireLock = (name, owner, ttl) => {
      if (freeze) {
        freeze = false;
        server.process!.kill('SIGSTOP');
        setTimeout(() => server.process!.kill('SIGCONT'), 400);
      }
      return acquire(name, owner, ttl);
    };
    const cache = createCache({ store: { backend, timeout: 150 }, memory: false, lockTtl: '20s' });
    expect(await cache.getOrCompute('k', () => 'computed without the lock')).toBe(
      'computed without the lock',
    );
    expect(freeze).toBe(false); // the lock request was sent, then Redis froze
    // Once Redis has answered, the lock is gone: other processes need not wait out its 20 s.
    await expect.poll(() => admin.keys(`${keyPrefix}l:*`), { timeout: 5000, interval: 100 }).toEqual([]);
    await cache.close();
  });

  it('holds lock leases by the server clock: a process whose clock runs ahead does not take a live lock', async () => {
    const keyPrefix = fresh('skew');
    const a = redisBackend({ url: server.url, keyPrefix });
    const b = redisBackend({ url: server.url, keyPrefix });
    expect(await a.acquireLock('job', 'a', 2000)).toBe(true);
    const now = Date.now();
    const ahead = vi.spyOn(Date, 'now').mockReturnValue(now + 60_000);
    try {
      expect(await b.acquireLock('job', 'b', 2000)).toBe(false);
    } finally {
      ahead.mockRestore();
    }
    expect(await a.releaseLock('job', 'a')).toBe(true);
    expect(await b.acquireLock('job', 'b', 2000)).toBe(true);
    await a.close();
    await b.close();
  });
});

describe('a failing computation under the cross-process lock', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'x-cache-res-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('lets the waiting processes compute at once instead of one after another', async () => {
    const path = join(dir, 'throws.db');
    const caches: Cache[] = Array.from({ length: 4 }, () => createCache({ store: sqliteBackend({ path }) }));
    let running = 0;
    let mostAtOnce = 0;
    const failing = async (): Promise<string> => {
      running++;
      mostAtOnce = Math.max(mostAtOnce, running);
      await sleep(300);
      running--;
      throw new Error('provider down');
    };
    const first = caches[0]!.getOrCompute('k', failing);
    await sleep(50);
    const waiters = caches.slice(1).map((cache) => cache.getOrCompute('k', failing));
    const outcomes = await Promise.allSettled([first, ...waiters]);
    expect(outcomes.every((outcome) => outcome.status === 'rejected')).toBe(true);
    // The three waiters ran their computations side by side once the holder's failed.
    expect(mostAtOnce).toBe(3);
    await Promise.all(caches.map((cache) => cache.close()));
  });
});

describe.skipIf(skip)('resilience against a Redis that stays down', () => {
  it('answers deletes and invalidations at once while the breaker is open', async () => {
    const own = await startRedis();
    const cache = createCache({
      store: {
        backend: redisBackend({ url: own.url, keyPrefix: fresh('down') }),
        timeout: 2000,
        breaker: { failures: 1, openFor: '30s' },
      },
    });
    await cache.set('doc', 'v');
    own.process!.kill('SIGKILL');
    await sleep(50);
    await cache.set('x', 'v'); // fails: the breaker opens
    const started = performance.now();
    await cache.delete('doc');
    await cache.invalidate('chat');
    await cache.invalidateTags(['t']);
    // None of them waits out the 2 s timeout on a Redis that keeps failing.
    expect(performance.now() - started).toBeLessThan(1000);
    expect(await cache.get('doc')).toBeUndefined(); // gone from the memory level at once
    // Reads that walk the store (statistics, listing) are skipped while the breaker is open.
    await sleep(2500); // the changes sent in the background have failed by now
    const errors = (await cache.getAllStats()).levels.redis?.errors;
    await cache.getAllStats();
    expect((await cache.getAllStats()).levels.redis?.errors).toBe(errors);
    await cache.close();
    await own.stop();
  });
});
