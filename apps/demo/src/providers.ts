/**
 * Which models the demo talks to: the LOCAL STAND-INS by default (offline, no API key), or real
 * providers when OPENAI_API_KEY or ANTHROPIC_API_KEY is set (OpenAI wins when both are). Anthropic
 * has no embedding models, so with only ANTHROPIC_API_KEY the embeddings stay local.
 */

import type { BaseCache } from '@langchain/core/caches';
import type { Embeddings } from '@langchain/core/embeddings';
import type { BaseChatModel } from '@langchain/core/language_models/chat_models';
import type { EmbeddingModelV4, LanguageModelV4 } from './local/ai-sdk.ts';
import { localEmbeddingModel, localLanguageModel } from './local/ai-sdk.ts';
import { LocalChatModel, LocalEmbeddings } from './local/langchain.ts';
import type { ModelCallCounter } from './local/names.ts';

export interface Providers {
  /** One line for the banner: what answers, and whether it is real. */
  label: string;
  /** True when every model is a local stand-in. */
  local: boolean;
  languageModel: LanguageModelV4;
  embeddingModel: EmbeddingModelV4;
  /** A new LangChain chat model; `cache` is LangChain's own `cache` option. */
  chatModel: (fields?: { cache?: BaseCache }) => BaseChatModel;
  embeddings: Embeddings;
  /** Calls that reached the local stand-ins (real providers are not counted). */
  counters: { chat: ModelCallCounter; embeddings: ModelCallCounter };
}

export const OPENAI_CHAT = 'gpt-4o-mini';
export const OPENAI_EMBEDDING = 'text-embedding-3-small';
export const ANTHROPIC_CHAT = 'claude-haiku-4-5';

export async function selectProviders(env: NodeJS.ProcessEnv, forceLocal: boolean): Promise<Providers> {
  const counters = { chat: { calls: 0 }, embeddings: { calls: 0, values: 0 } };
  const local: Providers = {
    label:
      'LOCAL STAND-IN models (deterministic, offline, 150–400 ms a call; priced like gpt-4o-mini / ' +
      'text-embedding-3-small) — set OPENAI_API_KEY or ANTHROPIC_API_KEY to use a real provider',
    local: true,
    languageModel: localLanguageModel(counters.chat),
    embeddingModel: localEmbeddingModel(counters.embeddings),
    chatModel: (fields) => new LocalChatModel({ ...fields, counter: counters.chat }),
    embeddings: new LocalEmbeddings(counters.embeddings),
    counters,
  };
  if (forceLocal) return local;

  if (env.OPENAI_API_KEY) {
    const { openai } = await import('@ai-sdk/openai');
    const { ChatOpenAI, OpenAIEmbeddings } = await import('@langchain/openai');
    return {
      label: `OpenAI ${OPENAI_CHAT} and ${OPENAI_EMBEDDING} (real API calls, OPENAI_API_KEY is set)`,
      local: false,
      languageModel: openai(OPENAI_CHAT),
      embeddingModel: openai.embedding(OPENAI_EMBEDDING),
      chatModel: (fields) => new ChatOpenAI({ ...fields, model: OPENAI_CHAT, temperature: 0 }),
      embeddings: new OpenAIEmbeddings({ model: OPENAI_EMBEDDING }),
      counters,
    };
  }
  if (env.ANTHROPIC_API_KEY) {
    const { anthropic } = await import('@ai-sdk/anthropic');
    const { ChatAnthropic } = await import('@langchain/anthropic');
    return {
      label:
        `Anthropic ${ANTHROPIC_CHAT} (real API calls, ANTHROPIC_API_KEY is set); ` +
        'embeddings: LOCAL STAND-IN (Anthropic has no embedding model)',
      local: false,
      languageModel: anthropic(ANTHROPIC_CHAT),
      embeddingModel: local.embeddingModel,
      chatModel: (fields) => new ChatAnthropic({ ...fields, model: ANTHROPIC_CHAT, temperature: 0 }),
      embeddings: local.embeddings,
      counters,
    };
  }
  return local;
}
