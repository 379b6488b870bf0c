import type BetterSqlite3 from 'better-sqlite3';
import { cacheError } from '../errors.ts';

/**
 * Whether the key in `column` is an idempotency record or a blob one references
 * (`~ledger/<ns>:idem:…` / `:blob:…`), which the size bounds never evict: evicting one would
 * forget a side effect, and the next call would run it again. Written exactly as in the v4
 * migration (and in the v1-v3 eviction query): the planner uses a partial index only for a query
 * that repeats its WHERE term for term.
 */
export function protectedKey(column: string): string {
  return `(${column} >= '~ledger/' AND (${column} GLOB '~ledger/*:idem:*' OR ${column} GLOB '~ledger/*:blob:*'))`;
}

/** A key's namespace (up to its first colon): the expression of cache_namespace_totals' triggers, indexed in v4. */
export const NAMESPACE = "substr(key, 1, instr(key, ':'))";

/**
 * Schema of the SQLite backend. Every table is prefixed `cache_` so the backend can live in a
 * database the application also uses, and the version sits in `cache_meta` rather than
 * `PRAGMA user_version`, which belongs to that application.
 *
 * Migrations are append-only: index `i` upgrades version `i` to `i + 1`. Never edit a shipped one.
 */
export const MIGRATIONS: readonly string[] = [
  // v1
  `
  CREATE TABLE cache_entries (
    key TEXT NOT NULL PRIMARY KEY,
    expires_at INTEGER,
    accessed_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    tags TEXT,
    -- Last, so that reading the other columns never touches the blob's overflow pages.
    value BLOB NOT NULL
  );
  CREATE INDEX cache_entries_expires_at ON cache_entries (expires_at) WHERE expires_at IS NOT NULL;
  CREATE INDEX cache_entries_accessed_at ON cache_entries (accessed_at);

  CREATE TABLE cache_tags (
    tag TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (tag, key)
  ) WITHOUT ROWID;
  CREATE INDEX cache_tags_key ON cache_tags (key);

  -- Running totals kept by the triggers below, so that stats and size bounds never scan entries.
  CREATE TABLE cache_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    entries INTEGER NOT NULL,
    bytes INTEGER NOT NULL
  );
  INSERT INTO cache_totals (id, entries, bytes) VALUES (1, 0, 0);
  CREATE TABLE cache_namespace_totals (
    namespace TEXT NOT NULL PRIMARY KEY,
    entries INTEGER NOT NULL,
    bytes INTEGER NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE cache_locks (
    name TEXT NOT NULL PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL
  ) WITHOUT ROWID;

  -- Triggers rather than application code keep totals and the tag index right whichever
  -- statement (or process, or future version) inserts, overwrites, evicts or prunes a row.
  CREATE TRIGGER cache_entries_insert AFTER INSERT ON cache_entries BEGIN
    UPDATE cache_totals SET entries = entries + 1, bytes = bytes + new.size WHERE id = 1;
    INSERT INTO cache_namespace_totals (namespace, entries, bytes)
      VALUES (substr(new.key, 1, instr(new.key, ':')), 1, new.size)
      ON CONFLICT (namespace) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
    INSERT OR IGNORE INTO cache_tags (tag, key) SELECT value, new.key FROM json_each(new.tags);
  END;

  CREATE TRIGGER cache_entries_delete AFTER DELETE ON cache_entries BEGIN
    UPDATE cache_totals SET entries = entries - 1, bytes = bytes - old.size WHERE id = 1;
    UPDATE cache_namespace_totals SET entries = entries - 1, bytes = bytes - old.size
      WHERE namespace = substr(old.key, 1, instr(old.key, ':'));
    DELETE FROM cache_tags WHERE key = old.key;
  END;

  CREATE TRIGGER cache_entries_resize AFTER UPDATE OF size ON cache_entries WHEN new.size <> old.size BEGIN
    UPDATE cache_totals SET bytes = bytes + new.size - old.size WHERE id = 1;
    UPDATE cache_namespace_totals SET bytes = bytes + new.size - old.size
      WHERE namespace = substr(new.key, 1, instr(new.key, ':'));
  END;

  CREATE TRIGGER cache_entries_retag AFTER UPDATE OF tags ON cache_entries WHEN new.tags IS NOT old.tags BEGIN
    DELETE FROM cache_tags WHERE key = old.key;
    INSERT OR IGNORE INTO cache_tags (tag, key) SELECT value, new.key FROM json_each(new.tags);
  END;
  `,
  // v2: persistent statistics counters (the contract's incrementCounters / readCounters).
  `
  CREATE TABLE cache_counters (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    value NOT NULL,
    PRIMARY KEY (scope, name)
  ) WITHOUT ROWID;
  `,
  // v3: the invalidation bus between processes sharing the file (the contract's publish /
  // subscribe). AUTOINCREMENT: ids never go back, even once pruning empties the table, so a
  // subscriber's "after id N" never skips a message.
  `
  CREATE TABLE cache_bus (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    message TEXT NOT NULL,
    at INTEGER NOT NULL
  );
  CREATE INDEX cache_bus_at ON cache_bus (at);
  `,
  // v4: size bounds that neither sort nor walk past rows they may not evict. Idempotency records
  // and their blobs, which the size bounds never evict, get totals of their own (kept by
  // triggers, like the others) so that the bounds leave them out, and the LRU order an index
  // without them: its WHERE is, term for term, the one in the eviction query of v1-v3 builds, so
  // they use it too, and it replaces the accessed_at index nothing else used. It runs under the
  // write lock, so it builds this one index only (~1.5 s at 2.5 million rows): the per-namespace
  // indexes of quota trims (NAMESPACE_INDEXES) are built by the first trim that needs them, so
  // that files without quotas never pay for them on every write. (Files migrated by the first v4
  // build have them already.) Older builds name none of these: the file stays readable from v1.
  `
  CREATE TABLE cache_protected_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    entries INTEGER NOT NULL,
    bytes INTEGER NOT NULL
  );
  INSERT INTO cache_protected_totals (id, entries, bytes)
    SELECT 1, count(*), coalesce(sum(size), 0) FROM cache_entries
    WHERE (key >= '~ledger/' AND (key GLOB '~ledger/*:idem:*' OR key GLOB '~ledger/*:blob:*'));

  CREATE TRIGGER cache_entries_protected_insert AFTER INSERT ON cache_entries
    WHEN (new.key >= '~ledger/' AND (new.key GLOB '~ledger/*:idem:*' OR new.key GLOB '~ledger/*:blob:*'))
  BEGIN
    UPDATE cache_protected_totals SET entries = entries + 1, bytes = bytes + new.size WHERE id = 1;
  END;
  CREATE TRIGGER cache_entries_protected_delete AFTER DELETE ON cache_entries
    WHEN (old.key >= '~ledger/' AND (old.key GLOB '~ledger/*:idem:*' OR old.key GLOB '~ledger/*:blob:*'))
  BEGIN
    UPDATE cache_protected_totals SET entries = entries - 1, bytes = bytes - old.size WHERE id = 1;
  END;
  CREATE TRIGGER cache_entries_protected_resize AFTER UPDATE OF size ON cache_entries
    WHEN new.size <> old.size
      AND (new.key >= '~ledger/' AND (new.key GLOB '~ledger/*:idem:*' OR new.key GLOB '~ledger/*:blob:*'))
  BEGIN
    UPDATE cache_protected_totals SET bytes = bytes + new.size - old.size WHERE id = 1;
  END;

  CREATE INDEX cache_entries_evictable ON cache_entries (accessed_at)
    WHERE NOT (key >= '~ledger/' AND (key GLOB '~ledger/*:idem:*' OR key GLOB '~ledger/*:blob:*'));
  DROP INDEX cache_entries_accessed_at;
  `,
];

