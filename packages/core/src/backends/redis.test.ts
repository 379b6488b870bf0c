import { execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterHandle, RedisHandle } from '../../test/redis-server.ts';
import { redisUnavailable, startCluster, startRedis } from '../../test/redis-server.ts';
import { deferred } from '../../test/support.ts';
import { createCache } from '../cache.ts';
import { CacheError } from '../errors.ts';
import { createIdempotencyStore } from '../ledger/idempotency.ts';
import { createToolLedger } from '../ledger/ledger.ts';
import { runBackendConformance } from '../testing/index.ts';
import type { RedisBackend } from './redis.ts';
import { loadIoRedis, redisBackend } from './redis.ts';

const skip = redisUnavailable();
const d = skip ? describe.skip : describe;

let server: RedisHandle | undefined;
let cluster: ClusterHandle | undefined;
let run = 0;

beforeAll(async () => {
  if (skip) return;
  server = await startRedis();
  cluster = await startCluster();
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await cluster?.stop();
});

/** A fresh key prefix per test, so tests (and a shared REDIS_URL) never see each other's keys. */
function freshPrefix(label: string): string {
  run++;
  return `t${process.pid}-${run}-${label}:`;
}

if (!skip) {
  runBackendConformance('redis (standalone)', () => {
    const keyPrefix = freshPrefix('conf');
    return {
      open: ({ clock }) => redisBackend({ url: server!.url, keyPrefix, clock }),
    };
  });

  runBackendConformance(
    'redis (cluster of 3 masters)',
    () => {
      const keyPrefix = freshPrefix('cluster');
      return {
        open: ({ clock }) => redisBackend({ cluster: cluster!.nodes, keyPrefix, clock }),
      };
    },
    { largeValueBytes: 1024 * 1024 },
  );
}

/** An ioredis client that records every command it sends (each one a round trip or part of a pipeline). */
function countingClient(url: string): { client: Redis; sent: string[] } {
  const client = new Redis(url);
  const sent: string[] = [];
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
    sent.push(command.name);
    return (send as (...args: unknown[]) => unknown)(command, ...rest);
  }) as typeof client.sendCommand;
  return { client, sent };
}

