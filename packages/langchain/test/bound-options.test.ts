/**
 * Options bound on a copy of the model, as ChatOpenAI binds tools and structured output: the
 * provider must receive them through the cache, on invoke and stream alike, and a hit must replay
 * the answer given to them.
 */
import type { AIMessageChunk } from '@langchain/core/messages';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { withCache } from '../src/index.ts';
import type { Responder } from './helpers.ts';
import { cleanupAfterEach, getWeather, OpenAILikeModel } from './helpers.ts';

const { memoryCache } = cleanupAfterEach();

/** Calls the weather tool when it is offered, answers JSON when asked for it, text otherwise. */
const respond: Responder = (_messages, options) => {
  if (options.response_format) return { content: '{"city":"Paris"}' };
  if (options.tools?.length) {
    return {
      content: '',
      tool_calls: [{ id: 'call_1', name: 'get_weather', args: { city: 'Paris' }, type: 'tool_call' }],
    };
  }
  return { content: 'I cannot look up the weather.' };
};

async function streamed(stream: AsyncIterable<AIMessageChunk>): Promise<AIMessageChunk> {
  let all: AIMessageChunk | undefined;
  for await (const chunk of stream) all = all ? all.concat(chunk) : chunk;
  return all!;
}

const weatherCall = [{ id: 'call_1', name: 'get_weather', args: { city: 'Paris' }, type: 'tool_call' }];

describe('options a model binds on a copy of itself (ChatOpenAI)', () => {
  it('sends the tools of withCache(model).bindTools() on invoke, and replays the tool call', async () => {
    const inner = new OpenAILikeModel({ respond });
    const model = withCache(inner, { cache: memoryCache() }).bindTools([getWeather]);
    const first = await model.invoke('Weather in Paris?');
    expect(inner.sent).toEqual([{ tools: ['get_weather'], response_format: undefined }]);
    expect(first.tool_calls).toEqual(weatherCall);

    const second = await model.invoke('Weather in Paris?');
    expect(inner.sent).toHaveLength(1);
    expect(second.tool_calls).toEqual(weatherCall);
  });

  it('sends the tools of withCache(model.bindTools()) on invoke, and replays the tool call', async () => {
    const inner = new OpenAILikeModel({ respond });
    const bound = inner.bindTools([getWeather]) as unknown as OpenAILikeModel;
    const model = withCache(bound, { cache: memoryCache() });
    expect((await model.invoke('Weather in Paris?')).tool_calls).toEqual(weatherCall);
    expect((await model.invoke('Weather in Paris?')).tool_calls).toEqual(weatherCall);
    expect(inner.sent).toEqual([{ tools: ['get_weather'], response_format: undefined }]);
  });

  it('streams with the tools, replays the tool call, and shares entries with invoke either way', async () => {
    const inner = new OpenAILikeModel({ respond });
    const model = withCache(inner, { cache: memoryCache() }).bindTools([getWeather]);
    expect((await streamed(await model.stream('Weather in Paris?'))).tool_calls).toEqual(weatherCall);
    expect((await streamed(await model.stream('Weather in Paris?'))).tool_calls).toEqual(weatherCall);
    expect((await model.invoke('Weather in Paris?')).tool_calls).toEqual(weatherCall);
    expect(inner.sent).toEqual([{ tools: ['get_weather'], response_format: undefined }]);

    // Invoked first, then streamed: the stream replays the answer the provider gave to the tools.
    const other = new OpenAILikeModel({ respond });
    const invoked = withCache(other, { cache: memoryCache() }).bindTools([getWeather]);
    expect((await invoked.invoke('Weather in Paris?')).tool_calls).toEqual(weatherCall);
    expect((await streamed(await invoked.stream('Weather in Paris?'))).tool_calls).toEqual(weatherCall);
    expect(other.sent).toEqual([{ tools: ['get_weather'], response_format: undefined }]);
  });

  it('sends the response_format of withStructuredOutput(), on invoke and stream, and replays the object', async () => {
    const schema = z.object({ city: z.string() });
    const inner = new OpenAILikeModel({ respond });
    const model = withCache(inner, { cache: memoryCache() }).withStructuredOutput(schema);
    expect(await model.invoke('Where?')).toEqual({ city: 'Paris' });
    expect(await model.invoke('Where?')).toEqual({ city: 'Paris' });
    const parts: unknown[] = [];
    for await (const part of await model.stream('Where?')) parts.push(part);
    expect(parts.at(-1)).toEqual({ city: 'Paris' });
    expect(inner.sent).toEqual([{ tools: [], response_format: 'json_schema' }]);

    // Streamed first, then invoked: one request, with the format.
    const other = new OpenAILikeModel({ respond });
    const streaming = withCache(other, { cache: memoryCache() }).withStructuredOutput(schema);
    for await (const part of await streaming.stream('Where?')) parts.push(part);
    expect(await streaming.invoke('Where?')).toEqual({ city: 'Paris' });
    expect(other.sent).toEqual([{ tools: [], response_format: 'json_schema' }]);
  });
});
