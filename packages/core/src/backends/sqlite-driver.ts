import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';
import { cacheError } from '../errors.ts';

/** The better-sqlite3 `Database` constructor. */
export type SqliteDriver = typeof BetterSqlite3;

/**
 * Loads better-sqlite3 synchronously on first use, so that importing the package (or using only
 * the memory backend) never pulls in a native module. `load` is injectable for tests.
 */
export function loadSqliteDriver(
  load: (id: string) => unknown = createRequire(import.meta.url),
): SqliteDriver {
  try {
    return load('better-sqlite3') as SqliteDriver;
  } catch (error) {
    throw cacheError(
      'E_MISSING_DEPENDENCY',
      'sqlite',
      'cannot load "better-sqlite3": install it (pnpm add better-sqlite3) or pass an open Database as `database`',
      { cause: error },
    );
  }
}