d('redisBackend', () => {
  it('keeps two key prefixes (apps, tenants) on one Redis apart, clear included', async () => {
    const a = redisBackend({ url: server!.url, keyPrefix: freshPrefix('app-a') });
    const b = redisBackend({ url: server!.url, keyPrefix: freshPrefix('app-b') });
    await a.set('ns:k:1', { value: new Uint8Array([1]) });
    expect(await b.get('ns:k:1')).toBeUndefined();
    await b.set('ns:k:1', { value: new Uint8Array([2]) });
    await a.clear();
    expect((await b.get('ns:k:1'))?.value).toEqual(new Uint8Array([2]));
    await a.close();
    await b.close();
  });

  it('clear() leaves a longer prefix and unrelated keys that merely start with the prefix alone', async () => {
    const base = freshPrefix('nest');
    const a = redisBackend({ url: server!.url, keyPrefix: base });
    const b = redisBackend({ url: server!.url, keyPrefix: `${base}eu:` });
    const raw = new Redis(server!.url);
    await a.set('ns:k', { value: new Uint8Array([1]), tags: ['t'] });
    await b.set('ns:k', { value: new Uint8Array([2]) });
    await raw.set(`${base}token`, 'secret');
    await raw.set(`${base}e-not-an-entry`, 'kept');
    await a.clear();
    expect(await a.get('ns:k')).toBeUndefined();
    expect(await a.deleteByTag('t')).toBe(0);
    expect((await b.get('ns:k'))?.value).toEqual(new Uint8Array([2]));
    expect(await raw.get(`${base}token`)).toBe('secret');
    expect(await raw.get(`${base}e-not-an-entry`)).toBe('kept');
    raw.disconnect();
    await a.close();
    await b.close();
  });

  it("reads and clears only its own counters under an empty key prefix, other apps' c:* keys untouched", async () => {
    // The empty prefix shares the keyspace with other applications: database 9 of the test server.
    const url = new URL(server!.url);
    url.pathname = '/9';
    const id = freshPrefix('bare').slice(0, -1);
    const store = redisBackend({ url: url.toString(), keyPrefix: '' });
    const raw = new Redis(url.toString());
    // Another application's keys that match `c:*`: a string, a hash of numbers under a scope the
    // cache never writes, and a hash of text under one it could.
    await raw.set(`c:session:${id}`, 'alice');
    await raw.hset(`c:rate:${id}`, { count: '5' });
    await raw.hset(`c:t:${id}:profile`, { name: 'bob' });
    const count = async () => {
      await store.incrementCounters(`t:responses:${id}`, { hits: 2, costSavedUsd: 0.25 });
      await store.incrementCounters(`l:${id}`, { hits: 1 });
      await store.incrementCounters(`~ledger/${id}:deploy`, { calls: 3 });
    };
    await count();
    await store.clearCounters();
    expect(await raw.get(`c:session:${id}`)).toBe('alice');
    expect(await raw.hgetall(`c:rate:${id}`)).toEqual({ count: '5' });
    expect(await raw.hgetall(`c:t:${id}:profile`)).toEqual({ name: 'bob' });
    expect(await raw.exists(`c:t:responses:${id}`, `c:l:${id}`, `c:~ledger/${id}:deploy`)).toBe(0);

    await count();
    const counters = await store.readCounters();
    expect(counters[`t:responses:${id}`]).toEqual({ hits: 2, costSavedUsd: 0.25 });
    expect(counters[`l:${id}`]).toEqual({ hits: 1 });
    expect(counters[`~ledger/${id}:deploy`]).toEqual({ calls: 3 });
    expect(Object.keys(counters).filter((scope) => scope.includes(id))).toHaveLength(3);
    await store.clearCounters();
    await raw.del(`c:session:${id}`, `c:rate:${id}`, `c:t:${id}:profile`);
    raw.disconnect();
    await store.close();
  });

  it('skips a key under its prefix that is not a counter hash instead of failing the read', async () => {
    const keyPrefix = freshPrefix('odd-counter');
    const store = redisBackend({ url: server!.url, keyPrefix });
    // Counted at once, while the new client is still connecting: sent once it is up.
    await store.incrementCounters('t:tools:default', { hits: 1 });
    const raw = new Redis(server!.url);
    await raw.set(`${keyPrefix}c:t:responses:default`, 'not a hash');
    expect(await store.readCounters()).toEqual({ 't:tools:default': { hits: 1 } });
    await store.clearCounters();
    expect(await store.readCounters()).toEqual({});
    expect(await raw.get(`${keyPrefix}c:t:responses:default`)).toBe('not a hash');
    raw.disconnect();
    await store.close();
  });

  it('invalidates by prefix from a cluster client that has not connected yet', async () => {
    const keyPrefix = freshPrefix('fresh-cluster');
    const writer = redisBackend({ cluster: cluster!.nodes, keyPrefix });
    const keys = Array.from({ length: 20 }, (_, i) => `p/${i}`);
    for (const [i, key] of keys.entries()) await writer.set(key, { value: new Uint8Array([i]) });
    // A short-lived process (the CLI, a worker) invalidates right after it starts.
    const fresh = redisBackend({ cluster: cluster!.nodes, keyPrefix });
    expect(await fresh.deleteByPrefix('p/')).toBe(20);
    expect((await writer.getMany(keys)).filter(Boolean)).toHaveLength(0);
    await fresh.close();
    await writer.close();
  });

  it('refuses an ioredis client with a keyPrefix of its own, naming the fix', () => {
    const client = new Redis(server!.url, { keyPrefix: 'io:', lazyConnect: true });
    expect(() => redisBackend({ client, keyPrefix: 'x:' })).toThrow(
      /own keyPrefix.*redisBackend\(\{ client, keyPrefix/,
    );
    client.disconnect();
  });

  it('refuses a keyPrefix given to the client it creates (redisOptions, URL, clusterOptions), naming the fix', () => {
    const fix = /give ioredis a keyPrefix of its own.*redisBackend\(\{ keyPrefix/;
    expect(() => redisBackend({ url: server!.url, redisOptions: { keyPrefix: 'io:' } })).toThrow(fix);
    expect(() => redisBackend({ url: `${server!.url}?keyPrefix=io:` })).toThrow(fix);
    if (cluster) {
      const nodes = cluster.nodes;
      expect(() => redisBackend({ cluster: nodes, clusterOptions: { keyPrefix: 'io:' } })).toThrow(fix);
      expect(() =>
        redisBackend({ cluster: nodes, clusterOptions: { redisOptions: { keyPrefix: 'io:' } } }),
      ).toThrow(fix);
    }
  });

  // Freezes a server of its own, so not with REDIS_URL.
  it.skipIf(process.env.REDIS_URL)(
    'close() gives up on a frozen Redis after a second instead of hanging',
    async () => {
      const own = await startRedis();
      try {
        const backend = redisBackend({ url: own.url, keyPrefix: freshPrefix('close') });
        await backend.set('k', { value: new Uint8Array([1]) });
        own.process!.kill('SIGSTOP');
        const started = performance.now();
        await backend.close();
        expect(performance.now() - started).toBeLessThan(3000);
      } finally {
        await own.stop();
      }
    },
  );

  it('serves a hit with one GET and a miss + store with a GET and one script call', async () => {
    const { client, sent } = countingClient(server!.url);
    const cache = createCache({
      store: redisBackend({ client, keyPrefix: freshPrefix('rt') }),
      memory: false,
      singleFlight: 'process',
    });
    await cache.set('load-the-scripts', 1);
    sent.length = 0;
    await cache.getOrCompute('k', async () => 'v');
    expect(sent).toEqual(['get', 'evalsha']);
    sent.length = 0;
    expect(await cache.getOrCompute('k', async () => 'other')).toBe('v');
    expect(sent).toEqual(['get']);
    await cache.close();
    client.disconnect();
  });

  it('sends reads issued together as one MGET and hands each caller its own entry', async () => {
    const { client, sent } = countingClient(server!.url);
    const backend = redisBackend({ client, keyPrefix: freshPrefix('batch') });
    const keys = Array.from({ length: 40 }, (_, i) => `ns:doc:${i}`);
    for (const [i, key] of keys.entries()) await backend.set(key, { value: new Uint8Array([i]) });
    sent.length = 0;
    // The first read goes out at once (nothing in flight); the 39 issued meanwhile share one MGET.
    const entries = await Promise.all([...keys, 'ns:missing'].map((key) => backend.get(key)));
    expect(sent).toEqual(['get', 'mget']);
    expect(entries.map((entry) => entry?.value[0])).toEqual([...keys.map((_, i) => i), undefined]);
    // A lone read stays a plain GET.
    sent.length = 0;
    expect((await backend.get(keys[7]!))?.value).toEqual(new Uint8Array([7]));
    expect(sent).toEqual(['get']);
    await backend.close();
    client.disconnect();
  });

  it('serves concurrent cache hits from batched reads, each caller with its own value', async () => {
    const { client, sent } = countingClient(server!.url);
    const cache = createCache({
      store: redisBackend({ client, keyPrefix: freshPrefix('batch-cache') }),
      memory: false,
      singleFlight: 'process',
    });
    for (let i = 0; i < 64; i++) await cache.set({ name: 'chat', request: { i } }, { answer: i });
    sent.length = 0;
    const values = await Promise.all(
      Array.from({ length: 64 }, (_, i) =>
        cache.getOrCompute({ name: 'chat', request: { i } }, () => ({ answer: -1 })),
      ),
    );
    expect(values).toEqual(Array.from({ length: 64 }, (_, i) => ({ answer: i })));
    expect(sent.length).toBeLessThan(8);
    expect(sent.every((name) => name === 'get' || name === 'mget')).toBe(true);
    expect((await cache.stats()).hits).toBe(64);
    await cache.close();
    client.disconnect();
  });

  it('sends every read on its own with batchReads: false', async () => {
    const { client, sent } = countingClient(server!.url);
    const backend = redisBackend({ client, keyPrefix: freshPrefix('nobatch'), batchReads: false });
    await backend.set('ns:a', { value: new Uint8Array([1]) });
    sent.length = 0;
    await Promise.all(['ns:a', 'ns:a', 'ns:b'].map((key) => backend.get(key)));
    expect(sent).toEqual(['get', 'get', 'get']);
    await backend.close();
    client.disconnect();
  });

  it('fails every caller of a batch whose read fails, and the next reads recover', async () => {
    const client = new Redis(server!.url, {
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      lazyConnect: true,
    });
    await client.connect();
    const backend = redisBackend({ client, keyPrefix: freshPrefix('batch-fail') });
    await backend.set('ns:a', { value: new Uint8Array([1]) });
    client.disconnect();
    const outcomes = await Promise.allSettled(['ns:a', 'ns:b', 'ns:c'].map((key) => backend.get(key)));
    expect(outcomes.map((outcome) => outcome.status)).toEqual(['rejected', 'rejected', 'rejected']);
    while (client.status !== 'end') await new Promise((resolve) => setTimeout(resolve, 5));
    await client.connect();
    const again = await Promise.all(['ns:a', 'ns:b'].map((key) => backend.get(key)));
    expect(again.map((entry) => entry?.value[0])).toEqual([1, undefined]);
    await backend.close();
    client.disconnect();
  });

  it('still answers reads issued just before close()', async () => {
    const backend = redisBackend({ url: server!.url, keyPrefix: freshPrefix('close-batch') });
    await backend.set('ns:a', { value: new Uint8Array([1]) });
    await backend.set('ns:b', { value: new Uint8Array([2]) });
    // 300 reads: a lone GET, then full batches of 128 and a partial one, all unsent at close().
    const keys = Array.from({ length: 300 }, (_, i) => (i % 2 === 0 ? 'ns:a' : 'ns:b'));
    const reads = keys.map((key) => backend.get(key));
    const closing = backend.close();
    expect((await Promise.all(reads)).map((entry) => entry?.value[0])).toEqual(
      keys.map((key) => (key === 'ns:a' ? 1 : 2)),
    );
    await closing;
    await expect(backend.get('ns:a')).rejects.toMatchObject({ code: 'E_CLOSED' });
  });

  it('keeps every read working, within the read timeout, while a cluster slot migrates', async () => {
    // A cluster of its own: the test moves a slot half-way and leaves it so.
    const own = await startCluster();
    const cli = (port: number, ...args: string[]) =>
      execFileSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).trim();
    const bucketOf = (key: string) => {
      let hash = 0x811c9dc5;
      for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193);
      return (hash >>> 0) % 16;
    };
    try {
      const backend = redisBackend({ cluster: own.nodes, keyPrefix: 'mig:' });
      // With the default read timeout (500 ms): a read that waits on the migration past it would
      // mark the level stalled and skip Redis for every reader.
      const cache = createCache({ store: { backend, timeout: 500 }, memory: false });
      const errors: string[] = [];
      cache.on('error', (event) => errors.push(`${event.operation}: ${String(event.error)}`));
      const all = Array.from({ length: 400 }, (_, i) => ({ name: 'doc', request: i }));
      const moving = all.filter((input) => bucketOf(cache.key(input)) === 0).slice(0, 3);
      const steady = all.filter((input) => bucketOf(cache.key(input)) !== 0).slice(0, 6);
      const inputs = [steady[0]!, ...moving, ...steady.slice(1)];
      for (const [i, input] of inputs.entries()) await cache.set(input, i);
      // Slot of bucket {0} half-migrated: one of its keys already on the new node. A multi-key
      // command on it gets TRYAGAIN; single reads are redirected (ASK).
      const slot = cli(own.nodes[0]!.port, 'cluster', 'keyslot', '{0}');
      const ids = own.nodes.map((node) => cli(node.port, 'cluster', 'myid'));
      const from = own.nodes.findIndex((node) => cli(node.port, 'cluster', 'countkeysinslot', slot) !== '0');
      const to = (from + 1) % own.nodes.length;
      cli(own.nodes[to]!.port, 'cluster', 'setslot', slot, 'importing', ids[from]!);
      cli(own.nodes[from]!.port, 'cluster', 'setslot', slot, 'migrating', ids[to]!);
      cli(
        own.nodes[from]!.port,
        'migrate',
        '127.0.0.1',
        String(own.nodes[to]!.port),
        '',
        '0',
        '5000',
        'keys',
        `mig:e{0}${cache.key(moving[0]!)}`,
      );
      const expected = inputs.map((_, i) => i);
      const computed: number[] = [];
      const hits = await Promise.all(
        inputs.map((input) => cache.getOrCompute(input, () => computed.push(input.request) && -1)),
      );
      expect(hits).toEqual(expected);
      expect(await cache.getMany(inputs)).toEqual(expected);
      expect((await backend.getMany(inputs.map((input) => cache.key(input)))).length).toBe(inputs.length);
      expect(computed).toEqual([]);
      expect(errors).toEqual([]);
      await cache.close();
    } finally {
      await own.stop();
    }
  }, 60_000);

  it('reads concurrently on a cluster and returns every entry', async () => {
    const backend = redisBackend({ cluster: cluster!.nodes, keyPrefix: freshPrefix('cbatch') });
    const keys = Array.from({ length: 64 }, (_, i) => `ns:doc:${i}`);
    for (const [i, key] of keys.entries()) await backend.set(key, { value: new Uint8Array([i]) });
    const entries = await Promise.all(keys.map((key) => backend.get(key)));
    expect(entries.map((entry) => entry?.value[0])).toEqual(keys.map((_, i) => i));
    await backend.close();
  });

  it('adds the cross-process lock to a miss only: lock, re-check, store, unlock', async () => {
    const { client, sent } = countingClient(server!.url);
    const cache = createCache({
      store: redisBackend({ client, keyPrefix: freshPrefix('df') }),
      memory: false,
    });
    await cache.set('load-the-scripts', 1);
    sent.length = 0;
    await cache.getOrCompute('k', async () => 'v');
    expect(sent).toEqual(['get', 'evalsha', 'get', 'evalsha', 'evalsha']);
    sent.length = 0;
    await cache.getOrCompute('k', async () => 'other');
    expect(sent).toEqual(['get']);
    await cache.close();
    client.disconnect();
  });

  it('publishes writes for other processes only with a memory level or bus: true', async () => {
    const { client, sent } = countingClient(server!.url);
    const quiet = createCache({
      store: redisBackend({ client, keyPrefix: freshPrefix('bus') }),
      memory: false,
    });
    await quiet.set('k', 1);
    expect(sent).not.toContain('publish');
    const loud = createCache({
      store: redisBackend({ client, keyPrefix: freshPrefix('bus') }),
      memory: false,
      bus: true,
    });
    await loud.set('k', 1);
    expect(sent).toContain('publish');
    await quiet.close();
    await loud.close();
    client.disconnect();
  });

  it('warns once when the ledger keeps its records in a Redis that evicts (maxmemory + an evicting policy)', async () => {
    const admin = new Redis(server!.url);
    const [, maxmemory] = (await admin.config('GET', 'maxmemory')) as string[];
    const [, policy] = (await admin.config('GET', 'maxmemory-policy')) as string[];
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => {
      if ((warning as { code?: string }).code === 'X_LEDGER_EVICTION') warnings.push(warning);
    };
    process.on('warning', onWarning);
    const backends: RedisBackend[] = [];
    const open = () => {
      const backend = redisBackend({ url: server!.url, keyPrefix: freshPrefix('evict') });
      backends.push(backend);
      return backend;
    };
    /** Lets a background check finish and its warning (emitted on nextTick) arrive. */
    const settle = async (backend: RedisBackend) => {
      await backend.evictionRisk();
      await new Promise((resolve) => setImmediate(resolve));
    };
    try {
      await admin.config('SET', 'maxmemory', '0');
      const unbounded = open();
      expect(await unbounded.evictionRisk()).toBeUndefined();
      createIdempotencyStore({ store: unbounded });
      await settle(unbounded);
      expect(warnings).toEqual([]);

      await admin.config('SET', 'maxmemory', String(512 * 1024 * 1024));
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      const kept = open();
      expect(await kept.evictionRisk()).toBeUndefined();

      await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
      const evicting = open();
      expect(await evicting.evictionRisk()).toMatch(/maxmemory-policy allkeys-lru/);
      const ledgerCache = createCache({ store: evicting });
      createToolLedger({ cache: ledgerCache });
      createIdempotencyStore({ store: evicting });
      await settle(evicting);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]!.message).toMatch(/can be evicted .*allkeys-lru.*noeviction/);
      await ledgerCache.close();
    } finally {
      process.off('warning', onWarning);
      await admin.config('SET', 'maxmemory', maxmemory!);
      await admin.config('SET', 'maxmemory-policy', policy!);
      for (const backend of backends) await backend.close();
      admin.disconnect();
    }
  });

  it('sees an evicting policy on any master of a cluster', async () => {
    const backend = redisBackend({ cluster: cluster!.nodes, keyPrefix: freshPrefix('cevict') });
    const node = new Redis(cluster!.nodes[2]!.port, cluster!.nodes[2]!.host);
    try {
      expect(await backend.evictionRisk()).toBeUndefined();
      await node.config('SET', 'maxmemory', String(512 * 1024 * 1024));
      await node.config('SET', 'maxmemory-policy', 'volatile-ttl');
      expect(await backend.evictionRisk()).toMatch(/volatile-ttl/);
    } finally {
      await node.config('SET', 'maxmemory', '0');
      await node.config('SET', 'maxmemory-policy', 'noeviction');
      await backend.close();
      node.disconnect();
    }
  });

  it('sends no Redis command for a hit served by the memory level in front', async () => {
    const { client, sent } = countingClient(server!.url);
    const cache = createCache({ store: redisBackend({ client, keyPrefix: freshPrefix('l1') }) });
    await cache.getOrCompute('k', async () => 'v');
    sent.length = 0;
    expect(await cache.getOrCompute('k', async () => 'other')).toBe('v');
    expect(sent).toEqual([]);
    await cache.close();
    client.disconnect();
  });

  it('invalidates a tag whose entries span cluster slots and nodes', async () => {
    const backend = redisBackend({ cluster: cluster!.nodes, keyPrefix: freshPrefix('span') });
    const keys = Array.from({ length: 64 }, (_, i) => `ns:doc:${i}`);
    for (const key of keys) await backend.set(key, { value: new Uint8Array([1]), tags: ['release-1'] });
    await backend.set('ns:other', { value: new Uint8Array([2]), tags: ['release-2'] });
    const masters = (backend.client as import('ioredis').Cluster).nodes('master');
    const holding = await Promise.all(masters.map((node) => node.dbsize()));
    expect(holding.filter((n) => n > 0).length).toBeGreaterThan(1);
    expect(await backend.deleteByTag('release-1')).toBe(64);
    expect(await backend.getMany(keys)).toEqual(keys.map(() => undefined));
    expect(await backend.has('ns:other')).toBe(true);
    await backend.close();
  });

  it('keeps an entry rewritten with other tags after its old tag list expired', async () => {
    const keyPrefix = freshPrefix('retag');
    const client = new Redis(server!.url);
    const backend = redisBackend({ client, keyPrefix });
    await backend.set('ns:k', { value: new Uint8Array([1]), tags: ['user-1'] });
    // What PX does to the entry's tag list when the entry expires; the bucket's tag set remains.
    const [, lists] = await client.scan('0', 'MATCH', `${keyPrefix}k{*}ns:k`, 'COUNT', 1000);
    expect(lists).toHaveLength(1);
    await client.del(lists[0]!);
    await backend.set('ns:k', { value: new Uint8Array([2]), tags: ['user-2'] });
    expect(await backend.deleteByTag('user-1')).toBe(0);
    expect((await backend.get('ns:k'))?.value).toEqual(new Uint8Array([2]));
    expect(await backend.deleteByTag('user-2')).toBe(1);
    await backend.close();
    client.disconnect();
  });

  it('accepts an existing ioredis client and leaves it open on close', async () => {
    const client = new Redis(server!.url);
    const backend = redisBackend({ client, keyPrefix: freshPrefix('own') });
    await backend.set('a', { value: new Uint8Array([7]) });
    await backend.close();
    expect(await client.ping()).toBe('PONG');
    client.disconnect();
  });

  it('names the package to install when ioredis cannot be loaded', () => {
    const error = (() => {
      try {
        loadIoRedis(() => {
          throw new Error('Cannot find module');
        });
      } catch (e) {
        return e;
      }
    })();
    expect(CacheError.isInstance(error)).toBe(true);
    expect((error as CacheError).code).toBe('E_MISSING_DEPENDENCY');
    expect((error as Error).message).toContain('install it (pnpm add ioredis) or pass a client');
  });

  it('clear() racing writes leaves no entry that tag invalidation cannot remove', async () => {
    const keyPrefix = freshPrefix('clear-race');
    const clearer = redisBackend({ url: server!.url, keyPrefix });
    const writer = redisBackend({ url: server!.url, keyPrefix });
    const keys = Array.from({ length: 2000 }, (_, i) => `ns:k:${i}`);
    const entry = { value: new Uint8Array([1]), tags: ['model-x'] };
    await Promise.all(keys.map((key) => writer.set(key, entry)));
    // The application keeps writing while an operator clears, and stops when clear() is done.
    let clearing = true;
    const cleared = clearer.clear().finally(() => {
      clearing = false;
    });
    for (let i = 0; clearing; i = (i + 50) % keys.length) {
      await Promise.all(keys.slice(i, i + 50).map((key) => writer.set(key, entry)));
    }
    await cleared;
    await clearer.deleteByTag('model-x');
    const left = (await clearer.getMany(keys)).filter((found) => found !== undefined);
    expect(left.length).toBe(0);
    await clearer.close();
    await writer.close();
  }, 60_000);

  it('prune() racing a rewrite keeps the entry in its tag set', async () => {
    let left = 0;
    for (const delay of [2, 10, 20]) {
      const keyPrefix = freshPrefix('prune-race');
      const pruner = redisBackend({ url: server!.url, keyPrefix });
      const writer = redisBackend({ url: server!.url, keyPrefix });
      const keys = Array.from({ length: 2000 }, (_, i) => `ns:k:${i}`);
      const soon = { value: new Uint8Array([1]), tags: ['model-x'], expiresAt: Date.now() + 30 };
      await Promise.all(keys.map((key) => writer.set(key, soon)));
      await new Promise((resolve) => setTimeout(resolve, 100));
      // Redis has expired the entries (PX); their tag-set members are what prune() drops. The
      // entries are written again, with the tag, once, while it runs.
      const again = { value: new Uint8Array([2]), tags: ['model-x'] };
      await Promise.all([
        pruner.prune(),
        new Promise((resolve) => setTimeout(resolve, delay)).then(() =>
          Promise.all(keys.map((key) => writer.set(key, again))),
        ),
      ]);
      await writer.deleteByTag('model-x');
      left += (await writer.getMany(keys)).filter((found) => found !== undefined).length;
      await pruner.close();
      await writer.close();
    }
    expect(left).toBe(0);
  }, 60_000);

  it("keeps other processes' memory levels in step when the client has the offline queue off", async () => {
    const keyPrefix = freshPrefix('offline-queue');
    const connected = async () => {
      const client = new Redis(server!.url, { enableOfflineQueue: false, lazyConnect: true });
      await client.connect();
      return client;
    };
    const clientA = await connected();
    const clientB = await connected();
    const a = createCache({ store: redisBackend({ client: clientA, keyPrefix }) });
    const b = createCache({ store: redisBackend({ client: clientB, keyPrefix }) });
    const errors: string[] = [];
    a.on('error', (event) => errors.push(String(event.error)));
    await a.ready();
    await b.ready();
    await b.set('doc', 'v1');
    expect(await a.get('doc')).toBe('v1');
    await b.set('doc', 'v2');
    await expect.poll(() => a.get('doc'), { timeout: 2000 }).toBe('v2');
    expect(errors).toEqual([]);
    await a.close();
    await b.close();
    clientA.disconnect();
    clientB.disconnect();
  });

  it('keeps the invalidation bus of caches in different databases apart', async () => {
    // The same key prefix in both: the databases are what keeps them apart.
    const keyPrefix = freshPrefix('db');
    const a = createCache({ store: redisBackend({ url: `${server!.url}/1`, keyPrefix }) });
    const b = createCache({ store: redisBackend({ url: `${server!.url}/2`, keyPrefix }) });
    await a.ready();
    await b.ready();
    // A computation in b is outdated only by writes to b's own data, not by a's.
    const gate = deferred();
    const computing = b.getOrCompute('slow', async () => {
      await gate.promise;
      return 'b-slow';
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    await a.set('slow', 'a-slow');
    await new Promise((resolve) => setTimeout(resolve, 100));
    gate.resolve();
    expect(await computing).toBe('b-slow');
    const reader = createCache({
      store: redisBackend({ url: `${server!.url}/2`, keyPrefix }),
      memory: false,
    });
    expect(await reader.get('slow')).toBe('b-slow');
    await Promise.all([a.close(), b.close(), reader.close()]);
  });

  it('stores an entry whose expiry is too far off for PX as one that does not expire', async () => {
    const backend = redisBackend({ url: server!.url, keyPrefix: freshPrefix('far-ttl') });
    const cache = createCache({ store: backend, memory: false });
    const errors: string[] = [];
    cache.on('error', (event) => errors.push(String(event.error)));
    for (const ttl of [1e19, 1e21, Number.MAX_VALUE]) {
      await cache.set(`far-${ttl}`, ttl, { ttl });
      expect(await cache.get(`far-${ttl}`)).toBe(ttl);
    }
    expect(errors).toEqual([]);
    await cache.close();
  });

  it('does not read or clear the counters of a longer key prefix nested under its own', async () => {
    const outer = freshPrefix('nest');
    const a = redisBackend({ url: server!.url, keyPrefix: outer });
    const b = redisBackend({ url: server!.url, keyPrefix: `${outer}c:eu:` });
    await b.incrementCounters('t:responses:default', { hits: 5 });
    await a.incrementCounters('t:responses:default', { hits: 1 });
    expect(await a.readCounters()).toEqual({ 't:responses:default': { hits: 1 } });
    await a.clearCounters();
    expect(await b.readCounters()).toEqual({ 't:responses:default': { hits: 5 } });
    await a.close();
    await b.close();
  });

  it('rejects a key prefix containing hash-tag braces', () => {
    expect(() => redisBackend({ url: server!.url, keyPrefix: 'a{b}:' })).toThrow(/must not contain/);
  });
});
