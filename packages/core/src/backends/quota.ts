import { type CacheError, cacheError } from '../errors.ts';

/** Size of the entries under a key prefix. */
export interface PrefixStats {
  /** Entries under the prefix, including expired ones no read or prune has removed yet. */
  entries: number;
  /** Sum of their value bytes (the same unit as `BackendStats.bytes`). */
  bytes: number;
}

/** Bounds for `trim` (the contract's `limits`); an omitted bound is not enforced. */
export interface TrimBounds {
  /** Keep at most this many entries under the prefix. @default Infinity */
  maxEntries?: number | undefined;
  /** Keep at most this many value bytes under the prefix. @default Infinity */
  maxBytes?: number | undefined;
}

/** Validates a size bound: a positive integer, or `Infinity` when `allowInfinity` (meaning "no bound"). */
export function checkLimit(scope: string, option: string, value: number, allowInfinity: boolean): number {
  const valid = value === Infinity ? allowInfinity : Number.isInteger(value) && value >= 0;
  if (!valid) {
    throw cacheError(
      'E_INVALID_OPTION',
      scope,
      `${option} must be a non-negative integer${allowInfinity ? ' or Infinity' : ''}, got ${String(value)}; ` +
        `pass e.g. ${option}: 10_000`,
    );
  }
  return value;
}

/**
 * What `compareAndSwap` throws for a value over the store's `maxBytes`: a cache may drop such a
 * value on `set`, but a conditional write (a ledger record, a lock) must not pretend it was made.
 */
export function tooLarge(backend: string, size: number, maxBytes: number): CacheError {
  return cacheError(
    'E_INVALID_OPTION',
    backend,
    `a value of ${size} bytes is over this store's maxBytes (${maxBytes}) and cannot be written; raise maxBytes`,
  );
}
