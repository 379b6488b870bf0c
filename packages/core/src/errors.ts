/**
 * Every error this package throws is a `CacheError` with a stable `code`. The marker symbol
 * is registered globally so that `CacheError.isInstance` recognises errors thrown by a
 * second copy of the package (duplicate installs, bundled adapters).
 */
const marker = Symbol.for('x.cache.error');

export type CacheErrorCode =
  | 'E_INVALID_KEY'
  | 'E_INVALID_OPTION'
  | 'E_INVALID_NAME'
  | 'E_UNSERIALIZABLE'
  | 'E_MISSING_DEPENDENCY'
  | 'E_BACKEND'
  | 'E_CLOSED'
  | 'E_QUOTA_EXCEEDED'
  | 'E_CORRUPT_ENTRY'
  | 'E_TIMEOUT'
  | 'E_IDEMPOTENCY_CONFLICT'
  | 'E_IN_PROGRESS'
  | 'E_OUTCOME_UNKNOWN';

export class CacheError extends Error {
  readonly [marker] = true;
  readonly code: CacheErrorCode;

  constructor(code: CacheErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CacheError';
    this.code = code;
  }

  static isInstance(error: unknown): error is CacheError {
    return typeof error === 'object' && error !== null && (error as Record<symbol, unknown>)[marker] === true;
  }
}

/** Builds the `[@x/cache-core] [scope] message` form used across the toolkit. */
export function cacheError(
  code: CacheErrorCode,
  scope: string,
  message: string,
  options?: { cause?: unknown },
): CacheError {
  return new CacheError(code, `[@x/cache-core] [${scope}] ${message}`, options);
}

/** Thrown when a request or value cannot be canonicalised; `path` names the offending field. */
export class UnserializableValueError extends CacheError {
  readonly path: string;
  /** What is wrong with the value at `path` (`functions cannot be stored`). */
  readonly reason: string;
  /** `what` is a key (a request being hashed) or a value being stored. */
  constructor(path: string, reason: string, what: 'key' | 'value' = 'key') {
    super(
      'E_UNSERIALIZABLE',
      what === 'key'
        ? `[@x/cache-core] [keys] cannot serialise ${path || '(root)'}: ${reason}. ` +
            'Pass plain data (objects, arrays, strings, numbers, booleans, null, Date, URL, Map, Set, binary) ' +
            'or drop that field from the key.'
        : `[@x/cache-core] [codec] cannot store ${path || 'the value'}: ${reason}. ` +
            'Return plain data (objects, arrays, strings, numbers, booleans, null, Date, URL, Map, Set, binary) ' +
            'or convert that field before it is cached.',
    );
    this.name = 'UnserializableValueError';
    this.path = path;
    this.reason = reason;
  }
}

/** Thrown when a write would push a namespace over its configured quota (policy `reject`). */
export class QuotaExceededError extends CacheError {
  readonly namespace: string;
  constructor(namespace: string, detail: string) {
    super(
      'E_QUOTA_EXCEEDED',
      `[@x/cache-core] [quota] namespace "${namespace}" is over its quota (${detail}); ` +
        'raise the quota, set onExceed: "evict", or invalidate entries.',
    );
    this.name = 'QuotaExceededError';
    this.namespace = namespace;
  }
}
