/**
 * withCache(initChatModel(...)): the configurable model builds the provider's model for every call
 * and works only through its own invoke / stream. Through the cache, bound tools must reach the
 * provider, structured output must work, streams must stream, and the model a call configures
 * must be the one that answers (and is keyed).
 */
import { BaseCallbackHandler } from '@langchain/core/callbacks/base';
import { BaseChatModel } from '@langchain/core/language_models/chat_models';
import type { AIMessage } from '@langchain/core/messages';
import { HumanMessage } from '@langchain/core/messages';
import type { ChatGeneration } from '@langchain/core/outputs';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { withCache } from '../src/index.ts';
import type { CallLog, Responder, ScriptedChatModelFields } from './helpers.ts';
import { cleanupAfterEach, deferred, getWeather, OpenAILikeModel, ScriptedChatModel } from './helpers.ts';
import type { Providers } from './universal.ts';
import { initChatModel } from './universal.ts';

const { memoryCache } = cleanupAfterEach();

/** One request a provider received: the tools and response format it was sent. */
interface Request {
  tools: string[];
  format: string | undefined;
}

/**
 * Providers as `initChatModel` loads them: `openai` binds on a copy of itself (ChatOpenAI),
 * `anthropic` binds with a RunnableBinding (ChatAnthropic and most others), `plain` cannot stream.
 * The models built for each call share one request log.
 */
