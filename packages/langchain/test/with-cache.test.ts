import { InMemoryCache } from '@langchain/core/caches';
import { BaseCallbackHandler } from '@langchain/core/callbacks/base';
import type { BaseChatModel } from '@langchain/core/language_models/chat_models';
import type { ChatModelStreamEvent } from '@langchain/core/language_models/event';
import type { BaseMessage } from '@langchain/core/messages';
import { AIMessage, AIMessageChunk, HumanMessage, ToolMessage } from '@langchain/core/messages';
import { StringOutputParser } from '@langchain/core/output_parsers';
import type { LLMResult } from '@langchain/core/outputs';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { RunnableLambda } from '@langchain/core/runnables';
import { FakeChatModel, FakeListChatModel, FakeStreamingChatModel } from '@langchain/core/utils/testing';
import { createCache } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { CachedChatModel, withCache } from '../src/index.ts';
import {
  AnthropicLikeModel,
  bytesOnDisk,
  cleanupAfterEach,
  deferred,
  getTime,
  getWeather,
  NamelessKeyModel,
  ScriptedChatModel,
  ScriptedJsonModel,
  tempDir,
} from './helpers.ts';

/** A tool-calling turn: ask for the weather, then answer from the tool's result. */
function weatherAgentResponder(messages: BaseMessage[]) {
  const last = messages.at(-1)!;
  if (last.getType() === 'tool') return { content: `Final: ${last.content}` };
  return {
    content: '',
    tool_calls: [{ id: 'call_1', name: 'get_weather', args: { city: 'Paris' }, type: 'tool_call' as const }],
  };
}

/** Records the extra parameters each LLM run ends with (LangChain's own cache passes `{ cached: true }`). */
class EndRecorder extends BaseCallbackHandler {
  name = 'end-recorder';
  ends: unknown[] = [];

  constructor() {
    super({ _awaitHandler: true });
  }

