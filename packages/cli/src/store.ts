import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { Cache, CacheBackend, StoredEntry } from '@x/cache-core';
import { createCache, redactUrl, storeFromUrl } from '@x/cache-core';
import type { RedisBackend } from '@x/cache-core/redis';
import { CliError, messageOf, usageError } from './io.ts';

export interface StoreTarget {
  /** The URL handed to `storeFromUrl`. */
  url: string;
  kind: 'sqlite' | 'redis';
  /** The URL as shown to the user: password hidden. */
  display: string;
  /** SQLite file path. */
  path?: string | undefined;
}

export interface ConnectOptions {
  /** Create a missing (or empty) SQLite file (import, warm) instead of refusing. @default false */
  create?: boolean;
  /** How long to wait for Redis to answer PING. @default 2000 */
  timeoutMs?: number;
}

/** An open store, and a cache over it for the operations that must reach other processes. */
export interface Connection {
  readonly target: StoreTarget;
  readonly store: CacheBackend;
  /**
   * A cache over the store, created on first use. Deletions made through it are published on the
   * store's invalidation bus (Redis), so running applications drop them from their memory levels.
   */
  cache(): Cache;
  /** Throws the first store error the cache swallowed (the engine fails open; the CLI must not). */
  assertNoErrors(): void;
  close(): Promise<void>;
}

const SCHEME = /^([a-z][a-z0-9+.-]*):/i;
const DEFAULT_FILE = 'llm-cache.db';

/** The URL as shown in messages: SQLite URLs (a path, no credentials) as given, others without credentials. */
function redact(url: string): string {
  const kind = SCHEME.exec(url)?.[1]?.toLowerCase();
  return kind === 'sqlite' || kind === 'file' ? url : redactUrl(url);
}

/**
 * Reads entries for display or export without counting them as uses: no LRU touch where the
 * backend keeps one (SQLite), so listing a store never changes what it evicts next.
 */
export function readEntries(
  store: CacheBackend,
  keys: readonly string[],
): Promise<(StoredEntry | undefined)[]> {
  return store.peekMany ? store.peekMany(keys) : store.getMany(keys);
}

/**
 * The store to open: `--url`, else `LLM_CACHE_URL`, else the SQLite file an application using
 * `getDefaultCache()` writes (`$LLM_CACHE_DIR/llm-cache.db` or `.cache/llm-cache.db`) when it exists.
 */
export function resolveTarget(
  urlOption: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): StoreTarget {
  const given = urlOption?.trim() || env.LLM_CACHE_URL?.trim();
  if (given) return parseTarget(given);
  const path = join(env.LLM_CACHE_DIR ?? '.cache', DEFAULT_FILE);
  if (env.LLM_CACHE_DIR || existsSync(path)) {
    return { url: `sqlite://${encodeURIComponent(path)}`, kind: 'sqlite', display: `sqlite://${path}`, path };
  }
  throw usageError(
    'no store given — pass --url sqlite://path/to/llm-cache.db or --url redis://host:6379, or set LLM_CACHE_URL',
  );
}

