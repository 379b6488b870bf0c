/**
 * The contract between the cache engine and a storage backend.
 *
 * Values cross it as encoded bytes (see `codec/`) plus the metadata the backend needs to
 * expire, tag and account for them. Keys are opaque strings built by `keys/`; the engine
 * guarantees they start with `<namespace>:` so that `deleteByPrefix` can drop a namespace.
 *
 * Backends must treat an expired entry as absent on every read even before `prune` runs.
 */
export const BACKEND_SPECIFICATION_VERSION = 'v1' as const;

export interface StoredEntry {
  /** Encoded entry bytes, as produced by the codec. Backends store them verbatim. */
  value: Uint8Array;
  /** Absolute expiry time in epoch milliseconds; `undefined` means the entry never expires. */
  expiresAt?: number | undefined;
  /** Tags for group invalidation. */
  tags?: readonly string[] | undefined;
}

export interface BackendCapabilities {
  /** `add` (atomic create-if-absent) is implemented. */
  readonly createIfAbsent: boolean;
  /** `acquireLock` / `releaseLock` are implemented and work across processes. */
  readonly locks: boolean;
  /** `publish` / `subscribe` are implemented (cross-instance invalidation). */
  readonly pubsub: boolean;
  /** Data outlives the process (and the backend instance). */
  readonly persistent: boolean;
  /** Several processes may share the same data. */
  readonly shared: boolean;
  /**
   * `compareAndSwap` is atomic across every process sharing the data. Detected from the method
   * when absent; a backend whose method is not atomic (a naive wrapper) must declare `false`.
   */
  readonly compareAndSwap?: boolean;
}

export interface BackendStats {
  /** Live (not yet pruned) entries. May include expired entries that no read has removed yet. */
  entries: number;
  /** Sum of stored value bytes. */
  bytes: number;
  /** Entries removed to respect a size bound since the backend was opened. */
  evictions: number;
}

export interface ScanOptions {
  /** Only keys starting with this prefix. */
  prefix?: string;
  /** Page size hint for backends that page. @default 500 */
  batchSize?: number;
}

export interface CacheBackend {
  readonly specificationVersion: typeof BACKEND_SPECIFICATION_VERSION;
  /** Short driver name, used in stats, events and error messages: `memory`, `sqlite`, `redis`. */
  readonly name: string;
  readonly capabilities: BackendCapabilities;

  get(key: string): Promise<StoredEntry | undefined>;
  /** Same order as `keys`; `undefined` for a miss. */
  getMany(keys: readonly string[]): Promise<(StoredEntry | undefined)[]>;
  /**
   * Like `getMany`, but the read is not a use: no LRU touch, so tools that list or export a
   * store (`llm-cache ls`, `export`) leave its eviction order alone. Optional: backends without
   * an LRU of their own need not implement it, and callers fall back to `getMany`.
   */
  peekMany?(keys: readonly string[]): Promise<(StoredEntry | undefined)[]>;
  set(key: string, entry: StoredEntry): Promise<void>;
  setMany(entries: ReadonlyArray<readonly [key: string, entry: StoredEntry]>): Promise<void>;
  /** Returns true when a live entry existed and was removed. */
  delete(key: string): Promise<boolean>;
  has(key: string): Promise<boolean>;
  /** Removes every entry carrying `tag`; returns how many were removed. */
  deleteByTag(tag: string): Promise<number>;
  /** Removes every entry whose key starts with `prefix`; returns how many were removed. */
  deleteByPrefix(prefix: string): Promise<number>;
  clear(): Promise<void>;
  /** Removes expired entries; returns how many were removed. */
  prune(): Promise<number>;
  /** Live keys, optionally under a prefix, in no particular order. */
  keys(options?: ScanOptions): AsyncIterable<string>;
  stats(): Promise<BackendStats>;
  close(): Promise<void>;

  /** Atomic create-if-absent (capability `createIfAbsent`). True when this call stored the entry. */
  add?(key: string, entry: StoredEntry): Promise<boolean>;
  /** Takes a lock for `ttlMs` owned by `owner` (capability `locks`). True when taken. */
  acquireLock?(name: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Releases a lock only if `owner` still holds it. */
  releaseLock?(name: string, owner: string): Promise<boolean>;
  /** Cross-instance messages (capability `pubsub`). */
  publish?(channel: string, message: string): Promise<void>;
  subscribe?(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>>;

  /** Entries and bytes under one key prefix (namespace quotas, per-namespace stats). */
  statsFor?(prefix: string): Promise<{ entries: number; bytes: number }>;
  /**
   * Evicts entries under `prefix` until within the limits, expired ones first, then the least
   * recently used; returns how many went, and names each live one to `onEvicted` when given
   * (the engine counts evictions from those names: expired entries swept on the way are not
   * evictions).
   */
  trim?(
    prefix: string,
    limits: { maxEntries?: number | undefined; maxBytes?: number | undefined },
    onEvicted?: (key: string) => void,
  ): Promise<number>;

  /**
   * Persistent counters, so that hit / miss / savings statistics survive restarts and add up
   * across processes. Increments must be atomic. Scopes are free-form strings chosen by the engine.
   */
  incrementCounters?(scope: string, deltas: Readonly<Record<string, number>>): Promise<void>;
  /**
   * Why entries of this store may be dropped before they expire when it runs short of memory
   * (a Redis `maxmemory` with an evicting policy), or undefined when they are not or it cannot
   * tell. The idempotency store warns once when its records are at risk.
   */
  evictionRisk?(): Promise<string | undefined>;
  readCounters?(): Promise<Record<string, Record<string, number>>>;
  clearCounters?(scopePrefix?: string): Promise<void>;

  /**
   * Atomic conditional write (capability `compareAndSwap`). When the live value under `key` is
   * byte-for-byte `expected` — or, with `expected === null`, when there is no live entry — it is
   * replaced by `next` (deleted when `next` is null or already expired). Returns true when the
   * condition held and the write was applied. An expired entry counts as absent, as everywhere.
   * The idempotency store builds its state transitions (create, lease takeover, pending →
   * succeeded) on this one primitive, read → decide → swap, retrying when another writer won.
   * A `next` the store would not keep (over its own `maxBytes`) is refused with a typed error,
   * never reported as written.
   */
  compareAndSwap?(key: string, expected: Uint8Array | null, next: StoredEntry | null): Promise<boolean>;
}

/**
 * Optional synchronous fast path. The memory backend implements it so that an L1 hit costs
 * no promise hop; the engine checks for it with `isSyncBackend`.
 */
export interface SyncReadableBackend extends CacheBackend {
  getSync(key: string): StoredEntry | undefined;
  setSync(key: string, entry: StoredEntry): void;
}

export function isSyncBackend(backend: CacheBackend): backend is SyncReadableBackend {
  return typeof (backend as Partial<SyncReadableBackend>).getSync === 'function';
}

/** Injected time source; backends default to `Date.now` so that fake timers work too. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** Whether `backend` implements `compareAndSwap` (declared by its capability, or detected). */
export function supportsCompareAndSwap(
  backend: CacheBackend,
): backend is CacheBackend & Required<Pick<CacheBackend, 'compareAndSwap'>> {
  return typeof backend.compareAndSwap === 'function' && backend.capabilities.compareAndSwap !== false;
}

/** Byte equality of two values (a memcmp; used by `compareAndSwap` implementations). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  return Buffer.compare(a, b) === 0;
}
