import { cacheError } from '../errors.ts';
import type {
  BackendCapabilities,
  BackendStats,
  Clock,
  ScanOptions,
  StoredEntry,
  SyncReadableBackend,
} from './backend.ts';
import { BACKEND_SPECIFICATION_VERSION, sameBytes, systemClock } from './backend.ts';
import { checkEntry, checkStorable, namespaceOf } from './prefix.ts';
import type { PrefixStats, TrimBounds } from './quota.ts';
import { checkLimit, tooLarge } from './quota.ts';

export type MemoryEvictionReason = 'size' | 'expired' | 'quota';

export interface MemoryBackendOptions {
  /**
   * Most entries held at once; the least recently used entry goes first. Idempotency records and
   * their output blobs (`~ledger/<namespace>:idem:` / `:blob:` keys) are neither counted against
   * this and `maxBytes` nor evicted to respect them: they are kept on top of the bounds until they
   * expire, as on SQLite (`stats()` still counts them).
   * @default 10_000
   */
  maxEntries?: number | undefined;
  /**
   * Most bytes held at once, counted per entry as its footprint: `value.byteLength` plus two
   * bytes per UTF-16 code unit of the key and of each tag (JS strings are UTF-16). The fixed
   * per-entry bookkeeping (~200 bytes) is not counted; bound it with `maxEntries`. An entry
   * whose footprint alone exceeds this is not stored.
   * @default 67_108_864 (64 MiB)
   */
  maxBytes?: number | undefined;
  /** Time source for expiry. @default systemClock */
  clock?: Clock | undefined;
  /**
   * Called after an entry was dropped to respect a bound (`'size'`), by `trim` to bring a prefix
   * within its limits (`'quota'`), or because it was found expired (`'expired'`); not called for `delete`, `deleteBy*` or `clear`. Runs synchronously
   * inside the write that caused it, so it must not write to this backend; an error it throws is
   * rethrown on a microtask so that it cannot leave the LRU half-updated.
   * @default undefined
   */
  onEvict?: ((key: string, reason: MemoryEvictionReason) => void) | undefined;
}

export interface MemoryBackend extends SyncReadableBackend {
  readonly name: 'memory';
  add(key: string, entry: StoredEntry): Promise<boolean>;
  compareAndSwap(key: string, expected: Uint8Array | null, next: StoredEntry | null): Promise<boolean>;
  /** Entries and value bytes under `prefix`; O(1) for a namespace prefix (`ns:`), O(namespaces) for a colon-free one. */
  statsFor(prefix: string): Promise<PrefixStats>;
  /**
   * Removes least recently used entries under `prefix` until it is within `limits` (expired ones
   * met on the way too) and returns how many went; names each live one (an eviction, counted in
   * `stats().evictions`) to `onEvicted` once done.
   */
  trim(prefix: string, limits: TrimBounds, onEvicted?: (key: string) => void): Promise<number>;
}

/**
 * In-process LRU cache. Values are kept by reference, not copied: callers must not mutate a
 * `Uint8Array` after `set` nor anything returned by `get` (the engine never does).
 */
export function memoryBackend(options: MemoryBackendOptions = {}): MemoryBackend {
  return new MemoryStore(options);
}

const DEFAULT_MAX_ENTRIES = 10_000;

/**
 * Idempotency records (`~ledger/<namespace>:idem:…`) and the output blobs they reference
 * (`~ledger/<namespace>:blob:…`): an evicted record is a forgotten side effect, which the next
 * call would run again, so the size bounds never evict them (as on SQLite). The ledger's history
 * can go.
 */
function isLedgerRecord(key: string): boolean {
  if (!key.startsWith('~ledger/')) return false;
  const colon = key.indexOf(':', 8);
  return colon !== -1 && (key.startsWith('idem:', colon + 1) || key.startsWith('blob:', colon + 1));
}
const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

const CAPABILITIES: BackendCapabilities = Object.freeze({
  createIfAbsent: true,
  // An in-process lock cannot stop another process, and the contract means cross-process locks.
  locks: false,
  pubsub: false,
  persistent: false,
  shared: false,
});

/**
 * One record per entry and nothing else (no closures, no per-entry arrays besides tags) to
 * keep the heap overhead small. It doubles as the returned `StoredEntry` so a hit allocates nothing.
 */
class Slot implements StoredEntry {
  value: Uint8Array;
  expiresAt: number | undefined;
  tags: readonly string[] | undefined;
  /** Footprint counted against `maxBytes`. */
  size: number;

  constructor(
    value: Uint8Array,
    expiresAt: number | undefined,
    tags: readonly string[] | undefined,
    size: number,
  ) {
    this.value = value;
    this.expiresAt = expiresAt;
    this.tags = tags;
    this.size = size;
  }
}

