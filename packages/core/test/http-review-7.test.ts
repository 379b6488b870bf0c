/**
 * cachedFetch review 7: coalescing and read-your-writes across views made per request, stale
 * copies when the body breaks off or a joined request times out, content codings fetch does not
 * decode, proxy-revalidate. A real node:http server on 127.0.0.1 and the real global fetch;
 * freshness runs on a fake clock shared with the cache.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Cache } from '../src/cache.ts';
import { createCache } from '../src/cache.ts';
import type { CachedFetchOptions } from '../src/http/index.ts';
import { cachedFetch } from '../src/http/index.ts';
import { type FakeClock, fakeClock, useHttpServer } from './support.ts';

interface Seen {
  method: string;
  path: string;
  ifNoneMatch?: string | undefined;
}

let base: string;
let seen: Seen[] = [];
/** The resource's version: unsafe methods bump it. */
let version = 1;
/**
 * How the next GETs of the `/flaky…` paths go wrong: `reset` drops the connection before any
 * response, `body-reset` sends the headers and part of the body then drops it, `body-hang` sends
 * the headers and part of the body then waits, `hang` sends nothing; `none` answers.
 */
let failure: 'none' | 'reset' | 'body-reset' | 'body-hang' | 'hang' = 'none';
/** Responses left waiting (`hang`, `body-hang`): ended after each test. */
const waiting = new Set<ServerResponse>();
/** Bytes that no fetch decodes, labelled with a coding fetch does not know. */
const ENCODED = Uint8Array.from([0x1f, 0x9d, 0x90, 0x00, 0xff, 0x01, 0x80, 0x7f]);

function handle(req: IncomingMessage, res: ServerResponse): void {
  const path = req.url ?? '/';
  const method = req.method ?? 'GET';
  seen.push({ method, path, ifNoneMatch: req.headers['if-none-match'] });
  const etag = `"v${version}"`;
  if (method !== 'GET' && method !== 'HEAD') {
    version++;
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`${method} done`);
    return;
  }
  const route = path.split('?')[0] ?? '/';
  if (route.startsWith('/flaky') && failure !== 'none') {
    if (failure === 'reset') {
      req.socket.destroy();
      return;
    }
    if (failure === 'hang') {
      waiting.add(res);
      return;
    }
    // Headers and a first part of a body that never completes.
    res.writeHead(200, { etag: '"broken"', 'cache-control': 'max-age=60', 'content-length': '1000' });
    res.write('partial');
    if (failure === 'body-reset') setTimeout(() => req.socket.destroy(), 20);
    else waiting.add(res);
    return;
  }
  switch (route) {
    case '/slow-version': {
      // The body is the version when the request arrived; it answers later.
      const current = version;
      setTimeout(() => res.writeHead(200, { 'cache-control': 'max-age=60' }).end(`v${current}`), 80);
      return;
    }
    case '/flaky':
      res.writeHead(200, { etag, 'cache-control': 'max-age=1' }).end(`v${version}`);
      return;
    case '/flaky-must':
      res.writeHead(200, { etag, 'cache-control': 'max-age=1, must-revalidate' }).end(`v${version}`);
      return;
    case '/flaky-proxy':
      res.writeHead(200, { etag, 'cache-control': 'max-age=1, proxy-revalidate' }).end(`v${version}`);
      return;
    case '/coded': {
      // ?compress, ?aes128gcm, ?x-custom, ?gzip,%20compress: passed through by fetch as sent.
      const coding = decodeURIComponent(path.split('?')[1] ?? 'compress');
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag, 'cache-control': 'max-age=60' }).end();
        return;
      }
      res
        .writeHead(200, { etag, 'cache-control': 'max-age=60', 'content-encoding': coding })
        .end(coding.startsWith('gzip') ? gzipSync(ENCODED) : ENCODED);
      return;
    }
    case '/gzip':
      res
        .writeHead(200, { 'cache-control': 'max-age=60', 'content-encoding': 'gzip' })
        .end(gzipSync('unzipped'));
      return;
    default:
      res.writeHead(400).end();
  }
}

useHttpServer(handle, (url) => {
  base = url;
});

let clock: FakeClock;
let cache: Cache;
beforeEach(() => {
  seen = [];
  version = 1;
  failure = 'none';
  clock = fakeClock();
  cache = createCache({ clock });
});
afterEach(async () => {
  for (const res of waiting) res.destroy();
  waiting.clear();
  await cache.close();
});

function get(path: string, init?: RequestInit, options: CachedFetchOptions = {}): Promise<Response> {
  return cachedFetch(`${base}${path}`, init, { cache, ...options });
}

const gets = (path: string) => seen.filter((request) => request.path === path && request.method === 'GET');

