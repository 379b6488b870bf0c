import type { CachePolicy, CacheView, Duration, TierName } from '@x/cache-core';
import { getDefaultCache, parseDuration, validateName } from '@x/cache-core';
import { langchainCacheError } from './errors.ts';

/** Options every adapter in this package takes. */
export interface SharedCacheOptions {
  /**
   * The cache entries go to: `createCache(...)` with any store and levels, or a view of one
   * (`cache.withNamespace('tenant-a')`).
   * @default getDefaultCache() (configured by the LLM_CACHE_* environment variables)
   */
  cache?: CacheView | undefined;
  /**
   * Tier of the cache the entries live in.
   * @default 'responses' for model calls, 'embeddings' for embeddings
   */
  tier?: TierName | undefined;
  /** Namespace (application, tenant, scope); namespaces never see each other's entries. @default the cache's namespace */
  namespace?: string | undefined;
  /** Time to live of new entries: ms or `'30s'`, `'12h'`, `'7d'`. @default the tier's TTL (responses 7 days, embeddings 30 days) */
  ttl?: Duration | undefined;
  /** Tags on every entry, for `invalidateTags([...])`. @default [] */
  tags?: readonly string[] | undefined;
  /**
   * More parameter names to treat as credentials and keep out of keys (compared without case,
   * `_` or `-`). Names ending in apiKey, secret, token, password, credentials, authorization or
   * headers are always dropped.
   * @default []
   */
  secretKeys?: readonly string[] | undefined;
  /**
   * Called when the cache could not read or write an entry (the model call goes ahead regardless),
   * including a write it refused (a namespace quota with `onExceed: 'reject'`). Store failures are
   * also counted in the cache's stats and emitted as `error` events.
   * @default ignore
   */
  onError?: ((error: unknown) => void) | undefined;
}

/** How one option is checked when an adapter is created, and the fix its error names. */
export interface OptionCheck {
  valid: (value: unknown) => boolean;
  /** What the option must be: completes "<option> must be …". */
  expected: string;
  /** An option written the right way: completes "— pass …". Gets the wrong value, to reuse it. */
  fix: string | ((value: unknown) => string);
}

const isString = (value: unknown): boolean => typeof value === 'string';
const isStringArray = (value: unknown): boolean => Array.isArray(value) && value.every(isString);
export const isFunction = (value: unknown): boolean => typeof value === 'function';

export function isCacheView(value: unknown): value is CacheView {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as CacheView).tier === 'function' &&
    typeof (value as CacheView).getOrCompute === 'function'
  );
}

/** A list option given as one string is the likely mistake: the fix shows that string in a list. */
function listFix(option: string, example: string): (value: unknown) => string {
  return (value) =>
    typeof value === 'string'
      ? `${option}: [${JSON.stringify(value)}] (an array, even for one)`
      : `${option}: [${JSON.stringify(example)}]`;
}

export const SHARED_OPTIONS: Readonly<Record<keyof SharedCacheOptions, OptionCheck>> = {
  cache: {
    valid: isCacheView,
    expected: 'a cache (createCache()) or a view of one',
    fix: "cache: createCache() or cache: cache.withNamespace('tenant-a')",
  },
  tier: { valid: isString, expected: 'a tier name', fix: "tier: 'responses'" },
  namespace: { valid: isString, expected: 'a namespace name', fix: "namespace: 'tenant-a'" },
  ttl: {
    valid: (value) => typeof value === 'number' || typeof value === 'string',
    expected: 'a number of ms or a duration string',
    fix: "ttl: '7d' (or '30s', '12h', a number of ms)",
  },
  tags: { valid: isStringArray, expected: 'an array of tag names', fix: listFix('tags', 'geography') },
  secretKeys: {
    valid: isStringArray,
    expected: 'an array of parameter names',
    fix: listFix('secretKeys', 'tenant_pin'),
  },
  onError: { valid: isFunction, expected: 'a function', fix: 'onError: (error) => console.warn(error)' },
};

/** The `name` option of every adapter: the key name its entries are stored under. */
export const NAME_OPTION: Readonly<Record<'name', OptionCheck>> = {
  name: { valid: isString, expected: 'a key name', fix: "name: 'my-app.chat'" },
};

/** The `shouldCache` option of the model adapters. */
export const ADMISSION_OPTION: Readonly<Record<'shouldCache', OptionCheck>> = {
  shouldCache: {
    valid: isFunction,
    expected: 'a function of the candidate response',
    fix: "shouldCache: (candidate) => defaultShouldCache(candidate) || candidate.finishReason === 'length'",
  },
};

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'function') return 'a function';
  return String(value);
}

/**
 * Checks the types of an adapter's options when it is created: a wrong type (`tags: 'geo'`)
 * would otherwise be accepted and fail every call later, or throw a bare TypeError. Returns the
 * options to use, without those set to `null`: JavaScript callers and configuration files write
 * `null` for "not set", so it means the default for every option, and the adapters only ever see
 * `undefined` for an option that is not given.
 */
export function checkOptions<T extends object>(
  where: string,
  options: T | undefined,
  checks: Readonly<Record<string, OptionCheck>>,
): T {
  if (options === undefined) return {} as T;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw langchainCacheError(
      'E_INVALID_OPTION',
      `${where}: options must be an object, got ${show(options)}`,
      "pass e.g. { cache, ttl: '7d' }",
    );
  }
  if (isCacheView(options)) {
    throw langchainCacheError(
      'E_INVALID_OPTION',
      `${where} got a cache as its options`,
      'pass it as { cache }',
    );
  }
  const given = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== null));
  for (const [option, check] of Object.entries(checks)) {
    const value = given[option];
    if (value === undefined || check.valid(value)) continue;
    throw langchainCacheError(
      'E_INVALID_OPTION',
      `${where}: ${option} must be ${check.expected}, got ${show(value)}`,
      `pass ${typeof check.fix === 'function' ? check.fix(value) : check.fix}`,
    );
  }
  return given as T;
}

/** The view an adapter reads and writes, with its options validated up front. */
export function resolveView(options: SharedCacheOptions, defaultTier: TierName): CacheView {
  const base = options.cache ?? getDefaultCache();
  let view = base.tier(options.tier ?? defaultTier);
  if (options.namespace !== undefined)
    view = view.withNamespace(validateName(options.namespace, 'namespace'));
  parseDuration(options.ttl);
  for (const tag of options.tags ?? []) validateName(tag, 'tag');
  return view;
}

export function basePolicy<T>(options: SharedCacheOptions): CachePolicy<T> {
  // A value the core refuses to store (quota, unserialisable), inside getOrCompute or through
  // `view.set` given this hook, is counted as a dropped write and reported here, not thrown.
  const policy: CachePolicy<T> = { onStoreError: (error) => reportError(options, error) };
  if (options.ttl !== undefined) policy.ttl = options.ttl;
  if (options.tags !== undefined && options.tags.length > 0) policy.tags = options.tags;
  return policy;
}

export function reportError(options: SharedCacheOptions, error: unknown): void {
  try {
    options.onError?.(error);
  } catch {
    // a failing error listener must not break the model call either
  }
}
