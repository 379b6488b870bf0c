import { BaseCallbackHandler } from '@langchain/core/callbacks/base';
import { AIMessage, AIMessageChunk, HumanMessage } from '@langchain/core/messages';
import { FakeListChatModel, FakeLLM } from '@langchain/core/utils/testing';
import { CacheError, createCache } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { LangChainCache, withCache } from '../src/index.ts';
import {
  bytesOnDisk,
  getTime,
  getWeather,
  ManualClock,
  NamelessKeyModel,
  ScriptedChatModel,
  tempDir,
} from './helpers.ts';

class CountingLLM extends FakeLLM {
  calls = 0;
  override async _call(prompt: string, options: this['ParsedCallOptions']): Promise<string> {
    this.calls++;
    return super._call(prompt, options);
  }
}

/** A callback handler that prefers streaming, as LangGraph's message streaming does. */
class StreamingHandler extends BaseCallbackHandler {
  name = 'streaming-handler';
  lc_prefer_streaming = true;
}

const toolCallResponder = () => ({
  content: 'Looking it up.',
  tool_calls: [{ id: 'call_42', name: 'lookup', args: { q: 'langchain' }, type: 'tool_call' as const }],
  additional_kwargs: { reasoning: { summary: 'user wants a lookup' } },
  response_metadata: { system_fingerprint: 'fp_1' },
});

/** Answers with the names of the tools the call offered, whatever their form. */
const toolNamesResponder = (_messages: unknown, options: { tools?: Record<string, unknown>[] }) => ({
  content: `tools: ${(options.tools ?? [])
    .map((each) => (each.function as { name?: string } | undefined)?.name ?? each.name)
    .join(',')}`,
});

const closers: Array<() => unknown> = [];
afterEach(async () => {
  while (closers.length > 0) await closers.pop()!();
});

function memoryCache(clock?: ManualClock) {
  const cache = createCache(clock ? { clock } : {});
  closers.push(() => cache.close());
  return cache;
}