class MemoryStore implements MemoryBackend {
  readonly specificationVersion = BACKEND_SPECIFICATION_VERSION;
  readonly name = 'memory';
  readonly capabilities = CAPABILITIES;

  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly clock: Clock;
  private readonly onEvict: ((key: string, reason: MemoryEvictionReason) => void) | undefined;

  /** Iteration order is recency order: a hit deletes and re-inserts, so the first key is the LRU one. */
  private readonly slots = new Map<string, Slot>();
  private readonly tagIndex = new Map<string, Set<string>>();
  private readonly namespaces = new Map<string, PrefixStats>();
  private footprint = 0;
  private valueBytes = 0;
  /** Idempotency records and blobs among the slots, which the bounds leave out. */
  private protectedEntries = 0;
  private protectedFootprint = 0;
  private evictions = 0;
  private closed = false;

  constructor(options: MemoryBackendOptions) {
    this.maxEntries = checkLimit('memory', 'maxEntries', options.maxEntries ?? DEFAULT_MAX_ENTRIES, true);
    this.maxBytes = checkLimit('memory', 'maxBytes', options.maxBytes ?? DEFAULT_MAX_BYTES, true);
    this.clock = options.clock ?? systemClock;
    this.onEvict = options.onEvict;
  }

  getSync(key: string): StoredEntry | undefined {
    const slot = this.slots.get(key);
    if (slot === undefined) return undefined;
    if (slot.expiresAt !== undefined && slot.expiresAt <= this.clock.now()) {
      this.drop(key, slot, 'expired');
      return undefined;
    }
    this.slots.delete(key);
    this.slots.set(key, slot);
    return slot;
  }

  setSync(key: string, entry: StoredEntry): void {
    this.assertOpen();
    // Refused as on SQLite, which could not keep such keys and tags apart.
    checkStorable('memory', 'key', key);
    const { value } = entry;
    let tags: readonly string[] | undefined;
    let size = value.byteLength + 2 * key.length;
    if (entry.tags !== undefined && entry.tags.length > 0) {
      // Copied (and deduplicated) so that a caller mutating its array cannot desync the tag index.
      tags = entry.tags.length === 1 ? [entry.tags[0]!] : [...new Set(entry.tags)];
      for (const tag of tags) {
        checkStorable('memory', 'tag', tag);
        size += 2 * tag.length;
      }
    }
    const previous = this.slots.get(key);
    if (previous !== undefined) this.remove(key, previous);
    // Dropping the old value even when the new one is refused: serving it would be stale.
    if (size > this.maxBytes) return;
    this.insert(key, new Slot(value, entry.expiresAt ?? undefined, tags, size));
    if (this.overBounds()) this.evictToBounds();
  }

  async get(key: string): Promise<StoredEntry | undefined> {
    this.assertOpen();
    return this.getSync(key);
  }

  async getMany(keys: readonly string[]): Promise<(StoredEntry | undefined)[]> {
    this.assertOpen();
    return keys.map((key) => this.getSync(key));
  }

  async peekMany(keys: readonly string[]): Promise<(StoredEntry | undefined)[]> {
    this.assertOpen();
    const now = this.clock.now();
    return keys.map((key) => {
      const slot = this.slots.get(key);
      return slot === undefined || (slot.expiresAt !== undefined && slot.expiresAt <= now) ? undefined : slot;
    });
  }

  async set(key: string, entry: StoredEntry): Promise<void> {
    this.setSync(key, entry);
  }

  async setMany(entries: ReadonlyArray<readonly [key: string, entry: StoredEntry]>): Promise<void> {
    this.assertOpen();
    // All or nothing, as on SQLite (one transaction there).
    for (const [key, entry] of entries) checkEntry('memory', key, entry.tags);
    for (const [key, entry] of entries) this.setSync(key, entry);
  }

  async add(key: string, entry: StoredEntry): Promise<boolean> {
    this.assertOpen();
    if (this.live(key) !== undefined) return false;
    this.setSync(key, entry);
    // True only when stored: setSync drops an entry over maxBytes (and the bounds may evict it).
    return this.slots.has(key);
  }

  async has(key: string): Promise<boolean> {
    this.assertOpen();
    // No LRU bump: checking for presence is not a use of the value.
    return this.live(key) !== undefined;
  }

  async delete(key: string): Promise<boolean> {
    this.assertOpen();
    const slot = this.slots.get(key);
    if (slot === undefined) return false;
    this.remove(key, slot);
    return !this.isExpired(slot, this.clock.now());
  }

