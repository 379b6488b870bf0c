import type { CacheBackend, StoredEntry, SyncReadableBackend } from '../backends/backend.ts';
import { isSyncBackend } from '../backends/backend.ts';
import { cacheError } from '../errors.ts';
import type { Duration } from '../ttl.ts';
import { finiteDuration, parseDuration, positiveDuration } from '../ttl.ts';
import { timerMs } from '../util/timers.ts';

/** One level of a stack: a backend plus how the stack treats it. */
export interface LevelOptions {
  backend: CacheBackend;
  /** Name used in stats and events. @default backend.name */
  name?: string;
  /** Upper bound on how long this level keeps an entry, e.g. a short-lived L1. @default unlimited */
  maxTtl?: Duration;
  /**
   * Per-operation timeout; a slower operation counts as a miss (read) or a dropped write.
   * @default none for in-process backends (memory, sqlite), 500 ms for network backends
   */
  timeout?: Duration;
  /**
   * Timeout of the operations that walk a whole store or many keys — invalidation by tag or
   * prefix, `clear`, `clearAll`, `prune`, stats — which on a big shared Redis can take longer than
   * a lookup's `timeout` without anything being wrong. One that takes longer is counted as an
   * error but does not mark the level stalled; while the level is already stalled they get
   * `timeout` instead, so a frozen store still costs one short timeout.
   * @default none when `timeout` is none, else 20 × timeout and at least 10 s
   */
  bulkTimeout?: Duration;
  /**
   * Circuit breaker: after `failures` consecutive errors or timeouts the level's lookups are
   * skipped (reads miss, writes drop, nothing waits) for `openFor`, then one lookup probes it;
   * success closes the breaker. Deletes, invalidations, clears, lock releases and bus messages are
   * still sent meanwhile, without the caller waiting for them; statistics and listings are
   * skipped. `false` disables it.
   * @default { failures: 5, openFor: '5s' } for backends outside the process, false for memory
   */
  breaker?: { failures?: number; openFor?: Duration } | false;
}

export type LevelInput = CacheBackend | LevelOptions;

/** A stall that starts within this long of the last one's end lengthens the streak. */
const STALL_MEMORY_MS = 30_000;
const MAX_STALL_HOLD_MS = 30_000;

const IN_PROCESS = new Set(['memory', 'sqlite']);

export class Level {
  readonly backend: CacheBackend;
  readonly name: string;
  readonly maxTtlMs: number | undefined;
  readonly timeoutMs: number | undefined;
  readonly bulkTimeoutMs: number | undefined;
  /** Deadlines of the calls in flight, for `timeoutMs` and `bulkTimeoutMs` (see runWithDeadline). */
  deadlines: Deadlines | undefined;
  bulkDeadlines: Deadlines | undefined;
  readonly sync: SyncReadableBackend | undefined;
  readonly breakerFailures: number;
  readonly breakerOpenMs: number;
  /** Consecutive failures; the breaker opens when it reaches `breakerFailures`. */
  failures = 0;
  /** While now < openUntil the level is skipped; after it, one probe is let through. */
  openUntil = 0;
  probing = false;
  /**
   * A call timed out and the level has not answered (in time) since. Calls on a lookup's path
   * (get, getMany, lock, quota, set) then skip it instead of each waiting out a timeout on a frozen
   * store, while one background probe waits for its answer; bus publishes go out without a
   * deadline. See `stall` / `answered`.
   */
  stalled = false;
  /** The stalled level's background probe is waiting for an answer. */
  probeOutstanding = false;
  /** Stalls in a row, each soon after the previous one ended; lengthens the next one's hold. */
  stallStreak = 0;
  /** Until when (performance.now) the current stall holds whatever answers come. */
  stallHoldUntil = 0;
  /** When (performance.now) the last stall ended. */
  stallEndedAt = Number.NEGATIVE_INFINITY;

  /**
   * Marks the level stalled. A store that stalls again soon after its last stall ended (its quick
   * answers hid slow ones: a missing key answers fast, a big value does not) is held stalled for
   * a while, 1 s doubling to 30 s, so it costs one timeout per hold rather than one per call.
   */
  stall(now: number): void {
    this.stallStreak = now - this.stallEndedAt < STALL_MEMORY_MS ? this.stallStreak + 1 : 0;
    const hold = this.stallStreak === 0 ? 0 : Math.min(1000 * 2 ** (this.stallStreak - 1), MAX_STALL_HOLD_MS);
    this.stallHoldUntil = now + hold;
    this.stalled = true;
  }

