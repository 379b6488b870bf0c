import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCache, createCacheFromEnv } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  cli,
  DAY,
  fixedClock,
  HOUR,
  INTRO,
  json,
  liveKeys as keysOf,
  type Seeded,
  useSeededStore,
} from './helpers.ts';

const fixture = useSeededStore();
let dir: string;
let path: string;
let url: string;
let seeded: Seeded;
beforeEach(() => {
  ({ dir, path, url, seeded } = fixture);
});

/** Opens the store the way an application would, to check what the CLI left behind. */
function appCache(at?: number) {
  return createCache({
    store: sqliteBackend({ path }),
    memory: false,
    statsFlushInterval: 0,
    ...(at === undefined ? {} : { clock: fixedClock(at) }),
  });
}

describe('llm-cache clear', () => {
  it('refuses without --yes when there is no terminal to ask on', async () => {
    const result = await cli(['clear', '--url', url]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(
      'llm-cache: clear deletes entries: pass --yes to confirm (no terminal to ask on)\n',
    );
    expect(await keysOf(path)).toHaveLength(8);
  });

  it('clears one tier, one namespace, or every cache entry, and leaves other records and counters alone', async () => {
    const tier = await cli(['clear', '--url', url, '--tier', 'tools', '--yes']);
    expect(tier).toMatchObject({ code: 0, stdout: 'Removed 2 entries (tier tools, every namespace).\n' });
    expect(await keysOf(path)).not.toContain(seeded.toolA);
    expect(await keysOf(path)).toHaveLength(6);
    const namespace = await cli([
      'clear',
      '--url',
      url,
      '--namespace',
      'default',
      '--tier',
      'responses',
      '-y',
    ]);
    expect(namespace.stdout).toBe('Removed 3 entries (tier responses, namespace default).\n');
    const rest = await cli(['clear', '--url', url, '--yes', '--format', 'json']);
    expect(json(rest.stdout)).toEqual({ removed: 2 });
    expect(await keysOf(path)).toEqual([seeded.other]);
    const stats = json((await cli(['stats', '--url', url, '--format', 'json'])).stdout);
    expect(stats.overall.hits).toBe(3);
    expect((await cli(['clear', '--url', url, '--yes'])).stdout).toBe(
      'Nothing to clear (every tier, every namespace).\n',
    );
  });

  it('--all empties the store and resets the counters', async () => {
    expect((await cli(['clear', '--all', '--tier', 'tools', '--url', url, '--yes'])).code).toBe(2);
    const result = await cli(['clear', '--all', '--url', url, '--yes']);
    expect(result).toMatchObject({ code: 0, stdout: `Cleared everything in ${url}.\n` });
    expect(await keysOf(path)).toEqual([]);
    const stats = json((await cli(['stats', '--url', url, '--format', 'json'])).stdout);
    expect(stats.overall).toMatchObject({ entries: 0, hits: 0, misses: 0 });
    expect(stats.levels).toEqual({});
  });
});

describe('llm-cache prune', () => {
  it('deletes expired entries only and reports how many', async () => {
    const result = await cli(['prune', '--url', url]);
    expect(result).toMatchObject({ code: 0, stdout: 'Pruned 1 entry that had expired.\n', stderr: '' });
    const stats = json((await cli(['stats', '--url', url, '--format', 'json'])).stdout);
    expect(stats.expiredAwaitingPrune).toBe(0);
    expect(await keysOf(path)).toContain(seeded.stale);
    expect(json((await cli(['prune', '--url', url, '--format', 'json'])).stdout)).toEqual({ removed: 0 });
  });

  it('reports progress on stderr with --progress, and nothing at all with --quiet', async () => {
    const progress = await cli(['prune', '--url', url, '--progress']);
    expect(progress.stderr).toBe('prune: started\nprune: finished\n');
    const quiet = await cli(['prune', '--url', url, '--quiet']);
    expect(quiet).toMatchObject({ code: 0, stdout: '', stderr: '' });
  });
});

describe('llm-cache invalidate', () => {
  it('--tag removes tagged entries in every namespace, or one with --namespace', async () => {
    const scoped = await cli(['invalidate', '--tag', 'git', '--namespace', 'tenant-a', '--url', url]);
    expect(scoped).toMatchObject({ code: 0, stdout: 'Invalidated 1 entry.\n' });
    expect(await keysOf(path)).not.toContain(seeded.toolA);
    expect(await keysOf(path)).toContain(seeded.toolB);
    const everywhere = await cli([
      'invalidate',
      '--tag',
      'git',
      '--tag',
      'math',
      '--url',
      url,
      '--format',
      'json',
    ]);
    expect(json(everywhere.stdout)).toEqual({ removed: 3 });
    expect(await keysOf(path)).toEqual(
      [seeded.embedding, seeded.other, seeded.stale, seeded.template].sort(),
    );
  });

  it('--prefix removes a name, a namespace or any key range; --key one entry by key or hash', async () => {
    const name = await cli(['invalidate', '--prefix', 'responses/default:intro_page:', '--url', url]);
    expect(name.stdout).toBe('Invalidated 1 entry.\n');
    const partial = await cli(['invalidate', '--prefix', 'tools/tenant-', '--url', url]);
    expect(partial.stdout).toBe('Invalidated 2 entries.\n');
    const key = await cli(['invalidate', '--key', seeded.embedding.slice(-43, -33), '--url', url]);
    expect(key.stdout).toBe('Invalidated 1 entry.\n');
    const other = await cli(['invalidate', '--key', seeded.other, '--url', url]);
    expect(other.stdout).toBe('Invalidated 1 entry.\n');
    expect(await keysOf(path)).toEqual([seeded.stale, seeded.template, seeded.wordProblem].sort());
    const none = await cli(['invalidate', '--key', 'no-such-key', '--url', url]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^llm-cache: no live entry matches "no-such-key"/);
  });

  it('--key stays within --tier and --namespace', async () => {
    const elsewhere = await cli([
      'invalidate',
      '--key',
      seeded.toolB,
      '--namespace',
      'tenant-a',
      '--tier',
      'tools',
      '--url',
      url,
    ]);
    expect(elsewhere.code).toBe(1);
    expect(elsewhere.stderr).toMatch(/no live entry matches .* in that tier \/ namespace/);
    expect(await keysOf(path)).toContain(seeded.toolB);
    const within = await cli(['invalidate', '--key', seeded.toolB, '--namespace', 'tenant-b', '--url', url]);
    expect(within.stdout).toBe('Invalidated 1 entry.\n');
  });

  it('checks every tag before deleting anything', async () => {
    const bad = await cli(['invalidate', '--prefix', 'tools/', '--tag=', '--url', url]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^llm-cache: --tag: /);
    expect(await keysOf(path)).toContain(seeded.toolA);
  });

  it('takes a key fragment that starts with dashes as a value, not an option', async () => {
    for (const fragment of ['-Xk2v9QeP1aBc', '--WHcMoOvzyk']) {
      const result = await cli(['invalidate', '--key', fragment, '--url', url]);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(
        `llm-cache: no live entry matches "${fragment}" — list keys with llm-cache ls\n`,
      );
      const inspected = await cli(['inspect', fragment, '--url', url]);
      expect(inspected.stderr).toBe(
        `llm-cache: no live entry matches "${fragment}" — list keys with llm-cache ls\n`,
      );
    }
  });

  it('is seen by the application: the next call computes again', async () => {
    await cli(['invalidate', '--prefix', 'responses/default:intro_page:', '--url', url]);
    const cache = appCache();
    let computed = 0;
    await cache.getOrCompute(INTRO, () => {
      computed++;
      return { text: 'new' };
    });
    await cache.close();
    expect(computed).toBe(1);
  });
});

describe('llm-cache warm', () => {
  it('writes records through the cache API: the application then hits them, with usage counted', async () => {
    const file = join(dir, 'warm.jsonl');
    const request = { subject: 'physics', topic: 'levers', grade: 6 };
    writeFileSync(
      file,
      [
        JSON.stringify({
          name: 'intro_page',
          request,
          value: { text: 'A lever is…' },
          ttl: '7d',
          tags: ['physics'],
          usage: { inputTokens: 50, outputTokens: 500, model: 'gpt-4o-mini' },
        }),
        '',
        JSON.stringify({
          tier: 'tools',
          namespace: 'tenant-c',
          name: 'lookup',
          request: 'x',
          value: [1, 2, 3],
        }),
        JSON.stringify({ name: 'plain', value: null }),
      ].join('\n'),
    );
    const result = await cli(['warm', file, '--url', url]);
    expect(result).toMatchObject({ code: 0, stdout: 'Warmed 3 entries.\n', stderr: '' });

    const now = Date.now();
    const cache = appCache(now);
    let computed = 0;
    const compute = () => {
      computed++;
      return 'computed';
    };
    const hit = await cache.getOrComputeResult({ name: 'intro_page', request }, compute);
    expect(hit).toMatchObject({ hit: true, value: { text: 'A lever is…' } });
    expect(
      await cache
        .tier('tools')
        .withNamespace('tenant-c')
        .getOrCompute({ name: 'lookup', request: 'x' }, compute),
    ).toEqual([1, 2, 3]);
    expect(computed).toBe(0);
    const stats = await cache.stats();
    expect(stats).toMatchObject({ inputTokensSaved: 50 + 300, outputTokensSaved: 500 + 2700 });
    expect(await cache.invalidateTags(['physics'])).toBe(1);
    await cache.close();
    const tools = json(
      (await cli(['ls', '--url', url, '--namespace', 'tenant-c', '--format', 'json'])).stdout,
    );
    // The tools tier's default TTL (1 hour) applies when a record has none.
    expect(tools.entries[0].ttlMs).toBeLessThanOrEqual(HOUR);
    expect(tools.entries[0].ttlMs).toBeGreaterThan(HOUR - 60_000);
  });

  it('takes defaults from --tier, --namespace and --ttl, and reads stdin', async () => {
    const input = `${JSON.stringify({ name: 'faq', request: { q: 'hours' }, value: '9 to 5' })}\n`;
    const result = await cli(
      ['warm', '-', '--url', url, '--tier', 'http', '--namespace', 'site', '--ttl', '3d'],
      {
        input,
      },
    );
    expect(result.code).toBe(0);
    const listing = json((await cli(['ls', 'http/site:faq:', '--url', url, '--format', 'json'])).stdout);
    expect(listing.entries).toHaveLength(1);
    expect(listing.entries[0].expiresAt - listing.entries[0].createdAt).toBe(3 * DAY);
    // Digits alone are milliseconds, as a number ttl in a record is.
    const ms = await cli(
      ['warm', '-', '--url', url, '--tier', 'http', '--namespace', 'ms', '--ttl', '60000'],
      {
        input,
      },
    );
    expect(ms.code).toBe(0);
    const short = json((await cli(['ls', 'http/ms:faq:', '--url', url, '--format', 'json'])).stdout);
    expect(short.entries[0].expiresAt - short.entries[0].createdAt).toBe(60_000);
  });

  it("stores records without a namespace in the application's LLM_CACHE_NAMESPACE, where it then hits them", async () => {
    const env = { LLM_CACHE_URL: url, LLM_CACHE_NAMESPACE: 'tenant-x' };
    const input = `${JSON.stringify({ name: 'faq', request: { q: 'refunds' }, value: 'Within 30 days.' })}\n`;
    const result = await cli(['warm', '-'], { env, input });
    expect(result).toMatchObject({ code: 0, stdout: 'Warmed 1 entry.\n' });
    const app = createCacheFromEnv(env, { memory: false, statsFlushInterval: 0 });
    expect(app.namespace).toBe('tenant-x');
    const hit = await app.getOrComputeResult({ name: 'faq', request: { q: 'refunds' } }, () => 'computed');
    expect(hit).toMatchObject({ hit: true, value: 'Within 30 days.' });
    await app.close();
    // --namespace still wins; a bad LLM_CACHE_NAMESPACE is named as such.
    await cli(['warm', '-', '--namespace', 'other'], { env, input });
    expect(json((await cli(['ls', '--namespace', 'other', '--format', 'json'], { env })).stdout).total).toBe(
      1,
    );
    const bad = await cli(['warm', '-'], { env: { ...env, LLM_CACHE_NAMESPACE: 'a b' }, input });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(
      /^llm-cache: LLM_CACHE_NAMESPACE: .*invalid namespace "a b".* — fix it or pass --namespace\n$/,
    );
  });

  it('refuses a ttl of 0, which would store nothing and delete what the key holds', async () => {
    const key = { name: 'faq', request: 1 };
    await cli(['warm', '-', '--url', url], { input: `${JSON.stringify({ ...key, value: 'kept' })}\n` });
    const zero = await cli(['warm', '-', '--url', url], {
      input: `${JSON.stringify({ ...key, value: 'new', ttl: 0 })}\n`,
    });
    expect(zero.code).toBe(1);
    expect(zero.stderr).toBe(
      `llm-cache: stdin:1: "ttl": 0 keeps an entry for no time, so nothing would be stored — give a duration like '7d', or leave it out for the tier's TTL\n`,
    );
    for (const ttl of ['0s', '0']) {
      const option = await cli(['warm', '-', '--url', url, '--ttl', ttl], {
        input: `${JSON.stringify(key)}\n`,
      });
      expect(option.code).toBe(2);
      expect(option.stderr).toMatch(/^llm-cache: --ttl: 0 keeps an entry for no time/);
    }
    const cache = appCache();
    expect(await cache.get(key)).toBe('kept');
    await cache.close();
  });

  it('refuses a malformed --ttl as a usage error before writing anything', async () => {
    const result = await cli(['warm', '-', '--ttl', 'soon', '--url', url], {
      input: '{"name":"a","request":1,"value":1}\n',
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^llm-cache: --ttl: .*"soon"/);
    const empty = await cli(['warm', '-', '--ttl', 'soon', '--url', url], { input: '' });
    expect(empty.code).toBe(2);
  });

  it('names the bad line and exits 1, keeping the lines before it', async () => {
    const input = [
      JSON.stringify({ name: 'ok', value: 1 }),
      JSON.stringify({ name: 'not valid', value: 1 }),
      JSON.stringify({ name: 'never', value: 1 }),
    ].join('\n');
    const result = await cli(['warm', '-', '--url', url], { input });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^llm-cache: stdin:2: .*invalid name "not valid".* \(stored 1 entry before it\)\n$/,
    );
    const names = json((await cli(['ls', '--url', url, '--format', 'json'])).stdout).entries.map(
      (entry: { name?: string }) => entry.name,
    );
    expect(names).toContain('ok');
    expect(names).not.toContain('never');
    const missing = await cli(['warm', '-', '--url', url], { input: '{"name":"x"}\n' });
    expect(missing.stderr).toBe('llm-cache: stdin:1: "value" is missing (the answer to store)\n');
    const ttl = await cli(['warm', '-', '--url', url], { input: '{"name":"x","value":1,"ttl":"soon"}\n' });
    expect(ttl.code).toBe(1);
    expect(ttl.stderr).toMatch(/^llm-cache: stdin:1: .*ttl "soon" is not a duration/);
  });

  it('creates a missing SQLite file', async () => {
    const fresh = join(dir, 'new', 'cache.db');
    const result = await cli(['warm', '-', '--url', `sqlite://${fresh}`], {
      input: '{"name":"a","value":1}\n',
    });
    expect(result.code).toBe(0);
    expect(json((await cli(['ls', '--url', `sqlite://${fresh}`, '--format', 'json'])).stdout).total).toBe(1);
  });
});
