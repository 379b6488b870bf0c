import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CacheBackend, Clock, StoredEntry } from '../backends/backend.ts';
import { supportsCompareAndSwap, systemClock } from '../backends/backend.ts';
import type { CacheView } from '../cache.ts';
import { decodeEntry, encodeEntry } from '../codec/index.ts';
import { deserializeValue, serializeValue } from '../codec/serialize.ts';
import { cacheError } from '../errors.ts';
import { isWellFormed } from '../keys/canonical.ts';
import { validateName } from '../keys/index.ts';

/** A backend the ledger can update atomically. */
export type SwapBackend = CacheBackend & Required<Pick<CacheBackend, 'compareAndSwap'>>;

/**
 * Every ledger key starts with `~ledger/<namespace>:`. `~` is not allowed in tier names, so no
 * tier's `clear()` or `invalidate()`, nor the cache's `clearAll()`, reaches these keys; only the
 * backend's own `clear()` does.
 */
export const LEDGER_KEY_PREFIX = '~ledger/';

export function ledgerPrefix(namespace: string): string {
  return `${LEDGER_KEY_PREFIX}${validateName(namespace, 'namespace')}:`;
}

export function resolveClock(options: { clock?: Clock | undefined; cache?: CacheView | undefined }): Clock {
  return options.clock ?? options.cache?.clock ?? systemClock;
}

/**
 * The backend ledger records live in: `store` when given, else the cache's `recordStore` (its
 * shared, persistent store level, or for a memory-only cache an unbounded in-process memory
 * store, so that no record is ever evicted).
 */
export function resolveStore(
  options: { store?: CacheBackend | undefined; cache?: CacheView | undefined },
  what: string,
): SwapBackend {
  let store = options.store;
  if (!store && options.cache) store = options.cache.recordStore;
  if (!store) {
    throw cacheError(
      'E_INVALID_OPTION',
      'ledger',
      `${what} needs \`cache\` or \`store\`; pass createCache(...) as cache`,
    );
  }
  if (!supportsCompareAndSwap(store)) {
    throw cacheError(
      'E_INVALID_OPTION',
      'ledger',
      `store "${store.name}" cannot update atomically (no compareAndSwap); use memoryBackend, ` +
        'sqliteBackend or redisBackend, or implement compareAndSwap and pass runBackendConformance',
    );
  }
  return store;
}

/** A value as a ledger record keeps it: inline, or (parts of it) in content-addressed blobs. */
export interface StoredOutcome {
  /** The value, with spilled fields set to null. Absent when the whole value is in `w`. */
  v?: unknown;
  /** The whole value in one blob: `t` text, `b` bytes, `v` any other value. */
  w?: BlobRef;
  /** Top-level fields spilled to their own blobs. */
  p?: Record<string, BlobRef>;
}

interface BlobRef {
  h: string;
  t: 't' | 'b' | 'v';
}

/**
 * Outputs over a threshold are stored once, by content hash, and referenced from each record:
 * two executions with the same large stdout share one blob. Blob keys are
 * `~ledger/<ns>:blob:<sha256>`; a blob lives as long as the longest-lived record that references it.
 */
export class BlobStore {
  readonly #store: SwapBackend;
  readonly #prefix: string;
  readonly #threshold: number;

  constructor(store: SwapBackend, prefix: string, threshold: number) {
    this.#store = store;
    this.#prefix = `${prefix}blob:`;
    this.#threshold = threshold;
  }

  get prefix(): string {
    return this.#prefix;
  }

