import type { CacheErrorCode } from '@x/cache-core';
import { CacheError } from '@x/cache-core';

/**
 * Errors of this package are core `CacheError`s (stable `code`, recognised by
 * `CacheError.isInstance` across duplicate installs) whose message names the package and the fix.
 */
export function langchainCacheError(code: CacheErrorCode, what: string, fix: string): CacheError {
  return new CacheError(code, `[@x/langchain-cache] ${what} — ${fix}`);
}
