import { join } from 'node:path';
import type { CacheBackend } from '../backends/backend.ts';
import { redisBackend } from '../backends/redis.ts';
import { sqliteBackend } from '../backends/sqlite.ts';
import type { Cache, CacheOptions } from '../cache.ts';
import { createCache } from '../cache.ts';
import { cacheError } from '../errors.ts';

/** The environment variables the default cache reads. */
export interface CacheEnvironment {
  /** `memory://`, `sqlite://relative/file.db`, `sqlite:///absolute/file.db`, `redis://host:6379/0?prefix=app:`. */
  LLM_CACHE_URL?: string | undefined;
  /** Directory for the default SQLite file when no URL is set (`<dir>/llm-cache.db`). */
  LLM_CACHE_DIR?: string | undefined;
  /** `1` / `true` turns the cache into a pass-through. */
  LLM_CACHE_DISABLED?: string | undefined;
  /** Entries the in-memory level of each tier may hold. */
  LLM_CACHE_MAX_MEMORY_ENTRIES?: string | undefined;
  /** Namespace of the default cache. */
  LLM_CACHE_NAMESPACE?: string | undefined;
}

const TRUE = new Set(['1', 'true', 'yes', 'on']);

/**
 * Opens the store a URL names. Backends for other schemes are loaded only when named, so a
 * memory-only user never loads a native driver.
 */
export function storeFromUrl(url: string): CacheBackend | undefined {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'memory') return undefined;
  if (scheme === 'sqlite' || scheme === 'file') {
    const rest = url.slice(scheme.length + 1).replace(/^\/\//, '');
    const path = decodeURIComponent(rest.split('?')[0] ?? '');
    return sqliteBackend(path ? { path } : {});
  }
  if (scheme === 'redis' || scheme === 'rediss') {
    const parsed = new URL(url);
    // Read from the raw query, percent-decoded only: `+` stays a plus (URLSearchParams would make
    // it a space), and `?prefix=` is the empty prefix, not the default one.
    const raw = /(?:^|&)prefix=([^&]*)/.exec(parsed.search.slice(1))?.[1];
    const keyPrefix = raw === undefined ? undefined : decodeURIComponent(raw);
    parsed.search = '';
    return redisBackend({ url: parsed.toString(), ...(keyPrefix !== undefined ? { keyPrefix } : {}) });
  }
  throw cacheError(
    'E_INVALID_OPTION',
    'config',
    `LLM_CACHE_URL "${redactUrl(url)}" has an unknown scheme: use memory://, sqlite://path/to/file.db, sqlite:///abs/path.db or redis://host:port`,
  );
}

/**
 * A store URL as messages show it: without its user and password. Everything between the scheme
 * (with the slashes after it, if any: `redis://`, `redis:/`, `redis:`) and the last `@` before
 * the query is shown as `***`; the host stays visible, and an `@` in the query
 * (`?prefix=team@app`) is not a credential. A URL without a host (`redis:///:pw@h`, an unencoded
 * `?` in the password) hides everything up to its last `@`.
 */
export function redactUrl(url: string): string {
  const start = /^[a-z][a-z0-9+.-]*:\/*/i.exec(url)?.[0].length ?? 0;
  let host = '';
  try {
    host = new URL(url).hostname;
  } catch {
    // unparsable: no host to trust, hide up to the last @
  }
  const at = host === '' ? url.lastIndexOf('@') : url.split('?', 1)[0]!.lastIndexOf('@');
  if (at < start) return url;
  return `${url.slice(0, start)}***${url.slice(at)}`;
}

/**
 * Builds cache options from the environment: `LLM_CACHE_URL` (default: SQLite at
 * `LLM_CACHE_DIR/llm-cache.db`, or `.cache/llm-cache.db`), `LLM_CACHE_DISABLED`,
 * `LLM_CACHE_MAX_MEMORY_ENTRIES`, `LLM_CACHE_NAMESPACE`. Explicit options win.
 */
export function optionsFromEnv(
  env: CacheEnvironment = process.env,
  overrides: CacheOptions = {},
): CacheOptions {
  const options: CacheOptions = {};
  const disabled =
    env.LLM_CACHE_DISABLED !== undefined && TRUE.has(env.LLM_CACHE_DISABLED.trim().toLowerCase());
  if (disabled) options.enabled = false;
  if (env.LLM_CACHE_NAMESPACE) options.namespace = env.LLM_CACHE_NAMESPACE;
  if (env.LLM_CACHE_MAX_MEMORY_ENTRIES) {
    const max = Number(env.LLM_CACHE_MAX_MEMORY_ENTRIES);
    if (!Number.isInteger(max) || max < 0) {
      throw cacheError(
        'E_INVALID_OPTION',
        'config',
        `LLM_CACHE_MAX_MEMORY_ENTRIES must be a non-negative integer, got "${env.LLM_CACHE_MAX_MEMORY_ENTRIES}"`,
      );
    }
    options.memory = max === 0 ? false : { maxEntries: max };
  }
  if (!disabled && overrides.store === undefined) {
    const url = env.LLM_CACHE_URL?.trim();
    const store = url
      ? storeFromUrl(url)
      : sqliteBackend({ path: join(env.LLM_CACHE_DIR ?? '.cache', 'llm-cache.db') });
    if (store) options.store = store;
  }
  // An override left undefined (`{ namespace: undefined }`) keeps what the environment says.
  const given = Object.fromEntries(Object.entries(overrides).filter(([, value]) => value !== undefined));
  return { ...options, ...given };
}

/** A cache configured from the environment (see `optionsFromEnv`). */
export function createCacheFromEnv(env: CacheEnvironment = process.env, overrides: CacheOptions = {}): Cache {
  return createCache(optionsFromEnv(env, overrides));
}

let defaultCache: Cache | undefined;

/** The process-wide cache, created from the environment on first use. */
export function getDefaultCache(): Cache {
  defaultCache ??= createCacheFromEnv();
  return defaultCache;
}

/** Replaces the process-wide cache (tests, or apps that configure it in code). */
export function setDefaultCache(cache: Cache | undefined): void {
  defaultCache = cache;
}