  override handleLLMEnd(
    _output: LLMResult,
    _runId: string,
    _parentRunId?: string,
    _tags?: string[],
    extraParams?: Record<string, unknown>,
  ): void {
    this.ends.push(extraParams);
  }
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

const { closers, memoryCache } = cleanupAfterEach();

describe('withCache', () => {
  it('does not stream a model whose streaming is disabled, as the model itself does not', async () => {
    const make = () => {
      const inner = new FakeListChatModel({ responses: ['hello world'] });
      inner.disableStreaming = true;
      return inner;
    };
    const count = async (model: BaseChatModel) => {
      let chunks = 0;
      for await (const _chunk of await model.stream('hi')) chunks++;
      return chunks;
    };
    expect(await count(make())).toBe(1);
    expect(await count(withCache(make(), { cache: createCache() }))).toBe(1);
  });

  it('answers a repeated invoke from the cache with the complete message and zero usage', async () => {
    const cache = memoryCache();
    const inner = new ScriptedChatModel();
    const model = withCache(inner, { cache });

    const first = await model.invoke('What is the capital of France?');
    const second = await model.invoke('What is the capital of France?');

    expect(inner.log.generate).toBe(1);
    expect(second).toBeInstanceOf(AIMessage);
    expect(second.content).toBe(first.content);
    expect(second.id).toBe(first.id);
    expect(second.additional_kwargs).toEqual(first.additional_kwargs);
    expect(second.response_metadata).toMatchObject({ model_name: 'scripted-1', finish_reason: 'stop' });
    expect(first.usage_metadata).toEqual({ input_tokens: 12, output_tokens: 5, total_tokens: 17 });
    expect(second.usage_metadata).toEqual({ input_tokens: 0, output_tokens: 0, total_tokens: 0 });
    const stats = await cache.stats();
    expect(stats).toMatchObject({ hits: 1, misses: 1, inputTokensSaved: 12, outputTokensSaved: 5 });
  });

  it('reports every usage record of a hit as zero, keeping its shape', async () => {
    const usage = {
      input_tokens: 12,
      output_tokens: 5,
      cache_read_input_tokens: 3,
      service_tier: 'standard',
    };
    const inner = new ScriptedChatModel({
      respond: () => ({ content: 'Paris.', response_metadata: { usage } }),
    });
    const model = withCache(inner, { cache: memoryCache() });

    const first = await model.invoke('Capital of France?');
    const hit = await model.invoke('Capital of France?');
    const streamed = await collect(await model.stream('Capital of France?'));

    expect(first.response_metadata).toMatchObject({ usage, tokenUsage: { promptTokens: 12 } });
    const zero = { input_tokens: 0, output_tokens: 0, cache_read_input_tokens: 0, service_tier: 'standard' };
    expect(hit.response_metadata).toMatchObject({ usage: zero, tokenUsage: { promptTokens: 0 } });
    expect(hit.usage_metadata).toEqual({ input_tokens: 0, output_tokens: 0, total_tokens: 0 });
    expect(streamed.at(-1)!.response_metadata.usage).toEqual(zero);
  });

  it('ends the callbacks of a hit as cached, as LangChain does for its own cache', async () => {
    const handler = new EndRecorder();
    const model = withCache(new ScriptedChatModel(), { cache: memoryCache() });
    const options = { callbacks: [handler] };

    await model.invoke('Capital of France?', options);
    await model.invoke('Capital of France?', options);
    await collect(await model.stream('Capital of Italy?', options));
    await collect(await model.stream('Capital of Italy?', options));
    expect(handler.ends).toEqual([undefined, { cached: true }, undefined, { cached: true }]);

    // A batch ends one run per input; a call that joined an identical one did not pay either.
    handler.ends = [];
    await model.batch(['Capital of France?', 'Capital of Spain?', 'Capital of Spain?'], options);
    expect(handler.ends).toHaveLength(3);
    expect(handler.ends.filter((extra) => extra === undefined)).toHaveLength(1);
  });

  it("reports a hit to token callbacks as one token with the whole text, as LangChain's own cache does", async () => {
    // A model that streams inside _generate (ChatOpenAI / ChatAnthropic with streaming: true) and a
    // plain token handler: the handler sees the tokens on a miss and, on a hit, what LangChain's
    // own cache gives it.
    const tokensOf = async (model: BaseChatModel, prompt: string): Promise<string[]> => {
      const tokens: string[] = [];
      const handler = BaseCallbackHandler.fromMethods({
        handleLLMNewToken(token: string) {
          tokens.push(token);
        },
      });
      await model.invoke(prompt, { callbacks: [handler] });
      return tokens;
    };
    const inner = new AnthropicLikeModel({ streaming: true });
    const model = withCache(inner, { cache: memoryCache() });
    expect(await tokensOf(model, 'Tell me a story')).toEqual(['', 'Once upon ', 'a time', '']);
    const hit = await tokensOf(model, 'Tell me a story');
    expect(inner.requests).toBe(1);
    expect(hit).toEqual(['Once upon a time']);

    const own = new AnthropicLikeModel({ streaming: true, cache: new InMemoryCache() });
    await tokensOf(own, 'Tell me a story');
    expect(await tokensOf(own, 'Tell me a story')).toEqual(hit);

    // A call that joined another's model call did not see its tokens either: it gets the same one.
    const scripted = new ScriptedChatModel();
    const joined = withCache(scripted, { cache: memoryCache() });
    const gate = deferred();
    scripted.log.gate = gate.promise;
    const pending = Promise.all([tokensOf(joined, 'Same question'), tokensOf(joined, 'Same question')]);
    await new Promise((resolve) => setImmediate(resolve));
    gate.resolve();
    const [a, b] = await pending;
    expect(scripted.log.generate).toBe(1);
    const answer = (await joined.invoke('Same question')).text;
    expect([a, b].sort((x, y) => x.length - y.length)).toEqual([[], [answer]]);
  });

  it('answers a call LangChain streams as chat-model stream events from the cache, unmarked', async () => {
    // A handler that prefers chat-model stream events (LangGraph's streamEvents v3 handler) makes
    // LangChain call the model's _streamChatModelEvents without the run manager, so the hit is
    // served but its run cannot be marked cached (the README says so). If this starts failing,
    // LangChain hands the run manager over now: mark the run and update the README.
    class StreamEventRecorder extends EndRecorder {
      readonly lc_prefer_chat_model_stream_events = true;
      texts: string[] = [];
      override handleChatModelStreamEvent(event: ChatModelStreamEvent): void {
        if (event.event === 'content-block-delta' && event.delta.type === 'text-delta') {
          this.texts.push(event.delta.text);
        }
      }
    }
    const handler = new StreamEventRecorder();
    const inner = new ScriptedChatModel();
    const model = withCache(inner, { cache: memoryCache() });

    const first = await model.invoke('Capital of France?', { callbacks: [handler] });
    const firstTexts = handler.texts.splice(0);
    const second = await model.invoke('Capital of France?', { callbacks: [handler] });
    expect(inner.log).toMatchObject({ generate: 0, stream: 1 });
    expect(second.text).toBe(first.text);
    expect(handler.texts.join('')).toBe(first.text);
    expect(firstTexts.join('')).toBe(first.text);
    expect(handler.ends).toEqual([undefined, undefined]);
  });

  it('reports a response the cache refuses to store through onError and counts a dropped write', async () => {
    const cache = createCache({ quotas: { default: { maxEntries: 1, onExceed: 'reject' } } });
    closers.push(() => cache.close());
    const errors: unknown[] = [];
    const model = withCache(new ScriptedChatModel(), { cache, onError: (error) => errors.push(error) });
    await model.invoke('first');
    expect(errors).toEqual([]);
    const second = await model.invoke('second');
    expect(String(second.content)).toMatch(/^answer /);
    expect(errors).toHaveLength(1);
    expect((errors[0] as { code?: string }).code).toBe('E_QUOTA_EXCEEDED');
    expect(await cache.stats()).toMatchObject({ sets: 1, droppedWrites: 1 });
  });

  it("keeps LangChain's fake list model from moving on to its next response", async () => {
    const model = withCache(new FakeListChatModel({ responses: ['first answer', 'second answer'] }), {
      cache: memoryCache(),
    });
    expect((await model.invoke('hi')).content).toBe('first answer');
    expect((await model.invoke('hi')).content).toBe('first answer');
    expect((await model.invoke('something else')).content).toBe('second answer');
  });

  it('runs concurrent identical invokes through one model call', async () => {
    const inner = new ScriptedChatModel();
    const gate = deferred();
    inner.log.gate = gate.promise;
    const model = withCache(inner, { cache: memoryCache() });

    const calls = Promise.all([model.invoke('same'), model.invoke('same'), model.invoke('same')]);
    // Let every caller reach the cache before the single model call is released.
    await new Promise((resolve) => setImmediate(resolve));
    gate.resolve();
    const answers = await calls;

    expect(inner.log.generate).toBe(1);
    expect(new Set(answers.map((answer) => answer.content)).size).toBe(1);
  });

  it.each([
    ['an Error of its own', new Error('user navigated away')],
    ['a string', 'stop'],
    ['no reason', undefined],
  ])('does not fail a joined invoke when the caller it joined aborts (%s)', async (_, reason) => {
    const inner = new ScriptedChatModel();
    const controller = new AbortController();
    // The provider gives up when its caller's signal aborts, with that signal's reason.
    inner.log.gate = new Promise<void>((_resolve, reject) => {
      controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true });
    });
    inner.log.gate.catch(() => undefined);
    const model = withCache(inner, { cache: memoryCache() });
    const leader = model.invoke('same', { signal: controller.signal }).then(
      () => 'answered',
      (error: unknown) => error,
    );
    const joiner = model.invoke('same');
    await new Promise((resolve) => setImmediate(resolve));
    expect(inner.log.generate).toBe(1);
    controller.abort(reason);
    inner.log.gate = undefined;
    expect(await leader).not.toBe('answered');
    expect((await joiner).content).toMatch(/^answer /);
    expect(inner.log.generate).toBe(2);
  });

