import type { Cache, CacheBackend, CounterSet } from '@x/cache-core';
import { COUNTER_NAMES, emptyCounters } from '@x/cache-core';
import type { CommandSpec, Context } from '../command.ts';
import type { Column } from '../format.ts';
import {
  entries as countEntries,
  formatBytes,
  formatInt,
  formatRate,
  formatUsd,
  renderTable,
} from '../format.ts';
import type { KeyFilter } from '../keys.ts';
import { scopeId, scopesWithEntries } from '../keys.ts';
import type { LedgerNamespaceStats } from '../ledger.ts';
import { LEDGER_PREFIX, readLedger } from '../ledger.ts';
import { filterOf, NAMESPACE_OPTION, TIER_OPTION } from '../options.ts';

/** The counters the cache keeps per tier and namespace, as @x/cache-core defines them. */
const COUNTERS = COUNTER_NAMES;
type Counters = CounterSet;

export interface StatsRow extends Counters {
  /** Live entries; `null` with --no-sizes. */
  entries: number | null;
  /** Stored bytes (on SQLite including expired entries not pruned yet); `null` with --no-sizes. */
  bytes: number | null;
  hitRate: number;
  tokensSaved: number;
}

export interface LevelRow {
  hits: number;
  errors: number;
  skipped: number;
  evictions: number;
}

export interface StatsReport {
  store: { url: string; backend: string };
  taskId: string | null;
  overall: StatsRow;
  tiers: Record<string, StatsRow>;
  namespaces: Record<string, StatsRow>;
  scopes: Array<StatsRow & { tier: string; namespace: string }>;
  levels: Record<string, LevelRow>;
  /**
   * The idempotency store and tool ledger, per ledger namespace: idempotency records by state and
   * tool calls (executions vs replays). `source` says where they come from: the ledger's own
   * `stats()` ('ledger'), its per-tool counters only ('counters', a core without the ledger API).
   */
  ledger: { source: 'ledger' | 'counters'; namespaces: Record<string, LedgerNamespaceStats> };
  /** Counter scopes in the store that are neither the cache's nor the ledger's, as stored. */
  counters: Record<string, Record<string, number>>;
  /** Entries in the store that are not cache entries (e.g. ledger records). */
  otherEntries: number | null;
  /** SQLite keeps expired rows until `prune`. */
  expiredAwaitingPrune: number | null;
  notes: string[];
}

function add(into: Counters, from: Readonly<Partial<Record<string, number>>> | Counters): void {
  for (const name of COUNTERS) {
    const value = (from as Readonly<Partial<Record<string, number>>>)[name];
    if (typeof value === 'number' && Number.isFinite(value)) into[name] += value;
  }
}

function row(counters: Counters, entries: number | null, bytes: number | null): StatsRow {
  const lookups = counters.hits + counters.misses;
  return {
    entries,
    bytes,
    ...counters,
    hitRate: lookups === 0 ? 0 : counters.hits / lookups,
    tokensSaved: counters.inputTokensSaved + counters.outputTokensSaved,
  };
}