/**
 * Per-namespace expiry and LRU orders for quota trims (namespace: the key up to its first colon,
 * as in cache_namespace_totals), which walk them with INDEXED BY instead of sorting the
 * namespace. Not part of a migration: every write pays for each index on `cache_entries`, and
 * only quota trims use these, so the first trim that has to evict builds them
 * (`ensureIndexes`). Older builds never name them: they change nothing to `readable_from`.
 */
export const NAMESPACE_INDEXES: Readonly<Record<string, string>> = {
  cache_entries_namespace_expires_at:
    `CREATE INDEX IF NOT EXISTS cache_entries_namespace_expires_at ON cache_entries (${NAMESPACE}, expires_at) ` +
    'WHERE expires_at IS NOT NULL',
  cache_entries_namespace_accessed_at: `CREATE INDEX IF NOT EXISTS cache_entries_namespace_accessed_at ON cache_entries (${NAMESPACE}, accessed_at)`,
};

/**
 * Makes sure every index of `indexes` (name -> `CREATE INDEX IF NOT EXISTS`) exists and tells
 * whether they all do. A missing one is built in a transaction of its own, one index each, so
 * that the write lock is held as briefly as possible; it is not built when the connection is
 * inside a transaction (it would not be the index's own), nor when building it fails (another
 * connection's lock, with the connection's busy timeout): the caller does without it this time.
 * Never throws.
 */
