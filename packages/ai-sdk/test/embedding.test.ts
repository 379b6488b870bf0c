import type { EmbeddingModelV4CallOptions } from '@ai-sdk/provider';
import { createCache, memoryBackend } from '@x/cache-core';
import { defaultEmbeddingSettingsMiddleware, embed, embedMany, wrapEmbeddingModel } from 'ai';
import { MockEmbeddingModelV4 } from 'ai/test';
import { describe, expect, it } from 'vitest';
import type { EmbeddingCacheMiddlewareOptions } from '../src/index.ts';
import { embeddingCacheMiddleware } from '../src/index.ts';
import { until } from './helpers.ts';

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
    expect((await embed({ model, value: 'v' })).embedding).toEqual(vector);
    expect((await embed({ model, value: 'v' })).embedding).toEqual(vector);
  });

  it('returns on a miss the float32 numbers a later hit returns, to every caller', async () => {
    const raw = [0.1, 0.2, 1 / 3];
    const rounded = raw.map((value) => Math.fround(value));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const inner = new MockEmbeddingModelV4({
      maxEmbeddingsPerCall: 100,
      doEmbed: async (call) => {
        await gate;
        return { embeddings: call.values.map(() => [...raw]), warnings: [] };
      },
    });
    const { model } = setup({}, inner);
    const settled = () => new Promise<void>((resolve) => setImmediate(resolve));
    const leader = embed({ model, value: 'v' });
    await settled();
    // Waits on the leader's request for 'v' and sends 'w' itself.
    const waiter = embedMany({ model, values: ['v', 'w'] });
    await settled();
    release();
    const [miss, joined] = await Promise.all([leader, waiter]);
    expect(joined.providerMetadata?.xCache).toEqual({ hits: 0, misses: 2, coalesced: 1 });

    const hit = await embedMany({ model, values: ['v', 'w'] });
    expect(hit.providerMetadata?.xCache).toEqual({ hits: 2, misses: 0 });
    expect(hit.embeddings).toEqual([rounded, rounded]);
    expect(miss.embedding).toEqual(rounded);
    expect(joined.embeddings).toEqual([rounded, rounded]);
    // A call that neither reads nor stores gets the same numbers as everyone else.
    const uncached = await embed({
      model,
      value: 'v',
      providerOptions: { xCache: { noCache: true, noStore: true } },
    });
    expect(uncached.embedding).toEqual(rounded);
    expect(inner.doEmbedCalls).toHaveLength(3);
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

  describe('concurrent calls', () => {
    /** Lets a call started just before reach the point where it waits (a memory-cache read is microtasks). */
    const settled = () => new Promise<void>((resolve) => setImmediate(resolve));

    /** A model whose calls wait until released; `started` resolves when a call reaches it. */
    function gated(fail?: (call: EmbeddingModelV4CallOptions) => unknown, vector = vectorOf) {
      const gates: (() => void)[] = [];
      let started: () => void = () => {};
      const inner = new MockEmbeddingModelV4({
        maxEmbeddingsPerCall: 100,
        doEmbed: async (call) => {
          await new Promise<void>((resolve, reject) => {
            gates.push(resolve);
            call.abortSignal?.addEventListener('abort', () => reject(call.abortSignal!.reason), {
              once: true,
            });
            started();
          });
          const error = fail?.(call);
          if (error) throw error;
          return {
            embeddings: call.values.map(vector),
            usage: { tokens: call.values.reduce((sum, value) => sum + value.length, 0) },
            warnings: [],
          };
        },
      });
      const nextStart = () =>
        new Promise<void>((resolve) => {
          started = resolve;
        });
      return { inner, gates, nextStart };
    }

    it('waits for a value another call already sent upstream instead of sending it again', async () => {
      const { inner, gates, nextStart } = gated();
      const { cache, model } = setup({}, inner);
      let started = nextStart();
      const first = embedMany({ model, values: ['alpha', 'beta'] });
      await started;
      started = nextStart();
      const second = embedMany({ model, values: ['beta', 'gamma', 'alpha'] });
      await started;
      // The second call sent only the value nobody had asked for.
      expect(inner.doEmbedCalls.map((call) => call.values)).toEqual([['alpha', 'beta'], ['gamma']]);
      for (const release of gates) release();
      const [a, b] = await Promise.all([first, second]);
      expect(a.embeddings).toEqual(['alpha', 'beta'].map(vectorOf));
      expect(b.embeddings).toEqual(['beta', 'gamma', 'alpha'].map(vectorOf));
      expect(b.usage.tokens).toBe(5);
      expect(b.providerMetadata?.xCache).toEqual({ hits: 0, misses: 3, coalesced: 2 });
      // Each caller owns its arrays.
      b.embeddings[0]![0] = 99;
      expect(a.embeddings[1]).toEqual(vectorOf('beta'));
      const stats = await cache.tier('embeddings').stats();
      expect(stats).toMatchObject({ coalesced: 2, inputTokensSaved: 9, sets: 3 });
      await embedMany({ model, values: ['alpha', 'beta', 'gamma'] });
      expect(inner.doEmbedCalls).toHaveLength(2);
    });

    it('asks itself when the call it waited on was aborted by its own caller', async () => {
      const { inner, gates, nextStart } = gated();
      const { model } = setup({}, inner);
      const controller = new AbortController();
      let started = nextStart();
      const first = embed({ model, value: 'alpha', abortSignal: controller.signal, maxRetries: 0 });
      await started;
      const second = embed({ model, value: 'alpha', maxRetries: 0 });
      await settled();
      expect(inner.doEmbedCalls).toHaveLength(1);
      started = nextStart();
      controller.abort(new Error('user left'));
      await expect(first).rejects.toThrow('user left');
      await started;
      expect(inner.doEmbedCalls).toHaveLength(2);
      gates[1]!();
      expect((await second).embedding).toEqual(vectorOf('alpha'));
    });

    it('shares a provider failure with the calls that waited on it', async () => {
      const { inner, gates, nextStart } = gated(() => new Error('rate limited'));
      const { model } = setup({}, inner);
      const started = nextStart();
      const first = embed({ model, value: 'alpha', maxRetries: 0 });
      await started;
      const second = embed({ model, value: 'alpha', maxRetries: 0 });
      await settled();
      gates[0]!();
      await expect(first).rejects.toThrow('rate limited');
      await expect(second).rejects.toThrow('rate limited');
      expect(inner.doEmbedCalls).toHaveLength(1);
    });

    it('fails, never strands, a call waiting on a value the provider answered with a malformed vector', async () => {
      // The provider answers two values with one vector and a null: the first value's vector is fine.
      const malformed = (value: string) => (value === 'bad' ? null : vectorOf(value)) as number[];
      const { inner, gates, nextStart } = gated(undefined, malformed);
      const { model } = setup({}, inner);
      const started = nextStart();
      const first = embedMany({ model, values: ['good', 'bad'], maxRetries: 0 });
      await started;
      const waiting = embed({ model, value: 'bad', maxRetries: 0 });
      let outcome: unknown;
      waiting.then(
        () => (outcome = 'resolved'),
        (error: unknown) => (outcome = error),
      );
      await settled();
      gates[0]!();
      await expect(first).rejects.toThrow(/malformed vector at index 1 \(null\)/);
      await until(() => outcome !== undefined, 'the waiting call to settle');
      expect(String(outcome)).toMatch(/malformed vector/);
      expect(inner.doEmbedCalls).toHaveLength(1);
    });

    it('a waiting call can be aborted on its own, and noCache calls never wait on others', async () => {
      const { inner, gates, nextStart } = gated();
      const { model } = setup({}, inner);
      let started = nextStart();
      const first = embed({ model, value: 'alpha', maxRetries: 0 });
      await started;
      const controller = new AbortController();
      const waiting = embed({ model, value: 'alpha', abortSignal: controller.signal, maxRetries: 0 });
      await settled();
      expect(inner.doEmbedCalls).toHaveLength(1);
      controller.abort(new Error('gave up'));
      await expect(waiting).rejects.toThrow('gave up');
      started = nextStart();
      const fresh = embed({ model, value: 'alpha', providerOptions: { xCache: { noCache: true } } });
      await started;
      expect(inner.doEmbedCalls).toHaveLength(2);
      // A noStore call may wait on a call that stores; nobody waits on one that does not.
      const unstored = embed({ model, value: 'alpha', providerOptions: { xCache: { noStore: true } } });
      await settled();
      expect(inner.doEmbedCalls).toHaveLength(2);
      for (const release of gates) release();
      expect((await first).embedding).toEqual(vectorOf('alpha'));
      expect((await fresh).embedding).toEqual(vectorOf('alpha'));
      expect((await unstored).providerMetadata?.xCache).toEqual({ hits: 0, misses: 1, coalesced: 1 });
      started = nextStart();
      const leader = embed({ model, value: 'beta', providerOptions: { xCache: { noStore: true } } });
      await started;
      const follower = embed({ model, value: 'beta' });
      await settled();
      expect(inner.doEmbedCalls).toHaveLength(4);
      for (const release of gates) release();
      await Promise.all([leader, follower]);
    });
  });

  it('float64 never serves vectors stored as float32 (the numbers would be rounded)', async () => {
    const cache = createCache();
    const vector = [0.1, 0.2, 1 / 3];
    const inner = embedder({}, () => vector);
    const wrap = (vectorType: 'float32' | 'float64') =>
      wrapEmbeddingModel({ model: inner, middleware: embeddingCacheMiddleware({ cache, vectorType }) });
    await embed({ model: wrap('float32'), value: 'v' });
    expect((await embed({ model: wrap('float64'), value: 'v' })).embedding).toEqual(vector);
    expect(inner.doEmbedCalls).toHaveLength(2);
    expect((await embed({ model: wrap('float64'), value: 'v' })).embedding).toEqual(vector);
    expect(inner.doEmbedCalls).toHaveLength(2);
  });

  it('an aborted call gets its abort, not a hit, and sends nothing upstream', async () => {
    const { inner, model } = setup();
    await embedMany({ model, values: ['alpha', 'beta'] });
    const reason = new Error('user left');
    const aborted = () => AbortSignal.abort(reason);
    await expect(embed({ model, value: 'alpha', abortSignal: aborted(), maxRetries: 0 })).rejects.toBe(
      reason,
    );
    await expect(
      embedMany({ model, values: ['alpha', 'beta'], abortSignal: aborted(), maxRetries: 0 }),
    ).rejects.toBe(reason);
    await expect(embed({ model, value: 'gamma', abortSignal: aborted(), maxRetries: 0 })).rejects.toBe(
      reason,
    );
    // A call that skips the read is refused too, before it reaches the provider.
    const noCache = { xCache: { noCache: true } };
    await expect(
      embed({ model, value: 'alpha', abortSignal: aborted(), maxRetries: 0, providerOptions: noCache }),
    ).rejects.toBe(reason);
    expect(inner.doEmbedCalls).toHaveLength(1);
  });

  it('a pending cache read rejects as soon as its call is aborted', async () => {
    // A memory store read asynchronously (as SQLite or Redis are), whose reads wait on `slow`.
    const memory = memoryBackend();
    let slow: Promise<void> | undefined;
    const store = new Proxy(memory, {
      get(target, property) {
        if (property === 'getSync') return undefined;
        if (property === 'getMany') {
          return async (keys: string[]) => {
            await slow;
            return target.getMany(keys);
          };
        }
        const value = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const cache = createCache({ store, memory: false });
    const inner = embedder();
    const model = wrapEmbeddingModel({ model: inner, middleware: embeddingCacheMiddleware({ cache }) });
    await embed({ model, value: 'alpha' });
    slow = new Promise<void>(() => {});
    const controller = new AbortController();
    let outcome: unknown;
    embed({ model, value: 'alpha', abortSignal: controller.signal, maxRetries: 0 }).then(
      () => (outcome = 'resolved'),
      (error: unknown) => (outcome = error),
    );
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(outcome).toBeUndefined();
    const reason = new Error('gave up');
    controller.abort(reason);
    await until(() => outcome !== undefined, 'the aborted call to settle');
    expect(outcome).toBe(reason);
    expect(inner.doEmbedCalls).toHaveLength(1);
  });

  it('refuses a vector with NaN or Infinity and stores none of the answer', async () => {
    const poisoned = (value: string) => (value === 'bad' ? [0.5, Number.NaN] : vectorOf(value));
    const { inner, model } = setup({}, embedder({}, poisoned));
    await expect(embedMany({ model, values: ['good', 'bad'], maxRetries: 0 })).rejects.toThrow(
      /malformed vector at index 1 \(an item that is NaN\) — this is a provider bug/,
    );
    const infinite = setup(
      {},
      embedder({}, () => [Number.POSITIVE_INFINITY]),
    );
    await expect(embed({ model: infinite.model, value: 'x', maxRetries: 0 })).rejects.toThrow(
      /an item that is Infinity/,
    );
    // Nothing of the refused answer was stored: 'good' goes upstream again.
    await expect(embedMany({ model, values: ['good'], maxRetries: 0 })).resolves.toMatchObject({
      providerMetadata: { xCache: { hits: 0, misses: 1 } },
    });
    expect(inner.doEmbedCalls).toHaveLength(2);
  });

  it('a chunked embedMany sends each chunk upstream on its own; xCache is the last chunk, stats the totals', async () => {
    const cache = createCache();
    const inner = new MockEmbeddingModelV4({
      maxEmbeddingsPerCall: 2,
      doEmbed: async (call) => ({ embeddings: call.values.map(vectorOf), warnings: [] }),
    });
    const model = wrapEmbeddingModel({ model: inner, middleware: embeddingCacheMiddleware({ cache }) });
    await embedMany({ model, values: ['a', 'c'] });
    // Chunks ['a', 'b'] (1 hit, 1 miss) and ['c', 'd'] (1 hit, 1 miss) … then ['e'] (1 miss).
    const result = await embedMany({ model, values: ['a', 'b', 'c', 'd', 'e'] });
    expect(result.embeddings).toEqual(['a', 'b', 'c', 'd', 'e'].map(vectorOf));
    expect(inner.doEmbedCalls.slice(1).map((call) => call.values)).toEqual([['b'], ['d'], ['e']]);
    expect(result.providerMetadata?.xCache).toEqual({ hits: 0, misses: 1 });
    expect(await cache.tier('embeddings').stats()).toMatchObject({ hits: 2, misses: 5 });
  });

  it('keys on the settings of a settings middleware listed before it, not after it', async () => {
    // The vector has as many dimensions as the provider option asks for (as OpenAI's `dimensions`).
    const dimensionsOf = (call: EmbeddingModelV4CallOptions) =>
      (call.providerOptions?.mock as { dimensions?: number } | undefined)?.dimensions ?? 1;
    const inner = embedder({}, (value, call) => new Array(dimensionsOf(call)).fill(value.length));
    const wrap = (cache: ReturnType<typeof createCache>, dimensions: number, cacheFirst: boolean) => {
      const defaults = defaultEmbeddingSettingsMiddleware({
        settings: { providerOptions: { mock: { dimensions } } },
      });
      const cached = embeddingCacheMiddleware({ cache });
      return wrapEmbeddingModel({
        model: inner,
        middleware: cacheFirst ? [cached, defaults] : [defaults, cached],
      });
    };
    // Listed before the cache: the defaults are in the key, a change of them is a miss.
    const right = createCache();
    expect((await embed({ model: wrap(right, 3, false), value: 'v' })).embedding).toHaveLength(3);
    expect((await embed({ model: wrap(right, 5, false), value: 'v' })).embedding).toHaveLength(5);
    expect((await embed({ model: wrap(right, 3, false), value: 'v' })).embedding).toHaveLength(3);
    expect(inner.doEmbedCalls.map(dimensionsOf)).toEqual([3, 5]);
    // Listed after it: the cache never sees them, and serves the 3-dimension vector for 5.
    const wrong = createCache();
    await embed({ model: wrap(wrong, 3, true), value: 'v' });
    expect((await embed({ model: wrap(wrong, 5, true), value: 'v' })).embedding).toHaveLength(3);
    expect(inner.doEmbedCalls).toHaveLength(3);
  });
});