  /** An answer from the level: ends the stall unless it is still held. */
  answered(now: number): void {
    if (!this.stalled || now < this.stallHoldUntil) return;
    this.stalled = false;
    this.stallEndedAt = now;
  }
  /** The engine's counter bucket for this level, cached here because every hit increments it. */
  counters: object | undefined;

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
    const noZero = 'omit it for the default or pass Infinity for none';
    this.timeoutMs =
      options.timeout !== undefined
        ? positiveDuration(options.timeout, 'timeout', noZero)
        : IN_PROCESS.has(options.backend.name)
          ? undefined
          : 500;
    this.bulkTimeoutMs =
      options.bulkTimeout !== undefined
        ? positiveDuration(options.bulkTimeout, 'bulkTimeout', noZero)
        : this.timeoutMs === undefined
          ? undefined
          : Math.max(20 * this.timeoutMs, 10_000);
    this.sync = isSyncBackend(options.backend) ? options.backend : undefined;
    const breaker = options.breaker ?? (options.backend.name === 'memory' ? false : {});
    this.breakerFailures = breaker === false ? 0 : (breaker.failures ?? 5);
    this.breakerOpenMs =
      breaker === false
        ? 0
        : finiteDuration(
            breaker.openFor ?? '5s',
            'breaker.openFor',
            "the breaker probes the store again after it, e.g. '5s' (breaker: false turns the breaker off)",
          );
  }

  /** Whether a call may go to this level now: 0 no (breaker open), 1 yes, 2 yes as the probe. */
  admit(clock: { now(): number }): 0 | 1 | 2 {
    if (this.breakerFailures === 0 || this.failures < this.breakerFailures) return 1;
    if (clock.now() < this.openUntil || this.probing) return 0;
    this.probing = true;
    return 2;
  }

  /** Whether the breaker is open (or half-open, its probe out): lookups are being skipped. */
  get tripped(): boolean {
    return this.breakerFailures > 0 && this.failures >= this.breakerFailures;
  }

  /** Records a success; while the breaker is open only the probe's success closes it. */
  succeeded(admitted: 1 | 2 = 1): void {
    if (admitted !== 2 && this.breakerFailures > 0 && this.failures >= this.breakerFailures) return;
    this.failures = 0;
    this.probing = false;
  }

  /** Records a failure; returns true when this failure opened (or re-opened) the breaker. */
  failed(now: number): boolean {
    this.failures++;
    const wasProbe = this.probing;
    this.probing = false;
    if (this.breakerFailures > 0 && (wasProbe || this.failures === this.breakerFailures)) {
      this.openUntil = now + this.breakerOpenMs;
      return true;
    }
    return false;
  }

  /** The entry as this level should keep it: expiry capped by `maxTtl`. */
  fit(entry: StoredEntry, now: number): StoredEntry {
    if (this.maxTtlMs === undefined) return entry;
    const cap = now + this.maxTtlMs;
    if (entry.expiresAt !== undefined && entry.expiresAt <= cap) return entry;
    return { value: entry.value, expiresAt: cap, tags: entry.tags };
  }
}

export class LevelUnavailableError extends Error {
  constructor(level: string) {
    super(`[@x/cache-core] [${level}] skipped: the circuit breaker is open after repeated failures`);
    this.name = 'LevelUnavailableError';
  }
}

export class LevelTimeoutError extends Error {
  constructor(level: string, operation: string, ms: number) {
    super(`[@x/cache-core] [${level}] ${operation} timed out after ${ms} ms`);
    this.name = 'LevelTimeoutError';
  }
}

interface Deadline {
  /** The sweep count when the call started. */
  readonly tick: number;
  /** Undefined once the call has settled (finished or failed by its deadline). */
  fail: (() => void) | undefined;
  prev: Deadline | undefined;
  next: Deadline | undefined;
}

/**
 * Deadlines of a level's calls in flight, checked by one repeating timer instead of a timer per
 * call: arming and clearing a timer on every network read cost more than the read's own
 * bookkeeping. Calls are stamped with the sweep count instead of a clock read and kept in start
 * order (one timeout per level) in a list of the calls still in flight: starting a call appends
 * it, finishing one unlinks it, so a finished call is garbage at once (a queue that kept finished
 * calls until the next sweep held thousands of them through young-generation collections, which
 * cost more than the reads' own bookkeeping), and a sweep only looks at the oldest calls. A call
 * fails once `timeout` has passed: at most a quarter of it late, or one sweep late when a busy
 * event loop delays the sweeps.
 */
