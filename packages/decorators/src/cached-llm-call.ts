import { decoratorError, rejectGenerator } from './errors.ts';
import type { NormalizedOptions } from './registry.ts';
import { checkPrefix, claimDefaultScope, normalizeOptions, Registration, register } from './registry.ts';
import type {
  AsyncFunction,
  CachedFunctionOptions,
  CachedLlmCallDecorator,
  CachedMethodOptions,
} from './types.ts';

/**
 * Caches an async function: the function form of `@cachedLlmCall`. The returned function has the
 * same type; calls with the same arguments (canonicalised: key order, Dates, binary) are answered
 * from the cache, concurrent identical calls run `fn` once, and errors are never cached.
 *
 * @example
 * const summarize = cachedLlmCall('summary', async (text: string) => llm.summarize(text), { ttl: '1d' });
 */
export function cachedLlmCall<F extends AsyncFunction>(
  prefix: string,
  fn: F,
  options?: CachedFunctionOptions<Parameters<F>, Awaited<ReturnType<F>>>,
): F;
/**
 * Decorates an async method so that its answers are cached under `prefix` plus all of its
 * arguments (or what `key` selects). Works with standard decorators and `experimentalDecorators`.
 *
 * @example
 * class LessonService {
 *   @cachedLlmCall('intro_page', { ttl: '7d' })
 *   async introPage(subject: string, topic: string, grade: number): Promise<string> { … }
 * }
 */
export function cachedLlmCall<This = any, Args extends unknown[] = any[], R = any>(
  prefix: string,
  options?: CachedMethodOptions<This, Args, R>,
): CachedLlmCallDecorator<This, Args, R>;
export function cachedLlmCall(prefix: string, fnOrOptions?: unknown, maybeOptions?: unknown): unknown {
  if (typeof fnOrOptions === 'function') {
    return cacheFunction(prefix, fnOrOptions as AsyncFunction, maybeOptions);
  }
  const where = `@cachedLlmCall(${JSON.stringify(prefix)})`;
  checkPrefix(prefix, where);
  if (maybeOptions !== undefined) {
    throw decoratorError(
      'E_INVALID_OPTION',
      `${where}: the second argument must be a function or the options`,
      'use cachedLlmCall(prefix, fn, options) or @cachedLlmCall(prefix, options)',
    );
  }
  const options = normalizeOptions(fnOrOptions, where);
  return function cachedLlmCallDecorator(target: unknown, context: unknown, descriptor?: unknown): unknown {
    if (typeof context === 'object' && context !== null && 'kind' in context) {
      return decorateStandard(prefix, options, target, context as DecoratorContext, where);
    }
    if (typeof context === 'string' || typeof context === 'symbol') {
      return decorateLegacy(prefix, options, target, context, descriptor, where);
    }
    throw decoratorError(
      'E_INVALID_OPTION',
      `${where} was applied to something that is not a class method`,
      "put it on an async method: @cachedLlmCall('intro_page') async introPage(…) { … }",
    );
  };
}

interface DecoratorContext {
  kind: string;
  name: string | symbol;
  static?: boolean;
  private?: boolean;
  metadata?: unknown;
  addInitializer?: (initializer: (this: unknown) => void) => void;
}

/**
 * Standard decorators give each decorated class a metadata object (`context.metadata`, stored on
 * the class under `Symbol.metadata`), which is how a method wrapped by another decorator still finds
 * its declaring class. tsc's helpers create it only when `Symbol.metadata` exists, which Node 24 does
 * not define yet: defined here (as the symbol esbuild's and Babel's helpers fall back to), before any
 * class that uses this decorator is defined. An existing `Symbol.metadata` is left as it is.
 */
const SymbolWithMetadata = Symbol as SymbolConstructor & { metadata?: symbol };
SymbolWithMetadata.metadata ??= Symbol.for('Symbol.metadata');

