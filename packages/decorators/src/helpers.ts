import type { CacheView } from '@x/cache-core';
import { canonicalize, getDefaultCache } from '@x/cache-core';
import { decoratorError } from './errors.ts';
import type { Registration } from './registry.ts';
import { argsKey, checkPrefix, registrationOf, registrationsFor } from './registry.ts';
import type {
  AsyncFunction,
  AsyncMethodName,
  InvalidatePrefixOptions,
  MethodArgs,
  WarmOptions,
  WarmReport,
} from './types.ts';

interface ResolvedCall {
  registration: Registration;
  self: unknown;
  rest: unknown[];
}

const FORMS =
  "pass service.introPage (a method decorated with @cachedLlmCall), a function made by cachedLlmCall(prefix, fn), or the instance and the method name: (service, 'introPage'); bound functions are not recognised";

/** Finds the cached method or function a helper was given: `fn, …` or `instance, 'method', …`. */
function resolveTarget(helper: string, target: unknown, rest: unknown[]): ResolvedCall {
  const direct = registrationOf(target);
  if (direct) return { registration: direct, self: direct.defaultSelf(), rest };
  const member = rest[0];
  if (
    (typeof target === 'object' || typeof target === 'function') &&
    target !== null &&
    (typeof member === 'string' || typeof member === 'symbol')
  ) {
    const method = (target as Record<string | symbol, unknown>)[member];
    const registration = registrationOf(method);
    if (registration) {
      registration.resolveFrom(target);
      return { registration, self: target, rest: rest.slice(1) };
    }
    if (typeof method === 'function') {
      throw decoratorError(
        'E_INVALID_OPTION',
        `${helper}: ${String(member)} is not a method decorated with @cachedLlmCall`,
        FORMS,
      );
    }
  }
  throw decoratorError(
    'E_INVALID_OPTION',
    `${helper}: the first argument is not a cached method or function`,
    FORMS,
  );
}

/**
 * Removes the cached answer of one call, so the next identical call computes again:
 * `invalidateCached(service.introPage, 'math', 'fractions', 5)`. When the `key` or `cache` option
 * reads the instance, pass the instance instead: `invalidateCached(service, 'introPage', 'math', …)`.
 * Resolves to whether an entry was removed.
 */
export function invalidateCached<F extends AsyncFunction>(fn: F, ...args: Parameters<F>): Promise<boolean>;
export function invalidateCached<S extends object, K extends AsyncMethodName<S>>(
  self: S,
  method: K,
  ...args: MethodArgs<S, K>
): Promise<boolean>;
export async function invalidateCached(target: unknown, ...rest: unknown[]): Promise<boolean> {
  const { registration, self, rest: args } = resolveTarget('invalidateCached', target, rest);
  const view = registration.view(self);
  const input = registration.keyInput(self, args);
  return (await view.invalidate(input.name, input.request)) > 0;
}

/**
 * Removes every cached answer under a prefix — all arguments, every class and function that uses
 * it: `invalidateCachedPrefix('intro_page')` or `invalidateCachedPrefix(service.introPage)`.
 * Resolves to the number of entries removed.
 */
export async function invalidateCachedPrefix(
  target: string | AsyncFunction,
  options: InvalidatePrefixOptions = {},
): Promise<number> {
  let prefix: string;
  let registrations: Registration[];
  if (typeof target === 'string') {
    prefix = checkPrefix(target, 'invalidateCachedPrefix');
    registrations = registrationsFor(prefix);
  } else {
    const registration = registrationOf(target);
    if (!registration) {
      throw decoratorError(
        'E_INVALID_OPTION',
        'invalidateCachedPrefix: the argument is not a prefix or a cached method or function',
        "pass the prefix ('intro_page'), service.introPage or a function made by cachedLlmCall(prefix, fn)",
      );
    }
    prefix = registration.prefix;
    registrations = [registration];
  }
  const views = new Set<CacheView>();
  for (const registration of registrations) {
    let view: CacheView;
    try {
      view = registration.view(registration.defaultSelf(), options.cache);
    } catch (error) {
      throw decoratorError(
        'E_INVALID_OPTION',
        `invalidateCachedPrefix: ${registration.label} takes its cache from its instance`,
        `pass that cache, and its tier if it is not responses: invalidateCachedPrefix('${prefix}', { cache: service.cache, tier: 'templates' })`,
        { cause: error },
      );
    }
    // With the caller's cache, its tier names where the entries are (a registration's own tier
    // wins); without, the registration's own cache (a tier view too) is where they are.
    if (
      options.cache !== undefined &&
      options.tier !== undefined &&
      registration.options.tier === undefined
    ) {
      view = view.tier(options.tier);
    }
    views.add(view);
  }
  if (views.size === 0) {
    const base = options.cache ?? getDefaultCache();
    views.add(options.tier === undefined ? base : base.tier(options.tier));
  }
  let removed = 0;
  for (const view of views) removed += await view.invalidate(prefix);
  return removed;
}

