/** Command line and environment of the demo. */
import { isAbsolute, join, resolve } from 'node:path';

export const USAGE = `Usage: pnpm demo [options]      (or, in apps/demo: node --conditions=@x/source dist/main.js [options])

Runs every adapter twice over one cache store — cold, then warm — and prints what the cache saved.

Options:
  --redis     use Redis: LLM_CACHE_URL when it is a redis:// URL, else redis://127.0.0.1:6379
              (keys under the prefix "llm-cache-demo:")
  --tiers     put an in-memory level in front of the store (off by default, so that the warm
              run visibly hits the store itself)
  --local     use the local stand-in models even when an API key is set
  --json      print one JSON document instead of tables
  --keep      do not clear the demo's entries first (the "cold" run may then hit)
  -h, --help  this text

Environment:
  LLM_CACHE_URL      store to use: sqlite://path.db, sqlite:///abs/path.db or redis://host:port[/db][?prefix=p:]
                     (default: SQLite at apps/demo/.cache/demo.db)
  LLM_CACHE_DIR      directory of the default SQLite file (<dir>/demo.db)
  OPENAI_API_KEY     use OpenAI (gpt-4o-mini, text-embedding-3-small) instead of the local stand-ins
  ANTHROPIC_API_KEY  use Anthropic (claude-haiku-4-5) instead of the local stand-ins
  DEMO_LATENCY_MS    fixed latency of every local stand-in call (default: 150-400 ms, per request)
`;

/** Key prefix of the demo's own Redis data, so clearing it never touches anything else. */
export const DEMO_REDIS_PREFIX = 'llm-cache-demo:';
export const DEFAULT_REDIS_URL = `redis://127.0.0.1:6379/0?prefix=${DEMO_REDIS_PREFIX}`;

export interface DemoConfig {
  /** The store, as an LLM_CACHE_URL (`sqlite://…` or `redis://…`). */
  url: string;
  kind: 'sqlite' | 'redis';
  /** Human-readable store, for the banner (no credentials). */
  storeLabel: string;
  /**
   * The store is the demo's own (its default SQLite file, or Redis under the demo's prefix): the
   * demo may reset it entirely, counters included. A store named by LLM_CACHE_URL is shared with
   * whatever else uses it, so only the demo's namespaces are cleared there.
   */
  owned: boolean;
  tiers: boolean;
  json: boolean;
  keep: boolean;
  forceLocal: boolean;
  help: boolean;
}

export class UsageError extends Error {}

export function redactUrl(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}

export function parseConfig(argv: readonly string[], env: NodeJS.ProcessEnv, appDir: string): DemoConfig {
  const flags = new Set<string>();
  for (const arg of argv) {
    if (arg === '--') continue;
    if (!['--redis', '--tiers', '--local', '--json', '--keep', '--help', '-h'].includes(arg)) {
      throw new UsageError(`unknown option "${arg}" — run with --help for the options`);
    }
    flags.add(arg === '-h' ? '--help' : arg);
  }
  const envUrl = env.LLM_CACHE_URL?.trim() || undefined;
  const wantsRedis = flags.has('--redis');
  let url: string;
  let owned: boolean;
  if (envUrl) {
    if (wantsRedis && !/^rediss?:/i.test(envUrl)) {
      throw new UsageError(
        `--redis was given but LLM_CACHE_URL is "${redactUrl(envUrl)}" — unset LLM_CACHE_URL or set it to a redis:// URL`,
      );
    }
    url = envUrl;
    owned = false;
  } else if (wantsRedis) {
    url = DEFAULT_REDIS_URL;
    owned = true;
  } else {
    const dir = env.LLM_CACHE_DIR ? resolve(env.LLM_CACHE_DIR) : join(appDir, '.cache');
    url = `sqlite://${join(dir, 'demo.db')}`;
    owned = true;
  }
  const kind = /^rediss?:/i.test(url) ? 'redis' : /^(sqlite|file):/i.test(url) ? 'sqlite' : undefined;
  if (!kind) {
    throw new UsageError(
      `LLM_CACHE_URL "${redactUrl(url)}" is not a store the demo can show: use sqlite://path.db or redis://host:port ` +
        '(a memory:// cache would be empty again on the next run)',
    );
  }
  return {
    url,
    kind,
    storeLabel: kind === 'sqlite' ? `SQLite ${sqlitePath(url)}` : `Redis ${redactUrl(url)}`,
    owned,
    tiers: flags.has('--tiers'),
    json: flags.has('--json'),
    keep: flags.has('--keep'),
    forceLocal: flags.has('--local'),
    help: flags.has('--help'),
  };
}

/** The file a sqlite:// URL names, as the core reads it (relative paths from the working directory). */
export function sqlitePath(url: string): string {
  const rest = url.replace(/^(sqlite|file):/i, '').replace(/^\/\//, '');
  const path = decodeURIComponent(rest.split('?')[0] ?? '');
  return isAbsolute(path) ? path : resolve(path);
}