  /** Splits `value` for storage; writes the blobs it needs, kept at least until `expiresAt`. */
  async spill(value: unknown, expiresAt: number | undefined): Promise<StoredOutcome> {
    const whole = this.#asPart(value);
    if (whole) return { w: await this.#put(whole.kind, whole.bytes, value, expiresAt) };
    // A string or binary output is measured as itself, not as its JSON form.
    if (typeof value === 'string' || value instanceof Uint8Array) return { v: value };
    if (!isPlainObject(value)) return this.#spillWhole(value, expiresAt);
    let rest: Record<string, unknown> | undefined;
    let parts: Record<string, BlobRef> | undefined;
    for (const [field, fieldValue] of Object.entries(value)) {
      const part = this.#asPart(fieldValue);
      if (!part) continue;
      rest ??= { ...value };
      parts ??= {};
      rest[field] = null;
      parts[field] = await this.#put(part.kind, part.bytes, fieldValue, expiresAt);
    }
    const outcome = await this.#spillWhole(rest ?? value, expiresAt);
    if (parts) outcome.p = parts;
    return outcome;
  }

  async resolve(outcome: StoredOutcome | undefined): Promise<unknown> {
    if (outcome === undefined) return undefined;
    let value = outcome.w ? await this.#get(outcome.w) : outcome.v;
    if (outcome.p) {
      const copy = { ...(value as Record<string, unknown>) };
      for (const [field, ref] of Object.entries(outcome.p)) copy[field] = await this.#get(ref);
      value = copy;
    }
    return value;
  }

  async #spillWhole(value: unknown, expiresAt: number | undefined): Promise<StoredOutcome> {
    const { text, tagged } = serializeValue(value);
    if (text.length <= this.#threshold / 3 || Buffer.byteLength(text) <= this.#threshold) return { v: value };
    const bytes = Buffer.from(`${tagged ? 1 : 0}${text}`);
    return { w: await this.#put('v', bytes, value, expiresAt) };
  }

  /** Large strings and binary values are stored as their bytes. */
  #asPart(value: unknown): { kind: 't' | 'b'; bytes: Uint8Array } | undefined {
    if (typeof value === 'string') {
      // Cheap bounds first: UTF-8 takes 1 to 3 bytes per UTF-16 unit.
      if (value.length * 3 <= this.#threshold) return undefined;
      // UTF-8 would turn a lone surrogate (output cut inside an emoji) into U+FFFD; such a string
      // goes the JSON way, which escapes it and gives it back exactly.
      if (!isWellFormed(value)) return undefined;
      const bytes = Buffer.from(value);
      return bytes.byteLength > this.#threshold ? { kind: 't', bytes } : undefined;
    }
    if (value instanceof Uint8Array && value.byteLength > this.#threshold) return { kind: 'b', bytes: value };
    return undefined;
  }

  async #put(
    kind: BlobRef['t'],
    bytes: Uint8Array,
    value: unknown,
    expiresAt: number | undefined,
  ): Promise<BlobRef> {
    const hash = createHash('sha256').update(kind).update(bytes).digest('base64url');
    const key = this.#prefix + hash;
    let encoded: Uint8Array | undefined;
    for (let attempt = 0; attempt < MAX_SWAPS; attempt++) {
      const existing = await this.#store.get(key);
      // Already there for long enough: the common case for a repeated output, and no write.
      if (
        existing &&
        (existing.expiresAt === undefined || (expiresAt !== undefined && existing.expiresAt >= expiresAt))
      ) {
        return { h: hash, t: kind };
      }
      encoded ??= encodeEntry(kind === 'v' ? value : bytes, { createdAt: 0 });
      const next: StoredEntry = { value: existing?.value ?? encoded, expiresAt };
      // A swap rather than a set, so that a concurrent writer's longer expiry is never shortened.
      if (await this.#store.compareAndSwap(key, existing?.value ?? null, next)) return { h: hash, t: kind };
    }
    throw contended('blob');
  }

  async #get(ref: BlobRef): Promise<unknown> {
    const entry = await this.#store.get(this.#prefix + ref.h);
    if (!entry) {
      throw cacheError(
        'E_CORRUPT_ENTRY',
        'ledger',
        `the recorded output ${ref.h} is gone from the store (evicted?); call again with force: true to run the tool again`,
      );
    }
    const decoded = decodeEntry(entry.value).value;
    if (ref.t === 't') return Buffer.from(decoded as Uint8Array).toString('utf8');
    if (ref.t === 'b') return decoded;
    return decoded;
  }
}

/** A fresh copy of a value, the same way a replay would see it (through the codec's value form). */
export function copyValue<T>(value: T): T {
  try {
    const { text, tagged } = serializeValue(value);
    return deserializeValue(text, tagged) as T;
  } catch {
    return value;
  }
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** How often a read → decide → swap loop retries before reporting contention. */
export const MAX_SWAPS = 1000;

export function contended(what: string) {
  return cacheError(
    'E_BACKEND',
    'ledger',
    `gave up updating a ${what} after ${MAX_SWAPS} concurrent writers won in a row; retry the call`,
  );
}

/** Waits with exponential backoff from 5 ms up to `max`. */
export async function backoff(attempt: number, max: number): Promise<void> {
  await sleep(Math.min(max, 5 * 2 ** Math.min(attempt, 10)));
}

export function encodeRecord(record: unknown, now: number): Uint8Array {
  return encodeEntry(record, { createdAt: now });
}

export function decodeRecord<T>(bytes: Uint8Array): T {
  return decodeEntry<T>(bytes).value;
}
