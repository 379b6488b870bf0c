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
