import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CacheBackend, Clock } from '../backends/backend.ts';
import type { CacheView } from '../cache.ts';
import { cacheError } from '../errors.ts';
import { hashRequest } from '../keys/index.ts';
import type { Duration } from '../ttl.ts';
import { parseDuration } from '../ttl.ts';
import { boundStore, ledgerTimeout, unbounded } from './bounded.ts';
import type { RecordedError } from './errors.ts';
import { IdempotencyConflictError, recordError } from './errors.ts';
import type { StoredOutcome } from './internal.ts';
import {
  BlobStore,
  contended,
  decodeRecord,
  encodeRecord,
  isPlainObject,
  ledgerPrefix,
  MAX_SWAPS,
  resolveClock,
  resolveStore,
} from './internal.ts';

export type IdempotencyStatus = 'pending' | 'succeeded' | 'failed';

export interface IdempotencyRecord<T = unknown> {
  /** The idempotency key, as given. */
  key: string;
  status: IdempotencyStatus;
  /** Hash of the request the key was first used for (`hashRequest`). */
  requestHash: string;
  /** Executions started under this key (takeovers and forced or retried runs included). */
  attempts: number;
  createdAt: number;
  updatedAt: number;
  completedAt?: number | undefined;
  /** When the store forgets the record (epoch ms); undefined: never. */
  expiresAt?: number | undefined;
  /** Holder of a pending record. */
  owner?: string | undefined;
  /** Until when the holder's claim is valid unless renewed; after it, another caller may take over. */
  leaseExpiresAt?: number | undefined;
  /** The recorded value: a success's result, or a failure's value (a shell result with a non-zero exit). */
  result?: T | undefined;
  /** The recorded error of a failure that threw. */
  error?: RecordedError | undefined;
  /** Set when the execution succeeded but its result could not be stored (why). */
  resultNotStored?: string | undefined;
  /** Free-form facts stored with the record (the ledger keeps tool, taskId and workItemId here). */
  metadata?: Record<string, unknown> | undefined;
}

export interface IdempotencyStoreOptions {
  /** The cache whose store keeps the records (its slowest store level). @default none: pass cache or store */
  cache?: CacheView | undefined;
  /** The backend that keeps the records; overrides `cache`'s. It must implement `compareAndSwap`. @default the cache's store */
  store?: CacheBackend | undefined;
  /** Records of different namespaces never see each other. @default cache.namespace, else 'default' */
  namespace?: string | undefined;
  /** How long a record is kept (and replayed) after its last change. @default '7d' */
  ttl?: Duration | undefined;
  /** How long a pending record's claim lasts unless renewed. @default '30s' */
  leaseTtl?: Duration | undefined;
  /** Recorded values (or top-level string / binary fields) over this many bytes go to shared blobs. @default 10240 */
  blobThreshold?: number | undefined;
  /** Time source for leases and record times. @default the cache's clock, else Date.now */
  clock?: Clock | undefined;
  /**
   * Longest wait for one store call; a call that takes longer fails with `E_TIMEOUT` (a claim
   * then throws rather than letting the side effect run unrecorded).
   * @default the timeout of the cache's store level; else 500 ms for network stores, none in-process
   */
  timeout?: Duration | undefined;
}

export interface ClaimOptions {
  /** The claim's lease. @default the store's leaseTtl */
  leaseTtl?: Duration | undefined;
  /** Owner token of this caller; reuse one to resume your own claim after a restart. @default a random UUID */
  owner?: string | undefined;
  /** Record retention for this key. @default the store's ttl */
  ttl?: Duration | undefined;
  /** Claim a failed record for a new attempt instead of returning it. @default false */
  retryFailed?: boolean | undefined;
  /** Claim a completed (succeeded or failed) record for a new attempt. A live claim is never taken. @default false */
  force?: boolean | undefined;
  /** Take over a pending record whose lease ran out (its holder stopped). `false` reports it as abandoned. @default true */
  takeOver?: boolean | undefined;
  /** Stored with the record. @default undefined */
  metadata?: Record<string, unknown> | undefined;
}