export function parseTarget(url: string): StoreTarget {
  const scheme = SCHEME.exec(url)?.[1]?.toLowerCase();
  const display = redact(url);
  if (scheme === 'memory') {
    throw usageError(
      'memory:// cannot be inspected: a memory cache lives and dies inside its own process — ' +
        'point --url at the store your application uses (sqlite://path/to/llm-cache.db or redis://host:6379)',
    );
  }
  if (scheme === 'sqlite' || scheme === 'file') {
    // Same reading as storeFromUrl, so that both agree on which file is meant.
    const rest = url.slice(scheme.length + 1).replace(/^\/\//, '');
    let path: string;
    try {
      path = decodeURIComponent(rest.split('?')[0] ?? '') || join('.cache', DEFAULT_FILE);
    } catch {
      throw usageError(`invalid URL "${display}" — percent-encode special characters in the path`);
    }
    return { url, kind: 'sqlite', display, path };
  }
  if (scheme === 'redis' || scheme === 'rediss') {
    const expected = `${scheme}://[:password@]host:port[/db][?prefix=app:]`;
    let parsed: URL | undefined;
    try {
      parsed = new URL(url);
    } catch {
      parsed = undefined;
    }
    // Without `//` the host is read as a path and ioredis falls back to localhost:6379; without a
    // host (`redis:///:pw@h`) too.
    if (!parsed || !url.slice(scheme.length + 1).startsWith('//') || parsed.hostname === '') {
      throw usageError(`invalid URL "${display}" — expected ${expected}`);
    }
    if (!/^(?:\/\d*)?$/.test(parsed.pathname)) {
      throw usageError(
        `invalid URL "${display}" — the path is the database number (${scheme}://host:6379/2), not "${parsed.pathname}"; use ?prefix=app: to keep applications apart`,
      );
    }
    return { url, kind: 'redis', display };
  }
  throw usageError(
    scheme === undefined
      ? `invalid URL "${display}" — expected sqlite://path/to/llm-cache.db, sqlite:///absolute/path.db or redis://host:port`
      : `unsupported URL scheme "${scheme}:" in "${display}" — use sqlite://path/to/llm-cache.db, sqlite:///absolute/path.db or redis://host:port`,
  );
}

interface PeekDatabase {
  prepare(sql: string): { get(): unknown };
  close(): void;
}
type PeekDriver = new (path: string, options: { readonly: boolean; fileMustExist: boolean }) => PeekDatabase;

/**
 * Refuses a file that is not a cache store before the backend opens it: opening migrates, and a
 * read-only command must not add cache tables to some other application's database.
 */
function checkSqliteFile(target: StoreTarget, create: boolean): void {
  const path = target.path!;
  if (!existsSync(path)) {
    if (create) return;
    throw new CliError(
      `no cache database at ${path} — check --url / LLM_CACHE_URL (the path is relative to the current directory)`,
    );
  }
  // An empty file (touch) may become a store; a file with content must already be one, even for
  // import and warm: they must not add cache tables to another application's database.
  if (create && sizeOf(path) === 0) return;
  let Driver: PeekDriver;
  try {
    const loaded = createRequire(import.meta.url)('better-sqlite3') as PeekDriver & { default?: PeekDriver };
    Driver = loaded.default ?? loaded;
  } catch {
    return; // the backend reports the missing driver with its install hint
  }
  let db: PeekDatabase | undefined;
  try {
    db = new Driver(path, { readonly: true, fileMustExist: true });
    const known = db
      .prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'cache_meta'")
      .get();
    if (known === undefined) {
      throw new CliError(
        `${path} is an SQLite database but not an llm-cache store — point --url at the file your application's cache uses`,
      );
    }
  } catch (error) {
    if (error instanceof CliError) throw error;
    if ((error as { code?: string }).code === 'SQLITE_NOTADB') {
      throw new CliError(`${path} is not an SQLite database — point --url at an llm-cache SQLite file`);
    }
    // Anything else (locked, permissions): let the backend open it and report.
  } finally {
    db?.close();
  }
}

function sizeOf(path: string): number | undefined {
  try {
    return statSync(path).size;
  } catch {
    return undefined;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function openRedis(target: StoreTarget, timeoutMs: number): Promise<CacheBackend> {
  const store = storeFromUrl(target.url) as RedisBackend;
  const client = store.client;
  // A refused connection or an unknown host is definitive: answer at once rather than let
  // ioredis retry until the timeout.
  let onError: (error: unknown) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => {
    onError = reject;
  });
  failed.catch(() => undefined); // an error after a successful PING is the commands' business
  client.once('error', onError);
  try {
    await withTimeout(Promise.race([client.ping(), failed]), timeoutMs);
  } catch (error) {
    client.disconnect();
    throw new CliError(
      `cannot reach Redis at ${target.display}: ${messageOf(error)} — check that the server is up and --url / LLM_CACHE_URL`,
    );
  } finally {
    client.off('error', onError);
  }
  return store;
}

export async function connect(target: StoreTarget, options: ConnectOptions = {}): Promise<Connection> {
  let store: CacheBackend;
  try {
    if (target.kind === 'sqlite') {
      checkSqliteFile(target, options.create ?? false);
      store = storeFromUrl(target.url)!;
    } else {
      store = await openRedis(target, options.timeoutMs ?? 2000);
    }
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(`cannot open ${target.display}: ${messageOf(error)}`);
  }
  let cache: Cache | undefined;
  const errors: unknown[] = [];
  return {
    target,
    store,
    cache() {
      if (!cache) {
        cache = createCache({
          // No timeout or breaker: a prefix delete over a large Redis may take a while, and the
          // CLI reports failures instead of skipping the store.
          store: { backend: store, timeout: '1d', breaker: false },
          // No memory level of its own, but deletions must reach running apps' memory levels.
          memory: false,
          bus: true,
          singleFlight: 'process',
          statsFlushInterval: 0,
        });
        cache.on('error', (event) => errors.push(event.error));
      }
      return cache;
    },
    assertNoErrors() {
      if (errors.length > 0) {
        throw new CliError(`the store failed: ${messageOf(errors[0])}`);
      }
    },
    async close() {
      if (cache) await cache.close();
      else await store.close();
    },
  };
}
