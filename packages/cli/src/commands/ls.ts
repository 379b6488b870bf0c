import type { CommandSpec, Context } from '../command.ts';
import type { EntryInfo } from '../entries.ts';
import { describeEntry } from '../entries.ts';
import { formatBytes, formatDuration, formatInt, renderTable } from '../format.ts';
import { usageError } from '../io.ts';
import { parseCacheKey, scanKeys } from '../keys.ts';
import { filterOf, NAMESPACE_OPTION, TIER_OPTION } from '../options.ts';
import { readEntries } from '../store.ts';

/** Shown in the HASH column; `inspect` and `invalidate --key` accept it. */
const SHORT_HASH = 12;

export function formatTtl(info: EntryInfo): string {
  if (info.ttlMs === null || info.ttlMs === undefined) return 'never';
  if (info.stale) return `stale ${formatDuration(-info.ttlMs)}`;
  return formatDuration(info.ttlMs);
}

export function parseLimit(value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const limit = Number(value);
  if (!Number.isInteger(limit) || limit < 0) {
    throw usageError(`--limit must be a whole number (0 for no limit), got "${value}"`);
  }
  return limit === 0 ? Number.POSITIVE_INFINITY : limit;
}

export const lsCommand: CommandSpec = {
  name: 'ls',
  summary: 'list keys with tier, namespace, name, size, age and TTL left',
  usage: 'llm-cache ls [prefix] [--tier <tier>] [--namespace <ns>] [--limit <n>] [--all] [--format json]',
  description: [
    'Lists live entries, sorted by key. A key is <tier>/<namespace>:<name>:<hash of the request>;',
    'the optional prefix matches the start of the key (e.g. responses/default:intro_page:).',
    'HASH shows the start of the request hash: inspect and invalidate --key accept it.',
    'TTL is the time until the entry goes stale; "stale 5m" means it expired 5 minutes ago and is',
    'kept for its grace period. --all also lists the records in the store that are not cache',
    'entries (the idempotency ledger\'s), with "-" as tier.',
  ].join('\n'),
  options: {
    tier: TIER_OPTION,
    namespace: NAMESPACE_OPTION,
    limit: { type: 'string', value: 'n', description: 'show at most n entries (default: 100; 0 = all)' },
    all: { type: 'boolean', description: 'also list records that are not cache entries (ledger records)' },
  },
  examples: [
    'llm-cache ls',
    'llm-cache ls responses/default:intro_page:',
    'llm-cache ls --tier tools --limit 0 --format json',
  ],
  args: { min: 0, max: 1 },
  async run(context: Context) {
    const filter = filterOf(context, context.positionals[0]);
    const limit = parseLimit(context.string('limit'), 100);
    const connection = await context.connect();
    try {
      const store = connection.store;
      const keys: string[] = [];
      const all = context.flag('all');
      for await (const key of scanKeys(store, filter)) if (all || parseCacheKey(key)) keys.push(key);
      // Redis scans in no order; a sorted listing is the same on every backend and run.
      keys.sort();
      const shown = keys.slice(0, Math.min(keys.length, limit));
      const now = context.now();
      const entries: EntryInfo[] = [];
      for (let i = 0; i < shown.length; i += 500) {
        const batch = shown.slice(i, i + 500);
        const stored = await readEntries(store, batch);
        batch.forEach((key, index) => {
          const entry = stored[index];
          // Gone (expired or deleted) between the scan and the read.
          if (entry) entries.push(describeEntry(key, entry, now));
        });
      }
      if (context.format === 'json') {
        await context.json({
          store: connection.target.display,
          total: keys.length,
          truncated: shown.length < keys.length,
          entries,
        });
        return 0;
      }
      if (entries.length === 0) {
        await context.say('No entries.');
        return 0;
      }
      const rows = entries.map((info) => [
        info.tier ?? '-',
        info.namespace ?? '-',
        info.name ?? info.key,
        info.hash?.slice(0, SHORT_HASH) ?? '',
        formatBytes(info.bytes),
        info.ageMs === undefined ? '?' : formatDuration(info.ageMs),
        formatTtl(info),
      ]);
      await context.print(
        renderTable(
          [
            { header: 'TIER' },
            { header: 'NAMESPACE' },
            { header: 'NAME' },
            { header: 'HASH' },
            { header: 'SIZE', right: true },
            { header: 'AGE', right: true },
            { header: 'TTL', right: true },
          ],
          rows,
        ),
      );
      if (shown.length < keys.length) {
        await context.say(
          `… ${formatInt(keys.length - shown.length)} more of ${formatInt(keys.length)} (--limit 0 shows all)`,
        );
      }
    } finally {
      await connection.close();
    }
    return 0;
  },
};