/**
 * Pre-fills the cache with common calls and reports what it did. Calls already cached are not
 * recomputed (unless `refresh`); duplicates run once; a failing call is reported, not thrown.
 *
 * @example
 * await warm(service, 'introPage', [['math', 'fractions', 5], ['math', 'decimals', 5]], { concurrency: 2 });
 * await warm(summarize, [['first text'], ['second text']]);  // a cachedLlmCall(prefix, fn) function
 */
export function warm<F extends AsyncFunction>(
  fn: F,
  argsList: Iterable<Parameters<F>>,
  options?: WarmOptions,
): Promise<WarmReport<Parameters<F>>>;
export function warm<S extends object, K extends AsyncMethodName<S>>(
  self: S,
  method: K,
  argsList: Iterable<MethodArgs<S, K>>,
  options?: WarmOptions,
): Promise<WarmReport<MethodArgs<S, K>>>;
export function warm(
  prefix: string,
  argsList: Iterable<unknown[]>,
  options?: WarmOptions,
): Promise<WarmReport<unknown[]>>;
export async function warm(target: unknown, ...rest: unknown[]): Promise<WarmReport<unknown[]>> {
  const {
    registration,
    self,
    rest: tail,
  } = typeof target === 'string' ? byPrefix(target, rest) : resolveTarget('warm', target, rest);
  if (registration.needsInstance && self === registration.defaultSelf()) {
    throw decoratorError(
      'E_INVALID_OPTION',
      `warm: ${registration.label} is an instance method, and its body needs the instance`,
      `pass it: warm(service, '${registration.memberName}', argsList, options)`,
    );
  }
  const [argsList, options = {}] = tail as [Iterable<unknown[]>, WarmOptions | undefined];
  const concurrency = options.concurrency ?? 4;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw decoratorError(
      'E_INVALID_OPTION',
      `warm: concurrency must be a positive integer, got ${String(concurrency)}`,
      'pass { concurrency: 4 }',
    );
  }
  if (argsList === null || typeof argsList !== 'object' || !(Symbol.iterator in argsList)) {
    throw decoratorError(
      'E_INVALID_OPTION',
      'warm: the argument lists must be an array of argument arrays',
      "pass [['math', 'fractions', 5], ['math', 'decimals', 5]]",
    );
  }
  const view = registration.view(self);
  const calls: unknown[][] = [];
  for (const args of argsList) {
    if (!Array.isArray(args)) {
      throw decoratorError(
        'E_INVALID_OPTION',
        `warm: every entry must be the array of one call's arguments, got ${JSON.stringify(args)}`,
        "wrap single arguments too: [['fractions'], ['decimals']]",
      );
    }
    calls.push(args);
  }
  type Outcome = 'filled' | 'alreadyCached' | 'skipped' | { error: unknown };
  const outcomes: (Outcome | undefined)[] = new Array(calls.length).fill(undefined);
  const first = new Map<string, number>();
  /** Argument lists that give the key of an earlier one, by the index of that one. */
  const duplicates = new Map<number, number>();
  const queue: number[] = [];
  calls.forEach((args, index) => {
    let storageKey: string;
    try {
      storageKey = view.key(registration.keyInput(self, args));
    } catch (error) {
      outcomes[index] = { error };
      return;
    }
    const earlier = first.get(storageKey);
    if (earlier !== undefined) {
      // The same list again is one call; a different list with the same key is reported too.
      if (!sameArgs(calls[earlier]!, args)) duplicates.set(index, earlier);
      return;
    }
    first.set(storageKey, index);
    queue.push(index);
  });
  const storesNothing = registration.options.ttlMs === 0;
  const worker = async (): Promise<void> => {
    for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
      const args = calls[next]!;
      try {
        const refresh = options.refresh === true;
        let { result, admitted } = await registration.run(self, args, view, { refresh, track: true });
        if (refresh && result.hit && !result.stale) {
          // A store with cross-process locks may answer a forced refresh with the entry it finds
          // after taking the lock; drop that entry and compute again so refresh means recompute.
          await view.deleteStorageKey(result.key);
          ({ result, admitted } = await registration.run(self, args, view, { track: true }));
        }
        outcomes[next] =
          result.hit || result.coalesced
            ? 'alreadyCached'
            : admitted && !storesNothing
              ? 'filled'
              : 'skipped';
      } catch (error) {
        outcomes[next] = { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, worker));
  // A list with the key of an earlier one (same key option, trailing undefined) shares its entry:
  // cached once the earlier one filled it, and failed or skipped with it otherwise.
  for (const [index, earlier] of duplicates) {
    const outcome = outcomes[earlier];
    outcomes[index] = outcome === 'filled' ? 'alreadyCached' : outcome;
  }
  const report: WarmReport<unknown[]> = { filled: [], alreadyCached: [], skipped: [], failed: [] };
  outcomes.forEach((outcome, index) => {
    const args = calls[index]!;
    if (outcome === undefined) return;
    if (typeof outcome === 'object') report.failed.push({ args, error: outcome.error });
    else report[outcome].push(args);
  });
  return report;
}

