import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CacheBackend, Clock } from '../src/backends/backend.ts';
import { memoryBackend } from '../src/backends/memory.ts';
import { redisBackend } from '../src/backends/redis.ts';
import { sqliteBackend } from '../src/backends/sqlite.ts';
import { createCache } from '../src/cache.ts';
import { CacheError } from '../src/errors.ts';
import type { IdempotencyStore } from '../src/ledger/index.ts';
import { createIdempotencyStore, IdempotencyConflictError, LEDGER_KEY_PREFIX } from '../src/ledger/index.ts';
import type { RedisHandle } from './redis-server.ts';
import { redisUnavailable, startRedis } from './redis-server.ts';

const skipRedis = redisUnavailable();
let server: RedisHandle | undefined;
beforeAll(async () => {
  if (!skipRedis) server = await startRedis();
}, 30_000);
afterAll(async () => {
  await server?.stop();
});

interface FakeClock extends Clock {
  advance(ms: number): void;
}

function fakeClock(): FakeClock {
  let now = Date.UTC(2030, 0, 1);
  return { now: () => now, advance: (ms) => void (now += ms) };
}

interface Harness {
  label: string;
  skip?: string | undefined;
  /** Opens the shared store; every call is a new connection (a new process, as far as the store knows). */
  open(clock: Clock): CacheBackend;
  shared: boolean;
}

let dir: string;
let run = 0;
let redisPrefix = '';
const harnesses: Harness[] = [
  {
    label: 'memory',
    shared: false,
    open: (() => {
      let backend: CacheBackend | undefined;
      let forDir: string | undefined;
      return (clock: Clock) => {
        // One instance per test: a memory store is only shared within the process.
        if (!backend || forDir !== dir) {
          backend = memoryBackend({ clock });
          forDir = dir;
        }
        return backend;
      };
    })(),
  },
  { label: 'SQLite', shared: true, open: (clock) => sqliteBackend({ path: join(dir, 'ledger.db'), clock }) },
  {
    label: 'Redis',
    skip: skipRedis,
    shared: true,
    open: (clock) => redisBackend({ url: server!.url, keyPrefix: redisPrefix, clock }),
  },
];

