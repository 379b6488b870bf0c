import type { EmbeddingModelV4CallOptions } from '@ai-sdk/provider';
import { createCache } from '@x/cache-core';
import { embed, embedMany, wrapEmbeddingModel } from 'ai';
import { MockEmbeddingModelV4 } from 'ai/test';
import { describe, expect, it } from 'vitest';
import type { EmbeddingCacheMiddlewareOptions } from '../src/index.ts';
import { embeddingCacheMiddleware } from '../src/index.ts';

/** A vector per text whose numbers are exact in float32, so equality checks stay simple. */
const vectorOf = (value: string): number[] => [value.length / 8, value.charCodeAt(0) / 256, -0.25];

function embedder(
  ids: { provider?: string; modelId?: string } = {},
  vector: (value: string, call: EmbeddingModelV4CallOptions) => number[] = vectorOf,
) {
  return new MockEmbeddingModelV4({
    ...ids,
    maxEmbeddingsPerCall: 100,
    doEmbed: async (call) => ({
      embeddings: call.values.map((value) => vector(value, call)),
      usage: { tokens: call.values.reduce((sum, value) => sum + value.length, 0) },
      warnings: [],
    }),
  });
}

function setup(options: EmbeddingCacheMiddlewareOptions = {}, inner = embedder()) {
  const cache = createCache();
  const model = wrapEmbeddingModel({
    model: inner,
    middleware: embeddingCacheMiddleware({ cache, ...options }),
  });
  return { cache, inner, model };
}

