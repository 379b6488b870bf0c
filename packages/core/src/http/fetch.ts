import { createHash } from 'node:crypto';
import type { Clock } from '../backends/backend.ts';
import type { CacheView } from '../cache.ts';
import { getDefaultCache } from '../config/env.ts';
import { cacheError } from '../errors.ts';
import { resolveClock } from '../ledger/internal.ts';
import type { Duration } from '../ttl.ts';
import { parseDuration } from '../ttl.ts';
import { raceAbort } from '../util/abort.ts';

export interface CachedFetchOptions {
  /** The cache; responses are kept in its `http` tier. @default getDefaultCache() */
  cache?: CacheView | undefined;
  /**
   * How long a response is fresh when it says nothing itself (no Cache-Control max-age, no
   * Expires). @default the http tier's TTL (`tiers.http.ttl`, 1 hour unless configured)
   */
  ttl?: Duration | undefined;
  /**
   * How long a stale response that has a validator (ETag / Last-Modified) is kept to be
   * revalidated with a conditional request. @default '7d'
   */
  keepStale?: Duration | undefined;
  /**
   * Request headers that select a different response, so they are part of the key (hashed,
   * never stored in clear). Credential headers are always part of it too, whatever this says:
   * `authorization`, `proxy-authorization`, `cookie`, any name ending in `key` (`x-api-key`,
   * `x-goog-api-key`, …; not `idempotency-key`), with an `auth` part, or ending in `token`,
   * `secret`, `password` or `signature`, so one caller's response is never served to another.
   * Name other credential headers here.
   * @default ['accept', 'accept-language', 'authorization', 'cookie']
   */
  keyHeaders?: readonly string[] | undefined;
  /** When revalidation fails with a network error, serve the stale copy (unless it says must-revalidate). @default false */
  staleIfError?: boolean | undefined;
  /**
   * Bodies larger than this are passed through, not stored. (A body without Content-Length is
   * read before the response is returned; event streams are always passed through.) @default 8 MiB
   */
  maxBodyBytes?: number | undefined;
  /** Header set on returned responses: HIT, MISS, COALESCED, REVALIDATED, STALE; `false` for none. @default 'x-cache' */
  statusHeader?: string | false | undefined;
  /** The fetch that reaches the network. @default globalThis.fetch */
  fetch?: typeof fetch | undefined;
  /** Time source for freshness. @default the cache's clock */
  clock?: Clock | undefined;
}

/** What the http tier stores per URL (and key-header values). */
interface StoredResponse {
  /** The response's URL: after redirects, where the body came from. */
  url: string;
  redirected?: boolean | undefined;
  /**
   * The request's values (hashed) of the headers the response's `Vary` names, when they are not
   * key headers already: another value is another response, so it is a miss.
   */
  vary?: Record<string, string | null> | undefined;
  status: number;
  statusText: string;
  headers: [string, string][];
  body: Uint8Array;
  /** When the response (or its last 304) was received, epoch ms. */
  receivedAt: number;
  freshUntil: number;
  etag?: string | undefined;
  lastModified?: string | undefined;
  mustRevalidate?: boolean | undefined;
}

type Served = 'HIT' | 'MISS' | 'COALESCED' | 'REVALIDATED' | 'STALE';

/**
 * Requests in flight per cache and storage key. A GET that misses while another identical one
 * (same URL and key headers) is on the network waits for it instead of sending its own; the
 * promise yields the response as stored, or undefined when it could not be shared.
 */
const flightsByCache = new WeakMap<object, Map<string, Promise<StoredResponse | undefined>>>();

const DEFAULT_KEY_HEADERS = ['accept', 'accept-language', 'authorization', 'cookie'];
/**
 * Request headers that carry a credential: always in the key, and they make a response per-user.
 * Any name ending in `key` (`x-api-key`, `api-key`, `x-goog-api-key`, `ocp-apim-subscription-key`,
 * `x-functions-key`, `accesskey`), `authorization`, an `auth` part, and a final `token`, `secret`,
 * `password` or `signature`; not `idempotency-key` nor the `sec-` headers browsers set.
 */
