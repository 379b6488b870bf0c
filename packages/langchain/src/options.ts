import type { CachePolicy, CacheView, Duration, TierName } from '@x/cache-core';
import { getDefaultCache, parseDuration, validateName } from '@x/cache-core';

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
   * Called when the cache could not read or write an entry (the model call goes ahead regardless);
   * for the wrapper, when a response could not be stored. Store failures are also counted in the
   * cache's stats and emitted as `error` events.
   * @default ignore
   */
  onError?: ((error: unknown) => void) | undefined;
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
  const policy: CachePolicy<T> = {};
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
