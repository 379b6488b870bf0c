import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cache } from '@x/cache-core';
import { CacheError, createCache, getDefaultCache, setDefaultCache } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { cachedLlmCall, invalidateCached, invalidateCachedPrefix, warm } from './index.ts';

const HOUR = 3_600_000;

function manualClock(start = 1_700_000_000_000) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

/** A provider stand-in that numbers its answers, can fail on demand and can be held back. */
function testModel() {
  let gate: Promise<void> | undefined;
  const model = {
    prompts: [] as string[],
    failures: 0,
    async complete(prompt: string): Promise<string> {
      model.prompts.push(prompt);
      const number = model.prompts.length;
      if (gate) await gate;
      if (model.failures > 0) {
        model.failures--;
        throw new Error(`provider unavailable (${prompt})`);
      }
      return `answer ${number}: ${prompt}`;
    },
    hold(): () => void {
      let release!: () => void;
      gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      return () => {
        gate = undefined;
        release();
      };
    },
  };
  return model;
}

describe.each(['memory', 'sqlite'] as const)('cachedLlmCall(prefix, fn, options) over %s', (store) => {
  let dir: string;
  let clock: ReturnType<typeof manualClock>;
  let cache: Cache;
  const opened: Cache[] = [];

  function openCache(): Cache {
    const created = createCache({
      clock,
      store: store === 'sqlite' ? sqliteBackend({ path: join(dir, 'cache.db'), clock }) : undefined,
    });
    opened.push(created);
    return created;
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'x-cache-decorators-fn-'));
    clock = manualClock();
    cache = openCache();
  });

  afterEach(async () => {
    for (const each of opened.splice(0)) await each.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function summarizer(model = testModel(), target: () => Cache = () => cache) {
    const summarize = cachedLlmCall(
      'summary',
      async function summarize(text: string, options: { words: number; traceId?: string } = { words: 20 }) {
        return model.complete(`summarize in ${options.words}: ${text}`);
      },
      { cache: () => target(), ttlHours: 12 },
    );
    return { model, summarize };
  }

  it('answers repeated calls from the cache and keeps the function’s behaviour otherwise', async () => {
    const { model, summarize } = summarizer();
    const first = await summarize('the water cycle', { words: 10 });
    expect(await summarize('the water cycle', { words: 10 })).toBe(first);
    expect(await summarize('the water cycle', { words: 12 })).not.toBe(first);
    expect(model.prompts).toHaveLength(2);
    expect(summarize.name).toBe('summarize');
  });

  it('treats trailing undefined arguments as absent, and keys objects in any order', async () => {
    const { model, summarize } = summarizer();
    await summarize('tides');
    await summarize('tides', undefined);
    expect(model.prompts).toHaveLength(1);
    await summarize('tides', { traceId: 'a', words: 5 });
    await summarize('tides', { words: 5, traceId: 'a' });
    expect(model.prompts).toHaveLength(2);
  });

  it('expires after ttlHours on the injected clock', async () => {
    const { model, summarize } = summarizer();
    const first = await summarize('tides');
    clock.advance(12 * HOUR - 1);
    expect(await summarize('tides')).toBe(first);
    clock.advance(1);
    expect(await summarize('tides')).not.toBe(first);
    expect(model.prompts).toHaveLength(2);
  });

  it('runs the function once for concurrent identical calls, and caches no error', async () => {
    const { model, summarize } = summarizer();
    const release = model.hold();
    model.failures = 1;
    const failing = [summarize('storms'), summarize('storms')];
    release();
    for (const call of failing) await expect(call).rejects.toThrow('provider unavailable');
    const again = model.hold();
    const calls = [summarize('storms'), summarize('storms'), summarize('storms')];
    again();
    expect(new Set(await Promise.all(calls)).size).toBe(1);
    expect(model.prompts).toHaveLength(2);
  });

  it('selects the key with key: (…args) and passes `this` through', async () => {
    const model = testModel();
    const ask = cachedLlmCall(
      'ask',
      async function (this: unknown, question: string, _requestId: string) {
        const persona = (this as { persona?: string } | undefined)?.persona ?? 'plain';
        return model.complete(`${persona}: ${question}`);
      },
      { cache, key: (question) => question.trim() },
    );
    const first = await ask(' why? ', 'r1');
    expect(await ask('why?', 'r2')).toBe(first);
    const bot = { persona: 'pirate', ask };
    expect(await bot.ask('how?', 'r3')).toContain('pirate: how?');
    expect(model.prompts).toHaveLength(2);
    expect(await warm(bot, 'ask', [['when?', 'r4']])).toMatchObject({ filled: [['when?', 'r4']] });
    expect(model.prompts.at(-1)).toBe('pirate: when?');
    expect(await invalidateCached(bot, 'ask', 'when?', 'r5')).toBe(true);
  });

  it('refuses a key option that returns undefined, naming the fix, instead of sharing one entry', async () => {
    const model = testModel();
    const ask = cachedLlmCall('ask_optional', async (question: string) => model.complete(question), {
      cache,
      key: (question) => (question.startsWith('#') ? undefined : question),
    });
    const error = await ask('#first').catch((e: unknown) => e);
    expect(CacheError.isInstance(error)).toBe(true);
    expect((error as CacheError).code).toBe('E_INVALID_OPTION');
    expect((error as Error).message).toMatch(
      /the key option of .* returned undefined, which would give every such call one shared entry — return what identifies the call/,
    );
    await expect(invalidateCached(ask, '#second')).rejects.toThrow(/returned undefined/);
    expect(await ask('plain')).toBe('answer 1: plain');
    expect(model.prompts).toEqual(['plain']);
  });

  it('invalidates one call and a whole prefix', async () => {
    const { model, summarize } = summarizer();
    await summarize('a', { words: 1 });
    await summarize('b', { words: 1 });
    await summarize('c', { words: 1 });
    expect(await invalidateCached(summarize, 'a', { words: 1 })).toBe(true);
    await summarize('a', { words: 1 });
    await summarize('b', { words: 1 });
    expect(model.prompts).toHaveLength(4);
    expect(await invalidateCachedPrefix(summarize)).toBe(3);
    await summarize('b', { words: 1 });
    expect(model.prompts).toHaveLength(5);
    expect(await invalidateCachedPrefix('summary')).toBe(1);
  });

  it('warms by function and by prefix, once per distinct call, with a concurrency limit', async () => {
    const { model, summarize } = summarizer();
    let running = 0;
    let peak = 0;
    const complete = model.complete;
    model.complete = async (prompt: string) => {
      running++;
      peak = Math.max(peak, running);
      try {
        await Promise.resolve();
        return await complete(prompt);
      } finally {
        running--;
      }
    };
    const report = await warm(summarize, [['a'], ['b'], ['a', undefined], ['c'], ['d']], { concurrency: 2 });
    expect(report).toEqual({
      filled: [['a'], ['b'], ['c'], ['d']],
      alreadyCached: [],
      skipped: [],
      failed: [],
    });
    expect(peak).toBe(2);
    expect(model.prompts).toHaveLength(4);
    const single = cachedLlmCall(
      `warm_by_prefix_${store}`,
      async (text: string) => model.complete(`single ${text}`),
      {
        cache,
      },
    );
    await single('a');
    const byPrefix = await warm(`warm_by_prefix_${store}`, [['a'], ['e']]);
    expect(byPrefix).toMatchObject({ filled: [['e']], alreadyCached: [['a']] });
    await single('e');
    expect(model.prompts).toHaveLength(6);
  });

  it('reports an argument list that cannot be keyed as failed without running it', async () => {
    const { model, summarize } = summarizer();
    const report = await warm(summarize, [['ok'], ['bad', { words: 1, traceId: (() => 'x') as never }]]);
    expect(report.filled).toEqual([['ok']]);
    expect(report.failed).toHaveLength(1);
    expect(model.prompts).toHaveLength(1);
  });

  it('still hits after a restart', async () => {
    if (store !== 'sqlite') return;
    const { summarize } = summarizer();
    const first = await summarize('glaciers');
    await cache.close();
    const reopened = openCache();
    const fresh = summarizer(testModel(), () => reopened);
    expect(await fresh.summarize('glaciers')).toBe(first);
    expect(fresh.model.prompts).toHaveLength(0);
  });
});