const CREDENTIAL_HEADER =
  /^cookie$|authorization$|(?:^|[-_])auth(?:[-_]|$)|key$|(?:^|[-_])(?:token|secret|password|passwd|signature)$/i;
const NOT_CREDENTIAL = /^sec-|idempotency/i;

function isCredentialHeader(name: string): boolean {
  return CREDENTIAL_HEADER.test(name) && !NOT_CREDENTIAL.test(name);
}
const DEFAULT_KEEP_STALE: Duration = '7d';
const DEFAULT_MAX_BODY = 8 * 1024 * 1024;
/** Statuses a cache may store without explicit freshness (RFC 9110 §15.1); only 200 and 203 get the default ttl. */
const CACHEABLE_STATUSES = new Set([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]);
const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** Not stored: they describe the transfer (the body is kept decoded) or a session. */
const UNSTORED_HEADERS = new Set([
  'connection',
  'content-encoding',
  'content-length',
  'keep-alive',
  'set-cookie',
  'transfer-encoding',
]);

/**
 * `fetch` through the cache's `http` tier, for tools that call APIs: a GET answered while fresh
 * (Cache-Control max-age, Expires, else `ttl`), revalidated with If-None-Match /
 * If-Modified-Since once stale (a 304 serves the stored body and refreshes it). Other methods,
 * `no-store` requests and `no-store` responses go straight to the network; a successful unsafe
 * request (POST, PUT, PATCH, DELETE) drops the stored responses of its URL.
 */
export async function cachedFetch(
  input: string | URL | Request,
  init?: RequestInit,
  options: CachedFetchOptions = {},
): Promise<Response> {
  return createCachedFetch(options)(input, init);
}