describe('embeddingCacheMiddleware', () => {
  it('serves a repeated embed from the cache', async () => {
    const { cache, inner, model } = setup();
    const first = await embed({ model, value: 'sunny day' });
    const second = await embed({ model, value: 'sunny day' });
    expect(inner.doEmbedCalls).toHaveLength(1);
    expect(second.embedding).toEqual(vectorOf('sunny day'));
    expect(Array.isArray(second.embedding)).toBe(true);
    expect(first.usage.tokens).toBe(9);
    expect(second.usage.tokens).toBe(0);
    expect(first.providerMetadata?.xCache).toEqual({ hits: 0, misses: 1 });
    expect(second.providerMetadata?.xCache).toEqual({ hits: 1, misses: 0 });
    const stats = await cache.tier('embeddings').stats();
    expect(stats).toMatchObject({ hits: 1, misses: 1, sets: 1, inputTokensSaved: 9 });
  });

  it('sends only the misses of an embedMany upstream, in one call, and keeps the order', async () => {
    const { inner, model } = setup();
    await embedMany({ model, values: ['alpha', 'beta'] });
    const mixed = await embedMany({ model, values: ['gamma', 'alpha', 'delta', 'beta'] });
    expect(inner.doEmbedCalls.map((call) => call.values)).toEqual([
      ['alpha', 'beta'],
      ['gamma', 'delta'],
    ]);
    expect(mixed.embeddings).toEqual(['gamma', 'alpha', 'delta', 'beta'].map(vectorOf));
    expect(mixed.usage.tokens).toBe(10);
    expect(mixed.providerMetadata?.xCache).toEqual({ hits: 2, misses: 2 });

    const all = await embedMany({ model, values: ['delta', 'gamma', 'beta', 'alpha'] });
    expect(all.embeddings).toEqual(['delta', 'gamma', 'beta', 'alpha'].map(vectorOf));
    expect(inner.doEmbedCalls).toHaveLength(2);
  });

  it('sends a value repeated in one batch upstream once', async () => {
    const { inner, model } = setup();
    const result = await embedMany({ model, values: ['x', 'y', 'x'] });
    expect(inner.doEmbedCalls[0]!.values).toEqual(['x', 'y']);
    expect(result.embeddings).toEqual(['x', 'y', 'x'].map(vectorOf));
  });

  it('keys on the model, the dimensions and provider options', async () => {
    const cache = createCache();
    const middleware = embeddingCacheMiddleware({ cache });
    const small = embedder({ modelId: 'small' }, () => [1]);
    const large = embedder({ modelId: 'large' }, () => [2]);
    const smallModel = wrapEmbeddingModel({ model: small, middleware });
    const largeModel = wrapEmbeddingModel({ model: large, middleware });
    expect((await embed({ model: smallModel, value: 'v' })).embedding).toEqual([1]);
    expect((await embed({ model: largeModel, value: 'v' })).embedding).toEqual([2]);
    await embed({ model: smallModel, value: 'v', dimensions: 256 });
    await embed({ model: smallModel, value: 'v', providerOptions: { openai: { user: 'u' } } });
    await embed({ model: smallModel, value: 'v' });
    expect(small.doEmbedCalls).toHaveLength(3);
    expect(large.doEmbedCalls).toHaveLength(1);
  });

  it('passes through a model whose provider options are per value (a transformer slices them)', async () => {
    const TRANSFORMER = Symbol.for('vercel.ai.embeddingModel.providerOptionsTransformer');
    const inner = new MockEmbeddingModelV4({
      maxEmbeddingsPerCall: 100,
      doEmbed: async (call) => ({
        // Each vector depends on the value and on the title given for its position.
        embeddings: call.values.map((value, i) => [
          value.length,
          ((call.providerOptions?.mock as { titles?: string[] } | undefined)?.titles?.[i] ?? '').length,
        ]),
        usage: { tokens: 1 },
        warnings: [],
      }),
    });
    Object.assign(inner, {
      [TRANSFORMER]: ({ providerOptions, startIndex, endIndex }: any) =>
        providerOptions?.mock
          ? { mock: { titles: providerOptions.mock.titles.slice(startIndex, endIndex) } }
          : providerOptions,
    });
    const model = wrapEmbeddingModel({
      model: inner,
      middleware: embeddingCacheMiddleware({ cache: createCache() }),
    });
    const providerOptions = { mock: { titles: ['A', 'BBBB'] } };
    await embedMany({ model, values: ['m', 'n'], providerOptions });
    const swapped = await embedMany({ model, values: ['n', 'm'], providerOptions });
    expect(swapped.embeddings).toEqual([
      [1, 1],
      [1, 4],
    ]);
    // Without per-value options the same model is cached as usual.
    await embedMany({ model, values: ['m', 'n'] });
    const calls = inner.doEmbedCalls.length;
    await embedMany({ model, values: ['n', 'm'] });
    expect(inner.doEmbedCalls).toHaveLength(calls);
  });

  it('stores vectors as float32 bytes, not JSON number arrays', async () => {
    const dims = 1536;
    const vector = Array.from({ length: dims }, (_, index) => Math.sin(index * 12.9898) * 0.731);
    const { cache, model } = setup(
      {},
      embedder({}, () => vector),
    );
    const sizes: number[] = [];
    cache.on('set', (event) => sizes.push(event.bytes));
    await embed({ model, value: 'long document' });
    const hit = await embed({ model, value: 'long document' });
    // 4 bytes per dimension plus the entry header; a JSON array of these doubles takes ~19 bytes each.
    expect(sizes[0]).toBeLessThan(dims * 4 + 512);
    expect(hit.embedding).toEqual(vector.map((value) => Math.fround(value)));
  });

  it("keeps every number exactly with vectorType: 'float64'", async () => {
    const vector = [0.1, 0.2, 1 / 3];
    const { model } = setup(
      { vectorType: 'float64' },
      embedder({}, () => vector),
    );
    await embed({ model, value: 'v' });
    expect((await embed({ model, value: 'v' })).embedding).toEqual(vector);
  });

  it('honours per-call providerOptions and strips them before the model sees the call', async () => {
    const { inner, model } = setup();
    const values = ['a', 'b'];
    await embedMany({ model, values, providerOptions: { xCache: { noStore: true }, openai: { user: 'u' } } });
    expect(inner.doEmbedCalls[0]!.providerOptions).toEqual({ openai: { user: 'u' } });
    await embedMany({ model, values: ['a'] });
    expect(inner.doEmbedCalls).toHaveLength(2);
    await embedMany({ model, values: ['a'], providerOptions: { xCache: { noCache: true } } });
    expect(inner.doEmbedCalls).toHaveLength(3);
    await embedMany({ model, values: ['a'], providerOptions: { xCache: { namespace: 'tenant-b' } } });
    expect(inner.doEmbedCalls).toHaveLength(4);
    await embedMany({ model, values: ['a'] });
    expect(inner.doEmbedCalls).toHaveLength(4);
    expect(inner.doEmbedCalls[3]!.providerOptions).toBeUndefined();
  });

  it('ttl and tags apply to stored vectors', async () => {
    let now = 5_000_000;
    const cache = createCache({ clock: { now: () => now } });
    const inner = embedder();
    const model = wrapEmbeddingModel({
      model: inner,
      middleware: embeddingCacheMiddleware({ cache, ttl: '1h', tags: ['corpus-1'] }),
    });
    await embedMany({ model, values: ['a', 'b'] });
    await embedMany({ model, values: ['c'], providerOptions: { xCache: { ttl: '1d' } } });
    now += 2 * 3_600_000;
    await embedMany({ model, values: ['a', 'b', 'c'] });
    expect(inner.doEmbedCalls.at(-1)!.values).toEqual(['a', 'b']);
    expect(await cache.tier('embeddings').invalidateTags(['corpus-1'])).toBe(3);
    await embedMany({ model, values: ['c'] });
    expect(inner.doEmbedCalls.at(-1)!.values).toEqual(['c']);
  });
});
