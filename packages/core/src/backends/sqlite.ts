import { constants } from 'node:buffer';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { CacheError, cacheError } from '../errors.ts';
import { timerMs } from '../util/timers.ts';
import type {
  BackendCapabilities,
  BackendStats,
  CacheBackend,
  Clock,
  ScanOptions,
  StoredEntry,
} from './backend.ts';
import { BACKEND_SPECIFICATION_VERSION, sameBytes, systemClock } from './backend.ts';
import { checkEntry, checkStorable, isStorable, prefixUpperBound } from './prefix.ts';
import type { PrefixStats, TrimBounds } from './quota.ts';
import { checkLimit, tooLarge } from './quota.ts';
import { loadSqliteDriver } from './sqlite-driver.ts';
import {
  ensureIndexes,
  inspectSchema,
  MIGRATION_WAIT_MS,
  migrate,
  NAMESPACE,
  NAMESPACE_INDEXES,
  protectedKey,
  type SchemaContents,
  whileLocked,
} from './sqlite-schema.ts';

export interface SqliteBackendOptions {
  /**
   * Database file; missing parent directories are created. `':memory:'` keeps the data in this
   * connection only. Ignored when `database` is given. A new or empty file becomes a cache store;
   * an existing file must be one: another application's database (or a file that is not SQLite)
   * is refused untouched with `E_INVALID_OPTION` (to share one on purpose, pass its connection as
   * `database`).
   * @default '.cache/llm-cache.db'
   */
  path?: string | undefined;
  /**
   * An open better-sqlite3 `Database` to use instead of opening `path`. The backend creates its
   * `cache_*` tables in it, leaves its journal mode and `synchronous` setting alone (enable WAL
   * yourself for concurrent readers), and does not close it on `close()`.
   * @default undefined
   */
  database?: BetterSqlite3.Database | undefined;
  /**
   * Most entries kept; the least recently used are evicted beyond it. Idempotency records and the
   * blobs they reference (`~ledger/<namespace>:idem:` / `:blob:` keys) are never evicted, so they
   * are not counted either: they are kept on top of this bound (and of `maxBytes`) until they
   * expire, and never crowd cache entries out. `stats()` counts them.
   * @default Infinity
   */
  maxEntries?: number | undefined;
  /**
   * Most value bytes kept (the sum of `value.byteLength`, as in `stats().bytes`, idempotency
   * records and their blobs left out as for `maxEntries`); the least recently used entries are
   * evicted beyond it, and a single larger value is not stored.
   * @default Infinity
   */
  maxBytes?: number | undefined;
  /** Time source for expiry, LRU order and lock leases. @default systemClock */
  clock?: Clock | undefined;
  /**
   * How long a write waits for another connection's write lock before failing with `E_TIMEOUT`.
   * Applied to a passed `database` only when set explicitly.
   * @default 5000
   */
  busyTimeoutMs?: number | undefined;
  /**
   * How often a subscriber (a cache with a memory level) checks the file for invalidation-bus
   * messages from other processes; the bound on how long their writes and invalidations take to
   * reach its memory level. A check costs one `PRAGMA data_version` unless another connection
   * committed since the last one.
   * @default 100
   */
  busPollMs?: number | undefined;
  /** Reads are recorded in memory and written to the LRU column at most this often. @default 1000 */
  touchFlushIntervalMs?: number | undefined;
  /** ...or as soon as this many distinct keys were read, whichever comes first. @default 1000 */
  touchFlushSize?: number | undefined;
  /**
   * A read updates an entry's last-use time only when the stored one is at least this old. Each
   * update rewrites the row's page (the value sits in it), so a hot entry read many times a
   * second is written once a second instead; LRU order is exact to this granularity.
   * @default 1000
   */
  touchGranularityMs?: number | undefined;
}