/** A `fetch`-compatible function with the options bound (what a tool keeps and calls). */
export function createCachedFetch(
  options: CachedFetchOptions = {},
): (input: string | URL | Request, init?: RequestInit) => Promise<Response> {
  const explicitTtlMs =
    options.ttl === undefined ? undefined : (parseDuration(options.ttl, 'ttl') ?? Infinity);
  const keepStaleMs = parseDuration(options.keepStale ?? DEFAULT_KEEP_STALE, 'keepStale') ?? Infinity;
  const keyHeaders = (options.keyHeaders ?? DEFAULT_KEY_HEADERS).map((name) => name.toLowerCase());
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const statusHeader = options.statusHeader ?? 'x-cache';
  if (!Number.isInteger(maxBody) || maxBody < 0) {
    throw cacheError(
      'E_INVALID_OPTION',
      'http',
      `maxBodyBytes must be a non-negative integer, got ${maxBody}`,
    );
  }
  let view: CacheView | undefined;
  let flights: Map<string, Promise<StoredResponse | undefined>> | undefined;
  let clock: Clock | undefined;
  const http = (): CacheView => {
    view ??= (options.cache ?? getDefaultCache()).tier('http');
    return view;
  };
  const inFlight = (): Map<string, Promise<StoredResponse | undefined>> => {
    if (flights) return flights;
    const owner = options.cache ?? getDefaultCache();
    flights = flightsByCache.get(owner);
    if (!flights) {
      flights = new Map();
      flightsByCache.set(owner, flights);
    }
    return flights;
  };
  const ttlOf = (tier: CacheView): number => explicitTtlMs ?? tier.ttlMs ?? Infinity;
  const now = (): number => {
    clock ??= resolveClock({ clock: options.clock, cache: options.cache ?? http() });
    return clock.now();
  };

  return async (input, init): Promise<Response> => {
    const network = options.fetch ?? globalThis.fetch;
    const request = new Request(input, init);
    // As fetch does: an aborted signal fails the call, even one the cache could answer.
    request.signal.throwIfAborted();
    const url = withoutFragment(request.url);
    if (request.method !== 'GET') {
      const response = await network(request);
      if (UNSAFE_METHODS.has(request.method) && response.status < 400) {
        await http().invalidateTags([urlTag(url)]);
      }
      return response;
    }
    const requestControl = parseCacheControl(request.headers.get('cache-control'));
    if (requestControl.has('no-store') || request.cache === 'no-store') return network(request);

    const variant: Record<string, string> = {};
    for (const name of keyHeaders) {
      const value = request.headers.get(name);
      if (value !== null) variant[name] = value;
    }
    // Credentials select the caller's own response, whether or not keyHeaders names them.
    let perUser = false;
    for (const [name, value] of request.headers) {
      if (!isCredentialHeader(name)) continue;
      variant[name] = value;
      perUser = true;
    }
    const key = { name: 'fetch', request: { url, variant } };
    const reload = request.cache === 'reload';
    // A request max-age bounds the age of what it accepts; max-age=0 asks for a check, like no-cache.
    const maxAgeHeader = requestControl.get('max-age');
    const maxAgeMs =
      maxAgeHeader !== undefined && /^\d+$/.test(maxAgeHeader) ? Number(maxAgeHeader) * 1000 : undefined;
    const mustCheck = requestControl.has('no-cache') || request.cache === 'no-cache' || maxAgeMs === 0;
    // Plain lookups share a fetch already on the network for the same key; reload and
    // no-cache requests ask for their own trip to the server.
    const shareable = !reload && !mustCheck;
    const flightKey = shareable ? http().key(key) : '';
    // Checked before and after the store read: the other request may start during the read.
    // No await between the second check and registering our own flight.
    const early = shareable ? inFlight().get(flightKey) : undefined;
    if (early) return join(early);
    // Read without counting: a stored response past its freshness is a miss, not a hit.
    const stored = reload ? undefined : usable(await http().peek<StoredResponse>(key));
    if (
      stored &&
      !mustCheck &&
      now() < stored.freshUntil &&
      (maxAgeMs === undefined || ageOf(stored, now()) <= maxAgeMs)
    ) {
      request.signal.throwIfAborted();
      http().recordLookup('hit');
      return build(stored, 'HIT', statusHeader);
    }
    if (!shareable) return miss(stored);
    const late = inFlight().get(flightKey);
    if (late) return join(late);
    let settle!: (entry: StoredResponse | undefined) => void;
    const flight = new Promise<StoredResponse | undefined>((resolve) => {
      settle = resolve;
    });
    inFlight().set(flightKey, flight);
    let shared: StoredResponse | undefined;
    try {
      const response = await miss(stored, (entry) => {
        shared = entry;
      });
      return response;
    } finally {
      inFlight().delete(flightKey);
      settle(shared);
    }

    /** Waits for another caller's fetch of this key; its response, or our own when it had none to share. */
    async function join(pending: Promise<StoredResponse | undefined>): Promise<Response> {
      // The caller's own AbortSignal still applies while it waits on another caller's fetch.
      const shared = usable(await raceAbort(pending, request.signal));
      if (shared) {
        http().recordCoalesced();
        return build(shared, 'COALESCED', statusHeader);
      }
      // The other response could not be shared (not storable, its fetch failed, or it varies on
      // a header this request sends otherwise): go alone.
      return miss(usable(await http().peek<StoredResponse>(key)));
    }

    /** A stored response this request may use: the one its `Vary` headers select, or none. */
    function usable(entry: StoredResponse | undefined): StoredResponse | undefined {
      if (!entry?.vary) return entry;
      for (const [name, value] of Object.entries(entry.vary)) {
        if (value !== hashedHeader(request.headers.get(name))) return undefined;
      }
      return entry;
    }

    /** The network part: conditional request when there is a validator, then store. */
    async function miss(
      stored: StoredResponse | undefined,
      share?: (entry: StoredResponse) => void,
    ): Promise<Response> {
      let outgoing = request;
      if (stored && (stored.etag || stored.lastModified)) {
        const headers = new Headers(request.headers);
        if (stored.etag) headers.set('if-none-match', stored.etag);
        if (stored.lastModified) headers.set('if-modified-since', stored.lastModified);
        outgoing = new Request(request, { headers });
      }
      let response: Response;
      try {
        response = await network(outgoing);
      } catch (error) {
        if (stored && options.staleIfError && !stored.mustRevalidate) {
          http().recordLookup('hit');
          return build(stored, 'STALE', statusHeader);
        }
        http().recordLookup('miss');
        throw error;
      }

      const receivedAt = now();
      // A 304 serves the stored body: a hit (with a round trip); anything else is a miss.
      http().recordLookup(response.status === 304 && stored ? 'hit' : 'miss');
      if (response.status === 304 && stored) {
        const headers = mergeHeaders(stored.headers, response.headers);
        const refreshed: StoredResponse = {
          ...stored,
          headers,
          receivedAt,
          ...validators(headers),
          ...freshness(headers, stored.status, receivedAt, ttlOf(http())),
        };
        await write(refreshed);
        share?.(refreshed);
        return build(refreshed, 'REVALIDATED', statusHeader);
      }

      const responseControl = parseCacheControl(response.headers.get('cache-control'));
      const declared = Number(response.headers.get('content-length') ?? 0);
      const varyNames = (response.headers.get('vary') ?? '')
        .split(',')
        .map((name) => name.trim().toLowerCase())
        .filter((name) => name !== '');
      // A private response is for one user: kept only when a credential header is in the key.
      // An event stream is live data that may never end: passed through as it arrives.
      const eventStream = /^text\/event-stream\b/i.test(response.headers.get('content-type') ?? '');
      const storable =
        !eventStream &&
        CACHEABLE_STATUSES.has(response.status) &&
        !responseControl.has('no-store') &&
        !(responseControl.has('private') && !perUser) &&
        !varyNames.includes('*') &&
        !(declared > maxBody);
      if (!storable) return response;
      const headers = storedHeaders(response.headers);
      const timing = freshness(headers, response.status, receivedAt, ttlOf(http()));
      const checks = validators(headers);
      if (timing.freshUntil <= receivedAt && !checks.etag && !checks.lastModified) return response;
      const body = new Uint8Array(await response.arrayBuffer());
      const vary: Record<string, string | null> = {};
      for (const name of varyNames) {
        if (!keyHeaders.includes(name)) vary[name] = hashedHeader(request.headers.get(name));
      }
      const entry: StoredResponse = {
        url: response.url || url,
        ...(response.redirected ? { redirected: true } : {}),
        ...(Object.keys(vary).length > 0 ? { vary } : {}),
        status: response.status,
        statusText: response.statusText,
        headers,
        body,
        receivedAt,
        ...checks,
        ...timing,
      };
      if (body.byteLength <= maxBody) {
        await write(entry);
        share?.(entry);
      }
      // The caller gets the response as the server sent it (Set-Cookie included); the stored and
      // shared copy leaves session headers out.
      return live(response, entry, 'MISS', statusHeader);
    }

    async function write(entry: StoredResponse): Promise<void> {
      const fresh = Math.max(0, entry.freshUntil - entry.receivedAt);
      const keep = entry.etag || entry.lastModified ? fresh + keepStaleMs : fresh;
      if (keep <= 0) return;
      await http().set(key, entry, {
        ttl: Number.isFinite(keep) ? keep : undefined,
        tags: [urlTag(url)],
      });
    }
  };
}

