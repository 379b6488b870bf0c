import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CacheBackend, Clock, StoredEntry } from './backends/backend.ts';
import { systemClock } from './backends/backend.ts';
import { memoryBackend } from './backends/memory.ts';
import { BUS_CHANNEL } from './bus.ts';
import type { CodecOptions, DecodedEntry, EntryMeta } from './codec/index.ts';
import { decodeEntry, encodeEntry } from './codec/index.ts';
import { cacheError, QuotaExceededError, UnserializableValueError } from './errors.ts';
import type { CacheEventName, CacheEvents } from './events.ts';
import { CacheEmitter } from './events.ts';
import { buildKey, validateName } from './keys/index.ts';
import { MAX_NAME_LENGTH } from './keys/names.ts';
import type { LevelInput } from './levels/stack.ts';
import {
  Level,
  LevelTimeoutError,
  LevelUnavailableError,
  runWithDeadline,
  withTimeout,
} from './levels/stack.ts';
import type { CounterSet } from './stats/counters.ts';
import { addCounters, emptyCounters, StatsCollector } from './stats/counters.ts';
import type { PriceTable, Usage } from './stats/pricing.ts';
import { costOf, DEFAULT_PRICES } from './stats/pricing.ts';
import { countTokens, textOf } from './stats/tokens.ts';
import type { Duration } from './ttl.ts';
import { finiteDuration, parseDuration, resolveTtl } from './ttl.ts';
import { timerMs } from './util/timers.ts';

/** The tiers every cache has; any other validated name creates a tier on first use. */
export const BUILTIN_TIERS = ['responses', 'tools', 'embeddings', 'templates', 'http'] as const;
export type BuiltinTier = (typeof BUILTIN_TIERS)[number];
export type TierName = BuiltinTier | (string & {});

export interface MemoryLevelOptions {
  /** @default depends on the tier (responses 10 000, tools 2 000, embeddings 50 000, templates 1 000, http 1 000) */
  maxEntries?: number;
  /** @default depends on the tier (64 MiB for responses) */
  maxBytes?: number;
  /** Keep entries in memory at most this long, even when their TTL is longer. @default unlimited */
  maxTtl?: Duration;
}

export interface TierOptions {
  /** Default TTL of entries in this tier; a policy's ttl overrides it. @default see DEFAULT_TIER_OPTIONS */
  ttl?: Duration;
  /** The in-memory level in front of the store for this tier, or `false` for none. */
  memory?: MemoryLevelOptions | false;
}

export const DEFAULT_TIER_OPTIONS: Readonly<
  Record<BuiltinTier, Required<Pick<TierOptions, 'ttl'>> & TierOptions>
> = {
  responses: { ttl: '7d', memory: { maxEntries: 10_000, maxBytes: 64 * 1024 * 1024 } },
  tools: { ttl: '1h', memory: { maxEntries: 2_000, maxBytes: 16 * 1024 * 1024 } },
  embeddings: { ttl: '30d', memory: { maxEntries: 50_000, maxBytes: 128 * 1024 * 1024 } },
  templates: { ttl: '30d', memory: { maxEntries: 1_000, maxBytes: 8 * 1024 * 1024 } },
  http: { ttl: '1h', memory: { maxEntries: 1_000, maxBytes: 32 * 1024 * 1024 } },
};

export interface QuotaOptions {
  /** Most entries the namespace may hold in each tier. @default unlimited */
  maxEntries?: number;
  /** Most value bytes the namespace may hold in each tier. @default unlimited */
  maxBytes?: number;
  /**
   * `evict` drops the namespace's least recently used entries after a write; `reject` refuses
   * the write (a `QuotaExceededError` from `set`, a counted dropped write in `getOrCompute`).
   * @default 'evict'
   */
  onExceed?: 'evict' | 'reject';
}

export interface CacheOptions {
  /**
   * The shared store beneath the per-tier memory level: one backend (`sqliteBackend()`), or
   * several levels from fastest to slowest. Without a store the cache lives in memory only.
   * @default none (memory only)
   */
  store?: LevelInput | readonly LevelInput[];
  /** Default in-memory level options for every tier, or `false` to read the store directly. @default per tier */
  memory?: MemoryLevelOptions | false;
  /** Namespace of this cache view (application, tenant, scope). @default 'default' */
  namespace?: string;
  /** Per-tier TTL and memory level. @default DEFAULT_TIER_OPTIONS */
  tiers?: Partial<Record<TierName, TierOptions>>;
  /** Quotas per namespace. @default none */
  quotas?: Readonly<Record<string, QuotaOptions>>;
  /**
   * Names whose invalidation also invalidates others, e.g. `{ git_commit: ['git_status', 'git_log'] }`.
   * Followed transitively. @default {}
   */
  dependencies?: Readonly<Record<string, readonly string[]>>;
  /** Extra or corrected model prices (USD per million tokens), merged over the defaults. @default DEFAULT_PRICES */
  pricing?: PriceTable;
  /** Compression settings for stored entries. @default { compressThreshold: 4096, compression: 'auto' } */
  codec?: CodecOptions;
  /** `false` turns the cache into a pass-through: every call computes, nothing is stored. @default true */
  enabled?: boolean;
  /** How often counters are written to the store so they survive restarts (ms). @default 5000 */
  statsFlushInterval?: Duration;
  /**
   * `'distributed'`: when the store can lock across processes (SQLite, Redis), concurrent misses
   * of one key in any number of processes compute once; the others wait for the stored value.
   * `'process'`: only callers in this process are coalesced (saves the lock round trips).
   * @default 'distributed'
   */
  singleFlight?: 'distributed' | 'process';
  /**
   * Lease of the cross-process compute lock; the holder renews it while computing, so it only
   * matters when the holder dies: the others take over after it. @default '30s'
   */
  lockTtl?: Duration;
  /** Longest a caller waits for another process's compute before computing itself. @default '2m' */
  lockWait?: Duration;
  /**
   * Publish writes and invalidations on the store's pub/sub (Redis) so that other processes drop
   * them from their memory levels. A process without a memory level of its own but sharing the
   * store with processes that have one (a CLI, a worker that only writes) should pass `true`.
   * @default true when a memory level sits in front of a pub/sub store, else false
   */
  bus?: boolean;
  /** Time source, for tests. @default Date.now */
  clock?: Clock;
}

/**
 * What identifies an entry: a string, `{ name, request }`, or `{ storageKey }` — a full key
 * from `view.key()` (or `CacheResult.key`) that an adapter built once and reuses, so the request
 * is not canonicalised and hashed again. A storage key must belong to the view's tier and
 * namespace.
 */
export type KeyInput = string | { name: string; request?: unknown } | { storageKey: string };

export interface CachePolicy<T = unknown> {
  /** Time to live; overrides the tier default. `0` stores nothing. */
  ttl?: Duration;
  /** TTL in hours, as the source documents write it. */
  ttlHours?: number;
  /** Tags for group invalidation, scoped to this cache's namespace and tier. */
  tags?: readonly string[];
  /** Skip the read and recompute, then store the fresh value. @default false */
  forceRefresh?: boolean;
  /** Compute (or read) but never write. @default false */
  noStore?: boolean;
  /**
   * Admission: return false to keep a value out of the cache. One that throws keeps the value out
   * too (reported as a dropped write, like `onStoreError`); the caller still gets the value.
   * @default value !== undefined
   */
  shouldCache?: (value: T) => boolean;
  /**
   * How long past its TTL an entry is kept to be served if the recompute fails (a provider
   * outage); `Infinity` keeps it until it is evicted or invalidated. @default 0
   */
  grace?: Duration;
  /** Within `grace`, serve the stale value at once and refresh in the background. @default false */
  staleWhileRevalidate?: boolean;
  /**
   * The usage a hit on this entry saves: a value, a function of the computed value, or
   * `'estimate'` to count tokens of the request and the value with a real tokenizer.
   */
  usage?: Usage | ((value: T) => Usage | undefined) | 'estimate';
  /** Model id for pricing an estimated usage. */
  model?: string;
  /**
   * Called when the computed value could not be stored (unserialisable value, quota with
   * `reject`); the caller still gets the value. Given to `set`, it makes such a refusal a dropped
   * write reported here instead of a thrown error. @default none (counted and emitted as `error`)
   */
  onStoreError?: (error: unknown) => void;
}

export interface CacheResult<T> {
  value: T;
  /** Served from the cache (fresh or stale) rather than computed by this call. */
  hit: boolean;
  /** Served past its TTL (within grace). */
  stale: boolean;
  /** This call joined another caller's computation of the same key. */
  coalesced: boolean;
  /** Full storage key. */
  key: string;
  tier: string;
  namespace: string;
  /** Level that served the hit (`memory`, `sqlite`, …). */
  level?: string | undefined;
  /** Age of the served entry in ms. */
  ageMs?: number | undefined;
  /** Usage stored with the entry (what a hit saved). */
  usage?: Usage | undefined;
}

export interface ScopeStats extends CounterSet {
  /** hits / (hits + misses), 0 when there were no lookups. */
  hitRate: number;
}

export interface CacheStats {
  totals: ScopeStats;
  tiers: Record<string, ScopeStats & { entries: number; bytes: number }>;
  namespaces: Record<string, ScopeStats & { entries: number; bytes: number }>;
  scopes: Array<ScopeStats & { tier: string; namespace: string }>;
  levels: Record<
    string,
    { hits: number; errors: number; skipped: number; entries: number; bytes: number; evictions: number }
  >;
}

/** What a stored entry's payload holds besides the value itself. */
interface StoredRecord {
  v: unknown;
  u?: Usage | undefined;
}

interface TierState {
  name: string;
  ttlMs: number | undefined;
  levels: Level[];
}

interface Found {
  decoded: DecodedEntry<StoredRecord>;
  level: Level;
  stale: boolean;
}

/** TTL and grace of a policy, parsed once and validated before any compute runs. */
interface Timing {
  ttlMs: number | undefined;
  graceMs: number;
}

interface Flight {
  promise: Promise<{ result: CacheResult<unknown>; encoded: Uint8Array | undefined }>;
  /** Computed by a `noStore` call: callers that want their answer stored do not join it. */
  noStore: boolean;
  /** Started by a `forceRefresh` call: other forced calls may join it (it reads nothing old). */
  forced: boolean;
  /** The scoped tags its value will carry, to tell whether a tag invalidation concerns it. */
  tags: readonly string[];
  /** Marked outdated when the key changes (by a write of a computation started after it: see `Watch.seq`). */
  watch: Watch;
  /** Its failure has been emitted as an `error` event: callers that joined it do not emit it again. */
  reported?: boolean;
}

