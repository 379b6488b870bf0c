import type { CacheBackend, StoredEntry, SyncReadableBackend } from '../backends/backend.ts';
import { isSyncBackend } from '../backends/backend.ts';
import { cacheError } from '../errors.ts';
import type { Duration } from '../ttl.ts';
import { parseDuration } from '../ttl.ts';

/** One level of a stack: a backend plus how the stack treats it. */
export interface LevelOptions {
  backend: CacheBackend;
  /** Name used in stats and events. @default backend.name */
  name?: string;
  /** Upper bound on how long this level keeps an entry, e.g. a short-lived L1. @default unlimited */
  maxTtl?: Duration;
  /**
   * Per-operation timeout; a slower operation counts as a miss (read) or a dropped write.
   * @default none for in-process backends (memory, sqlite), 1000 ms for network backends
   */
  timeout?: Duration;
}

export type LevelInput = CacheBackend | LevelOptions;

const IN_PROCESS = new Set(['memory', 'sqlite']);

export class Level {
  readonly backend: CacheBackend;
  readonly name: string;
  readonly maxTtlMs: number | undefined;
  readonly timeoutMs: number | undefined;
  readonly sync: SyncReadableBackend | undefined;

  constructor(input: LevelInput) {
    const options: LevelOptions = 'backend' in input ? input : { backend: input };
    if (!options.backend || typeof options.backend.get !== 'function') {
      throw cacheError(
        'E_INVALID_OPTION',
        'levels',
        'each level must be a backend (e.g. memoryBackend()) or { backend }',
      );
    }
    this.backend = options.backend;
    this.name = options.name ?? options.backend.name;
    this.maxTtlMs = parseDuration(options.maxTtl, 'maxTtl');
    this.timeoutMs =
      options.timeout !== undefined
        ? parseDuration(options.timeout, 'timeout')
        : IN_PROCESS.has(options.backend.name)
          ? undefined
          : 1000;
    this.sync = isSyncBackend(options.backend) ? options.backend : undefined;
  }

  /** The entry as this level should keep it: expiry capped by `maxTtl`. */
  fit(entry: StoredEntry, now: number): StoredEntry {
    if (this.maxTtlMs === undefined) return entry;
    const cap = now + this.maxTtlMs;
    if (entry.expiresAt !== undefined && entry.expiresAt <= cap) return entry;
    return { value: entry.value, expiresAt: cap, tags: entry.tags };
  }
}

export class LevelTimeoutError extends Error {
  constructor(level: string, operation: string, ms: number) {
    super(`[@x/cache-core] [${level}] ${operation} timed out after ${ms} ms`);
    this.name = 'LevelTimeoutError';
  }
}

/** Runs a backend call with the level's timeout; the caller decides what a failure means. */
export function withTimeout<T>(level: Level, operation: string, run: () => Promise<T>): Promise<T> {
  const ms = level.timeoutMs;
  if (ms === undefined) return run();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new LevelTimeoutError(level.name, operation, ms)), ms);
  });
  return Promise.race([run(), timeout]).finally(() => clearTimeout(timer));
}
