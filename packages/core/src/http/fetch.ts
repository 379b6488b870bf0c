import { createHash } from 'node:crypto';
import * as zlib from 'node:zlib';
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
  /**
   * When revalidation fails with a network error (before the response or while its body arrives)
   * or a timeout signal (`AbortSignal.timeout`), serve the stale copy, unless it says
   * must-revalidate (or proxy-revalidate, no-cache, s-maxage). @default false
   */
  staleIfError?: boolean | undefined;
  /**
   * Bodies larger than this are passed through, not stored. (A body without Content-Length is
   * read before the response is returned; event streams are always passed through.) @default 8 MiB
   */
  maxBodyBytes?: number | undefined;
  /**
   * Header set on every returned response (replacing one an upstream cache set): HIT, COALESCED,
   * REVALIDATED, STALE (served from the cache), MISS (fetched; stored when storable), BYPASS (a
   * request the cache does not answer: not a GET, `no-store`, or with its own conditional
   * headers); `false` for none. @default 'x-cache'
   */
  statusHeader?: string | false | undefined;
  /**
   * Called when a response could not be stored (a quota with `onExceed: 'reject'`, an
   * unstorable value); the caller still gets the response. Such a write is always counted in
   * `droppedWrites` and emitted as an `error` event. @default none
   */
  onStoreError?: ((error: unknown) => void) | undefined;
  /** The fetch that reaches the network. @default globalThis.fetch */
  fetch?: typeof fetch | undefined;
  /** Time source for freshness. @default the cache's clock */
  clock?: Clock | undefined;
}

/** What the http tier stores per URL (and key-header values). */
interface StoredResponse {
  /** The response's URL (the request's: redirected responses are not stored). */
  url: string;
  /** Set by older versions, which stored a followed redirect under the request URL: never served. */
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

type Served = 'HIT' | 'MISS' | 'COALESCED' | 'REVALIDATED' | 'STALE' | 'BYPASS';

/** A GET on the network; a successful unsafe request to its URL marks it outdated. */
interface Fetching {
  /** Sent before a write to its URL completed: its response is neither stored nor shared. */
  outdated: boolean;
}

/**
 * A GET that misses while another identical one (same URL, key headers and redirect mode) is on
 * the network waits for it instead of sending its own; the promise yields the response as
 * stored, or undefined when it could not be shared.
 */
interface Flight {
  promise: Promise<StoredResponse | undefined>;
  url: string;
}

/**
 * Per storage scope (one store, one tier and namespace): requests in flight by storage key, and
 * the GETs on the network by URL.
 */
interface SharedState {
  flights: Map<string, Flight>;
  fetching: Map<string, Set<Fetching>>;
}

/**
 * By what the entries are stored in (see `scopeOwner`), then by the view's key prefix (its tier
 * and namespace). Not by view: `withNamespace()` and `tier()` make a new view on every call, and
 * a view made per request (one per tenant) must still see the others' fetches and writes.
 */
const stateByOwner = new WeakMap<object, Map<string, SharedState>>();

/**
 * An object every view of the same storage shares: the cache's store (shared by the caches
 * opened on it, whose entries are the same), or for a memory-only cache its private record store,
 * which only that cache and its views reach.
 */
function scopeOwner(view: CacheView): object {
  return (view.recordStore as object | undefined) ?? view;
}

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
/** Methods known safe (RFC 9110 §9.2.1); a successful request of any other drops its URL's entries (RFC 9111 §4.4). */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);
/** A request with its own preconditions asks the server, not the cache: passed through. */
const CONDITIONAL_HEADERS = [
  'if-none-match',
  'if-modified-since',
  'if-match',
  'if-unmodified-since',
  'if-range',
];
/** Not stored: they describe the transfer or a session (Content-Encoding: see `decodedCodings`). */
const UNSTORED_HEADERS = new Set([
  'connection',
  'content-length',
  'keep-alive',
  'set-cookie',
  'transfer-encoding',
]);
/**
 * The content codings Node's fetch (undici) decodes. It decodes a body only when it knows every
 * coding listed; with any other (`compress`, `aes128gcm`, `x-…`, `identity`) it passes the body
 * through as sent, Content-Encoding and all.
 */
const DECODED_CODINGS = new Set([
  'gzip',
  'x-gzip',
  'deflate',
  'br',
  ...(typeof (zlib as { createZstdDecompress?: unknown }).createZstdDecompress === 'function'
    ? ['zstd']
    : []),
]);

/** Whether fetch decoded the body, so that its Content-Encoding no longer describes it. */
function decodedCodings(headers: Headers): boolean {
  const header = headers.get('content-encoding');
  if (header === null) return false;
  return header
    .toLowerCase()
    .split(',')
    .every((coding) => DECODED_CODINGS.has(coding.trim()));
}