  it.each([
    ['aborted after it joined', false],
    ['already aborted', true],
  ])(
    'rejects a joined invoke whose own signal is %s, without disturbing the call it joined',
    async (_, early) => {
      const inner = new ScriptedChatModel();
      const gate = deferred();
      inner.log.gate = gate.promise;
      const cache = memoryCache();
      const model = withCache(inner, { cache });
      const leader = model.invoke('same');
      await new Promise((resolve) => setImmediate(resolve));
      const controller = new AbortController();
      const reason = new Error('user navigated away');
      if (early) controller.abort(reason);
      const joiner = model.invoke('same', { signal: controller.signal }).then(
        () => 'answered',
        (error: unknown) => error,
      );
      await new Promise((resolve) => setImmediate(resolve));
      if (!early) controller.abort(reason);
      // The model call is still held: the joiner must not wait for it.
      let timer: NodeJS.Timeout | undefined;
      const stillPending = new Promise((resolve) => {
        timer = setTimeout(() => resolve('still pending'), 500);
      });
      expect(await Promise.race([joiner, stillPending])).toBe(reason);
      clearTimeout(timer);

      gate.resolve();
      expect((await leader).content).toMatch(/^answer /);
      expect(inner.log.generate).toBe(1);
      expect((await model.invoke('same')).content).toBe((await leader).content);
      expect(inner.log.generate).toBe(1);
      expect(await cache.stats()).toMatchObject({ sets: 1 });
    },
  );

