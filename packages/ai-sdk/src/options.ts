import type { SharedV4ProviderOptions } from '@ai-sdk/provider';
import type { CacheView, Duration } from '@x/cache-core';
import { CacheError, getDefaultCache, parseDuration, validateName } from '@x/cache-core';

/** The `providerOptions` entry read for per-call control, and the `providerMetadata` entry written on results. */
export const DEFAULT_OPTIONS_KEY = 'xCache';

/**
 * Key names of the entries this package writes. `invalidate(name)` on the view of their tier and
 * namespace drops all of one kind: `cache.invalidate(GENERATE_KEY_NAME)` (responses tier),
 * `cache.tier('embeddings').invalidate(EMBED_KEY_NAME)`, `.withNamespace(ns)` for another namespace.
 */
export const GENERATE_KEY_NAME = 'ai-sdk.generate';
export const STREAM_KEY_NAME = 'ai-sdk.stream';
export const EMBED_KEY_NAME = 'ai-sdk.embed';

/**
 * Per-call control, passed as `providerOptions: { xCache: { ... } }` (or under your
 * `providerOptionsKey`). The entry is removed before the key is computed and before the model
 * sees the call, so it never changes the key and never reaches the provider.
 */
export interface CacheCallOptions {
  /** TTL of the entry this call writes; overrides the middleware's `ttl`. */
  ttl?: Duration;
  /** Tags added to the entry this call writes (on top of the middleware's `tags`). */
  tags?: string[];
  /** Namespace (tenant, project) for this call's read and write; overrides the middleware's `namespace`. */
  namespace?: string;
  /** Skip the read: always call the model (the fresh result is still stored unless `noStore`). */
  noCache?: boolean;
  /** Skip the write: a hit is still served, a miss is not stored. */
  noStore?: boolean;
}

/** Parsed per-call options plus the call's provider options without our entry. */
export interface SplitCall<P> {
  own: CacheCallOptions;
  /** The call's parameters exactly as the model should see them. */
  params: P;
}

const CALL_OPTION_KEYS = new Set(['ttl', 'tags', 'namespace', 'noCache', 'noStore']);

export function invalidOption(message: string): CacheError {
  return new CacheError('E_INVALID_OPTION', `[@x/ai-sdk-cache] ${message}`);
}

/**
 * Takes our entry out of `providerOptions`. Parameters without our entry are returned as they
 * are (same object), so a call that does not use per-call options reaches the model untouched.
 */
export function splitCall<P extends { providerOptions?: SharedV4ProviderOptions | undefined }>(
  params: P,
  optionsKey: string,
): SplitCall<P> {
  const providerOptions = params.providerOptions;
  if (!providerOptions || !Object.hasOwn(providerOptions, optionsKey)) return { own: {}, params };
  const { [optionsKey]: raw, ...rest } = providerOptions;
  const own = parseCallOptions(raw, optionsKey);
  const { providerOptions: _ours, ...others } = params;
  const stripped = (Object.keys(rest).length > 0 ? { ...others, providerOptions: rest } : others) as P;
  return { own, params: stripped };
}

function parseCallOptions(raw: unknown, optionsKey: string): CacheCallOptions {
  const where = `providerOptions.${optionsKey}`;
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw invalidOption(
      `${where} must be an object — pass e.g. { ${optionsKey}: { ttl: '1h', noStore: true } }`,
    );
  }
  const input = raw as Record<string, unknown>;
  for (const name of Object.keys(input)) {
    if (!CALL_OPTION_KEYS.has(name)) {
      throw invalidOption(
        `${where}.${name} is not an option — use one of ${[...CALL_OPTION_KEYS].join(', ')}`,
      );
    }
  }
  const out: CacheCallOptions = {};
  if (input.ttl !== undefined) {
    if (typeof input.ttl !== 'number' && typeof input.ttl !== 'string') {
      throw invalidOption(`${where}.ttl must be a number of ms or a duration string such as '1h'`);
    }
    parseDuration(input.ttl as Duration, `${where}.ttl`);
    out.ttl = input.ttl as Duration;
  }
  if (input.tags !== undefined) {
    if (!Array.isArray(input.tags) || input.tags.some((tag) => typeof tag !== 'string')) {
      throw invalidOption(`${where}.tags must be an array of strings — e.g. ['docs', 'user-42']`);
    }
    for (const tag of input.tags as string[]) validateName(tag, 'tag');
    out.tags = input.tags as string[];
  }
  if (input.namespace !== undefined) {
    if (typeof input.namespace !== 'string') {
      throw invalidOption(`${where}.namespace must be a string — e.g. 'tenant-a'`);
    }
    out.namespace = validateName(input.namespace, 'namespace');
  }
  for (const flag of ['noCache', 'noStore'] as const) {
    if (input[flag] !== undefined) {
      if (typeof input[flag] !== 'boolean') throw invalidOption(`${where}.${flag} must be true or false`);
      out[flag] = input[flag];
    }
  }
  return out;
}

/** Options shared by the language-model and the embedding middleware. */
export interface CommonCacheOptions {
  /**
   * The cache to use; any view works (`cache.withNamespace('tenant-a')`), the tier is chosen by
   * the middleware.
   * @default getDefaultCache() — configured from the LLM_CACHE_* environment variables
   */
  cache?: CacheView;
  /** Namespace for every call; a call's `providerOptions.xCache.namespace` overrides it. @default the cache's namespace */
  namespace?: string;
  /** TTL of stored entries; a call's `ttl` overrides it. @default the tier's TTL (responses 7 days, embeddings 30 days) */
  ttl?: Duration;
  /** Tags added to every stored entry, for `invalidateTags`. @default [] */
  tags?: readonly string[];
  /**
   * Name of the `providerOptions` entry read for per-call control and of the `providerMetadata`
   * entry written on results. Pick a name no provider uses.
   * @default 'xCache'
   */
  providerOptionsKey?: string;
}

/** Resolves the view to use for one call (tier, then namespace: the call's, the middleware's, the cache's). */
export function resolveView(
  options: CommonCacheOptions,
  tier: string,
  own: CacheCallOptions,
  cacheRef: { current?: CacheView | undefined },
): CacheView {
  cacheRef.current ??= options.cache ?? getDefaultCache();
  const base = cacheRef.current.tier(tier);
  const namespace = own.namespace ?? options.namespace;
  return namespace === undefined ? base : base.withNamespace(namespace);
}

export function validateCommon(options: CommonCacheOptions): string {
  const key = options.providerOptionsKey ?? DEFAULT_OPTIONS_KEY;
  if (typeof key !== 'string' || key.length === 0) {
    throw invalidOption(`providerOptionsKey must be a non-empty string — e.g. '${DEFAULT_OPTIONS_KEY}'`);
  }
  if (options.ttl !== undefined) parseDuration(options.ttl, 'ttl');
  if (options.namespace !== undefined) validateName(options.namespace, 'namespace');
  for (const tag of options.tags ?? []) validateName(tag, 'tag');
  return key;
}

export function mergeTags(
  base: readonly string[] | undefined,
  extra: readonly string[] | undefined,
): string[] | undefined {
  if (!base?.length) return extra?.length ? [...extra] : undefined;
  if (!extra?.length) return [...base];
  return [...new Set([...base, ...extra])];
}