export type CheckOrCreateResult<T = unknown> =
  | {
      status: 'created';
      record: IdempotencyRecord<T>;
      /** Pass it to markSucceeded / markFailed / renew / release. */
      owner: string;
      /** This claim took over a record whose holder stopped before recording an outcome. */
      recovered: boolean;
    }
  | {
      status: 'pending';
      record: IdempotencyRecord<T>;
      /** The holder's lease ran out (only reported with `takeOver: false`). */
      abandoned: boolean;
    }
  | { status: 'succeeded' | 'failed'; record: IdempotencyRecord<T> };

export interface MarkOptions {
  /** Record retention from now. @default the store's ttl */
  ttl?: Duration | undefined;
  /** Merged into the record's metadata. @default undefined */
  metadata?: Record<string, unknown> | undefined;
  /**
   * The operation ran but its result (or failure value) cannot be stored (why): the record says
   * so instead of holding it, so that a replay reports it rather than running the operation again.
   * @default undefined
   */
  resultNotStored?: string | undefined;
}

export interface WaitOptions {
  /** Longest wait; then the record is returned still pending. @default unlimited */
  timeout?: Duration | undefined;
  /** Longest pause between two reads of the record. @default 100 */
  pollInterval?: Duration | undefined;
  signal?: AbortSignal | undefined;
}

export interface IdempotencyStats {
  pending: number;
  succeeded: number;
  failed: number;
  /** Pending records whose lease ran out: their holder stopped before recording an outcome. */
  abandoned: number;
  total: number;
}

export interface RecordFilter {
  status?: IdempotencyStatus | undefined;
  /** Only records whose metadata has these values (e.g. `{ taskId: 't-1' }`). */
  metadata?: Record<string, unknown> | undefined;
}

export interface IdempotencyStore {
  readonly namespace: string;
  /** The backend holding the records. */
  readonly backend: CacheBackend;
  /** The record under `key`, its result loaded; with `request`, a different request throws a conflict. */
  check<T = unknown>(key: string, request?: unknown): Promise<IdempotencyRecord<T> | undefined>;
  /**
   * Atomically: creates a pending record (you run the operation), or reports the existing one
   * (pending: someone else runs it; succeeded / failed: replay it). Takes over a pending record
   * whose lease ran out. A key recorded for a different request throws `IdempotencyConflictError`.
   */
  checkOrCreate<T = unknown>(
    key: string,
    request: unknown,
    options?: ClaimOptions,
  ): Promise<CheckOrCreateResult<T>>;
  /** Creates a pending record only when the key is free; undefined when it exists. */
  create<T = unknown>(
    key: string,
    request: unknown,
    options?: ClaimOptions,
  ): Promise<{ record: IdempotencyRecord<T>; owner: string } | undefined>;
  /** Records success; false when `owner` no longer holds the key (its lease was taken over). */
  markSucceeded(key: string, result: unknown, owner: string, options?: MarkOptions): Promise<boolean>;
  /** Records failure: the error, and optionally a value (a shell result with a non-zero exit). */
  markFailed(
    key: string,
    error: unknown,
    owner: string,
    options?: MarkOptions & { result?: unknown },
  ): Promise<boolean>;
  /** Extends the holder's lease; false when it no longer holds the key. */
  renew(key: string, owner: string, leaseTtl?: Duration): Promise<boolean>;
  /** Drops a pending record its holder will not complete (nothing happened), so the next caller runs. */
  release(key: string, owner: string): Promise<boolean>;
  /** Forgets a key whatever its state. */
  delete(key: string): Promise<boolean>;
  /** Polls until the record is no longer pending, its lease ran out, or the timeout passed. */
  waitFor<T = unknown>(key: string, options?: WaitOptions): Promise<IdempotencyRecord<T> | undefined>;
  /** Records without their results, optionally filtered. O(records). */
  list(filter?: RecordFilter): Promise<IdempotencyRecord<never>[]>;
  /** Counts by state, derived from the records themselves (so any process or the CLI gets the same). O(records). */
  stats(filter?: Omit<RecordFilter, 'status'>): Promise<IdempotencyStats>;
  /** Removes expired entries from the store (expired records are already invisible); returns how many went. */
  cleanupExpired(): Promise<number>;
  /** @internal the storage key of an idempotency key */
  storageKey(key: string): string;
}