function providers(): { providers: Providers; requests: Request[]; log: CallLog } {
  const requests: Request[] = [];
  const log: CallLog = { generate: 0, stream: 0 };
  const respond: Responder = (_messages, options) => {
    const tools = (options.tools ?? []).map((tool) => (tool as { function: { name: string } }).function.name);
    requests.push({ tools, format: options.response_format?.type as string | undefined });
    if (options.response_format) return { content: '{"city":"Paris"}' };
    if (tools.length > 0) {
      return {
        content: '',
        tool_calls: [{ id: 'call_1', name: 'get_weather', args: { city: 'Paris' }, type: 'tool_call' }],
      };
    }
    return { content: 'The weather is fine, thank you for asking.' };
  };
  class OpenAI extends OpenAILikeModel {
    constructor(fields: ScriptedChatModelFields) {
      super({ respond, ...fields });
      this.log = log;
    }
  }
  class Anthropic extends ScriptedChatModel {
    constructor(fields: ScriptedChatModelFields) {
      super({ respond, ...fields });
      this.log = log;
    }
  }
  class Plain extends ScriptedChatModel {
    constructor(fields: ScriptedChatModelFields) {
      super({ respond, ...fields });
      this.log = log;
    }
  }
  (Plain.prototype as { _streamResponseChunks: unknown })._streamResponseChunks =
    BaseChatModel.prototype._streamResponseChunks;
  return { providers: { openai: OpenAI, anthropic: Anthropic, plain: Plain }, requests, log };
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

const weatherCall = [{ id: 'call_1', name: 'get_weather', args: { city: 'Paris' }, type: 'tool_call' }];

describe('withCache(initChatModel(...))', () => {
  it.each(['openai', 'anthropic'])(
    'sends the tools bound through the cache to the %s provider, and replays the tool call',
    async (provider) => {
      const { providers: classes, requests } = providers();
      const configurable = await initChatModel(classes, `${provider}:model-1`);
      const model = withCache(configurable, { cache: memoryCache() }).bindTools([getWeather]);
      const first = await model.invoke('Weather in Paris?');
      const second = await model.invoke('Weather in Paris?');
      expect(requests).toEqual([{ tools: ['get_weather'], format: undefined }]);
      expect(first.tool_calls).toEqual(weatherCall);
      expect(second.tool_calls).toEqual(weatherCall);

      // Tools bound before wrapping are queued on the configurable model: sent too.
      const prebound = withCache(configurable.bindTools([getWeather]), { cache: memoryCache() });
      expect((await prebound.invoke('Weather in Lyon?')).tool_calls).toEqual(weatherCall);
      expect(requests.at(-1)).toEqual({ tools: ['get_weather'], format: undefined });
    },
  );

  it('sends the bound tools when LangChain calls the model itself (generate), sharing entries with invoke', async () => {
    const { providers: classes, requests } = providers();
    for (const provider of ['openai', 'anthropic']) {
      requests.length = 0;
      const configurable = await initChatModel(classes, `${provider}:model-1`);
      const model = withCache(configurable, { cache: memoryCache() }).bindTools([getWeather]) as unknown as {
        generate: BaseChatModel['generate'];
        invoke: BaseChatModel['invoke'];
      };
      const generated = await model.generate([[new HumanMessage('Weather in Paris?')]]);
      const message = (generated.generations[0]![0]! as ChatGeneration).message as AIMessage;
      expect(message.tool_calls).toEqual(weatherCall);
      expect((await model.invoke('Weather in Paris?')).tool_calls).toEqual(weatherCall);
      expect(requests).toEqual([{ tools: ['get_weather'], format: undefined }]);
    }
  });

  it('serves withStructuredOutput from the cache, on invoke and stream', async () => {
    const { providers: classes, requests } = providers();
    const configurable = await initChatModel(classes, 'openai:model-1');
    const extractor = withCache(configurable, { cache: memoryCache() }).withStructuredOutput(
      z.object({ city: z.string() }),
    );
    expect(await extractor.invoke('Where?')).toEqual({ city: 'Paris' });
    expect(await extractor.invoke('Where?')).toEqual({ city: 'Paris' });
    expect((await collect(await extractor.stream('Where?'))).at(-1)).toEqual({ city: 'Paris' });
    expect(requests).toEqual([{ tools: [], format: 'json_schema' }]);
    // LangChain's generate() expects a chat model where the configurable one now resolves to a
    // model | parser sequence: a clear error instead of a TypeError.
    const generate = (extractor as unknown as BaseChatModel).generate([[new HumanMessage('Where?')]]);
    await expect(generate).rejects.toMatchObject({ code: 'E_INVALID_OPTION' });
    await expect(generate).rejects.toThrow(/withStructuredOutput.*call it with invoke\(\) or stream\(\)/);
  });

  it('streams chunk by chunk from the provider, and replays the chunks on a hit', async () => {
    const { providers: classes, log } = providers();
    const model = withCache(await initChatModel(classes, 'openai:model-1'), { cache: memoryCache() });
    const first = await collect(await model.stream('How is the weather?'));
    const second = await collect(await model.stream('How is the weather?'));
    expect(log).toMatchObject({ generate: 0, stream: 1 });
    expect(first.length).toBeGreaterThan(3);
    expect(second.map((chunk) => chunk.content)).toEqual(first.map((chunk) => chunk.content));
    expect(second.map((chunk) => chunk.content).join('')).toBe('The weather is fine, thank you for asking.');
  });

  it('streams a provider that cannot stream as one cached chunk, on every path', async () => {
    const { providers: classes, log } = providers();
    const model = withCache(await initChatModel(classes, 'plain:model-1'), { cache: memoryCache() });
    const first = await collect(await model.stream('How is the weather?'));
    const second = await collect(await model.stream('How is the weather?'));
    expect(first.map((chunk) => chunk.content)).toEqual(['The weather is fine, thank you for asking.']);
    expect(second.map((chunk) => chunk.content)).toEqual(['The weather is fine, thank you for asking.']);
    // A handler that prefers streaming makes LangChain stream generate() through the wrapper.
    const streaming = BaseCallbackHandler.fromMethods({ handleLLMNewToken() {} });
    Object.assign(streaming, { lc_prefer_streaming: true });
    const generated = await model.generate([[new HumanMessage('How is the weather?')]], {
      callbacks: [streaming],
    });
    expect(generated.generations[0]![0]!.text).toBe('The weather is fine, thank you for asking.');
    expect(log).toMatchObject({ generate: 1, stream: 0 });
  });

  it('runs concurrent identical calls through one model call', async () => {
    const { providers: classes, log } = providers();
    const model = withCache(await initChatModel(classes, 'openai:model-1'), { cache: memoryCache() });
    const gate = deferred();
    log.gate = gate.promise;
    const pending = Promise.all([model.invoke('Same question'), model.invoke('Same question')]);
    await new Promise((resolve) => setImmediate(resolve));
    gate.resolve();
    const [a, b] = await pending;
    expect(b.text).toBe(a.text);
    expect(log.generate).toBe(1);
  });

  it('answers with the model the call configures, and keys on it', async () => {
    const { providers: classes, log } = providers();
    const model = withCache(await initChatModel(classes, 'openai:model-small'), { cache: memoryCache() });
    const small = await model.invoke('Hi');
    const large = await model.invoke('Hi', { configurable: { model: 'model-large' } });
    const again = await model.invoke('Hi', { configurable: { model: 'model-large' } });
    expect(small.response_metadata.model_name).toBe('model-small');
    expect(large.response_metadata.model_name).toBe('model-large');
    expect(again.response_metadata.model_name).toBe('model-large');
    expect(log.generate).toBe(2);
    const streamed = await collect(await model.stream('Hi', { configurable: { model: 'model-other' } }));
    expect(streamed.at(-1)!.response_metadata.model_name).toBe('model-other');
  });

  it('answers streamEvents() (the chat-model event stream) with the model the call configures', async () => {
    class Named extends ScriptedChatModel {
      constructor(fields: ScriptedChatModelFields & { model?: string }) {
        super({ respond: () => ({ content: `I am ${fields.model}` }), ...fields });
      }
    }
    const model = withCache(await initChatModel({ named: Named }, 'named:model-small'), {
      cache: memoryCache(),
    });
    const events = await model.streamEvents('Hi', { configurable: { model: 'model-large' } });
    expect(events.text).toBe('I am model-large');
    expect((await model.streamEvents('Hi')).text).toBe('I am model-small');
  });

  it("keeps LangGraph's run fields out of the key when every field is configurable", async () => {
    const { providers: classes, log } = providers();
    const configurable = await initChatModel(classes, 'openai:model-1', { configurableFields: 'any' });
    const model = withCache(configurable, { cache: memoryCache() });
    // What a graph node's config carries: with 'any', each entry becomes a constructor argument.
    const step = (thread: string, n: number) => ({
      configurable: {
        thread_id: thread,
        checkpoint_ns: `agent:${n}`,
        checkpoint_id: `cp-${n}`,
        __pregel_scratchpad: { step: n },
        __pregel_task_id: `task-${n}`,
      },
    });
    await model.invoke('Hi', step('thread-a', 1));
    await model.invoke('Hi', step('thread-b', 2));
    expect(log.generate).toBe(1);
    // A configurable field that is a model setting still counts.
    await model.invoke('Hi', { configurable: { ...step('thread-b', 3).configurable, temperature: 0.9 } });
    expect(log.generate).toBe(2);
  });
});