export function ensureIndexes(
  db: BetterSqlite3.Database,
  indexes: Readonly<Record<string, string>>,
): boolean {
  const names = Object.keys(indexes);
  try {
    const existing = new Set(
      db
        .prepare<string[], string>(
          `SELECT name FROM sqlite_schema WHERE type = 'index' AND name IN (${names.map(() => '?').join(', ')})`,
        )
        .pluck()
        .all(...names),
    );
    for (const name of names) {
      if (existing.has(name)) continue;
      if (db.inTransaction) return false;
      db.transaction(() => db.exec(indexes[name]!)).immediate();
    }
  } catch {
    return false;
  }
  return true;
}

/**
 * Per version (index `v - 1`), the oldest schema version whose code can still use a file at
 * version `v`: a migration that only adds tables or indexes older code never reads keeps it low,
 * so that during a rolling upgrade the processes not upgraded yet go on using the file. Stored in
 * `cache_meta` as `readable_from`; builds from this one on accept a newer file that allows them.
 */
export const READABLE_FROM: readonly number[] = [1, 1, 1, 1];

/** Schema version of `db` (0 for a database this backend never opened). */
export function schemaVersion(db: BetterSqlite3.Database): number {
  const hasMeta = db
    .prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'cache_meta'")
    .get();
  if (hasMeta === undefined) return 0;
  const version = db.prepare("SELECT value FROM cache_meta WHERE name = 'schema_version'").pluck().get();
  return typeof version === 'number' ? version : 0;
}

/** Every table, index and trigger the backend creates (in a migration, or later), cache_meta included. */
const SCHEMA_NAMES: ReadonlySet<string> = new Set([
  'cache_meta',
  ...MIGRATIONS.flatMap((sql) =>
    Array.from(
      sql.matchAll(/CREATE (?:TABLE|INDEX|TRIGGER) (?:IF NOT EXISTS )?(\w+)/g),
      (match) => match[1]!,
    ),
  ),
  ...Object.keys(NAMESPACE_INDEXES),
]);

/** What a database holds before the backend changes anything in it (see `inspectSchema`). */
export type SchemaContents =
  | { kind: 'empty' }
  | { kind: 'cache' }
  | {
      kind: 'foreign';
      /** Its objects (tables, indexes, views, triggers) the backend would not have created. */
      objects: string[];
      /** Its objects named like the backend's own, which the migrations would collide with. */
      conflicts: string[];
    };

/**
 * Reads, and only reads, what `db` holds: nothing yet (a new or empty file: SQLite's own
 * `sqlite_*` tables aside), a cache store (`cache_meta` with a schema version), or something
 * else, another application's database. Lets opening refuse the last one before it switches the
 * file's journal mode or adds tables to it. Throws the driver's error for a file that is not an
 * SQLite database (`SQLITE_NOTADB`), or is locked.
 */
export function inspectSchema(db: BetterSqlite3.Database): SchemaContents {
  const names = db
    .prepare<[], string>(
      "SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name",
    )
    .pluck()
    .all();
  if (names.length === 0) return { kind: 'empty' };
  if (names.includes('cache_meta')) {
    let version = 0;
    try {
      version = schemaVersion(db);
    } catch {
      // a cache_meta table of another shape: not ours
    }
    if (version > 0) return { kind: 'cache' };
  }
  return {
    kind: 'foreign',
    objects: names.filter((name) => !SCHEMA_NAMES.has(name)),
    conflicts: names.filter((name) => SCHEMA_NAMES.has(name)),
  };
}

/**
 * How long opening a file waits, at least, for another connection's write lock before it can
 * upgrade the file: the connection that holds it may be running a migration (seconds on a large
 * file), and the file is usable as soon as it commits.
 */
export const MIGRATION_WAIT_MS = 120_000;
/** An upgrade refused by another connection's lock sooner than this waits the rest before trying again. */
const MIGRATION_RETRY_MS = 50;

