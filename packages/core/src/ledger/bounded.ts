import type { CacheBackend } from '../backends/backend.ts';
import type { CacheView } from '../cache.ts';
import { CacheError, cacheError } from '../errors.ts';
import type { Duration } from '../ttl.ts';
import { parseDuration } from '../ttl.ts';
import { timerMs } from '../util/timers.ts';
import type { SwapBackend } from './internal.ts';

/** A ledger store whose every call answers or fails within the timeout. */
export type BoundedStore = SwapBackend & {
  /**
   * A call timed out and the store has not answered since: best-effort writes (history,
   * counters) skip it meanwhile, while a background probe waits for it to answer.
   */
  readonly stalled: boolean;
};

/** Backends in this process: their calls either finish or throw, there is nothing to wait out. */
const IN_PROCESS = new Set(['memory', 'sqlite']);

/** Network stores are bounded like cache levels are (`LevelOptions.timeout`). */
export const DEFAULT_LEDGER_TIMEOUT_MS = 500;

/** The key the probe of a stalled store reads: any answer, a miss included, proves it responds. */
const PROBE_KEY = '~probe';

/** Each bounded store, to the store it wraps. */
const wrapped = new WeakMap<object, SwapBackend>();

/** Errors of calls the ledger stopped waiting for: sent, unanswered, and so may still land. */
const unanswered = new WeakSet<object>();

/**
 * Whether `error` is the ledger's own deadline passing on a call that was sent: it may still
 * land. A store's own E_TIMEOUT (SQLite's busy wait) means the call did not happen.
 */
export function outlivedDeadline(error: unknown): boolean {
  return typeof error === 'object' && error !== null && unanswered.has(error);
}

/** The store a bounded store wraps (itself for any other store): per-store checks key on it. */
export function unbounded(store: CacheBackend): CacheBackend {
  return wrapped.get(store) ?? store;
}

/**
 * The ledger's timeout: its own `timeout` option, else the one of the cache level its records live
 * in (so one setting bounds both), else undefined (the store's default, see `boundStore`).
 */
export function ledgerTimeout(options: {
  timeout?: Duration | undefined;
  cache?: CacheView | undefined;
  store?: CacheBackend | undefined;
}): number | undefined {
  if (options.timeout !== undefined) {
    const ms = parseDuration(options.timeout, 'timeout');
    if (ms === undefined || !(ms > 0)) {
      throw cacheError(
        'E_INVALID_OPTION',
        'ledger',
        `timeout must be a positive duration, got ${String(options.timeout)}`,
      );
    }
    return ms;
  }
  return options.store ? undefined : options.cache?.recordStoreTimeoutMs;
}

/**
 * `store` with a timeout on every call (records, blobs, history, counters, listings), so that a
 * frozen store (a SIGSTOPped Redis, a dropped network; ioredis waits forever by default) fails
 * the ledger's calls instead of hanging them: a write tool then throws, as when the store is
 * down. `timeoutMs` undefined: the default for network stores, none for in-process ones.
 */
export function boundStore(store: SwapBackend, timeoutMs?: number): BoundedStore {
  if (wrapped.has(store)) return store as BoundedStore;
  const ms = timeoutMs ?? (IN_PROCESS.has(store.name) ? undefined : DEFAULT_LEDGER_TIMEOUT_MS);
  let stalled = false;
  let closed = false;

  const probe = (): void => {
    if (closed || !stalled) return;
    within(store.get(PROBE_KEY), 'probe').then(
      () => {
        stalled = false;
      },
      (error: unknown) => {
        // A store closed under us will never answer: stop asking.
        if (CacheError.isInstance(error) && error.code === 'E_CLOSED') return;
        setTimeout(probe, timerMs(Math.min(ms ?? 1000, 1000))).unref();
      },
    );
  };

  function within<T>(promise: Promise<T>, operation: string): Promise<T> {
    if (ms === undefined || ms === Number.POSITIVE_INFINITY) return promise;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!stalled) {
          stalled = true;
          probe();
        }
        const error = cacheError(
          'E_TIMEOUT',
          'ledger',
          `${store.name} ${operation} did not answer within ${ms} ms; check the store, or raise the ledger's timeout`,
        );
        unanswered.add(error);
        reject(error);
      }, timerMs(ms));
      timer.unref();
      promise.then(
        (value) => {
          clearTimeout(timer);
          stalled = false;
          resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  const proxy = new Proxy(store, {
    get(target, property) {
      if (property === 'stalled') return stalled;
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      const method = value as (...args: unknown[]) => unknown;
      if (property === 'close') {
        return (...args: unknown[]) => {
          closed = true;
          return method.apply(target, args);
        };
      }
      if (property === 'keys') {
        return (...args: unknown[]) => boundIterable(method.apply(target, args) as AsyncIterable<string>);
      }
      return (...args: unknown[]) => {
        const result = method.apply(target, args);
        return result instanceof Promise ? within(result, String(property)) : result;
      };
    },
  }) as BoundedStore;

  function boundIterable(iterable: AsyncIterable<string>): AsyncIterable<string> {
    return {
      [Symbol.asyncIterator]() {
        const iterator = iterable[Symbol.asyncIterator]();
        return {
          next: () => within(iterator.next(), 'keys'),
          return: (value?: unknown) =>
            iterator.return
              ? iterator.return(value as string)
              : Promise.resolve({ done: true as const, value: undefined }),
        };
      },
    };
  }

  wrapped.set(proxy, store);
  return proxy;
}