  it('does not fail an invoke that joined a stream whose consumer stopped reading', async () => {
    const inner = new ScriptedChatModel();
    const second = deferred();
    const third = deferred();
    inner.log.beforeChunk = (index) =>
      index === 1 ? second.promise : index === 2 ? third.promise : undefined;
    const model = withCache(inner, { cache: memoryCache() });
    const iterator = (await model.stream('same request'))[Symbol.asyncIterator]();
    await iterator.next();
    const joined = model.invoke('same request');
    await new Promise((resolve) => setImmediate(resolve));
    second.resolve();
    await iterator.return?.();
    third.resolve();
    inner.log.beforeChunk = undefined;
    expect((await joined).content).toMatch(/^answer /);
  });

  it('serves batch items from the cache and computes duplicates once', async () => {
    const inner = new ScriptedChatModel();
    const model = withCache(inner, { cache: memoryCache() });
    const answers = await model.batch(['a', 'b', 'a']);
    expect(inner.log.generate).toBe(2);
    expect(answers[0]!.content).toBe(answers[2]!.content);
    expect(answers[0]!.content).not.toBe(answers[1]!.content);
    await model.batch(['b', 'a']);
    expect(inner.log.generate).toBe(2);
  });

  it('replays a complete tool-calling round trip from the cache', async () => {
    const cache = memoryCache();
    const inner = new ScriptedChatModel({ respond: weatherAgentResponder });
    const model = withCache(inner, { cache }).bindTools([getWeather]);

    async function runAgent() {
      const messages: BaseMessage[] = [new HumanMessage('Weather in Paris?')];
      const call = await model.invoke(messages);
      messages.push(call);
      for (const toolCall of call.tool_calls ?? []) {
        messages.push(await getWeather.invoke(toolCall));
      }
      const final = await model.invoke(messages);
      return { call, final, messages };
    }

    const live = await runAgent();
    expect(inner.log.generate).toBe(2);
    const replay = await runAgent();
    expect(inner.log.generate).toBe(2);

    expect(replay.call.tool_calls).toEqual(live.call.tool_calls);
    expect(replay.call.tool_calls?.[0]).toMatchObject({
      id: 'call_1',
      name: 'get_weather',
      args: { city: 'Paris' },
    });
    expect(replay.messages[2]).toBeInstanceOf(ToolMessage);
    expect(replay.final.content).toBe('Final: It is sunny in Paris.');
  });

  it('keys on the bound tools and tool_choice', async () => {
    const inner = new ScriptedChatModel();
    const cached = withCache(inner, { cache: memoryCache() });
    await cached.bindTools([getWeather]).invoke('hello');
    await cached.bindTools([getWeather]).invoke('hello');
    expect(inner.log.generate).toBe(1);
    await cached.bindTools([getTime]).invoke('hello');
    expect(inner.log.generate).toBe(2);
    await cached.bindTools([getWeather], { tool_choice: 'get_weather' }).invoke('hello');
    expect(inner.log.generate).toBe(3);
    await cached.invoke('hello');
    expect(inner.log.generate).toBe(4);
  });

  it('routes the tools a model binds on a copy of itself through the cache', async () => {
    // FakeStreamingChatModel.bindTools returns a binding over a new FakeStreamingChatModel.
    const toolCall = {
      id: 'call_9',
      name: 'get_weather',
      args: { city: 'Oslo' },
      type: 'tool_call' as const,
    };
    const inner = new FakeStreamingChatModel({
      chunks: [new AIMessageChunk({ content: '', tool_calls: [toolCall] })],
    });
    const cache = memoryCache();
    const bound = withCache(inner, { cache }).bindTools([getWeather]);
    const first = await bound.invoke('weather?');
    const second = await bound.invoke('weather?');
    expect(first.tool_calls).toEqual([toolCall]);
    expect(second.tool_calls).toEqual([toolCall]);
    expect(await cache.stats()).toMatchObject({ hits: 1, misses: 1 });
  });

