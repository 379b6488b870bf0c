// LangChain's own cache path: pass a LangChainCache as the `cache` option of any chat model.
// FakeListChatModel stands in for your provider (new ChatOpenAI({ model: 'gpt-4o-mini', cache })).
import { FakeListChatModel } from '@langchain/core/utils/testing';
import { createCache } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { LangChainCache } from '@x/langchain-cache';

const cache = createCache({ store: sqliteBackend({ path: '.cache/llm-cache.db' }) });

const model = new FakeListChatModel({
  responses: ['Paris.'],
  cache: new LangChainCache({ cache, ttl: '7d', tags: ['geography'] }),
});

const first = await model.invoke('What is the capital of France?'); // calls the model
const again = await model.invoke('What is the capital of France?'); // served from SQLite, even after a restart
console.log(first.content, again.content, again.usage_metadata); // usage is zero on a hit

const stats = await cache.stats();
console.log(`hit rate ${stats.hitRate}, ${stats.inputTokensSaved} input tokens saved`);
await cache.close();
