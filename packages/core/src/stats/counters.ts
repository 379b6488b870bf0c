import type { CacheBackend } from '../backends/backend.ts';
import { LevelTimeoutError } from '../levels/stack.ts';
import { timerMs } from '../util/timers.ts';

/** The counters kept per scope (a tier + namespace pair, or a level). */
export interface CounterSet {
  hits: number;
  misses: number;
  staleHits: number;
  /** Callers that joined another caller's in-flight computation instead of computing. */
  coalesced: number;
  sets: number;
  errors: number;
  evictions: number;
  corrupt: number;
  droppedWrites: number;
  /** Calls not sent to a level because its circuit breaker was open. */
  skipped: number;
  inputTokensSaved: number;
  outputTokensSaved: number;
  costSavedUsd: number;
}

export const COUNTER_NAMES: readonly (keyof CounterSet)[] = [
  'hits',
  'misses',
  'staleHits',
  'coalesced',
  'sets',
  'errors',
  'evictions',
  'corrupt',
  'droppedWrites',
  'skipped',
  'inputTokensSaved',
  'outputTokensSaved',
  'costSavedUsd',
];

export function emptyCounters(): CounterSet {
  return {
    hits: 0,
    misses: 0,
    staleHits: 0,
    coalesced: 0,
    sets: 0,
    errors: 0,
    evictions: 0,
    corrupt: 0,
    droppedWrites: 0,
    skipped: 0,
    inputTokensSaved: 0,
    outputTokensSaved: 0,
    costSavedUsd: 0,
  };
}

export function addCounters(into: CounterSet, from: Partial<Record<string, number>>): CounterSet {
  for (const name of COUNTER_NAMES) {
    const value = from[name];
    if (typeof value === 'number') into[name] += value;
  }
  return into;
}

/**
 * Collects counters in memory (one increment on the hot path) and flushes the deltas to the
 * persistent level's counter table every `flushIntervalMs`, on `flush()` and on close, so
 * statistics survive restarts and add up across processes sharing a store.
 */
export class StatsCollector {
  readonly #pending = new Map<string, CounterSet>();
  readonly #store: CacheBackend | undefined;
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;

  readonly #run: <T>(operation: string, run: () => Promise<T>) => Promise<T>;

  /** `run` wraps every store call (the engine passes the level's timeout). */
  constructor(
    store: CacheBackend | undefined,
    flushIntervalMs: number,
    run: <T>(operation: string, run: () => Promise<T>) => Promise<T> = (_, fn) => fn(),
  ) {
    this.#run = run;
    this.#store = store?.incrementCounters && store.readCounters ? store : undefined;
    if (this.#store && flushIntervalMs > 0) {
      this.#timer = setInterval(() => void this.flush(), timerMs(flushIntervalMs));
      this.#timer.unref();
    }
  }

  /** The live counter object for a scope; callers increment its fields directly. */
  bucket(scope: string): CounterSet {
    let set = this.#pending.get(scope);
    if (!set) {
      set = emptyCounters();
      this.#pending.set(scope, set);
    }
    return set;
  }

  async flush(): Promise<void> {
    if (!this.#store) return;
    // A flush already under way took the deltas it saw; chain so nothing is counted twice.
    const previous = this.#flushing;
    const run = (async () => {
      await previous;
      const store = this.#store!;
      for (const [scope, set] of this.#pending) {
        const deltas: Record<string, number> = {};
        let any = false;
        for (const name of COUNTER_NAMES) {
          const value = set[name];
          if (value === 0) continue;
          set[name] = 0;
          // A non-finite delta would be refused by the store again on every flush: drop it.
          if (!Number.isFinite(value)) continue;
          deltas[name] = value;
          any = true;
        }
        if (!any) continue;
        try {
          await this.#run('incrementCounters', () => store.incrementCounters!(scope, deltas));
        } catch (error) {
          // The store refused them: keep the deltas for the next flush rather than lose them. A
          // timeout is different: the increment was sent and most likely still lands (a slow or
          // paused server), so sending it again would count it twice.
          if (!(error instanceof LevelTimeoutError)) addCounters(set, deltas);
        }
      }
    })();
    this.#flushing = run;
    await run;
  }

  /** Persisted totals plus what has not been flushed yet, per scope. */
  async read(): Promise<Map<string, CounterSet>> {
    const out = new Map<string, CounterSet>();
    if (this.#store) {
      try {
        const store = this.#store;
        const persisted = await this.#run('readCounters', () => store.readCounters!());
        for (const [scope, values] of Object.entries(persisted)) {
          out.set(scope, addCounters(emptyCounters(), values));
        }
      } catch {
        // fall through with what this process knows
      }
    }
    for (const [scope, set] of this.#pending) {
      const into = out.get(scope) ?? emptyCounters();
      out.set(scope, addCounters(into, set as unknown as Record<string, number>));
    }
    return out;
  }

  async reset(scopePrefix?: string): Promise<void> {
    for (const [scope, set] of this.#pending) {
      if (scopePrefix === undefined || scope.startsWith(scopePrefix)) Object.assign(set, emptyCounters());
    }
    const store = this.#store;
    if (store?.clearCounters) {
      await this.#run('clearCounters', () => store.clearCounters!(scopePrefix)).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.flush();
  }
}