  it('serves structured output (tool calling) from the cache', async () => {
    const schema = z.object({ name: z.string(), age: z.number() });
    const inner = new ScriptedChatModel({
      chunkMessages: true,
      respond: (_messages, options) => {
        const name = ((options.tools ?? [])[0] as { function: { name: string } }).function.name;
        return { content: '', tool_calls: [{ id: 'x1', name, args: { name: 'Ada', age: 36 } }] };
      },
    });
    const extractor = withCache(inner, { cache: memoryCache() }).withStructuredOutput(schema, {
      name: 'person',
    });
    const first = await extractor.invoke('Ada Lovelace, 36');
    const second = await extractor.invoke('Ada Lovelace, 36');
    expect(first).toEqual({ name: 'Ada', age: 36 });
    expect(second).toEqual(first);
    expect(inner.log.generate).toBe(1);
    // The raw message keeps the class the provider answered with.
    const raw = await withCache(inner, { cache: memoryCache() })
      .withStructuredOutput(schema, { name: 'person', includeRaw: true })
      .invoke('Ada Lovelace, 36');
    expect(raw.raw).toBeInstanceOf(AIMessageChunk);
  });

  it("serves structured output from a provider's own response_format implementation", async () => {
    const schema = z.object({ city: z.string() });
    const inner = new ScriptedJsonModel({
      respond: (_messages, options) => ({
        content: options.response_format ? '{"city":"Lyon"}' : 'no format was sent',
      }),
    });
    const extractor = withCache(inner, { cache: memoryCache() }).withStructuredOutput(schema);
    expect(await extractor.invoke('Where?')).toEqual({ city: 'Lyon' });
    expect(await extractor.invoke('Where?')).toEqual({ city: 'Lyon' });
    expect(inner.log.generate).toBe(1);
  });

  it('tells apart two requests that differ only in an image', async () => {
    const inner = new ScriptedChatModel();
    const model = withCache(inner, { cache: memoryCache() });
    const ask = (image: string) =>
      model.invoke([
        new HumanMessage({
          content: [
            { type: 'text', text: 'What is in this picture?' },
            { type: 'image_url', image_url: { url: `data:image/png;base64,${image}` } },
          ],
        }),
      ]);
    const cat = await ask('Y2F0IHBpeGVscw==');
    const dog = await ask('ZG9nIHBpeGVscw==');
    expect(inner.log.generate).toBe(2);
    expect(dog.content).not.toBe(cat.content);
    expect((await ask('Y2F0IHBpeGVscw==')).content).toBe(cat.content);
    expect(inner.log.generate).toBe(2);

    const bytes = (data: number[]) =>
      model.invoke([
        new HumanMessage({
          content: [
            { type: 'text', text: 'Describe' },
            { type: 'image', mimeType: 'image/png', data: new Uint8Array(data) },
          ],
        }),
      ]);
    await bytes([1, 2, 3]);
    await bytes([1, 2, 4]);
    expect(inner.log.generate).toBe(4);
  });

  it('records a stream live and replays its chunks, tool-call chunks included, on a hit', async () => {
    const cache = memoryCache();
    const inner = new ScriptedChatModel({
      respond: () => ({
        content: 'Checking the weather for you.',
        tool_calls: [{ id: 'call_7', name: 'get_weather', args: { city: 'Rome' }, type: 'tool_call' }],
      }),
    });
    const model = withCache(inner, { cache }).bindTools([getWeather]);

    const live = await collect(await model.stream('Weather in Rome?'));
    const replay = await collect(await model.stream('Weather in Rome?'));

    expect(inner.log.stream).toBe(1);
    expect(replay.length).toBe(live.length);
    expect(replay.length).toBeGreaterThan(3);
    expect(replay.map((chunk) => chunk.content)).toEqual(live.map((chunk) => chunk.content));
    expect(replay.map((chunk) => chunk.tool_call_chunks)).toEqual(
      live.map((chunk) => chunk.tool_call_chunks),
    );
    expect(replay.every((chunk) => chunk instanceof AIMessageChunk)).toBe(true);

    const whole = replay.reduce((sum, chunk) => sum.concat(chunk));
    expect(whole.content).toBe('Checking the weather for you.');
    expect(whole.tool_calls).toEqual([
      { id: 'call_7', name: 'get_weather', args: { city: 'Rome' }, type: 'tool_call' },
    ]);
    expect(whole.usage_metadata).toMatchObject({ input_tokens: 0, output_tokens: 0, total_tokens: 0 });

    // An invoke of the same request is answered from the recorded stream.
    const invoked = await model.invoke('Weather in Rome?');
    expect(inner.log.generate + inner.log.stream).toBe(1);
    expect(invoked.tool_calls?.[0]?.args).toEqual({ city: 'Rome' });
  });