/**
 * Work under way on one key (a computation, a read of a lower level) that an invalidation or an
 * overwrite of the key makes outdated: its result still answers its caller, but must not be
 * stored or promoted over the change. `tags`: the scoped tags its value carries; undefined when
 * not known yet (a read), which any tag invalidation concerns.
 */
interface Watch {
  outdated: boolean;
  readonly tags: readonly string[] | undefined;
  /**
   * When a computation started (a per-process sequence number); undefined for a read. A write by
   * a computation of this process outdates only computations that started before it (the newest
   * answer is the one kept) and every read; a delete, a `set` or a message from another process
   * outdates everything.
   */
  readonly seq: number | undefined;
}

/** Whether a call with `policy` may take the answer of `flight` instead of computing its own. */
function joinable(
  flight: Flight | undefined,
  policy: { noStore?: boolean; forceRefresh?: boolean },
  timing: Timing,
): flight is Flight {
  // A forced call asked for a new answer: it joins only another forced call's computation (so
  // forced calls at once still compute once), never one that may serve what was stored before.
  if (flight === undefined || (policy.forceRefresh === true && !flight.forced)) return false;
  // A caller that stores nothing itself (noStore, ttl 0) may take any answer.
  return !flight.noStore || policy.noStore === true || timing.ttlMs === 0;
}

/** Invalidation bus message: keys, a prefix, a scoped tag, or everything. */
interface BusMessage {
  k?: string[];
  p?: string;
  t?: string;
  c?: 1;
}

const SKIP_PAYLOAD_CHECK = { verifyChecksum: false } as const;
/**
 * Key (in the lock's level) of the marker a lock holder leaves when its value was not stored,
 * so that processes waiting on its lock compute at once. `~` never starts a tier name.
 */
const NOTHING_STORED_PREFIX = '~sf/';

/** Read by the background probe of a stalled level: any answer (a miss) proves it responds. */
const PROBE_KEY = '~probe';

/**
 * Operations of a lookup (reads, lock, quota check, write) skip a stalled level or one whose
 * breaker is open; invalidations, clears, unlocks, bus messages and the rest still try it, so
 * neither ever silently drops an invalidation nor leaves a lock held once the store answers again.
 */
const LOOKUP_OPERATIONS = new Set(['get', 'getMany', 'set', 'lock', 'quota']);
/**
 * Changes that must reach the store even while its breaker is open (sent without the caller
 * waiting): a delete or invalidation dropped then would be undone once the breaker closes, and a
 * lock left held would block other processes. Reads that walk the store (stats, keys) are skipped.
 */
const MUST_LAND_OPERATIONS = new Set([
  'delete',
  'deleteByTag',
  'deleteByPrefix',
  'clear',
  'unlock',
  'publish',
]);
/**
 * Operations that walk a whole store or many keys: they run under the level's `bulkTimeout`, and
 * one that outlives it does not mark the level stalled (a big shared Redis is slow to SCAN, not
 * frozen).
 */
const BULK_OPERATIONS = new Set([
  'deleteByTag',
  'deleteByPrefix',
  'keys',
  'clear',
  'prune',
  'trim',
  'stats',
  'statsFor',
]);

/** The policy of a call that passes none (one shared object, not one per call). */
const NO_POLICY: CachePolicy<never> = Object.freeze({});
const COUNTER_SCOPE = 't';
const LEVEL_SCOPE = 'l';

/** The state shared by a cache and all of its tier and namespace views. */
class Engine {
  readonly clock: Clock;
  readonly enabled: boolean;
  readonly emitter = new CacheEmitter();
  readonly stats: StatsCollector;
  readonly inflight = new Map<string, Flight>();
  /** Releases of the store locks this process holds while it computes; `close()` runs them. */
  readonly heldLocks = new Set<() => Promise<void>>();
  /** Start order of this process's computations (`Watch.seq`). */
  watchSeq = 0;
  /** Per namespace, the last quota-checked write in flight: such writes go one at a time. */
  readonly quotaQueues = new Map<string, Promise<void>>();
  readonly storeLevels: Level[];
  readonly tiers = new Map<string, TierState>();
  readonly prices: PriceTable;
  readonly codec: CodecOptions | undefined;
  readonly dependencies: ReadonlyMap<string, readonly string[]>;
  readonly quotas: Readonly<Record<string, QuotaOptions>>;
  readonly options: CacheOptions;
  readonly levelCounters = new Map<string, CounterSet>();
  readonly namespaces = new Set<string>();
  /** Identifies this cache instance in locks and on the invalidation bus. */
  readonly owner = randomUUID();
  flightSeq = 0;
  readonly lockLevel: Level | undefined;
  readonly lockTtlMs: number;
  readonly lockWaitMs: number;
  readonly busLevel: Level | undefined;
  /** Some tier keeps a memory level in front of the store. */
  memoryFront = false;
  /** Records store of a memory-only cache (see `CacheView.recordStore`). */
  privateRecords: CacheBackend | undefined;
  #unsubscribe: Promise<(() => Promise<void>) | undefined> | undefined;
  closed = false;

  constructor(options: CacheOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.enabled = options.enabled ?? true;
    const store = options.store;
    const inputs: readonly LevelInput[] =
      store === undefined ? [] : Array.isArray(store) ? store : [store as LevelInput];
    this.storeLevels = inputs.map((input) => new Level(input));
    for (const backend of new Set(this.storeLevels.map((level) => level.backend))) {
      openBy.set(backend, (openBy.get(backend) ?? 0) + 1);
    }
    this.prices = { ...DEFAULT_PRICES, ...options.pricing };
    this.codec = options.codec;
    this.quotas = options.quotas ?? {};
    for (const namespace of Object.keys(this.quotas)) validateName(namespace, 'namespace');
    const deps = new Map<string, readonly string[]>();
    for (const [name, dependents] of Object.entries(options.dependencies ?? {})) {
      validateName(name, 'name');
      for (const dependent of dependents) validateName(dependent, 'name');
      deps.set(name, dependents);
    }
    this.dependencies = deps;
    const persistent = [...this.storeLevels].reverse().find((level) => level.backend.incrementCounters);
    const flushMs = parseDuration(options.statsFlushInterval ?? 5000, 'statsFlushInterval') ?? 0;
    this.stats = new StatsCollector(persistent?.backend, flushMs, (operation, run) =>
      persistent ? withTimeout(persistent, operation, run) : run(),
    );
    this.lockTtlMs = finiteDuration(
      options.lockTtl ?? '30s',
      'lockTtl',
      "it is how long a dead holder blocks the others (the holder renews its lock while it computes), e.g. '30s'",
      true,
    );
    // Infinity: wait for the holder however long it takes.
    this.lockWaitMs = parseDuration(options.lockWait ?? '2m', 'lockWait') ?? Number.POSITIVE_INFINITY;
    const slowestFirst = [...this.storeLevels].reverse();
    this.lockLevel =
      options.singleFlight === 'process'
        ? undefined
        : slowestFirst.find(
            (level) =>
              level.backend.capabilities.locks &&
              level.backend.capabilities.shared &&
              level.backend.acquireLock,
          );
    this.busLevel = slowestFirst.find(
      (level) => level.backend.capabilities.pubsub && level.backend.publish && level.backend.subscribe,
    );
    for (const tier of BUILTIN_TIERS) this.tier(tier);
    for (const tier of Object.keys(options.tiers ?? {})) this.tier(tier);
    // Only a process with a memory level has anything to drop when others write.
    if (this.busLevel && this.enabled && this.memoryFront) this.#listen(this.busLevel);
  }

