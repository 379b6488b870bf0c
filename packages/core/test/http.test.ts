/**
 * cachedFetch against a real node:http server on 127.0.0.1 that counts requests and answers
 * conditional requests with 304. Freshness runs on a fake clock shared with the cache.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Clock } from '../src/backends/backend.ts';
import { sqliteBackend } from '../src/backends/sqlite.ts';
import type { Cache } from '../src/cache.ts';
import { createCache } from '../src/cache.ts';
import type { CachedFetchOptions } from '../src/http/index.ts';
import { cachedFetch, createCachedFetch } from '../src/http/index.ts';
import { useHttpServer } from './support.ts';

interface Seen {
  method: string;
  path: string;
  ifNoneMatch?: string | undefined;
  ifModifiedSince?: string | undefined;
  authorization?: string | undefined;
}

let base: string;
let seen: Seen[] = [];
let version = 1;
const LAST_MODIFIED = 'Tue, 01 Jan 2030 00:00:00 GMT';
const BINARY = Uint8Array.from({ length: 2048 }, (_, i) => (i * 31) % 256);

function handle(req: IncomingMessage, res: ServerResponse): void {
  const path = req.url ?? '/';
  seen.push({
    method: req.method ?? 'GET',
    path,
    ifNoneMatch: req.headers['if-none-match'],
    ifModifiedSince: req.headers['if-modified-since'],
    authorization: req.headers.authorization,
  });
  const etag = `"v${version}"`;
  if (req.method === 'POST') {
    version++;
    res.writeHead(201, { 'content-type': 'text/plain' }).end('updated');
    return;
  }
  switch (path.split('?')[0]) {
    case '/etag':
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag, 'cache-control': 'max-age=60', 'x-refreshed': 'yes' }).end();
        return;
      }
      res
        .writeHead(200, {
          etag,
          'cache-control': 'max-age=60',
          'content-type': 'application/json',
          'x-version': String(version),
        })
        .end(JSON.stringify({ version }));
      return;
    case '/last-modified':
      if (req.headers['if-modified-since'] === LAST_MODIFIED) {
        res.writeHead(304, { 'cache-control': 'max-age=10' }).end();
        return;
      }
      res
        .writeHead(200, { 'last-modified': LAST_MODIFIED, 'cache-control': 'max-age=10' })
        .end('modified body');
      return;
    case '/plain':
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`plain ${seen.length}`);
      return;
    case '/expires':
      res
        .writeHead(200, { date: 'Tue, 01 Jan 2030 00:00:00 GMT', expires: 'Tue, 01 Jan 2030 00:02:00 GMT' })
        .end('expires');
      return;
    case '/no-store':
      res.writeHead(200, { 'cache-control': 'no-store' }).end(`secret ${seen.length}`);
      return;
    case '/no-cache':
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag, 'cache-control': 'no-cache' }).end();
        return;
      }
      res.writeHead(200, { etag, 'cache-control': 'no-cache' }).end(`no-cache v${version}`);
      return;
    case '/whoami':
      res
        .writeHead(200, { 'cache-control': 'max-age=60' })
        .end(`user ${req.headers.authorization ?? 'anonymous'}`);
      return;
    case '/binary':
      res
        .writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'max-age=60' })
        .end(BINARY);
      return;
    case '/gzip':
      res
        .writeHead(200, {
          'content-encoding': 'gzip',
          'content-type': 'text/plain',
          'cache-control': 'max-age=60',
        })
        .end(gzipSync('unzipped text '.repeat(100)));
      return;
    case '/missing':
      res.writeHead(404, { 'cache-control': 'max-age=60' }).end('not here');
      return;
    case '/error':
      res.writeHead(500).end('boom');
      return;
    case '/slow': {
      // Slow enough that concurrent callers overlap; the body names the request that made it.
      const made = seen.length;
      setTimeout(() => res.writeHead(200, { 'cache-control': 'max-age=60' }).end(`slow ${made}`), 60);
      return;
    }
    case '/slow-no-store': {
      const made = seen.length;
      setTimeout(() => res.writeHead(200, { 'cache-control': 'no-store' }).end(`private ${made}`), 60);
      return;
    }
    case '/vary':
      res
        .writeHead(200, { 'cache-control': 'max-age=60', vary: 'X-Lang' })
        .end(`lang=${req.headers['x-lang'] ?? 'none'}`);
      return;
    case '/vary-star':
      res
        .writeHead(200, { 'cache-control': 'max-age=60', vary: 'Accept-Encoding, *' })
        .end(`star ${seen.length}`);
      return;
    case '/private':
      res
        .writeHead(200, { 'cache-control': 'private, max-age=60' })
        .end(`key=${req.headers['x-api-key'] ?? req.headers.authorization ?? 'none'}`);
      return;
    case '/api-key':
      // A public response whose body depends on the caller's API key (as many APIs answer).
      res
        .writeHead(200, { 'cache-control': 'max-age=60' })
        .end(`data for ${req.headers['x-api-key'] ?? 'none'}`);
      return;
    case '/aged':
      // Already ten minutes old when it reaches us (from a CDN, say).
      res.writeHead(200, { 'cache-control': 'max-age=3600', age: '600', etag }).end(`aged v${version}`);
      return;
    case '/shared-max-etag':
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag, 'cache-control': 'max-age=3600, s-maxage=60' }).end();
        return;
      }
      res.writeHead(200, { etag, 'cache-control': 'max-age=3600, s-maxage=60' }).end(`shared v${version}`);
      return;
    case '/shared-max':
      res.writeHead(200, { 'cache-control': 'max-age=600, s-maxage=0' }).end(`shared ${seen.length}`);
      return;
    case '/cookie':
      res
        .writeHead(200, { 'cache-control': 'max-age=60', 'set-cookie': 'sid=abc; HttpOnly' })
        .end('with a cookie');
      return;
    case '/redirect':
      res.writeHead(302, { location: '/target' }).end();
      return;
    case '/target':
      res.writeHead(200, { 'cache-control': 'max-age=60' }).end('arrived');
      return;
    case '/events':
      // An event stream that stays open: its first event must reach the caller at once.
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'max-age=60' });
      res.write('data: first\n\n');
      setTimeout(() => res.end('data: last\n\n'), 300);
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
beforeEach(() => {
  seen = [];
  version = 1;
  let now = Date.UTC(2030, 0, 1);
  clock = { now: () => now, advance: (ms) => void (now += ms) };
  cache = createCache({ clock });
});
afterEach(async () => {
  await cache.close();
});

function get(path: string, init?: RequestInit, options: CachedFetchOptions = {}): Promise<Response> {
  return cachedFetch(`${base}${path}`, init, { cache, ...options });
}

describe('cachedFetch', () => {
  it('answers a fresh GET from the http tier: status, headers and body, and no request', async () => {
    const first = await get('/etag');
    expect(first).toBeInstanceOf(Response);
    expect(first.headers.get('x-cache')).toBe('MISS');
    expect(await first.json()).toEqual({ version: 1 });
    clock.advance(59_999);
    const second = await get('/etag#fragment-ignored');
    expect(second.status).toBe(200);
    expect(second.headers.get('x-cache')).toBe('HIT');
    expect(second.headers.get('content-type')).toBe('application/json');
    expect(second.headers.get('etag')).toBe('"v1"');
    expect(second.url).toBe(`${base}/etag`);
    expect(await second.json()).toEqual({ version: 1 });
    expect(seen).toHaveLength(1);
    expect((await cache.tier('http').stats()).sets).toBe(1);
  });

  it('revalidates a stale response with If-None-Match and serves the stored body on 304, fresh again', async () => {
    await (await get('/etag')).text();
    clock.advance(60_000);
    const revalidated = await get('/etag');
    expect(revalidated.headers.get('x-cache')).toBe('REVALIDATED');
    expect(revalidated.status).toBe(200);
    expect(await revalidated.json()).toEqual({ version: 1 });
    expect(revalidated.headers.get('x-refreshed')).toBe('yes');
    expect(revalidated.headers.get('x-version')).toBe('1');
    expect(seen.map((s) => s.ifNoneMatch)).toEqual([undefined, '"v1"']);
    // The 304 restarted the freshness lifetime.
    clock.advance(59_000);
    expect((await get('/etag')).headers.get('x-cache')).toBe('HIT');
    expect(seen).toHaveLength(2);
  });

  it('revalidates with If-Modified-Since when the response had only Last-Modified', async () => {
    expect(await (await get('/last-modified')).text()).toBe('modified body');
    clock.advance(10_000);
    const again = await get('/last-modified');
    expect(again.headers.get('x-cache')).toBe('REVALIDATED');
    expect(await again.text()).toBe('modified body');
    expect(seen.map((s) => s.ifModifiedSince)).toEqual([undefined, LAST_MODIFIED]);
  });

  it('a changed resource (200 to the conditional request) replaces the stored one', async () => {
    await (await get('/etag')).text();
    version = 2;
    clock.advance(60_000);
    const changed = await get('/etag');
    expect(changed.headers.get('x-cache')).toBe('MISS');
    expect(await changed.json()).toEqual({ version: 2 });
    expect(await (await get('/etag')).json()).toEqual({ version: 2 });
    expect(seen).toHaveLength(2);
  });

  it('uses the ttl (default: the http tier TTL) when the response gives no freshness', async () => {
    const body = await (await get('/plain', undefined, { ttl: '5m' })).text();
    clock.advance(5 * 60_000 - 1);
    expect(await (await get('/plain', undefined, { ttl: '5m' })).text()).toBe(body);
    clock.advance(1);
    const expired = await get('/plain', undefined, { ttl: '5m' });
    // No validator: nothing to revalidate, a plain new request.
    expect(expired.headers.get('x-cache')).toBe('MISS');
    expect(seen.map((s) => s.ifNoneMatch ?? s.ifModifiedSince)).toEqual([undefined, undefined]);

    await (await get('/plain?default')).text();
    clock.advance(60 * 60_000 - 1);
    expect((await get('/plain?default')).headers.get('x-cache')).toBe('HIT');
    clock.advance(1);
    expect((await get('/plain?default')).headers.get('x-cache')).toBe('MISS');
  });

  it('defaults to the http tier TTL configured on the cache', async () => {
    const tuned = createCache({ clock, tiers: { http: { ttl: '2m' } } });
    try {
      await (await get('/plain?tuned', undefined, { cache: tuned })).text();
      clock.advance(2 * 60_000 - 1);
      expect((await get('/plain?tuned', undefined, { cache: tuned })).headers.get('x-cache')).toBe('HIT');
      clock.advance(1);
      expect((await get('/plain?tuned', undefined, { cache: tuned })).headers.get('x-cache')).toBe('MISS');
    } finally {
      await tuned.close();
    }
  });

  it('honours Expires relative to the server Date', async () => {
    await (await get('/expires')).text();
    clock.advance(119_999);
    expect((await get('/expires')).headers.get('x-cache')).toBe('HIT');
    clock.advance(1);
    expect((await get('/expires')).headers.get('x-cache')).toBe('MISS');
  });

  it('never caches non-GET requests, no-store responses or no-store requests', async () => {
    for (let i = 0; i < 2; i++) {
      const posted = await get('/etag', { method: 'POST', body: 'x' });
      expect(posted.status).toBe(201);
      // Not a request the cache answers: marked as passed through.
      expect(posted.headers.get('x-cache')).toBe('BYPASS');
    }
    for (let i = 0; i < 2; i++) expect(await (await get('/no-store')).text()).toBe(`secret ${seen.length}`);
    await (await get('/etag')).text();
    await (await get('/etag', { headers: { 'cache-control': 'no-store' } })).text();
    await (await get('/etag', { cache: 'no-store' })).text();
    expect(seen.map((s) => `${s.method} ${s.path}`)).toEqual([
      'POST /etag',
      'POST /etag',
      'GET /no-store',
      'GET /no-store',
      'GET /etag',
      'GET /etag',
      'GET /etag',
    ]);
    expect((await cache.tier('http').stats()).sets).toBe(1);
  });

  it('a successful POST to a URL drops its stored GET responses', async () => {
    expect(await (await get('/etag')).json()).toEqual({ version: 1 });
    expect(await (await get('/etag', { headers: { accept: 'application/json' } })).json()).toEqual({
      version: 1,
    });
    await get('/etag', { method: 'POST', body: 'bump' });
    expect(await (await get('/etag')).json()).toEqual({ version: 2 });
    expect(await (await get('/etag', { headers: { accept: 'application/json' } })).json()).toEqual({
      version: 2,
    });
  });

  it("keys by Authorization: one user's response is never served to another", async () => {
    const as = (user: string) => get('/whoami', { headers: { authorization: `Bearer ${user}` } });
    expect(await (await as('alice')).text()).toBe('user Bearer alice');
    expect(await (await as('bob')).text()).toBe('user Bearer bob');
    expect(await (await as('alice')).text()).toBe('user Bearer alice');
    expect(await (await get('/whoami')).text()).toBe('user anonymous');
    expect(seen).toHaveLength(3);
  });

  it('sends one request for identical GETs that miss together; each caller gets its own body', async () => {
    const responses = await Promise.all(Array.from({ length: 5 }, () => get('/slow')));
    expect(seen.map((s) => s.path)).toEqual(['/slow']);
    expect(responses.map((r) => r.headers.get('x-cache')).sort()).toEqual([
      'COALESCED',
      'COALESCED',
      'COALESCED',
      'COALESCED',
      'MISS',
    ]);
    // Every caller can read its own body; reading one does not consume another's.
    expect(await Promise.all(responses.map((r) => r.text()))).toEqual(Array(5).fill('slow 1'));
    expect(responses.every((r) => r.url === `${base}/slow` && r.status === 200)).toBe(true);
    const stats = await cache.tier('http').stats();
    expect(stats.coalesced).toBe(4);
    expect(stats.sets).toBe(1);
    expect((await get('/slow')).headers.get('x-cache')).toBe('HIT');
  });

  it('does not share what cannot be stored, another variant, or a reload', async () => {
    // A no-store response is not shared: callers waiting for it send their own request.
    const privates = await Promise.all(Array.from({ length: 3 }, () => get('/slow-no-store')));
    expect(await Promise.all(privates.map((r) => r.text()))).toHaveLength(3);
    expect(seen.filter((s) => s.path === '/slow-no-store')).toHaveLength(3);
    expect(privates.every((r) => r.headers.get('x-cache') !== 'COALESCED')).toBe(true);
    // Other key headers are another key; reload always goes to the server.
    seen = [];
    await Promise.all([
      get('/slow', { headers: { authorization: 'Bearer alice' } }),
      get('/slow', { headers: { authorization: 'Bearer bob' } }),
    ]);
    expect(seen.map((s) => s.authorization)).toEqual(['Bearer alice', 'Bearer bob']);
    seen = [];
    const [plain, reload] = await Promise.all([get('/slow'), get('/slow', { cache: 'reload' })]);
    expect(seen).toHaveLength(2);
    expect(reload.headers.get('x-cache')).toBe('MISS');
    await plain.text();
  });

  it("stops waiting on another caller's fetch when its own signal aborts", async () => {
    let leaderDone = false;
    const leader = get('/slow').then((response) => {
      leaderDone = true;
      return response;
    });
    await expect(get('/slow', { signal: AbortSignal.timeout(10) })).rejects.toMatchObject({
      name: 'TimeoutError',
    });
    // It gave up while the shared fetch (60 ms) was still on the network.
    expect(leaderDone).toBe(false);
    const aborted = new AbortController();
    aborted.abort(new Error('gave up'));
    await expect(get('/slow', { signal: aborted.signal })).rejects.toThrow('gave up');
    expect(await (await leader).text()).toBe('slow 1');
    expect(seen).toHaveLength(1);
  });

  it('lets callers waiting on a failed fetch make their own request', async () => {
    let calls = 0;
    const flaky: typeof fetch = async (input, init) => {
      calls++;
      if (calls === 1) {
        await new Promise((resolve) => setTimeout(resolve, 30));
        throw new TypeError('fetch failed');
      }
      return fetch(input, init);
    };
    const outcomes = await Promise.allSettled(
      Array.from({ length: 3 }, () => get('/slow', undefined, { fetch: flaky })),
    );
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'fulfilled', 'rejected']);
    expect(calls).toBeGreaterThanOrEqual(2);
  });

  it('stores no-cache responses but revalidates them on every use', async () => {
    await (await get('/no-cache')).text();
    const second = await get('/no-cache');
    expect(second.headers.get('x-cache')).toBe('REVALIDATED');
    expect(await second.text()).toBe('no-cache v1');
    expect(seen.map((s) => s.ifNoneMatch)).toEqual([undefined, '"v1"']);
    // A request that asks for revalidation gets one even for a fresh entry.
    await (await get('/etag')).text();
    expect((await get('/etag', { headers: { 'cache-control': 'no-cache' } })).headers.get('x-cache')).toBe(
      'REVALIDATED',
    );
  });

  it('round-trips binary bodies, and keeps compressed responses decoded', async () => {
    const first = new Uint8Array(await (await get('/binary')).arrayBuffer());
    const hit = await get('/binary');
    expect(hit.headers.get('x-cache')).toBe('HIT');
    expect(new Uint8Array(await hit.arrayBuffer())).toEqual(BINARY);
    expect(first).toEqual(BINARY);
    expect(await (await get('/gzip')).text()).toBe('unzipped text '.repeat(100));
    const gzipHit = await get('/gzip');
    expect(gzipHit.headers.get('content-encoding')).toBeNull();
    expect(await gzipHit.text()).toBe('unzipped text '.repeat(100));
  });

  it('stores 404s only with explicit freshness, and never server errors', async () => {
    await get('/missing');
    expect((await get('/missing')).headers.get('x-cache')).toBe('HIT');
    expect((await get('/missing')).status).toBe(404);
    await get('/error');
    const again = await get('/error');
    expect(again.status).toBe(500);
    expect(seen.filter((s) => s.path === '/error')).toHaveLength(2);
  });

  it('serves the stale copy on a network error only with staleIfError', async () => {
    let down = false;
    const flaky: typeof fetch = (input, init) =>
      down ? Promise.reject(new TypeError('fetch failed')) : fetch(input, init);
    const strict = createCachedFetch({ cache, fetch: flaky });
    const lenient = createCachedFetch({ cache, fetch: flaky, staleIfError: true });
    await (await strict(`${base}/etag`)).text();
    clock.advance(60_000);
    down = true;
    await expect(strict(`${base}/etag`)).rejects.toThrow('fetch failed');
    const stale = await lenient(`${base}/etag`);
    expect(stale.headers.get('x-cache')).toBe('STALE');
    expect(await stale.json()).toEqual({ version: 1 });
  });

  it('serves a response only to requests with the values of the headers it varies on', async () => {
    expect(await (await get('/vary', { headers: { 'x-lang': 'fr' } })).text()).toBe('lang=fr');
    const en = await get('/vary', { headers: { 'x-lang': 'en' } });
    expect(await en.text()).toBe('lang=en');
    expect(en.headers.get('x-cache')).toBe('MISS');
    const again = await get('/vary', { headers: { 'x-lang': 'en' } });
    expect([again.headers.get('x-cache'), await again.text()]).toEqual(['HIT', 'lang=en']);
    await get('/vary-star');
    // Vary: * in a list still means every request is another response: not stored.
    expect((await get('/vary-star')).headers.get('x-cache')).not.toBe('HIT');
    expect(seen.filter((request) => request.path === '/vary-star')).toHaveLength(2);
  });

  it('keeps a private response only when a credential header keys it to one user', async () => {
    expect(await (await get('/private', { headers: { 'x-api-key': 'alice' } })).text()).toBe('key=alice');
    const bob = await get('/private', { headers: { 'x-api-key': 'bob' } });
    expect(await bob.text()).toBe('key=bob');
    expect(bob.headers.get('x-cache')).not.toBe('HIT');
    await get('/private', { headers: { authorization: 'Bearer alice' } });
    const alice = await get('/private', { headers: { authorization: 'Bearer alice' } });
    expect([alice.headers.get('x-cache'), await alice.text()]).toEqual(['HIT', 'key=Bearer alice']);
  });

  it('never serves one API key’s response to another: credential headers are always in the key', async () => {
    for (const [header, a, b] of [
      ['x-api-key', 'key-a', 'key-b'],
      ['x-goog-api-key', 'g-a', 'g-b'],
      ['ocp-apim-subscription-key', 'azure-a', 'azure-b'],
      ['x-auth-token', 't-a', 't-b'],
    ] as const) {
      seen = [];
      const first = await get('/api-key', { headers: { 'x-api-key': a, [header]: a } });
      expect(await first.text()).toBe(`data for ${a}`);
      const other = await get('/api-key', { headers: { 'x-api-key': b, [header]: b } });
      expect([other.headers.get('x-cache'), await other.text()]).toEqual(['MISS', `data for ${b}`]);
      const again = await get('/api-key', { headers: { 'x-api-key': a, [header]: a } });
      expect([again.headers.get('x-cache'), await again.text()]).toEqual(['HIT', `data for ${a}`]);
      expect(seen).toHaveLength(2);
    }
    // Also when keyHeaders is set without them.
    const only = { keyHeaders: ['accept'] };
    await get('/api-key', { headers: { 'x-api-key': 'c' } }, only);
    const d = await get('/api-key', { headers: { 'x-api-key': 'd' } }, only);
    expect(await d.text()).toBe('data for d');
    // Headers that are not credentials do not split the cache.
    seen = [];
    await get('/plain', { headers: { 'x-session-id': 's1', 'x-max-tokens': '5', 'idempotency-key': 'i1' } });
    const shared = await get('/plain', {
      headers: { 'x-session-id': 's2', 'x-max-tokens': '9', 'idempotency-key': 'i2' },
    });
    expect(shared.headers.get('x-cache')).toBe('HIT');
    expect(seen).toHaveLength(1);
  });

  it('lets s-maxage win over max-age (the store is shared)', async () => {
    await get('/shared-max');
    const second = await get('/shared-max');
    expect(second.headers.get('x-cache')).not.toBe('HIT');
    expect(seen.filter((request) => request.path === '/shared-max')).toHaveLength(2);
  });

  it('honours a request max-age: max-age=0 revalidates, max-age=N accepts only a copy that young', async () => {
    await get('/etag');
    const zero = await get('/etag', { headers: { 'cache-control': 'max-age=0' } });
    expect(zero.headers.get('x-cache')).toBe('REVALIDATED');
    clock.advance(5_000);
    expect((await get('/etag', { headers: { 'cache-control': 'max-age=10' } })).headers.get('x-cache')).toBe(
      'HIT',
    );
    clock.advance(10_000);
    const old = await get('/etag', { headers: { 'cache-control': 'max-age=10' } });
    expect(old.headers.get('x-cache')).toBe('REVALIDATED');
    // Without the bound, the same copy is still fresh (max-age=60).
    expect((await get('/etag')).headers.get('x-cache')).toBe('HIT');
    // The age counts what the response already had when it arrived (Age: 600).
    await get('/aged');
    const young = await get('/aged', { headers: { 'cache-control': 'max-age=60' } });
    expect(young.headers.get('x-cache')).not.toBe('HIT');
    expect(seen.filter((request) => request.path === '/aged')).toHaveLength(2);
  });

  it('past s-maxage revalidates, and never serves the stale copy on a network error', async () => {
    const failing: typeof fetch = async () => {
      throw new TypeError('network down');
    };
    await get('/shared-max-etag', undefined, { staleIfError: true });
    clock.advance(120_000);
    await expect(get('/shared-max-etag', undefined, { staleIfError: true, fetch: failing })).rejects.toThrow(
      'network down',
    );
  });

  it('fails at once on an aborted signal, as fetch does, even when it could answer from the cache', async () => {
    await get('/etag');
    const controller = new AbortController();
    controller.abort();
    await expect(get('/etag', { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' });
  });

  it("gives the caller of a miss the server's Set-Cookie, and never stores it", async () => {
    const first = await get('/cookie');
    expect(first.headers.getSetCookie()).toEqual(['sid=abc; HttpOnly']);
    const hit = await get('/cookie');
    expect(hit.headers.get('x-cache')).toBe('HIT');
    expect(hit.headers.getSetCookie()).toEqual([]);
  });

  it('keeps the final URL of a redirected response, and does not store it under the request URL', async () => {
    const first = await get('/redirect');
    const second = await get('/redirect');
    for (const response of [first, second]) {
      expect(response.url).toBe(`${base}/target`);
      expect(response.redirected).toBe(true);
      expect(response.headers.get('x-cache')).toBe('MISS');
      expect(await response.text()).toBe('arrived');
    }
    // The 302 has no freshness: each request asks it again.
    expect(seen.filter((request) => request.path === '/redirect')).toHaveLength(2);
  });

  it('passes an event stream through as it arrives and never stores it', async () => {
    const started = performance.now();
    const response = await get('/events');
    expect(performance.now() - started).toBeLessThan(250);
    const reader = response.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toBe('data: first\n\n');
    await reader.cancel();
    expect((await get('/events')).headers.get('x-cache')).not.toBe('HIT');
  });

  it('counts a hit only when the stored response answered', async () => {
    await get('/etag'); // miss
    await get('/etag'); // hit
    clock.advance(2 * 60_000);
    version = 2;
    expect(await (await get('/etag')).json()).toEqual({ version: 2 }); // stale, changed: a miss
    clock.advance(2 * 60_000);
    expect((await get('/etag')).headers.get('x-cache')).toBe('REVALIDATED'); // 304: the body was stored
    expect(await cache.tier('http').stats()).toMatchObject({ hits: 2, misses: 2 });
  });

  it('persists in a SQLite store across a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'x-http-'));
    try {
      const path = join(dir, 'http.db');
      const first = createCache({ clock, store: sqliteBackend({ path, clock }) });
      await (await cachedFetch(`${base}/etag`, undefined, { cache: first })).text();
      await first.close();
      const second = createCache({ clock, store: sqliteBackend({ path, clock }), memory: false });
      const hit = await cachedFetch(`${base}/etag`, undefined, { cache: second, statusHeader: 'x-served' });
      expect(hit.headers.get('x-served')).toBe('HIT');
      expect(hit.headers.get('x-cache')).toBeNull();
      expect(await hit.json()).toEqual({ version: 1 });
      await second.close();
      expect(seen).toHaveLength(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