/** Resolves once the server has seen `count` GETs of `path`. */
async function seenGets(path: string, count: number): Promise<void> {
  while (gets(path).length < count) await new Promise((resolve) => setTimeout(resolve, 2));
}

describe('shared state across views made per request', () => {
  it('coalesces identical GETs made through a new withNamespace view each', async () => {
    const tenant = () => ({ cache: cache.withNamespace('tenant-a') });
    const [first, second] = await Promise.all([
      get('/slow-version', undefined, tenant()),
      get('/slow-version', undefined, tenant()),
    ]);
    expect([first.headers.get('x-cache'), second.headers.get('x-cache')].sort()).toEqual([
      'COALESCED',
      'MISS',
    ]);
    expect(await second.text()).toBe('v1');
    expect(gets('/slow-version')).toHaveLength(1);
  });

  it('coalesces through a new tier view each, and with the cache itself', async () => {
    const results = await Promise.all([
      get('/slow-version', undefined, { cache: cache.tier('http') }),
      get('/slow-version', undefined, { cache: cache.tier('http') }),
      get('/slow-version'),
    ]);
    expect(results.map((response) => response.headers.get('x-cache')).sort()).toEqual([
      'COALESCED',
      'COALESCED',
      'MISS',
    ]);
    expect(gets('/slow-version')).toHaveLength(1);
  });

  it('keeps namespaces and caches apart', async () => {
    const other = createCache({ clock });
    try {
      const results = await Promise.all([
        get('/slow-version', undefined, { cache: cache.withNamespace('tenant-a') }),
        get('/slow-version', undefined, { cache: cache.withNamespace('tenant-b') }),
        get('/slow-version', undefined, { cache: other }),
      ]);
      expect(results.map((response) => response.headers.get('x-cache'))).toEqual(['MISS', 'MISS', 'MISS']);
      expect(gets('/slow-version')).toHaveLength(3);
    } finally {
      await other.close();
    }
  });

  it('does not store what a GET in flight brings back once a POST through another view succeeded', async () => {
    const tenant = () => ({ cache: cache.withNamespace('tenant-a') });
    const before = get('/slow-version', undefined, tenant());
    await seenGets('/slow-version', 1);
    expect(await (await get('/slow-version', { method: 'POST' }, tenant())).text()).toBe('POST done');
    // The GET sent before the write still answers its caller with what it got...
    expect(await (await before).text()).toBe('v1');
    // ...but the next read is not served that pre-write body.
    const after = await get('/slow-version', undefined, tenant());
    expect(after.headers.get('x-cache')).toBe('MISS');
    expect(await after.text()).toBe('v2');
  });
});

describe('staleIfError when the body breaks off', () => {
  const lenient = { staleIfError: true };

  it('serves the stale copy when the connection drops after the headers, and stores nothing', async () => {
    expect(await (await get('/flaky', undefined, lenient)).text()).toBe('v1');
    clock.advance(2000);
    failure = 'body-reset';
    const stale = await get('/flaky', undefined, lenient);
    expect(stale.headers.get('x-cache')).toBe('STALE');
    expect(await stale.text()).toBe('v1');
    failure = 'none';
    version = 2;
    // The stored copy is still the old one, revalidated with its own validator.
    const next = await get('/flaky', undefined, lenient);
    expect(next.headers.get('x-cache')).toBe('MISS');
    expect(await next.text()).toBe('v2');
    expect(gets('/flaky').map((request) => request.ifNoneMatch)).toEqual([undefined, '"v1"', '"v1"']);
    expect(await cache.tier('http').stats()).toMatchObject({ hits: 1, misses: 2 });
  });

  it('serves the stale copy when a timeout signal fires while the body arrives', async () => {
    expect(await (await get('/flaky', undefined, lenient)).text()).toBe('v1');
    clock.advance(2000);
    failure = 'body-hang';
    const stale = await get('/flaky', { signal: AbortSignal.timeout(100) }, lenient);
    expect(stale.headers.get('x-cache')).toBe('STALE');
    expect(await stale.text()).toBe('v1');
  });

  it("still rejects on the caller's own abort, without staleIfError, and for must-revalidate", async () => {
    await (await get('/flaky', undefined, lenient)).text();
    await (await get('/flaky-must', undefined, lenient)).text();
    clock.advance(2000);
    failure = 'body-hang';
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    await expect(get('/flaky', { signal: controller.signal }, lenient)).rejects.toMatchObject({
      name: 'AbortError',
    });
    failure = 'body-reset';
    await expect(get('/flaky')).rejects.toThrow();
    await expect(get('/flaky-must', undefined, lenient)).rejects.toThrow();
  });
});

