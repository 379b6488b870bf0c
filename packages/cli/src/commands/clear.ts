import type { CommandSpec, Context } from '../command.ts';
import { entries } from '../format.ts';
import { usageError } from '../io.ts';
import { scopesWithEntries } from '../keys.ts';
import { describeFilter, filterOf, NAMESPACE_OPTION, TIER_OPTION, YES_OPTION } from '../options.ts';
import { confirm } from '../prompt.ts';

export const clearCommand: CommandSpec = {
  name: 'clear',
  summary: 'delete cache entries: everything, one tier, one namespace, or one tier of one namespace',
  usage: 'llm-cache clear [--tier <tier>] [--namespace <ns>] [--all] [--yes]',
  description: [
    'Deletes cache entries and keeps the statistics. Other records in the store (such as the',
    'idempotency ledger) are left alone unless --all is given, which empties the whole store and',
    'resets every counter. Asks for confirmation on a terminal; scripts pass --yes.',
    'Applications sharing a Redis store drop the deleted entries from their memory levels too.',
  ].join('\n'),
  options: {
    tier: TIER_OPTION,
    namespace: NAMESPACE_OPTION,
    all: {
      type: 'boolean',
      description: 'delete everything in the store (ledger records included) and reset all counters',
    },
    yes: YES_OPTION,
  },
  examples: [
    'llm-cache clear --tier tools --yes',
    'llm-cache clear --namespace tenant-a',
    'llm-cache clear --all --yes --url redis://localhost:6379',
  ],
  args: { min: 0, max: 0 },
  async run(context: Context) {
    const filter = filterOf(context);
    const all = context.flag('all');
    if (all && (filter.tier !== undefined || filter.namespace !== undefined)) {
      throw usageError('--all empties the whole store: drop --tier / --namespace, or drop --all');
    }
    const connection = await context.connect();
    try {
      const display = connection.target.display;
      if (all) {
        await confirm(context, `Delete EVERYTHING in ${display} (entries, ledger records, counters)?`);
        // clearAll tells other processes to empty their memory levels and resets the counters, but
        // keeps what is not a cache tier (ledger records); the store's own clear takes the rest.
        await connection.cache().clearAll();
        connection.assertNoErrors();
        await connection.store.clear();
        await connection.store.clearCounters?.();
        if (context.format === 'json') await context.json({ cleared: 'all' });
        else await context.say(`Cleared everything in ${display}.`);
        return 0;
      }
      const { scopes } = await scopesWithEntries(connection.store, filter);
      let count = 0;
      for (const scope of scopes.values()) count += scope.entries;
      if (count === 0) {
        if (context.format === 'json') await context.json({ removed: 0 });
        else await context.say(`Nothing to clear (${describeFilter(filter)}).`);
        return 0;
      }
      await confirm(context, `Delete ${entries(count)} (${describeFilter(filter)}) from ${display}?`);
      const cache = connection.cache();
      let removed = 0;
      // Through the cache, one namespace of one tier at a time, so other processes hear of it.
      for (const scope of scopes.values()) {
        removed += await cache.tier(scope.tier).withNamespace(scope.namespace).clear();
      }
      connection.assertNoErrors();
      if (context.format === 'json') await context.json({ removed });
      else await context.say(`Removed ${entries(removed)} (${describeFilter(filter)}).`);
      return 0;
    } finally {
      await connection.close();
    }
  },
};