  it("replays LangChain's streaming fake with its tool calls", async () => {
    const toolCall = { id: 'call_3', name: 'get_time', args: { zone: 'UTC' }, type: 'tool_call' as const };
    const inner = new FakeStreamingChatModel({
      sleep: 0,
      chunks: [
        new AIMessageChunk({ content: 'Let me ' }),
        new AIMessageChunk({ content: 'check.', tool_calls: [toolCall] }),
      ],
    });
    const cache = memoryCache();
    const model = withCache(inner, { cache });
    const live = await collect(await model.stream('time?'));
    const replay = await collect(await model.stream('time?'));
    expect(replay.map((chunk) => chunk.content)).toEqual(['Let me ', 'check.']);
    expect(replay[1]!.tool_calls).toEqual(live[1]!.tool_calls);
    expect(await cache.stats()).toMatchObject({ hits: 1, misses: 1 });
  });

  it('streams concurrent identical requests from one model call', async () => {
    const inner = new ScriptedChatModel();
    const gate = deferred();
    inner.log.gate = gate.promise;
    const model = withCache(inner, { cache: memoryCache() });
    const read = async () => collect(await model.stream('together'));
    const both = Promise.all([read(), read()]);
    await new Promise((resolve) => setImmediate(resolve));
    gate.resolve();
    const [a, b] = await both;
    expect(inner.log.stream).toBe(1);
    expect(b.map((chunk) => chunk.content)).toEqual(a.map((chunk) => chunk.content));
    expect(a.length).toBeGreaterThan(2);
  });

  it('replays the stream events of a cached response inside a chain', async () => {
    const inner = new ScriptedChatModel();
    const chain = ChatPromptTemplate.fromMessages([['human', '{question}']])
      .pipe(withCache(inner, { cache: memoryCache() }))
      .pipe(new StringOutputParser());
    const tokens = async () => {
      const out: string[] = [];
      for await (const event of chain.streamEvents({ question: 'events?' }, { version: 'v2' })) {
        if (event.event === 'on_chat_model_stream') out.push(event.data.chunk.content);
      }
      return out;
    };
    const live = await tokens();
    const replay = await tokens();
    expect(inner.log.generate + inner.log.stream).toBe(1);
    expect(replay).toEqual(live);
    expect(replay.join('')).toMatch(/^answer /);
  });

  it('streams a response cached by invoke with its tool calls, invalid ones included', async () => {
    const inner = new ScriptedChatModel({
      respond: () => ({
        content: 'x',
        tool_calls: [{ id: 'call_ok', name: 'lookup', args: { q: 'a' }, type: 'tool_call' }],
        invalid_tool_calls: [
          { id: 'call_bad', name: 'lookup', args: '{bad', error: 'bad json', type: 'invalid_tool_call' },
        ],
      }),
    });
    const model = withCache(inner, { cache: memoryCache() });
    const invoked = await model.invoke('q');
    const streamed = await collect(await model.stream('q'));
    expect(inner.log.generate + inner.log.stream).toBe(1);
    expect(streamed).toHaveLength(1);
    expect(streamed[0]!.tool_calls).toEqual(invoked.tool_calls);
    expect(streamed[0]!.invalid_tool_calls).toEqual(invoked.invalid_tool_calls);
    expect(invoked.invalid_tool_calls).toHaveLength(1);
  });

  it('streams a response cached by invoke as one chunk', async () => {
    const inner = new ScriptedChatModel();
    const model = withCache(inner, { cache: memoryCache() });
    const invoked = await model.invoke('once');
    const streamed = await collect(await model.stream('once'));
    expect(inner.log.generate + inner.log.stream).toBe(1);
    expect(streamed).toHaveLength(1);
    expect(streamed[0]!.content).toBe(invoked.content);
  });

