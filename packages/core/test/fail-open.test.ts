import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { redisBackend } from '../src/backends/redis.ts';
import type { Cache, CacheOptions } from '../src/cache.ts';
import { createCache } from '../src/cache.ts';
import { createToolLedger } from '../src/ledger/ledger.ts';
import type { RedisHandle } from './redis-server.ts';
import { redisUnavailable, restartRedis, startRedis } from './redis-server.ts';

// These tests stop, freeze and restart a server of their own, so REDIS_URL is not used here.
const skip =
  redisUnavailable() ?? (process.env.REDIS_URL ? 'REDIS_URL points at a shared server' : undefined);

const TIMEOUT_MS = 150;
const COMPUTE_MS = 20;
/** Generous: proves a call is bounded by the timeout, not that it is fast. */
const BOUND_MS = TIMEOUT_MS + COMPUTE_MS + 1000;

let server: RedisHandle;
let cache: Cache;
let computes = 0;

async function call(key: string): Promise<{ value: string; ms: number; level: string | undefined }> {
  const started = performance.now();
  const result = await cache.getOrComputeResult(key, async () => {
    computes++;
    await sleep(COMPUTE_MS);
    return `value of ${key}`;
  });
  return { value: result.value, ms: performance.now() - started, level: result.level };
}

describe.skipIf(skip)('fail-open against a real Redis', () => {
  beforeAll(async () => {
    server = await startRedis();
    cache = createCache({
      store: {
        backend: redisBackend({ url: server.url, keyPrefix: 'failopen:' }),
        timeout: TIMEOUT_MS,
        breaker: { failures: 3, openFor: '400ms' },
      },
      memory: false,
    });
  }, 30_000);

  afterAll(async () => {
    await cache?.close();
    await server?.stop();
  });

  it('serves hits while Redis is healthy', async () => {
    await call('healthy');
    expect(await call('healthy')).toMatchObject({ value: 'value of healthy', level: 'redis' });
  });

  it('returns computed values within the timeout while Redis is killed, then stops waiting on it', async () => {
    server.process!.kill('SIGKILL');
    await sleep(50);
    const before = computes;
    for (let i = 0; i < 8; i++) {
      const result = await call(`down-${i}`);
      expect(result.value).toBe(`value of down-${i}`);
      expect(result.ms).toBeLessThan(BOUND_MS);
    }
    expect(computes - before).toBe(8);
    const stats = await cache.getAllStats();
    // A few calls fail (or time out); then the level is skipped (stalled, or its breaker open).
    expect(stats.levels.redis?.errors).toBeGreaterThanOrEqual(1);
    expect(stats.levels.redis?.errors).toBeLessThan(8);
    expect(stats.levels.redis?.skipped).toBeGreaterThan(0);
  });

  it('resumes by itself after a restart', async () => {
    await restartRedis(server);
    await sleep(500);
    let level: string | undefined;
    for (let i = 0; i < 50 && level !== 'redis'; i++) {
      await call('after-restart');
      level = (await call('after-restart')).level;
      if (level !== 'redis') await sleep(100);
    }
    expect(level).toBe('redis');
  }, 20_000);

  it('never stalls on a hung (SIGSTOPped) Redis and recovers when it continues', async () => {
    await call('before-hang');
    const failed: string[] = [];
    const stopListening = cache.on('error', (event) => failed.push(event.operation));
    server.process!.kill('SIGSTOP');
    try {
      for (let i = 0; i < 6; i++) {
        const result = await call(`hung-${i}`);
        expect(result.value).toBe(`value of hung-${i}`);
        expect(result.ms).toBeLessThan(BOUND_MS);
      }
      // One timeout in all (the first read); the lock, the writes and the later calls skipped
      // the stalled level instead of each waiting out a timeout of their own.
      stopListening();
      expect(failed).toEqual(['get']);
      const hung = await call('before-hang');
      expect(hung.ms).toBeLessThan(BOUND_MS);
      expect(hung.level).toBeUndefined();
      // Statistics read and flush the store's counters: bounded by the timeout too, not stuck.
      const started = performance.now();
      await cache.stats();
      expect(performance.now() - started).toBeLessThan(BOUND_MS * 4);
    } finally {
      server.process!.kill('SIGCONT');
    }
    let level: string | undefined;
    for (let i = 0; i < 50 && level !== 'redis'; i++) {
      level = (await call('before-hang')).level;
      if (level !== 'redis') await sleep(100);
    }
    expect(level).toBe('redis');
  }, 20_000);
});

