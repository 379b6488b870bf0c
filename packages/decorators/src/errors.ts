import type { CacheErrorCode } from '@x/cache-core';
import { CacheError } from '@x/cache-core';

/**
 * Errors of this package are core `CacheError`s (same `code`s, recognised by `CacheError.isInstance`)
 * whose message names this package, what went wrong and the fix.
 */
export function decoratorError(
  code: CacheErrorCode,
  what: string,
  fix: string,
  options?: { cause?: unknown },
): CacheError {
  return new CacheError(code, `[@x/cache-decorators] ${what} — ${fix}`, options);
}

const GeneratorFunction = Object.getPrototypeOf(function* () {}).constructor as Function;
const AsyncGeneratorFunction = Object.getPrototypeOf(async function* () {}).constructor as Function;

/**
 * A generator's values arrive one by one, while a cached call (or a ledger call) returns one
 * Promise: wrapping it would hand `for await` a Promise. Refused when decorated (or wrapped)
 * instead; `more` adds a decorator-specific alternative to the fix.
 */
export function rejectGenerator(fn: Function, where: string, what: string, more?: string): void {
  const async = fn instanceof AsyncGeneratorFunction;
  if (!async && !(fn instanceof GeneratorFunction)) return;
  throw decoratorError(
    'E_INVALID_OPTION',
    `${where} cannot cache ${async ? 'async generator' : 'generator'} ${what}: a cached call returns one Promise, not a stream of values`,
    `cache a method that returns the collected result (e.g. the full text, or an array of the chunks)${more ? `, ${more}` : ''}`,
  );
}