/**
 * Whether an abort of `signal` is the caller's own cancellation. A timeout signal
 * (`AbortSignal.timeout`) is not: a hanging upstream is what staleIfError is for.
 */
function cancelled(signal: AbortSignal): boolean {
  return signal.aborted && (signal.reason as Error | undefined)?.name !== 'TimeoutError';
}

/**
 * `fetch` through the cache's `http` tier, for tools that call APIs: a GET answered while fresh
 * (Cache-Control max-age, Expires, else `ttl`), revalidated with If-None-Match /
 * If-Modified-Since once stale (a 304 serves the stored body and refreshes it). Other methods,
 * `no-store` requests, requests with their own conditional headers and `no-store` responses go
 * straight to the network; a successful request of a method not known safe (POST, PUT, PATCH,
 * DELETE, PURGE, …) drops the stored responses of its URL.
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
  let state: SharedState | undefined;
  let clock: Clock | undefined;
  const http = (): CacheView => {
    view ??= (options.cache ?? getDefaultCache()).tier('http');
    return view;
  };
  const sharedState = (): SharedState => {
    if (state) return state;
    const tier = http();
    const owner = scopeOwner(tier);
    let byPrefix = stateByOwner.get(owner);
    if (!byPrefix) {
      byPrefix = new Map();
      stateByOwner.set(owner, byPrefix);
    }
    const prefix = tier.prefix();
    state = byPrefix.get(prefix);
    if (!state) {
      state = { flights: new Map(), fetching: new Map() };
      byPrefix.set(prefix, state);
    }
    return state;
  };
  const inFlight = (): Map<string, Flight> => sharedState().flights;
  /** A write to `url` succeeded: what GETs sent before it bring back is outdated. */
  const outdate = (url: string): void => {
    for (const fetching of sharedState().fetching.get(url) ?? []) fetching.outdated = true;
    for (const [flightKey, flight] of inFlight()) if (flight.url === url) inFlight().delete(flightKey);
  };
  // A write the cache refuses is dropped (counted, emitted as `error`), never thrown: the
  // response was fetched.
  const onStoreError = options.onStoreError ?? (() => {});
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
      if (!SAFE_METHODS.has(request.method) && response.status < 400) {
        // Before the store is touched: GETs sent earlier must not store or share what they get.
        outdate(url);
        await http().invalidateTags([urlTag(url)]);
      }
      return mark(response, 'BYPASS', statusHeader);
    }
    const requestControl = parseCacheControl(request.headers.get('cache-control'));
    if (
      requestControl.has('no-store') ||
      request.cache === 'no-store' ||
      CONDITIONAL_HEADERS.some((name) => request.headers.has(name))
    ) {
      return mark(await network(request), 'BYPASS', statusHeader);
    }

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
    // A redirect mode other than the default is another response (a 301 itself for 'manual');
    // follow-mode keys stay as they were.
    const key = {
      name: 'fetch',
      request: { url, variant, ...(request.redirect === 'follow' ? {} : { redirect: request.redirect }) },
    };
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
    if (early) return join(early.promise);
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
      return build(stored, 'HIT', statusHeader, now());
    }
    if (!shareable) return miss(stored);
    const late = inFlight().get(flightKey);
    if (late) return join(late.promise, stored);
    let settle!: (entry: StoredResponse | undefined) => void;
    const flight: Flight = {
      promise: new Promise<StoredResponse | undefined>((resolve) => {
        settle = resolve;
      }),
      url,
    };
    inFlight().set(flightKey, flight);
    let sharedEntry: StoredResponse | undefined;
    try {
      const response = await miss(stored, (entry) => {
        sharedEntry = entry;
      });
      return response;
    } finally {
      // A write to the URL may have dropped this flight already, and a newer one taken its place.
      if (inFlight().get(flightKey) === flight) inFlight().delete(flightKey);
      settle(sharedEntry);
    }

    /**
     * Waits for another caller's fetch of this key; its response, or our own when it had none to
     * share. `stored`: what this request found in the store, if it looked.
     */
    async function join(
      pending: Promise<StoredResponse | undefined>,
      stored?: StoredResponse,
    ): Promise<Response> {
      let shared: StoredResponse | undefined;
      try {
        // The caller's own AbortSignal still applies while it waits on another caller's fetch.
        shared = usable(await raceAbort(pending, request.signal));
      } catch (error) {
        // Its timeout is a failure staleIfError covers, as for the request on the network.
        if (options.staleIfError && !cancelled(request.signal)) {
          const fallback = stored ?? usable(await http().peek<StoredResponse>(key));
          if (fallback && !fallback.mustRevalidate) {
            http().recordLookup('hit');
            return build(fallback, 'STALE', statusHeader, now());
          }
        }
        throw error;
      }
      if (shared) {
        http().recordCoalesced();
        return build(shared, 'COALESCED', statusHeader, now());
      }
      // The other response could not be shared (not storable, its fetch failed, or it varies on
      // a header this request sends otherwise): go alone.
      return miss(usable(await http().peek<StoredResponse>(key)));
    }

    /** A stored response this request may use: the one its `Vary` headers select, or none. */
    function usable(entry: StoredResponse | undefined): StoredResponse | undefined {
      // A followed redirect stored by an older version: its hops' own rules were never checked.
      if (entry?.redirected) return undefined;
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
      // Registered before the request is sent: a write to the URL from now on outdates it.
      const fetching: Fetching = { outdated: false };
      const byUrl = sharedState().fetching;
      let siblings = byUrl.get(url);
      if (!siblings) {
        siblings = new Set();
        byUrl.set(url, siblings);
      }
      siblings.add(fetching);
      try {
        return await fetchAndStore(stored, fetching, share);
      } finally {
        siblings.delete(fetching);
        if (siblings.size === 0 && byUrl.get(url) === siblings) byUrl.delete(url);
      }
    }

    async function fetchAndStore(
      stored: StoredResponse | undefined,
      fetching: Fetching,
      share: ((entry: StoredResponse) => void) | undefined,
    ): Promise<Response> {
      let outgoing = request;
      if (stored && (stored.etag || stored.lastModified)) {
        const headers = new Headers(request.headers);
        if (stored.etag) headers.set('if-none-match', stored.etag);
        if (stored.lastModified) headers.set('if-modified-since', stored.lastModified);
        outgoing = new Request(request, { headers });
      }
      /**
       * The request failed (no response, or its body broke off): the stale copy under
       * staleIfError, else the error. The caller's own abort is not a network failure: it
       * rejects, as fetch does; a timeout signal's is one.
       */
      const failed = (error: unknown): Response => {
        if (stored && options.staleIfError && !stored.mustRevalidate && !cancelled(request.signal)) {
          http().recordLookup('hit');
          return build(stored, 'STALE', statusHeader, now());
        }
        http().recordLookup('miss');
        throw error;
      };
      let response: Response;
      try {
        response = await network(outgoing);
      } catch (error) {
        return failed(error);
      }

      const receivedAt = now();
      // A 304 serves the stored body: a hit (with a round trip); anything else is a miss, counted
      // once the outcome is known (a body that breaks off may still be answered by the stale copy).
      if (response.status === 304 && stored) {
        http().recordLookup('hit');
        const headers = mergeHeaders(stored.headers, response.headers);
        const refreshed: StoredResponse = {
          ...stored,
          headers,
          receivedAt,
          ...validators(headers),
          ...freshness(headers, stored.status, receivedAt, ttlOf(http())),
        };
        if (await write(refreshed, fetching)) share?.(refreshed);
        return build(refreshed, 'REVALIDATED', statusHeader, now());
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
      // A followed redirect is not stored under the request URL: each hop has its own cache rules
      // (a `no-store` 302 to a long-lived target), which fetch does not show.
      const storable =
        !response.redirected &&
        !eventStream &&
        CACHEABLE_STATUSES.has(response.status) &&
        !responseControl.has('no-store') &&
        !(responseControl.has('private') && !perUser) &&
        !varyNames.includes('*') &&
        !(declared > maxBody);
      if (!storable) {
        http().recordLookup('miss');
        return mark(response, 'MISS', statusHeader);
      }
      const headers = storedHeaders(response.headers);
      const timing = freshness(headers, response.status, receivedAt, ttlOf(http()));
      const checks = validators(headers);
      if (timing.freshUntil <= receivedAt && !checks.etag && !checks.lastModified) {
        http().recordLookup('miss');
        return mark(response, 'MISS', statusHeader);
      }
      let body: Uint8Array;
      try {
        body = new Uint8Array(await response.arrayBuffer());
      } catch (error) {
        // Nothing is stored or shared: the flight's followers go alone.
        return failed(error);
      }
      http().recordLookup('miss');
      const vary: Record<string, string | null> = {};
      for (const name of varyNames) {
        if (!keyHeaders.includes(name)) vary[name] = hashedHeader(request.headers.get(name));
      }
      const entry: StoredResponse = {
        url: response.url || url,
        ...(Object.keys(vary).length > 0 ? { vary } : {}),
        status: response.status,
        statusText: response.statusText,
        headers,
        body,
        receivedAt,
        ...checks,
        ...timing,
      };
      if (body.byteLength <= maxBody && (await write(entry, fetching))) share?.(entry);
      // The caller gets the response as the server sent it (Set-Cookie included); the stored and
      // shared copy leaves session headers out.
      return live(response, entry, 'MISS', statusHeader);
    }

    /**
     * Stores the entry unless a write to the URL outdated the request; whether it may be shared.
     * A refused write (quota) is dropped and reported, never thrown.
     */
    async function write(entry: StoredResponse, fetching: Fetching): Promise<boolean> {
      if (fetching.outdated) return false;
      const fresh = Math.max(0, entry.freshUntil - entry.receivedAt);
      const keep = entry.etag || entry.lastModified ? fresh + keepStaleMs : fresh;
      if (keep > 0) {
        // `Infinity` (ttl or keepStale) is kept without expiry, not for the tier's TTL.
        await http().set(key, entry, { ttl: keep, tags: [urlTag(url)], onStoreError });
        // A write to the URL landed while this one was under way: take the copy back out.
        if (fetching.outdated) {
          await http().delete(key);
          return false;
        }
      }
      return true;
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
  // The body was read whole (and decoded, when fetch knew its codings): the transfer headers no
  // longer describe it.
  if (decodedCodings(response.headers)) headers.delete('content-encoding');
  for (const name of ['content-length', 'transfer-encoding']) headers.delete(name);
  return build(entry, served, statusHeader, undefined, headers);
}

/**
 * A network response passed through, with the cache's status header (replacing one an upstream
 * cache set). The body streams through as it arrives.
 */
/** The network Response a marked pass-through Response was built from (see `mark`). */
const SOURCE = Symbol('x-cache-source');

function mark(response: Response, served: Served, statusHeader: string | false): Response {
  // A status the Response constructor refuses (a browser's opaque redirect, 0) passes as it is,
  // and so does a Response-like object a custom `fetch` returned (a test double).
  if (!statusHeader || !(response instanceof Response) || response.status < 200 || response.status > 599) {
    return response;
  }
  const headers = new Headers(response.headers);
  headers.set(statusHeader, served);
  const nullBody = response.status === 204 || response.status === 205 || response.status === 304;
  const marked = new Response(nullBody ? null : response.body, {
    status: response.status,
    statusText: response.statusText,
    headers,
  });
  Object.defineProperty(marked, 'url', { value: response.url });
  if (response.redirected) Object.defineProperty(marked, 'redirected', { value: true });
  // Node's fetch cancels the body of a Response collected before its body was read: the new one
  // keeps the original alive for as long as it lives itself.
  Object.defineProperty(marked, SOURCE, { value: response });
  return marked;
}

/**
 * A Response from a stored entry. Given `now`, it is served from storage: its `Age` is the
 * entry's current age (RFC 9111 §5.1).
 */
function build(
  entry: StoredResponse,
  served: Served,
  statusHeader: string | false,
  now?: number,
  headers: Headers = new Headers(entry.headers),
): Response {
  if (now !== undefined) headers.set('age', String(Math.floor(ageOf(entry, now) / 1000)));
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
  // What the response had used of its lifetime when it arrived (from upstream caches).
  const received = Number(get('age') ?? 0);
  const ageMs = Number.isFinite(received) && received > 0 ? received * 1000 : 0;
  // The store may be shared (see s-maxage below): proxy-revalidate binds it as must-revalidate
  // (RFC 9111 §5.2.2.8).
  const mustRevalidate =
    control.has('must-revalidate') || control.has('proxy-revalidate') || control.has('no-cache');
  if (control.has('no-cache')) return { freshUntil: receivedAt, mustRevalidate };
  // The store may be shared by many users (Redis, a SQLite file): s-maxage, meant for shared
  // caches, wins over max-age.
  const sharedMaxAge = control.get('s-maxage');
  const maxAge = sharedMaxAge ?? control.get('max-age');
  if (maxAge !== undefined && /^\d+$/.test(maxAge)) {
    const lifetime = Number(maxAge) * 1000 - ageMs;
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
    const lifetime =
      (Number.isNaN(expiresAt) ? 0 : expiresAt - (Number.isNaN(date) ? receivedAt : date)) - ageMs;
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

/** The headers kept with a body: Content-Encoding only when fetch left the body encoded. */
function storedHeaders(headers: Headers): [string, string][] {
  const decoded = decodedCodings(headers);
  const out: [string, string][] = [];
  headers.forEach((value, name) => {
    if (!UNSTORED_HEADERS.has(name) && !(name === 'content-encoding' && decoded)) out.push([name, value]);
  });
  return out;
}

/**
 * A 304's headers update the stored ones (RFC 9111 §4.3.4). The stored `Age` was the age of the
 * first response when it arrived: the refreshed copy is as old as the 304 says (none: new).
 */
function mergeHeaders(stored: readonly [string, string][], fresh: Headers): [string, string][] {
  const merged = new Map(stored);
  merged.delete('age');
  // Content-Encoding describes the stored body, which a 304 does not replace.
  fresh.forEach((value, name) => {
    if (!UNSTORED_HEADERS.has(name) && name !== 'content-encoding') merged.set(name, value);
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