/** What the tests below opened on a server of their own: undone after each test, the server woken first. */
const owned: { servers: RedisHandle[]; closers: (() => unknown)[] } = { servers: [], closers: [] };
afterEach(async () => {
  for (const own of owned.servers) own.process?.kill('SIGCONT');
  while (owned.closers.length > 0) await owned.closers.pop()!();
  while (owned.servers.length > 0) await owned.servers.pop()!.stop();
});

/** A redis-server of this test's own (these tests stop, freeze and restart it), caches and clients on it. */
async function ownRedis() {
  const server = await startRedis();
  owned.servers.push(server);
  const open = (
    keyPrefix: string,
    options: Omit<CacheOptions, 'store'> & { timeout?: number } = {},
  ): Cache => {
    const { timeout = TIMEOUT_MS, ...rest } = options;
    const cache = createCache({
      store: { backend: redisBackend({ url: server.url, keyPrefix }), timeout },
      ...rest,
    });
    owned.closers.push(() => cache.close());
    return cache;
  };
  const admin = (): Redis => {
    const client = new Redis(server.url);
    owned.closers.push(() => client.disconnect());
    return client;
  };
  return { server, open, admin };
}

describe.skipIf(skip)('a frozen Redis behind a memory level', () => {
  it('costs one timeout in all (bus messages do not time out one by one) and is used again once it wakes', async () => {
    const { server: own, open } = await ownRedis();
    const cache = open('frozen-l1:');
    const reader = open('frozen-l1:', { memory: false });
    const failed: string[] = [];
    cache.on('error', (event) => failed.push(event.operation));
    await cache.ready();
    own.process!.kill('SIGSTOP');
    for (let i = 0; i < 12; i++) expect(await cache.getOrCompute(`frozen-${i}`, () => 'v')).toBe('v');
    // Long enough for anything sent with a deadline to have timed out.
    await sleep(TIMEOUT_MS * 3);
    expect(failed).toEqual(['get']);
    own.process!.kill('SIGCONT');
    // Well within the breaker's 5 s: no run of publish timeouts opened it.
    let stored: string | undefined;
    const woke = performance.now();
    for (let i = 0; i < 40 && stored !== 'after'; i++) {
      await cache.getOrCompute(`after-${i}`, () => 'after');
      stored = (await reader.getResult<string>(`after-${i}`))?.value;
      if (stored !== 'after') await sleep(50);
    }
    expect(stored).toBe('after');
    expect(performance.now() - woke).toBeLessThan(2_500);
  }, 30_000);
});

describe.skipIf(skip)('a lock holder whose store stalled and woke up', () => {
  it('still releases the cross-process lock, so other processes do not wait out its ttl', async () => {
    const { server: own, open } = await ownRedis();
    const a = open('stall-lock:', { memory: false, lockTtl: '6s' });
    const b = open('stall-lock:', { memory: false, lockTtl: '6s' });
    let finish!: () => void;
    const computing = new Promise<void>((resolve) => {
      finish = resolve;
    });
    let started!: () => void;
    const lockTaken = new Promise<void>((resolve) => {
      started = resolve;
    });
    const first = a.getOrCompute('k', async () => {
      started();
      await computing;
      return 'from a';
    });
    await lockTaken;
    // The store freezes while A computes; one of A's reads times out, so A's level is stalled.
    own.process!.kill('SIGSTOP');
    await a.get('other');
    own.process!.kill('SIGCONT');
    // A finishes at once, before anything else told it the store is back.
    finish();
    expect(await first).toBe('from a');
    const waited = performance.now();
    await b.getOrCompute('k', async () => 'from b');
    expect(performance.now() - waited).toBeLessThan(3000);
  }, 30_000);
});