  async deleteByTag(tag: string): Promise<number> {
    this.assertOpen();
    const keys = this.tagIndex.get(tag);
    if (keys === undefined) return 0;
    const now = this.clock.now();
    let removed = 0;
    // Copy first: removing an entry edits this very set.
    for (const key of [...keys]) {
      const slot = this.slots.get(key);
      if (slot === undefined) continue;
      this.remove(key, slot);
      if (!this.isExpired(slot, now)) removed++;
    }
    return removed;
  }

  async deleteByPrefix(prefix: string): Promise<number> {
    this.assertOpen();
    checkStorable('memory', 'prefix', prefix);
    const now = this.clock.now();
    let removed = 0;
    for (const [key, slot] of this.slots) {
      if (!key.startsWith(prefix)) continue;
      this.remove(key, slot);
      if (!this.isExpired(slot, now)) removed++;
    }
    return removed;
  }

  async clear(): Promise<void> {
    this.assertOpen();
    this.reset();
  }

  async prune(): Promise<number> {
    this.assertOpen();
    const now = this.clock.now();
    let removed = 0;
    for (const [key, slot] of this.slots) {
      if (!this.isExpired(slot, now)) continue;
      this.drop(key, slot, 'expired');
      removed++;
    }
    return removed;
  }

  async *keys(options: ScanOptions = {}): AsyncIterable<string> {
    this.assertOpen();
    const prefix = options.prefix ?? '';
    checkStorable('memory', 'prefix', prefix);
    // A snapshot, because a hit during iteration moves its key to the end of the map and a live
    // iterator would then yield it twice.
    const snapshot: string[] = [];
    for (const key of this.slots.keys()) if (key.startsWith(prefix)) snapshot.push(key);
    for (const key of snapshot) {
      if (this.live(key) !== undefined) yield key;
    }
  }

  async stats(): Promise<BackendStats> {
    this.assertOpen();
    return { entries: this.slots.size, bytes: this.valueBytes, evictions: this.evictions };
  }

  async statsFor(prefix: string): Promise<PrefixStats> {
    this.assertOpen();
    checkStorable('memory', 'prefix', prefix);
    if (prefix === '') return { entries: this.slots.size, bytes: this.valueBytes };
    const colon = prefix.indexOf(':');
    if (colon === prefix.length - 1) {
      const totals = this.namespaces.get(prefix);
      return { entries: totals?.entries ?? 0, bytes: totals?.bytes ?? 0 };
    }
    const totals = { entries: 0, bytes: 0 };
    if (colon === -1) {
      // Under a colon-free prefix (a tier), every key's namespace starts with the prefix too, so
      // the namespace totals add up; only keys without any colon need a walk, if there are any.
      for (const [namespace, each] of this.namespaces) {
        if (namespace === '' || !namespace.startsWith(prefix)) continue;
        totals.entries += each.entries;
        totals.bytes += each.bytes;
      }
      if (!this.namespaces.has('')) return totals;
    }
    for (const [key, slot] of this.slots) {
      if (!key.startsWith(prefix) || (colon === -1 && key.includes(':'))) continue;
      totals.entries++;
      totals.bytes += slot.value.byteLength;
    }
    return totals;
  }

  async trim(prefix: string, bounds: TrimBounds, onEvicted?: (key: string) => void): Promise<number> {
    const maxEntries = checkLimit('memory', 'trim maxEntries', bounds.maxEntries ?? Infinity, true);
    const maxBytes = checkLimit('memory', 'trim maxBytes', bounds.maxBytes ?? Infinity, true);
    let { entries, bytes } = await this.statsFor(prefix);
    if (entries <= maxEntries && bytes <= maxBytes) return 0;
    const now = this.clock.now();
    let removed = 0;
    const live: string[] = [];
    // Walks the global LRU order: per-prefix lists would cost two pointers per entry, and trim
    // only runs when a namespace is over its quota. Expired entries go first, whatever their
    // recency: a live entry must never make room while an expired one stays.
    walk: for (const expiredPass of [true, false]) {
      for (const [key, slot] of this.slots) {
        if (entries <= maxEntries && bytes <= maxBytes) break walk;
        if (!key.startsWith(prefix)) continue;
        const expired = this.isExpired(slot, now);
        if (expiredPass && !expired) continue;
        if (!expired) {
          this.evictions++;
          live.push(key);
        }
        this.drop(key, slot, expired ? 'expired' : 'quota');
        entries--;
        bytes -= slot.value.byteLength;
        removed++;
      }
    }
    // Named once the walk is over (a listener must not change the map being walked), as on
    // SQLite: only live entries are evictions; expired ones swept on the way are not.
    if (onEvicted) for (const key of live) onEvicted(key);
    return removed;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.reset();
    this.closed = true;
  }