  #listen(level: Level): void {
    this.#unsubscribe = level.backend.subscribe!(BUS_CHANNEL, (message) => this.#onBus(message)).catch(
      (error) => {
        this.levelError('*', level, 'subscribe', undefined, error);
        return undefined;
      },
    );
  }

  /** Resolves once the invalidation bus (if any) is subscribed. */
  async ready(): Promise<void> {
    const level = this.busLevel;
    if (!level || !this.#unsubscribe) return;
    await withTimeout(level, 'subscribe', async () => void (await this.#unsubscribe)).catch(() => undefined);
  }

  readonly #watches = new Map<string, Set<Watch>>();

  /** Starts watching `storageKey` for changes; pair with `unwatch`. */
  watch(storageKey: string, tags?: readonly string[], seq?: number): Watch {
    const watch: Watch = { outdated: false, tags, seq };
    let set = this.#watches.get(storageKey);
    if (!set) {
      set = new Set();
      this.#watches.set(storageKey, set);
    }
    set.add(watch);
    return watch;
  }

  unwatch(storageKey: string, watch: Watch): void {
    const set = this.#watches.get(storageKey);
    if (!set?.delete(watch)) return;
    if (set.size === 0) this.#watches.delete(storageKey);
  }

  /**
   * Notes an invalidation or an overwrite, local or heard on the bus: work under way on the keys
   * it concerns is outdated, and later callers must not join computations of them. A key costs
   * two map lookups; prefixes, tags and `clear` (rare) look at what is under way. `writtenBy`: the
   * sequence number of the computation of this process whose write this is: computations that
   * started after it are not outdated by it (see `Watch.seq`).
   */
  noteChange(message: BusMessage, writtenBy?: number): void {
    if (message.k) {
      const older = (seq: number | undefined) =>
        writtenBy === undefined || seq === undefined || seq < writtenBy;
      for (const key of message.k) {
        const flight = this.inflight.get(key);
        if (flight && older(flight.watch.seq)) this.inflight.delete(key);
        const set = this.#watches.get(key);
        if (set) for (const watch of set) if (older(watch.seq)) watch.outdated = true;
      }
    }
    if (message.p === undefined && message.t === undefined && !message.c) return;
    const { p: prefix, t: tag, c: all } = message;
    const concerned = (key: string, tags: readonly string[] | undefined) =>
      all === 1 ||
      (prefix !== undefined && key.startsWith(prefix)) ||
      (tag !== undefined && (tags === undefined || tags.includes(tag)));
    for (const [key, flight] of this.inflight) if (concerned(key, flight.tags)) this.inflight.delete(key);
    for (const [key, set] of this.#watches) {
      for (const watch of set) if (concerned(key, watch.tags)) watch.outdated = true;
    }
  }

  /** Tells other instances sharing the store to drop what their memory levels hold. */
  publish(message: BusMessage, writtenBy?: number): void {
    this.noteChange(message, writtenBy);
    const level = this.busLevel;
    if (!level || this.closed || !(this.options.bus ?? this.memoryFront)) return;
    const text = JSON.stringify({ ...message, o: this.owner });
    if (level.stalled) {
      // Sent without a deadline (it is delivered when the store wakes) and without counting: a
      // timeout per write while the store is frozen would only open the breaker, which would keep
      // the store skipped for a while after it is back.
      Promise.resolve()
        .then(() => level.backend.publish!(BUS_CHANNEL, text))
        .catch(() => undefined);
      return;
    }
    void this.guard('*', level, 'publish', undefined, undefined, () =>
      level.backend.publish!(BUS_CHANNEL, text),
    );
  }

  #onBus(text: string): void {
    let message: BusMessage & { o?: string };
    try {
      message = JSON.parse(text) as BusMessage & { o?: string };
    } catch {
      return;
    }
    if (message.o === this.owner) return;
    this.noteChange(message);
    for (const tier of this.tiers.values()) {
      const memory = tier.levels[0];
      if (!memory?.sync || tier.levels.length === 1) continue;
      const backend = memory.backend;
      if (message.k)
        for (const key of message.k) if (key.startsWith(`${tier.name}/`)) void backend.delete(key);
      if (message.p?.startsWith(`${tier.name}/`)) void backend.deleteByPrefix(message.p);
      if (message.t?.startsWith(`${tier.name}/`)) void backend.deleteByTag(message.t);
      if (message.c) void backend.clear();
    }
  }

  tier(name: string): TierState {
    const existing = this.tiers.get(name);
    if (existing) return existing;
    validateName(name, 'name');
    if (name.includes('/')) {
      // Keys begin `<tier>/<namespace>:`, and a namespace may hold '/': tier "team/a" with
      // namespace "x" and tier "team" with namespace "a/x" would share keys.
      throw cacheError(
        'E_INVALID_NAME',
        'keys',
        `invalid tier "${name}": a tier name cannot contain '/' (keys join the tier and the namespace with it); use '-' or '.', e.g. "${name.replaceAll('/', '-')}", or put the part after '/' in the namespace`,
      );
    }
    const defaults: TierOptions = DEFAULT_TIER_OPTIONS[name as BuiltinTier] ?? {
      ttl: undefined,
      memory: { maxEntries: 1_000, maxBytes: 16 * 1024 * 1024 },
    };
    const own = this.options.tiers?.[name] ?? {};
    const ttlMs = parseDuration(own.ttl ?? defaults.ttl, `tiers.${name}.ttl`);
    const memory =
      own.memory === false || this.options.memory === false
        ? false
        : { ...(defaults.memory || {}), ...(this.options.memory || {}), ...(own.memory || {}) };
    const levels: Level[] = [];
    if (memory) {
      const backend = memoryBackend({
        maxEntries: memory.maxEntries,
        maxBytes: memory.maxBytes,
        clock: this.clock,
        onEvict: (key, reason) => this.onMemoryEvict(name, key, reason),
      });
      levels.push(new Level({ backend, name: 'memory', maxTtl: memory.maxTtl }));
    }
    levels.push(...this.storeLevels);
    if (levels.length === 0) {
      throw cacheError(
        'E_INVALID_OPTION',
        'options',
        `tier "${name}" has no level: enable its memory level or pass a store (e.g. sqliteBackend())`,
      );
    }
    if (levels.length > 1 && levels[0]!.sync) this.memoryFront = true;
    const state: TierState = { name, ttlMs, levels };
    this.tiers.set(name, state);
    return state;
  }

  levelBucket(level: Level): CounterSet {
    // Cached on the level: this runs on every hit.
    let bucket = level.counters as CounterSet | undefined;
    if (!bucket) {
      bucket = this.levelCounters.get(level.name);
      if (!bucket) {
        bucket = this.stats.bucket(`${LEVEL_SCOPE}:${level.name}`);
        this.levelCounters.set(level.name, bucket);
      }
      level.counters = bucket;
    }
    return bucket;
  }

  onMemoryEvict(tier: string, key: string, reason: 'size' | 'expired' | 'quota'): void {
    if (reason !== 'expired') {
      const levels = this.tier(tier).levels;
      this.levelBucket(levels[0]!).evictions++;
      // A namespace loses an entry only when its slowest level drops it; with a store beneath,
      // a memory eviction is just a demotion.
      const namespace = levels.length === 1 ? namespaceOfKey(key, tier) : undefined;
      if (namespace !== undefined) this.stats.bucket(`${COUNTER_SCOPE}:${tier}:${namespace}`).evictions++;
    }
    if (this.emitter.has('evict')) this.emitter.emit('evict', { key, tier, level: 'memory', reason });
  }

  levelError(tier: string, level: Level, operation: string, key: string | undefined, error: unknown): void {
    this.levelBucket(level).errors++;
    // Also the tier and namespace's own count when the call concerned one of its keys.
    const namespace = key === undefined ? undefined : namespaceOfKey(key, tier);
    if (namespace !== undefined) this.stats.bucket(`${COUNTER_SCOPE}:${tier}:${namespace}`).errors++;
    if (this.emitter.has('error'))
      this.emitter.emit('error', { operation, tier, level: level.name, key, error });
  }

  /** Runs a backend call under the level's timeout; a failure is counted and yields `fallback`. */
  guard<T>(
    tier: string,
    level: Level,
    operation: string,
    key: string | undefined,
    fallback: T,
    run: () => Promise<T>,
  ): Promise<T> {
    // One promise per call, settled from the deadline's callbacks.
    return new Promise<T>((resolve) => this.guarded(tier, level, operation, key, fallback, run, resolve));
  }

  /**
   * `guard` in callback form: `done` gets the result, or `fallback` when the level is skipped, the
   * call fails or it times out. The read on every hit uses it to settle its caller's promise
   * directly instead of chaining promises (each link is an allocation and a microtask turn).
   */
  guarded<T>(
    tier: string,
    level: Level,
    operation: string,
    key: string | undefined,
    fallback: T,
    run: () => Promise<T>,
    done: (result: T) => void,
  ): void {
    // `'get'` first: it is the hit path.
    const lookup = operation === 'get' || LOOKUP_OPERATIONS.has(operation);
    // A change that must land goes to the store even with the breaker open: it is not admitted
    // as the breaker's probe, and its outcome neither closes nor re-opens the breaker. The caller
    // does not wait for it then (the store has kept failing): it is answered with `fallback` at
    // once, and the call lands if the store answers, counted if it fails.
    const mustLand = !lookup && MUST_LAND_OPERATIONS.has(operation);
    const admitted = mustLand ? 1 : level.admit(this.clock);
    if (admitted === 0 || (level.stalled && lookup)) {
      if (admitted === 2) level.probing = false;
      this.levelBucket(level).skipped++;
      done(fallback);
      return;
    }
    if (mustLand && level.tripped) {
      const answered = done;
      answered(fallback);
      done = () => undefined;
    }
    const bulk = BULK_OPERATIONS.has(operation);
    runWithDeadline(
      level,
      operation,
      run,
      (result) => {
        if (level.failures > 0 && (!mustLand || !level.tripped)) level.succeeded(admitted);
        // A bulk call may answer long after `timeout` without the store being quick again: only
        // lookups end a stall.
        if (level.stalled && !bulk) level.answered(performance.now());
        done(result);
      },
      (error) => {
        const timedOut = error instanceof LevelTimeoutError && !bulk;
        // Calls that were in flight when the store froze all time out together: that is one
        // failure (the one that stalls the level), not one per caller, or a short freeze under
        // load would open the breaker and keep a store that is back skipped for `openFor`. (A
        // bulk call that times out while the level is stalled is part of the same freeze.) The
        // breaker's probe always counts: its outcome is what closes or re-opens the breaker.
        const sameFreeze = error instanceof LevelTimeoutError && level.stalled;
        const counted = admitted === 2 || (!sameFreeze && (!mustLand || !level.tripped));
        if (timedOut) this.#stall(level);
        if (counted && level.failed(this.clock.now()) && this.emitter.has('error')) {
          this.emitter.emit('error', {
            operation: 'breaker-open',
            tier,
            level: level.name,
            key,
            error: new LevelUnavailableError(level.name),
          });
        }
        this.levelError(tier, level, operation, key, error);
        done(fallback);
      },
      bulk,
    );
  }

  /**
   * Marks a level that let a call time out as stalled and probes it in the background (a read of
   * a key nobody writes) until it answers in time: one caller pays the timeout, not every one after
   * it. The probe has no deadline, so on a frozen store it is answered the moment the store wakes;
   * an answer slower than the level's timeout only sends the next probe at once (a store that is
   * alive but too slow stays stalled instead of costing a caller a timeout on every cycle). One
   * probe per level is outstanding at a time.
   */
  #stall(level: Level): void {
    if (level.stalled) return;
    level.stall(performance.now());
    const every = timerMs(Math.min(level.timeoutMs ?? 1000, 1000));
    const probe = (): void => {
      if (this.closed || !level.stalled || level.probeOutstanding) return;
      level.probeOutstanding = true;
      const sent = performance.now();
      const answered = (inTime: boolean) => {
        level.probeOutstanding = false;
        // A held stall waits for a later probe (the tick below sends one each interval).
        if (inTime) level.answered(performance.now());
        else probe();
      };
      Promise.resolve()
        .then(() => level.backend.get(PROBE_KEY))
        .then(
          () => answered(performance.now() - sent <= (level.timeoutMs ?? Number.POSITIVE_INFINITY)),
          () => {
            level.probeOutstanding = false;
          },
        );
    };
    const tick = (): void => {
      if (this.closed || !level.stalled) return;
      probe();
      setTimeout(tick, every).unref();
    };
    tick();
  }

  expand(name: string): string[] {
    const out = new Set<string>([name]);
    const queue = [name];
    while (queue.length > 0) {
      const next = queue.pop()!;
      for (const dependent of this.dependencies.get(next) ?? []) {
        if (!out.has(dependent)) {
          out.add(dependent);
          queue.push(dependent);
        }
      }
    }
    return [...out];
  }

  /** Every distinct level once (store levels are shared by all tiers), with a tier that uses it. */
  *distinctLevels(): Generator<{ tier: string; level: Level }> {
    const seen = new Set<CacheBackend>();
    for (const tier of this.tiers.values()) {
      for (const level of tier.levels) {
        if (seen.has(level.backend)) continue;
        seen.add(level.backend);
        yield { tier: tier.name, level };
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Bounded by the bus level's timeout: a frozen store must not hang close().
    const bus = this.busLevel;
    if (bus && this.#unsubscribe) {
      await withTimeout(bus, 'unsubscribe', async () => {
        const unsubscribe = await this.#unsubscribe;
        await unsubscribe?.();
      }).catch(() => undefined);
    }
    // Computations still running cannot store or unlock once the store is closed: their locks go
    // now, so other processes compute at once instead of waiting out the lock's TTL.
    await Promise.all([...this.heldLocks].map((release) => release().catch(() => undefined)));
    await this.stats.close();
    for (const { level } of [...this.distinctLevels()]) {
      // A store shared with other caches stays open until the last of them closes.
      const users = openBy.get(level.backend);
      if (users !== undefined) {
        if (users > 1) {
          openBy.set(level.backend, users - 1);
          continue;
        }
        openBy.delete(level.backend);
      }
      try {
        await level.backend.close();
      } catch {
        // closing is best effort
      }
    }
  }
}

/** How many open caches use each store backend passed in (`close()` closes it with the last). */
const openBy = new WeakMap<CacheBackend, number>();

/**
 * `encodeEntry` of a stored record (`{ v: value, u: usage }`), with errors naming the field of the
 * caller's value (`answer.f`), not of the wrapper (`v.answer.f`).
 */
function encodeRecordEntry(
  record: StoredRecord,
  meta: EntryMeta,
  codec: CodecOptions | undefined,
): Uint8Array {
  try {
    return encodeEntry(record, meta, codec);
  } catch (error) {
    if (!(error instanceof UnserializableValueError) || !/^v(?:$|[.[])/.test(error.path)) throw error;
    const path = error.path.slice(error.path.startsWith('v.') ? 2 : 1);
    throw new UnserializableValueError(path, error.reason, 'value');
  }
}

/**
 * Wraps a bulk backend call so that its caller learns whether it outlived its deadline: the call
 * is in `late` until it settles, and its reaction is registered before the guard's, so a call that
 * finished in time has left the set by the time its guard answers.
 */
function tracked<T>(late: Set<Promise<unknown>>, run: () => Promise<T>): () => Promise<T> {
  return () => {
    const call = Promise.resolve(run());
    late.add(call);
    const settle = (): void => void late.delete(call);
    call.then(settle, settle);
    return call;
  };
}

function namespaceOfKey(key: string, tier: string): string | undefined {
  const start = tier.length + 1;
  const end = key.indexOf(':', start);
  return key.startsWith(`${tier}/`) && end > start ? key.slice(start, end) : undefined;
}

/** A copy for a joiner when there are no stored bytes to decode; values that cannot be cloned are shared. */
function ownCopy<T>(value: T): T {
  if (value === null || typeof value !== 'object') return value;
  try {
    return structuredClone(value);
  } catch {
    return value;
  }
}

function hitRate(set: CounterSet): number {
  const lookups = set.hits + set.misses;
  return lookups === 0 ? 0 : set.hits / lookups;
}

function withRate(set: CounterSet): ScopeStats {
  return { ...set, hitRate: hitRate(set) };
}

/**
 * A view of the cache bound to one tier and one namespace. `createCache` returns the
 * `responses` tier of the configured namespace; `tier()` and `withNamespace()` derive others
 * that share the same levels, statistics and in-flight computations.
 */
export class CacheView {
  readonly namespace: string;
  readonly tierName: string;
  /** @internal */
  protected readonly engine: Engine;
  readonly #tier: TierState;
  readonly #prefix: string;
  readonly #counters: CounterSet;

  /** @internal */
  constructor(engine: Engine, tier: string, namespace: string) {
    this.engine = engine;
    this.namespace = validateName(namespace, 'namespace');
    this.#tier = engine.tier(tier);
    this.tierName = tier;
    this.#prefix = `${tier}/${namespace}`;
    // Keys are `<tier>/<namespace>:<name>:<hash>`, and `<tier>/<namespace>` is one name of at most
    // 128 characters: refused here, not at the first call with an error naming the joined string.
    if (this.#prefix.length > MAX_NAME_LENGTH) {
      throw cacheError(
        'E_INVALID_NAME',
        'keys',
        `namespace "${namespace.length > 40 ? `${namespace.slice(0, 40)}…` : namespace}" (${namespace.length} characters) is too long for tier "${tier}": ` +
          `"<tier>/<namespace>" may have at most ${MAX_NAME_LENGTH} characters, so use a namespace of at most ` +
          `${MAX_NAME_LENGTH - tier.length - 1} characters (a hash of a long tenant id, for example)`,
      );
    }
    this.#counters = engine.stats.bucket(`${COUNTER_SCOPE}:${tier}:${namespace}`);
    engine.namespaces.add(namespace);
  }

  /** The slowest (shared, persistent) store level's backend, or undefined for a memory-only cache. */
  get store(): CacheBackend | undefined {
    const levels = this.engine.storeLevels;
    return levels[levels.length - 1]?.backend;
  }

  /**
   * Where records that must never be evicted (idempotency keys, the tool ledger) live: the store,
   * or for a memory-only cache an unbounded in-process memory backend owned by this cache.
   */
  get recordStore(): CacheBackend {
    const engine = this.engine;
    return (this.store ??
      (engine.privateRecords ??= memoryBackend({
        maxEntries: Number.POSITIVE_INFINITY,
        maxBytes: Number.POSITIVE_INFINITY,
        clock: engine.clock,
      }))) as CacheBackend;
  }

  /** @internal The timeout of the store level `recordStore` belongs to; undefined for none or in-process. */
  get recordStoreTimeoutMs(): number | undefined {
    const levels = this.engine.storeLevels;
    return levels[levels.length - 1]?.timeoutMs;
  }

  /** The cache's time source. */
  get clock(): Clock {
    return this.engine.clock;
  }

  /** This tier's default TTL in ms (undefined: entries do not expire unless a policy says so). */
  get ttlMs(): number | undefined {
    return this.#tier.ttlMs;
  }

  /** The same cache in another tier (`responses`, `tools`, `embeddings`, `templates`, `http`, or your own). */
  tier(name: TierName): CacheView {
    return name === this.tierName ? this : new CacheView(this.engine, name, this.namespace);
  }

  /** The same cache for another namespace (tenant, project, scope); namespaces never see each other's entries. */
  withNamespace(namespace: string): CacheView {
    return namespace === this.namespace ? this : new CacheView(this.engine, this.tierName, namespace);
  }

  on<E extends CacheEventName>(event: E, listener: (payload: CacheEvents[E]) => void): () => void {
    return this.engine.emitter.on(event, listener);
  }

  /** The storage key for a key input in this tier and namespace. */
  key(input: KeyInput): string {
    if (typeof input === 'string') return buildKey(this.#prefix, 'kv', input);
    if ('storageKey' in input) {
      if (!input.storageKey.startsWith(`${this.#prefix}:`)) {
        throw cacheError(
          'E_INVALID_KEY',
          'keys',
          `storage key "${input.storageKey.slice(0, 80)}" does not belong to tier "${this.tierName}" and namespace ` +
            `"${this.namespace}": build it with this view's key(), or use { name, request }`,
        );
      }
      return input.storageKey;
    }
    return buildKey(this.#prefix, input.name, input.request);
  }

  /**
   * Counts a caller served by another caller's computation that the adapter coalesced itself
   * (e.g. a joined live stream), with the usage it saved.
   */
  recordCoalesced(usage?: Usage): void {
    this.#counters.coalesced++;
    if (usage) this.#saved(usage);
  }

  /**
   * Counts a lookup an adapter judged itself, after `peek`: a `hit` when the stored value answered
   * the call, a `miss` when the call had to go to the source.
   */
  recordLookup(outcome: 'hit' | 'miss'): void {
    if (outcome === 'hit') this.#counters.hits++;
    else this.#counters.misses++;
  }

  /**
   * The stored value, without counting a hit or a miss: for adapters that decide themselves
   * whether it answers the call (an HTTP response past its freshness is kept to be revalidated,
   * but a new request is a miss). Count the outcome with `recordLookup`.
   */
  async peek<T>(key: KeyInput): Promise<T | undefined> {
    if (!this.engine.enabled) return undefined;
    const found = await this.#read(this.key(key));
    return found && !found.stale ? (found.decoded.value.v as T) : undefined;
  }

  /** Key prefix of one name (`invalidate`) or of this whole view (`clear`). */
  prefix(name?: string): string {
    return name === undefined ? `${this.#prefix}:` : `${this.#prefix}:${validateName(name, 'name')}:`;
  }

  getOrCompute<T>(
    key: KeyInput,
    compute: () => T | Promise<T>,
    policy: CachePolicy<T> = NO_POLICY as CachePolicy<T>,
  ): Promise<T> {
    // Not an async function: a hit settles one promise, not a chain of them (each link is an
    // allocation and a microtask turn on every hit). Every error still arrives as a rejection.
    try {
      const storageKey = this.key(key);
      const levels = this.#tier.levels;
      const first = levels[0]!;
      if (this.engine.enabled && !policy.forceRefresh) {
        if (first.sync) {
          // Fast path for a fresh hit in the memory level: no result object, no level walk.
          const stored = first.sync.getSync(storageKey);
          if (stored) {
            const found = this.#decode(storageKey, stored, first, this.engine.clock.now());
            if (found && !found.stale)
              return Promise.resolve(this.#served<T>(found, storageKey, false, true).value);
          }
        } else if (levels.length === 1) {
          // A shared store alone (Redis without a memory level): one read, settled straight into
          // the caller's promise; no level walk.
          return new Promise<T>((resolve, reject) =>
            this.engine.guarded(
              this.tierName,
              first,
              'get',
              storageKey,
              undefined,
              () => first.backend.get(storageKey),
              (stored) => {
                try {
                  const found = stored
                    ? this.#decode(storageKey, stored, first, this.engine.clock.now())
                    : undefined;
                  if (found && !found.stale) resolve(this.#served<T>(found, storageKey, false, true).value);
                  else {
                    // A skipped level answers at once, inside this promise's executor, and a
                    // timed-out read answers from the deadline's timer: the lookup (which may
                    // compute) starts from a microtask, always after getOrCompute has returned.
                    Promise.resolve()
                      .then(() => this.#lookup(storageKey, key, compute, policy, true, found ?? null))
                      .then((result) => resolve(result.value), reject);
                  }
                } catch (error) {
                  reject(error);
                }
              },
            ),
          );
        }
      }
      return this.#lookup(storageKey, key, compute, policy, true).then((result) => result.value);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** `getOrCompute` that also says whether and where the value was found. */
  getOrComputeResult<T>(
    key: KeyInput,
    compute: () => T | Promise<T>,
    policy: CachePolicy<T> = {},
  ): Promise<CacheResult<T>> {
    return this.#lookup(this.key(key), key, compute, policy);
  }

  async #lookup<T>(
    storageKey: string,
    key: KeyInput,
    compute: () => T | Promise<T>,
    policy: CachePolicy<T>,
    valueOnly?: true,
    /** What the caller already read: null for nothing, undefined to read here. */
    read?: Found | null,
  ): Promise<CacheResult<T>> {
    const engine = this.engine;
    if (!engine.enabled) {
      return {
        value: await compute(),
        hit: false,
        stale: false,
        coalesced: false,
        key: storageKey,
        ...this.#where(),
      };
    }
    let stale: Found | undefined;
    if (!policy.forceRefresh) {
      const found = read === undefined ? await this.#read(storageKey) : read;
      if (found) {
        if (!found.stale) return this.#served(found, storageKey, false, valueOnly);
        stale = found;
      }
    }
    // Parsed after the fresh-hit return (the hot path), but before any compute runs.
    const timing = this.#timing(policy);
    if (stale && policy.staleWhileRevalidate) {
      // One background refresh per key: stale callers that find it running only get the stale
      // value (its failure is reported once, by the caller that started it).
      if (joinable(engine.inflight.get(storageKey), policy, timing))
        return this.#served(stale, storageKey, true);
      const flight = this.#flight(storageKey, key, compute, policy, timing, undefined);
      flight.promise.catch((error) => {
        flight.reported = true;
        if (engine.emitter.has('error')) {
          engine.emitter.emit('error', {
            operation: 'revalidate',
            tier: this.tierName,
            key: storageKey,
            error,
          });
        }
      });
      return this.#served(stale, storageKey, true);
    }
    const existing = engine.inflight.get(storageKey);
    if (joinable(existing, policy, timing)) {
      let joined: Awaited<Flight['promise']>;
      try {
        joined = await existing.promise;
      } catch (error) {
        // The flight we joined had no stale copy to fall back on (a forceRefresh, a background
        // revalidation), but this caller has one within grace: the same fallback as its own. An
        // outage must not go unseen, but one failure is one event, however many callers joined.
        if (!stale) throw error;
        if (!existing.reported) {
          existing.reported = true;
          this.#computeFailed(storageKey, error);
        }
        return this.#served(stale, storageKey, true);
      }
      const { result, encoded } = joined;
      this.#counters.coalesced++;
      if (result.usage) this.#saved(result.usage);
      // Joiners get their own copy so no two callers share one mutable object.
      const value = encoded ? (decodeEntry<StoredRecord>(encoded).value.v as T) : ownCopy(result.value as T);
      return { ...result, value, coalesced: true };
    }
    if (engine.emitter.has('miss')) engine.emitter.emit('miss', { key: storageKey, tier: this.tierName });
    let result: CacheResult<unknown>;
    try {
      ({ result } = await this.#flight(storageKey, key, compute, policy, timing, stale).promise);
    } catch (error) {
      this.#counters.misses++;
      throw error;
    }
    // A value another process stored while we waited for its lock, or a stale fallback, was
    // counted as a hit when it was served.
    if (!result.hit) this.#counters.misses++;
    return result as CacheResult<T>;
  }

  /** Reads one value without computing. */
  async get<T>(key: KeyInput): Promise<T | undefined> {
    return (await this.getResult<T>(key))?.value;
  }

  /** Reads one entry with its metadata (level, age, usage) without computing. Counts a hit or a miss. */
  async getResult<T>(key: KeyInput): Promise<CacheResult<T> | undefined> {
    if (!this.engine.enabled) return undefined;
    const storageKey = this.key(key);
    const found = await this.#read(storageKey);
    if (!found || found.stale) {
      this.#counters.misses++;
      return undefined;
    }
    return this.#served<T>(found, storageKey, false);
  }

  /** Batch read: one result per key, in order, `undefined` for misses. Store levels are read with getMany. */
  async getMany<T>(keys: readonly KeyInput[]): Promise<(T | undefined)[]> {
    const out: (T | undefined)[] = new Array(keys.length).fill(undefined);
    if (!this.engine.enabled || keys.length === 0) return out;
    const storageKeys = keys.map((key) => this.key(key));
    const levels = this.#tier.levels;
    let pending = storageKeys.map((_, index) => index);
    const now = this.engine.clock.now();
    for (let depth = 0; depth < levels.length && pending.length > 0; depth++) {
      const level = levels[depth]!;
      const wanted = pending.map((index) => storageKeys[index]!);
      // As in #read: an invalidation during the read must not be undone by the promotion.
      const watches = !level.sync && depth > 0 ? wanted.map((key) => this.engine.watch(key)) : undefined;
      let stored: (StoredEntry | undefined)[];
      try {
        stored = level.sync
          ? wanted.map((key) => level.sync!.getSync(key))
          : await this.engine.guard(this.tierName, level, 'getMany', undefined, [], () =>
              level.backend.getMany(wanted),
            );
      } finally {
        if (watches)
          for (const [position, watch] of watches.entries()) this.engine.unwatch(wanted[position]!, watch);
      }
      const still: number[] = [];
      pending.forEach((index, position) => {
        const entry = stored[position];
        const found = entry ? this.#decode(storageKeys[index]!, entry, level, now) : undefined;
        if (!found || found.stale) {
          still.push(index);
          return;
        }
        if (!watches?.[position]?.outdated) this.#promote(storageKeys[index]!, entry!, depth, now);
        out[index] = this.#served<T>(found, storageKeys[index]!, false).value;
      });
      pending = still;
    }
    this.#counters.misses += pending.length;
    return out;
  }

  /**
   * Stores `value`. A value or write the cache refuses (unserialisable, over a quota with
   * `reject`) throws, unless `policy.onStoreError` is given: then it is a dropped write, counted
   * and reported there, as in `getOrCompute`. Backend failures are counted, never thrown.
   */
  async set<T>(key: KeyInput, value: T, policy: CachePolicy<T> = {}): Promise<void> {
    if (!this.engine.enabled) return;
    const timing = this.#timing(policy);
    const storageKey = this.key(key);
    try {
      const usage = await this.#usageOf(key, value, policy);
      await this.#write(storageKey, { v: value, u: usage }, policy, timing, true);
    } catch (error) {
      if (!policy.onStoreError) throw error;
      this.#dropped(storageKey, error, policy.onStoreError);
    }
  }

  async has(key: KeyInput): Promise<boolean> {
    if (!this.engine.enabled) return false;
    const found = await this.#read(this.key(key));
    return found !== undefined && !found.stale;
  }

  /** Removes one entry from every level. */
  async delete(key: KeyInput): Promise<boolean> {
    return this.deleteStorageKey(this.key(key));
  }

  /** Removes an entry by its full storage key (as returned in `CacheResult.key`). */
  async deleteStorageKey(storageKey: string): Promise<boolean> {
    const removed = await this.#deleteOnLevels({ k: [storageKey] }, 'delete', storageKey, false, (backend) =>
      backend.delete(storageKey),
    );
    return removed.includes(true);
  }

  /**
   * Invalidates one call (`invalidate('intro_page', { subject, topic })`) or every entry under a
   * name (`invalidate('git_status')`), and, for a whole name, the names that depend on it.
   * Returns how many entries were removed from the slowest level.
   */
  async invalidate(name: string, ...call: [request?: unknown]): Promise<number> {
    validateName(name, 'name');
    if (call.length > 0) {
      const removed = await this.delete({ name, request: call[0] });
      for (const dependent of this.engine.expand(name).slice(1))
        await this.#deletePrefix(this.prefix(dependent));
      return removed ? 1 : 0;
    }
    let total = 0;
    for (const each of this.engine.expand(name)) total += await this.#deletePrefix(this.prefix(each));
    return total;
  }

  /** Removes every entry carrying any of the tags in this tier and namespace. */
  async invalidateTags(tags: readonly string[]): Promise<number> {
    let total = 0;
    for (const tag of tags) {
      const scoped = this.#scopedTag(tag);
      total += await this.#bulkDelete({ t: scoped }, 'deleteByTag', (backend) => backend.deleteByTag(scoped));
    }
    return total;
  }

  /** Removes every entry of this tier and namespace. */
  async clear(): Promise<number> {
    return this.#deletePrefix(this.prefix());
  }

  /** Counters for this tier and namespace (persisted ones included). */
  async stats(): Promise<ScopeStats> {
    await this.engine.stats.flush();
    const all = await this.engine.stats.read();
    return withRate(all.get(`${COUNTER_SCOPE}:${this.tierName}:${this.namespace}`) ?? emptyCounters());
  }

  async #deletePrefix(prefix: string): Promise<number> {
    return this.#bulkDelete({ p: prefix }, 'deleteByPrefix', (backend) => backend.deleteByPrefix(prefix));
  }

  /**
   * A bulk delete on every level in order: the slowest level removed. See `#deleteOnLevels`.
   */
  async #bulkDelete(
    message: BusMessage,
    operation: 'deleteByPrefix' | 'deleteByTag',
    remove: (backend: CacheBackend) => Promise<number>,
  ): Promise<number> {
    const removed = await this.#deleteOnLevels(message, operation, undefined, 0, remove);
    return removed[removed.length - 1] ?? 0;
  }

  /**
   * Runs a delete on every level in order (fastest first), announced before and after: a process
   * that re-read the store in between drops its copy again. Then the memory levels are cleared
   * once more, together with the closing announcement (synchronously): a read here that missed
   * the memory level before the delete reached it and read a lower level before the delete
   * reached that level may have promoted the old value; a read still under way is outdated by the
   * announcement and promotes nothing. A store call that outlives its deadline keeps running on
   * the store; that second clearing and the closing announcement then wait until it finishes.
   * Returns what each level removed (the fallback for a level that failed).
   */
  async #deleteOnLevels<R>(
    message: BusMessage,
    operation: 'delete' | 'deleteByPrefix' | 'deleteByTag',
    storageKey: string | undefined,
    fallback: R,
    remove: (backend: CacheBackend) => Promise<R>,
  ): Promise<R[]> {
    const engine = this.engine;
    const levels = this.#tier.levels;
    engine.publish(message);
    const late = new Set<Promise<unknown>>();
    const removed: R[] = [];
    for (const level of levels) {
      removed.push(
        await engine.guard(
          this.tierName,
          level,
          operation,
          storageKey,
          fallback,
          tracked(late, () => remove(level.backend)),
        ),
      );
    }
    const close = (): void => {
      if (levels.length > 1) {
        for (const level of levels) if (level.sync) remove(level.backend).catch(() => fallback);
      }
      engine.publish(message);
    };
    if (late.size === 0) close();
    else void Promise.allSettled([...late]).then(close);
    return removed;
  }

  #scopedTag(tag: string): string {
    return `${this.#prefix}#${validateName(tag, 'tag')}`;
  }

  #where(): { tier: string; namespace: string } {
    return { tier: this.tierName, namespace: this.namespace };
  }

  /** Counts a hit and builds its result; `valueOnly` skips the result fields `getOrCompute` drops. */
  #served<T>(found: Found, storageKey: string, stale: boolean, valueOnly?: true): CacheResult<T> {
    const counters = this.#counters;
    if (stale) counters.staleHits++;
    else counters.hits++;
    this.engine.levelBucket(found.level).hits++;
    const record = found.decoded.value;
    if (record.u) this.#saved(record.u);
    const observed = this.engine.emitter.has('hit');
    if (valueOnly && !observed) return { value: record.v as T } as CacheResult<T>;
    const ageMs = this.engine.clock.now() - found.decoded.createdAt;
    if (observed) {
      this.engine.emitter.emit('hit', {
        key: storageKey,
        tier: this.tierName,
        level: found.level.name,
        stale,
        ageMs,
      });
    }
    return {
      value: record.v as T,
      hit: true,
      stale,
      coalesced: false,
      key: storageKey,
      tier: this.tierName,
      namespace: this.namespace,
      level: found.level.name,
      ageMs,
      usage: record.u,
    };
  }

  #saved(usage: Usage): void {
    const counters = this.#counters;
    counters.inputTokensSaved += Number.isFinite(usage.inputTokens) ? usage.inputTokens : 0;
    counters.outputTokensSaved += Number.isFinite(usage.outputTokens) ? usage.outputTokens : 0;
    counters.costSavedUsd += costOf(usage, this.engine.prices);
  }

  /** Walks the levels; a hit in a lower level is promoted to the levels above it. */
  async #read(storageKey: string, from = 0): Promise<Found | undefined> {
    const levels = this.#tier.levels;
    const now = this.engine.clock.now();
    let stale: Found | undefined;
    // Watched while a lower level is read: an invalidation meanwhile must not be undone by
    // promoting what was read before it.
    let watch: Watch | undefined;
    try {
      for (let depth = from; depth < levels.length; depth++) {
        const level = levels[depth]!;
        if (!level.sync && depth > 0) watch ??= this.engine.watch(storageKey);
        const stored = level.sync
          ? level.sync.getSync(storageKey)
          : await this.engine.guard(this.tierName, level, 'get', storageKey, undefined, () =>
              level.backend.get(storageKey),
            );
        if (!stored) continue;
        const found = this.#decode(storageKey, stored, level, now);
        if (!found) continue;
        // A stale copy above must not hide a fresh one below (another process may have refreshed it).
        if (found.stale) {
          stale ??= found;
          continue;
        }
        if (depth > 0 && !watch?.outdated) this.#promote(storageKey, stored, depth, now);
        return found;
      }
      return stale;
    } finally {
      if (watch) this.engine.unwatch(storageKey, watch);
    }
  }

  #decode(storageKey: string, stored: StoredEntry, level: Level, now: number): Found | undefined {
    let decoded: DecodedEntry<StoredRecord>;
    try {
      // The memory level holds bytes this process encoded; storage and transport get the full check.
      decoded = decodeEntry<StoredRecord>(stored.value, level.sync ? SKIP_PAYLOAD_CHECK : undefined);
    } catch (error) {
      // A corrupt entry is a miss: drop it so the next write replaces it, and count it.
      this.#counters.corrupt++;
      void this.engine.guard(this.tierName, level, 'delete', storageKey, false, () =>
        level.backend.delete(storageKey),
      );
      if (this.engine.emitter.has('evict')) {
        this.engine.emitter.emit('evict', {
          key: storageKey,
          tier: this.tierName,
          level: level.name,
          reason: 'corrupt',
        });
      }
      if (this.engine.emitter.has('error')) {
        this.engine.emitter.emit('error', {
          operation: 'decode',
          tier: this.tierName,
          level: level.name,
          key: storageKey,
          error,
        });
      }
      return undefined;
    }
    const stale = decoded.expiresAt !== undefined && now >= decoded.expiresAt;
    return { decoded, level, stale };
  }

  #promote(storageKey: string, source: StoredEntry, depth: number, now: number): void {
    const levels = this.#tier.levels;
    // A network reply's bytes may be a view into a larger shared buffer; keep a copy of our own.
    const stored: StoredEntry = { ...source, value: source.value.slice() };
    for (let upper = 0; upper < depth; upper++) {
      const level = levels[upper]!;
      const fitted = level.fit(stored, now);
      if (level.sync) level.sync.setSync(storageKey, fitted);
      else
        void this.engine.guard(this.tierName, level, 'set', storageKey, undefined, () =>
          level.backend.set(storageKey, fitted),
        );
    }
  }

  #flight<T>(
    storageKey: string,
    key: KeyInput,
    compute: () => T | Promise<T>,
    policy: CachePolicy<T>,
    timing: Timing,
    stale: Found | undefined,
  ): Flight {
    const engine = this.engine;
    const existing = engine.inflight.get(storageKey);
    if (joinable(existing, policy, timing)) return existing;
    // A forced refresh that starts while a computation of the key is under way here (which it
    // does not join) must not wait for the lock that computation holds: it would take that older
    // answer as the "newer" one it asked for. It computes beside it; whichever finishes last, the
    // forced answer is the one kept (a write outdates only computations that started before it).
    const besideOlder = policy.forceRefresh === true && engine.inflight.has(storageKey);
    const tags = policy.tags?.map((tag) => this.#scopedTag(tag)) ?? [];
    const watch = engine.watch(storageKey, tags, ++engine.watchSeq);
    const flight: Flight = {
      promise: this.#computeAndStore(
        storageKey,
        key,
        compute,
        policy,
        timing,
        stale,
        watch,
        besideOlder,
      ).finally(() => {
        engine.unwatch(storageKey, watch);
        if (engine.inflight.get(storageKey) === flight) engine.inflight.delete(storageKey);
      }),
      // A ttl-0 call stores nothing either: a caller that wants its answer stored computes its own.
      noStore: policy.noStore === true || timing.ttlMs === 0,
      forced: policy.forceRefresh === true,
      tags,
      watch,
    };
    engine.inflight.set(storageKey, flight);
    return flight;
  }

  async #computeAndStore<T>(
    storageKey: string,
    key: KeyInput,
    compute: () => T | Promise<T>,
    policy: CachePolicy<T>,
    timing: Timing,
    stale: Found | undefined,
    watch: Watch,
    besideOlder: boolean,
  ): Promise<{ result: CacheResult<unknown>; encoded: Uint8Array | undefined }> {
    let value: T;
    let release: (() => Promise<void>) | undefined;
    try {
      // A call that will store nothing has nothing for other processes to wait for.
      const skipLock = policy.noStore === true || timing.ttlMs === 0 || besideOlder;
      const exclusive = await this.#exclusive(storageKey, compute, policy.forceRefresh === true, skipLock);
      if ('found' in exclusive) {
        const served = this.#served<T>(exclusive.found, storageKey, false);
        return { result: { ...served, coalesced: true }, encoded: undefined };
      }
      value = exclusive.value;
      release = exclusive.release;
    } catch (error) {
      if (stale) {
        // Served from grace: the caller is fine, but an outage must not go unseen.
        this.#computeFailed(storageKey, error);
        return { result: this.#served(stale, storageKey, true), encoded: undefined };
      }
      throw error;
    }
    try {
      // Invalidated (or overwritten) while it computed: the value answers this call, but storing
      // it would bring back what the invalidation removed.
      const stored = await this.#store(
        storageKey,
        key,
        value,
        watch.outdated ? { ...policy, noStore: true } : policy,
        timing,
        watch,
      );
      // Refused (shouldCache, undefined) or unstorable: tell the processes waiting on our lock to
      // compute now instead of queueing for the lock one after another.
      if (release && stored.encoded === undefined) await this.#markNothingStored(storageKey);
      return stored;
    } finally {
      // Released only after the write, so a waiting process finds the value, not a free lock.
      await release?.();
    }
  }

  /** A compute that failed while a stale copy stood in for it: emitted, not thrown. */
  #computeFailed(storageKey: string, error: unknown): void {
    if (this.engine.emitter.has('error')) {
      this.engine.emitter.emit('error', {
        operation: 'compute',
        tier: this.tierName,
        key: storageKey,
        error,
      });
    }
  }

  /** Records in the lock's level that a computation of this key finished without storing. */
  async #markNothingStored(storageKey: string): Promise<void> {
    const engine = this.engine;
    const level = engine.lockLevel!;
    // A token, not a time: waiters only ask whether the marker changed while they waited, so
    // clocks of different machines are never compared.
    const value = new TextEncoder().encode(`${engine.owner}:${++engine.flightSeq}`);
    // Waiters poll every 100 ms at most: a short life is enough, and it never outlives lockWait.
    const expiresAt = engine.clock.now() + Math.min(engine.lockWaitMs, 10_000);
    await engine.guard(this.tierName, level, 'set', storageKey, undefined, () =>
      level.backend.set(NOTHING_STORED_PREFIX + storageKey, { value, expiresAt }),
    );
  }

  /** The token of the last computation of this key that stored nothing, per the lock's level. */
  async #nothingStoredToken(storageKey: string, level: Level): Promise<string | undefined> {
    const marker = await this.engine.guard(this.tierName, level, 'get', storageKey, undefined, () =>
      level.backend.get(NOTHING_STORED_PREFIX + storageKey),
    );
    return marker ? new TextDecoder().decode(marker.value) : undefined;
  }

  /**
   * Runs `compute` holding the store's cross-process lock for this key, or, when another
   * process holds it, waits for the value that process stores. Any lock failure falls back to
   * computing here: a sick store must never block the caller.
   */
  async #exclusive<T>(
    storageKey: string,
    compute: () => T | Promise<T>,
    forceRefresh: boolean,
    skipLock: boolean,
  ): Promise<{ value: T; release?: () => Promise<void> } | { found: Found }> {
    const engine = this.engine;
    const level = engine.lockLevel;
    const lockDepth = level ? this.#tier.levels.indexOf(level) : -1;
    if (!level || lockDepth < 0 || skipLock) return { value: await compute() };
    const backend = level.backend;
    const name = `sf:${storageKey}`;
    const owner = `${engine.owner}:${++engine.flightSeq}`;
    const ttl = engine.lockTtlMs;
    const deadline = Date.now() + engine.lockWaitMs;
    // The last lock request sent: one that failed by timeout may still land later.
    const request: { sent?: Promise<boolean> } = {};
    const tryLock = () =>
      engine.guard<boolean | undefined>(this.tierName, level, 'lock', storageKey, undefined, () => {
        request.sent = backend.acquireLock!(name, owner, ttl);
        return request.sent;
      });
    // A forced refresh only accepts a value written after it started (by another process's
    // compute), never the entry it was asked to replace.
    const since = engine.clock.now();
    const usable = (found: Found | undefined): found is Found =>
      found !== undefined && !found.stale && (!forceRefresh || found.decoded.createdAt > since);
    let delay = 5;
    // The nothing-stored marker as it was when we started waiting (read on the first wait).
    let seenMarker: string | undefined | null = null;
    for (;;) {
      const acquired = await tryLock();
      if (acquired === undefined) {
        // The request timed out or failed, and may still land when the store answers: let the
        // lock go then, or every process missing this key would wait out its TTL.
        request.sent
          ?.then((late) => (late ? backend.releaseLock!(name, owner) : false))
          .catch(() => undefined);
        return { value: await compute() };
      }
      if (acquired) {
        const release = async () => {
          if (!engine.heldLocks.delete(release)) return;
          const unlocking = engine.guard(this.tierName, level, 'unlock', storageKey, false, () =>
            backend.releaseLock!(name, owner),
          );
          // A stalled store still gets the unlock (it lands when the store answers), but the
          // caller does not wait for it: that would cost it a timeout.
          if (!level.stalled) await unlocking;
        };
        engine.heldLocks.add(release);
        // The value may have landed between our miss and the lock.
        const found = forceRefresh ? undefined : await this.#read(storageKey, lockDepth);
        if (usable(found)) {
          await release();
          return { found };
        }
        // Not renewed once the cache is closing: close() has let it go.
        const renew = setInterval(
          () => void (engine.closed ? undefined : tryLock()),
          timerMs(Math.max(10, Math.floor(ttl / 3))),
        );
        renew.unref();
        try {
          return { value: await compute(), release };
        } catch (error) {
          // Waiting processes compute at once rather than take the lock in turn, each waiting out
          // a failing computation first.
          await this.#markNothingStored(storageKey);
          await release();
          throw error;
        } finally {
          clearInterval(renew);
        }
      }
      if (Date.now() >= deadline) return { value: await compute() };
      if (seenMarker === null) seenMarker = await this.#nothingStoredToken(storageKey, level);
      await sleep(delay);
      delay = Math.min(delay * 2, 100);
      // Read the shared level itself: a memory level above may still hold the entry being replaced.
      const [found, marker] = await Promise.all([
        this.#read(storageKey, lockDepth),
        this.#nothingStoredToken(storageKey, level),
      ]);
      if (usable(found)) return { found };
      // A holder finished while we waited and stored nothing: there is nothing to wait for.
      if (marker !== undefined && marker !== seenMarker) return { value: await compute() };
    }
  }

  async #store<T>(
    storageKey: string,
    key: KeyInput,
    value: T,
    policy: CachePolicy<T>,
    timing: Timing,
    watch: Watch,
  ): Promise<{ result: CacheResult<unknown>; encoded: Uint8Array | undefined }> {
    const result: CacheResult<T> = {
      value,
      hit: false,
      stale: false,
      coalesced: false,
      key: storageKey,
      ...this.#where(),
    };
    let encoded: Uint8Array | undefined;
    try {
      // Inside the try: a shouldCache that throws must not cost the caller the value it paid for.
      const admitted =
        !policy.noStore && (policy.shouldCache ? policy.shouldCache(value) : value !== undefined);
      if (!admitted) return { result, encoded: undefined };
      const usage = await this.#usageOf(key, value, policy);
      result.usage = usage;
      encoded = await this.#write(storageKey, { v: value, u: usage }, policy, timing, false, watch);
    } catch (error) {
      // The caller still gets its value: a value that cannot be stored is reported, not thrown.
      this.#dropped(storageKey, error, policy.onStoreError);
    }
    return { result, encoded };
  }

  /** A write that did not happen: counted, emitted as `error`, and handed to `onStoreError`. */
  #dropped(storageKey: string, error: unknown, onStoreError: ((error: unknown) => void) | undefined): void {
    this.#counters.droppedWrites++;
    if (this.engine.emitter.has('error')) {
      this.engine.emitter.emit('error', { operation: 'set', tier: this.tierName, key: storageKey, error });
    }
    try {
      onStoreError?.(error);
    } catch {
      // a reporting hook must not fail the call
    }
  }

  async #usageOf<T>(key: KeyInput, value: T, policy: CachePolicy<T>): Promise<Usage | undefined> {
    const usage = policy.usage;
    if (usage === undefined) return undefined;
    if (typeof usage === 'function') return usage(value);
    if (usage === 'estimate') {
      const request = typeof key === 'string' ? key : 'request' in key ? key.request : undefined;
      return {
        inputTokens: await countTokens(textOf(request)),
        outputTokens: await countTokens(textOf(value)),
        model: policy.model,
      };
    }
    return usage;
  }

  /** Encodes and writes to every level; returns the encoded bytes, or undefined when nothing was stored. */
  #timing(policy: CachePolicy<any>): Timing {
    const ttlMs =
      policy.ttl !== undefined || policy.ttlHours !== undefined ? resolveTtl(policy) : this.#tier.ttlMs;
    // `grace: Infinity` (parsed as "never expires"): stale copies are kept until evicted.
    const graceMs =
      policy.grace === undefined ? 0 : (parseDuration(policy.grace, 'grace') ?? Number.POSITIVE_INFINITY);
    if (policy.tags) for (const tag of policy.tags) validateName(tag, 'tag');
    return { ttlMs, graceMs };
  }

  async #write(
    storageKey: string,
    record: StoredRecord,
    policy: CachePolicy<any>,
    { ttlMs, graceMs }: Timing,
    /** A `set`: the value replaces what the key holds, whatever it is. */
    replace = false,
    /**
     * The computation's watch: checked again at the moment the levels are written, since an
     * invalidation may land while the usage is measured or the quota checked.
     */
    watch?: Watch,
  ): Promise<Uint8Array | undefined> {
    const engine = this.engine;
    const now = engine.clock.now();
    if (ttlMs === 0) {
      // Kept for no time: nothing is stored. A replacement (set, forceRefresh) also removes what
      // the key held; a plain miss leaves it (a stale copy within grace, another caller's value).
      if (replace || policy.forceRefresh) await this.deleteStorageKey(storageKey);
      return undefined;
    }
    const logicalExpiry = ttlMs === undefined ? undefined : now + ttlMs;
    const userTags = policy.tags ?? [];
    const bytes = encodeRecordEntry(
      record,
      { createdAt: now, expiresAt: logicalExpiry, tags: userTags },
      engine.codec,
    );
    const stored: StoredEntry = {
      value: bytes,
      expiresAt:
        logicalExpiry === undefined || graceMs === Number.POSITIVE_INFINITY
          ? undefined
          : logicalExpiry + graceMs,
      tags: userTags.map((tag) => this.#scopedTag(tag)),
    };
    const quota = engine.quotas[this.namespace];
    const levels = this.#tier.levels;
    const slowest = levels[levels.length - 1]!;
    let slowestStored = true;
    let outdated = false;
    // Not async: a write with nothing to wait for (memory only) must not cost its caller extra ticks.
    const store = (): Promise<unknown> | undefined => {
      if (watch?.outdated) {
        outdated = true;
        return undefined;
      }
      const writes: Promise<void>[] = [];
      for (const level of levels) {
        const fitted = level.fit(stored, now);
        if (level.sync) {
          level.sync.setSync(storageKey, fitted);
        } else {
          writes.push(
            engine
              .guard(this.tierName, level, 'set', storageKey, false, async () => {
                await level.backend.set(storageKey, fitted);
                return true;
              })
              .then((ok) => {
                if (!ok && level === slowest) slowestStored = false;
              }),
          );
        }
      }
      return writes.length > 0 ? Promise.all(writes) : undefined;
    };
    if (quota?.onExceed === 'reject') {
      // Check and write one at a time per namespace: writes checked side by side would each see
      // room for one more and all go through.
      await this.#serialized(async () => {
        // Outdated meanwhile: nothing to write, so nothing to refuse either.
        if (watch?.outdated) {
          outdated = true;
          return;
        }
        await this.#checkQuota(storageKey, quota, bytes.byteLength);
        await store();
      });
    } else {
      const writing = store();
      if (writing) await writing;
    }
    // Invalidated (or overtaken by a forced refresh) since the computation began: not written.
    if (outdated) return undefined;
    // A write the store did not take is dropped (the memory level may still hold it).
    if (slowestStored) this.#counters.sets++;
    else this.#counters.droppedWrites++;
    engine.publish({ k: [storageKey] }, watch?.seq);
    if (quota && quota.onExceed !== 'reject') await this.#trimQuota(quota);
    if (engine.emitter.has('set')) {
      engine.emitter.emit('set', { key: storageKey, tier: this.tierName, bytes: bytes.byteLength, ttlMs });
    }
    return bytes;
  }

  /** Runs `task` after the quota-checked writes of this namespace before it (in this process). */
  async #serialized(task: () => Promise<void>): Promise<void> {
    const queue = this.engine.quotaQueues;
    const previous = queue.get(this.namespace);
    const mine = (previous ?? Promise.resolve()).then(task, task);
    const settled = mine.then(
      () => undefined,
      () => undefined,
    );
    queue.set(this.namespace, settled);
    try {
      await mine;
    } finally {
      if (queue.get(this.namespace) === settled) queue.delete(this.namespace);
    }
  }

  /**
   * Refuses a write that would take the namespace over its quota, judged on the slowest level
   * (the one that keeps everything). An overwrite replaces its old entry rather than adding one.
   * A level that cannot answer in time lets the write through: quotas must not stall a call.
   */
  async #checkQuota(storageKey: string, quota: QuotaOptions, incomingBytes: number): Promise<void> {
    const levels = this.#tier.levels;
    const level = levels[levels.length - 1]!;
    const backend = level.backend;
    if (!backend.statsFor) return;
    const prefix = this.prefix();
    const measure = () =>
      this.engine.guard(this.tierName, level, 'quota', storageKey, undefined, async () => {
        const [usage, previous] = await Promise.all([backend.statsFor!(prefix), backend.get(storageKey)]);
        const previousBytes = previous?.value.byteLength;
        return {
          stored: usage.entries,
          entries: usage.entries + (previousBytes === undefined ? 1 : 0),
          bytes: usage.bytes - (previousBytes ?? 0) + incomingBytes,
        };
      });
    const over = (after: { entries: number; bytes: number }) =>
      (quota.maxEntries !== undefined && after.entries > quota.maxEntries) ||
      (quota.maxBytes !== undefined && after.bytes > quota.maxBytes);
    let after = await measure();
    if (!after) return;
    if (over(after)) {
      // The totals count expired entries no read or prune has removed yet: sweep them before
      // refusing a write that only they stand in the way of.
      await this.engine.guard(this.tierName, level, 'prune', undefined, 0, () => backend.prune());
      after = await measure();
      if (!after) return;
    }
    if (quota.maxEntries !== undefined && after.entries > quota.maxEntries) {
      throw new QuotaExceededError(this.namespace, `${after.stored} of ${quota.maxEntries} entries`);
    }
    if (quota.maxBytes !== undefined && after.bytes > quota.maxBytes) {
      throw new QuotaExceededError(this.namespace, `${after.bytes} of ${quota.maxBytes} bytes`);
    }
  }

  async #trimQuota(quota: QuotaOptions): Promise<void> {
    const prefix = this.prefix();
    const levels = this.#tier.levels;
    for (const level of levels) {
      if (!level.backend.trim) continue;
      // The memory level reports its own evictions (reason 'quota') through onEvict. A store
      // (a memory backend passed as one too) names each live entry it evicted: those are the
      // evictions, not the count trim returns, which includes expired entries swept on the way.
      const named = this.engine.storeLevels.includes(level)
        ? (key: string) => {
            this.engine.levelBucket(level).evictions++;
            if (level === levels[levels.length - 1]) this.#counters.evictions++;
            if (this.engine.emitter.has('evict')) {
              this.engine.emitter.emit('evict', {
                key,
                tier: this.tierName,
                level: level.name,
                reason: 'quota',
              });
            }
          }
        : undefined;
      await this.engine.guard(this.tierName, level, 'trim', undefined, 0, () =>
        level.backend.trim!(prefix, { maxEntries: quota.maxEntries, maxBytes: quota.maxBytes }, named),
      );
    }
  }
}