/** What a record looks like in the store. */
interface StoredRecord {
  key: string;
  status: IdempotencyStatus;
  requestHash: string;
  attempts: number;
  createdAt: number;
  updatedAt: number;
  completedAt?: number;
  expiresAt?: number;
  owner?: string;
  leaseExpiresAt?: number;
  result?: StoredOutcome;
  error?: RecordedError;
  resultNotStored?: string;
  metadata?: Record<string, unknown>;
  /** The claim's lease length, which `renew` without a `leaseTtl` extends by. */
  leaseMs?: number;
  /** The claim's own retention (`ClaimOptions.ttl`; null: never), kept when it completes. */
  retentionMs?: number | null;
  /** The completed record a forced or retry claim replaced: `release` restores it. */
  previous?: StoredRecord;
}

interface Current {
  raw: Uint8Array;
  record: StoredRecord;
}

type Decision<R> = { write: StoredRecord | null; result: R } | { result: R };

interface ClaimDecision {
  kind: 'created' | 'recovered' | 'pending' | 'abandoned' | 'completed';
  stored: StoredRecord;
}

/** Stores already checked for eviction, so each is asked (and warned about) once per process. */
const evictionChecked = new WeakSet<CacheBackend>();

/**
 * Warns once (`X_LEDGER_EVICTION`) when the store may drop records before they expire: an evicted
 * record is a forgotten side effect, which the next call runs again. Best effort, in the background.
 */
function warnOnEviction(store: CacheBackend): void {
  if (evictionChecked.has(store) || typeof store.evictionRisk !== 'function') return;
  evictionChecked.add(store);
  store.evictionRisk().then(
    (risk) => {
      if (risk === undefined) return;
      process.emitWarning(
        `idempotency records in the ${store.name} store can be evicted (${risk}); an evicted record lets ` +
          'its side effect run again. Give the ledger its own `store` that keeps them: a Redis with ' +
          'maxmemory-policy noeviction, or a SQLite file.',
        { code: 'X_LEDGER_EVICTION' },
      );
    },
    () => {
      // The store cannot tell (CONFIG disabled, not reachable yet): nothing to warn about.
    },
  );
}

const DEFAULT_TTL = '7d';
const DEFAULT_LEASE = '30s';
const DEFAULT_BLOB_THRESHOLD = 10 * 1024;
const SCAN_BATCH = 200;

/**
 * An idempotency store over any backend with `compareAndSwap` (memory, SQLite, Redis): every
 * state change is one atomic read → decide → swap, so it holds across processes sharing the store.
 */
