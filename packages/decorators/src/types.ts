import type { CacheView, Duration, TierName, Usage } from '@x/cache-core';

/** Any function that returns a promise: what `@cachedLlmCall` and its function form accept. */
export type AsyncFunction = (...args: any[]) => Promise<any>;

/** Options shared by the decorator and the function form. */
export interface CachedCallOptions<Args extends unknown[], R> {
  /**
   * How long an answer stays fresh: `'7d'`, `'12h'`, `'30m'` or milliseconds. `0` stores nothing.
   * @default the tier's TTL (7 days for `responses`)
   */
  ttl?: Duration;
  /**
   * TTL in hours, as the source documents write it (`ttlHours: 24`). Pass `ttl` or `ttlHours`, not both.
   * @default undefined (see `ttl`)
   */
  ttlHours?: number;
  /**
   * Tags for group invalidation with `cache.invalidateTags([...])`: a list, or a function of the
   * call's arguments (`(subject) => [subject]`).
   * @default []
   */
  tags?: readonly string[] | ((...args: Args) => readonly string[]);
  /**
   * Tier of the cache to use (`responses`, `tools`, `embeddings`, `templates`, `http` or your own).
   * @default the tier of the `cache` view ('responses' for a `Cache` and for the default cache)
   */
  tier?: TierName;
  /**
   * Admission: return `false` to keep an answer out of the cache (a refusal, an empty answer).
   * Errors are never cached.
   * @default value !== undefined
   */
  shouldCache?: (value: R) => boolean;
  /**
   * The usage a hit saves, counted in the cache's statistics: a value, a function of the answer,
   * or `'estimate'` to count the tokens of the arguments and the answer.
   * @default undefined (hits are counted, savings are not)
   */
  usage?: Usage | ((value: R) => Usage | undefined) | 'estimate';
  /** Model id used to price an estimated usage. @default undefined */
  model?: string;
  /**
   * Keep an entry this long past its TTL and serve it when the recompute throws (a provider outage).
   * @default 0
   */
  grace?: Duration;
  /** Within `grace`, answer at once with the stale value and refresh in the background. @default false */
  staleWhileRevalidate?: boolean;
}

/** Options of `@cachedLlmCall(prefix, options)` on a method. */
export interface CachedMethodOptions<This = any, Args extends unknown[] = any[], R = any>
  extends CachedCallOptions<Args, R> {
  /**
   * The cache to use: a `Cache`, a tier or namespace view, or a function of the instance
   * (`(self) => self.cache`) for services that receive their cache in the constructor.
   * @default getDefaultCache(), looked up at call time so that LLM_CACHE_* settings apply
   */
  cache?: CacheView | ((self: This) => CacheView);
  /**
   * What identifies a call, instead of all of its arguments: `(self, subject, topic) => ({ tenant:
   * self.tenant, subject, topic })`. The instance is never part of the key unless selected here.
   * @default all arguments (trailing `undefined` ones dropped)
   */
  key?: (self: This, ...args: Args) => unknown;
  /**
   * What keeps this method's entries apart from other methods that use the same prefix. By default
   * the declaring class and method name (`'LessonService.introPage'`), so two classes never share
   * entries by accident. Pass a fixed string to keep entries across renames and minification, or
   * `false` to share entries with every method and function that uses this prefix with `scope: false`
   * (or no scope, for functions).
   * @default '<ClassName>.<methodName>'
   */
  scope?: string | false;
}

/** Options of the function form, `cachedLlmCall(prefix, fn, options)`. */
export interface CachedFunctionOptions<Args extends unknown[] = any[], R = any>
  extends CachedCallOptions<Args, R> {
  /**
   * The cache to use: a `Cache`, a tier or namespace view, or a function returning one.
   * @default getDefaultCache(), looked up at call time so that LLM_CACHE_* settings apply
   */
  cache?: CacheView | (() => CacheView);
  /**
   * What identifies a call, instead of all of its arguments: `(text, options) => text.trim()`.
   * @default all arguments (trailing `undefined` ones dropped)
   */
  key?: (...args: Args) => unknown;
  /**
   * Keeps this function's entries apart from other functions and methods using the same prefix.
   * @default none: the prefix and the arguments are the key
   */
  scope?: string;
}

/**
 * What `@cachedLlmCall(prefix, options)` returns: a decorator for async methods under standard
 * (TC39) decorators and under `experimentalDecorators`. The method keeps its type; a method that
 * does not return a promise, or does not match the `key` / `shouldCache` types, is a type error.
 */
export interface CachedLlmCallDecorator<This, Args extends unknown[], R> {
  /** Standard decorators (TypeScript 5+ default). */
  <C extends This, M extends (this: C, ...args: [...Args, ...any[]]) => Promise<R>>(
    value: M,
    context: ClassMethodDecoratorContext<C, M>,
  ): M;
  /** `experimentalDecorators: true`. */
  <C extends This, M extends (...args: [...Args, ...any[]]) => Promise<R>>(
    target: C,
    propertyKey: string | symbol,
    descriptor: TypedPropertyDescriptor<M>,
  ): TypedPropertyDescriptor<M>;
}

/** Names of the members of `S` that are async functions (candidates for cached methods). */
export type AsyncMethodName<S> = {
  [K in keyof S]-?: S[K] extends AsyncFunction ? K : never;
}[keyof S];

/** Parameters of the async method `K` of `S`. */
export type MethodArgs<S, K extends keyof S> = S[K] extends AsyncFunction ? Parameters<S[K]> : never;

/** Result of the async method `K` of `S`. */
export type MethodResult<S, K extends keyof S> = S[K] extends AsyncFunction
  ? Awaited<ReturnType<S[K]>>
  : never;

export interface WarmOptions {
  /** How many calls run at the same time. @default 4 */
  concurrency?: number;
  /** Recompute and store even the calls that are already cached (after a prompt change). @default false */
  refresh?: boolean;
}

/**
 * What `warm` did, one list per outcome; every distinct argument list appears in exactly one (a
 * list whose key repeats another one's shares its entry: `alreadyCached` once that one filled it).
 */
export interface WarmReport<Args extends unknown[] = unknown[]> {
  /** Computed and stored by this warm-up. */
  filled: Args[];
  /** Already cached (or being computed by another caller at the time), so nothing was computed. */
  alreadyCached: Args[];
  /** Computed, but `shouldCache` (or an `undefined` answer, or `ttl: 0`) kept it out of the cache. */
  skipped: Args[];
  /** The call threw; nothing was stored for it. */
  failed: Array<{ args: Args; error: unknown }>;
}

/** Where prefix invalidation should look when the cache cannot be found from a registration. */
export interface InvalidatePrefixOptions {
  /**
   * The cache to clear the prefix in. Needed for methods whose `cache` option reads the instance.
   * @default the cache of every function and method registered with the prefix, else getDefaultCache()
   */
  cache?: CacheView;
  /**
   * Tier of `cache` (or of the default cache) to clear; a registered method's own `tier` wins.
   * @default the tier of the cache view
   */
  tier?: TierName;
}