  it('stops and does not store a stream its consumer abandoned', async () => {
    const inner = new ScriptedChatModel();
    const second = deferred();
    const third = deferred();
    let sent = 0;
    inner.log.beforeChunk = (index) => {
      sent = index;
      return index === 1 ? second.promise : index === 2 ? third.promise : undefined;
    };
    const model = withCache(inner, { cache: memoryCache() });
    for await (const _chunk of await model.stream('long answer please')) {
      // LangChain's stream reads one chunk ahead, so the break completes once chunk 2 exists.
      second.resolve();
      break;
    }
    third.resolve();
    inner.log.beforeChunk = undefined;
    const full = await collect(await model.stream('long answer please'));
    expect(sent).toBeLessThan(full.length - 1);
    expect(inner.log.stream).toBe(2);
    expect(full.length).toBeGreaterThan(3);
    await collect(await model.stream('long answer please'));
    expect(inner.log.stream).toBe(2);
  });

  it('streams a model that cannot stream through its cached invoke', async () => {
    class CountingEcho extends FakeChatModel {
      calls = 0;
      override async _generate(...args: Parameters<FakeChatModel['_generate']>) {
        this.calls++;
        return super._generate(...args);
      }
    }
    const inner = new CountingEcho({});
    const model = withCache(inner, { cache: memoryCache() });
    const first = await collect(await model.stream('echo me'));
    const second = await collect(await model.stream('echo me'));
    expect(first.map((chunk) => chunk.content)).toEqual(['echo me']);
    expect(second.map((chunk) => chunk.content)).toEqual(['echo me']);
    expect(inner.calls).toBe(1);
  });

  it('does not cache streams when streams: false', async () => {
    const inner = new ScriptedChatModel();
    const model = withCache(inner, { cache: memoryCache(), streams: false });
    await collect(await model.stream('x'));
    await collect(await model.stream('x'));
    expect(inner.log.stream).toBe(2);
  });

  it('still caches invoke() under a streaming callback handler when streams: false', async () => {
    const inner = new ScriptedChatModel();
    const model = withCache(inner, { cache: memoryCache(), streams: false });
    // streamEvents attaches a streaming handler: LangChain then runs the invoke() inside the step
    // as a stream (as LangGraph's streamMode: 'messages' does).
    const step = RunnableLambda.from(
      async (input: string, config) => (await model.invoke(input, config)).content,
    );
    const contents: unknown[] = [];
    for (let i = 0; i < 2; i++) {
      for await (const event of step.streamEvents('x', { version: 'v2' })) {
        if (event.event === 'on_chain_end' && event.name === step.getName()) contents.push(event.data.output);
      }
    }
    expect(inner.log.generate + inner.log.stream).toBe(1);
    expect(contents).toHaveLength(2);
    expect(contents[1]).toBe(contents[0]);
  });

  it('works inside a chain', async () => {
    const inner = new ScriptedChatModel();
    const prompt = ChatPromptTemplate.fromMessages([
      ['system', 'You are terse.'],
      ['human', 'Summarise: {text}'],
    ]);
    const chain = prompt.pipe(withCache(inner, { cache: memoryCache() })).pipe(new StringOutputParser());
    const first = await chain.invoke({ text: 'a long story' });
    const second = await chain.invoke({ text: 'a long story' });
    await chain.invoke({ text: 'another story' });
    expect(second).toBe(first);
    expect(inner.log.generate).toBe(2);
  });

  it('keys on the model identity: parameters count, API keys do not', async () => {
    const { dir, file, cleanup } = tempDir();
    closers.push(cleanup);
    const cache = createCache({ store: sqliteBackend({ path: file('cache.db') }) });
    const oldKey = 'AIzaSyOLDOLDOLDOLDOLDOLDOLD123';
    const newKey = 'AIzaSyNEWNEWNEWNEWNEWNEWNEW456';
    const before = new ScriptedChatModel({ apiKey: oldKey, temperature: 0 });
    await withCache(before, { cache }).invoke('hi');

    const rotated = new ScriptedChatModel({ apiKey: newKey, temperature: 0 });
    await withCache(rotated, { cache }).invoke('hi');
    expect(rotated.log.generate).toBe(0);

    const warmer = new ScriptedChatModel({ apiKey: newKey, temperature: 1 });
    await withCache(warmer, { cache }).invoke('hi');
    const other = new ScriptedChatModel({ apiKey: newKey, temperature: 0, model: 'scripted-2' });
    await withCache(other, { cache }).invoke('hi');
    expect(warmer.log.generate + other.log.generate).toBe(2);

    await cache.close();
    const disk = bytesOnDisk(dir);
    expect(disk).not.toContain(oldKey);
    expect(disk).not.toContain(newKey);
  });

