// The full-fidelity wrapper: keys on the complete messages (images included), tools and options,
// caches streams, and coalesces concurrent identical calls. FakeStreamingChatModel stands in for
// your provider's chat model class.
import { AIMessageChunk, HumanMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { FakeStreamingChatModel } from '@langchain/core/utils/testing';
import { createCache } from '@x/cache-core';
import { withCache } from '@x/langchain-cache';
import { z } from 'zod';

const cache = createCache();

const provider = new FakeStreamingChatModel({
  sleep: 0,
  chunks: [
    new AIMessageChunk({ content: 'Checking the weather. ' }),
    new AIMessageChunk({
      content: '',
      tool_calls: [{ id: 'call_1', name: 'get_weather', args: { city: 'Paris' }, type: 'tool_call' }],
    }),
  ],
});

const model = withCache(provider, { cache, ttl: '1d', namespace: 'weather-agent' });

const getWeather = tool(async ({ city }) => `Sunny in ${city}`, {
  name: 'get_weather',
  description: 'Current weather for a city',
  schema: z.object({ city: z.string() }),
});

// Bound tools are part of the key, and the bound model still answers from the cache.
const agentModel = model.bindTools([getWeather]);

// Streams are recorded live; a repeat replays the same chunks, tool-call chunks included.
for await (const chunk of await agentModel.stream('Weather in Paris?'))
  console.log(chunk.content, chunk.tool_calls);
for await (const chunk of await agentModel.stream('Weather in Paris?'))
  console.log(chunk.content, chunk.tool_calls);

// invoke() of the same request is answered from the recorded stream.
const call = await agentModel.invoke('Weather in Paris?');
console.log(call.tool_calls); // [{ id: 'call_1', name: 'get_weather', args: { city: 'Paris' }, … }]

// Multimodal content is keyed byte for byte: two different images never share an answer.
const photo = (base64: string) =>
  new HumanMessage({
    content: [
      { type: 'text', text: 'What is in this photo?' },
      { type: 'image_url', image_url: { url: `data:image/png;base64,${base64}` } },
    ],
  });
await model.invoke([photo('iVBORw0KGgoAAAANSUhEUg==')]);

// Concurrent identical calls run the model once.
await Promise.all([model.invoke('Same question'), model.invoke('Same question')]);

console.log(await model.view.stats()); // hits, misses, coalesced callers, tokens saved
await cache.close();