describe.skipIf(skip)('the invalidation bus across a Redis outage', () => {
  it('joins the bus when Redis comes back, for a process that started while it was down', async () => {
    const { server: own, open } = await ownRedis();
    own.process!.kill('SIGKILL');
    await sleep(50);
    const early = open('bus-outage:');
    await early.ready();
    await restartRedis(own);
    const late = open('bus-outage:');
    await late.ready();
    // The early process subscribes once its connection is back (ioredis retries on its own).
    let early_sees = '';
    for (let i = 0; i < 60 && early_sees !== 'v2'; i++) {
      await early.set('k', 'v1');
      await late.set('k', 'v2');
      await sleep(50);
      early_sees = String(await early.get('k'));
    }
    expect(early_sees).toBe('v2');
  }, 30_000);
});

describe.skipIf(skip)('persisted counters across a slow Redis', () => {
  it('counts a flush that timed out but still landed once, not twice', async () => {
    const { open, admin } = await ownRedis();
    const cache = open('cnt:', { timeout: 100, memory: false, statsFlushInterval: 0 });
    await cache.set('k', 'v');
    for (let i = 0; i < 3; i++) await cache.getOrCompute('k', () => 'x');
    // The server stops answering for longer than the timeout, then executes what it received.
    await admin().call('CLIENT', 'PAUSE', '300', 'ALL');
    await cache.flushStats();
    await sleep(400);
    await cache.flushStats();
    expect((await cache.getAllStats()).totals.hits).toBe(3);
  }, 20_000);
});

describe.skipIf(skip)('persisted counters across a Redis outage', () => {
  it('keeps the counts of flushes made while Redis was down and persists them when it is back', async () => {
    const { server: own, open } = await ownRedis();
    const cache = open('cnt-down:', { timeout: 100, memory: false, statsFlushInterval: 0 });
    await cache.ready();
    own.process!.kill('SIGKILL');
    await sleep(50);
    for (let i = 0; i < 5; i++) {
      await cache.getOrCompute(`down-${i}`, () => 'v');
      await cache.flushStats();
    }
    await restartRedis(own);
    // Another process reads what was persisted once this one has flushed after the restart.
    const reader = open('cnt-down:', { memory: false });
    let persisted = 0;
    for (let i = 0; i < 50 && persisted < 5; i++) {
      await cache.flushStats();
      persisted = (await reader.getAllStats()).totals.misses;
      if (persisted < 5) await sleep(100);
    }
    expect(persisted).toBe(5);
  }, 20_000);
});