export async function gatherStats(
  store: CacheBackend,
  display: string,
  options: { filter: KeyFilter; sizes: boolean; taskId: string | undefined; cache: () => Cache },
): Promise<StatsReport> {
  const { filter, sizes, taskId } = options;
  const raw = store.readCounters ? await store.readCounters() : {};
  const scopes = new Map<string, { tier: string; namespace: string; counters: Counters; entries: number }>();
  const levels: Record<string, LevelRow> = {};
  const extra: Record<string, Record<string, number>> = {};
  const scopeOf = (tier: string, namespace: string) => {
    const id = scopeId(tier, namespace);
    let scope = scopes.get(id);
    if (!scope) {
      scope = { tier, namespace, counters: emptyCounters(), entries: 0 };
      scopes.set(id, scope);
    }
    return scope;
  };
  const wanted = (tier: string, namespace: string) =>
    (filter.tier === undefined || filter.tier === tier) &&
    (filter.namespace === undefined || filter.namespace === namespace);

  for (const [scope, values] of Object.entries(raw)) {
    // Cache counters are `t:<tier>:<namespace>` and level counters `l:<level>` (@x/cache-core).
    const colon = scope.indexOf(':', 2);
    if (scope.startsWith('t:') && colon > 2) {
      const tier = scope.slice(2, colon);
      const namespace = scope.slice(colon + 1);
      if (wanted(tier, namespace)) add(scopeOf(tier, namespace).counters, values);
    } else if (scope.startsWith('l:')) {
      levels[scope.slice(2)] = {
        hits: values.hits ?? 0,
        errors: values.errors ?? 0,
        skipped: values.skipped ?? 0,
        evictions: values.evictions ?? 0,
      };
    } else if (!scope.startsWith(LEDGER_PREFIX)) {
      extra[scope] = values;
    }
  }

  let otherEntries: number | null = null;
  let expiredAwaitingPrune: number | null = null;
  const bytesOf = new Map<string, number>();
  if (sizes) {
    const found = await scopesWithEntries(store, filter);
    otherEntries = found.other;
    for (const scope of found.scopes.values()) scopeOf(scope.tier, scope.namespace).entries = scope.entries;
    for (const [id, scope] of scopes) {
      const size = store.statsFor ? await store.statsFor(`${scope.tier}/${scope.namespace}:`) : undefined;
      bytesOf.set(id, size?.bytes ?? 0);
    }
    // SQLite counts rows, expired or not; the difference with the live keys is what prune would drop.
    if (store.name === 'sqlite' && filter.tier === undefined && filter.namespace === undefined) {
      const stored = await store.stats();
      let live = found.other;
      for (const scope of found.scopes.values()) live += scope.entries;
      expiredAwaitingPrune = Math.max(0, stored.entries - live);
    }
  }

  const totals = emptyCounters();
  const tierCounters = new Map<string, { counters: Counters; entries: number; bytes: number }>();
  const namespaceCounters = new Map<string, { counters: Counters; entries: number; bytes: number }>();
  const scopeRows: StatsReport['scopes'] = [];
  let totalEntries = 0;
  let totalBytes = 0;
  const sorted = [...scopes.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [id, scope] of sorted) {
    const bytes = bytesOf.get(id) ?? 0;
    add(totals, scope.counters);
    totalEntries += scope.entries;
    totalBytes += bytes;
    for (const [map, name] of [
      [tierCounters, scope.tier],
      [namespaceCounters, scope.namespace],
    ] as const) {
      let into = map.get(name);
      if (!into) {
        into = { counters: emptyCounters(), entries: 0, bytes: 0 };
        map.set(name, into);
      }
      add(into.counters, scope.counters);
      into.entries += scope.entries;
      into.bytes += bytes;
    }
    scopeRows.push({
      tier: scope.tier,
      namespace: scope.namespace,
      ...row(scope.counters, sizes ? scope.entries : null, sizes ? bytes : null),
    });
  }
  // Every store failure is counted per level, those on a tier's keys also in its scope (the
  // rows above): the overall count is the levels', so none is counted twice.
  const levelErrors = Object.values(levels).reduce((sum, level) => sum + level.errors, 0);
  if (Object.keys(levels).length > 0) totals.errors = levelErrors;

  const collect = (map: Map<string, { counters: Counters; entries: number; bytes: number }>) =>
    Object.fromEntries(
      [...map.entries()]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([name, set]) => [
          name,
          row(set.counters, sizes ? set.entries : null, sizes ? set.bytes : null),
        ]),
    );
  const ledger = await readLedger({ store, counters: raw, cache: options.cache, taskId });
  const notes: string[] = [];
  if (taskId !== undefined) {
    notes.push(
      'the cache counters cover the whole store: the cache keeps them per tier and namespace, not per task',
    );
    if (!ledger.fromApi) {
      notes.push(
        'per-task ledger statistics need the tool ledger of @x/cache-core, which this installation lacks',
      );
    }
  }
  return {
    store: { url: display, backend: store.name },
    taskId: taskId ?? null,
    overall: row(totals, sizes ? totalEntries : null, sizes ? totalBytes : null),
    tiers: collect(tierCounters),
    namespaces: collect(namespaceCounters),
    scopes: scopeRows,
    levels,
    ledger: { source: ledger.fromApi ? 'ledger' : 'counters', namespaces: ledger.namespaces },
    counters: extra,
    otherEntries,
    expiredAwaitingPrune,
    notes,
  };
}

const SIZE_COLUMNS: Column[] = [
  { header: 'ENTRIES', right: true },
  { header: 'BYTES', right: true },
];
const COUNTER_COLUMNS: Column[] = [
  { header: 'HITS', right: true },
  { header: 'MISSES', right: true },
  { header: 'HIT RATE', right: true },
  { header: 'STALE', right: true },
  { header: 'ERRORS', right: true },
  { header: 'EVICTIONS', right: true },
  { header: 'TOKENS SAVED', right: true },
  { header: 'COST SAVED', right: true },
];

function cells(stats: StatsRow, sizes: boolean): string[] {
  return [
    ...(sizes ? [formatInt(stats.entries ?? 0), formatBytes(stats.bytes ?? 0)] : []),
    formatInt(stats.hits),
    formatInt(stats.misses),
    formatRate(stats.hits, stats.misses),
    formatInt(stats.staleHits),
    formatInt(stats.errors),
    formatInt(stats.evictions),
    formatInt(stats.tokensSaved),
    formatUsd(stats.costSavedUsd),
  ];
}

