import type { BaseMessage } from '@langchain/core/messages';
import { AIMessage } from '@langchain/core/messages';
import type { ChatResult } from '@langchain/core/outputs';
import { FakeLLM } from '@langchain/core/utils/testing';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { CacheCandidate } from '../src/index.ts';
import { defaultShouldCache, LangChainCache, withCache } from '../src/index.ts';
import type { ScriptedCallOptions } from './helpers.ts';
import { AnthropicLikeModel, cleanupAfterEach, ScriptedChatModel, ScriptedJsonModel } from './helpers.ts';

const { memoryCache } = cleanupAfterEach();

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream);
}

/**
 * Reports the finish reason only in `generationInfo`, as ChatOpenAI does: LangChain merges it into
 * `response_metadata` after `_generate` returns, i.e. after the wrapper recorded the response.
 */
class GenerationInfoModel extends ScriptedChatModel {
  finishReason = 'length';

  override async _generate(messages: BaseMessage[], options: this['ParsedCallOptions']): Promise<ChatResult> {
    const result = await super._generate(messages, options);
    return {
      ...result,
      generations: result.generations.map(({ message }) => {
        const plain = new AIMessage({
          content: message.content,
          response_metadata: { model_name: this.model },
        });
        return { text: plain.text, message: plain, generationInfo: { finish_reason: this.finishReason } };
      }),
    };
  }
}

/** A scripted model whose answers end for `reason` (every provider spelling goes in response_metadata). */
function endingWith(metadata: Record<string, unknown>, content = 'a partial answer') {
  return new ScriptedChatModel({
    respond: () => ({ content, response_metadata: { finish_reason: undefined, ...metadata } }),
  });
}

