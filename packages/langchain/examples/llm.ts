// The same BaseCache works for text-completion LLMs. FakeLLM stands in for e.g. new OpenAI({ cache }).
import { FakeLLM } from '@langchain/core/utils/testing';
import { createCache } from '@x/cache-core';
import { LangChainCache } from '@x/langchain-cache';

const cache = createCache(); // memory only; pass `store: sqliteBackend()` to persist

const llm = new FakeLLM({
  response: 'Once upon a time…',
  cache: new LangChainCache({ cache, namespace: 'stories' }),
});

console.log(await llm.invoke('Tell me a story')); // calls the LLM
console.log(await llm.invoke('Tell me a story')); // from the cache
console.log(await llm.batch(['Tell me a story', 'Tell me another'])); // only the second prompt is sent

await cache.close();