function breakdown(
  title: string,
  rows: Record<string, StatsRow>,
  total: StatsRow,
  sizes: boolean,
  totalLabel: string,
): string {
  const columns = [{ header: title }, ...(sizes ? SIZE_COLUMNS : []), ...COUNTER_COLUMNS];
  const body = Object.entries(rows).map(([name, stats]) => [name, ...cells(stats, sizes)]);
  body.push([totalLabel, ...cells(total, sizes)]);
  return renderTable(columns, body);
}

function ledgerTables(report: StatsReport): string[] {
  const namespaces = Object.entries(report.ledger.namespaces);
  if (namespaces.length === 0) return [];
  const suffix = report.taskId === null ? '' : ` for task ${report.taskId}`;
  const out: string[] = [];
  const withRecords = namespaces.filter(([, stats]) => stats.records !== null);
  if (withRecords.length > 0) {
    out.push(
      [
        `Idempotency keys${suffix}`,
        renderTable(
          [
            { header: 'NAMESPACE' },
            { header: 'SUCCEEDED', right: true },
            { header: 'PENDING', right: true },
            { header: 'FAILED', right: true },
            { header: 'ABANDONED', right: true },
            { header: 'TOTAL', right: true },
          ],
          withRecords.map(([namespace, { records }]) => [
            namespace,
            formatInt(records!.succeeded),
            formatInt(records!.pending),
            formatInt(records!.failed),
            formatInt(records!.abandoned),
            formatInt(records!.total),
          ]),
        ),
      ].join('\n'),
    );
  }
  const rows: string[][] = [];
  for (const [namespace, stats] of namespaces) {
    const tools = Object.entries(stats.tools).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [tool, counts] of tools) {
      rows.push([
        namespace,
        tool,
        formatInt(counts.calls),
        formatInt(counts.executions),
        formatInt(counts.replays),
        formatInt(counts.failures),
        formatRate(counts.replays, counts.calls - counts.replays),
      ]);
    }
    if (tools.length > 1) {
      rows.push([
        namespace,
        'total',
        formatInt(stats.totals.calls),
        formatInt(stats.totals.executions),
        formatInt(stats.totals.replays),
        formatInt(stats.totals.failures),
        formatRate(stats.totals.replays, stats.totals.calls - stats.totals.replays),
      ]);
    }
  }
  if (rows.length > 0) {
    out.push(
      [
        `Tool ledger${suffix}: replays are calls answered without running the tool again`,
        renderTable(
          [
            { header: 'NAMESPACE' },
            { header: 'TOOL' },
            { header: 'CALLS', right: true },
            { header: 'EXECUTIONS', right: true },
            { header: 'REPLAYS', right: true },
            { header: 'FAILURES', right: true },
            { header: 'REPLAY RATE', right: true },
          ],
          rows,
        ),
      ].join('\n'),
    );
  }
  return out;
}

/** Counters of other writers, as stored: one table per kind (the scope up to its first ':'). */
function counterTables(scopes: Record<string, Record<string, number>>): string[] {
  const kinds = new Map<string, Array<[string, Record<string, number>]>>();
  for (const entry of Object.entries(scopes).sort(([a], [b]) => (a < b ? -1 : 1))) {
    const kind = entry[0].split(':')[0]!;
    const list = kinds.get(kind) ?? [];
    list.push(entry);
    kinds.set(kind, list);
  }
  const out: string[] = [];
  for (const list of kinds.values()) {
    const names = [...new Set(list.flatMap(([, values]) => Object.keys(values)))];
    const columns: Column[] = [
      { header: 'SCOPE' },
      ...names.map((name) => ({ header: name.toUpperCase(), right: true })),
    ];
    const rows = list.map(([scope, values]) => [
      scope,
      ...names.map((name) => formatCount(values[name] ?? 0)),
    ]);
    out.push(renderTable(columns, rows));
  }
  return out;
}

function formatCount(value: number): string {
  return Number.isInteger(value) ? formatInt(value) : value.toFixed(4);
}