/** The cache a user holds: the `responses` tier of its namespace, plus whole-cache operations. */
export class Cache extends CacheView {
  /**
   * Resolves once the cache listens to its store's invalidation bus (Redis pub/sub), so that
   * writes by other processes reach this process's memory level from then on.
   */
  async ready(): Promise<void> {
    await this.engine.ready();
  }

  /** Writes pending counters to the store now (they are also flushed on a timer and on close). */
  async flushStats(): Promise<void> {
    await this.engine.stats.flush();
  }

  /** Statistics over every tier, namespace and level, including those persisted by earlier runs. */
  async getAllStats(): Promise<CacheStats> {
    const engine = this.engine;
    await engine.stats.flush();
    const all = await engine.stats.read();
    const totals = emptyCounters();
    const tierSets: Record<string, CounterSet> = {};
    const namespaces: Record<string, CounterSet> = {};
    const scopes: CacheStats['scopes'] = [];
    const levels: CacheStats['levels'] = {};
    for (const [scope, set] of all) {
      const values = set as unknown as Record<string, number>;
      if (scope.startsWith(`${COUNTER_SCOPE}:`)) {
        const [, tier, namespace] = scope.split(':') as [string, string, string];
        addCounters(totals, values);
        scopes.push({ ...withRate(set), tier, namespace });
        namespaces[namespace] = addCounters(namespaces[namespace] ?? emptyCounters(), values);
        tierSets[tier] = addCounters(tierSets[tier] ?? emptyCounters(), values);
      } else if (scope.startsWith(`${LEVEL_SCOPE}:`)) {
        const name = scope.slice(LEVEL_SCOPE.length + 1);
        levels[name] = {
          hits: set.hits,
          errors: set.errors,
          skipped: set.skipped,
          evictions: set.evictions,
          entries: 0,
          bytes: 0,
        };
      }
    }
    const tiers: CacheStats['tiers'] = {};
    for (const tier of engine.tiers.values()) {
      const slowest = tier.levels[tier.levels.length - 1]!;
      const size = slowest.backend.statsFor
        ? await engine.guard(tier.name, slowest, 'statsFor', undefined, { entries: 0, bytes: 0 }, () =>
            slowest.backend.statsFor!(`${tier.name}/`),
          )
        : { entries: 0, bytes: 0 };
      tiers[tier.name] = { ...withRate(tierSets[tier.name] ?? emptyCounters()), ...size };
    }
    for (const { tier, level } of [...engine.distinctLevels()]) {
      const size = await engine.guard(tier, level, 'stats', undefined, undefined, () =>
        level.backend.stats(),
      );
      const into = levels[level.name] ?? {
        hits: 0,
        errors: 0,
        skipped: 0,
        evictions: 0,
        entries: 0,
        bytes: 0,
      };
      if (size) {
        into.entries += size.entries;
        into.bytes += size.bytes;
      }
      levels[level.name] = into;
    }
    const namespaceStats: CacheStats['namespaces'] = {};
    for (const name of new Set([...Object.keys(namespaces), ...engine.namespaces])) {
      const size = { entries: 0, bytes: 0 };
      for (const tier of engine.tiers.values()) {
        const slowest = tier.levels[tier.levels.length - 1]!;
        if (!slowest.backend.statsFor) continue;
        const part = await engine.guard(
          tier.name,
          slowest,
          'statsFor',
          undefined,
          { entries: 0, bytes: 0 },
          () => slowest.backend.statsFor!(`${tier.name}/${name}:`),
        );
        size.entries += part.entries;
        size.bytes += part.bytes;
      }
      namespaceStats[name] = { ...withRate(namespaces[name] ?? emptyCounters()), ...size };
    }
    return { totals: withRate(totals), tiers, namespaces: namespaceStats, scopes, levels };
  }

