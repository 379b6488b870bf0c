import type { CacheBackend } from '@x/cache-core';
import { CliError } from './io.ts';

/** A storage key made by the cache: `${tier}/${namespace}:${name}:${hash}`. */
export interface CacheKey {
  tier: string;
  namespace: string;
  name: string;
  hash: string;
}

// Names are 1-128 of A-Z a-z 0-9 _ . - / @ (validateName). Tier names in practice never contain
// '/', so the first '/' splits tier from namespace (a namespace may: "team-a/summaries"). Keys of
// other writers (the ledger's `~ledger/…`) fall outside this form.
const CACHE_KEY = /^([A-Za-z0-9_.@-]+)\/([A-Za-z0-9_.@/-]+):([A-Za-z0-9_.@/-]+):([A-Za-z0-9_-]{43})$/;

/** Splits a cache key; `undefined` for keys the cache did not make (e.g. other records in the store). */
export function parseCacheKey(key: string): CacheKey | undefined {
  const match = CACHE_KEY.exec(key);
  if (!match) return undefined;
  return { tier: match[1]!, namespace: match[2]!, name: match[3]!, hash: match[4]! };
}

export interface KeyFilter {
  /** Raw key prefix. */
  prefix?: string | undefined;
  tier?: string | undefined;
  namespace?: string | undefined;
}

/** The narrowest prefix a backend can scan for this filter. */
export function scanPrefix(filter: KeyFilter): string {
  const derived =
    filter.tier === undefined
      ? ''
      : filter.namespace === undefined
        ? `${filter.tier}/`
        : `${filter.tier}/${filter.namespace}:`;
  const given = filter.prefix ?? '';
  return given.length >= derived.length ? given : derived;
}

export function matches(key: string, filter: KeyFilter): boolean {
  if (filter.prefix !== undefined && !key.startsWith(filter.prefix)) return false;
  if (filter.tier === undefined && filter.namespace === undefined) return true;
  const parsed = parseCacheKey(key);
  if (!parsed) return false;
  if (filter.tier !== undefined && parsed.tier !== filter.tier) return false;
  if (filter.namespace !== undefined && parsed.namespace !== filter.namespace) return false;
  return true;
}

/** Live keys matching the filter, in the backend's order. */
export async function* scanKeys(store: CacheBackend, filter: KeyFilter): AsyncGenerator<string> {
  for await (const key of store.keys({ prefix: scanPrefix(filter) })) {
    if (matches(key, filter)) yield key;
  }
}

export interface Scope {
  tier: string;
  namespace: string;
}

export function scopeId(tier: string, namespace: string): string {
  return `${tier}/${namespace}`;
}

/** The (tier, namespace) pairs holding live entries that match the filter, with their live entry counts. */
export async function scopesWithEntries(
  store: CacheBackend,
  filter: KeyFilter,
): Promise<{ scopes: Map<string, Scope & { entries: number }>; other: number }> {
  const scopes = new Map<string, Scope & { entries: number }>();
  let other = 0;
  for await (const key of scanKeys(store, filter)) {
    const parsed = parseCacheKey(key);
    if (!parsed) {
      other++;
      continue;
    }
    const id = scopeId(parsed.tier, parsed.namespace);
    const scope = scopes.get(id);
    if (scope) scope.entries++;
    else scopes.set(id, { tier: parsed.tier, namespace: parsed.namespace, entries: 1 });
  }
  return { scopes, other };
}

const HASH_FRAGMENT = /^[A-Za-z0-9_-]{4,43}$/;

/**
 * Finds the one live key meant by `input`: the full key, a unique prefix of one, or a unique
 * start of a key's hash (the HASH column of `ls`).
 */
export async function resolveKey(
  store: CacheBackend,
  input: string,
  filter: KeyFilter = {},
): Promise<string> {
  // --tier and --namespace narrow every way of naming the entry: a key of another namespace is
  // not found (and the same request's hash in two namespaces is no longer ambiguous).
  if (matches(input, filter) && (await store.has(input))) return input;
  const found: string[] = [];
  for await (const key of store.keys({ prefix: input })) {
    if (!matches(key, filter)) continue;
    found.push(key);
    if (found.length > 5) break;
  }
  if (found.length === 0 && HASH_FRAGMENT.test(input)) {
    for await (const key of scanKeys(store, filter)) {
      if (parseCacheKey(key)?.hash.startsWith(input)) {
        found.push(key);
        if (found.length > 5) break;
      }
    }
  }
  if (found.length === 1) return found[0]!;
  if (found.length === 0) {
    const within =
      filter.tier !== undefined || filter.namespace !== undefined ? ' in that tier / namespace' : '';
    throw new CliError(`no live entry matches "${input}"${within} — list keys with llm-cache ls`);
  }
  const shown = found.slice(0, 5).join(', ');
  throw new CliError(
    `"${input}" matches several entries (${shown}${found.length > 5 ? ', …' : ''}) — give more of the key`,
  );
}
