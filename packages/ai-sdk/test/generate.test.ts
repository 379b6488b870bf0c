import type { LanguageModelV4CallOptions, LanguageModelV4GenerateResult } from '@ai-sdk/provider';
import { CacheError, createCache, setDefaultCache } from '@x/cache-core';
import {
  defaultSettingsMiddleware,
  extractJsonMiddleware,
  generateObject,
  generateText,
  NoObjectGeneratedError,
  Output,
  stepCountIs,
  ToolChoiceViolationError,
  tool,
  wrapLanguageModel,
} from 'ai';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { cacheMiddleware, defaultShouldCache, GENERATE_KEY_NAME } from '../src/index.ts';
import { finish, generateModel, generateResult, textResult, until } from './helpers.ts';

function setup(
  respond: Parameters<typeof generateModel>[0] = () => textResult('hello'),
  options: Parameters<typeof cacheMiddleware>[0] = {},
) {
  const cache = createCache();
  const inner = generateModel(respond, { modelId: 'gpt-4o-mini' });
  const model = wrapLanguageModel({ model: inner, middleware: cacheMiddleware({ cache, ...options }) });
  return { cache, inner, model };
}

const richResult = (): LanguageModelV4GenerateResult =>
  generateResult(
    [
      {
        type: 'reasoning',
        text: 'Thinking about weather.',
        providerMetadata: { mock: { signature: 'sig' } },
      },
      { type: 'text', text: 'Here is the forecast.' },
      { type: 'tool-call', toolCallId: 'call-1', toolName: 'lookup', input: '{"city":"Paris"}' },
      {
        type: 'file',
        mediaType: 'image/png',
        data: { type: 'data', data: new Uint8Array([137, 80, 78, 71, 0, 255]) },
      },
      { type: 'source', sourceType: 'url', id: 'src-1', url: 'https://example.com/a', title: 'A' },
      {
        type: 'source',
        sourceType: 'document',
        id: 'src-2',
        mediaType: 'application/pdf',
        title: 'Report',
        filename: 'report.pdf',
      },
    ],
    {
      finishReason: finish('tool-calls'),
      warnings: [{ type: 'unsupported', feature: 'topK', details: 'ignored' }],
      providerMetadata: { mock: { requestId: 'r-42' } },
      response: {
        id: 'resp-9',
        modelId: 'gpt-4o-mini-2024',
        timestamp: new Date('2025-05-06T07:08:09.010Z'),
        headers: { 'x-request-id': 'abc' },
      },
    },
  );

