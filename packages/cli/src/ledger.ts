import type { Cache, CacheBackend } from '@x/cache-core';
import * as core from '@x/cache-core';

/**
 * The idempotency store and tool ledger of @x/cache-core, read through its own `stats()` when the
 * installed core has it. Looked up at run time rather than imported by name, so that this CLI
 * also works (with the counters alone) against a core without the ledger.
 */

/** Calls of one tool (or all of them) as the ledger counts them. */
export interface ToolCounts {
  calls: number;
  executions: number;
  /** Calls answered without running the tool: replayed, cached or joined. */
  replays: number;
  failures: number;
  [counter: string]: number;
}

/** Idempotency records by state. */
export interface RecordCounts {
  succeeded: number;
  pending: number;
  failed: number;
  /** Pending records whose holder stopped before recording an outcome. */
  abandoned: number;
  total: number;
}

export interface LedgerNamespaceStats {
  tools: Record<string, ToolCounts>;
  totals: ToolCounts;
  replayRate: number;
  /** `null` when the installed @x/cache-core cannot read the records (counters only). */
  records: RecordCounts | null;
}

interface ToolLedgerLike {
  stats(filter?: { taskId?: string }): Promise<{
    tools: Record<string, Record<string, number>>;
    records: Record<string, number>;
  }>;
}
export type CreateToolLedger = (options: {
  cache: Cache;
  store: CacheBackend;
  namespace: string;
}) => ToolLedgerLike;

const exported = core as unknown as Record<string, unknown>;

/** Where ledger keys and counter scopes start: `~ledger/<namespace>:`. */
export const LEDGER_PREFIX: string =
  typeof exported.LEDGER_KEY_PREFIX === 'string' ? exported.LEDGER_KEY_PREFIX : '~ledger/';

export function ledgerApi(): CreateToolLedger | undefined {
  const create = exported.createToolLedger;
  return typeof create === 'function' ? (create as CreateToolLedger) : undefined;
}

function toolCounts(values: Readonly<Record<string, number>>): ToolCounts {
  const counts: ToolCounts = { calls: 0, executions: 0, replays: 0, failures: 0 };
  for (const [name, value] of Object.entries(values)) if (typeof value === 'number') counts[name] = value;
  return counts;
}

function summarise(tools: Record<string, ToolCounts>, records: RecordCounts | null): LedgerNamespaceStats {
  const totals: ToolCounts = { calls: 0, executions: 0, replays: 0, failures: 0 };
  for (const counts of Object.values(tools)) {
    for (const [name, value] of Object.entries(counts)) totals[name] = (totals[name] ?? 0) + value;
  }
  return { tools, totals, replayRate: totals.calls === 0 ? 0 : totals.replays / totals.calls, records };
}

/** `~ledger/<namespace>:<tool>` counter scopes, grouped by namespace. */
export function ledgerCounterScopes(
  counters: Readonly<Record<string, Record<string, number>>>,
): Map<string, Record<string, ToolCounts>> {
  const out = new Map<string, Record<string, ToolCounts>>();
  for (const [scope, values] of Object.entries(counters)) {
    if (!scope.startsWith(LEDGER_PREFIX)) continue;
    const rest = scope.slice(LEDGER_PREFIX.length);
    const colon = rest.indexOf(':');
    if (colon <= 0) continue;
    const namespace = rest.slice(0, colon);
    const tools = out.get(namespace) ?? {};
    tools[rest.slice(colon + 1)] = toolCounts(values);
    out.set(namespace, tools);
  }
  return out;
}

/** Namespaces that hold ledger records (keys under `~ledger/<namespace>:`). */
export async function ledgerNamespacesInStore(store: CacheBackend): Promise<Set<string>> {
  const namespaces = new Set<string>();
  for await (const key of store.keys({ prefix: LEDGER_PREFIX })) {
    const colon = key.indexOf(':', LEDGER_PREFIX.length);
    if (colon > LEDGER_PREFIX.length) namespaces.add(key.slice(LEDGER_PREFIX.length, colon));
  }
  return namespaces;
}

/**
 * `store` for the ledger's reads: `get` and `getMany` go through `peekMany` where the backend has
 * it, so that reading records for `stats` is not a use (SQLite would move their last-access time
 * and so change the file). Everything else is the store's own.
 */
export function peekingStore(store: CacheBackend): CacheBackend {
  const peekMany = store.peekMany;
  if (typeof peekMany !== 'function') return store;
  const peek = (keys: readonly string[]) => peekMany.call(store, keys);
  return new Proxy(store, {
    get(target, property) {
      if (property === 'getMany') return peek;
      if (property === 'get') return async (key: string) => (await peek([key]))[0];
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/**
 * Ledger statistics per namespace: through the ledger's own `stats()` (records by state; per task
 * from its history) when available, else from the per-tool counters alone.
 */
export async function readLedger(options: {
  store: CacheBackend;
  counters: Readonly<Record<string, Record<string, number>>>;
  cache: () => Cache;
  taskId: string | undefined;
  /** The ledger factory; `null` reads the counters only. @default createToolLedger of @x/cache-core, if any */
  create?: CreateToolLedger | null;
}): Promise<{ namespaces: Record<string, LedgerNamespaceStats>; fromApi: boolean }> {
  const fromCounters = ledgerCounterScopes(options.counters);
  const create = options.create === undefined ? ledgerApi() : (options.create ?? undefined);
  const namespaces: Record<string, LedgerNamespaceStats> = {};
  if (!create) {
    // Without the ledger's API there is no per-task view: the counters are totals.
    if (options.taskId !== undefined) return { namespaces, fromApi: false };
    for (const [namespace, tools] of fromCounters) namespaces[namespace] = summarise(tools, null);
    return { namespaces, fromApi: false };
  }
  const names = new Set([...fromCounters.keys(), ...(await ledgerNamespacesInStore(options.store))]);
  // A read-only command: reading records must not count as using them.
  const store = peekingStore(options.store);
  for (const namespace of [...names].sort()) {
    const ledger = create({ cache: options.cache(), store, namespace });
    const stats = await ledger.stats(options.taskId === undefined ? {} : { taskId: options.taskId });
    const tools: Record<string, ToolCounts> = {};
    for (const [tool, values] of Object.entries(stats.tools)) tools[tool] = toolCounts(values);
    const records: RecordCounts = {
      succeeded: stats.records.succeeded ?? 0,
      pending: stats.records.pending ?? 0,
      failed: stats.records.failed ?? 0,
      abandoned: stats.records.abandoned ?? 0,
      total: stats.records.total ?? 0,
    };
    if (options.taskId !== undefined && records.total === 0 && Object.keys(tools).length === 0) continue;
    namespaces[namespace] = summarise(tools, records);
  }
  return { namespaces, fromApi: true };
}