export function createIdempotencyStore(options: IdempotencyStoreOptions = {}): IdempotencyStore {
  const clock = resolveClock(options);
  const resolved = resolveStore(options, 'createIdempotencyStore');
  warnOnEviction(unbounded(resolved));
  const store = boundStore(resolved, ledgerTimeout(options));
  const namespace = options.namespace ?? options.cache?.namespace ?? 'default';
  const prefix = ledgerPrefix(namespace);
  const recordPrefix = `${prefix}idem:`;
  const defaultTtl = parseDuration(options.ttl ?? DEFAULT_TTL, 'ttl');
  const defaultLease = positive(options.leaseTtl ?? DEFAULT_LEASE, 'leaseTtl');
  const threshold = options.blobThreshold ?? DEFAULT_BLOB_THRESHOLD;
  if (!Number.isInteger(threshold) || threshold < 0) {
    throw cacheError(
      'E_INVALID_OPTION',
      'ledger',
      `blobThreshold must be a non-negative integer, got ${threshold}`,
    );
  }
  const blobs = new BlobStore(store, prefix, threshold);

  const storageKey = (key: string): string => {
    if (typeof key !== 'string' || key.length === 0) {
      throw cacheError(
        'E_INVALID_KEY',
        'ledger',
        `idempotency key must be a non-empty string, got ${String(key)}`,
      );
    }
    return recordPrefix + hashRequest(key);
  };

  const ttlOf = (ttl: Duration | undefined): number | undefined =>
    ttl === undefined ? defaultTtl : parseDuration(ttl, 'ttl');

  /** Read → decide → swap until the swap wins; `decide` may throw (a conflict) or decline to write. */
  async function update<R>(
    key: string,
    decide: (current: Current | undefined, now: number) => Decision<R>,
  ): Promise<R> {
    const where = storageKey(key);
    for (let attempt = 0; attempt < MAX_SWAPS; attempt++) {
      const entry = await store.get(where);
      const current = entry
        ? { raw: entry.value, record: decodeRecord<StoredRecord>(entry.value) }
        : undefined;
      const now = clock.now();
      const decision = decide(current, now);
      if (!('write' in decision)) return decision.result;
      const next = decision.write;
      const written =
        next === null ? null : { value: encodeRecord(next, now), expiresAt: next.expiresAt ?? undefined };
      if (await store.compareAndSwap(where, current?.raw ?? null, written)) return decision.result;
    }
    throw contended('record');
  }

  async function read(key: string): Promise<StoredRecord | undefined> {
    const entry = await store.get(storageKey(key));
    return entry ? decodeRecord<StoredRecord>(entry.value) : undefined;
  }

  async function publicRecord<T>(stored: StoredRecord, withResult: boolean): Promise<IdempotencyRecord<T>> {
    // The bookkeeping for renew, completion and release stays internal.
    const { result, leaseMs: _lease, retentionMs: _retention, previous: _previous, ...rest } = stored;
    const record: IdempotencyRecord<T> = { ...rest };
    if (withResult && result !== undefined) record.result = (await blobs.resolve(result)) as T;
    return record;
  }

  function assertSameRequest(record: StoredRecord, requestHash: string): void {
    if (record.requestHash !== requestHash) {
      throw new IdempotencyConflictError(record.key, record.requestHash, requestHash);
    }
  }

  function claim(
    key: string,
    requestHash: string,
    owner: string,
    options: ClaimOptions,
    previous: StoredRecord | undefined,
    now: number,
  ): StoredRecord {
    const ttl = ttlOf(options.ttl);
    const lease = options.leaseTtl === undefined ? defaultLease : positive(options.leaseTtl, 'leaseTtl');
    const record: StoredRecord = {
      key,
      status: 'pending',
      requestHash,
      attempts: (previous?.attempts ?? 0) + 1,
      createdAt: previous?.createdAt ?? now,
      updatedAt: now,
      owner,
      leaseExpiresAt: now + lease,
      leaseMs: lease,
    };
    if (options.ttl !== undefined) record.retentionMs = ttl ?? null;
    // A re-claim of a completed record (force, retryFailed) keeps it, for release() to restore.
    if (previous && previous.status !== 'pending') {
      const { previous: _older, ...completed } = previous;
      record.previous = completed;
    } else if (previous?.previous) {
      // Taking over an abandoned re-claim keeps what that one replaced.
      record.previous = previous.previous;
    }
    if (ttl !== undefined) record.expiresAt = now + Math.max(ttl, lease);
    const metadata = { ...previous?.metadata, ...options.metadata };
    if (Object.keys(metadata).length > 0) record.metadata = metadata;
    return record;
  }

  async function complete(
    key: string,
    owner: string,
    status: 'succeeded' | 'failed',
    fill: (record: Partial<StoredRecord>, expiresAt: number | undefined) => Promise<void>,
    options: MarkOptions,
  ): Promise<boolean> {
    const now = clock.now();
    // The mark's ttl, else the one the key was claimed with, else the store's.
    let ttl: number | undefined;
    if (options.ttl !== undefined) ttl = ttlOf(options.ttl);
    else {
      const claimed = await read(key);
      ttl = claimed?.retentionMs === undefined ? defaultTtl : (claimed.retentionMs ?? undefined);
    }
    const expiresAt = ttl === undefined ? undefined : now + ttl;
    // Blobs are written before the record that references them, and outlive it.
    const filled: Partial<StoredRecord> = {};
    await fill(filled, expiresAt);
    return update(key, (current, at) => {
      const record = current?.record;
      if (record?.status !== 'pending' || record.owner !== owner) return { result: false };
      const next: StoredRecord = {
        ...record,
        ...filled,
        status,
        updatedAt: at,
        completedAt: at,
      };
      delete next.owner;
      delete next.leaseExpiresAt;
      delete next.leaseMs;
      delete next.previous;
      if (expiresAt === undefined) delete next.expiresAt;
      else next.expiresAt = expiresAt;
      if (options.metadata) next.metadata = { ...record.metadata, ...options.metadata };
      return { write: next, result: true };
    });
  }

  async function scan(filter: RecordFilter = {}): Promise<StoredRecord[]> {
    const out: StoredRecord[] = [];
    let batch: string[] = [];
    const flush = async () => {
      const entries = await store.getMany(batch);
      batch = [];
      for (const entry of entries) {
        if (!entry) continue;
        const record = decodeRecord<StoredRecord>(entry.value);
        if (filter.status !== undefined && record.status !== filter.status) continue;
        if (filter.metadata && !matches(record.metadata, filter.metadata)) continue;
        out.push(record);
      }
    };
    for await (const key of store.keys({ prefix: recordPrefix, batchSize: SCAN_BATCH })) {
      batch.push(key);
      if (batch.length >= SCAN_BATCH) await flush();
    }
    if (batch.length > 0) await flush();
    return out;
  }

  return {
    namespace,
    backend: store,
    storageKey,

    async check<T>(key: string, ...request: [request?: unknown]): Promise<IdempotencyRecord<T> | undefined> {
      const record = await read(key);
      if (!record) return undefined;
      if (request.length > 0) assertSameRequest(record, hashRequest(request[0]));
      return publicRecord<T>(record, true);
    },

    async checkOrCreate<T>(key: string, request: unknown, options: ClaimOptions = {}) {
      const requestHash = hashRequest(request);
      const owner = options.owner ?? randomUUID();
      const { kind, stored } = await update<ClaimDecision>(key, (current, now) => {
        const record = current?.record;
        if (!record) {
          const created = claim(key, requestHash, owner, options, undefined, now);
          return { write: created, result: { kind: 'created', stored: created } };
        }
        assertSameRequest(record, requestHash);
        const reclaim = (kind: 'created' | 'recovered'): Decision<ClaimDecision> => {
          const claimed = claim(key, requestHash, owner, options, record, now);
          return { write: claimed, result: { kind, stored: claimed } };
        };
        if (record.status === 'pending') {
          // The same owner resumes its own claim (a restarted worker with a stable id).
          if (record.owner === owner) return reclaim('recovered');
          if ((record.leaseExpiresAt ?? 0) > now) return { result: { kind: 'pending', stored: record } };
          if (options.takeOver === false) return { result: { kind: 'abandoned', stored: record } };
          return reclaim('recovered');
        }
        if (options.force || (record.status === 'failed' && options.retryFailed)) return reclaim('created');
        return { result: { kind: 'completed', stored: record } };
      });
      switch (kind) {
        case 'created':
        case 'recovered':
          return {
            status: 'created',
            record: await publicRecord<T>(stored, false),
            owner,
            recovered: kind === 'recovered',
          };
        case 'pending':
        case 'abandoned':
          return {
            status: 'pending',
            record: await publicRecord<T>(stored, false),
            abandoned: kind === 'abandoned',
          };
        default:
          return {
            status: stored.status as 'succeeded' | 'failed',
            record: await publicRecord<T>(stored, true),
          };
      }
    },

    async create<T>(key: string, request: unknown, options: ClaimOptions = {}) {
      const requestHash = hashRequest(request);
      const owner = options.owner ?? randomUUID();
      const created = await update<StoredRecord | undefined>(key, (current, now) => {
        if (current) return { result: undefined };
        const record = claim(key, requestHash, owner, options, undefined, now);
        return { write: record, result: record };
      });
      return created ? { record: await publicRecord<T>(created, false), owner } : undefined;
    },

    markSucceeded(key, result, owner, options = {}) {
      return complete(
        key,
        owner,
        'succeeded',
        async (record, expiresAt) => {
          if (options.resultNotStored !== undefined) record.resultNotStored = options.resultNotStored;
          else record.result = await blobs.spill(result, expiresAt);
        },
        options,
      );
    },

    markFailed(key, error, owner, options = {}) {
      return complete(
        key,
        owner,
        'failed',
        async (record, expiresAt) => {
          if (error !== undefined) record.error = recordError(error);
          if (options.resultNotStored !== undefined) record.resultNotStored = options.resultNotStored;
          else if ('result' in options) record.result = await blobs.spill(options.result, expiresAt);
        },
        options,
      );
    },

    async renew(key, owner, leaseTtl) {
      const given = leaseTtl === undefined ? undefined : positive(leaseTtl, 'leaseTtl');
      return update(key, (current, now) => {
        const record = current?.record;
        if (record?.status !== 'pending' || record.owner !== owner) return { result: false };
        // By the claim's own lease unless told otherwise, and never earlier than it already ends.
        const lease = given ?? record.leaseMs ?? defaultLease;
        const leaseExpiresAt = Math.max(record.leaseExpiresAt ?? 0, now + lease);
        const next: StoredRecord = { ...record, leaseExpiresAt, updatedAt: now };
        if (next.expiresAt !== undefined && next.expiresAt < now + lease) next.expiresAt = now + lease;
        return { write: next, result: true };
      });
    },

    async release(key, owner) {
      return update(key, (current) => {
        const record = current?.record;
        if (record?.status !== 'pending' || record.owner !== owner) return { result: false };
        // Nothing happened: the key goes back to what it was, a completed record included.
        return { write: record.previous ?? null, result: true };
      });
    },

    async delete(key) {
      return store.delete(storageKey(key));
    },

    async waitFor<T>(key: string, options: WaitOptions = {}) {
      const timeout = parseDuration(options.timeout, 'timeout');
      const maxPoll = positive(options.pollInterval ?? 100, 'pollInterval');
      const deadline = timeout === undefined ? Infinity : Date.now() + timeout;
      for (let attempt = 0; ; attempt++) {
        options.signal?.throwIfAborted();
        const record = await read(key);
        const settled = record?.status !== 'pending' || (record.leaseExpiresAt ?? 0) <= clock.now();
        if (settled || Date.now() >= deadline) return record ? publicRecord<T>(record, true) : undefined;
        // Never past the deadline, and woken by the signal.
        const wait = Math.min(maxPoll, 5 * 2 ** Math.min(attempt, 10), deadline - Date.now());
        await sleep(
          Math.max(0, wait),
          undefined,
          options.signal ? { signal: options.signal } : undefined,
        ).catch((error: unknown) => {
          if (options.signal?.aborted) throw options.signal.reason;
          throw error;
        });
      }
    },

    async list(filter) {
      const records = await scan(filter);
      return Promise.all(records.map((record) => publicRecord<never>(record, false)));
    },

    async stats(filter = {}) {
      const now = clock.now();
      const stats: IdempotencyStats = { pending: 0, succeeded: 0, failed: 0, abandoned: 0, total: 0 };
      for (const record of await scan(filter)) {
        stats[record.status]++;
        stats.total++;
        if (record.status === 'pending' && (record.leaseExpiresAt ?? 0) <= now) stats.abandoned++;
      }
      return stats;
    },

    /** Prunes the whole backend (records, their blobs, cache entries): returns how many went. */
    async cleanupExpired() {
      return store.prune();
    },
  };
}

function matches(metadata: Record<string, unknown> | undefined, wanted: Record<string, unknown>): boolean {
  for (const [name, value] of Object.entries(wanted)) {
    if (value === undefined) continue;
    if (!isPlainObject(metadata) || metadata[name] !== value) return false;
  }
  return true;
}

function positive(value: Duration, what: string): number {
  const ms = parseDuration(value, what);
  if (ms === undefined || ms <= 0) {
    throw cacheError(
      'E_INVALID_OPTION',
      'ledger',
      `${what} must be a positive duration such as '30s', got ${String(value)}`,
    );
  }
  return ms;
}
