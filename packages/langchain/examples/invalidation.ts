// Invalidation and statistics for what the adapters stored. FakeListChatModel stands in for your provider.
import { FakeListChatModel } from '@langchain/core/utils/testing';
import { createCache } from '@x/cache-core';
import { LangChainCache, withCache } from '@x/langchain-cache';

const cache = createCache();
const model = withCache(new FakeListChatModel({ responses: ['42'] }), { cache, namespace: 'weather-agent' });
const classic = new FakeListChatModel({
  responses: ['Paris.'],
  cache: new LangChainCache({ cache, tags: ['geography'] }),
});
await model.invoke('The answer?');
await classic.invoke('Capital of France?');

const agent = cache.withNamespace('weather-agent');
await agent.invalidate('langchain.chat'); // every wrapper entry of this namespace
await cache.invalidateTags(['geography']); // entries written with tags: ['geography']
await agent.clear(); // everything of one namespace (in this tier)

const stats = await model.view.stats(); // hits, misses, coalesced callers, tokens and cost saved
console.log(stats.hits, stats.misses, stats.inputTokensSaved);
await cache.close();
