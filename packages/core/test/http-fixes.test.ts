/**
 * cachedFetch fixes: quota refusals, unbounded lifetimes, aborts with staleIfError, redirect
 * modes and hops, read-your-writes, caller conditionals, unsafe methods, Age and the status
 * header on every response. A real node:http server on 127.0.0.1 and the real global fetch;
 * freshness runs on a fake clock shared with the cache.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Clock } from '../src/backends/backend.ts';
import { sqliteBackend } from '../src/backends/sqlite.ts';
import type { Cache } from '../src/cache.ts';
import { createCache } from '../src/cache.ts';
import { QuotaExceededError } from '../src/errors.ts';
import type { CachedFetchOptions } from '../src/http/index.ts';
import { cachedFetch } from '../src/http/index.ts';
import { useHttpServer } from './support.ts';

interface Seen {
  method: string;
  path: string;
  ifNoneMatch?: string | undefined;
  ifModifiedSince?: string | undefined;
}

let base: string;
let seen: Seen[] = [];
/** The resource's version: unsafe methods bump it. */
let version = 1;
/** Where /latest points. */
let release = 1;
const SERVER_DATE = 'Tue, 01 Jan 2030 00:00:00 GMT';

function later(ms: number, send: () => void): void {
  setTimeout(send, ms);
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const path = req.url ?? '/';
  const method = req.method ?? 'GET';
  seen.push({
    method,
    path,
    ifNoneMatch: req.headers['if-none-match'],
    ifModifiedSince: req.headers['if-modified-since'],
  });
  const etag = `"v${version}"`;
  if (method !== 'GET' && method !== 'HEAD') {
    version++;
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`${method} done`);
    return;
  }
  switch (path.split('?')[0]) {
    case '/etag':
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag, 'cache-control': 'max-age=60' }).end();
        return;
      }
      res.writeHead(200, { etag, 'cache-control': 'max-age=60' }).end(`v${version}`);
      return;
    case '/plain':
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`plain ${seen.length}`);
      return;
    case '/slow-etag': {
      // Slow enough to abort or to overlap with a write; answers If-None-Match with 304.
      const current = version;
      later(80, () => {
        if (req.headers['if-none-match'] === `"v${current}"`) {
          res.writeHead(304, { etag: `"v${current}"`, 'cache-control': 'max-age=60' }).end();
          return;
        }
        res.writeHead(200, { etag: `"v${current}"`, 'cache-control': 'max-age=60' }).end(`v${current}`);
      });
      return;
    }
    case '/slow-version': {
      // The body is the version when the request arrived; it answers later.
      const current = version;
      later(80, () => res.writeHead(200, { 'cache-control': 'max-age=60' }).end(`v${current}`));
      return;
    }
    case '/moved':
      res.writeHead(301, { location: '/target', 'cache-control': 'max-age=60' }).end();
      return;
    case '/slow-moved':
      later(80, () => res.writeHead(301, { location: '/target', 'cache-control': 'max-age=60' }).end());
      return;
    case '/target':
      res.writeHead(200, { 'cache-control': 'max-age=60' }).end('arrived');
      return;
    case '/latest':
      res.writeHead(302, { location: `/rel${release}`, 'cache-control': 'no-store' }).end();
      return;
    case '/rel1':
    case '/rel2':
      res.writeHead(200, { 'cache-control': 'max-age=86400' }).end(`release ${path.slice(4)}`);
      return;
    case '/aged':
      // Already ten minutes old when it reaches us (from a CDN, say).
      res.writeHead(200, { 'cache-control': 'max-age=3600', age: '600' }).end('aged');
      return;
    case '/aged-etag':
      // Ten minutes old through a CDN; the origin's 304 is new (no Age).
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag, 'cache-control': 'max-age=3600' }).end();
        return;
      }
      res.writeHead(200, { etag, 'cache-control': 'max-age=3600', age: '600' }).end('aged');
      return;
    case '/expires-aged':
      // Two minutes of freshness by Expires, of which a CDN has used one already.
      res
        .writeHead(200, { date: SERVER_DATE, expires: 'Tue, 01 Jan 2030 00:02:00 GMT', age: '60' })
        .end('expires');
      return;
    case '/upstream-hit':
      // An upstream cache's own marker, on a response this cache cannot store.
      res.writeHead(200, { 'cache-control': 'no-store', 'x-cache': 'HIT' }).end('from the CDN');
      return;
    default:
      res.writeHead(400).end();
  }
}