/** The network response with its body already read: its own headers, the cache's status header. */
function live(
  response: Response,
  entry: StoredResponse,
  served: Served,
  statusHeader: string | false,
): Response {
  const headers = new Headers(response.headers);
  // The body is kept decoded: the transfer headers no longer describe it.
  for (const name of ['content-encoding', 'content-length', 'transfer-encoding']) headers.delete(name);
  return build(entry, served, statusHeader, headers);
}

function build(
  entry: StoredResponse,
  served: Served,
  statusHeader: string | false,
  headers: Headers = new Headers(entry.headers),
): Response {
  if (statusHeader) headers.set(statusHeader, served);
  const nullBody = entry.status === 204 || entry.status === 205 || entry.status === 304;
  // The decoded body is a plain Uint8Array; typed as the constructor's body so the DOM lib accepts it too.
  const response = new Response(
    nullBody ? null : (entry.body as unknown as ConstructorParameters<typeof Response>[0]),
    {
      status: entry.status,
      statusText: entry.statusText,
      headers,
    },
  );
  // A constructed Response has an empty url; tools may log or resolve against it.
  Object.defineProperty(response, 'url', { value: entry.url });
  if (entry.redirected) Object.defineProperty(response, 'redirected', { value: true });
  return response;
}

/** How old a stored response is now, ms: time since it was received plus its `Age` then. */
function ageOf(stored: StoredResponse, now: number): number {
  const age = Number(stored.headers.find(([name]) => name === 'age')?.[1] ?? 0);
  return now - stored.receivedAt + (Number.isFinite(age) && age > 0 ? age * 1000 : 0);
}