/** The same call: equal arguments, where a trailing `undefined` is an argument not passed. */
function sameArgs(a: readonly unknown[], b: readonly unknown[]): boolean {
  try {
    return canonicalize(argsKey(a)) === canonicalize(argsKey(b));
  } catch {
    return false;
  }
}

/** `warm('intro_page', …)`: the one function (or static method) registered under the prefix. */
function byPrefix(prefix: string, rest: unknown[]): ResolvedCall {
  checkPrefix(prefix, 'warm');
  const registrations = registrationsFor(prefix);
  const runnable = registrations.filter((registration) => !registration.needsInstance);
  // The same declaration evaluated again (hot reload, a re-imported module) registers again: the
  // newest one is the live code. Different declarations under one prefix are ambiguous.
  // (Anonymous functions share a label: their code and scope tell them apart.)
  const first = runnable[0];
  const scopeOf = (registration: Registration): string | undefined => {
    try {
      return registration.scope();
    } catch {
      return registration.label;
    }
  };
  // A named function evaluated again (a hot reload, maybe with an edited body) is the same
  // declaration; anonymous ones all share the prefix as their label, so their code tells them apart.
  const sameDeclaration = runnable.every(
    (registration) =>
      registration.label === first!.label &&
      scopeOf(registration) === scopeOf(first!) &&
      (registration.original.name !== '' || String(registration.original) === String(first!.original)),
  );
  if (runnable.length === 1 || (runnable.length > 1 && sameDeclaration)) {
    const registration = runnable[runnable.length - 1]!;
    return { registration, self: registration.defaultSelf(), rest };
  }
  if (runnable.length > 1) {
    throw decoratorError(
      'E_INVALID_OPTION',
      `warm: ${runnable.length} functions use the prefix "${prefix}" (${runnable.map((r) => r.label).join(', ')})`,
      'pass the function itself: warm(fn, argsList)',
    );
  }
  if (registrations.length > 0) {
    const first = registrations[0]!;
    throw decoratorError(
      'E_INVALID_OPTION',
      `warm: "${prefix}" belongs to instance method ${registrations.map((r) => r.label).join(', ')}, whose body needs the instance`,
      `pass it: warm(service, '${first.memberName}', argsList)`,
    );
  }
  throw decoratorError(
    'E_INVALID_OPTION',
    `warm: no cached function or method uses the prefix "${prefix}"`,
    'import the module that declares it first, or pass the function or (instance, method name)',
  );
}