const cutOffOrFiltered: Array<[string, Record<string, unknown>]> = [
  ['OpenAI length', { finish_reason: 'length' }],
  ['OpenAI content_filter', { finish_reason: 'content_filter' }],
  ['Anthropic max_tokens', { stop_reason: 'max_tokens' }],
  ['Anthropic refusal', { stop_reason: 'refusal' }],
  ['Google MAX_TOKENS', { finishReason: 'MAX_TOKENS' }],
  ['Google SAFETY', { finishReason: 'SAFETY' }],
  [
    'OpenAI Responses incomplete',
    { status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' } },
  ],
];

describe('withCache admission', () => {
  it.each(cutOffOrFiltered)(
    'answers but does not store a response that ended with %s',
    async (_, metadata) => {
      const cache = memoryCache();
      const inner = endingWith(metadata);
      const model = withCache(inner, { cache });

      const first = await model.invoke('Write a long story');
      const second = await model.invoke('Write a long story');

      expect(first.content).toBe('a partial answer');
      expect(second.content).toBe('a partial answer');
      expect(inner.log.generate).toBe(2);
      // A refused answer is a miss that writes nothing; it is not a failed write.
      expect(await cache.stats()).toMatchObject({ hits: 0, misses: 2, sets: 0, droppedWrites: 0 });
    },
  );

  it('reads the finish reason from generationInfo, where ChatOpenAI reports it', async () => {
    const inner = new GenerationInfoModel();
    const model = withCache(inner, { cache: memoryCache() });
    const answer = await model.invoke('Write a long story');
    expect(answer.response_metadata.finish_reason).toBe('length');
    await model.invoke('Write a long story');
    expect(inner.log.generate).toBe(2);

    inner.finishReason = 'stop';
    await model.invoke('Write a long story');
    await model.invoke('Write a long story');
    expect(inner.log.generate).toBe(3);
  });

  it('does not store an empty answer, but does store a tool call without text', async () => {
    const empty = new ScriptedChatModel({ respond: () => ({ content: '' }) });
    const emptyModel = withCache(empty, { cache: memoryCache() });
    await emptyModel.invoke('hello?');
    await emptyModel.invoke('hello?');
    expect(empty.log.generate).toBe(2);

    const toolCall = new ScriptedChatModel({
      respond: () => ({
        content: '',
        tool_calls: [{ id: 'call_1', name: 'get_weather', args: { city: 'Paris' }, type: 'tool_call' }],
      }),
    });
    const toolModel = withCache(toolCall, { cache: memoryCache() });
    await toolModel.invoke('weather?');
    const replay = await toolModel.invoke('weather?');
    expect(toolCall.log.generate).toBe(1);
    expect(replay.tool_calls).toHaveLength(1);
  });

  it('does not replay broken JSON to a structured-output retry', async () => {
    let content = '{"answer": 42';
    const inner = new ScriptedJsonModel({ respond: () => ({ content }) });
    const structured = withCache(inner, { cache: memoryCache() }).withStructuredOutput(
      z.object({ answer: z.number() }),
    );

    await expect(structured.invoke('The answer?')).rejects.toThrow();
    content = '{"answer": 42}';
    // The retry reaches the model instead of getting the broken answer back.
    expect(await structured.invoke('The answer?')).toEqual({ answer: 42 });
    expect(await structured.invoke('The answer?')).toEqual({ answer: 42 });
    expect(inner.log.generate).toBe(2);
  });

  it.each([
    ['a Zod schema', z.object({ city: z.string() })],
    ['a JSON schema', { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }],
  ])('stores JSON that LangChain parses from a fence after prose, with %s', async (_, schema) => {
    const inner = new ScriptedJsonModel({
      respond: () => ({ content: 'Here you go:\n```json\n{"city":"Paris"}\n```' }),
    });
    const structured = withCache(inner, { cache: memoryCache() }).withStructuredOutput(schema);
    expect(await structured.invoke('Where?')).toEqual({ city: 'Paris' });
    expect(await structured.invoke('Where?')).toEqual({ city: 'Paris' });
    expect(inner.log.generate).toBe(1);
  });

  it('checks JSON asked for with a response_format call option, fenced JSON included', async () => {
    let content = 'Sure! Here is the JSON: {"a": 1}';
    const inner = new ScriptedChatModel({ respond: () => ({ content }) });
    const model = withCache(inner, { cache: memoryCache() });
    const call = () =>
      model.invoke('As JSON', { response_format: { type: 'json_object' } } as ScriptedCallOptions);

    await call();
    await call();
    expect(inner.log.generate).toBe(2);
    content = '```json\n{"a": 1}\n```';
    await call();
    await call();
    expect(inner.log.generate).toBe(3);
    // Without a JSON request, the same prose is an answer like any other.
    await model.invoke('As prose');
    await model.invoke('As prose');
    expect(inner.log.generate).toBe(4);
  });

  it('judges a stream by its aggregated message before storing it', async () => {
    const inner = endingWith({ finish_reason: 'length' });
    const model = withCache(inner, { cache: memoryCache() });
    await drain(await model.stream('Write a long story'));
    await drain(await model.stream('Write a long story'));
    expect(inner.log.stream).toBe(2);

    const complete = new ScriptedChatModel();
    const completeModel = withCache(complete, { cache: memoryCache() });
    await drain(await completeModel.stream('Write a short story'));
    await drain(await completeModel.stream('Write a short story'));
    expect(complete.log.stream).toBe(1);
  });

  it('takes a shouldCache that extends the default, and hands it the request and the answer', async () => {
    const candidates: CacheCandidate[] = [];
    const inner = endingWith({ finish_reason: 'length' });
    const model = withCache(inner, {
      cache: memoryCache(),
      shouldCache: (candidate) => {
        candidates.push(candidate);
        return defaultShouldCache(candidate) || candidate.finishReason === 'length';
      },
    });
    await model.invoke('Write a long story', { response_format: { type: 'text' } } as ScriptedCallOptions);
    await model.invoke('Write a long story', { response_format: { type: 'text' } } as ScriptedCallOptions);
    await drain(await model.stream('Another story'));

    expect(inner.log).toMatchObject({ generate: 1, stream: 1 });
    expect(
      candidates.map(({ type, finishReason, text, json }) => ({ type, finishReason, text, json })),
    ).toEqual([
      { type: 'generate', finishReason: 'length', text: 'a partial answer', json: false },
      { type: 'stream', finishReason: 'length', text: 'a partial answer', json: false },
    ]);
    expect(candidates[0]!.params).toMatchObject({ model: 'scripted-1', response_format: { type: 'text' } });
    // The candidate's usage is the provider's, not a hit's zero.
    expect((candidates[0]!.generations[0] as { message: AIMessage }).message.usage_metadata).toMatchObject({
      input_tokens: 12,
    });
  });

  it('reports a shouldCache that throws to onError and still answers', async () => {
    const cache = memoryCache();
    const errors: unknown[] = [];
    const model = withCache(new ScriptedChatModel(), {
      cache,
      onError: (error) => errors.push(error),
      shouldCache: () => {
        throw new Error('rule failed');
      },
    });
    expect(String((await model.invoke('hi')).content)).toMatch(/^answer /);
    expect(errors).toEqual([new Error('rule failed')]);
    expect(await cache.stats()).toMatchObject({ sets: 0, droppedWrites: 1 });
  });
});

describe('admission of answers whose stop reason is only in additional_kwargs (a streamed ChatAnthropic)', () => {
  it.each(['max_tokens', 'refusal', 'pause_turn'])(
    'does not store a streamed answer that stopped with %s, through any path',
    async (stopReason) => {
      const seen: Array<string | undefined> = [];
      const shouldCache = (candidate: CacheCandidate) => {
        seen.push(candidate.finishReason);
        return defaultShouldCache(candidate);
      };
      // .stream(): judged by the message aggregated from the recorded chunks.
      const streamed = new AnthropicLikeModel({ stopReason });
      const model = withCache(streamed, { cache: memoryCache(), shouldCache });
      await drain(await model.stream('Write a long story'));
      await drain(await model.stream('Write a long story'));
      expect(streamed.requests).toBe(2);

      // streamEvents (like LangGraph's streamMode: 'messages') attaches a streaming handler, so
      // LangChain streams invoke() through the same recording.
      await drain(model.streamEvents('Another story', { version: 'v2' }));
      await drain(model.streamEvents('Another story', { version: 'v2' }));
      expect(streamed.requests).toBe(4);

      // streaming: true makes invoke() concatenate the stream inside the model.
      const invoked = new AnthropicLikeModel({ stopReason, streaming: true });
      const invokedModel = withCache(invoked, { cache: memoryCache(), shouldCache });
      await invokedModel.invoke('Write a long story');
      await invokedModel.invoke('Write a long story');
      expect(invoked.requests).toBe(2);

      // LangChain's own cache path is handed the same concatenated message.
      const classic = new AnthropicLikeModel({
        stopReason,
        streaming: true,
        cache: new LangChainCache({ cache: memoryCache(), shouldCache }),
      });
      await classic.invoke('Write a long story');
      await classic.invoke('Write a long story');
      expect(classic.requests).toBe(2);
      expect(seen).toEqual(Array(8).fill(stopReason));
    },
  );

  it('stores a streamed answer that ended its turn', async () => {
    const inner = new AnthropicLikeModel();
    const model = withCache(inner, { cache: memoryCache() });
    await drain(await model.stream('Write a short story'));
    const replay: string[] = [];
    for await (const chunk of await model.stream('Write a short story')) replay.push(chunk.text);
    expect(inner.requests).toBe(1);
    expect(replay.join('')).toBe('Once upon a time');
  });
});

describe('LangChainCache admission', () => {
  it('does not store a response LangChain hands it that was cut off', async () => {
    const cache = memoryCache();
    const inner = new GenerationInfoModel({ cache: new LangChainCache({ cache }) });
    await inner.invoke('Write a long story');
    await inner.invoke('Write a long story');
    expect(inner.log.generate).toBe(2);
    expect(await cache.stats()).toMatchObject({ hits: 0, misses: 2, sets: 0 });

    inner.finishReason = 'stop';
    await inner.invoke('Write a long story');
    await inner.invoke('Write a long story');
    expect(inner.log.generate).toBe(3);
  });

  it('does not store an empty LLM completion', async () => {
    const cache = memoryCache();
    const llm = new FakeLLM({ response: '', cache: new LangChainCache({ cache }) });
    await llm.invoke('Tell me a story');
    await llm.invoke('Tell me a story');
    expect(await cache.stats()).toMatchObject({ hits: 0, misses: 2, sets: 0 });
  });

  it('applies a custom shouldCache to the generations and the llmString parameters', async () => {
    const candidates: CacheCandidate[] = [];
    const inner = endingWith({ stop_reason: 'max_tokens' });
    inner.cache = new LangChainCache({
      cache: memoryCache(),
      shouldCache: (candidate) => {
        candidates.push(candidate);
        return true;
      },
    });
    await inner.invoke('Write a long story');
    await inner.invoke('Write a long story');
    expect(inner.log.generate).toBe(1);
    expect(candidates).toHaveLength(1);
    expect(candidates[0]).toMatchObject({ type: 'generate', finishReason: 'max_tokens', json: false });
    expect(candidates[0]!.params).toMatchObject({ model_name: 'scripted-1' });
    expect(defaultShouldCache(candidates[0]!)).toBe(false);
  });
});