describe('staleIfError for a request that joined another', () => {
  const lenient = { staleIfError: true };

  it('serves the stale copy when its timeout fires while it waits (joined before its store read)', async () => {
    await (await get('/flaky', undefined, lenient)).text();
    clock.advance(2000);
    failure = 'hang';
    const leader = get('/flaky', undefined, lenient);
    await seenGets('/flaky', 2);
    const joined = await get('/flaky', { signal: AbortSignal.timeout(50) }, lenient);
    expect(joined.headers.get('x-cache')).toBe('STALE');
    expect(await joined.text()).toBe('v1');
    expect(gets('/flaky')).toHaveLength(2);
    for (const res of waiting) res.destroy();
    // The leader's own failure: the stale copy too.
    expect((await leader).headers.get('x-cache')).toBe('STALE');
  });

  it('serves the stale copy when its timeout fires while it waits (joined after its store read)', async () => {
    await (await get('/flaky', undefined, lenient)).text();
    clock.advance(2000);
    failure = 'hang';
    const [leader, joined] = [
      get('/flaky', undefined, lenient),
      get('/flaky', { signal: AbortSignal.timeout(80) }, lenient),
    ];
    const response = await joined;
    expect(response.headers.get('x-cache')).toBe('STALE');
    expect(await response.text()).toBe('v1');
    expect(gets('/flaky')).toHaveLength(2);
    for (const res of waiting) res.destroy();
    await leader;
  });

  it('rejects on its own abort, without staleIfError, and for must-revalidate', async () => {
    await (await get('/flaky', undefined, lenient)).text();
    await (await get('/flaky-must', undefined, lenient)).text();
    clock.advance(2000);
    failure = 'hang';
    const leaders = [get('/flaky', undefined, lenient), get('/flaky-must', undefined, lenient)];
    await seenGets('/flaky', 2);
    await seenGets('/flaky-must', 2);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 30);
    await expect(get('/flaky', { signal: controller.signal }, lenient)).rejects.toMatchObject({
      name: 'AbortError',
    });
    await expect(get('/flaky', { signal: AbortSignal.timeout(30) })).rejects.toMatchObject({
      name: 'TimeoutError',
    });
    await expect(get('/flaky-must', { signal: AbortSignal.timeout(30) }, lenient)).rejects.toMatchObject({
      name: 'TimeoutError',
    });
    for (const res of waiting) res.destroy();
    await Promise.allSettled(leaders);
  });
});

describe('content codings fetch does not decode', () => {
  it.each(['compress', 'aes128gcm', 'x-custom', 'gzip, compress'])(
    'keeps Content-Encoding: %s with the body as sent, on a miss, a hit and a revalidation',
    async (coding) => {
      const path = `/coded?${encodeURIComponent(coding)}`;
      const sent = coding.startsWith('gzip') ? gzipSync(ENCODED) : ENCODED;
      const miss = await get(path);
      expect(miss.headers.get('x-cache')).toBe('MISS');
      expect(miss.headers.get('content-encoding')).toBe(coding);
      expect(new Uint8Array(await miss.arrayBuffer())).toEqual(new Uint8Array(sent));
      const hit = await get(path);
      expect(hit.headers.get('x-cache')).toBe('HIT');
      expect(hit.headers.get('content-encoding')).toBe(coding);
      expect(new Uint8Array(await hit.arrayBuffer())).toEqual(new Uint8Array(sent));
      clock.advance(120_000);
      const revalidated = await get(path);
      expect(revalidated.headers.get('x-cache')).toBe('REVALIDATED');
      expect(revalidated.headers.get('content-encoding')).toBe(coding);
      expect(new Uint8Array(await revalidated.arrayBuffer())).toEqual(new Uint8Array(sent));
    },
  );

  it('drops Content-Encoding for a coding fetch decoded', async () => {
    const miss = await get('/gzip');
    expect(miss.headers.get('content-encoding')).toBeNull();
    expect(await miss.text()).toBe('unzipped');
    const hit = await get('/gzip');
    expect(hit.headers.get('x-cache')).toBe('HIT');
    expect(hit.headers.get('content-encoding')).toBeNull();
    expect(await hit.text()).toBe('unzipped');
  });
});

describe('proxy-revalidate', () => {
  it('is must-revalidate for this (shared) cache: no stale copy when revalidation fails', async () => {
    const lenient = { staleIfError: true };
    expect(await (await get('/flaky-proxy', undefined, lenient)).text()).toBe('v1');
    expect((await get('/flaky-proxy', undefined, lenient)).headers.get('x-cache')).toBe('HIT');
    clock.advance(2000);
    failure = 'reset';
    await expect(get('/flaky-proxy', undefined, lenient)).rejects.toThrow();
    failure = 'none';
    const revalidated = await get('/flaky-proxy', undefined, lenient);
    expect(await revalidated.text()).toBe('v1');
  });
});