useHttpServer(handle, (url) => {
  base = url;
});

interface FakeClock extends Clock {
  advance(ms: number): void;
}

let clock: FakeClock;
let cache: Cache;
let dir: string;
beforeEach(() => {
  seen = [];
  version = 1;
  release = 1;
  let now = Date.UTC(2030, 0, 1);
  clock = { now: () => now, advance: (ms) => void (now += ms) };
  cache = createCache({ clock });
  dir = mkdtempSync(join(tmpdir(), 'x-http-fixes-'));
});
afterEach(async () => {
  await cache.close();
  rmSync(dir, { recursive: true, force: true });
});

function get(path: string, init?: RequestInit, options: CachedFetchOptions = {}): Promise<Response> {
  return cachedFetch(`${base}${path}`, init, { cache, ...options });
}

const gets = (path: string) => seen.filter((request) => request.path === path && request.method === 'GET');

describe('cachedFetch fixes', () => {
  it('returns a response it could not store over a reject quota, and reports the dropped write', async () => {
    const capped = createCache({
      clock,
      store: sqliteBackend({ path: join(dir, 'quota.db'), clock }),
      memory: false,
      quotas: { default: { maxEntries: 1, onExceed: 'reject' } },
    });
    try {
      const refused: unknown[] = [];
      const options = { cache: capped, onStoreError: (error: unknown) => refused.push(error) };
      expect(await (await get('/etag', undefined, options)).text()).toBe('v1');
      const second = await get('/plain', undefined, options);
      expect(second.status).toBe(200);
      expect(await second.text()).toMatch(/^plain /);
      // Without onStoreError too: counted and emitted, never thrown.
      const errors: unknown[] = [];
      capped.on('error', (event) => errors.push(event));
      expect((await get('/plain?2', undefined, { cache: capped })).status).toBe(200);
      expect(refused).toHaveLength(1);
      expect(refused[0]).toBeInstanceOf(QuotaExceededError);
      expect(errors).toHaveLength(1);
      expect((await capped.tier('http').stats()).droppedWrites).toBe(2);
    } finally {
      await capped.close();
    }
  });

  it('returns the stored body on a 304 whose refresh a reject quota refuses', async () => {
    const path = join(dir, 'refresh.db');
    const open = createCache({ clock, store: sqliteBackend({ path, clock }), memory: false });
    await (await get('/etag', undefined, { cache: open })).text();
    await open.close();
    const full = createCache({
      clock,
      store: sqliteBackend({ path, clock }),
      memory: false,
      quotas: { default: { maxBytes: 1, onExceed: 'reject' } },
    });
    try {
      clock.advance(60_000);
      const revalidated = await get('/etag', undefined, { cache: full });
      expect([revalidated.status, await revalidated.text()]).toEqual([200, 'v1']);
      expect(gets('/etag').map((request) => request.ifNoneMatch)).toEqual([undefined, '"v1"']);
      expect((await full.tier('http').stats()).droppedWrites).toBe(1);
    } finally {
      await full.close();
    }
  });

  it('keeps entries without end for ttl: Infinity and keepStale: Infinity, not the tier TTL', async () => {
    const forever = { ttl: Infinity } as const;
    const body = await (await get('/plain', undefined, forever)).text();
    clock.advance(30 * 86_400_000);
    const hit = await get('/plain', undefined, forever);
    expect([hit.headers.get('x-cache'), await hit.text()]).toEqual(['HIT', body]);

    const keep = { keepStale: Infinity } as const;
    await (await get('/etag', undefined, keep)).text();
    clock.advance(30 * 86_400_000);
    const revalidated = await get('/etag', undefined, keep);
    expect([revalidated.headers.get('x-cache'), await revalidated.text()]).toEqual(['REVALIDATED', 'v1']);
    expect(gets('/etag').map((request) => request.ifNoneMatch)).toEqual([undefined, '"v1"']);
  });

  it("rejects on the caller's own abort even with staleIfError, but serves stale on a timeout", async () => {
    const lenient = { staleIfError: true };
    await (await get('/slow-etag', undefined, lenient)).text();
    clock.advance(60_000);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 20);
    await expect(get('/slow-etag', { signal: controller.signal }, lenient)).rejects.toMatchObject({
      name: 'AbortError',
    });
    // A timeout signal is the upstream hanging, which is what staleIfError is for.
    const timedOut = await get('/slow-etag', { signal: AbortSignal.timeout(20) }, lenient);
    expect([timedOut.headers.get('x-cache'), await timedOut.text()]).toEqual(['STALE', 'v1']);
    // A network failure still serves the stale copy.
    const down: typeof fetch = async () => {
      throw new TypeError('fetch failed');
    };
    const stale = await get('/slow-etag', undefined, { ...lenient, fetch: down });
    expect([stale.headers.get('x-cache'), await stale.text()]).toEqual(['STALE', 'v1']);
  });

  it('keeps the body of a pass-through response readable after garbage collection', async () => {
    // Node's fetch cancels the body of a Response collected before it was read: the response the
    // cache hands back (with its status header) must keep the network one alive.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const responses = await Promise.all([1, 2, 3, 4, 5].map(() => get('/upstream-hit')));
    for (let round = 0; round < 3; round++) {
      gc();
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    for (const response of responses) {
      expect(response.headers.get('x-cache')).toBe('MISS');
      expect(await response.text()).toBe('from the CDN');
    }
  });

  it('returns what a custom fetch returned when it is not a Response (a test double)', async () => {
    const double = { status: 200, headers: new Headers(), json: async () => ({ ok: true }) };
    const result = await cachedFetch(
      `${base}/plain`,
      { method: 'POST' },
      {
        cache,
        fetch: (async () => double) as unknown as typeof fetch,
      },
    );
    expect(await result.json()).toEqual({ ok: true });
  });

  it('never serves a response stored for one redirect mode to another, nor coalesces them', async () => {
    const manual = await get('/moved', { redirect: 'manual' });
    expect([manual.status, manual.headers.get('location')]).toEqual([301, '/target']);
    // A following request follows the redirect; it does not get the stored 301.
    const followed = await get('/moved');
    expect([followed.status, await followed.text()]).toEqual([200, 'arrived']);
    expect(followed.redirected).toBe(true);
    // The manual request's own 301 is still served to manual requests.
    const again = await get('/moved', { redirect: 'manual' });
    expect([again.status, again.headers.get('x-cache')]).toEqual([301, 'HIT']);
    expect(gets('/moved')).toHaveLength(2);

    // Concurrent requests in different modes do not share one fetch.
    const [slowManual, slowFollow] = await Promise.all([
      get('/slow-moved', { redirect: 'manual' }),
      get('/slow-moved'),
    ]);
    expect(slowManual.status).toBe(301);
    expect([slowFollow.status, await slowFollow.text()]).toEqual([200, 'arrived']);
  });

  it('does not store a followed redirect under the request URL: each hop decides', async () => {
    const first = await get('/latest');
    expect([first.url, await first.text()]).toEqual([`${base}/rel1`, 'release 1']);
    expect(first.redirected).toBe(true);
    // /latest (no-store) now points elsewhere: the next request must see it.
    release = 2;
    const second = await get('/latest');
    expect([second.url, await second.text()]).toEqual([`${base}/rel2`, 'release 2']);
    // Nor is a followed redirect served to a manual or error request.
    const manual = await get('/latest', { redirect: 'manual' });
    expect([manual.status, manual.headers.get('location')]).toEqual([302, '/rel2']);
    await expect(get('/latest', { redirect: 'error' })).rejects.toThrow();
  });

  it('after a successful write, a GET never gets (nor later reads) a response from before it', async () => {
    const before = get('/slow-version');
    // The write is sent once the server has the GET (which answers 80 ms later).
    while (gets('/slow-version').length === 0) await new Promise((resolve) => setTimeout(resolve, 2));
    const write = await get('/slow-version', { method: 'PUT', body: 'new' });
    expect(write.status).toBe(200);
    // Started after the write: it must not join the request sent before it.
    const after = await get('/slow-version');
    expect(await after.text()).toBe('v2');
    expect(await (await before).text()).toBe('v1');
    // Nor is the pre-write response stored once it arrives.
    const later = await get('/slow-version');
    expect(await later.text()).toBe('v2');
  });

  it("passes the caller's own conditional request and its 304 through, untouched by the cache", async () => {
    await (await get('/etag')).text();
    // Fresh copy, but the caller asks the server itself: its 304 is its answer.
    const fresh = await get('/etag', { headers: { 'if-none-match': '"v1"' } });
    expect([fresh.status, await fresh.text()]).toEqual([304, '']);
    // Stale copy v1; the caller already holds v2: the cache must not swap its validator in.
    version = 2;
    clock.advance(60_000);
    const stale = await get('/etag', { headers: { 'if-none-match': '"v2"' } });
    expect(stale.status).toBe(304);
    expect(gets('/etag').map((request) => request.ifNoneMatch)).toEqual([undefined, '"v1"', '"v2"']);
  });

  it('drops the stored responses of a URL on a successful request of any method not known safe', async () => {
    expect(await (await get('/etag')).text()).toBe('v1');
    const purge = await get('/etag', { method: 'PURGE' });
    expect(purge.status).toBe(200);
    const after = await get('/etag');
    expect([after.headers.get('x-cache'), await after.text()]).toEqual(['MISS', 'v2']);
    // A safe method leaves it.
    await get('/etag', { method: 'OPTIONS' });
    expect((await get('/etag')).headers.get('x-cache')).toBe('HIT');
  });

  it('gives a stored response its current Age, counting the Age it arrived with', async () => {
    await (await get('/etag')).text();
    clock.advance(30_000);
    expect((await get('/etag')).headers.get('age')).toBe('30');
    await (await get('/aged')).text();
    clock.advance(10_000);
    expect((await get('/aged')).headers.get('age')).toBe('610');
    // A 304 without Age makes the refreshed copy new: its Age and freshness start from zero.
    await (await get('/aged-etag')).text();
    clock.advance(3000_000);
    const revalidated = await get('/aged-etag');
    expect([revalidated.headers.get('x-cache'), revalidated.headers.get('age')]).toEqual([
      'REVALIDATED',
      '0',
    ]);
    clock.advance(3000_000);
    expect((await get('/aged-etag')).headers.get('age')).toBe('3000');
  });

  it('counts the Age a response arrived with against its Expires freshness', async () => {
    await (await get('/expires-aged')).text();
    clock.advance(59_999);
    expect((await get('/expires-aged')).headers.get('x-cache')).toBe('HIT');
    clock.advance(1);
    expect((await get('/expires-aged')).headers.get('x-cache')).toBe('MISS');
  });

  it('marks every response with the status header, replacing an upstream one', async () => {
    const upstream = await get('/upstream-hit');
    expect([upstream.headers.get('x-cache'), await upstream.text()]).toEqual(['MISS', 'from the CDN']);
    expect(upstream.url).toBe(`${base}/upstream-hit`);
    expect((await get('/etag', { method: 'POST', body: 'x' })).headers.get('x-cache')).toBe('BYPASS');
    expect((await get('/etag', { cache: 'no-store' })).headers.get('x-cache')).toBe('BYPASS');
    expect((await get('/plain', undefined, { ttl: 0 })).headers.get('x-cache')).toBe('MISS');
    expect((await get('/latest')).headers.get('x-cache')).toBe('MISS');
  });
});
