import { validateName } from '@x/cache-core';
import type { Context, OptionSpec } from './command.ts';
import { usageError } from './io.ts';
import type { KeyFilter } from './keys.ts';

/** Options every command accepts. */
export const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  url: {
    type: 'string',
    value: 'url',
    description: 'the store: sqlite://file.db, sqlite:///abs/file.db, redis://host:port[/db][?prefix=app:]',
  },
  format: { type: 'string', value: 'table|json', description: 'output format (default: table)' },
  quiet: { type: 'boolean', short: 'q', description: 'print no progress and no result messages' },
  progress: {
    type: 'boolean',
    description: 'show progress on stderr even when it is not a terminal (on by default on a terminal)',
  },
  timeout: {
    type: 'string',
    value: 'ms',
    description: 'how long to wait for Redis to answer when connecting (default: 2000)',
  },
  help: { type: 'boolean', short: 'h', description: 'show help' },
};

export const TIER_OPTION: OptionSpec = {
  type: 'string',
  value: 'tier',
  description: 'only this tier (responses, tools, embeddings, templates, http, …)',
};

export const NAMESPACE_OPTION: OptionSpec = {
  type: 'string',
  value: 'namespace',
  description: 'only this namespace (application, tenant)',
};

export const YES_OPTION: OptionSpec = {
  type: 'boolean',
  short: 'y',
  description: 'do not ask for confirmation',
};

/** `--tier` / `--namespace`, validated like the cache validates them, plus an optional raw prefix. */
export function filterOf(context: Context, prefix?: string): KeyFilter {
  const tier = context.string('tier');
  const namespace = context.string('namespace');
  if (tier !== undefined) {
    validateName(tier, 'name');
    if (tier.includes('/')) {
      throw usageError(
        `--tier ${tier}: a tier name has no '/' (the cache refuses one); the part after '/' is the namespace: --tier ${tier.slice(0, tier.indexOf('/'))} --namespace ${tier.slice(tier.indexOf('/') + 1)}`,
      );
    }
  }
  if (namespace !== undefined) validateName(namespace, 'namespace');
  return { prefix, tier, namespace };
}

export function describeFilter(filter: KeyFilter): string {
  const parts: string[] = [];
  parts.push(filter.tier === undefined ? 'every tier' : `tier ${filter.tier}`);
  parts.push(filter.namespace === undefined ? 'every namespace' : `namespace ${filter.namespace}`);
  if (filter.prefix) parts.push(`keys starting with "${filter.prefix}"`);
  return parts.join(', ');
}
