import { validateName } from '@x/cache-core';
import type { CommandSpec, Context } from '../command.ts';
import { entries } from '../format.ts';
import { messageOf, usageError } from '../io.ts';
import type { KeyFilter } from '../keys.ts';
import { parseCacheKey, resolveKey, scanKeys, scopeId, scopesWithEntries } from '../keys.ts';
import { filterOf, NAMESPACE_OPTION, TIER_OPTION } from '../options.ts';
import type { Connection } from '../store.ts';

async function deleteKey(connection: Connection, key: string): Promise<boolean> {
  const parsed = parseCacheKey(key);
  if (!parsed) return connection.store.delete(key);
  return connection.cache().tier(parsed.tier).withNamespace(parsed.namespace).deleteStorageKey(key);
}

/**
 * Deletes what a prefix covers with as few store calls as possible: whole namespaces and whole
 * names are one prefix delete each (and one invalidation message), only partial names go key by key.
 */
async function invalidatePrefix(
  connection: Connection,
  filter: KeyFilter & { prefix: string },
): Promise<number> {
  const prefix = filter.prefix;
  const scopes = new Map<string, { tier: string; namespace: string; names: Map<string, string[]> }>();
  const loose: string[] = [];
  for await (const key of scanKeys(connection.store, filter)) {
    const parsed = parseCacheKey(key);
    if (!parsed) {
      loose.push(key);
      continue;
    }
    const id = scopeId(parsed.tier, parsed.namespace);
    let scope = scopes.get(id);
    if (!scope) {
      scope = { tier: parsed.tier, namespace: parsed.namespace, names: new Map() };
      scopes.set(id, scope);
    }
    const keys = scope.names.get(parsed.name) ?? [];
    keys.push(key);
    scope.names.set(parsed.name, keys);
  }
  let removed = 0;
  const cache = scopes.size > 0 ? connection.cache() : undefined;
  for (const scope of scopes.values()) {
    const view = cache!.tier(scope.tier).withNamespace(scope.namespace);
    const scopePrefix = view.prefix();
    if (scopePrefix.startsWith(prefix)) {
      removed += await view.clear();
      continue;
    }
    for (const [name, keys] of scope.names) {
      if (view.prefix(name).startsWith(prefix)) removed += await view.invalidate(name);
      else for (const key of keys) if (await view.deleteStorageKey(key)) removed++;
    }
  }
  for (const key of loose) if (await connection.store.delete(key)) removed++;
  return removed;
}

export const invalidateCommand: CommandSpec = {
  name: 'invalidate',
  summary: 'delete entries by tag, by key prefix or by key',
  usage:
    'llm-cache invalidate (--tag <tag> | --prefix <prefix> | --key <key>)... [--tier <tier>] [--namespace <ns>]',
  description: [
    'Deletes the entries that carry a tag, whose key starts with a prefix, or one key. Each option',
    'may be repeated and they combine. Tags belong to a tier and namespace: --tag applies to every',
    'tier and namespace unless --tier / --namespace narrow it. --key takes the full key, a unique',
    'prefix of it or the start of its hash (as ls shows it). Applications sharing a Redis store',
    'drop the entries from their memory levels too.',
  ].join('\n'),
  options: {
    tag: { type: 'string', multiple: true, value: 'tag', description: 'entries carrying this tag' },
    prefix: {
      type: 'string',
      multiple: true,
      value: 'prefix',
      description: 'entries whose key starts with this (e.g. tools/default:git_status:)',
    },
    key: { type: 'string', multiple: true, value: 'key', description: 'one entry' },
    tier: TIER_OPTION,
    namespace: NAMESPACE_OPTION,
  },
  examples: [
    'llm-cache invalidate --tag math',
    'llm-cache invalidate --tag math --tier responses --namespace tenant-a',
    'llm-cache invalidate --prefix tools/default:git_status:',
    'llm-cache invalidate --key Xk2v9QeP1aBc',
  ],
  args: { min: 0, max: 0 },
  async run(context: Context) {
    const filter = filterOf(context);
    const tags = context.strings('tag');
    const prefixes = context.strings('prefix');
    const keys = context.strings('key');
    if (tags.length + prefixes.length + keys.length === 0) {
      throw usageError('say what to invalidate: --tag <tag>, --prefix <prefix> or --key <key>');
    }
    if (prefixes.includes('')) throw usageError('--prefix "" would match everything: use llm-cache clear');
    // Checked before anything is deleted: a bad tag must not leave the other deletions half done.
    for (const tag of tags) {
      try {
        validateName(tag, 'tag');
      } catch (error) {
        throw usageError(`--tag: ${messageOf(error)}`);
      }
    }
    const connection = await context.connect();
    try {
      let removed = 0;
      // Every key is resolved before any is deleted, so an ambiguous one deletes nothing.
      const resolved: string[] = [];
      for (const input of keys) resolved.push(await resolveKey(connection.store, input, filter));
      for (const key of resolved) {
        if (await deleteKey(connection, key)) removed++;
      }
      for (const prefix of prefixes) removed += await invalidatePrefix(connection, { ...filter, prefix });
      if (tags.length > 0) {
        const scopes =
          filter.tier !== undefined && filter.namespace !== undefined
            ? [{ tier: filter.tier, namespace: filter.namespace }]
            : [...(await scopesWithEntries(connection.store, filter)).scopes.values()];
        const cache = connection.cache();
        for (const scope of scopes) {
          removed += await cache.tier(scope.tier).withNamespace(scope.namespace).invalidateTags(tags);
        }
      }
      connection.assertNoErrors();
      if (context.format === 'json') await context.json({ removed });
      else await context.say(`Invalidated ${entries(removed)}.`);
      return 0;
    } finally {
      await connection.close();
    }
  },
};