describe('cachedLlmCall keys', () => {
  afterEach(() => setDefaultCache(undefined));

  it('explains an argument that cannot be part of the key, without running the function', async () => {
    const model = testModel();
    const ask = cachedLlmCall(
      'ask',
      async (question: string, _onToken: () => void) => model.complete(question),
      {
        cache: createCache(),
      },
    );
    const error = await ask('why?', () => {}).catch((e: unknown) => e);
    expect(CacheError.isInstance(error)).toBe(true);
    expect(error).toMatchObject({ code: 'E_UNSERIALIZABLE' });
    expect((error as Error).message).toMatch(
      /^\[@x\/cache-decorators\] ask .*args\[1\].* — pass a key option/,
    );
    expect(model.prompts).toHaveLength(0);
  });

  it('shares entries between functions with the same prefix and separates them with scope', async () => {
    const cache = createCache();
    const model = testModel();
    const a = cachedLlmCall('shared', async (x: string) => model.complete(`a ${x}`), { cache });
    const b = cachedLlmCall('shared', async (x: string) => model.complete(`b ${x}`), { cache });
    const c = cachedLlmCall('shared', async (x: string) => model.complete(`c ${x}`), { cache, scope: 'c' });
    expect(await b('x')).toBe(await a('x'));
    expect(await c('x')).toContain('c x');
    expect(model.prompts).toHaveLength(2);
  });

  it('invalidates a prefix in the tier its entries are in', async () => {
    const cache = createCache();
    const model = testModel();
    const render = cachedLlmCall('render_template', async (x: string) => model.complete(x), {
      cache: cache.tier('templates'),
    });
    await render('a');
    expect(await invalidateCachedPrefix(render, { cache, tier: 'templates' })).toBe(1);
    await render('a');
    expect(model.prompts).toHaveLength(2);
  });

  it('warms the newest version of a named function evaluated again with another body', async () => {
    const cache = createCache();
    cachedLlmCall(
      'hot_prefix',
      async function intro(x: string) {
        return `v1:${x}`;
      },
      { cache },
    );
    cachedLlmCall(
      'hot_prefix',
      async function intro(x: string) {
        return `v2:${x}`;
      },
      { cache },
    );
    expect((await warm('hot_prefix', [['q']])).filled).toEqual([['q']]);
  });

  it('invalidates a prefix in the cache its function was given, tier included, without options', async () => {
    const cache = createCache();
    const render = cachedLlmCall('tiered_p', async (x: string) => `r:${x}`, {
      cache: cache.tier('templates'),
    });
    await render('a');
    expect(await invalidateCachedPrefix('tiered_p', { tier: 'responses' })).toBe(1);
  });

  it('refuses to warm a prefix shared by two different anonymous functions', async () => {
    const cache = createCache();
    cachedLlmCall('warm_anon', async (x: string) => `A:${x}`, { cache });
    cachedLlmCall('warm_anon', async (x: string) => `B:${x}`, { cache });
    await expect(warm('warm_anon', [['q']])).rejects.toThrow(/2 functions use the prefix "warm_anon"/);
  });

  it('stores nothing with ttl: 0, and nothing when the cache is disabled', async () => {
    const model = testModel();
    const never = cachedLlmCall('never', async (x: string) => model.complete(x), {
      cache: createCache(),
      ttl: 0,
    });
    await never('x');
    await never('x');
    const disabled = cachedLlmCall('off', async (x: string) => model.complete(x), {
      cache: createCache({ enabled: false }),
    });
    await disabled('y');
    await disabled('y');
    expect(model.prompts).toHaveLength(4);
    expect(await warm(never, [['x']])).toMatchObject({ skipped: [['x']] });
    expect(await warm(disabled, [['y']])).toMatchObject({ skipped: [['y']] });
  });

  it('uses the default cache configured from the environment at call time, not at definition', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'x-cache-decorators-env-'));
    try {
      setDefaultCache(undefined);
      const model = testModel();
      const ask = cachedLlmCall('env_ask', async (x: string) => model.complete(x));
      const file = join(dir, 'from-env.db');
      vi.stubEnv('LLM_CACHE_URL', `sqlite://${file}`);
      await ask('x');
      await ask('x');
      expect(model.prompts).toHaveLength(1);
      expect(existsSync(file)).toBe(true);
      expect(await getDefaultCache().stats()).toMatchObject({ hits: 1, sets: 1 });
      await getDefaultCache().close();
    } finally {
      vi.unstubAllEnvs();
      setDefaultCache(undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