function notAMethod(where: string, kind: string): Error {
  return decoratorError(
    'E_INVALID_OPTION',
    `${where} can only decorate methods, not a ${kind}`,
    'put it on an async method, or wrap a function with cachedLlmCall(prefix, fn, options)',
  );
}

/** Where streams are cached instead, named when a generator is refused. */
const STREAM_HINT =
  'or cache streams with the AI SDK (@x/ai-sdk-cache) or LangChain (@x/langchain-cache) adapters';

function makeWrapper(registration: Registration, original: Function): Function {
  const wrapper = async function cached(this: unknown, ...args: unknown[]): Promise<unknown> {
    return registration.call(this, args);
  };
  // Stack traces and `fn.name` keep naming the user's method.
  Object.defineProperty(wrapper, 'name', { value: original.name, configurable: true });
  Object.defineProperty(wrapper, 'length', { value: original.length, configurable: true });
  register(wrapper, registration);
  return wrapper;
}

function decorateStandard(
  prefix: string,
  options: NormalizedOptions,
  value: unknown,
  context: DecoratorContext,
  where: string,
): Function {
  if (context.kind !== 'method' || typeof value !== 'function') throw notAMethod(where, context.kind);
  rejectGenerator(value, where, `method ${String(context.name)}`, STREAM_HINT);
  if (context.private && options.scope === undefined) {
    throw decoratorError(
      'E_INVALID_OPTION',
      `${where}: the class that declares private method ${String(context.name)} cannot be found from outside it`,
      "give the method a fixed scope option, e.g. scope: 'LessonService.introPage'",
    );
  }
  const registration = new Registration({
    prefix,
    kind: 'method',
    member: context.name,
    isStatic: context.static === true,
    original: value as (...args: unknown[]) => unknown,
    options,
  });
  const metadata = context.metadata;
  const metadataSymbol = SymbolWithMetadata.metadata;
  if (typeof metadata === 'object' && metadata !== null && typeof metadataSymbol === 'symbol') {
    registration.metadata = { object: metadata, symbol: metadataSymbol };
    claimDefaultScope(metadata, registration);
  }
  const wrapper = makeWrapper(registration, value);
  // Standard method decorators never see their class; an initializer runs with it (static methods)
  // or with each new instance, which is when the declaring class can be found.
  if (options.scope === undefined || registration.isStatic) {
    context.addInitializer?.(function (this: unknown) {
      registration.resolveFrom(this);
    });
  }
  return wrapper;
}

function decorateLegacy(
  prefix: string,
  options: NormalizedOptions,
  target: unknown,
  member: string | symbol,
  descriptor: unknown,
  where: string,
): PropertyDescriptor {
  const method = (descriptor as PropertyDescriptor | undefined)?.value;
  if (typeof method !== 'function') {
    throw notAMethod(where, descriptor === undefined ? 'property' : 'getter or setter');
  }
  rejectGenerator(method, where, `method ${String(member)}`, STREAM_HINT);
  const isStatic = typeof target === 'function';
  const registration = new Registration({
    prefix,
    kind: 'method',
    member,
    isStatic,
    original: method as (...args: unknown[]) => unknown,
    options,
  });
  registration.declaring = isStatic
    ? (target as Function)
    : (target as { constructor: Function } | null)?.constructor;
  if (typeof registration.declaring === 'function') {
    claimDefaultScope(registration.declaring, registration, registration.declaring.name);
  }
  const next = descriptor as PropertyDescriptor;
  next.value = makeWrapper(registration, method);
  return next;
}

function cacheFunction(prefix: string, fn: AsyncFunction, options: unknown): AsyncFunction {
  const where = `cachedLlmCall(${JSON.stringify(prefix)}, ${fn.name || 'fn'})`;
  checkPrefix(prefix, where);
  rejectGenerator(fn, where, 'function', STREAM_HINT);
  const registration = new Registration({
    prefix,
    kind: 'function',
    member: fn.name || prefix,
    isStatic: false,
    original: fn,
    options: normalizeOptions(options, where),
  });
  return makeWrapper(registration, fn) as AsyncFunction;
}