describe('cacheMiddleware — generate', () => {
  it('serves a repeated generateText call from the cache with everything the caller sees unchanged', async () => {
    const { inner, model } = setup(() => richResult());
    const tools = { lookup: tool({ inputSchema: z.object({ city: z.string() }) }) };
    const first = await generateText({ model, tools, prompt: 'Weather in Paris?' });
    const second = await generateText({ model, tools, prompt: 'Weather in Paris?' });

    expect(inner.doGenerateCalls).toHaveLength(1);
    expect(second.text).toBe('Here is the forecast.');
    expect(second.content).toEqual(first.content);
    expect(second.reasoningText).toBe('Thinking about weather.');
    expect(second.reasoning).toEqual(first.reasoning);
    expect(second.toolCalls).toEqual(first.toolCalls);
    expect(second.toolCalls[0]).toMatchObject({ toolName: 'lookup', input: { city: 'Paris' } });
    expect(second.files[0]!.uint8Array).toEqual(new Uint8Array([137, 80, 78, 71, 0, 255]));
    expect(second.files[0]!.mediaType).toBe('image/png');
    expect(second.sources).toEqual(first.sources);
    expect(second.sources).toHaveLength(2);
    expect(second.finishReason).toBe('tool-calls');
    expect(second.rawFinishReason).toBe('tool-calls');
    expect(second.warnings).toEqual(first.warnings);
    expect(second.response.timestamp).toBeInstanceOf(Date);
    expect(second.response.timestamp.toISOString()).toBe('2025-05-06T07:08:09.010Z');
    expect(second.response.id).toBe('resp-9');
    expect(second.response.modelId).toBe('gpt-4o-mini-2024');
    expect(second.response.headers).toEqual({ 'x-request-id': 'abc' });
    expect(second.providerMetadata?.mock).toEqual({ requestId: 'r-42' });
  });

  it('returns the model result itself through wrapLanguageModel, only usage and the hit marker differ', async () => {
    const { model } = setup(() => richResult());
    const call: LanguageModelV4CallOptions = {
      prompt: [{ role: 'user', content: [{ type: 'text', text: 'x' }] }],
    };
    const miss = await model.doGenerate(call);
    const hit = await model.doGenerate(call);
    const strip = ({ usage: _u, providerMetadata, ...rest }: LanguageModelV4GenerateResult) => ({
      ...rest,
      providerMetadata: { ...providerMetadata, xCache: undefined },
    });
    expect(strip(hit)).toEqual(strip(miss));
    expect(hit.response?.timestamp).toBeInstanceOf(Date);
    expect(hit.content[3]).toEqual(miss.content[3]);
  });

  it('marks hits in providerMetadata, reports no tokens spent and counts the saved tokens', async () => {
    const { cache, model } = setup();
    const first = await generateText({ model, prompt: 'hi' });
    const second = await generateText({ model, prompt: 'hi' });

    expect(first.providerMetadata?.xCache).toMatchObject({
      hit: false,
      tier: 'responses',
      namespace: 'default',
    });
    expect(first.usage.totalTokens).toBe(30);
    const marker = second.providerMetadata?.xCache;
    expect(marker).toMatchObject({
      hit: true,
      tier: 'responses',
      namespace: 'default',
      level: 'memory',
      savedUsage: { inputTokens: 10, outputTokens: 20 },
    });
    expect(marker?.key).toBe(first.providerMetadata?.xCache?.key);
    expect(String(marker?.key)).toContain(`:${GENERATE_KEY_NAME}:`);
    expect(typeof marker?.ageMs).toBe('number');
    expect(second.usage.inputTokens).toBe(0);
    expect(second.usage.outputTokens).toBe(0);
    expect(second.usage.totalTokens).toBe(0);

    const stats = await cache.stats();
    expect(stats).toMatchObject({ hits: 1, misses: 1, sets: 1, inputTokensSaved: 10, outputTokensSaved: 20 });
    expect(stats.costSavedUsd).toBeGreaterThan(0);
  });

  it("reports the stored usage on hits with usageOnHit: 'original'", async () => {
    const { model } = setup(undefined, { usageOnHit: 'original' });
    await generateText({ model, prompt: 'hi' });
    const hit = await generateText({ model, prompt: 'hi' });
    expect(hit.providerMetadata?.xCache?.hit).toBe(true);
    expect(hit.usage.totalTokens).toBe(30);
  });

  it('runs a multi-step tool loop from the cache on the second run', async () => {
    const { inner, model } = setup((call) => {
      const last = call.prompt[call.prompt.length - 1]!;
      if (last.role === 'tool') return textResult('It is sunny in Paris.');
      return generateResult(
        [{ type: 'tool-call', toolCallId: 'call-7', toolName: 'weather', input: '{"city":"Paris"}' }],
        { finishReason: finish('tool-calls') },
      );
    });
    let executions = 0;
    const tools = {
      weather: tool({
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => {
          executions++;
          return { city, forecast: 'sunny' };
        },
      }),
    };
    const run = () => generateText({ model, tools, stopWhen: stepCountIs(5), prompt: 'Weather in Paris?' });

    const first = await run();
    expect(first.steps).toHaveLength(2);
    expect(inner.doGenerateCalls).toHaveLength(2);

    const second = await run();
    expect(inner.doGenerateCalls).toHaveLength(2);
    expect(second.text).toBe('It is sunny in Paris.');
    expect(second.steps).toHaveLength(2);
    expect(second.steps.map((step) => step.providerMetadata?.xCache?.hit)).toEqual([true, true]);
    expect(second.steps[0]!.toolResults[0]).toMatchObject({ output: { city: 'Paris', forecast: 'sunny' } });
    // Tools are the application's code: they still run, only the model calls are served from the cache.
    expect(executions).toBe(2);
  });

  it('caches generateObject and returns the same object', async () => {
    const { inner, model } = setup(() => textResult('{"name":"Ada","age":36}'));
    const schema = z.object({ name: z.string(), age: z.number() });
    const first = await generateObject({ model, schema, prompt: 'A person' });
    const second = await generateObject({ model, schema, prompt: 'A person' });
    expect(inner.doGenerateCalls).toHaveLength(1);
    expect(second.object).toEqual({ name: 'Ada', age: 36 });
    expect(second.object).toEqual(first.object);
    expect(second.providerMetadata?.xCache?.hit).toBe(true);
  });

  it('caches generateText with Output.object', async () => {
    const { inner, model } = setup(() => textResult('{"city":"Paris"}'));
    const output = Output.object({ schema: z.object({ city: z.string() }) });
    await generateText({ model, output, prompt: 'city' });
    const second = await generateText({ model, output, prompt: 'city' });
    expect(inner.doGenerateCalls).toHaveLength(1);
    expect(second.output).toEqual({ city: 'Paris' });
  });

  it('keys on every setting that changes the output', async () => {
    const { inner, model } = setup(() => textResult('{"a":1}'));
    const tools = (description: string) => ({
      lookup: tool({ description, inputSchema: z.object({ city: z.string() }) }),
    });
    const variants: Array<Record<string, unknown>> = [
      {},
      { prompt: 'other prompt' },
      { system: 'You are terse.' },
      { temperature: 0.5 },
      { topP: 0.9 },
      { topK: 5 },
      { seed: 1 },
      { maxOutputTokens: 100 },
      { stopSequences: ['STOP'] },
      { presencePenalty: 0.1 },
      { frequencyPenalty: 0.2 },
      { reasoning: 'high' },
      { providerOptions: { openai: { user: 'u-1' } } },
      { providerOptions: { openai: { user: 'u-2' } } },
      { tools: tools('Look up a city') },
      { tools: tools('Find a city') },
      { tools: tools('Look up a city'), toolChoice: 'required' },
      { output: Output.object({ schema: z.object({ a: z.number() }) }) },
      { output: Output.object({ schema: z.object({ a: z.string() }) }) },
    ];
    for (const variant of variants) {
      await generateText({ model, prompt: 'p', ...variant } as Parameters<typeof generateText>[0]).catch(
        () => {},
      );
    }
    expect(inner.doGenerateCalls).toHaveLength(variants.length);

    // Nothing that leaves the output unchanged splits the key.
    await generateText({ model, prompt: 'p', headers: { 'x-trace': '1' } });
    await generateText({ model, prompt: 'p', maxRetries: 7 });
    await generateText({ model, prompt: 'p', abortSignal: new AbortController().signal });
    await generateText({ model, prompt: 'p', experimental_telemetry: { isEnabled: false, functionId: 'f' } });
    await generateText({ model, prompt: 'p', providerOptions: { xCache: { ttl: '1h', tags: ['t'] } } });
    expect(inner.doGenerateCalls).toHaveLength(variants.length);
  });

  it('keys on the provider and the model id', async () => {
    const cache = createCache();
    const a = generateModel(() => textResult('a'), { provider: 'p1', modelId: 'm1' });
    const b = generateModel(() => textResult('b'), { provider: 'p1', modelId: 'm2' });
    const c = generateModel(() => textResult('c'), { provider: 'p2', modelId: 'm1' });
    for (const inner of [a, b, c]) {
      const model = wrapLanguageModel({ model: inner, middleware: cacheMiddleware({ cache }) });
      const result = await generateText({ model, prompt: 'same' });
      expect(result.text).toBe(inner.modelId === 'm2' ? 'b' : inner.provider === 'p2' ? 'c' : 'a');
      await generateText({ model, prompt: 'same' });
      expect(inner.doGenerateCalls).toHaveLength(1);
    }
  });

  it('keys on the settings of a middleware listed before it, not of one listed after it', async () => {
    const inner = generateModel((call) => textResult(`temperature ${call.temperature}`), {
      modelId: 'gpt-4o-mini',
    });
    const wrapped = (temperature: number, order: 'settings first' | 'cache first') => {
      const cache = cacheMiddleware({ cache: shared });
      const settings = defaultSettingsMiddleware({ settings: { temperature } });
      return wrapLanguageModel({
        model: inner,
        middleware: order === 'settings first' ? [settings, cache] : [cache, settings],
      });
    };
    let shared = createCache();
    // Listed first, the settings middleware is outermost: the cache sees (and keys on) its settings.
    expect((await generateText({ model: wrapped(0, 'settings first'), prompt: 'q' })).text).toBe(
      'temperature 0',
    );
    expect((await generateText({ model: wrapped(1, 'settings first'), prompt: 'q' })).text).toBe(
      'temperature 1',
    );
    expect(inner.doGenerateCalls).toHaveLength(2);
    // Listed after the cache, its settings are added below the key: another temperature hits.
    shared = createCache();
    expect((await generateText({ model: wrapped(0, 'cache first'), prompt: 'q' })).text).toBe(
      'temperature 0',
    );
    expect((await generateText({ model: wrapped(1, 'cache first'), prompt: 'q' })).text).toBe(
      'temperature 0',
    );
    expect(inner.doGenerateCalls).toHaveLength(3);
  });

  it("keys on an image's bytes", async () => {
    const { inner, model } = setup();
    const ask = (image: Uint8Array | string) =>
      generateText({
        model,
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'What is in this picture?' },
              { type: 'file', data: image, mediaType: 'image/png' },
            ],
          },
        ],
      });
    await ask(new Uint8Array([1, 2, 3, 4]));
    await ask(new Uint8Array([1, 2, 3, 5]));
    expect(inner.doGenerateCalls).toHaveLength(2);
    const again = await ask(new Uint8Array([1, 2, 3, 4]));
    expect(again.providerMetadata?.xCache?.hit).toBe(true);
    // The same bytes given as base64 are the same request.
    const asBase64 = await ask(Buffer.from([1, 2, 3, 4]).toString('base64'));
    expect(asBase64.providerMetadata?.xCache?.hit).toBe(true);
    expect(inner.doGenerateCalls).toHaveLength(2);
  });

  it('serves concurrent identical calls with one model call', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const { cache, inner, model } = setup(() => textResult('once'));
    const slow = inner.doGenerate;
    inner.doGenerate = async (call) => {
      const result = await slow(call);
      await gate;
      return result;
    };
    const calls = [1, 2, 3].map(() => generateText({ model, prompt: 'same' }));
    await until(() => inner.doGenerateCalls.length === 1, 'the model call');
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    release();
    const results = await Promise.all(calls);
    expect(inner.doGenerateCalls).toHaveLength(1);
    expect(results.map((result) => result.text)).toEqual(['once', 'once', 'once']);
    const markers = results.map((result) => result.providerMetadata?.xCache);
    expect(markers.filter((marker) => marker?.hit === false)).toHaveLength(1);
    expect(markers.filter((marker) => marker?.coalesced === true)).toHaveLength(2);
    expect(results.filter((result) => result.usage.totalTokens === 0)).toHaveLength(2);
    expect((await cache.stats()).coalesced).toBe(2);
  });

  it.each([
    ['no reason', undefined],
    ['an Error of its own', new Error('user navigated away')],
    ['a string', 'stop'],
  ])('does not fail a joined call when the caller it joined aborts (%s)', async (_, reason) => {
    const { inner, model } = setup();
    const gates: Array<() => void> = [];
    inner.doGenerate = async (call) => {
      inner.doGenerateCalls.push(call);
      await new Promise<void>((resolve, reject) => {
        gates.push(resolve);
        call.abortSignal?.addEventListener('abort', () => reject(call.abortSignal?.reason), { once: true });
      });
      return textResult('fresh');
    };
    const controller = new AbortController();
    const leader = generateText({ model, prompt: 'same', abortSignal: controller.signal, maxRetries: 0 });
    await until(() => inner.doGenerateCalls.length === 1, 'the leader call');
    const joiner = generateText({ model, prompt: 'same', maxRetries: 0 });
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    controller.abort(reason);
    const leaderError = await leader.then(
      () => 'resolved',
      (error: unknown) => error,
    );
    // The leader sees its own abort, whatever reason it gave.
    if (reason !== undefined) expect(String(leaderError)).toContain(String(reason));
    else expect((leaderError as Error).name).toBe('AbortError');
    await until(() => inner.doGenerateCalls.length === 2, 'the joiner retrying on its own');
    gates[1]!();
    expect((await joiner).text).toBe('fresh');
  });

  describe('per-call providerOptions', () => {
    it('strips its entry before the model sees the call and keeps the others', async () => {
      const { inner, model } = setup();
      await generateText({
        model,
        prompt: 'hi',
        providerOptions: { xCache: { ttl: '1h' }, openai: { user: 'u' } },
      });
      await generateText({ model, prompt: 'hi', providerOptions: { xCache: { noStore: true } } });
      expect(inner.doGenerateCalls[0]!.providerOptions).toEqual({ openai: { user: 'u' } });
      expect(inner.doGenerateCalls[1]).toBeDefined();
      expect(inner.doGenerateCalls[1]!.providerOptions).toBeUndefined();
    });

    it('ttl expires the entry after its own duration', async () => {
      let now = 1_000_000;
      const cache = createCache({ clock: { now: () => now } });
      const inner = generateModel(() => textResult('x'));
      const model = wrapLanguageModel({ model: inner, middleware: cacheMiddleware({ cache, ttl: '1d' }) });
      await generateText({ model, prompt: 'a', providerOptions: { xCache: { ttl: '1m' } } });
      await generateText({ model, prompt: 'b' });
      now += 2 * 60_000;
      await generateText({ model, prompt: 'a' });
      await generateText({ model, prompt: 'b' });
      expect(inner.doGenerateCalls.map((call) => call.prompt[0]!.content)).toEqual([
        [{ type: 'text', text: 'a' }],
        [{ type: 'text', text: 'b' }],
        [{ type: 'text', text: 'a' }],
      ]);
      now += 2 * 86_400_000;
      await generateText({ model, prompt: 'b' });
      expect(inner.doGenerateCalls).toHaveLength(4);
    });

    it('tags entries for invalidation', async () => {
      const { cache, inner, model } = setup(undefined, { tags: ['app'] });
      await generateText({ model, prompt: 'a', providerOptions: { xCache: { tags: ['docs'] } } });
      await generateText({ model, prompt: 'b' });
      expect(await cache.invalidateTags(['docs'])).toBe(1);
      await generateText({ model, prompt: 'a' });
      await generateText({ model, prompt: 'b' });
      expect(inner.doGenerateCalls).toHaveLength(3);
      await cache.invalidateTags(['app']);
      await generateText({ model, prompt: 'b' });
      expect(inner.doGenerateCalls).toHaveLength(4);
    });

    it('namespace keeps tenants apart', async () => {
      const { inner, model } = setup();
      await generateText({ model, prompt: 'a', providerOptions: { xCache: { namespace: 'tenant-a' } } });
      const other = await generateText({
        model,
        prompt: 'a',
        providerOptions: { xCache: { namespace: 'tenant-b' } },
      });
      const same = await generateText({
        model,
        prompt: 'a',
        providerOptions: { xCache: { namespace: 'tenant-a' } },
      });
      expect(inner.doGenerateCalls).toHaveLength(2);
      expect(other.providerMetadata?.xCache).toMatchObject({ hit: false, namespace: 'tenant-b' });
      expect(same.providerMetadata?.xCache).toMatchObject({ hit: true, namespace: 'tenant-a' });
    });

    it('noCache skips the read and stores the fresh answer', async () => {
      const { inner, model } = setup((_call, index) => textResult(`answer ${index}`));
      await generateText({ model, prompt: 'a' });
      const forced = await generateText({
        model,
        prompt: 'a',
        providerOptions: { xCache: { noCache: true } },
      });
      expect(forced.text).toBe('answer 1');
      expect(forced.providerMetadata?.xCache?.hit).toBe(false);
      const after = await generateText({ model, prompt: 'a' });
      expect(after.text).toBe('answer 1');
      expect(inner.doGenerateCalls).toHaveLength(2);
    });

    it('noCache calls the model even while an identical call is in flight, instead of joining it', async () => {
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const { inner, model } = setup(async (_call, index) => {
        if (index === 0) await gate;
        return textResult(`answer ${index}`);
      });
      const first = generateText({ model, prompt: 'a' });
      while (inner.doGenerateCalls.length === 0) await new Promise((resolve) => setImmediate(resolve));
      const forced = await generateText({
        model,
        prompt: 'a',
        providerOptions: { xCache: { noCache: true } },
      });
      expect(forced.text).toBe('answer 1');
      expect(forced.providerMetadata?.xCache).toMatchObject({ hit: false });
      release();
      expect((await first).text).toBe('answer 0');
      expect(inner.doGenerateCalls).toHaveLength(2);
    });

    it('noStore skips the write but still serves hits', async () => {
      const { inner, model } = setup((_call, index) => textResult(`answer ${index}`));
      await generateText({ model, prompt: 'a', providerOptions: { xCache: { noStore: true } } });
      expect((await generateText({ model, prompt: 'a' })).text).toBe('answer 1');
      const hit = await generateText({ model, prompt: 'a', providerOptions: { xCache: { noStore: true } } });
      expect(hit.text).toBe('answer 1');
      expect(hit.providerMetadata?.xCache?.hit).toBe(true);
      expect(inner.doGenerateCalls).toHaveLength(2);
    });

    it('rejects a mistyped option with a typed error', async () => {
      const { inner, model } = setup();
      const bad = generateText({ model, prompt: 'a', providerOptions: { xCache: { noCache: 'yes' } } });
      await expect(bad).rejects.toSatisfy(
        (error) => CacheError.isInstance(error) && error.code === 'E_INVALID_OPTION',
      );
      await expect(
        generateText({ model, prompt: 'a', providerOptions: { xCache: { nocache: true } } }),
      ).rejects.toThrow(/xCache\.nocache is not an option/);
      expect(inner.doGenerateCalls).toHaveLength(0);
    });

    it('reads its entry under a custom providerOptionsKey', async () => {
      const { inner, model } = setup(undefined, { providerOptionsKey: 'myCache' });
      await generateText({ model, prompt: 'a', providerOptions: { myCache: { noStore: true } } });
      const second = await generateText({ model, prompt: 'a' });
      expect(inner.doGenerateCalls[0]!.providerOptions).toBeUndefined();
      expect(second.providerMetadata?.myCache?.hit).toBe(false);
    });
  });

  describe('admission', () => {
    it.each(['length', 'content-filter', 'error'] as const)(
      'does not store finishReason %s',
      async (reason) => {
        const { inner, model } = setup(() => textResult('partial', { finishReason: finish(reason) }));
        await generateText({ model, prompt: 'a' });
        await generateText({ model, prompt: 'a' });
        expect(inner.doGenerateCalls).toHaveLength(2);
      },
    );

    it('does not store an empty answer', async () => {
      const { inner, model } = setup((_call, index) => (index === 0 ? generateResult([]) : textResult('')));
      await generateText({ model, prompt: 'a' });
      await generateText({ model, prompt: 'a' });
      await generateText({ model, prompt: 'a' });
      expect(inner.doGenerateCalls).toHaveLength(3);
    });

    it('does not store a failed call', async () => {
      const { inner, model } = setup((_call, index) => {
        if (index === 0) throw new Error('provider down');
        return textResult('ok');
      });
      await expect(generateText({ model, prompt: 'a', maxRetries: 0 })).rejects.toThrow('provider down');
      expect((await generateText({ model, prompt: 'a' })).text).toBe('ok');
      expect((await generateText({ model, prompt: 'a' })).providerMetadata?.xCache?.hit).toBe(true);
      expect(inner.doGenerateCalls).toHaveLength(2);
    });

    it('does not store structured output that does not parse', async () => {
      const { inner, model } = setup((_call, index) =>
        textResult(index === 0 ? '{"name": "Ad' : '{"name":"Ada"}'),
      );
      const schema = z.object({ name: z.string() });
      await expect(generateObject({ model, schema, prompt: 'p' })).rejects.toThrow();
      expect((await generateObject({ model, schema, prompt: 'p' })).object).toEqual({ name: 'Ada' });
      expect((await generateObject({ model, schema, prompt: 'p' })).object).toEqual({ name: 'Ada' });
      expect(inner.doGenerateCalls).toHaveLength(2);
    });

    it('does not store JSON that parses but violates the requested schema', async () => {
      const { inner, model } = setup((_call, index) =>
        textResult(index === 0 ? '{"a":"not a number"}' : '{"a":1}'),
      );
      const schema = z.object({ a: z.number() });
      await expect(generateObject({ model, schema, prompt: 'p' })).rejects.toSatisfy(
        NoObjectGeneratedError.isInstance,
      );
      // The retry reaches the model instead of replaying the rejected answer.
      const retried = await generateObject({ model, schema, prompt: 'p' });
      expect(retried.object).toEqual({ a: 1 });
      expect(retried.providerMetadata?.xCache?.hit).toBe(false);
      // The valid answer is stored.
      expect((await generateObject({ model, schema, prompt: 'p' })).providerMetadata?.xCache?.hit).toBe(true);
      expect(inner.doGenerateCalls).toHaveLength(2);
    });

    it('does not store an Output.object answer that violates its schema', async () => {
      const { inner, model } = setup((_call, index) =>
        textResult(index === 0 ? '{"city":42}' : '{"city":"Paris"}'),
      );
      const output = Output.object({ schema: z.object({ city: z.string() }) });
      await expect(generateText({ model, output, prompt: 'city' })).rejects.toSatisfy(
        NoObjectGeneratedError.isInstance,
      );
      expect((await generateText({ model, output, prompt: 'city' })).output).toEqual({ city: 'Paris' });
      expect((await generateText({ model, output, prompt: 'city' })).providerMetadata?.xCache?.hit).toBe(
        true,
      );
      expect(inner.doGenerateCalls).toHaveLength(2);
    });

    type Node = { name: string; children: Node[] };
    const node: z.ZodType<Node> = z.lazy(() => z.object({ name: z.string(), children: z.array(node) }));
    const tree = '{"name":"a","children":[{"name":"b","children":[{"name":"c","children":[]}]}]}';

    // The SDK sends additionalProperties: false for each of these objects, yet accepts an extra key:
    // a default zod object strips it, choice and array read only `result` and `elements`.
    it.each([
      ['Output.choice', Output.choice({ options: ['red', 'blue'] }), '{"result":"red","why":"warm"}', 'red'],
      ['Output.array', Output.array({ element: z.number() }), '{"elements":[1,2],"count":2}', [1, 2]],
      [
        'Output.object',
        Output.object({ schema: z.object({ city: z.string() }) }),
        '{"city":"Paris","confidence":0.9}',
        { city: 'Paris' },
      ],
      // The element's recursive `$ref: '#'` now sits inside the array wrapper, where `#` is the wrapper.
      [
        'a recursive Output.array element',
        Output.array({ element: node }),
        `{"elements":[${tree}]}`,
        [JSON.parse(tree)],
      ],
      ['a recursive Output.object', Output.object({ schema: node }), tree, JSON.parse(tree)],
    ] as [string, Parameters<typeof generateText>[0]['output'], string, unknown][])(
      'stores a valid %s answer',
      async (_name, output, text, expected) => {
        const { inner, model } = setup(() => textResult(text));
        expect((await generateText({ model, output, prompt: 'p' })).output).toEqual(expected);
        const second = await generateText({ model, output, prompt: 'p' });
        expect(second.output).toEqual(expected);
        expect(second.providerMetadata?.xCache?.hit).toBe(true);
        expect(inner.doGenerateCalls).toHaveLength(1);
      },
    );

    it('still refuses a recursive Output.object answer that violates its schema', async () => {
      const { inner, model } = setup((_call, index) =>
        textResult(index === 0 ? '{"name":1,"children":[]}' : tree),
      );
      const output = Output.object({ schema: node });
      await expect(generateText({ model, output, prompt: 'p' })).rejects.toSatisfy(
        NoObjectGeneratedError.isInstance,
      );
      expect((await generateText({ model, output, prompt: 'p' })).output).toEqual(JSON.parse(tree));
      expect(inner.doGenerateCalls).toHaveLength(2);
    });

    it('stores a z.strictObject answer with an extra key unless shouldCache checks it (documented limit)', async () => {
      const schema = z.strictObject({ city: z.string() });
      const output = Output.object({ schema });
      const answer = () => textResult('{"city":"Paris","extra":1}');
      const { inner, model } = setup(answer);
      // The schema cannot tell a strict object from a default one: the SDK's rejection is replayed.
      for (let i = 0; i < 2; i++) {
        await expect(generateText({ model, output, prompt: 'p' })).rejects.toSatisfy(
          NoObjectGeneratedError.isInstance,
        );
      }
      expect(inner.doGenerateCalls).toHaveLength(1);

      const strict = setup(answer, {
        shouldCache: (candidate) =>
          defaultShouldCache(candidate) && schema.safeParse(JSON.parse(candidate.text)).success,
      });
      for (let i = 0; i < 2; i++) {
        await expect(generateText({ model: strict.model, output, prompt: 'p' })).rejects.toSatisfy(
          NoObjectGeneratedError.isInstance,
        );
      }
      expect(strict.inner.doGenerateCalls).toHaveLength(2);
    });

    it('does not store JSON the SDK refuses to parse (a __proto__ key)', async () => {
      const { inner, model } = setup((_call, index) =>
        textResult(index === 0 ? '{"__proto__":{"admin":true}}' : '{"ok":true}'),
      );
      await expect(generateObject({ model, output: 'no-schema', prompt: 'p' })).rejects.toSatisfy(
        NoObjectGeneratedError.isInstance,
      );
      expect((await generateObject({ model, output: 'no-schema', prompt: 'p' })).object).toEqual({
        ok: true,
      });
      expect(inner.doGenerateCalls).toHaveLength(2);
    });

    describe('an answer that breaks the toolChoice (the SDK throws AI_ToolChoiceViolationError)', () => {
      const tools = {
        weather: tool({ inputSchema: z.object({ city: z.string() }) }),
        time: tool({ inputSchema: z.object({}) }),
      };
      const callOf = (toolName: string) =>
        generateResult([{ type: 'tool-call', toolCallId: 'c1', toolName, input: '{"city":"Paris"}' }], {
          finishReason: finish('tool-calls'),
        });
      it.each([
        {
          toolChoice: 'required' as const,
          broken: () => textResult('No tool needed.'),
          kept: () => callOf('time'),
        },
        {
          toolChoice: { type: 'tool' as const, toolName: 'weather' as const },
          broken: () => callOf('time'),
          kept: () => callOf('weather'),
        },
        { toolChoice: 'none' as const, broken: () => callOf('weather'), kept: () => textResult('Sunny.') },
      ])('is not stored: toolChoice $toolChoice', async ({ toolChoice, broken, kept }) => {
        const { inner, model } = setup((_call, index) => (index === 0 ? broken() : kept()));
        const run = () =>
          generateText({ model, tools, toolChoice, prompt: 'Weather in Paris?', maxRetries: 0 });
        await expect(run()).rejects.toSatisfy(ToolChoiceViolationError.isInstance);
        // The retry reaches the model instead of replaying the violation until the entry expires.
        expect((await run()).providerMetadata?.xCache?.hit).toBe(false);
        // An answer that keeps to the toolChoice is stored.
        expect((await run()).providerMetadata?.xCache?.hit).toBe(true);
        expect(inner.doGenerateCalls).toHaveLength(2);
      });
    });

    describe('JSON in a markdown fence, with extractJsonMiddleware', () => {
      const fenced = '```json\n{"city":"Paris"}\n```';
      const schema = z.object({ city: z.string() });
      const wrapped = (order: 'extract first' | 'cache first') => {
        const cache = createCache();
        const inner = generateModel(() => textResult(fenced), { modelId: 'gpt-4o-mini' });
        const caching = cacheMiddleware({ cache });
        const extract = extractJsonMiddleware();
        const middleware = order === 'extract first' ? [extract, caching] : [caching, extract];
        return { cache, inner, model: wrapLanguageModel({ model: inner, middleware }) };
      };

      it('is not stored without the middleware: the SDK rejects it, and the next call asks the model again', async () => {
        const inner = generateModel(() => textResult(fenced));
        const model = wrapLanguageModel({
          model: inner,
          middleware: cacheMiddleware({ cache: createCache() }),
        });
        for (let i = 0; i < 2; i++) {
          await expect(generateObject({ model, schema, prompt: 'A city' })).rejects.toSatisfy(
            NoObjectGeneratedError.isInstance,
          );
        }
        expect(inner.doGenerateCalls).toHaveLength(2);
      });

      it('is not stored when the middleware is listed before the cache, which cannot see it will be unwrapped', async () => {
        const { inner, model } = wrapped('extract first');
        const first = await generateObject({ model, schema, prompt: 'A city' });
        const second = await generateObject({ model, schema, prompt: 'A city' });
        expect([first.object, second.object]).toEqual([{ city: 'Paris' }, { city: 'Paris' }]);
        expect(second.providerMetadata?.xCache?.hit).toBe(false);
        expect(inner.doGenerateCalls).toHaveLength(2);
      });

      it('is stored as the middleware returned it when the middleware is listed after the cache', async () => {
        const { cache, inner, model } = wrapped('cache first');
        const output = Output.object({ schema });
        await generateText({ model, output, prompt: 'A city' });
        const second = await generateText({ model, output, prompt: 'A city' });
        expect(second.output).toEqual({ city: 'Paris' });
        expect(second.providerMetadata?.xCache?.hit).toBe(true);
        expect(inner.doGenerateCalls).toHaveLength(1);
        // Above the middleware the cache stores the unwrapped JSON; a hit does not run the middleware.
        const stored = await cache.peek<LanguageModelV4GenerateResult>({
          storageKey: second.providerMetadata?.xCache?.key as string,
        });
        expect(stored?.content).toEqual([{ type: 'text', text: '{"city":"Paris"}' }]);
      });

      it('listed after the cache with Output.object too, where an answer that violates the schema is not stored', async () => {
        const { inner, model } = wrapped('cache first');
        const output = Output.object({ schema });
        await generateText({ model, output, prompt: 'A city' });
        expect((await generateText({ model, output, prompt: 'A city' })).output).toEqual({ city: 'Paris' });
        expect(inner.doGenerateCalls).toHaveLength(1);

        const wrong = generateModel(() => textResult('```json\n{"city":7}\n```'));
        const strict = wrapLanguageModel({
          model: wrong,
          middleware: [cacheMiddleware({ cache: createCache() }), extractJsonMiddleware()],
        });
        await expect(generateText({ model: strict, output, prompt: 'A city' })).rejects.toSatisfy(
          NoObjectGeneratedError.isInstance,
        );
        await expect(generateText({ model: strict, output, prompt: 'A city' })).rejects.toSatisfy(
          NoObjectGeneratedError.isInstance,
        );
        expect(wrong.doGenerateCalls).toHaveLength(2);
      });
    });

    it('lets shouldCache override the default', async () => {
      const { inner, model } = setup(() => textResult('cut off', { finishReason: finish('length') }), {
        shouldCache: (candidate) =>
          defaultShouldCache(candidate) || candidate.finishReason.unified === 'length',
      });
      await generateText({ model, prompt: 'a' });
      await generateText({ model, prompt: 'a' });
      expect(inner.doGenerateCalls).toHaveLength(1);

      const strict = setup(() => textResult('fine'), {
        shouldCache: (candidate) => candidate.text !== 'fine',
      });
      await generateText({ model: strict.model, prompt: 'a' });
      await generateText({ model: strict.model, prompt: 'a' });
      expect(strict.inner.doGenerateCalls).toHaveLength(2);
    });
  });

  it('answers uncached when the request cannot be keyed', async () => {
    const { inner, model } = setup();
    const call = {
      prompt: [{ role: 'user', content: [{ type: 'text', text: 'x' }] }],
      tools: [{ type: 'provider', id: 'mock.search', name: 'search', args: { rank: () => 1 } }],
    } as LanguageModelV4CallOptions;
    const first = await model.doGenerate(call);
    expect(first.content).toEqual([{ type: 'text', text: 'hello' }]);
    // Marked, so a caller can tell "not cacheable" from a miss that was stored.
    expect(first.providerMetadata?.xCache).toEqual({ hit: false, cacheable: false });
    // Each result owns its marker: a caller changing it changes no later result.
    (first.providerMetadata!.xCache as Record<string, unknown>).hit = true;
    const second = await model.doGenerate(call);
    expect(second.providerMetadata?.xCache).toEqual({ hit: false, cacheable: false });
    expect(inner.doGenerateCalls).toHaveLength(2);
  });

  it('uses the default cache when none is given', async () => {
    const cache = createCache();
    setDefaultCache(cache);
    try {
      const inner = generateModel(() => textResult('default'));
      const model = wrapLanguageModel({ model: inner, middleware: cacheMiddleware() });
      await generateText({ model, prompt: 'a' });
      await generateText({ model, prompt: 'a' });
      expect(inner.doGenerateCalls).toHaveLength(1);
      expect((await cache.stats()).hits).toBe(1);
    } finally {
      setDefaultCache(undefined);
    }
  });

  it('validates its options when created', () => {
    expect(() => cacheMiddleware({ pacing: 'fast' as never })).toThrow(/pacing must be/);
    expect(() => cacheMiddleware({ ttl: 'forever' as never })).toThrow(CacheError);
    expect(() => cacheMiddleware({ namespace: 'has space' })).toThrow(/invalid namespace/);
    expect(() => cacheMiddleware({ usageOnHit: 'none' as never })).toThrow(/usageOnHit/);
  });

  it('reads usage honestly for the saved-token stats when a provider omits it', async () => {
    const { cache, model } = setup(() =>
      textResult('x', {
        usage: {
          inputTokens: { total: undefined, noCache: undefined, cacheRead: undefined, cacheWrite: undefined },
          outputTokens: { total: undefined, text: undefined, reasoning: undefined },
        },
      }),
    );
    await generateText({ model, prompt: 'a' });
    const hit = await generateText({ model, prompt: 'a' });
    expect(hit.providerMetadata?.xCache?.savedUsage).toBeUndefined();
    expect((await cache.stats()).inputTokensSaved).toBe(0);
  });
});