/**
 * Brings `db` to the latest version and returns it. Up-to-date databases only pay one read.
 * Otherwise the upgrade runs in one `BEGIN IMMEDIATE` transaction that re-reads the version
 * under the write lock, so processes opening a new file at the same time migrate it once. While
 * another connection holds the write lock (migrating the file, say), it waits, re-reading the
 * version between attempts, for up to `waitMs` (the connection's own busy timeout bounds each
 * attempt), then fails with `E_TIMEOUT`.
 */
export function migrate(
  db: BetterSqlite3.Database,
  migrations: readonly string[] = MIGRATIONS,
  readableFrom: readonly number[] = READABLE_FROM,
  waitMs: number = MIGRATION_WAIT_MS,
): number {
  return whileLocked(db, waitMs, 'upgrade its cache schema', () => upgrade(db, migrations, readableFrom));
}

/**
 * Runs `run`, and while another connection's lock refuses it, runs it again (the connection's
 * own busy timeout bounds each attempt) for up to `waitMs`, then fails with `E_TIMEOUT` naming
 * `what` it waited to do. Opening reads the schema and may upgrade it this way: another process
 * may be migrating the file, which takes seconds on a large one.
 */
export function whileLocked<T>(db: BetterSqlite3.Database, waitMs: number, what: string, run: () => T): T {
  const deadline = performance.now() + waitMs;
  // Inside a transaction of the caller's (a `database` passed in mid-transaction) nothing this
  // thread waits for can end: the first answer stands.
  const mayWait = !db.inTransaction;
  for (;;) {
    const attempt = performance.now();
    try {
      return run();
    } catch (error) {
      if (!mayWait || !isBusy(error)) throw error;
      const now = performance.now();
      if (now >= deadline) {
        throw cacheError(
          'E_TIMEOUT',
          'sqlite',
          `opening waited over ${waitMs} ms for another connection's lock on "${db.name}" to ${what}; ` +
            'if another process is migrating a large file, try again once it is done',
          { cause: error },
        );
      }
      // A connection without a busy timeout fails at once: do not spin on the lock.
      if (now - attempt < MIGRATION_RETRY_MS) sleep(Math.min(MIGRATION_RETRY_MS, deadline - now));
    }
  }
}

function upgrade(
  db: BetterSqlite3.Database,
  migrations: readonly string[],
  readableFrom: readonly number[],
): number {
  const latest = migrations.length;
  const current = schemaVersion(db);
  if (current === latest) return latest;
  // A newer file this build may still use is left as it is (never migrated down).
  if (usableNewer(db, current, latest)) return current;
  db.transaction(() => {
    db.exec('CREATE TABLE IF NOT EXISTS cache_meta (name TEXT NOT NULL PRIMARY KEY, value) WITHOUT ROWID');
    const locked = schemaVersion(db);
    if (usableNewer(db, locked, latest)) return;
    for (let version = locked; version < latest; version++) db.exec(migrations[version]!);
    const meta = db.prepare('INSERT OR REPLACE INTO cache_meta (name, value) VALUES (?, ?)');
    meta.run('schema_version', latest);
    meta.run('readable_from', readableFrom[latest - 1] ?? latest);
  }).immediate();
  return Math.max(latest, schemaVersion(db));
}

/**
 * Whether another connection's write lock refused the upgrade, which waiting can end. Not
 * `SQLITE_BUSY_SNAPSHOT`: that is this connection's own read snapshot, which only its owner can end.
 */
function isBusy(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_BUSY_TIMEOUT' || code === 'SQLITE_BUSY_RECOVERY';
}

/** Blocks the thread: opening is synchronous, and so is SQLite's own busy wait. */
function sleep(ms: number): void {
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Whether `version` is newer than this build (`latest`) but declares it can still be used by it; throws when it cannot. */
function usableNewer(db: BetterSqlite3.Database, version: number, latest: number): boolean {
  if (version <= latest) return false;
  const readable = db.prepare("SELECT value FROM cache_meta WHERE name = 'readable_from'").pluck().get();
  if (typeof readable === 'number' && readable <= latest) return true;
  throw cacheError(
    'E_BACKEND',
    'sqlite',
    `the database has cache schema v${version} but this build of @x/cache-core knows up to v${latest}; ` +
      'upgrade @x/cache-core in every process sharing the file, or point this one at another path',
  );
}