describe('LangChainCache', () => {
  it('restores the complete AIMessage of a chat model on a hit and counts the tokens saved', async () => {
    const cache = memoryCache();
    const model = new ScriptedChatModel({ cache: new LangChainCache({ cache }), respond: toolCallResponder });

    const first = await model.invoke('Search for langchain');
    const second = await model.invoke('Search for langchain');

    expect(model.log.generate).toBe(1);
    expect(second).toBeInstanceOf(AIMessage);
    expect(second.content).toBe('Looking it up.');
    expect(second.tool_calls).toEqual(first.tool_calls);
    expect(second.tool_calls?.[0]).toMatchObject({ id: 'call_42', name: 'lookup', args: { q: 'langchain' } });
    expect(second.additional_kwargs).toEqual(first.additional_kwargs);
    expect(second.id).toBe(first.id);
    expect(second.response_metadata).toMatchObject({
      model_name: 'scripted-1',
      finish_reason: 'tool_calls',
      system_fingerprint: 'fp_1',
    });
    expect(first.usage_metadata).toMatchObject({ input_tokens: 12, output_tokens: 5 });
    expect(second.usage_metadata).toEqual({ input_tokens: 0, output_tokens: 0, total_tokens: 0 });
    expect(await cache.stats()).toMatchObject({
      hits: 1,
      misses: 1,
      inputTokensSaved: 12,
      outputTokensSaved: 5,
    });
  });

  it('keeps the message class: a streamed generation comes back as an AIMessageChunk', async () => {
    const cache = memoryCache();
    const model = new ScriptedChatModel({ cache: new LangChainCache({ cache }), respond: toolCallResponder });
    const options = { callbacks: [new StreamingHandler()] };

    const first = await model.invoke('stream it', options);
    const second = await model.invoke('stream it', options);

    expect(model.log.stream).toBe(1);
    expect(first).toBeInstanceOf(AIMessageChunk);
    expect(second).toBeInstanceOf(AIMessageChunk);
    expect(second.content).toBe(first.content);
    expect(second.tool_calls).toEqual(first.tool_calls);
    expect((second as AIMessageChunk).tool_call_chunks).toEqual((first as AIMessageChunk).tool_call_chunks);
  });

  it("caches LangChain's fake chat model", async () => {
    const model = new FakeListChatModel({
      responses: ['one', 'two'],
      cache: new LangChainCache({ cache: memoryCache() }),
    });
    expect((await model.invoke('hi')).content).toBe('one');
    expect((await model.invoke('hi')).content).toBe('one');
  });

  it("does not replay the first run's id: a hit is not that run's message", async () => {
    const model = new FakeListChatModel({
      responses: ['one', 'two'],
      cache: new LangChainCache({ cache: memoryCache() }),
    });
    // With a callback handler LangChain gives each run an id and stamps `run-<id>` on its answer.
    const callbacks = [BaseCallbackHandler.fromMethods({ handleLLMStart: () => undefined })];
    const first = await model.invoke('hi', { callbacks });
    const second = await model.invoke('hi', { callbacks });
    expect(first.id).toMatch(/^run-/);
    expect(second.content).toBe('one');
    expect(second.id).not.toBe(first.id);
  });

  it('caches an LLM', async () => {
    const cache = memoryCache();
    const llm = new CountingLLM({ cache: new LangChainCache({ cache }) });
    expect(await llm.invoke('Tell me a joke')).toBe('Tell me a joke');
    expect(await llm.invoke('Tell me a joke')).toBe('Tell me a joke');
    expect(llm.calls).toBe(1);
    const batch = await llm.batch(['Tell me a joke', 'Another']);
    expect(batch).toEqual(['Tell me a joke', 'Another']);
    expect(llm.calls).toBe(2);
  });

  it('keeps API keys out of the key and the store, so rotating a key keeps the cache', async () => {
    const { dir, file, cleanup } = tempDir();
    closers.push(cleanup);
    const cache = createCache({ store: sqliteBackend({ path: file('keys.db') }) });
    const lcCache = new LangChainCache({ cache });
    const oldKey = 'AIzaSyOLDOLDOLDOLDOLDOLDOLD789';
    const newKey = 'AIzaSyNEWNEWNEWNEWNEWNEWNEW012';

    const before = new ScriptedChatModel({ apiKey: oldKey, cache: lcCache });
    // The llmString LangChain hands the cache really does carry the key.
    expect(before._getSerializedCacheKeyParametersForCall({} as never)).toContain(oldKey);
    await before.invoke('hello');

    const rotated = new ScriptedChatModel({ apiKey: newKey, cache: lcCache });
    await rotated.invoke('hello');
    expect(rotated.log.generate).toBe(0);

    const otherModel = new ScriptedChatModel({ apiKey: newKey, model: 'scripted-2', cache: lcCache });
    await otherModel.invoke('hello');
    expect(otherModel.log.generate).toBe(1);

    await cache.close();
    const disk = bytesOnDisk(dir);
    expect(disk).not.toContain(oldKey);
    expect(disk).not.toContain(newKey);
    expect(disk).not.toContain('OLDOLDOLD');
  });

  it('drops extra secret names given in secretKeys', async () => {
    const cache = memoryCache();
    class TenantModel extends ScriptedChatModel {
      tenantPin = 'pin-1';
      override _identifyingParams() {
        return { ...super._identifyingParams(), tenantPin: this.tenantPin };
      }
    }
    const lcCache = new LangChainCache({ cache, secretKeys: ['tenant_pin'] });
    const a = new TenantModel({ cache: lcCache });
    const b = new TenantModel({ cache: lcCache });
    b.tenantPin = 'pin-2';
    await a.invoke('x');
    await b.invoke('x');
    expect(b.log.generate).toBe(0);
  });

  it('expires entries after their TTL (on an injected clock)', async () => {
    const clock = new ManualClock();
    const cache = memoryCache(clock);
    const model = new ScriptedChatModel({ cache: new LangChainCache({ cache, ttl: '1h' }) });
    await model.invoke('q');
    clock.advance(59 * 60_000);
    await model.invoke('q');
    expect(model.log.generate).toBe(1);
    clock.advance(2 * 60_000);
    await model.invoke('q');
    expect(model.log.generate).toBe(2);
  });

  it('invalidates by tag and keeps namespaces apart', async () => {
    const cache = memoryCache();
    const model = new ScriptedChatModel({
      cache: new LangChainCache({ cache, namespace: 'app-a', tags: ['v1'] }),
    });
    const other = new ScriptedChatModel({ cache: new LangChainCache({ cache, namespace: 'app-b' }) });
    await model.invoke('q');
    await other.invoke('q');
    expect(other.log.generate).toBe(1);
    await model.invoke('q');
    expect(model.log.generate).toBe(1);
    expect(await cache.withNamespace('app-a').invalidateTags(['v1'])).toBe(1);
    await model.invoke('q');
    expect(model.log.generate).toBe(2);
  });

  it('still hits after a restart on the same SQLite file', async () => {
    const { file, cleanup } = tempDir();
    closers.push(cleanup);
    const path = file('restart.db');
    const first = createCache({ store: sqliteBackend({ path }) });
    const before = new ScriptedChatModel({
      cache: new LangChainCache({ cache: first }),
      respond: toolCallResponder,
    });
    const answer = await before.invoke('persist');
    await first.close();

    const second = createCache({ store: sqliteBackend({ path }) });
    closers.push(() => second.close());
    const after = new ScriptedChatModel({
      cache: new LangChainCache({ cache: second }),
      respond: toolCallResponder,
    });
    const replay = await after.invoke('persist');
    expect(after.log.generate).toBe(0);
    expect(replay.tool_calls).toEqual(answer.tool_calls);
    expect(replay).toBeInstanceOf(AIMessage);
  });

  it('reports a write the cache refuses without failing the call', async () => {
    const cache = createCache({ quotas: { default: { maxEntries: 1, onExceed: 'reject' } } });
    closers.push(() => cache.close());
    const errors: unknown[] = [];
    const model = new ScriptedChatModel({
      cache: new LangChainCache({ cache, onError: (error) => errors.push(error) }),
    });
    await model.invoke('first');
    expect(errors).toEqual([]);
    const second = await model.invoke('second');
    expect(second.content).toMatch(/^answer /);
    expect(errors).toHaveLength(1);
    expect(CacheError.isInstance(errors[0]) && errors[0].code).toBe('E_QUOTA_EXCEEDED');
    // view.set with the policy's onStoreError: reported there and counted as a dropped write.
    expect(await cache.stats()).toMatchObject({ sets: 1, droppedWrites: 1 });
  });

  it("zeroes the provider's usage records in response_metadata on a hit", async () => {
    const usage = { input_tokens: 12, output_tokens: 5, cache_creation: { ephemeral_5m_input_tokens: 4 } };
    const model = new ScriptedChatModel({
      cache: new LangChainCache({ cache: memoryCache() }),
      respond: () => ({ content: 'Paris.', response_metadata: { usage } }),
    });
    const first = await model.invoke('Capital of France?');
    const hit = await model.invoke('Capital of France?');
    expect(first.response_metadata.usage).toEqual(usage);
    expect(hit.response_metadata.usage).toEqual({
      input_tokens: 0,
      output_tokens: 0,
      cache_creation: { ephemeral_5m_input_tokens: 0 },
    });
    expect(hit.usage_metadata).toEqual({ input_tokens: 0, output_tokens: 0, total_tokens: 0 });
  });

  it('does not cache a call whose tools LangChain cannot serialise: tool() objects as call options', async () => {
    const cache = memoryCache();
    const model = new ScriptedChatModel({
      cache: new LangChainCache({ cache }),
      respond: toolNamesResponder,
    });
    // LangChain's llmString renders both tools as {"lc":1,"type":"not_implemented",…}: one key.
    const weather = await model.invoke('What can you do?', { tools: [getWeather] as never });
    const time = await model.invoke('What can you do?', { tools: [getTime] as never });
    expect(weather.content).toBe('tools: get_weather');
    expect(time.content).toBe('tools: get_time');
    await model.invoke('What can you do?', { tools: [getWeather] as never });
    expect(model.log.generate).toBe(3);
    expect(await cache.stats()).toMatchObject({ hits: 0, misses: 3, sets: 0 });

    // withCache keys such tools by name, description and schema.
    const wrapped = new ScriptedChatModel({ respond: toolNamesResponder });
    const cached = withCache(wrapped, { cache });
    await cached.invoke('What can you do?', { tools: [getWeather] as never });
    const timeAgain = await cached.invoke('What can you do?', { tools: [getTime] as never });
    const weatherAgain = await cached.invoke('What can you do?', { tools: [getWeather] as never });
    expect(timeAgain.content).toBe('tools: get_time');
    expect(weatherAgain.content).toBe('tools: get_weather');
    expect(wrapped.log.generate).toBe(2);
  });

  it('caches tools bound with bindTools (JSON schemas in the llmString), one entry per tool', async () => {
    const cache = memoryCache();
    const model = new ScriptedChatModel({
      cache: new LangChainCache({ cache }),
      respond: toolNamesResponder,
    });
    const weather = model.bindTools([getWeather]);
    const time = model.bindTools([getTime]);
    expect((await weather.invoke('What can you do?')).content).toBe('tools: get_weather');
    expect((await time.invoke('What can you do?')).content).toBe('tools: get_time');
    expect((await weather.invoke('What can you do?')).content).toBe('tools: get_weather');
    expect((await time.invoke('What can you do?')).content).toBe('tools: get_time');
    expect(model.log.generate).toBe(2);
    expect(await cache.stats()).toMatchObject({ hits: 2, misses: 2, sets: 2 });
  });

  describe('where LangChain hands it too little (use withCache there)', () => {
    const imageMessage = (image: string) =>
      new HumanMessage({
        content: [
          { type: 'text', text: 'What is in this picture?' },
          { type: 'image_url', image_url: { url: `data:image/png;base64,${image}` } },
        ],
      });

    it('cannot tell two images apart: LangChain keys both prompts as "[image]"', async () => {
      const cache = memoryCache();
      const model = new ScriptedChatModel({ cache: new LangChainCache({ cache }) });
      const cat = await model.invoke([imageMessage('Y2F0')]);
      const dog = await model.invoke([imageMessage('ZG9n')]);
      // The second picture got the first picture's answer.
      expect(model.log.generate).toBe(1);
      expect(dog.content).toBe(cat.content);

      const wrapped = new ScriptedChatModel();
      const cached = withCache(wrapped, { cache });
      const catAgain = await cached.invoke([imageMessage('Y2F0')]);
      const dogAgain = await cached.invoke([imageMessage('ZG9n')]);
      expect(wrapped.log.generate).toBe(2);
      expect(dogAgain.content).not.toBe(catAgain.content);
    });

    it("cannot tell models apart when the model's llmKey omits the model name", async () => {
      const cache = memoryCache();
      const lcCache = new LangChainCache({ cache });
      const small = new NamelessKeyModel({ model: 'small', cache: lcCache });
      const large = new NamelessKeyModel({ model: 'large', cache: lcCache });
      await small.invoke('hi');
      await large.invoke('hi');
      expect(large.log.generate).toBe(0);

      const smallWrapped = new NamelessKeyModel({ model: 'small' });
      const largeWrapped = new NamelessKeyModel({ model: 'large' });
      await withCache(smallWrapped, { cache }).invoke('hi');
      await withCache(largeWrapped, { cache }).invoke('hi');
      expect(largeWrapped.log.generate).toBe(1);
    });

    it('never sees .stream(): LangChain streams past the cache', async () => {
      const model = new ScriptedChatModel({ cache: new LangChainCache({ cache: memoryCache() }) });
      for await (const _chunk of await model.stream('s'));
      for await (const _chunk of await model.stream('s'));
      expect(model.log.stream).toBe(2);
    });
  });
});