  /**
   * Removes every cached entry of every tier and namespace from every level, and resets the
   * cache's counters. Records that are not cache entries — the idempotency store and tool ledger,
   * with the ledger's counters — are kept: a retried side effect must still find its outcome.
   */
  async clearAll(): Promise<void> {
    const engine = this.engine;
    // As in #deleteOnLevels: announced before and after, and the memory levels cleared again with
    // the closing announcement (once deletes that outlive their deadline finish), so that no read
    // promotes what it read from a store before the store was cleared.
    engine.publish({ c: 1 });
    const late = new Set<Promise<unknown>>();
    for (const { tier, level } of [...engine.distinctLevels()]) {
      if (level.sync) {
        // A memory level holds this cache's entries only.
        await engine.guard(tier, level, 'clear', undefined, undefined, () => level.backend.clear());
        continue;
      }
      // Every tier, including ones only other processes use: one pass over the keys finds their
      // names (cache keys are `<tier>/<namespace>:…`; ledger records start with `~`).
      const tiers = new Set(engine.tiers.keys());
      await engine.guard(tier, level, 'keys', undefined, undefined, async () => {
        for await (const key of level.backend.keys()) {
          const slash = key.indexOf('/');
          if (slash > 0 && !key.startsWith('~')) tiers.add(key.slice(0, slash));
        }
      });
      for (const name of tiers) {
        await engine.guard(
          tier,
          level,
          'deleteByPrefix',
          undefined,
          0,
          tracked(late, () => level.backend.deleteByPrefix(`${name}/`)),
        );
      }
    }
    const close = (): void => {
      for (const { level } of [...engine.distinctLevels()]) {
        if (level.sync) level.backend.clear().catch(() => undefined);
      }
      engine.publish({ c: 1 });
    };
    if (late.size === 0) close();
    else void Promise.allSettled([...late]).then(close);
    // The cache's own counters only: the tool ledger's (`~ledger/…` scopes) stay with its records.
    await engine.stats.reset(`${COUNTER_SCOPE}:`);
    await engine.stats.reset(`${LEVEL_SCOPE}:`);
  }

  /** Removes expired entries from every level; returns how many went. */
  async prune(): Promise<number> {
    const engine = this.engine;
    let total = 0;
    for (const { tier, level } of [...engine.distinctLevels()]) {
      total += await engine.guard(tier, level, 'prune', undefined, 0, () => level.backend.prune());
    }
    return total;
  }

  /** Flushes statistics and closes every backend. */
  async close(): Promise<void> {
    await this.engine.close();
  }
}

/** Creates a cache. With no options it lives in memory; pass `store: sqliteBackend()` to persist. */
export function createCache(options: CacheOptions = {}): Cache {
  const engine = new Engine(options);
  return new Cache(engine, 'responses', options.namespace ?? 'default');
}
