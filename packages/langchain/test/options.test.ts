import { tool } from '@langchain/core/tools';
import { SyntheticEmbeddings } from '@langchain/core/utils/testing';
import { CacheError, createToolLedger } from '@x/cache-core';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { SharedCacheOptions } from '../src/index.ts';
import { CachedEmbeddings, cachedTool, LangChainCache, withCache } from '../src/index.ts';
import { cleanupAfterEach, ScriptedChatModel } from './helpers.ts';

const { memoryCache } = cleanupAfterEach();

const echo = tool(async ({ text }: { text: string }) => text, {
  name: 'echo',
  description: 'Echo the text',
  schema: z.object({ text: z.string() }),
});

/** The error a constructor throws, checked to be a CacheError of the package's form. */
function invalidOption(create: () => unknown): CacheError {
  let error: unknown;
  try {
    create();
  } catch (caught) {
    error = caught;
  }
  expect(CacheError.isInstance(error), String(error)).toBe(true);
  expect((error as CacheError).code).toBe('E_INVALID_OPTION');
  expect((error as Error).message).toMatch(/^\[@x\/langchain-cache\] .+ — .+/);
  return error as CacheError;
}

describe('option types', () => {
  it('refuses tags given as a string, in every adapter, showing the list to pass', () => {
    const cache = memoryCache();
    const ledger = createToolLedger({ cache, tools: { echo: { kind: 'read' } } });
    const errors = [
      invalidOption(() => new LangChainCache({ cache, tags: 'geo' as never })),
      invalidOption(() => withCache(new ScriptedChatModel(), { cache, tags: 'geo' as never })),
      invalidOption(() => new CachedEmbeddings(new SyntheticEmbeddings(), { cache, tags: 'geo' as never })),
    ];
    for (const error of errors) expect(error.message).toContain('tags: ["geo"]');
    // cachedTool takes no tags: an option it does not know is refused too.
    invalidOption(() => cachedTool(echo, { ledger, tags: ['geo'] } as never));
  });

  it('refuses a secretKeys that is not an array with a CacheError, not a TypeError', () => {
    const cache = memoryCache();
    for (const secretKeys of ['tenant_pin', 42, { tenant_pin: true }]) {
      invalidOption(() => new LangChainCache({ cache, secretKeys: secretKeys as never }));
      invalidOption(() => withCache(new ScriptedChatModel(), { cache, secretKeys: secretKeys as never }));
      invalidOption(
        () => new CachedEmbeddings(new SyntheticEmbeddings(), { cache, secretKeys: secretKeys as never }),
      );
    }
  });

  it.each([
    ['cache', {}],
    ['cache', 'memory'],
    ['tier', 42],
    ['namespace', 42],
    ['ttl', true],
    ['onError', 'console.warn'],
    ['name', 42],
  ])('refuses %s = %j in withCache, LangChainCache and CachedEmbeddings', (option, value) => {
    const options = { cache: memoryCache(), [option]: value } as never;
    for (const create of [
      () => withCache(new ScriptedChatModel(), options),
      () => new LangChainCache(options),
      () => new CachedEmbeddings(new SyntheticEmbeddings(), options),
    ]) {
      expect(invalidOption(create).message).toContain(`${option} must be`);
    }
  });

  it('refuses the options only one adapter takes, when mistyped', () => {
    const cache = memoryCache();
    const ledger = createToolLedger({ cache, tools: { echo: { kind: 'read' } } });
    invalidOption(() => withCache(new ScriptedChatModel(), { cache, streams: 'no' as never }));
    invalidOption(() => withCache(new ScriptedChatModel(), { cache, shouldCache: true as never }));
    invalidOption(() => new LangChainCache({ cache, shouldCache: 'default' as never }));
    const embeddings = new SyntheticEmbeddings();
    invalidOption(() => new CachedEmbeddings(embeddings, { cache, precision: 'float16' as never }));
    invalidOption(() => new CachedEmbeddings(embeddings, { cache, model: 3 as never }));
    invalidOption(() => new CachedEmbeddings(embeddings, { cache, usage: 'exact' as never }));
    invalidOption(() => cachedTool(echo, { ledger, force: 'yes' as never }));
    invalidOption(() => cachedTool(echo, { ledger, name: 42 as never }));
    invalidOption(() => cachedTool(echo, { policy: { kind: 'read' }, cache: 'memory' as never }));
  });

  it('refuses a cache passed where the options go, naming the fix', () => {
    const cache = memoryCache();
    const error = invalidOption(() => withCache(new ScriptedChatModel(), cache as never));
    expect(error.message).toContain('pass it as { cache }');
    invalidOption(() => new LangChainCache('memory' as never));
  });

  it('treats an option set to null as not given, in every adapter', async () => {
    const cache = memoryCache();
    const unset = {
      tier: null,
      namespace: null,
      ttl: null,
      tags: null,
      secretKeys: null,
      onError: null,
      name: null,
    } as unknown as SharedCacheOptions;

    const inner = new ScriptedChatModel();
    const model = withCache(inner, { cache, ...unset, streams: null, shouldCache: null } as never);
    await model.invoke('hi');
    await model.invoke('hi');
    expect(inner.log.generate).toBe(1);
    expect(model.view.namespace).toBe(cache.namespace);

    const classic = new ScriptedChatModel({
      cache: new LangChainCache({ cache, ...unset, shouldCache: null } as never),
    });
    await classic.invoke('hi');
    await classic.invoke('hi');
    expect(classic.log.generate).toBe(1);

    const embeddings = new CachedEmbeddings(new SyntheticEmbeddings({ vectorSize: 4 }), {
      cache,
      ...unset,
      model: null,
      precision: null,
      usage: null,
    } as never);
    expect(await embeddings.embedQuery('alpha')).toHaveLength(4);

    const ledger = createToolLedger({ cache, tools: { echo: { kind: 'write' } } });
    const nulls = { name: null, scope: null, idempotencyKey: null, force: null };
    const shared = cachedTool(echo, { ledger, policy: null, cache: null, ...nulls } as never);
    expect(await shared.invoke({ text: 'once' })).toBe('once');
    const own = cachedTool(echo, { ledger: null, policy: { kind: 'read' }, cache, ...nulls } as never);
    expect(await own.invoke({ text: 'twice' })).toBe('twice');
  });

  it('accepts well-typed options', () => {
    const cache = memoryCache();
    const options = {
      cache,
      tier: 'responses',
      namespace: 'tenant-a',
      ttl: '1h',
      tags: ['geo'],
      secretKeys: ['pin'],
    } satisfies SharedCacheOptions;
    expect(() =>
      withCache(new ScriptedChatModel(), { ...options, streams: false, shouldCache: () => true }),
    ).not.toThrow();
    expect(() => new LangChainCache({ ...options, onError: () => undefined })).not.toThrow();
    expect(
      () =>
        new CachedEmbeddings(new SyntheticEmbeddings(), {
          ...options,
          usage: 'estimate',
          precision: 'float64',
        }),
    ).not.toThrow();
  });
});
