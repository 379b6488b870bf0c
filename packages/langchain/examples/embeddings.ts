// Embeddings cached text by text. SyntheticEmbeddings stands in for e.g. new OpenAIEmbeddings().
import { SyntheticEmbeddings } from '@langchain/core/utils/testing';
import { createCache } from '@x/cache-core';
import { CachedEmbeddings } from '@x/langchain-cache';

const cache = createCache();
const embeddings = new CachedEmbeddings(new SyntheticEmbeddings({ vectorSize: 8 }), {
  cache, // vectors go to the cache's `embeddings` tier (30 days by default)
  model: 'synthetic-8', // detected from `model` / `modelName` when the class has one
});

await embeddings.embedDocuments(['alpha', 'beta']); // both sent to the provider
const vectors = await embeddings.embedDocuments(['beta', 'gamma', 'alpha']); // only 'gamma' is sent
const query = await embeddings.embedQuery('alpha'); // queries are cached separately from documents
console.log(vectors.length, query.length);

// Use it wherever LangChain takes embeddings, e.g. MemoryVectorStore.fromTexts(texts, metadata, embeddings).
await cache.close();