class Deadlines {
  #oldest: Deadline | undefined;
  #newest: Deadline | undefined;
  #tick = 0;
  readonly #every: number;
  readonly #timeoutMs: number;
  /** Sweeps after its start at which a call is past its deadline. */
  readonly #ticks: number;
  /** When each recent sweep ran (performance.now), by tick modulo the ring's length. */
  readonly #sweptAt: Float64Array;
  #timer: NodeJS.Timeout | undefined;
  #idle = 0;

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs;
    this.#every = Math.max(1, Math.floor(timeoutMs / 4));
    // A call started just before a sweep has waited (ticks - 1) * every >= timeoutMs when it fails.
    this.#ticks = Math.ceil(timeoutMs / this.#every) + 1;
    this.#sweptAt = new Float64Array(this.#ticks + 1);
  }

  track(fail: () => void): Deadline {
    const newest = this.#newest;
    const entry: Deadline = { tick: this.#tick, fail, prev: newest, next: undefined };
    if (newest) newest.next = entry;
    else this.#oldest = entry;
    this.#newest = entry;
    if (!this.#timer) {
      this.#timer = setInterval(() => this.#sweep(), timerMs(this.#every));
      this.#timer.unref();
    }
    return entry;
  }

  /** Marks a call finished; false when its deadline already failed it. */
  done(entry: Deadline): boolean {
    if (entry.fail === undefined) return false;
    entry.fail = undefined;
    this.#unlink(entry);
    return true;
  }

  #unlink(entry: Deadline): void {
    const { prev, next } = entry;
    if (prev) prev.next = next;
    else this.#oldest = next;
    if (next) next.prev = prev;
    else this.#newest = prev;
    entry.prev = undefined;
    entry.next = undefined;
  }

  /**
   * Whether a call stamped `tick` is past its deadline at sweep `now`. It started before sweep
   * tick + 1 ran, so once that sweep is timeout old the call is too: this catches calls whose
   * sweeps a busy event loop spaced out, without ever failing a call early.
   */
  #expired(tick: number, current: number, now: number): boolean {
    if (current - tick >= this.#ticks) return true;
    return current > tick && now - this.#sweptAt[(tick + 1) % this.#sweptAt.length]! >= this.#timeoutMs;
  }

  #sweep(): void {
    const tick = ++this.#tick;
    const now = performance.now();
    this.#sweptAt[tick % this.#sweptAt.length] = now;
    // Oldest first; a call that `fail` starts is stamped with this tick and ends the loop.
    for (let entry = this.#oldest; entry && this.#expired(entry.tick, tick, now); entry = this.#oldest) {
      const fail = entry.fail!;
      entry.fail = undefined;
      this.#unlink(entry);
      fail();
    }
    // Stop ticking after a few empty sweeps; the next call starts it again.
    if (this.#oldest) this.#idle = 0;
    else if (++this.#idle > 8 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#idle = 0;
    }
  }
}

function trackerFor(level: Level, long: boolean, ms: number): Deadlines {
  const tracker = new Deadlines(ms);
  if (long) level.bulkDeadlines = tracker;
  else level.deadlines = tracker;
  return tracker;
}

/**
 * Runs a backend call with the level's timeout (`bulkTimeoutMs` for a `bulk` call, unless the
 * level is stalled) and reports the outcome once, through `ok` or `fail` (a `LevelTimeoutError`
 * when the deadline passes first). Callback-style so that a caller can settle its own promise
 * without wrapping another one: this runs on every network read.
 */
export function runWithDeadline<T>(
  level: Level,
  operation: string,
  run: () => Promise<T>,
  ok: (value: T) => void,
  fail: (error: unknown) => void,
  bulk = false,
): void {
  const long = bulk && !level.stalled;
  const ms = long ? level.bulkTimeoutMs : level.timeoutMs;
  let pending: Promise<T>;
  if (ms === undefined || ms === Number.POSITIVE_INFINITY) {
    try {
      // Promise.resolve: a backend that returns a plain value instead of a promise still works.
      pending = Promise.resolve(run());
    } catch (error) {
      fail(error);
      return;
    }
    pending.then(ok, fail);
    return;
  }
  const clock = (long ? level.bulkDeadlines : level.deadlines) ?? trackerFor(level, long, ms);
  const entry = clock.track(() => fail(new LevelTimeoutError(level.name, operation, ms)));
  try {
    pending = Promise.resolve(run());
  } catch (error) {
    if (clock.done(entry)) fail(error);
    return;
  }
  pending.then(
    (value) => {
      if (clock.done(entry)) ok(value);
    },
    (error: unknown) => {
      if (clock.done(entry)) fail(error);
    },
  );
}

/** Runs a backend call with the level's timeout; the caller decides what a failure means. */
export function withTimeout<T>(level: Level, operation: string, run: () => Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => runWithDeadline(level, operation, run, resolve, reject));
}
