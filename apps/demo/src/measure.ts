/**
 * Times each demo operation and reads, from the core's own counters, what the cache did during
 * it: lookups, hits, and the tokens and dollars the hits saved. Nothing here guesses: the numbers
 * are deltas of `view.stats()` around the operation, and the level that served each hit comes
 * from the cache's `hit` events.
 */
import type { Cache, CacheView, ScopeStats } from '@x/cache-core';
import type { ModelCallCounter } from './local/names.ts';
import type { ToolCounter } from './scenarios/tools.ts';

export type Pass = 'cold' | 'warm';

export interface PassFigures {
  /** Cache lookups: hits + stale hits + misses + coalesced callers. */
  calls: number;
  hits: number;
  ms: number;
  inputTokensSaved: number;
  outputTokensSaved: number;
  costSavedUsd: number;
  /** Calls that reached the local stand-in models (undefined with real providers). */
  modelCalls: number | undefined;
  /** Levels that served this operation's hits (`sqlite`, `redis`, `memory`). */
  servedBy: string[];
  /** Tool calls the framework made, and how many of them really ran (the rest the ledger served). */
  toolCalls: number;
  toolExecutions: number;
}

export interface OperationRecord {
  adapter: string;
  operation: string;
  cold?: PassFigures;
  warm?: PassFigures;
  /** A short piece of the answer, to show the warm answer is the real one. */
  sample?: string | undefined;
  /** The sample of the cold run equals the warm one (answers are deterministic, and hits are copies). */
  sameAnswer?: boolean | undefined;
}

const TIERS = ['responses', 'embeddings', 'tools'] as const;

type Totals = Pick<
  ScopeStats,
  'hits' | 'staleHits' | 'misses' | 'coalesced' | 'inputTokensSaved' | 'outputTokensSaved' | 'costSavedUsd'
>;

async function totalsOf(views: readonly CacheView[]): Promise<Totals> {
  const sum: Totals = {
    hits: 0,
    staleHits: 0,
    misses: 0,
    coalesced: 0,
    inputTokensSaved: 0,
    outputTokensSaved: 0,
    costSavedUsd: 0,
  };
  for (const view of views) {
    const stats = await view.stats();
    for (const name of Object.keys(sum) as (keyof Totals)[]) sum[name] += stats[name];
  }
  return sum;
}

export class Recorder {
  readonly records = new Map<string, OperationRecord>();
  readonly #cache: Cache;
  readonly #counters: readonly ModelCallCounter[] | undefined;
  readonly #tools: ToolCounter;
  #levels: string[] | undefined;

  /** `counters` are the local stand-ins' call counters (undefined for real providers); `tools` counts tool runs. */
  constructor(cache: Cache, counters: readonly ModelCallCounter[] | undefined, tools: ToolCounter) {
    this.#cache = cache;
    this.#counters = counters;
    this.#tools = tools;
    cache.on('hit', (event) => {
      if (this.#levels && !this.#levels.includes(event.level)) this.#levels.push(event.level);
    });
  }

  /** The views an adapter's namespace uses: every tier the demo writes to. */
  viewsOf(namespace: string): CacheView[] {
    const base = this.#cache.withNamespace(namespace);
    return TIERS.map((tier) => base.tier(tier));
  }

  /**
   * Runs one operation of one pass and records its figures. `run` returns a short sample of the
   * answer. Operations run one at a time, so the counters' deltas belong to this operation alone.
   */
  async measure(
    pass: Pass,
    adapter: string,
    namespace: string,
    operation: string,
    run: () => Promise<string | undefined>,
  ): Promise<void> {
    const views = this.viewsOf(namespace);
    const before = await totalsOf(views);
    const modelCallsBefore = this.#modelCalls();
    const toolsBefore = { ...this.#tools };
    const servedBy: string[] = [];
    this.#levels = servedBy;
    const started = performance.now();
    let sample: string | undefined;
    let ms: number;
    try {
      sample = await run();
    } finally {
      ms = performance.now() - started;
      this.#levels = undefined;
    }
    const after = await totalsOf(views);
    const modelCallsAfter = this.#modelCalls();
    const hits =
      after.hits + after.staleHits + after.coalesced - (before.hits + before.staleHits + before.coalesced);
    const figures: PassFigures = {
      calls: hits + after.misses - before.misses,
      hits,
      ms,
      inputTokensSaved: after.inputTokensSaved - before.inputTokensSaved,
      outputTokensSaved: after.outputTokensSaved - before.outputTokensSaved,
      costSavedUsd: after.costSavedUsd - before.costSavedUsd,
      modelCalls:
        modelCallsBefore === undefined || modelCallsAfter === undefined
          ? undefined
          : modelCallsAfter - modelCallsBefore,
      servedBy,
      toolCalls: this.#tools.calls - toolsBefore.calls,
      toolExecutions: this.#tools.executions - toolsBefore.executions,
    };
    const id = `${adapter}\u0000${operation}`;
    const record = this.records.get(id) ?? { adapter, operation };
    record[pass] = figures;
    const short = sample === undefined ? undefined : shorten(sample);
    if (pass === 'cold') record.sample = short;
    else record.sameAnswer = record.sample === short;
    this.records.set(id, record);
  }

  #modelCalls(): number | undefined {
    return this.#counters?.reduce((sum, counter) => sum + counter.calls, 0);
  }
}

export function shorten(text: string, max = 72): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}