describe.skipIf(skip)('the tool ledger on a frozen Redis', () => {
  it('records the outcome of a tool that ran through a Redis pause longer than its lease: a retry replays', async () => {
    const { server: own, open } = await ownRedis();
    const cache = open('ledger-pause:', { memory: false });
    const ledger = createToolLedger({ cache, leaseTtl: '1s', tools: { email: { kind: 'write' } } });
    let sent = 0;
    const call = () =>
      ledger.executeOrReplay({
        tool: 'email',
        input: { to: 'ada' },
        execute: async () => {
          sent++;
          // Redis freezes right after the side effect, for longer than the lease.
          own.process!.kill('SIGSTOP');
          setTimeout(() => own.process!.kill('SIGCONT'), 1500).unref();
          return 'sent';
        },
      });
    expect((await call()).value).toBe('sent');
    // Once Redis is back, the outcome lands (the caller did not have to wait for it).
    let status: string | undefined;
    for (let i = 0; i < 100 && status !== 'succeeded'; i++) {
      await sleep(100);
      status = (await ledger.idempotency.list().catch(() => []))[0]?.status;
    }
    expect(status).toBe('succeeded');
    await sleep(1200);
    const retry = await call();
    expect(retry).toMatchObject({ source: 'replayed', value: 'sent' });
    expect(sent).toBe(1);
  }, 30_000);

  it('a retry in the same process joins an outcome still being recorded, even once its lease ran out', async () => {
    const { server: own, open } = await ownRedis();
    const cache = open('ledger-join:', { memory: false });
    const ledger = createToolLedger({ cache, leaseTtl: '1s', tools: { email: { kind: 'write' } } });
    let runs = 0;
    const call = () =>
      ledger.executeOrReplay({
        tool: 'email',
        input: { to: 'bo' },
        execute: async () => {
          runs++;
          own.process!.kill('SIGSTOP');
          return `sent ${runs}`;
        },
      });
    // The caller gets its outcome while Redis is still frozen; the lease (1 s) runs out.
    expect((await call()).value).toBe('sent 1');
    own.process!.kill('SIGCONT');
    const retry = await call();
    expect(retry.value).toBe('sent 1');
    expect(retry.source).not.toBe('executed');
    expect(runs).toBe(1);
  }, 30_000);

  it('withdraws a claim that timed out but landed later, so the retry runs at once', async () => {
    const { open, admin } = await ownRedis();
    const cache = open('ledger-late:', { memory: false });
    const ledger = createToolLedger({ cache, leaseTtl: '30s', tools: { charge: { kind: 'write' } } });
    let runs = 0;
    const charge = () =>
      ledger.executeOrReplay({ tool: 'charge', input: { amount: 5 }, execute: async () => ++runs });
    // Reads answer, writes (the claim's swap) wait: the claim times out, then lands.
    await admin().call('CLIENT', 'PAUSE', '400', 'WRITE');
    await expect(charge()).rejects.toMatchObject({ code: 'E_TIMEOUT' });
    expect(runs).toBe(0);
    await sleep(600);
    const started = performance.now();
    expect((await charge()).value).toBe(1);
    // Not held up by the 30 s lease of a claim whose call never ran.
    expect(performance.now() - started).toBeLessThan(5000);
    expect(runs).toBe(1);
  }, 30_000);

  it('fails a write tool with E_TIMEOUT instead of hanging, still runs read tools, and recovers', async () => {
    const { server: own, open } = await ownRedis();
    const cache = open('ledger-hang:', { memory: false });
    const ledger = createToolLedger({
      cache,
      tools: { send: { kind: 'write' }, status: { kind: 'read' } },
    });
    let sends = 0;
    const send = (to: string) =>
      ledger.executeOrReplay({ tool: 'send', input: { to }, execute: async () => ++sends });
    const timed = async <T>(
      run: () => Promise<T>,
    ): Promise<{ ms: number; outcome: PromiseSettledResult<T> }> => {
      const started = performance.now();
      const [outcome] = await Promise.allSettled([run()]);
      return { ms: performance.now() - started, outcome: outcome! };
    };
    await send('a');
    own.process!.kill('SIGSTOP');
    const write = await timed(() => send('b'));
    expect(write.outcome).toMatchObject({ status: 'rejected', reason: { code: 'E_TIMEOUT' } });
    // Never run unrecorded.
    expect(sends).toBe(1);
    expect(write.ms).toBeLessThan(BOUND_MS);
    const read = await timed(() =>
      ledger.executeOrReplay({ tool: 'status', input: {}, execute: async () => 'green' }),
    );
    expect(read.outcome).toMatchObject({ status: 'fulfilled', value: { value: 'green' } });
    expect(read.ms).toBeLessThan(BOUND_MS);
    own.process!.kill('SIGCONT');
    // Back: the same write runs once (its claim may have landed late: it is taken over or
    // replayed, never run twice).
    let outcome: Awaited<ReturnType<typeof send>> | undefined;
    for (let i = 0; i < 50 && !outcome; i++) {
      outcome = await send('c').catch(() => undefined);
      if (!outcome) await sleep(100);
    }
    expect(outcome?.value).toBe(2);
    expect((await send('c')).replayed).toBe(true);
  }, 20_000);
});