export function renderStats(report: StatsReport, sizes: boolean): string {
  const { overall } = report;
  const parts: string[] = [];
  parts.push(
    `Store: ${report.store.url} (${report.store.backend})` +
      (report.taskId === null ? '' : ` · task ${report.taskId}`),
  );
  const size = sizes ? `${countEntries(overall.entries ?? 0)}, ${formatBytes(overall.bytes ?? 0)} · ` : '';
  parts.push(
    [
      `Overall: ${size}${formatInt(overall.hits)} hits / ${formatInt(overall.misses)} misses ` +
        `(${formatRate(overall.hits, overall.misses)} hit rate) · ${formatInt(overall.staleHits)} stale hits · ` +
        `${formatInt(overall.errors)} errors · ${formatInt(overall.evictions)} evictions`,
      `Saved:   ${formatInt(overall.tokensSaved)} tokens (${formatInt(overall.inputTokensSaved)} in / ` +
        `${formatInt(overall.outputTokensSaved)} out), ${formatUsd(overall.costSavedUsd)}`,
    ].join('\n'),
  );
  if (Object.keys(report.tiers).length > 0) {
    parts.push(breakdown('TIER', report.tiers, overall, sizes, 'total'));
    parts.push(breakdown('NAMESPACE', report.namespaces, overall, sizes, 'total'));
  } else {
    parts.push('No cache entries or counters in this store yet.');
  }
  const levels = Object.entries(report.levels);
  if (levels.length > 0) {
    parts.push(
      renderTable(
        [
          { header: 'LEVEL' },
          { header: 'HITS', right: true },
          { header: 'ERRORS', right: true },
          { header: 'SKIPPED', right: true },
          { header: 'EVICTIONS', right: true },
        ],
        levels.map(([name, level]) => [
          name,
          formatInt(level.hits),
          formatInt(level.errors),
          formatInt(level.skipped),
          formatInt(level.evictions),
        ]),
      ),
    );
  }
  const ledger = ledgerTables(report);
  parts.push(...ledger);
  if (ledger.length === 0 && report.taskId !== null) {
    parts.push(`No idempotency keys or tool calls recorded for task ${report.taskId}.`);
  }
  const others = counterTables(report.counters);
  if (others.length > 0) parts.push(['Other counters in the store', ...others].join('\n'));
  const notes = [...report.notes];
  if (report.expiredAwaitingPrune) {
    notes.push(
      `expired entries waiting to be pruned: ${formatInt(report.expiredAwaitingPrune)} (llm-cache prune)`,
    );
  }
  if (report.otherEntries)
    notes.push(
      `records in the store that are not cache entries (ledger, …): ${formatInt(report.otherEntries)}`,
    );
  if (notes.length > 0) parts.push(notes.map((note) => `Note: ${note}.`).join('\n'));
  return parts.join('\n\n');
}

export const statsCommand: CommandSpec = {
  name: 'stats',
  summary: 'hits, misses, hit rate, tokens and cost saved — overall, per tier and per namespace',
  usage: 'llm-cache stats [--tier <tier>] [--namespace <ns>] [--task-id <id>] [--no-sizes] [--format json]',
  description: [
    'Reports what the cache did for every application sharing the store: entries and bytes, hits,',
    'misses and hit rate, stale hits, errors, evictions, and the tokens and money the hits saved',
    '(from the usage stored with each entry). Counters are the ones applications flush to the store,',
    'so they add up across processes and restarts.',
    '',
    'The idempotency store and tool ledger get their own sections: idempotency keys by state',
    '(succeeded / pending / failed / abandoned) and, per tool, calls, executions and replays (calls',
    'answered from the ledger without running the tool again). --task-id <id> narrows them to one',
    "task (agent run) from the ledger's history; the cache counters are kept per tier and namespace",
    'only, so they still cover the whole store.',
    '',
    'Entries and bytes come from walking the keys (one SCAN per tier and namespace on Redis);',
    '--no-sizes skips that on a very large store.',
  ].join('\n'),
  options: {
    tier: TIER_OPTION,
    namespace: NAMESPACE_OPTION,
    'task-id': {
      type: 'string',
      value: 'id',
      description: 'idempotency keys and tool calls of this task only',
    },
    sizes: { type: 'boolean', description: 'count entries and bytes (default; --no-sizes to skip)' },
  },
  examples: [
    'llm-cache stats --url sqlite://.cache/llm-cache.db',
    'llm-cache stats --url redis://localhost:6379 --tier responses',
    'llm-cache stats --task-id run-42 --format json',
  ],
  args: { min: 0, max: 0 },
  async run(context: Context) {
    const filter = filterOf(context);
    const sizes = context.options.sizes !== false;
    const connection = await context.connect();
    try {
      const report = await gatherStats(connection.store, connection.target.display, {
        filter,
        sizes,
        taskId: context.string('task-id'),
        cache: () => connection.cache(),
      });
      if (context.format === 'json') await context.json(report);
      else await context.print(renderStats(report, sizes));
    } finally {
      await connection.close();
    }
    return 0;
  },
};