const opened: CacheBackend[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'x-idempotency-'));
  redisPrefix = `idem-${process.pid}-${++run}:`;
});
afterEach(async () => {
  for (const backend of new Set(opened.splice(0))) await backend.close().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

async function keysUnder(backend: CacheBackend, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of backend.keys({ prefix })) keys.push(key);
  return keys;
}

for (const harness of harnesses) {
  describe.skipIf(harness.skip)(`createIdempotencyStore (${harness.label})`, () => {
    let clock: FakeClock;
    const open = (options: Parameters<typeof createIdempotencyStore>[0] = {}): IdempotencyStore => {
      const backend = harness.open(clock);
      opened.push(backend);
      return createIdempotencyStore({ store: backend, clock, ...options });
    };
    beforeEach(() => {
      clock = fakeClock();
    });

    it('checkOrCreate creates a pending record once; later callers see it pending', async () => {
      const store = open();
      const first = await store.checkOrCreate('charge-1', { amount: 5 });
      expect(first.status).toBe('created');
      if (first.status !== 'created') return;
      expect(first.record).toMatchObject({
        key: 'charge-1',
        status: 'pending',
        attempts: 1,
        owner: first.owner,
      });
      expect(first.record.leaseExpiresAt).toBe(clock.now() + 30_000);
      const second = await store.checkOrCreate('charge-1', { amount: 5 });
      expect(second).toMatchObject({ status: 'pending', abandoned: false });
      expect((await store.check('charge-1'))?.status).toBe('pending');
      expect(await store.check('never-used')).toBeUndefined();
    });

    it('keeps the retention a key was claimed with when it completes', async () => {
      const store = open({ ttl: '7d' });
      const claim = await store.checkOrCreate('hourly', { a: 1 }, { ttl: '1h' });
      if (claim.status !== 'created') throw new Error('expected a claim');
      await store.markSucceeded('hourly', 'ok', claim.owner);
      expect((await store.check('hourly'))?.expiresAt).toBe(clock.now() + 3_600_000);
      const forever = await store.checkOrCreate('forever', { a: 1 }, { ttl: Number.POSITIVE_INFINITY });
      if (forever.status !== 'created') throw new Error('expected a claim');
      await store.markFailed('forever', new Error('no'), forever.owner);
      expect((await store.check('forever'))?.expiresAt).toBeUndefined();
    });

    it("renew without a leaseTtl extends by the claim's own lease, never shortening it", async () => {
      const store = open();
      const claim = await store.checkOrCreate('job', { id: 1 }, { leaseTtl: '10m' });
      if (claim.status !== 'created') throw new Error('expected a claim');
      clock.advance(60_000);
      expect(await store.renew('job', claim.owner)).toBe(true);
      expect((await store.check('job'))?.leaseExpiresAt).toBe(clock.now() + 600_000);
      clock.advance(45_000);
      expect((await store.checkOrCreate('job', { id: 1 })).status).toBe('pending');
    });

    it('release after a forced re-claim gives back the recorded outcome', async () => {
      const store = open();
      const claim = await store.checkOrCreate('send', { to: 'ada' });
      if (claim.status !== 'created') throw new Error('expected a claim');
      await store.markSucceeded('send', 'sent', claim.owner);
      const forced = await store.checkOrCreate('send', { to: 'ada' }, { force: true });
      if (forced.status !== 'created') throw new Error('expected a forced claim');
      expect(await store.release('send', forced.owner)).toBe(true);
      expect(await store.check('send')).toMatchObject({ status: 'succeeded', result: 'sent' });
      expect((await store.checkOrCreate('send', { to: 'ada' })).status).not.toBe('created');
    });

    it('waitFor returns by its timeout, whatever the poll interval', async () => {
      const store = open();
      await store.checkOrCreate('slow', { a: 1 }, { leaseTtl: '1h' });
      const started = Date.now();
      const record = await store.waitFor('slow', { timeout: 700, pollInterval: '1m' });
      expect(record?.status).toBe('pending');
      expect(Date.now() - started).toBeLessThan(1_000);
    });

    it('markSucceeded records the result for replay, and only the holder can complete', async () => {
      const store = open();
      const claim = await store.checkOrCreate('charge-2', { amount: 5 });
      if (claim.status !== 'created') throw new Error('expected a claim');
      expect(await store.markSucceeded('charge-2', { id: 'ch_1' }, 'someone-else')).toBe(false);
      const when = new Date(Date.UTC(2030, 0, 2));
      expect(
        await store.markSucceeded('charge-2', { id: 'ch_1', when, tags: new Set(['a']) }, claim.owner),
      ).toBe(true);
      expect(await store.markSucceeded('charge-2', { id: 'ch_2' }, claim.owner)).toBe(false);
      const replay = await store.checkOrCreate('charge-2', { amount: 5 });
      expect(replay.status).toBe('succeeded');
      expect(replay.record.result).toEqual({ id: 'ch_1', when, tags: new Set(['a']) });
      expect(replay.record.owner).toBeUndefined();
      expect(replay.record.completedAt).toBe(clock.now());
    });

    it('a key reused for a different request is a typed conflict, never a replay', async () => {
      const store = open();
      const claim = await store.checkOrCreate('charge-3', { amount: 5, currency: 'eur' });
      if (claim.status !== 'created') throw new Error('expected a claim');
      await store.markSucceeded('charge-3', 'ok', claim.owner);
      // Same request, other key order: the same request.
      expect((await store.checkOrCreate('charge-3', { currency: 'eur', amount: 5 })).status).toBe(
        'succeeded',
      );
      const conflict = await store
        .checkOrCreate('charge-3', { amount: 500, currency: 'eur' })
        .catch((e) => e);
      expect(conflict).toBeInstanceOf(IdempotencyConflictError);
      expect(IdempotencyConflictError.isInstance(conflict)).toBe(true);
      expect(CacheError.isInstance(conflict)).toBe(true);
      expect(conflict.code).toBe('E_IDEMPOTENCY_CONFLICT');
      expect(conflict.message).toMatch(/charge-3.*different request.*new key/);
      await expect(store.check('charge-3', { amount: 500, currency: 'eur' })).rejects.toBeInstanceOf(
        IdempotencyConflictError,
      );
      expect((await store.check('charge-3', { amount: 5, currency: 'eur' }))?.result).toBe('ok');
    });

    it('a pending record whose lease ran out is taken over; the old holder can no longer complete it', async () => {
      const store = open();
      const crashed = await store.checkOrCreate('job', 'payload', { leaseTtl: '10s' });
      if (crashed.status !== 'created') throw new Error('expected a claim');
      clock.advance(9_999);
      expect((await store.checkOrCreate('job', 'payload')).status).toBe('pending');
      clock.advance(1);
      const takeover = await store.checkOrCreate('job', 'payload');
      expect(takeover).toMatchObject({ status: 'created', recovered: true, record: { attempts: 2 } });
      if (takeover.status !== 'created') return;
      expect(await store.markSucceeded('job', 'late', crashed.owner)).toBe(false);
      expect(await store.renew('job', crashed.owner)).toBe(false);
      expect(await store.markSucceeded('job', 'done', takeover.owner)).toBe(true);
      expect((await store.check('job'))?.result).toBe('done');
    });

    it('renew keeps a live holder from being taken over; takeOver: false reports the record abandoned', async () => {
      const store = open();
      const claim = await store.checkOrCreate('renewed', 1, { leaseTtl: 1000 });
      if (claim.status !== 'created') throw new Error('expected a claim');
      for (let i = 0; i < 5; i++) {
        clock.advance(900);
        expect(await store.renew('renewed', claim.owner, 1000)).toBe(true);
        expect((await store.checkOrCreate('renewed', 1)).status).toBe('pending');
      }
      clock.advance(1000);
      expect(await store.checkOrCreate('renewed', 1, { takeOver: false })).toMatchObject({
        status: 'pending',
        abandoned: true,
      });
      expect((await store.stats()).abandoned).toBe(1);
    });

    it('failed records replay unless retryFailed or force; force never takes a live claim', async () => {
      const store = open();
      const claim = await store.checkOrCreate('flaky', 'x');
      if (claim.status !== 'created') throw new Error('expected a claim');
      const error = Object.assign(new TypeError('boom'), { code: 'E_BOOM' });
      expect(await store.markFailed('flaky', error, claim.owner)).toBe(true);
      const failed = await store.checkOrCreate('flaky', 'x');
      expect(failed.status).toBe('failed');
      expect(failed.record.error).toMatchObject({ name: 'TypeError', message: 'boom', code: 'E_BOOM' });
      const retry = await store.checkOrCreate('flaky', 'x', { retryFailed: true });
      expect(retry).toMatchObject({ status: 'created', recovered: false, record: { attempts: 2 } });
      if (retry.status !== 'created') return;
      expect(retry.record.error).toBeUndefined();
      // A live claim is never taken, forced or not.
      expect((await store.checkOrCreate('flaky', 'x', { force: true })).status).toBe('pending');
      await store.markFailed('flaky', undefined, retry.owner, {
        result: { exitCode: 2, stdout: '', stderr: 'no' },
      });
      const withValue = await store.check('flaky');
      expect(withValue).toMatchObject({ status: 'failed', result: { exitCode: 2, stderr: 'no' } });
      expect(withValue?.error).toBeUndefined();
      const forced = await store.checkOrCreate('flaky', 'x', { force: true });
      expect(forced).toMatchObject({ status: 'created', record: { attempts: 3 } });
    });

    it('create only claims a free key; release frees it; delete forgets any record', async () => {
      const store = open();
      const created = await store.create('k', 'r');
      expect(created?.record.status).toBe('pending');
      expect(await store.create('k', 'r')).toBeUndefined();
      expect(await store.release('k', 'not-the-owner')).toBe(false);
      expect(await store.release('k', created!.owner)).toBe(true);
      expect(await store.check('k')).toBeUndefined();
      const again = await store.create('k', 'r');
      await store.markSucceeded('k', 1, again!.owner);
      expect(await store.release('k', again!.owner)).toBe(false);
      expect(await store.delete('k')).toBe(true);
      expect(await store.check('k')).toBeUndefined();
    });

    it('records expire after their ttl: the key is free again, even for another request', async () => {
      const store = open({ ttl: '1h' });
      const claim = await store.checkOrCreate('short-lived', 'a');
      if (claim.status !== 'created') throw new Error('expected a claim');
      clock.advance(10 * 60_000);
      await store.markSucceeded('short-lived', 'A', claim.owner);
      const record = await store.check('short-lived');
      expect(record?.expiresAt).toBe(clock.now() + 3_600_000);
      clock.advance(3_599_999);
      expect((await store.check('short-lived'))?.result).toBe('A');
      clock.advance(1);
      expect(await store.check('short-lived')).toBeUndefined();
      expect((await store.checkOrCreate('short-lived', 'b')).status).toBe('created');
    });

    it('stats and list are derived from the records, so another instance (or the CLI) sees the same', async () => {
      const store = open();
      const states = [
        ['s1', 'succeeded', 't1'],
        ['s2', 'succeeded', 't2'],
        ['f1', 'failed', 't1'],
        ['p1', 'pending', 't1'],
        ['p2', 'pending', 't2'],
      ] as const;
      for (const [key, state, taskId] of states) {
        const claim = await store.checkOrCreate(key, key, {
          leaseTtl: key === 'p2' ? 1000 : '1h',
          metadata: { taskId },
        });
        if (claim.status !== 'created') throw new Error('expected a claim');
        if (state === 'succeeded') await store.markSucceeded(key, key, claim.owner);
        if (state === 'failed') await store.markFailed(key, new Error('x'), claim.owner);
      }
      clock.advance(1000);
      const other = harness.shared ? open() : store;
      expect(await other.stats()).toEqual({ pending: 2, succeeded: 2, failed: 1, abandoned: 1, total: 5 });
      expect(await other.stats({ metadata: { taskId: 't1' } })).toEqual({
        pending: 1,
        succeeded: 1,
        failed: 1,
        abandoned: 0,
        total: 3,
      });
      const pending = await other.list({ status: 'pending' });
      expect(pending.map((record) => record.key).sort()).toEqual(['p1', 'p2']);
      expect(pending.every((record) => !('result' in record))).toBe(true);
      // Namespaces never see each other's records.
      const elsewhere = createIdempotencyStore({ store: harness.open(clock), clock, namespace: 'other-app' });
      expect((await elsewhere.stats()).total).toBe(0);
      expect(await elsewhere.check('s1')).toBeUndefined();
    });

    it('cleanupExpired removes expired records from the store', async () => {
      const store = open({ ttl: '1m' });
      for (const key of ['a', 'b']) {
        const claim = await store.checkOrCreate(key, key);
        if (claim.status === 'created') await store.markSucceeded(key, key, claim.owner);
      }
      clock.advance(60_000);
      const claim = await store.checkOrCreate('c', 'c', { ttl: '1h' });
      expect(claim.status).toBe('created');
      expect(await store.cleanupExpired()).toBeGreaterThanOrEqual(harness.label === 'Redis' ? 0 : 2);
      expect((await store.backend.stats()).entries).toBe(1);
      expect((await store.stats()).total).toBe(1);
    });

    it('20 concurrent checkOrCreate calls (from two store connections): exactly one claims', async () => {
      const stores = [open(), open()];
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => stores[i % 2]!.checkOrCreate('race', { same: true })),
      );
      expect(results.filter((result) => result.status === 'created')).toHaveLength(1);
      expect(results.filter((result) => result.status === 'pending')).toHaveLength(19);
      // And a takeover race after the lease ran out: still one winner.
      clock.advance(30_000);
      const takeovers = await Promise.all(
        Array.from({ length: 20 }, (_, i) => stores[i % 2]!.checkOrCreate('race', { same: true })),
      );
      expect(takeovers.filter((result) => result.status === 'created')).toHaveLength(1);
    });

    it('results over 10 KB are stored once by content hash and referenced', async () => {
      const store = open();
      const blobPrefix = `${LEDGER_KEY_PREFIX}default:blob:`;
      const bigLog = 'compiling…\n'.repeat(2000);
      for (const key of ['build-1', 'build-2']) {
        const claim = await store.checkOrCreate(key, key);
        if (claim.status !== 'created') throw new Error('expected a claim');
        clock.advance(1000);
        await store.markSucceeded(
          key,
          { exitCode: 0, stdout: bigLog, stderr: '', ms: clock.now() },
          claim.owner,
        );
      }
      expect(await keysUnder(store.backend, blobPrefix)).toHaveLength(1);
      const first = await store.check<{ stdout: string; ms: number }>('build-1');
      const second = await store.check<{ stdout: string; ms: number }>('build-2');
      expect(first?.result?.stdout).toBe(bigLog);
      expect(second?.result).toEqual({ exitCode: 0, stdout: bigLog, stderr: '', ms: second?.result?.ms });
      expect(first?.result?.ms).not.toBe(second?.result?.ms);
      // The records themselves stay small.
      const recordKeys = await keysUnder(store.backend, `${LEDGER_KEY_PREFIX}default:idem:`);
      for (const entry of await store.backend.getMany(recordKeys))
        expect(entry!.value.byteLength).toBeLessThan(2048);

      // 10 KB exactly stays inline; one byte more goes to a blob. Binary and whole values too.
      const cases: Array<[string, unknown, number]> = [
        ['at-threshold', 'x'.repeat(10 * 1024), 1],
        ['over-threshold', 'x'.repeat(10 * 1024 + 1), 2],
        ['binary', new Uint8Array(20_000).fill(7), 3],
        ['many-small-fields', Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`f${i}`, i])), 4],
      ];
      for (const [key, value, blobs] of cases) {
        const claim = await store.checkOrCreate(key, key);
        if (claim.status !== 'created') throw new Error('expected a claim');
        await store.markSucceeded(key, value, claim.owner);
        expect(await keysUnder(store.backend, blobPrefix)).toHaveLength(blobs);
        expect((await store.check(key))?.result).toEqual(value);
      }
    });

    it('a blob outlives every record that references it', async () => {
      const store = open({ ttl: '1h' });
      const big = 'y'.repeat(20_000);
      const complete = async (key: string) => {
        const claim = await store.checkOrCreate(key, key);
        if (claim.status === 'created') await store.markSucceeded(key, big, claim.owner);
      };
      await complete('early');
      clock.advance(30 * 60_000);
      await complete('late');
      clock.advance(45 * 60_000);
      expect(await store.check('early')).toBeUndefined();
      expect((await store.check('late'))?.result).toBe(big);
    });
  });
}