export interface SqliteBackend extends CacheBackend {
  readonly name: 'sqlite';
  add(key: string, entry: StoredEntry): Promise<boolean>;
  acquireLock(name: string, owner: string, ttlMs: number): Promise<boolean>;
  releaseLock(name: string, owner: string): Promise<boolean>;
  /**
   * Entries and value bytes under `prefix`, from trigger-maintained totals for a namespace prefix
   * (`ns:`) or a colon-free one (a tier); other prefixes scan their key range.
   */
  statsFor(prefix: string): Promise<PrefixStats>;
  /**
   * Removes least recently used entries under `prefix` until it is within `limits` (expired ones
   * met on the way too) and returns how many went; names each live one (an eviction, counted in
   * `stats().evictions`) to `onEvicted` once committed.
   */
  trim(prefix: string, limits: TrimBounds, onEvicted?: (key: string) => void): Promise<number>;
  incrementCounters(scope: string, deltas: Readonly<Record<string, number>>): Promise<void>;
  readCounters(): Promise<Record<string, Record<string, number>>>;
  clearCounters(scopePrefix?: string): Promise<void>;
  /** Writes the buffered LRU touches now (also done on a timer, after `touchFlushSize` reads and on close). */
  flush(): Promise<void>;
  /** getMany without an LRU touch (see CacheBackend.peekMany). */
  peekMany(keys: readonly string[]): Promise<(StoredEntry | undefined)[]>;
  compareAndSwap(key: string, expected: Uint8Array | null, next: StoredEntry | null): Promise<boolean>;
  /** Appends a message to the file's bus table, for the other connections' subscribers. */
  publish(channel: string, message: string): Promise<void>;
  subscribe(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>>;
}

const DEFAULT_PATH = '.cache/llm-cache.db';
const DEFAULT_BUSY_TIMEOUT_MS = 5000;
const DEFAULT_TOUCH_FLUSH_INTERVAL_MS = 1000;
const DEFAULT_TOUCH_FLUSH_SIZE = 1000;
const DEFAULT_SCAN_BATCH = 500;
const EVICTION_BATCH = 64;

const CAPABILITIES: BackendCapabilities = Object.freeze({
  createIfAbsent: true,
  locks: true,
  pubsub: true,
  persistent: true,
  shared: true,
});

const DEFAULT_BUS_POLL_MS = 100;
/** Bus messages older than this are pruned: a subscriber that has not checked for this long may miss some. */
const BUS_RETENTION_MS = 60_000;
/** Publishes between two prunes of old bus messages. */
const BUS_PRUNE_EVERY = 128;
/** Messages read per query when a subscriber catches up. */
const BUS_BATCH = 1000;
/** A bus write refused by another connection's lock is retried this often… */
const BUS_RETRY_MS = 100;
/** …for this long before its publishers are told it failed. */
const BUS_GIVE_UP_MS = 30_000;

interface BusRow {
  id: number;
  channel: string;
  message: string;
}

/**
 * Persistent cache in one SQLite file that several processes may share (WAL mode). Loads
 * better-sqlite3 only when called, so users of the memory backend never need it installed.
 */
export function sqliteBackend(options: SqliteBackendOptions = {}): SqliteBackend {
  if (options.database !== undefined && options.path !== undefined) {
    throw cacheError('E_INVALID_OPTION', 'sqlite', 'pass either `path` or `database`, not both');
  }
  // Validated before anything touches the file system.
  const settings: Settings = {
    clock: options.clock ?? systemClock,
    maxEntries: checkLimit('sqlite', 'maxEntries', options.maxEntries ?? Infinity, true),
    maxBytes: checkLimit('sqlite', 'maxBytes', options.maxBytes ?? Infinity, true),
    // Capped like the timers (timerMs, at about 24.8 days): better-sqlite3 refuses a longer
    // timeout, and SQLite's busy timeout is a 32-bit int.
    busyTimeoutMs: timerMs(
      checkLimit('sqlite', 'busyTimeoutMs', options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS, false),
    ),
    touchFlushIntervalMs: checkLimit(
      'sqlite',
      'touchFlushIntervalMs',
      options.touchFlushIntervalMs ?? DEFAULT_TOUCH_FLUSH_INTERVAL_MS,
      false,
    ),
    touchFlushSize: checkLimit(
      'sqlite',
      'touchFlushSize',
      options.touchFlushSize ?? DEFAULT_TOUCH_FLUSH_SIZE,
      false,
    ),
    touchGranularityMs:
      options.touchGranularityMs === undefined
        ? undefined
        : checkLimit('sqlite', 'touchGranularityMs', options.touchGranularityMs, false),
    busPollMs: checkLimit('sqlite', 'busPollMs', options.busPollMs ?? DEFAULT_BUS_POLL_MS, false),
  };
  const { busyTimeoutMs } = settings;
  let db: BetterSqlite3.Database;
  let owned: boolean;
  let location: string;
  if (options.database !== undefined) {
    db = options.database;
    owned = false;
    location = db.name;
    if (!db.open) {
      throw cacheError(
        'E_INVALID_OPTION',
        'sqlite',
        '`database` is closed; pass an open better-sqlite3 Database',
      );
    }
    if (options.busyTimeoutMs !== undefined) db.pragma(`busy_timeout = ${busyTimeoutMs}`);
  } else {
    location = options.path ?? DEFAULT_PATH;
    const Driver = loadSqliteDriver();
    try {
      if (location !== ':memory:' && location !== '') mkdirSync(dirname(location), { recursive: true });
      db = new Driver(location, { timeout: busyTimeoutMs });
    } catch (error) {
      throw cacheError(
        'E_BACKEND',
        'sqlite',
        `cannot open "${location}": ${messageOf(error)}; pass a writable \`path\` (or ':memory:')`,
        { cause: error },
      );
    }
    owned = true;
  }
  // Whether an error may suggest deleting the file: only once it is known to be a cache store.
  let cacheFile = false;
  try {
    // Read before anything changes: another application's database is refused untouched (its
    // journal mode included), not half-migrated.
    const waitMs = Math.max(MIGRATION_WAIT_MS, busyTimeoutMs);
    const contents = whileLocked(db, waitMs, 'read its schema', () => readContents(db, location));
    if (contents.kind === 'foreign' && (owned || contents.conflicts.length > 0)) {
      throw foreignDatabase(location, owned, contents);
    }
    cacheFile = owned && location !== ':memory:' && location !== '';
    if (owned) {
      // WAL lets readers in other processes proceed during a write; NORMAL is durable across
      // application crashes (not power loss), which is the right trade for a cache.
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
    }
    // Another process may be migrating the file (seconds on a large one): wait for it.
    migrate(db, undefined, undefined, waitMs);
    return new SqliteStore(db, owned, location, settings);
  } catch (error) {
    if (owned) db.close();
    throw wrapError(error, 'open', location, busyTimeoutMs, cacheFile);
  }
}

/** `inspectSchema`, with a file that is no SQLite database at all refused as such. */
function readContents(db: BetterSqlite3.Database, location: string): SchemaContents {
  try {
    return inspectSchema(db);
  } catch (error) {
    if ((error as { code?: unknown } | null)?.code !== 'SQLITE_NOTADB') throw error;
    throw cacheError(
      'E_INVALID_OPTION',
      'sqlite',
      `"${location}" is not an SQLite database (or is a damaged or encrypted one); the cache left it as it was. ` +
        "If it is a damaged cache file, delete it to start an empty cache; if it is something else's, point " +
        `\`path\` at a file of the cache's own${location === DEFAULT_PATH ? '' : `, e.g. '${DEFAULT_PATH}'`}`,
      { cause: error },
    );
  }
}

/**
 * Refuses another application's database: a `path` must name a file of the cache's own (its
 * migrations would add tables to the application's file, and WAL mode change how the
 * application uses it), and a passed `database` must not hold tables named like the cache's.
 */
function foreignDatabase(
  location: string,
  owned: boolean,
  contents: Extract<SchemaContents, { kind: 'foreign' }>,
): CacheError {
  const list = (names: string[]) =>
    names.slice(0, 5).join(', ') + (names.length > 5 ? ` and ${names.length - 5} more` : '');
  if (!owned) {
    return cacheError(
      'E_INVALID_OPTION',
      'sqlite',
      `the \`database\` passed ("${location}") has objects of its own named like the cache's (${list(contents.conflicts)}), ` +
        'so the cache cannot create its tables in it; the cache left it as it was. ' +
        `Pass \`path\` (e.g. '${DEFAULT_PATH}') to give the cache a file of its own`,
    );
  }
  const shared =
    contents.conflicts.length === 0
      ? "; to keep the cache's cache_* tables in that database on purpose, pass the application's open connection as `database`"
      : '';
  return cacheError(
    'E_INVALID_OPTION',
    'sqlite',
    `"${location}" is another application's SQLite database (it holds ${list([...contents.objects, ...contents.conflicts])}), ` +
      'not a cache store; the cache left it as it was (journal mode included). ' +
      `Point \`path\` at a file of the cache's own, e.g. '${DEFAULT_PATH}'${shared}`,
  );
}

/** Options after defaults and validation. */
interface Settings {
  clock: Clock;
  maxEntries: number;
  maxBytes: number;
  busyTimeoutMs: number;
  touchFlushIntervalMs: number;
  touchFlushSize: number;
  touchGranularityMs: number | undefined;
  busPollMs: number;
}
type EntryRow = [value: Uint8Array, expiresAt: number | null, tags: string | null, accessedAt: number];
interface Totals {
  entries: number;
  bytes: number;
}
interface VictimRow {
  key: string;
  size: number;
  expires_at: number | null;
}
/** A type alias, not an interface, so that it can be passed where named parameters are expected. */
type Range = { lower: string; upper?: string };
/** The same query with and without an upper key bound, since an empty prefix has none. */
interface RangeStatement<Result> {
  bounded: BetterSqlite3.Statement<[Record<string, unknown>], Result>;
  open: BetterSqlite3.Statement<[Record<string, unknown>], Result>;
}

function prepareStatements(db: BetterSqlite3.Database) {
  const range = <Result>(
    sql: string,
    options: { column?: string; pluck?: boolean } = {},
  ): RangeStatement<Result> => {
    const prepare = (upper: string) => {
      const statement = db.prepare<[Record<string, unknown>], Result>(sql.replace('$upper', upper));
      return options.pluck ? statement.pluck() : statement;
    };
    return { bounded: prepare(`AND ${options.column ?? 'key'} < @upper`), open: prepare('') };
  };
  const upsert = `
    INSERT INTO cache_entries (key, expires_at, accessed_at, size, tags, value) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at, accessed_at = excluded.accessed_at,
      size = excluded.size, tags = excluded.tags, value = excluded.value`;
  return {
    get: db
      .prepare<[string], EntryRow>(
        'SELECT value, expires_at, tags, accessed_at FROM cache_entries WHERE key = ?',
      )
      .raw(),
    expiresAt: db
      .prepare<[string], number | null>('SELECT expires_at FROM cache_entries WHERE key = ?')
      .pluck(),
    upsert: db.prepare<[string, number | null, number, number, string | null, Uint8Array]>(upsert),
    // An expired row counts as absent, so the conflict branch replaces only those.
    insertIfAbsent: db.prepare<[string, number | null, number, number, string | null, Uint8Array, number]>(
      `${upsert} WHERE cache_entries.expires_at IS NOT NULL AND cache_entries.expires_at <= ?`,
    ),
    deleteKey: db
      .prepare<[string], number | null>('DELETE FROM cache_entries WHERE key = ? RETURNING expires_at')
      .pluck(),
    evictKey: db.prepare<[string]>('DELETE FROM cache_entries WHERE key = ?'),
    deleteByTag: db
      .prepare<[string], number | null>(
        'DELETE FROM cache_entries WHERE key IN (SELECT key FROM cache_tags WHERE tag = ?) RETURNING expires_at',
      )
      .pluck(),
    deleteRange: range<number | null>(
      'DELETE FROM cache_entries WHERE key >= @lower $upper RETURNING expires_at',
      { pluck: true },
    ),
    deleteAll: db.prepare('DELETE FROM cache_entries'),
    deleteNamespaceTotals: db.prepare('DELETE FROM cache_namespace_totals'),
    prune: db.prepare<[number]>('DELETE FROM cache_entries WHERE expires_at <= ?'),
    keysFrom: range<string>(
      'SELECT key FROM cache_entries WHERE key >= @lower $upper AND (expires_at IS NULL OR expires_at > @now) ' +
        'ORDER BY key LIMIT @limit',
      { pluck: true },
    ),
    keysAfter: range<string>(
      'SELECT key FROM cache_entries WHERE key > @cursor AND key >= @lower $upper ' +
        'AND (expires_at IS NULL OR expires_at > @now) ORDER BY key LIMIT @limit',
      { pluck: true },
    ),
    totals: db.prepare<[], Totals>('SELECT entries, bytes FROM cache_totals WHERE id = 1'),
    namespaceTotals: db.prepare<[string], Totals>(
      'SELECT entries, bytes FROM cache_namespace_totals WHERE namespace = ?',
    ),
    rangeTotals: range<Totals>(
      'SELECT count(*) AS entries, coalesce(sum(size), 0) AS bytes FROM cache_entries WHERE key >= @lower $upper',
    ),
    namespaceRangeTotals: range<Totals>(
      'SELECT coalesce(sum(entries), 0) AS entries, coalesce(sum(bytes), 0) AS bytes ' +
        'FROM cache_namespace_totals WHERE namespace >= @lower $upper',
      { column: 'namespace' },
    ),
    colonFreeRangeTotals: range<Totals>(
      'SELECT count(*) AS entries, coalesce(sum(size), 0) AS bytes FROM cache_entries ' +
        "WHERE key >= @lower $upper AND instr(key, ':') = 0",
    ),
    // One statement for the whole batch; max() keeps a newer touch written by another process.
    touch: db.prepare<[string]>(
      'UPDATE cache_entries SET accessed_at = max(accessed_at, t.value ->> 1) FROM json_each(?) AS t ' +
        'WHERE cache_entries.key = t.value ->> 0',
    ),
    // Idempotency records and the blobs they reference are never evicted: a size bound must not
    // drop a recorded side effect, or it would run again. (The ledger's history can go.) Walks an
    // index that holds no such rows (its WHERE is the NOT term here), so it never steps over them.
    leastRecentlyUsed: db.prepare<[string, number], VictimRow>(
      'SELECT key, size, expires_at FROM cache_entries INDEXED BY cache_entries_evictable ' +
        `WHERE key <> ? AND NOT ${protectedKey('key')} ORDER BY accessed_at LIMIT ?`,
    ),
    // What the bounds count: everything but idempotency records and their blobs.
    evictableTotals: db.prepare<[], Totals>(
      'SELECT t.entries - p.entries AS entries, t.bytes - p.bytes AS bytes ' +
        'FROM cache_totals AS t, cache_protected_totals AS p WHERE t.id = 1 AND p.id = 1',
    ),
    // A prefix without a colon (a tier, or everything) spans namespaces: sorted, expired first.
    // Also a namespace's trim while its indexes (namespaceTrims) cannot be built.
    leastRecentlyUsedIn: range<VictimRow>(
      'SELECT key, size, expires_at FROM cache_entries WHERE key >= @lower $upper ' +
        'ORDER BY coalesce(expires_at <= @now, 0) DESC, accessed_at',
    ),
    acquireLock: db.prepare<[Record<string, unknown>]>(
      'INSERT INTO cache_locks (name, owner, expires_at) VALUES (@name, @owner, @expiresAt) ' +
        'ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at ' +
        'WHERE cache_locks.expires_at <= @now OR cache_locks.owner = excluded.owner',
    ),
    // The owner's row goes even once its lease ran out (nobody else took it, or the owner would
    // differ); releasing reports whether the lease was still held.
    releaseLock: db
      .prepare<[Record<string, unknown>], number>(
        'DELETE FROM cache_locks WHERE name = @name AND owner = @owner RETURNING expires_at',
      )
      .pluck(),
    pruneLocks: db.prepare<[number]>('DELETE FROM cache_locks WHERE expires_at <= ?'),
    incrementCounter: db.prepare<[string, string, number]>(
      'INSERT INTO cache_counters (scope, name, value) VALUES (?, ?, ?) ' +
        'ON CONFLICT (scope, name) DO UPDATE SET value = value + excluded.value',
    ),
    readCounters: db
      .prepare<[], [scope: string, name: string, value: number]>(
        'SELECT scope, name, value FROM cache_counters',
      )
      .raw(),
    clearCounters: range<never>('DELETE FROM cache_counters WHERE scope >= @lower $upper', {
      column: 'scope',
    }),
    publish: db.prepare<[string, string, number]>(
      'INSERT INTO cache_bus (channel, message, at) VALUES (?, ?, ?)',
    ),
    pruneBus: db.prepare<[number]>('DELETE FROM cache_bus WHERE at < ?'),
    lastBusId: db.prepare<[], number>('SELECT coalesce(max(id), 0) FROM cache_bus').pluck(),
    busAfter: db.prepare<[number, number], BusRow>(
      'SELECT id, channel, message FROM cache_bus WHERE id > ? ORDER BY id LIMIT ?',
    ),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/**
 * A namespace's expired entries, then its live ones least recently used first, each walked in
 * an index (stepped only as far as the trim needs), never sorted. @namespace is the namespace of
 * the prefix; the key range narrows it for a longer prefix. Prepared once NAMESPACE_INDEXES
 * exist: INDEXED BY names them.
 */
function prepareNamespaceTrims(db: BetterSqlite3.Database) {
  const range = (sql: string): RangeStatement<VictimRow> => ({
    bounded: db.prepare(sql.replace('$upper', 'AND key < @upper')),
    open: db.prepare(sql.replace('$upper', '')),
  });
  return {
    expiredIn: range(
      'SELECT key, size, expires_at FROM cache_entries INDEXED BY cache_entries_namespace_expires_at ' +
        `WHERE ${NAMESPACE} = @namespace AND expires_at <= @now AND key >= @lower $upper ORDER BY expires_at`,
    ),
    leastRecentlyUsedInNamespace: range(
      'SELECT key, size, expires_at FROM cache_entries INDEXED BY cache_entries_namespace_accessed_at ' +
        `WHERE ${NAMESPACE} = @namespace AND key >= @lower $upper ORDER BY accessed_at`,
    ),
  };
}

type NamespaceTrims = ReturnType<typeof prepareNamespaceTrims>;

/**
 * The open backends of each connection. `PRAGMA data_version` does not move for a connection's
 * own commits, so backends sharing one passed-in `database` never see each other's bus messages
 * by polling: `publish` hands them over directly, as to its own subscribers.
 */
const storesByConnection = new WeakMap<BetterSqlite3.Database, Set<SqliteStore>>();

class SqliteStore implements SqliteBackend {
  readonly specificationVersion = BACKEND_SPECIFICATION_VERSION;
  readonly name = 'sqlite';
  readonly capabilities = CAPABILITIES;

  private readonly db: BetterSqlite3.Database;
  private readonly owned: boolean;
  private readonly location: string;
  private readonly busyTimeoutMs: number;
  private readonly clock: Clock;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly bounded: boolean;
  private readonly touchFlushIntervalMs: number;
  private readonly touchFlushSize: number;
  private readonly touchGranularityMs: number;
  private readonly s: Statements;
  /** Set by the first namespace trim that has to evict, once it found or built their indexes. */
  private namespaceTrims: NamespaceTrims | undefined;
  private readonly readMany: BetterSqlite3.Transaction<(keys: readonly string[]) => (EntryRow | undefined)[]>;
  private readonly storeBounded: BetterSqlite3.Transaction<(key: string, entry: StoredEntry) => unknown>;

  /** Key -> time of its latest read, not yet written to `accessed_at`. */
  private touches = new Map<string, number>();
  private touchTimer: ReturnType<typeof setTimeout> | undefined;
  private flushQueued = false;
  /** Set after a background flush met a locked database: retry on the timer only, not per read. */
  private backingOff = false;
  private evictions = 0;
  private closed = false;
  private readonly busPollMs: number;
  /** Bus subscribers by channel; the poll timer runs while there is any. */
  private readonly listeners = new Map<string, Set<(message: string) => void>>();
  private busTimer: ReturnType<typeof setInterval> | undefined;
  /** Highest bus message id delivered (or present when the first subscriber came). */
  private busSeen = 0;
  /** `PRAGMA data_version` at the last check: it changes when another connection commits. */
  private dataVersion = -1;
  private published = 0;
  /** Messages waiting for the end of the tick, written together by `writeBus`. */
  private busQueue: [channel: string, message: string][] = [];
  private busWrite: Promise<void> | undefined;
  /** Settles `busWrite`; set while a batch waits to be written (or retried). */
  private busSettle:
    | { resolve(): void; reject(error: unknown): void; since: number; retrying: boolean }
    | undefined;
  private busRetry: NodeJS.Timeout | undefined;
  /** Ids of rows this backend wrote past the poll position: delivered already, skipped when read. */
  private readonly ownIds = new Set<number>();

  constructor(db: BetterSqlite3.Database, owned: boolean, location: string, settings: Settings) {
    this.db = db;
    this.owned = owned;
    this.location = location;
    this.busyTimeoutMs = settings.busyTimeoutMs;
    this.clock = settings.clock;
    this.maxEntries = settings.maxEntries;
    this.maxBytes = settings.maxBytes;
    this.bounded = this.maxEntries !== Infinity || this.maxBytes !== Infinity;
    this.touchFlushIntervalMs = settings.touchFlushIntervalMs;
    this.touchFlushSize = settings.touchFlushSize;
    this.touchGranularityMs = settings.touchGranularityMs ?? 1000;
    this.busPollMs = Math.max(1, settings.busPollMs);
    this.s = prepareStatements(db);
    this.readMany = db.transaction((keys: readonly string[]) => keys.map((key) => this.readRow(key)));
    // IMMEDIATE: the bound check reads before it writes, and a deferred transaction that must
    // upgrade its lock fails with SQLITE_BUSY at once instead of waiting busyTimeoutMs.
    this.storeBounded = db.transaction((key: string, entry: StoredEntry) => this.store(key, entry, true));
    let stores = storesByConnection.get(db);
    if (!stores) storesByConnection.set(db, (stores = new Set()));
    stores.add(this);
  }

  /** This backend and the others open on its connection. */
  private connectionStores(): Iterable<SqliteStore> {
    return storesByConnection.get(this.db) ?? [this];
  }

  /**
   * The row of `key`. A key `isStorable` refuses was never written (writes refuse it), and
   * SQLite would read it as another one (a lone surrogate becomes U+FFFD): it is absent.
   */
  private readRow(key: string): EntryRow | undefined {
    return isStorable(key) ? this.s.get.get(key) : undefined;
  }

  async get(key: string): Promise<StoredEntry | undefined> {
    if (this.closed) throw this.closedError();
    let row: EntryRow | undefined;
    try {
      row = this.readRow(key);
    } catch (error) {
      throw this.wrap(error, 'get');
    }
    return row === undefined ? undefined : this.hit(key, row, this.clock.now());
  }

  async getMany(keys: readonly string[]): Promise<(StoredEntry | undefined)[]> {
    return this.readRows('getMany', keys, true);
  }

  async peekMany(keys: readonly string[]): Promise<(StoredEntry | undefined)[]> {
    return this.readRows('peekMany', keys, false);
  }

  private readRows(operation: string, keys: readonly string[], touch: boolean): (StoredEntry | undefined)[] {
    return this.run(operation, () => {
      const now = this.clock.now();
      // One read transaction: a consistent snapshot, and one lock instead of one per key.
      const rows = keys.length > 1 ? this.readMany.deferred(keys) : keys.map((key) => this.readRow(key));
      return rows.map((row, index) =>
        row === undefined ? undefined : this.hit(keys[index]!, row, now, touch),
      );
    });
  }

  async set(key: string, entry: StoredEntry): Promise<void> {
    this.run('set', () => {
      checkEntry('sqlite', key, entry.tags);
      const tooBig = this.bounded ? this.storeBounded.immediate(key, entry) : this.store(key, entry, false);
      if (tooBig !== undefined) throw this.refused(entry.value.byteLength, true, tooBig);
    });
  }

  async setMany(entries: ReadonlyArray<readonly [key: string, entry: StoredEntry]>): Promise<void> {
    if (entries.length === 0) return;
    this.run('setMany', () => {
      for (const [key, entry] of entries) checkEntry('sqlite', key, entry.tags);
      // The others are written all the same; the first refused one is reported once they are.
      let refused: { size: number; cause: unknown } | undefined;
      this.db
        .transaction(() => {
          for (const [key, entry] of entries) {
            const tooBig = this.store(key, entry, false);
            if (tooBig !== undefined) refused ??= { size: entry.value.byteLength, cause: tooBig };
          }
          this.enforceBounds(entries[entries.length - 1]![0]);
        })
        .immediate();
      if (refused) throw this.refused(refused.size, true, refused.cause);
    });
  }

  async add(key: string, entry: StoredEntry): Promise<boolean> {
    return this.run('add', () => {
      checkEntry('sqlite', key, entry.tags);
      const now = this.clock.now();
      const size = entry.value.byteLength;
      if (size > this.maxBytes) return false;
      const insert = () => {
        const { changes } = this.s.insertIfAbsent.run(
          key,
          entry.expiresAt ?? null,
          now,
          size,
          tagsColumn(entry.tags),
          entry.value,
          now,
        );
        if (changes > 0) this.enforceBounds(key);
        return changes > 0;
      };
      try {
        return this.bounded ? this.db.transaction(insert).immediate() : insert();
      } catch (error) {
        // Nothing was written: a live entry stays, as for any add that does not store.
        throw isTooBig(error) ? this.refused(size, false, error) : error;
      }
    });
  }

  async has(key: string): Promise<boolean> {
    return this.run('has', () => {
      if (!isStorable(key)) return false;
      const expiresAt = this.s.expiresAt.get(key);
      return expiresAt !== undefined && (expiresAt === null || expiresAt > this.clock.now());
    });
  }

  async delete(key: string): Promise<boolean> {
    return this.run('delete', () => {
      // Never stored, and SQLite would take it for another key (see readRow).
      if (!isStorable(key)) return false;
      const expiresAt = this.s.deleteKey.get(key);
      this.touches.delete(key);
      return expiresAt !== undefined && isLive(expiresAt, this.clock.now());
    });
  }

  async deleteByTag(tag: string): Promise<number> {
    return this.run('deleteByTag', () =>
      isStorable(tag) ? countLive(this.s.deleteByTag.all(tag), this.clock.now()) : 0,
    );
  }

  async deleteByPrefix(prefix: string): Promise<number> {
    return this.run('deleteByPrefix', () => {
      checkStorable('sqlite', 'prefix', prefix);
      const range = rangeOf(prefix);
      return countLive(pick(this.s.deleteRange, range).all(range), this.clock.now());
    });
  }

  async clear(): Promise<void> {
    this.run('clear', () => {
      this.touches.clear();
      this.db
        .transaction(() => {
          this.s.deleteAll.run();
          this.s.deleteNamespaceTotals.run();
        })
        .immediate();
    });
  }

  async prune(): Promise<number> {
    return this.run('prune', () => {
      const now = this.clock.now();
      // Bus messages and lapsed locks (a crashed holder's) are not entries (not counted), but go too.
      this.s.pruneBus.run(now - BUS_RETENTION_MS);
      this.s.pruneLocks.run(now);
      return this.s.prune.run(now).changes;
    });
  }

  async *keys(options: ScanOptions = {}): AsyncIterable<string> {
    const limit = checkLimit('sqlite', 'batchSize', options.batchSize ?? DEFAULT_SCAN_BATCH, false) || 1;
    checkStorable('sqlite', 'prefix', options.prefix ?? '');
    const range = rangeOf(options.prefix ?? '');
    let cursor: string | undefined;
    // Keyset pagination: each page is a fresh index range scan after the last key seen, so no
    // statement stays open across `yield` and concurrent writes cannot break the iteration.
    for (;;) {
      const page = this.run('keys', () => {
        const now = this.clock.now();
        return cursor === undefined
          ? pick(this.s.keysFrom, range).all({ ...range, now, limit })
          : pick(this.s.keysAfter, range).all({ ...range, cursor, now, limit });
      });
      for (const key of page) yield key;
      if (page.length < limit) return;
      cursor = page[page.length - 1];
    }
  }

  async stats(): Promise<BackendStats> {
    return this.run('stats', () => ({ ...this.totals(), evictions: this.evictions }));
  }

  async statsFor(prefix: string): Promise<PrefixStats> {
    return this.run('statsFor', () => {
      checkStorable('sqlite', 'prefix', prefix);
      return this.prefixTotals(prefix);
    });
  }

  async trim(prefix: string, bounds: TrimBounds, onEvicted?: (key: string) => void): Promise<number> {
    checkStorable('sqlite', 'prefix', prefix);
    const maxEntries = checkLimit('sqlite', 'trim maxEntries', bounds.maxEntries ?? Infinity, true);
    const maxBytes = checkLimit('sqlite', 'trim maxBytes', bounds.maxBytes ?? Infinity, true);
    const live: string[] = [];
    const colon = prefix.indexOf(':');
    const removed = await this.run('trim', () => {
      if (colon !== -1) this.prepareNamespaceTrims(prefix, maxEntries, maxBytes);
      return this.db
        .transaction(() => {
          let { entries, bytes } = this.prefixTotals(prefix);
          if (entries <= maxEntries && bytes <= maxBytes) return 0;
          this.writeTouches();
          const range = rangeOf(prefix);
          const now = this.clock.now();
          const namespaced = colon === -1 ? undefined : this.namespaceTrims;
          // Expired entries first, whatever their recency: a live entry never makes room for them.
          const passes = namespaced
            ? [pick(namespaced.expiredIn, range), pick(namespaced.leastRecentlyUsedInNamespace, range)]
            : [pick(this.s.leastRecentlyUsedIn, range)];
          const parameters = { ...range, now, namespace: prefix.slice(0, colon + 1) };
          let removed = 0;
          for (const pass of passes) {
            if (entries <= maxEntries && bytes <= maxBytes) break;
            const victims: VictimRow[] = [];
            // Collected first: better-sqlite3 allows no other statement while an iterator is open.
            // Leaving the loop early stops the walk: only the rows that go are visited.
            for (const row of pass.iterate(parameters)) {
              if (entries <= maxEntries && bytes <= maxBytes) break;
              victims.push(row);
              entries--;
              bytes -= row.size;
            }
            for (const victim of victims) {
              this.s.evictKey.run(victim.key);
              if (!isLive(victim.expires_at, now)) continue;
              this.evictions++;
              live.push(victim.key);
            }
            removed += victims.length;
          }
          return removed;
        })
        .immediate();
    });
    // Named once the transaction committed (a listener runs outside it).
    if (onEvicted) for (const key of live) onEvicted(key);
    return removed;
  }

  /**
   * Prepares the namespace trims' statements the first time a trim under a namespace has to
   * evict, building their indexes if the file has none yet (each in a short transaction of its
   * own, before the trim's). A quota that is never reached never builds them. The build does not
   * wait on another connection's lock: while the file is busy, trims sort (leastRecentlyUsedIn:
   * expired first, then least recently used, as the indexed walk; among expired entries, and among
   * entries used in the same millisecond, the two may pick different ones) and the next one tries
   * again.
   */
  private prepareNamespaceTrims(prefix: string, maxEntries: number, maxBytes: number): void {
    if (this.namespaceTrims) return;
    const { entries, bytes } = this.prefixTotals(prefix);
    if (entries <= maxEntries && bytes <= maxBytes) return;
    let built = false;
    this.withoutBusyWait(() => {
      built = ensureIndexes(this.db, NAMESPACE_INDEXES);
    });
    if (built) this.namespaceTrims = prepareNamespaceTrims(this.db);
  }

  async acquireLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    if (!(ttlMs > 0 && Number.isFinite(ttlMs))) {
      throw cacheError('E_INVALID_OPTION', 'sqlite', `lock ttlMs must be a positive number, got ${ttlMs}`);
    }
    return this.run('acquireLock', () => {
      const now = this.clock.now();
      return this.s.acquireLock.run({ name, owner, expiresAt: now + ttlMs, now }).changes > 0;
    });
  }

  async releaseLock(name: string, owner: string): Promise<boolean> {
    return this.run('releaseLock', () => {
      const expiresAt = this.s.releaseLock.get({ name, owner });
      return expiresAt !== undefined && expiresAt > this.clock.now();
    });
  }

  async incrementCounters(scope: string, deltas: Readonly<Record<string, number>>): Promise<void> {
    const changes = Object.entries(deltas).filter(([, delta]) => delta !== 0);
    for (const [name, delta] of changes) {
      if (!Number.isFinite(delta)) {
        throw cacheError(
          'E_INVALID_OPTION',
          'sqlite',
          `counter "${name}" delta must be a finite number, got ${delta}`,
        );
      }
    }
    if (changes.length === 0) return;
    this.run('incrementCounters', () => {
      this.db
        .transaction(() => {
          for (const [name, delta] of changes) this.s.incrementCounter.run(scope, name, delta);
        })
        .immediate();
    });
  }

  async readCounters(): Promise<Record<string, Record<string, number>>> {
    return this.run('readCounters', () => {
      const counters: Record<string, Record<string, number>> = {};
      for (const [scope, name, value] of this.s.readCounters.all()) (counters[scope] ??= {})[name] = value;
      return counters;
    });
  }

  async clearCounters(scopePrefix = ''): Promise<void> {
    this.run('clearCounters', () => {
      const range = rangeOf(scopePrefix);
      pick(this.s.clearCounters, range).run(range);
    });
  }

  async flush(): Promise<void> {
    this.run('flush', () => this.writeTouches());
  }

  private swapTransaction:
    | BetterSqlite3.Transaction<
        (key: string, expected: Uint8Array | null, next: StoredEntry | null) => boolean
      >
    | undefined;

  async compareAndSwap(key: string, expected: Uint8Array | null, next: StoredEntry | null): Promise<boolean> {
    checkEntry('sqlite', key, next?.tags);
    // A conditional write must not report success for a value the store would drop.
    if (next !== null && next.value.byteLength > this.maxBytes) {
      throw tooLarge('sqlite', next.value.byteLength, this.maxBytes);
    }
    return this.run('compareAndSwap', () => {
      // IMMEDIATE: the comparison must happen under the write lock, or another process could
      // write between our read and our write.
      this.swapTransaction ??= this.db.transaction((key, expected, next) => {
        const now = this.clock.now();
        const row = this.s.get.get(key);
        const live = row !== undefined && isLive(row[1], now);
        if (expected === null ? live : !live || !sameBytes(row![0], expected)) return false;
        if (next === null || (next.expiresAt !== undefined && next.expiresAt <= now)) {
          if (row !== undefined) this.s.evictKey.run(key);
          this.touches.delete(key);
        } else {
          const tooBig = this.store(key, next, true);
          // Thrown inside the transaction: rolled back, the current entry stays as it was.
          if (tooBig !== undefined) throw this.refused(next.value.byteLength, false, tooBig);
        }
        return true;
      });
      return this.swapTransaction.immediate(key, expected, next);
    });
  }

  /**
   * Appends `message` to the file's bus. Messages published in the same tick are written in one
   * transaction (a burst of writes costs one commit, not one each). Subscribers of this backend,
   * and of the others open on the same connection, get it at once: `data_version` does not
   * change for a connection's own commits, so their polls would never read it.
   */
  async publish(channel: string, message: string): Promise<void> {
    if (this.closed) throw this.closedError();
    for (const store of this.connectionStores()) {
      if (store.listeners.has(channel)) queueMicrotask(() => store.deliver(channel, message));
    }
    this.busQueue.push([channel, message]);
    this.busWrite ??= new Promise<void>((resolve, reject) => {
      this.busSettle = { resolve, reject, since: performance.now(), retrying: false };
      setImmediate(this.flushBus);
    });
    return this.busWrite;
  }

  /**
   * Writes the queued bus messages. A write refused by another connection's lock (SQLITE_BUSY)
   * keeps them queued and is retried every BUS_RETRY_MS, its publishers waiting, for up to
   * BUS_GIVE_UP_MS: a message dropped here would leave other processes serving what it
   * invalidated from their memory levels. Retries do not wait on the lock (busy_timeout 0), so
   * they never block the event loop for busyTimeoutMs each.
   */
  private readonly flushBus = (): void => {
    this.busRetry = undefined;
    const settle = this.busSettle;
    if (this.closed || !settle) return;
    try {
      if (settle.retrying) this.withoutBusyWait(() => this.writeBus());
      else this.writeBus();
    } catch (error) {
      if (performance.now() - settle.since < BUS_GIVE_UP_MS) {
        settle.retrying = true;
        this.busRetry = setTimeout(this.flushBus, BUS_RETRY_MS);
        this.busRetry.unref();
        return;
      }
      this.busQueue = [];
      this.endBusWrite()?.reject(error);
      return;
    }
    this.endBusWrite()?.resolve();
  };

  /** Runs `fn` with the connection's busy timeout at 0: a locked file fails at once instead of blocking. */
  private withoutBusyWait(fn: () => void): void {
    const timeout = Number(this.db.pragma('busy_timeout', { simple: true }));
    this.db.pragma('busy_timeout = 0');
    try {
      fn();
    } finally {
      if (this.db.open) this.db.pragma(`busy_timeout = ${timeout}`);
    }
  }

  private endBusWrite(): { resolve(): void; reject(error: unknown): void } | undefined {
    const settle = this.busSettle;
    this.busSettle = undefined;
    this.busWrite = undefined;
    if (this.busRetry) clearTimeout(this.busRetry);
    this.busRetry = undefined;
    return settle;
  }

  private writeBus(): void {
    const batch = this.busQueue;
    if (batch.length === 0) return;
    this.run('publish', () => {
      const now = this.clock.now();
      let last = 0;
      this.db
        .transaction(() => {
          for (const [channel, message] of batch)
            last = Number(this.s.publish.run(channel, message, now).lastInsertRowid);
          // Old messages go now and then, and on a backend's first publish: short-lived writers
          // (a CLI, a cron job) may never reach the periodic prune.
          const previous = this.published;
          this.published += batch.length;
          if (
            previous === 0 ||
            Math.floor(previous / BUS_PRUNE_EVERY) !== Math.floor(this.published / BUS_PRUNE_EVERY)
          ) {
            this.s.pruneBus.run(now - BUS_RETENTION_MS);
          }
        })
        .immediate();
      // Written: only now may the batch leave the queue (a failed write keeps it for a retry).
      this.busQueue = [];
      const first = last - batch.length + 1;
      for (const store of this.connectionStores()) store.skipDelivered(first, last);
    });
  }

  /**
   * Rows `first`..`last`, written on this connection, were delivered already by `publish`: the
   * poll skips them when another connection's commit makes it read past them. Ids are consecutive
   * inside the transaction, so when nothing foreign is pending before them the poll position
   * simply moves past them.
   */
  private skipDelivered(first: number, last: number): void {
    if (!this.busTimer) return;
    if (first === this.busSeen + 1) this.busSeen = last;
    else for (let id = first; id <= last; id++) this.ownIds.add(id);
  }

  private deliver(channel: string, message: string): void {
    for (const listener of this.listeners.get(channel) ?? []) {
      try {
        listener(message);
      } catch {
        // one listener's failure must not stop the others, nor the next check
      }
    }
  }

  /**
   * Delivers messages other connections publish on `channel`, checked every `busPollMs` (one
   * `PRAGMA data_version` per check while nobody else commits); those of backends on the same
   * connection arrive from their `publish`. Messages published before the first subscription are
   * not replayed.
   */
  async subscribe(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>> {
    this.run('subscribe', () => {
      if (!this.busTimer) {
        this.busSeen = this.s.lastBusId.get() ?? 0;
        // No data_version yet: the first poll reads past busSeen whatever the version says, so a
        // message another process commits while this subscription starts is delivered, not
        // counted as seen by a version read after it.
        this.dataVersion = -1;
        this.busTimer = setInterval(() => this.pollBus(), timerMs(this.busPollMs));
        this.busTimer.unref();
      }
      let set = this.listeners.get(channel);
      if (!set) this.listeners.set(channel, (set = new Set()));
      set.add(onMessage);
    });
    return async () => {
      const set = this.listeners.get(channel);
      set?.delete(onMessage);
      if (set?.size === 0) this.listeners.delete(channel);
      if (this.listeners.size === 0) this.stopBus();
    };
  }

  private pollBus(): void {
    if (this.closed) return;
    if (!this.db.open) {
      // The application closed the connection it gave us: nothing more to hear.
      this.stopBus();
      return;
    }
    try {
      const version = this.db.pragma('data_version', { simple: true }) as number;
      if (version === this.dataVersion) return;
      for (;;) {
        const rows = this.s.busAfter.all(this.busSeen, BUS_BATCH);
        for (const row of rows) {
          this.busSeen = row.id;
          if (!this.ownIds.delete(row.id)) this.deliver(row.channel, row.message);
        }
        if (rows.length < BUS_BATCH) break;
      }
      // Only once read: a failed read is tried again by the next check.
      this.dataVersion = version;
    } catch {
      // A busy or briefly unreadable file: the next check catches up from busSeen.
    }
  }

  private stopBus(): void {
    if (this.busTimer) clearInterval(this.busTimer);
    this.busTimer = undefined;
    // A later subscription starts from the end of the bus: rows skipped for being ours are moot.
    this.ownIds.clear();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // Queued bus messages get one last try; their publishers learn whether it worked.
    if (this.busSettle) {
      try {
        this.writeBus();
        this.endBusWrite()?.resolve();
      } catch (error) {
        this.busQueue = [];
        this.endBusWrite()?.reject(error);
      }
    }
    this.stopBus();
    this.listeners.clear();
    this.cancelFlush();
    try {
      this.writeTouches();
    } catch {
      // LRU touches are hints; losing them must not prevent closing.
    }
    this.closed = true;
    storesByConnection.get(this.db)?.delete(this);
    if (this.owned) this.db.close();
  }

  private hit(key: string, row: EntryRow, now: number, touch = true): StoredEntry | undefined {
    const [value, expiresAt, tags, accessedAt] = row;
    if (expiresAt !== null && expiresAt <= now) return undefined;
    if (touch && now - accessedAt >= this.touchGranularityMs) this.touch(key, now);
    return {
      // better-sqlite3 hands out Buffers; a plain view keeps the contract's type without a copy.
      value: new Uint8Array(value.buffer, value.byteOffset, value.byteLength),
      expiresAt: expiresAt ?? undefined,
      tags: tags === null ? undefined : (JSON.parse(tags) as string[]),
    };
  }

  /**
   * Upserts one entry; the caller provides the transaction when bounds must be enforced. Returns
   * the driver's error when the entry is over SQLite's length limit (see `refused`): the old
   * entry is deleted then, and the caller reports it once its transaction committed.
   */
  private store(key: string, entry: StoredEntry, enforce: boolean): unknown {
    const size = entry.value.byteLength;
    this.touches.delete(key);
    if (size > this.maxBytes) {
      // Dropping the old value even though the new one is refused: serving it would be stale.
      this.s.evictKey.run(key);
      return undefined;
    }
    try {
      this.s.upsert.run(
        key,
        entry.expiresAt ?? null,
        this.clock.now(),
        size,
        tagsColumn(entry.tags),
        entry.value,
      );
    } catch (error) {
      if (!isTooBig(error)) throw error;
      // Refused like a value over maxBytes, and for the same reason the old value goes.
      this.s.evictKey.run(key);
      return error;
    }
    if (enforce) this.enforceBounds(key);
    return undefined;
  }

  /** The error for a value `store` could not write (`removed`: the key's old entry was deleted). */
  private refused(size: number, removed: boolean, cause: unknown): CacheError {
    return tooBigForSqlite(size, this.location, removed, cause);
  }

  /**
   * Evicts least recently used entries (never `keep`) until within bounds; runs inside a write
   * transaction. Idempotency records and their blobs are neither counted nor evicted.
   */
  private enforceBounds(keep: string): void {
    if (!this.bounded) return;
    let { entries, bytes } = this.evictableTotals();
    if (entries <= this.maxEntries && bytes <= this.maxBytes) return;
    // Expired rows go first and free; they are not evictions.
    this.s.prune.run(this.clock.now());
    this.writeTouches();
    ({ entries, bytes } = this.evictableTotals());
    while (entries > this.maxEntries || bytes > this.maxBytes) {
      const batch = this.s.leastRecentlyUsed.all(keep, EVICTION_BATCH);
      if (batch.length === 0) return;
      for (const row of batch) {
        if (entries <= this.maxEntries && bytes <= this.maxBytes) return;
        this.s.evictKey.run(row.key);
        this.evictions++;
        entries--;
        bytes -= row.size;
      }
    }
  }

  private totals(): Totals {
    return this.s.totals.get() ?? { entries: 0, bytes: 0 };
  }

  private evictableTotals(): Totals {
    return this.s.evictableTotals.get() ?? { entries: 0, bytes: 0 };
  }

  private prefixTotals(prefix: string): PrefixStats {
    if (prefix === '') return this.totals();
    const colon = prefix.indexOf(':');
    if (colon === prefix.length - 1) return this.s.namespaceTotals.get(prefix) ?? { entries: 0, bytes: 0 };
    const range = rangeOf(prefix);
    if (colon !== -1) return pick(this.s.rangeTotals, range).get(range) ?? { entries: 0, bytes: 0 };
    // Under a colon-free prefix (a tier), every key's namespace starts with the prefix too, so the
    // namespace totals add up; only keys without any colon (the '' row) need their range scanned.
    const totals = pick(this.s.namespaceRangeTotals, range).get(range) ?? { entries: 0, bytes: 0 };
    if ((this.s.namespaceTotals.get('')?.entries ?? 0) > 0) {
      const loose = pick(this.s.colonFreeRangeTotals, range).get(range);
      totals.entries += loose?.entries ?? 0;
      totals.bytes += loose?.bytes ?? 0;
    }
    return totals;
  }

  /** Records a read for LRU order without writing: reads must stay a single SELECT. */
  private touch(key: string, now: number): void {
    this.touches.set(key, now);
    if (this.touches.size >= this.touchFlushSize && !this.flushQueued && !this.backingOff) {
      this.flushQueued = true;
      // Deferred so that the read which crossed the threshold does not pay for the write.
      setImmediate(this.backgroundFlush);
    } else {
      this.armFlushTimer();
    }
  }

  private armFlushTimer(): void {
    if (this.touchTimer !== undefined) return;
    this.touchTimer = setTimeout(this.backgroundFlush, timerMs(this.touchFlushIntervalMs));
    this.touchTimer.unref();
  }

  private readonly backgroundFlush = (): void => {
    this.cancelFlush();
    if (this.closed || this.touches.size === 0) return;
    if (!this.db.open) {
      // The application closed the connection it gave us: the hints have nowhere to go.
      this.touches.clear();
      return;
    }
    const pending = this.touches;
    // A background flush must not block the event loop for busyTimeoutMs behind another
    // process's write, so it gives up at once and retries when the timer fires again.
    try {
      this.withoutBusyWait(() => this.writeTouches());
      this.backingOff = false;
    } catch {
      for (const [key, time] of pending) if (!this.touches.has(key)) this.touches.set(key, time);
      // Past this size the hints are not worth the memory; LRU order degrades gracefully.
      if (this.touches.size > 10 * this.touchFlushSize) this.touches.clear();
      this.backingOff = true;
      this.armFlushTimer();
    }
  };

  private writeTouches(): void {
    if (this.touches.size === 0) return;
    const batch = JSON.stringify(Array.from(this.touches));
    this.touches = new Map();
    this.s.touch.run(batch);
  }

  private cancelFlush(): void {
    if (this.touchTimer !== undefined) clearTimeout(this.touchTimer);
    this.touchTimer = undefined;
    this.flushQueued = false;
  }

  private run<T>(operation: string, fn: () => T): T {
    if (this.closed) throw this.closedError();
    try {
      return fn();
    } catch (error) {
      throw this.wrap(error, operation);
    }
  }

  private wrap(error: unknown, operation: string): CacheError {
    const cacheFile = this.owned && this.location !== ':memory:' && this.location !== '';
    return wrapError(error, operation, this.location, this.busyTimeoutMs, cacheFile);
  }

  private closedError(): CacheError {
    return cacheError('E_CLOSED', 'sqlite', 'this backend was closed; open a new one with sqliteBackend()');
  }
}

function wrapError(
  error: unknown,
  operation: string,
  location: string,
  busyTimeoutMs: number,
  /** The file is known to be a cache store: deleting it is a fix worth suggesting. */
  cacheFile: boolean,
): CacheError {
  if (CacheError.isInstance(error)) return error;
  if (isTooBig(error)) return tooBigForSqlite(undefined, location, false, error);
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('SQLITE_BUSY')) {
    return cacheError(
      'E_TIMEOUT',
      'sqlite',
      `${operation} waited over ${busyTimeoutMs} ms for another connection's lock on "${location}"; ` +
        'raise busyTimeoutMs or write from fewer processes at once',
      { cause: error },
    );
  }
  return cacheError(
    'E_BACKEND',
    'sqlite',
    `${operation} failed on "${location}": ${messageOf(error)}; ` +
      (cacheFile
        ? 'check that the file is a writable SQLite database, or delete it to start an empty cache'
        : 'check that it is a writable SQLite database'),
    { cause: error },
  );
}

/**
 * SQLite's longest string, blob or row: SQLITE_LIMIT_LENGTH as better-sqlite3 sets it (the
 * longest string or Buffer Node can hold, within SQLite's own SQLITE_MAX_LENGTH of 10^9).
 */
const SQLITE_LENGTH_LIMIT = Math.min(1_000_000_000, constants.MAX_LENGTH, constants.MAX_STRING_LENGTH);

/**
 * Whether a write failed for being over SQLITE_LENGTH_LIMIT: better-sqlite3 refuses to bind a
 * value over it (RangeError), SQLite a row over it (SQLITE_TOOBIG).
 */
function isTooBig(error: unknown): boolean {
  if ((error as { code?: unknown } | null)?.code === 'SQLITE_TOOBIG') return true;
  return error instanceof Error && error.name === 'RangeError' && /too big/i.test(error.message);
}

function tooBigForSqlite(
  size: number | undefined,
  location: string,
  removed: boolean,
  cause: unknown,
): CacheError {
  return cacheError(
    'E_INVALID_OPTION',
    'sqlite',
    `${size === undefined ? 'a key, tag or value' : `a value of ${size} bytes`} is over SQLite's length limit ` +
      `(SQLITE_LIMIT_LENGTH: ${SQLITE_LENGTH_LIMIT} bytes per entry, key and tags included) and cannot be ` +
      `stored in "${location}"` +
      (removed
        ? '; the entry the key held was removed, so that its old value is not served in its place'
        : '') +
      '; store smaller values (compress or split them)',
    { cause },
  );
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function tagsColumn(tags: readonly string[] | undefined): string | null {
  if (tags === undefined || tags.length === 0) return null;
  return JSON.stringify(tags.length === 1 ? tags : [...new Set(tags)]);
}

function isLive(expiresAt: number | null, now: number): boolean {
  return expiresAt === null || expiresAt > now;
}

function countLive(expiries: readonly (number | null)[], now: number): number {
  let live = 0;
  for (const expiresAt of expiries) if (isLive(expiresAt, now)) live++;
  return live;
}

function rangeOf(prefix: string): Range {
  const upper = prefixUpperBound(prefix);
  return upper === undefined ? { lower: prefix } : { lower: prefix, upper };
}

function pick<Result>(statement: RangeStatement<Result>, range: Range) {
  return range.upper === undefined ? statement.open : statement.bounded;
}