/** A request header's value as a Vary check keeps it: hashed, never in clear. */
function hashedHeader(value: string | null): string | null {
  return value === null ? null : createHash('sha256').update(value).digest('base64url');
}

function freshness(
  headers: readonly [string, string][],
  status: number,
  receivedAt: number,
  defaultMs: number,
): { freshUntil: number; mustRevalidate: boolean } {
  const get = (name: string) => headers.find(([header]) => header === name)?.[1];
  const control = parseCacheControl(get('cache-control') ?? null);
  const mustRevalidate = control.has('must-revalidate') || control.has('no-cache');
  if (control.has('no-cache')) return { freshUntil: receivedAt, mustRevalidate };
  // The store may be shared by many users (Redis, a SQLite file): s-maxage, meant for shared
  // caches, wins over max-age.
  const sharedMaxAge = control.get('s-maxage');
  const maxAge = sharedMaxAge ?? control.get('max-age');
  if (maxAge !== undefined && /^\d+$/.test(maxAge)) {
    const age = Number(get('age') ?? 0);
    const lifetime = Number(maxAge) * 1000 - (Number.isFinite(age) ? age * 1000 : 0);
    // Past s-maxage a shared cache must revalidate (RFC 9111 §5.2.2.10): no stale-if-error.
    return {
      freshUntil: receivedAt + Math.max(0, lifetime),
      mustRevalidate: mustRevalidate || sharedMaxAge !== undefined,
    };
  }
  const expires = get('expires');
  if (expires !== undefined) {
    const expiresAt = Date.parse(expires);
    const date = Date.parse(get('date') ?? '');
    // Expires is relative to the server's clock: keep its distance to the server's Date.
    const lifetime = Number.isNaN(expiresAt) ? 0 : expiresAt - (Number.isNaN(date) ? receivedAt : date);
    return { freshUntil: receivedAt + Math.max(0, lifetime), mustRevalidate };
  }
  const fallback = status === 200 || status === 203 ? defaultMs : 0;
  return { freshUntil: receivedAt + fallback, mustRevalidate };
}

function validators(headers: readonly [string, string][]): { etag?: string; lastModified?: string } {
  const etag = headers.find(([name]) => name === 'etag')?.[1];
  const lastModified = headers.find(([name]) => name === 'last-modified')?.[1];
  return { ...(etag ? { etag } : {}), ...(lastModified ? { lastModified } : {}) };
}

function storedHeaders(headers: Headers): [string, string][] {
  const out: [string, string][] = [];
  headers.forEach((value, name) => {
    if (!UNSTORED_HEADERS.has(name)) out.push([name, value]);
  });
  return out;
}

/** A 304's headers update the stored ones (RFC 9111 §4.3.4). */
function mergeHeaders(stored: readonly [string, string][], fresh: Headers): [string, string][] {
  const merged = new Map(stored);
  fresh.forEach((value, name) => {
    if (!UNSTORED_HEADERS.has(name)) merged.set(name, value);
  });
  return [...merged];
}

function parseCacheControl(header: string | null): Map<string, string | undefined> {
  const directives = new Map<string, string | undefined>();
  if (!header) return directives;
  for (const part of header.split(',')) {
    const [name, ...value] = part.trim().split('=');
    if (!name) continue;
    directives.set(name.toLowerCase(), value.length > 0 ? value.join('=').replace(/^"|"$/g, '') : undefined);
  }
  return directives;
}

function withoutFragment(url: string): string {
  const hash = url.indexOf('#');
  return hash < 0 ? url : url.slice(0, hash);
}

function urlTag(url: string): string {
  return `url:${createHash('sha256').update(url).digest('base64url')}`;
}
