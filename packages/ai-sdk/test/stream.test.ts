import { getEventListeners } from 'node:events';
import type {
  LanguageModelV4,
  LanguageModelV4CallOptions,
  LanguageModelV4StreamPart,
  LanguageModelV4StreamResult,
} from '@ai-sdk/provider';
import { CacheError, createCache } from '@x/cache-core';
import {
  extractJsonMiddleware,
  NoObjectGeneratedError,
  NoOutputGeneratedError,
  Output,
  simulateReadableStream,
  stepCountIs,
  streamObject,
  streamText,
  ToolChoiceViolationError,
  tool,
  wrapLanguageModel,
} from 'ai';
import { convertArrayToReadableStream, convertReadableStreamToArray, MockLanguageModelV4 } from 'ai/test';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import type { CacheMiddlewareOptions } from '../src/index.ts';
import { cacheMiddleware } from '../src/index.ts';
import { finish, ManualStream, streamModel, textParts, until, usage } from './helpers.ts';

const call: LanguageModelV4CallOptions = {
  prompt: [{ role: 'user', content: [{ type: 'text', text: 'go' }] }],
};

function setup(parts: Parameters<typeof streamModel>[0], options: CacheMiddlewareOptions = {}) {
  const cache = createCache();
  const inner = streamModel(parts, { modelId: 'gpt-4o-mini' });
  const model = wrapLanguageModel({ model: inner, middleware: cacheMiddleware({ cache, ...options }) });
  return { cache, inner, model };
}

/** A model whose stream calls are answered one by one by the test. */
function manualSetup(options: CacheMiddlewareOptions = {}) {
  const cache = createCache();
  const upstreams: ManualStream[] = [];
  const inner: MockLanguageModelV4 = new MockLanguageModelV4({
    modelId: 'gpt-4o-mini',
    doStream: async () => {
      const upstream = new ManualStream();
      upstreams.push(upstream);
      return { stream: upstream.stream };
    },
  });
  const model = wrapLanguageModel({ model: inner, middleware: cacheMiddleware({ cache, ...options }) });
  return { cache, inner, model, upstreams };
}

const ticks = async (count = 20) => {
  for (let i = 0; i < count; i++) await new Promise((resolve) => setImmediate(resolve));
};

const everyPartType = (): LanguageModelV4StreamPart[] => [
  { type: 'stream-start', warnings: [{ type: 'unsupported', feature: 'topK' }] },
  {
    type: 'response-metadata',
    id: 'resp-1',
    modelId: 'gpt-4o-mini-2024',
    timestamp: new Date('2025-05-06T07:08:09.010Z'),
  },
  { type: 'reasoning-start', id: 'r1' },
  { type: 'reasoning-delta', id: 'r1', delta: 'Let me ' },
  { type: 'reasoning-delta', id: 'r1', delta: 'think.' },
  { type: 'reasoning-end', id: 'r1', providerMetadata: { mock: { signature: 'sig' } } },
  { type: 'text-start', id: 't1' },
  { type: 'text-delta', id: 't1', delta: 'Checking' },
  { type: 'text-delta', id: 't1', delta: ' the ' },
  { type: 'text-delta', id: 't1', delta: 'weather.' },
  { type: 'text-end', id: 't1' },
  { type: 'tool-input-start', id: 'call-1', toolName: 'lookup' },
  { type: 'tool-input-delta', id: 'call-1', delta: '{"city":' },
  { type: 'tool-input-delta', id: 'call-1', delta: '"Paris"}' },
  { type: 'tool-input-end', id: 'call-1' },
  { type: 'tool-call', toolCallId: 'call-1', toolName: 'lookup', input: '{"city":"Paris"}' },
  {
    type: 'file',
    mediaType: 'image/png',
    data: { type: 'data', data: new Uint8Array([137, 80, 78, 71, 9]) },
  },
  { type: 'source', sourceType: 'url', id: 's1', url: 'https://example.com/a', title: 'A' },
  { type: 'source', sourceType: 'document', id: 's2', mediaType: 'application/pdf', title: 'Doc' },
  {
    type: 'finish',
    finishReason: finish('tool-calls'),
    usage: usage(12, 34),
    providerMetadata: { mock: { requestId: 'r-9' } },
  },
];

afterEach(() => {
  vi.useRealTimers();
});