  it('drops a credential the model declares in lc_secrets, whatever its name', async () => {
    class VaultModel extends ScriptedChatModel {
      vaultPass: string;
      constructor(fields: ConstructorParameters<typeof ScriptedChatModel>[0] & { vaultPass: string }) {
        super(fields);
        this.vaultPass = fields.vaultPass;
      }
      override get lc_secrets(): Record<string, string> {
        return { ...super.lc_secrets, vaultPass: 'VAULT_PASS' };
      }
    }
    const cache = memoryCache();
    const before = new VaultModel({ vaultPass: 'first-pass' });
    const after = new VaultModel({ vaultPass: 'second-pass' });
    expect(after.lc_kwargs).toMatchObject({ vaultPass: 'second-pass' });
    await withCache(before, { cache }).invoke('hi');
    await withCache(after, { cache }).invoke('hi');
    expect(after.log.generate).toBe(0);
  });

  it('tells apart models whose identifying params omit the model name', async () => {
    const cache = memoryCache();
    const small = new NamelessKeyModel({ model: 'small' });
    const large = new NamelessKeyModel({ model: 'large' });
    await withCache(small, { cache }).invoke('hi');
    await withCache(large, { cache }).invoke('hi');
    expect(small.log.generate + large.log.generate).toBe(2);
  });

  it('still hits after a restart on the same SQLite file, for invoke and stream', async () => {
    const { file, cleanup } = tempDir();
    closers.push(cleanup);
    const path = file('restart.db');
    const first = createCache({ store: sqliteBackend({ path }) });
    const before = new ScriptedChatModel();
    const answer = await withCache(before, { cache: first }).invoke('persist me');
    const chunks = await collect(await withCache(before, { cache: first }).stream('stream me'));
    await first.close();

    const second = createCache({ store: sqliteBackend({ path }) });
    closers.push(() => second.close());
    const after = new ScriptedChatModel();
    const model = withCache(after, { cache: second });
    expect((await model.invoke('persist me')).content).toBe(answer.content);
    const replay = await collect(await model.stream('stream me'));
    expect(replay.map((chunk) => chunk.content)).toEqual(chunks.map((chunk) => chunk.content));
    expect(after.log.generate + after.log.stream).toBe(0);
    expect(await second.stats()).toMatchObject({ hits: 2, inputTokensSaved: 24, outputTokensSaved: 10 });
  });

  it('keeps namespaces apart and honours tags', async () => {
    const cache = memoryCache();
    const inner = new ScriptedChatModel();
    const tenantA = withCache(inner, { cache, namespace: 'tenant-a', tags: ['faq'] });
    const tenantB = withCache(inner, { cache, namespace: 'tenant-b' });
    await tenantA.invoke('q');
    await tenantB.invoke('q');
    expect(inner.log.generate).toBe(2);
    await tenantA.invoke('q');
    expect(inner.log.generate).toBe(2);
    await cache.withNamespace('tenant-a').invalidateTags(['faq']);
    await tenantA.invoke('q');
    expect(inner.log.generate).toBe(3);
  });

  it('is a chat model: instanceof, name and identity of the wrapped model', () => {
    const inner = new ScriptedChatModel();
    const model = withCache(inner, { cache: memoryCache() });
    expect(model).toBeInstanceOf(CachedChatModel);
    expect(model.inner).toBe(inner);
    expect(model._llmType()).toBe('scripted');
    expect(model.getName()).toBe('ScriptedChatModel');
    expect(model.toJSON()).toEqual(inner.toJSON());
  });

  it('refuses something that is not a chat model, naming the fix', () => {
    expect(() => withCache({} as never, { cache: memoryCache() })).toThrow(/\[@x\/langchain-cache\].*— pass/);
  });
});