describe.skipIf(skip)('compute order on a Redis whose level is skipped', () => {
  it('runs compute only after getOrCompute has returned, also when the breaker skips Redis at once', async () => {
    const { server: own, open } = await ownRedis();
    const cache = open('order:', { memory: false, singleFlight: 'process', timeout: 100 });
    await cache.getOrCompute('warm', () => 'v');
    own.process!.kill('SIGKILL');
    await sleep(50);
    const orders: string[] = [];
    // Enough failures to open the breaker: the later calls are skipped synchronously.
    for (let i = 0; i < 8; i++) {
      const events: string[] = [];
      const call = cache.getOrCompute(`k${i}`, () => {
        events.push('compute');
        return i;
      });
      events.push('returned');
      expect(await call).toBe(i);
      orders.push(events.join(','));
    }
    expect(new Set(orders)).toEqual(new Set(['returned,compute']));
  }, 20_000);
});

/** 200,000 keys of another application: prefix invalidation and clear SCAN them all. */
async function fillWithOtherKeys(redis: Redis): Promise<void> {
  const batch = 10_000;
  for (let start = 0; start < 200_000; start += batch) {
    const args: string[] = [];
    for (let i = start; i < start + batch; i++) args.push(`other-app:${i}`, 'x');
    await redis.mset(...args);
  }
}

describe.skipIf(skip)('whole-store operations on a big shared Redis', () => {
  it('wait for a slow SCAN under bulkTimeout instead of marking Redis stalled', async () => {
    const { server: own, admin } = await ownRedis();
    const redis = admin();
    await fillWithOtherKeys(redis);
    const cache = createCache({
      store: { backend: redisBackend({ url: own.url, keyPrefix: 'big:' }), timeout: 50, bulkTimeout: '20s' },
      memory: false,
    });
    owned.closers.push(() => cache.close());
    const errors: string[] = [];
    cache.on('error', (event) => errors.push(event.operation));
    for (let i = 0; i < 5; i++) await cache.set(`k${i}`, i);
    const started = performance.now();
    // Slower than the 50 ms lookup timeout (a SCAN over 200k keys), well within bulkTimeout.
    await cache.clear();
    expect(performance.now() - started).toBeGreaterThan(50);
    expect(errors).toEqual([]);
    expect(await redis.keys('big:e*')).toEqual([]);
    expect(await cache.getOrCompute('k0', () => 'fresh')).toBe('fresh');
    expect(await cache.get('k0')).toBe('fresh');
    expect(errors).toEqual([]);
  }, 60_000);

  it('a delete that outlives bulkTimeout is announced again when it finishes, so other memory levels drop what they re-read', async () => {
    const { server: own, admin } = await ownRedis();
    const redis = admin();
    await fillWithOtherKeys(redis);
    const make = (bulkTimeout: '1ms' | '20s') => {
      const cache = createCache({
        store: { backend: redisBackend({ url: own.url, keyPrefix: 'late:' }), timeout: 500, bulkTimeout },
      });
      owned.closers.push(() => cache.close());
      return cache;
    };
    const clearing = make('1ms');
    const reader = make('20s');
    await clearing.ready();
    await reader.ready();
    for (let i = 0; i < 20; i++) await clearing.set(`k${i}`, `old-${i}`);
    const errors: string[] = [];
    clearing.on('error', (event) => errors.push(event.operation));
    // The SCAN outlives its 1 ms deadline; clear() returns while Redis is still deleting.
    await clearing.clear();
    expect(errors).toContain('deleteByPrefix');
    // Meanwhile the other process reads (some entries are still in Redis) into its memory level.
    for (let i = 0; i < 20; i++) await reader.get(`k${i}`);
    // Once the deletes are done (announced again), no process serves an old copy.
    let left = 20;
    for (let attempt = 0; attempt < 100 && left > 0; attempt++) {
      await sleep(50);
      left = 0;
      for (let i = 0; i < 20; i++) {
        if ((await reader.get(`k${i}`)) !== undefined) left++;
        if ((await clearing.get(`k${i}`)) !== undefined) left++;
      }
    }
    expect(left).toBe(0);
  }, 60_000);
});
