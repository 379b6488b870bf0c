export type { LangChainCacheOptions } from './base-cache.ts';
export { LangChainCache } from './base-cache.ts';
export type { WithCacheOptions } from './chat-model.ts';
export { CachedChatModel, withCache } from './chat-model.ts';
export type { CachedEmbeddingsOptions } from './embeddings.ts';
export { CachedEmbeddings } from './embeddings.ts';
export type { CachedChatRecord, CachedGeneration, CachedMessage } from './messages.ts';
export type { SharedCacheOptions } from './options.ts';