  async compareAndSwap(key: string, expected: Uint8Array | null, next: StoredEntry | null): Promise<boolean> {
    this.assertOpen();
    checkEntry('memory', key, next?.tags);
    if (next !== null) {
      let size = next.value.byteLength + 2 * key.length;
      for (const tag of new Set(next.tags ?? [])) size += 2 * tag.length;
      // A conditional write must not report success for a value the store would drop.
      if (size > this.maxBytes) throw tooLarge('memory', size, this.maxBytes);
    }
    // Synchronous from the read to the write, so no other caller can interleave.
    const slot = this.live(key);
    if (expected === null ? slot !== undefined : slot === undefined || !sameBytes(slot.value, expected)) {
      return false;
    }
    if (next === null || (next.expiresAt !== undefined && next.expiresAt <= this.clock.now())) {
      if (slot !== undefined) this.remove(key, slot);
    } else {
      this.setSync(key, next);
    }
    return true;
  }

  /** The slot for `key` if it is live; removes it when found expired. */
  private live(key: string): Slot | undefined {
    const slot = this.slots.get(key);
    if (slot === undefined) return undefined;
    if (this.isExpired(slot, this.clock.now())) {
      this.drop(key, slot, 'expired');
      return undefined;
    }
    return slot;
  }

  private isExpired(slot: Slot, now: number): boolean {
    return slot.expiresAt !== undefined && slot.expiresAt <= now;
  }

  /** Whether the entries the bounds count (all but idempotency records and blobs) exceed them. */
  private overBounds(): boolean {
    return (
      this.slots.size - this.protectedEntries > this.maxEntries ||
      this.footprint - this.protectedFootprint > this.maxBytes
    );
  }

  /**
   * Drops least recently used entries until within bounds. Idempotency records and the blobs
   * they reference are passed over (see `isLedgerRecord`): the bounds do not count them and they
   * are never evicted.
   */
  private evictToBounds(): void {
    const now = this.clock.now();
    let passed: [string, Slot][] | undefined;
    for (const [key, slot] of this.slots) {
      if (!this.overBounds()) break;
      const expired = this.isExpired(slot, now);
      if (!expired && isLedgerRecord(key)) {
        (passed ??= []).push([key, slot]);
        continue;
      }
      if (!expired) this.evictions++;
      this.drop(key, slot, expired ? 'expired' : 'size');
    }
    // Moved to the recent end, so that the next walk does not pass them again (their recency
    // does not matter: they are never evicted).
    if (passed === undefined) return;
    for (const [key, slot] of passed) {
      this.slots.delete(key);
      this.slots.set(key, slot);
    }
  }

  private insert(key: string, slot: Slot): void {
    this.slots.set(key, slot);
    this.footprint += slot.size;
    if (isLedgerRecord(key)) {
      this.protectedEntries++;
      this.protectedFootprint += slot.size;
    }
    this.valueBytes += slot.value.byteLength;
    const namespace = namespaceOf(key);
    const totals = this.namespaces.get(namespace);
    if (totals === undefined) {
      this.namespaces.set(namespace, { entries: 1, bytes: slot.value.byteLength });
    } else {
      totals.entries++;
      totals.bytes += slot.value.byteLength;
    }
    if (slot.tags === undefined) return;
    for (const tag of slot.tags) {
      const keys = this.tagIndex.get(tag);
      if (keys === undefined) this.tagIndex.set(tag, new Set([key]));
      else keys.add(key);
    }
  }

  private remove(key: string, slot: Slot): void {
    this.slots.delete(key);
    this.footprint -= slot.size;
    if (isLedgerRecord(key)) {
      this.protectedEntries--;
      this.protectedFootprint -= slot.size;
    }
    this.valueBytes -= slot.value.byteLength;
    const namespace = namespaceOf(key);
    const totals = this.namespaces.get(namespace);
    if (totals !== undefined) {
      totals.entries--;
      totals.bytes -= slot.value.byteLength;
      if (totals.entries === 0) this.namespaces.delete(namespace);
    }
    if (slot.tags === undefined) return;
    for (const tag of slot.tags) {
      const keys = this.tagIndex.get(tag);
      if (keys === undefined) continue;
      keys.delete(key);
      if (keys.size === 0) this.tagIndex.delete(tag);
    }
  }

  private drop(key: string, slot: Slot, reason: MemoryEvictionReason): void {
    this.remove(key, slot);
    if (this.onEvict === undefined) return;
    try {
      this.onEvict(key, reason);
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  private reset(): void {
    this.slots.clear();
    this.tagIndex.clear();
    this.namespaces.clear();
    this.footprint = 0;
    this.valueBytes = 0;
    this.protectedEntries = 0;
    this.protectedFootprint = 0;
  }

  private assertOpen(): void {
    if (this.closed) {
      throw cacheError(
        'E_CLOSED',
        'memory',
        'this backend was closed; create a new one with memoryBackend()',
      );
    }
  }
}