describe('createIdempotencyStore setup', () => {
  it('uses the store behind a cache, and survives a restart (SQLite)', async () => {
    const dbDir = mkdtempSync(join(tmpdir(), 'x-idempotency-restart-'));
    try {
      const path = join(dbDir, 'cache.db');
      const first = createCache({ store: sqliteBackend({ path }) });
      const store = createIdempotencyStore({ cache: first });
      const claim = await store.checkOrCreate('restart', 'r');
      if (claim.status !== 'created') throw new Error('expected a claim');
      await store.markSucceeded('restart', { done: true }, claim.owner);
      await first.close();
      const second = createCache({ store: sqliteBackend({ path }) });
      const reopened = createIdempotencyStore({ cache: second });
      expect(await reopened.checkOrCreate('restart', 'r')).toMatchObject({
        status: 'succeeded',
        record: { result: { done: true } },
      });
      await second.close();
    } finally {
      rmSync(dbDir, { recursive: true, force: true });
    }
  });

  it('shares one in-process store between the stores of a memory-only cache', async () => {
    const cache = createCache();
    const a = createIdempotencyStore({ cache });
    const b = createIdempotencyStore({ cache });
    expect((await a.checkOrCreate('k', 1)).status).toBe('created');
    expect((await b.checkOrCreate('k', 1)).status).toBe('pending');
    expect((await createIdempotencyStore({ cache: createCache() }).checkOrCreate('k', 1)).status).toBe(
      'created',
    );
  });

  it('refuses a store that cannot update atomically, and bad options, with the fix in the message', () => {
    const backend = memoryBackend();
    const plain = new Proxy(backend, {
      get: (target, name) => (name === 'compareAndSwap' ? undefined : Reflect.get(target, name)),
    });
    expect(() => createIdempotencyStore({ store: plain })).toThrow(
      /cannot update atomically.*compareAndSwap/,
    );
    expect(() => createIdempotencyStore({})).toThrow(/needs `cache` or `store`/);
    expect(() => createIdempotencyStore({ store: backend, leaseTtl: 0 })).toThrow(
      /leaseTtl must be a positive/,
    );
    expect(() => createIdempotencyStore({ store: backend, namespace: 'bad ns' })).toThrow(
      /invalid namespace/,
    );
    const store = createIdempotencyStore({ store: backend });
    return expect(store.checkOrCreate('', 1)).rejects.toThrow(/non-empty string/);
  });
});