describe('cacheMiddleware — stream', () => {
  it('delivers a miss live, part by part, while recording it', { timeout: 5_000 }, async () => {
    const { inner, model, upstreams } = manualSetup();
    const first = streamText({ model, prompt: 'hi' });
    const reader = first.textStream[Symbol.asyncIterator]();
    const next = reader.next();
    await until(() => upstreams.length === 1, 'the upstream call');
    upstreams[0]!.push(...textParts([]).slice(0, 3), { type: 'text-delta', id: 't1', delta: 'Hel' });
    // The first delta reaches the caller while the upstream stream is still open.
    expect((await next).value).toBe('Hel');
    upstreams[0]!.push(...textParts(['lo']).slice(3));
    upstreams[0]!.close();
    expect((await reader.next()).value).toBe('lo');
    expect(await first.text).toBe('Hello');

    const second = streamText({ model, prompt: 'hi' });
    expect(await second.text).toBe('Hello');
    expect((await second.providerMetadata)?.xCache).toMatchObject({ hit: true, level: 'memory' });
    expect(inner.doStreamCalls).toHaveLength(1);
  });

  it('replays every part type in order with the original chunk boundaries', async () => {
    const { inner, model } = setup(() => everyPartType());
    const miss = (await model.doStream(call)) as LanguageModelV4StreamResult;
    const missParts = await convertReadableStreamToArray(miss.stream);
    await ticks(); // let the recording be stored, so the next call is a cache hit and not a join
    const hit = await model.doStream(call);
    const hitParts = await convertReadableStreamToArray(hit.stream);
    expect(inner.doStreamCalls).toHaveLength(1);

    const upstream = everyPartType();
    expect(missParts.slice(0, -1)).toEqual(upstream.slice(0, -1));
    expect(hitParts.slice(0, -1)).toEqual(upstream.slice(0, -1));
    expect(hitParts.map((part) => part.type)).toEqual(upstream.map((part) => part.type));
    const timestamp = hitParts.find((part) => part.type === 'response-metadata');
    expect(timestamp).toMatchObject({ timestamp: new Date('2025-05-06T07:08:09.010Z') });
    expect((timestamp as { timestamp: unknown }).timestamp).toBeInstanceOf(Date);
    expect(hit.response).toEqual(miss.response);

    const missFinish = missParts.at(-1)!;
    const hitFinish = hitParts.at(-1)!;
    expect(missFinish).toMatchObject({
      type: 'finish',
      finishReason: finish('tool-calls'),
      usage: usage(12, 34),
    });
    expect(missFinish.type === 'finish' && missFinish.providerMetadata?.xCache?.hit).toBe(false);
    expect(hitFinish).toMatchObject({
      type: 'finish',
      finishReason: finish('tool-calls'),
      providerMetadata: {
        mock: { requestId: 'r-9' },
        xCache: { hit: true, savedUsage: { inputTokens: 12, outputTokens: 34 } },
      },
    });
    expect(hitFinish.type === 'finish' && hitFinish.usage.outputTokens.total).toBe(0);
  });

  it('gives streamText on a hit the same stream it gave on the miss', async () => {
    const { inner, model } = setup(() => everyPartType());
    const tools = { lookup: tool({ inputSchema: z.object({ city: z.string() }) }) };
    const normalize = (parts: unknown[]) =>
      JSON.parse(
        JSON.stringify(parts, (key, value) =>
          // Usage differs by design on a hit; `performance` holds wall-clock timings of each run.
          key === 'usage' || key === 'totalUsage' || key === 'xCache' || key === 'performance'
            ? undefined
            : value,
        ),
      );
    const first = streamText({ model, tools, prompt: 'weather' });
    const firstParts = await convertReadableStreamToArray(first.fullStream);
    const second = streamText({ model, tools, prompt: 'weather' });
    const secondParts = await convertReadableStreamToArray(second.fullStream);

    expect(inner.doStreamCalls).toHaveLength(1);
    expect(normalize(secondParts)).toEqual(normalize(firstParts));
    expect(await second.text).toBe('Checking the weather.');
    expect(await second.reasoningText).toBe('Let me think.');
    expect((await second.toolCalls)[0]).toMatchObject({ toolName: 'lookup', input: { city: 'Paris' } });
    expect((await second.files)[0]!.uint8Array).toEqual(new Uint8Array([137, 80, 78, 71, 9]));
    expect(await second.sources).toHaveLength(2);
    expect(await second.finishReason).toBe('tool-calls');
    expect(await second.warnings).toEqual([{ type: 'unsupported', feature: 'topK' }]);
    const response = await second.response;
    expect(response.timestamp).toBeInstanceOf(Date);
    expect(response.id).toBe('resp-1');
    expect((await second.usage).totalTokens).toBe(0);
    expect((await second.providerMetadata)?.mock).toEqual({ requestId: 'r-9' });
  });

  it('replays streamObject with the same partial objects', async () => {
    const { inner, model } = setup(() => textParts(['{"name":', '"Ada",', '"age":', '36}']));
    const schema = z.object({ name: z.string(), age: z.number() });
    const run = async () => {
      const result = streamObject({ model, schema, prompt: 'person' });
      const partials = await convertReadableStreamToArray(result.partialObjectStream);
      return { partials, object: await result.object };
    };
    const first = await run();
    const second = await run();
    expect(inner.doStreamCalls).toHaveLength(1);
    expect(second.object).toEqual({ name: 'Ada', age: 36 });
    expect(second.partials).toEqual(first.partials);
    expect(second.partials.length).toBeGreaterThan(2);
  });

  it('replays a multi-step streamText tool loop from the cache', async () => {
    const { inner, model } = setup((request) => {
      const last = request.prompt[request.prompt.length - 1]!;
      if (last.role === 'tool') return textParts(['Sunny ', 'in Paris.']);
      return [
        { type: 'stream-start', warnings: [] },
        { type: 'tool-call', toolCallId: 'call-3', toolName: 'weather', input: '{"city":"Paris"}' },
        { type: 'finish', finishReason: finish('tool-calls'), usage: usage(5, 5) },
      ];
    });
    const tools = {
      weather: tool({
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => ({ city, forecast: 'sunny' }),
      }),
    };
    const run = async () => {
      const result = streamText({ model, tools, stopWhen: stepCountIs(4), prompt: 'Weather?' });
      return { text: await result.text, steps: await result.steps };
    };
    const first = await run();
    expect(first.steps).toHaveLength(2);
    const second = await run();
    expect(second.text).toBe('Sunny in Paris.');
    expect(second.steps).toHaveLength(2);
    expect(inner.doStreamCalls).toHaveLength(2);
  });

  it('keys on includeRawChunks', async () => {
    const { inner, model } = setup(() => textParts(['x']));
    await streamText({ model, prompt: 'a' }).consumeStream();
    await streamText({ model, prompt: 'a', includeRawChunks: true }).consumeStream();
    await streamText({ model, prompt: 'a' }).consumeStream();
    expect(inner.doStreamCalls).toHaveLength(2);
  });

  describe('stores only streams that finished normally', () => {
    it('not a stream with an error part', async () => {
      const { inner, model } = setup(() => [
        ...textParts(['a']).slice(0, 4),
        { type: 'error', error: new Error('overloaded') },
        { type: 'finish', finishReason: finish('stop'), usage: usage(1, 1) },
      ]);
      await streamText({ model, prompt: 'a', onError: () => {} }).consumeStream();
      await streamText({ model, prompt: 'a', onError: () => {} }).consumeStream();
      expect(inner.doStreamCalls).toHaveLength(2);
    });

    it('not a stream that errored', async () => {
      const { inner, model, upstreams } = manualSetup();
      const first = streamText({ model, prompt: 'a', onError: () => {} });
      const done = first.consumeStream();
      await until(() => upstreams.length === 1);
      upstreams[0]!.push(...textParts(['a']).slice(0, 4));
      upstreams[0]!.error(new Error('connection reset'));
      await done;
      const second = streamText({ model, prompt: 'a' });
      const consumed = second.consumeStream();
      await until(() => upstreams.length === 2);
      upstreams[1]!.push(...textParts(['b']));
      upstreams[1]!.close();
      await consumed;
      expect(inner.doStreamCalls).toHaveLength(2);
    });

    it('not a stream without a finish part', async () => {
      const { inner, model } = setup(() => textParts(['a']).slice(0, -1));
      await streamText({ model, prompt: 'a' }).consumeStream();
      await streamText({ model, prompt: 'a' }).consumeStream();
      expect(inner.doStreamCalls).toHaveLength(2);
    });

    it('not an aborted stream, and the upstream call is cancelled', async () => {
      const { inner, model, upstreams } = manualSetup();
      const controller = new AbortController();
      const aborted = streamText({ model, prompt: 'a', abortSignal: controller.signal });
      const reader = aborted.textStream[Symbol.asyncIterator]();
      const firstDelta = reader.next();
      await until(() => upstreams.length === 1);
      upstreams[0]!.push(...textParts(['Hel', 'lo']).slice(0, 4));
      expect((await firstDelta).value).toBe('Hel');
      // Everything up to the finish part arrives, but the stream is aborted before it ends.
      upstreams[0]!.push(...textParts(['Hel', 'lo']).slice(4));
      await ticks();
      controller.abort();
      while (!(await reader.next()).done) {
        // drain what the SDK still emits after the abort
      }
      await until(() => upstreams[0]!.wasCancelled, 'the upstream cancel');
      expect(inner.doStreamCalls[0]!.abortSignal?.aborted).toBe(true);

      const again = streamText({ model, prompt: 'a' });
      const text = again.text;
      await until(() => upstreams.length === 2, 'a second upstream call');
      upstreams[1]!.push(...textParts(['fresh']));
      upstreams[1]!.close();
      expect(await text).toBe('fresh');
    });

    it('but a stream whose upstream had ended before its caller aborted', async () => {
      const { inner, model, upstreams } = manualSetup();
      const controller = new AbortController();
      const aborted = streamText({ model, prompt: 'a', abortSignal: controller.signal });
      const reader = aborted.textStream[Symbol.asyncIterator]();
      const firstDelta = reader.next();
      await until(() => upstreams.length === 1);
      upstreams[0]!.push(...textParts(['Hel', 'lo']).slice(0, 4));
      expect((await firstDelta).value).toBe('Hel');
      // The upstream ends (the middleware reads it on its own); the caller aborts after that.
      upstreams[0]!.push(...textParts(['Hel', 'lo']).slice(4));
      upstreams[0]!.close();
      await ticks();
      controller.abort();
      while (!(await reader.next()).done) {
        // drain what the SDK still emits after the abort
      }
      await ticks();
      const again = streamText({ model, prompt: 'a' });
      expect(await again.text).toBe('Hello');
      expect((await again.providerMetadata)?.xCache).toMatchObject({ hit: true });
      expect(inner.doStreamCalls).toHaveLength(1);
    });

    it('not a stream its consumer cancelled', async () => {
      const { inner, model, upstreams } = manualSetup();
      const first = await model.doStream(call);
      const reader = first.stream.getReader();
      await until(() => upstreams.length === 1);
      upstreams[0]!.push(...textParts(['a']));
      await ticks();
      await reader.read();
      // The consumer leaves before the stream ended, although every part was already sent.
      await reader.cancel('not interested');
      expect(upstreams[0]!.wasCancelled).toBe(true);

      const second = model.doStream(call);
      await until(() => upstreams.length === 2);
      upstreams[1]!.push(...textParts(['b']));
      upstreams[1]!.close();
      await convertReadableStreamToArray((await second).stream);
      expect(inner.doStreamCalls).toHaveLength(2);
    });

    it.each(['length', 'content-filter', 'error'] as const)(
      'not a stream that finished with %s',
      async (reason) => {
        const { inner, model } = setup(() => textParts(['partial'], { reason }));
        await streamText({ model, prompt: 'a' }).consumeStream();
        await streamText({ model, prompt: 'a' }).consumeStream();
        expect(inner.doStreamCalls).toHaveLength(2);
      },
    );

    it('not a streamObject answer that violates its schema', async () => {
      const { inner, model } = setup((_request, index) =>
        textParts(index === 0 ? ['{"a":', '"not a number"}'] : ['{"a":', '1}']),
      );
      const schema = z.object({ a: z.number() });
      const run = async () => {
        const result = streamObject({ model, schema, prompt: 'p', onError: () => {} });
        await convertReadableStreamToArray(result.fullStream);
        return { object: await result.object, marker: (await result.providerMetadata)?.xCache };
      };
      await expect(run()).rejects.toSatisfy(NoObjectGeneratedError.isInstance);
      expect(await run()).toMatchObject({ object: { a: 1 }, marker: { hit: false } });
      expect(await run()).toMatchObject({ object: { a: 1 }, marker: { hit: true } });
      expect(inner.doStreamCalls).toHaveLength(2);
    });

    it('not a streamText Output.object answer that violates its schema', async () => {
      const { inner, model } = setup((_request, index) => textParts([index === 0 ? '{"n":1.5}' : '{"n":2}']));
      const output = Output.object({ schema: z.object({ n: z.int() }) });
      const run = () => streamText({ model, output, prompt: 'p' }).output;
      await expect(run()).rejects.toSatisfy(NoObjectGeneratedError.isInstance);
      expect(await run()).toEqual({ n: 2 });
      expect(await run()).toEqual({ n: 2 });
      expect(inner.doStreamCalls).toHaveLength(2);
    });

    it('not a streamText answer that breaks its toolChoice (AI_ToolChoiceViolationError)', async () => {
      const toolCall = (toolName: string): LanguageModelV4StreamPart[] => [
        { type: 'stream-start', warnings: [] },
        { type: 'tool-call', toolCallId: 'c1', toolName, input: '{"city":"Paris"}' },
        { type: 'finish', finishReason: finish('tool-calls'), usage: usage(3, 4) },
      ];
      const tools = {
        weather: tool({ inputSchema: z.object({ city: z.string() }) }),
        time: tool({ inputSchema: z.object({}) }),
      };
      const run = async (
        model: LanguageModelV4,
        toolChoice: 'none' | { type: 'tool'; toolName: 'weather' },
      ): Promise<{ violated: boolean; marker: unknown }> => {
        const errors: unknown[] = [];
        const result = streamText({
          model,
          tools,
          toolChoice,
          prompt: 'Weather in Paris?',
          onError: ({ error }) => {
            errors.push(error);
          },
        });
        await result.consumeStream();
        const marker = (await result.steps)[0]?.providerMetadata?.xCache;
        return { violated: errors.some(ToolChoiceViolationError.isInstance), marker };
      };

      // A named tool that was not called: the SDK fails the stream; the retry reaches the model.
      const named = setup((_request, index) => toolCall(index === 0 ? 'time' : 'weather'));
      const weather = { type: 'tool', toolName: 'weather' } as const;
      expect((await run(named.model, weather)).violated).toBe(true);
      expect(await run(named.model, weather)).toMatchObject({ violated: false, marker: { hit: false } });
      expect(await run(named.model, weather)).toMatchObject({ violated: false, marker: { hit: true } });
      expect(named.inner.doStreamCalls).toHaveLength(2);

      // 'none' with a tool call in the answer.
      const none = setup(() => toolCall('weather'));
      expect((await run(none.model, 'none')).violated).toBe(true);
      expect((await run(none.model, 'none')).violated).toBe(true);
      expect(none.inner.doStreamCalls).toHaveLength(2);
    });

    it.each(['extract first', 'cache first'] as const)(
      'a streamObject answer in a markdown fence, with extractJsonMiddleware listed %s',
      async (order) => {
        const cache = createCache();
        const inner = streamModel(() => textParts(['```json\n{"city":', '"Paris"}\n', '```']));
        const caching = cacheMiddleware({ cache });
        const extract = extractJsonMiddleware();
        const model = wrapLanguageModel({
          model: inner,
          middleware: order === 'extract first' ? [extract, caching] : [caching, extract],
        });
        const schema = z.object({ city: z.string() });
        const run = async () => {
          const result = streamObject({ model, schema, prompt: 'A city' });
          await convertReadableStreamToArray(result.fullStream);
          return { object: await result.object, marker: (await result.providerMetadata)?.xCache };
        };
        expect(await run()).toMatchObject({ object: { city: 'Paris' }, marker: { hit: false } });
        const second = await run();
        expect(second.object).toEqual({ city: 'Paris' });
        if (order === 'cache first') {
          // Above the middleware the cache records the unwrapped deltas and replays them.
          expect(second.marker?.hit).toBe(true);
          expect(inner.doStreamCalls).toHaveLength(1);
          const stored = await cache.peek<{ parts: LanguageModelV4StreamPart[] }>({
            storageKey: second.marker?.key as string,
          });
          const text = stored?.parts.map((part) => (part.type === 'text-delta' ? part.delta : '')).join('');
          expect(text).toBe('{"city":"Paris"}');
        } else {
          // Below it the cache sees fenced text it cannot parse, so it stores nothing.
          expect(second.marker?.hit).toBe(false);
          expect(inner.doStreamCalls).toHaveLength(2);
        }
      },
    );

    it('unless shouldCache says so', async () => {
      const { inner, model } = setup(() => textParts(['partial'], { reason: 'length' }), {
        shouldCache: (candidate) => candidate.type === 'stream' && candidate.text === 'partial',
      });
      await streamText({ model, prompt: 'a' }).consumeStream();
      const again = streamText({ model, prompt: 'a' });
      expect(await again.text).toBe('partial');
      expect(inner.doStreamCalls).toHaveLength(1);
    });
  });

  it('makes no upstream call for a caller whose signal is already aborted (noCache too)', async () => {
    const { inner, model } = setup(() => textParts(['a']));
    const controller = new AbortController();
    controller.abort(new Error('gone'));
    for (const providerOptions of [undefined, { xCache: { noCache: true } }]) {
      await expect(
        model.doStream({ ...call, abortSignal: controller.signal, providerOptions }),
      ).rejects.toThrow('gone');
      await expect(
        model.doGenerate({ ...call, abortSignal: controller.signal, providerOptions }),
      ).rejects.toThrow('gone');
    }
    expect(inner.doStreamCalls).toHaveLength(0);
    expect(inner.doGenerateCalls).toHaveLength(0);
  });

  it("leaves no listener on the caller's signal once a replayed hit ends", async () => {
    const { inner, model } = setup(() => textParts(['a', 'b']));
    const shutdown = new AbortController();
    await streamText({ model, prompt: 'same', abortSignal: shutdown.signal }).text;
    const afterMiss = getEventListeners(shutdown.signal, 'abort').length;
    for (let i = 0; i < 5; i++) {
      expect(await streamText({ model, prompt: 'same', abortSignal: shutdown.signal }).text).toBe('ab');
    }
    expect(inner.doStreamCalls).toHaveLength(1);
    expect(getEventListeners(shutdown.signal, 'abort')).toHaveLength(afterMiss);
  });

  it('answers uncached, marked as such, when the request cannot be keyed', async () => {
    const { inner, model } = setup(() => textParts(['fresh']));
    const unkeyable = {
      ...call,
      tools: [{ type: 'provider', id: 'mock.search', name: 'search', args: { rank: () => 1 } }],
    } as LanguageModelV4CallOptions;
    for (let i = 0; i < 2; i++) {
      const parts = await convertReadableStreamToArray((await model.doStream(unkeyable)).stream);
      const last = parts.at(-1);
      expect(last?.type === 'finish' && last.providerMetadata?.xCache).toEqual({
        hit: false,
        cacheable: false,
      });
      expect(last?.type === 'finish' && last.usage).toEqual(usage(7, 11));
      // Each stream owns its marker: a caller changing it changes no later stream.
      if (last?.type === 'finish') (last.providerMetadata!.xCache as Record<string, unknown>).hit = true;
    }
    expect(inner.doStreamCalls).toHaveLength(2);
  });

  describe('per-call providerOptions', () => {
    it('reports a mistyped option as an error part (onError), as the SDK does with stream errors', async () => {
      const { inner, model } = setup(() => textParts(['x']));
      const errors: unknown[] = [];
      const result = streamText({
        model,
        prompt: 'a',
        providerOptions: { xCache: { nocache: true } },
        onError: ({ error }) => {
          errors.push(error);
        },
      });
      const parts = await convertReadableStreamToArray(result.fullStream);
      const errorPart = parts.find((part) => part.type === 'error');
      expect(errorPart?.type === 'error' && CacheError.isInstance(errorPart.error)).toBe(true);
      expect(errors).toHaveLength(1);
      expect(CacheError.isInstance(errors[0]) && errors[0].code).toBe('E_INVALID_OPTION');
      // The SDK rejects the result promises with its own error, without the cause.
      await expect(result.text).rejects.toSatisfy(NoOutputGeneratedError.isInstance);
      expect(inner.doStreamCalls).toHaveLength(0);
    });

    it('strips its entry and honours noCache and noStore', async () => {
      const { inner, model } = setup((_request, index) => textParts([`answer ${index}`]));
      const text = (xCache?: Record<string, boolean>) =>
        streamText({
          model,
          prompt: 'a',
          providerOptions: { other: { x: 1 }, ...(xCache ? { xCache } : {}) },
        }).text;
      expect(await text({ noStore: true })).toBe('answer 0');
      expect(await text()).toBe('answer 1');
      expect(await text()).toBe('answer 1');
      expect(await text({ noCache: true })).toBe('answer 2');
      expect(await text()).toBe('answer 2');
      expect(inner.doStreamCalls).toHaveLength(3);
      expect(inner.doStreamCalls[0]!.providerOptions).toEqual({ other: { x: 1 } });
      expect(inner.doStreamCalls[1]!.providerOptions).toEqual({ other: { x: 1 } });
    });
  });

  describe('pacing', () => {
    /** Records `parts` through a fresh middleware, with `gapMs` of (fake) time before the last two parts. */
    async function recorded(pacing: CacheMiddlewareOptions['pacing'], gapMs = 0) {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
      const setupResult = manualSetup(pacing === undefined ? {} : { pacing });
      let stored = false;
      setupResult.cache.on('set', () => {
        stored = true;
      });
      const recording = setupResult.model
        .doStream(call)
        .then((result) => convertReadableStreamToArray(result.stream));
      await until(() => setupResult.upstreams.length === 1);
      const parts = textParts(['a', 'b']);
      setupResult.upstreams[0]!.push(...parts.slice(0, 4));
      await ticks();
      vi.advanceTimersByTime(gapMs);
      setupResult.upstreams[0]!.push(...parts.slice(4));
      setupResult.upstreams[0]!.close();
      await recording;
      // The recording is written after the stream ended; until then an identical call joins the
      // finished flight (no pacing) instead of replaying the entry.
      await until(() => stored, 'the recording to be stored');
      return setupResult.model;
    }

    it("replays at the recorded pace with 'recorded'", async () => {
      const model = await recorded('recorded', 300);
      const replay = (await model.doStream(call)).stream.getReader();
      for (let i = 0; i < 4; i++) await replay.read();
      let fifth: unknown;
      void replay.read().then((part) => {
        fifth = part.value;
      });
      await vi.advanceTimersByTimeAsync(299);
      expect(fifth).toBeUndefined();
      await vi.advanceTimersByTimeAsync(1);
      expect(fifth).toEqual({ type: 'text-delta', id: 't1', delta: 'b' });
    });

    it('replays with a fixed delay between parts', async () => {
      const model = await recorded({ delayMs: 50 });
      const replay = (await model.doStream(call)).stream.getReader();
      expect((await replay.read()).value).toMatchObject({ type: 'stream-start' });
      let second: unknown;
      void replay.read().then((part) => {
        second = part.value;
      });
      await vi.advanceTimersByTimeAsync(49);
      expect(second).toBeUndefined();
      await vi.advanceTimersByTimeAsync(1);
      expect(second).toMatchObject({ type: 'response-metadata' });
    });

    it('holds a replay for a delayMs past what a timer can hold, instead of not at all', async () => {
      const model = await recorded({ delayMs: 30 * 86_400_000 });
      const replay = (await model.doStream(call)).stream.getReader();
      expect((await replay.read()).value).toMatchObject({ type: 'stream-start' });
      let second: unknown;
      void replay.read().then((part) => {
        second = part.value;
      });
      await vi.advanceTimersByTimeAsync(60_000);
      expect(second).toBeUndefined();
      await replay.cancel();
    });

    it('replays everything at once by default, even when the original took its time', async () => {
      const model = await recorded(undefined, 5_000);
      // Time stands still from here on: only an unpaced replay can finish.
      const parts = await convertReadableStreamToArray((await model.doStream(call)).stream);
      expect(parts).toEqual(
        textParts(['a', 'b']).map((part) => (part.type === 'finish' ? expect.anything() : part)),
      );
    });
  });

  describe('concurrent identical streams', () => {
    it('share one upstream call, each caller getting the whole stream from its first part', async () => {
      const { cache, inner, model, upstreams } = manualSetup();
      const parts = textParts(['one ', 'two ', 'three']);
      const leader = streamText({ model, prompt: 'same' });
      const leaderText = leader.text;
      await until(() => upstreams.length === 1);
      upstreams[0]!.push(...parts.slice(0, 5));
      await ticks();
      const joiner = streamText({ model, prompt: 'same' });
      const joinerText = joiner.text;
      await ticks();
      upstreams[0]!.push(...parts.slice(5));
      upstreams[0]!.close();
      expect(await leaderText).toBe('one two three');
      expect(await joinerText).toBe('one two three');
      expect(inner.doStreamCalls).toHaveLength(1);
      expect((await leader.providerMetadata)?.xCache).toMatchObject({ hit: false });
      expect((await joiner.providerMetadata)?.xCache).toMatchObject({ hit: true, coalesced: true });
      expect((await joiner.usage).totalTokens).toBe(0);
      expect((await leader.usage).totalTokens).toBe(18);
      await ticks();
      const later = streamText({ model, prompt: 'same' });
      expect(await later.text).toBe('one two three');
      expect(inner.doStreamCalls).toHaveLength(1);
      const stats = await cache.stats();
      expect(stats.sets).toBe(1);
      // The joiner is counted as coalesced; it and the later hit each saved the 18 tokens.
      expect(stats.coalesced).toBe(1);
      expect(stats.inputTokensSaved + stats.outputTokensSaved).toBe(36);
    });

    it('counts callers that started together as generate does: one miss, the others coalesced', async () => {
      const { cache, inner, model, upstreams } = manualSetup();
      const texts = [1, 2, 3].map(() => streamText({ model, prompt: 'same' }).text);
      await until(() => upstreams.length === 1);
      await ticks();
      upstreams[0]!.push(...textParts(['one ', 'two']));
      upstreams[0]!.close();
      expect(await Promise.all(texts)).toEqual(['one two', 'one two', 'one two']);
      expect(inner.doStreamCalls).toHaveLength(1);
      expect(await cache.stats()).toMatchObject({ misses: 1, coalesced: 2, hits: 0 });
      await ticks();
      // Once stored, callers that start together are each a hit.
      const again = [1, 2, 3].map(() => streamText({ model, prompt: 'same' }).text);
      expect(await Promise.all(again)).toEqual(['one two', 'one two', 'one two']);
      expect(inner.doStreamCalls).toHaveLength(1);
      expect(await cache.stats()).toMatchObject({ misses: 1, coalesced: 2, hits: 3 });
    });

    it('counts a caller as a miss when the call it waited for was abandoned before it started', async () => {
      const cache = createCache();
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const inner: MockLanguageModelV4 = new MockLanguageModelV4({
        modelId: 'gpt-4o-mini',
        doStream: async () => {
          await gate;
          return { stream: convertArrayToReadableStream(textParts(['x'])) };
        },
      });
      const model = wrapLanguageModel({ model: inner, middleware: cacheMiddleware({ cache }) });
      const leader = new AbortController();
      const first = streamText({ model, prompt: 'same', abortSignal: leader.signal });
      const firstText = Promise.resolve(first.text).catch(() => 'aborted');
      const others = [1, 2, 3].map(() => streamText({ model, prompt: 'same' }).text);
      await ticks();
      leader.abort();
      await ticks();
      release();
      expect(await Promise.all(others)).toEqual(['x', 'x', 'x']);
      await firstText;
      // Every caller that made a call of its own was a miss.
      expect((await cache.stats()).misses).toBe(inner.doStreamCalls.length);
    });

    it('completes a joiner whose leader stopped reading without cancelling', { timeout: 5_000 }, async () => {
      const { inner, model, upstreams } = manualSetup();
      const parts = textParts(['alpha ', 'beta ', 'gamma']);
      const leader = streamText({ model, prompt: 'same' });
      const leaderReader = leader.textStream[Symbol.asyncIterator]();
      const leaderFirst = leaderReader.next();
      await until(() => upstreams.length === 1);
      upstreams[0]!.push(...parts.slice(0, 4));
      expect((await leaderFirst).value).toBe('alpha ');
      // The leader's consumer walks away here: it never reads again and never cancels.

      const joiner = streamText({ model, prompt: 'same' });
      const joinerText = joiner.text;
      await ticks();
      upstreams[0]!.push(...parts.slice(4));
      upstreams[0]!.close();
      expect(await joinerText).toBe('alpha beta gamma');
      expect(inner.doStreamCalls).toHaveLength(1);
      // The recording completed, so it was stored.
      await ticks();
      expect(await streamText({ model, prompt: 'same' }).text).toBe('alpha beta gamma');
      expect(inner.doStreamCalls).toHaveLength(1);
    });

    it('completes a joiner whose leader holds an unread raw stream', { timeout: 5_000 }, async () => {
      const { inner, model, upstreams } = manualSetup();
      const parts = textParts(['un', 'read']);
      // The leader takes the stream and never reads it: nothing pulls on its side.
      const leader = await model.doStream(call);
      await until(() => upstreams.length === 1);
      const joiner = await model.doStream(call);
      const joined = convertReadableStreamToArray(joiner.stream);
      upstreams[0]!.push(...parts);
      upstreams[0]!.close();
      expect((await joined).slice(0, -1)).toEqual(parts.slice(0, -1));
      expect(inner.doStreamCalls).toHaveLength(1);
      expect(await convertReadableStreamToArray(leader.stream)).toHaveLength(parts.length);
    });

    it('keeps the upstream call for a joiner when the leader aborts', async () => {
      const { inner, model, upstreams } = manualSetup();
      const parts = textParts(['x', 'y']);
      const controller = new AbortController();
      const leader = streamText({ model, prompt: 'same', abortSignal: controller.signal });
      const leaderDone = leader.consumeStream();
      await until(() => upstreams.length === 1);
      upstreams[0]!.push(...parts.slice(0, 4));
      await ticks();
      const joiner = streamText({ model, prompt: 'same' });
      const joinerText = joiner.text;
      await ticks();
      controller.abort();
      await leaderDone;
      expect(upstreams[0]!.wasCancelled).toBe(false);
      upstreams[0]!.push(...parts.slice(4));
      upstreams[0]!.close();
      expect(await joinerText).toBe('xy');
      expect(inner.doStreamCalls).toHaveLength(1);
    });

    it('falls back to its own call when the shared stream sends nothing within joinTimeout', async () => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
      const { inner, model, upstreams } = manualSetup({ joinTimeout: '5s' });
      const leader = model.doStream(call);
      await until(() => upstreams.length === 1);
      const joiner = model.doStream(call);
      await ticks();
      await vi.advanceTimersByTimeAsync(5_000);
      await until(() => upstreams.length === 2, 'the fallback call');
      upstreams[1]!.push(...textParts(['own']));
      upstreams[1]!.close();
      const parts = await convertReadableStreamToArray((await joiner).stream);
      expect(parts.filter((part) => part.type === 'text-delta')).toEqual([
        { type: 'text-delta', id: 't1', delta: 'own' },
      ]);
      expect(inner.doStreamCalls).toHaveLength(2);
      upstreams[0]!.close();
      await leader;
    });

    it('falls back to its own call when the shared call does not start within joinTimeout', async () => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
      const cache = createCache();
      let calls = 0;
      const inner = new MockLanguageModelV4({
        doStream: async () => {
          calls++;
          if (calls === 1) return new Promise<never>(() => {});
          return {
            stream: simulateReadableStream({
              chunks: textParts(['own']),
              initialDelayInMs: null,
              chunkDelayInMs: null,
            }),
          };
        },
      });
      const model = wrapLanguageModel({
        model: inner,
        middleware: cacheMiddleware({ cache, joinTimeout: 1_000 }),
      });
      void model.doStream(call);
      await until(() => calls === 1);
      const joiner = model.doStream(call);
      await ticks();
      await vi.advanceTimersByTimeAsync(1_000);
      const parts = await convertReadableStreamToArray((await joiner).stream);
      expect(parts.map((part) => (part.type === 'text-delta' ? part.delta : '')).join('')).toBe('own');
      expect(calls).toBe(2);
    });

    it('makes its own call when the call it joined is abandoned before it started', async () => {
      const cache = createCache();
      const inner: MockLanguageModelV4 = new MockLanguageModelV4({
        doStream: async ({ abortSignal }) => {
          if (inner.doStreamCalls.length === 1) {
            // The first call only ends when it is aborted.
            return new Promise<never>((_resolve, reject) =>
              abortSignal?.addEventListener('abort', () => reject(abortSignal.reason), { once: true }),
            );
          }
          return { stream: simulateReadableStream({ chunks: textParts(['mine']), initialDelayInMs: null }) };
        },
      });
      const model = wrapLanguageModel({ model: inner, middleware: cacheMiddleware({ cache }) });
      const controller = new AbortController();
      const leader = model.doStream({ ...call, abortSignal: controller.signal });
      await until(() => inner.doStreamCalls.length === 1);
      const joiner = model.doStream(call);
      await ticks();
      controller.abort();
      await expect(leader).rejects.toThrow();
      const parts = await convertReadableStreamToArray((await joiner).stream);
      expect(parts.filter((part) => part.type === 'text-delta')).toEqual([
        { type: 'text-delta', id: 't1', delta: 'mine' },
      ]);
      expect(inner.doStreamCalls).toHaveLength(2);
    });

    it('does not let a new call join a stream that already sent an error part', async () => {
      const { inner, model, upstreams } = manualSetup();
      const first = convertReadableStreamToArray((await model.doStream(call)).stream);
      await until(() => upstreams.length === 1);
      upstreams[0]!.push(...textParts(['x']).slice(0, 3), { type: 'error', error: new Error('overloaded') });
      await ticks();
      // The upstream connection is still open, but its answer is already a failure.
      const second = convertReadableStreamToArray((await model.doStream(call)).stream);
      await until(() => upstreams.length === 2, 'a call of its own');
      upstreams[1]!.push(...textParts(['fresh']));
      upstreams[1]!.close();
      upstreams[0]!.close();
      expect((await first).some((part) => part.type === 'error')).toBe(true);
      const parts = await second;
      expect(parts.some((part) => part.type === 'error')).toBe(false);
      expect(parts.filter((part) => part.type === 'text-delta').map((part) => part.delta)).toEqual(['fresh']);
      expect(inner.doStreamCalls).toHaveLength(2);
    });

    it("streamText's own retry reaches the model instead of replaying the error part", async () => {
      const { inner, model, upstreams } = manualSetup();
      const result = streamText({
        model,
        prompt: 'same',
        maxRetries: 0,
        streamRetries: 1,
        onError: () => {},
      });
      const text = Promise.resolve(result.text).catch((error: unknown) => `ERR ${String(error)}`);
      await until(() => upstreams.length === 1);
      // A second caller on the same call keeps it open after the first one's retry leaves it.
      const other = streamText({ model, prompt: 'same', maxRetries: 0, onError: () => {} }).consumeStream();
      await ticks();
      upstreams[0]!.push(
        { type: 'stream-start', warnings: [] },
        { type: 'error', error: new Error('overloaded') },
      );
      await until(() => upstreams.length === 2, 'the retry calling the model');
      upstreams[1]!.push(...textParts(['fresh']));
      upstreams[1]!.close();
      upstreams[0]!.close();
      expect(await text).toBe('fresh');
      await other;
      expect(inner.doStreamCalls).toHaveLength(2);
    });

    it.each([
      ['noStore', { noStore: true }],
      ['ttl 0', { ttl: 0 }],
    ])('does not share a %s stream with a call that wants its answer stored', async (_name, xCache) => {
      const { inner, model, upstreams } = manualSetup();
      const peek = streamText({ model, prompt: 'same', providerOptions: { xCache } }).text;
      await until(() => upstreams.length === 1);
      const wanted = streamText({ model, prompt: 'same' }).text;
      await until(() => upstreams.length === 2, 'a call of its own');
      for (const upstream of upstreams) {
        upstream.push(...textParts(['hi']));
        upstream.close();
      }
      expect(await peek).toBe('hi');
      expect(await wanted).toBe('hi');
      await ticks();
      expect(await streamText({ model, prompt: 'same' }).text).toBe('hi');
      expect(inner.doStreamCalls).toHaveLength(2);
    });

    it('keeps a joiner with a joinTimeout past 24.8 days on the shared stream while it pauses', async () => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
      const { inner, model, upstreams } = manualSetup({ joinTimeout: '30d' });
      const parts = textParts(['slow ', 'answer']);
      const leader = streamText({ model, prompt: 'same' });
      const leaderText = leader.text;
      await until(() => upstreams.length === 1);
      upstreams[0]!.push(...parts.slice(0, 4));
      await ticks();
      const joiner = streamText({ model, prompt: 'same', onError: () => {} });
      const joinerText = joiner.text;
      await ticks();
      // A minute without a part: far below 30 days.
      await vi.advanceTimersByTimeAsync(60_000);
      upstreams[0]!.push(...parts.slice(4));
      upstreams[0]!.close();
      expect(await leaderText).toBe('slow answer');
      expect(await joinerText).toBe('slow answer');
      expect((await joiner.providerMetadata)?.xCache).toMatchObject({ hit: true, coalesced: true });
      expect(inner.doStreamCalls).toHaveLength(1);
    });

    it('keeps a joiner with a joinTimeout past 24.8 days waiting for the shared call to start', async () => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
      const cache = createCache();
      let start!: () => void;
      const inner: MockLanguageModelV4 = new MockLanguageModelV4({
        doStream: async () => {
          await new Promise<void>((resolve) => {
            start = resolve;
          });
          return {
            stream: simulateReadableStream({
              chunks: textParts(['late']),
              initialDelayInMs: null,
              chunkDelayInMs: null,
            }),
          };
        },
      });
      const model = wrapLanguageModel({
        model: inner,
        middleware: cacheMiddleware({ cache, joinTimeout: 30 * 86_400_000 }),
      });
      const leader = model.doStream(call);
      await until(() => inner.doStreamCalls.length === 1);
      const joiner = model.doStream(call);
      await ticks();
      await vi.advanceTimersByTimeAsync(60_000);
      start();
      const parts = await convertReadableStreamToArray((await joiner).stream);
      expect(parts.map((part) => (part.type === 'text-delta' ? part.delta : '')).join('')).toBe('late');
      expect(inner.doStreamCalls).toHaveLength(1);
      await convertReadableStreamToArray((await leader).stream);
    });

    it('ends a joined stream with an error part when the shared stream stalls midway', async () => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
      const { model, upstreams } = manualSetup({ joinTimeout: '2s' });
      const leader = await model.doStream(call);
      await until(() => upstreams.length === 1);
      upstreams[0]!.push(...textParts(['a']).slice(0, 4));
      await ticks();
      const joiner = await model.doStream(call);
      const collected = convertReadableStreamToArray(joiner.stream);
      await ticks();
      await vi.advanceTimersByTimeAsync(2_000);
      const parts = await collected;
      expect(parts.slice(0, 4)).toEqual(textParts(['a']).slice(0, 4));
      const last = parts.at(-1)!;
      expect(last.type).toBe('error');
      expect(last.type === 'error' && CacheError.isInstance(last.error) && last.error.code).toBe('E_TIMEOUT');
      await leader.stream.cancel();
    });
  });
});
