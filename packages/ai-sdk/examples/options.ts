/**
 * Per-call control, admission and embeddings.
 * Run offline: `node --conditions=@x/source examples/options.ts`
 */
import { pathToFileURL } from 'node:url';
import type { CacheCallOptions } from '@x/ai-sdk-cache';
import { cacheMiddleware, defaultShouldCache, embeddingCacheMiddleware } from '@x/ai-sdk-cache';
import { createCache } from '@x/cache-core';
import { embedMany, generateText, wrapEmbeddingModel, wrapLanguageModel } from 'ai';
import { MockEmbeddingModelV4, MockLanguageModelV4 } from 'ai/test';

// Placeholders for real provider models (`openai('gpt-4o-mini')`, `openai.embedding(...)`).
const chatModel = new MockLanguageModelV4({
  modelId: 'gpt-4o-mini',
  doGenerate: async ({ prompt }) => ({
    content: [{ type: 'text', text: `answer to: ${JSON.stringify(prompt.at(-1)?.content)}` }],
    finishReason: { unified: 'stop', raw: 'stop' },
    usage: {
      inputTokens: { total: 20, noCache: 20, cacheRead: 0, cacheWrite: 0 },
      outputTokens: { total: 5, text: 5, reasoning: 0 },
    },
    warnings: [],
  }),
});
const embeddingModel = new MockEmbeddingModelV4({
  modelId: 'text-embedding-3-small',
  maxEmbeddingsPerCall: 2048,
  doEmbed: async ({ values }) => ({
    embeddings: values.map((value) => [value.length, 0.5, -0.25]),
    usage: { tokens: values.length * 4 },
    warnings: [],
  }),
});

export async function main(): Promise<void> {
  const cache = createCache(); // memory only; pass `store: sqliteBackend()` to persist

  const model = wrapLanguageModel({
    model: chatModel,
    middleware: cacheMiddleware({
      cache,
      namespace: 'tutor-app',
      tags: ['tutor'],
      // Keep the default rules, and also keep answers that were cut off by maxOutputTokens.
      shouldCache: (candidate) =>
        defaultShouldCache(candidate) || candidate.finishReason.unified === 'length',
    }),
  });

  // Per call: everything under `xCache` is read by the middleware and never reaches the provider.
  const lesson: CacheCallOptions = { ttl: '1d', tags: ['math', 'grade-5'], namespace: 'tenant-a' };
  await generateText({ model, prompt: 'Fractions for grade 5', providerOptions: { xCache: { ...lesson } } });
  const hit = await generateText({
    model,
    prompt: 'Fractions for grade 5',
    providerOptions: { xCache: { ...lesson } },
  });
  console.log('hit:', hit.providerMetadata?.xCache);

  // Always ask the model (the fresh answer replaces the stored one), or never store this answer.
  await generateText({
    model,
    prompt: 'Fractions for grade 5',
    providerOptions: { xCache: { noCache: true } },
  });
  await generateText({ model, prompt: 'A one-off question', providerOptions: { xCache: { noStore: true } } });

  // Invalidate by tag (scoped to the namespace the entries were written in).
  await cache.tier('responses').withNamespace('tenant-a').invalidateTags(['math']);

  // Embeddings: cached per value; only values never seen before go to the provider.
  const embedder = wrapEmbeddingModel({
    model: embeddingModel,
    middleware: embeddingCacheMiddleware({ cache }),
  });
  await embedMany({ model: embedder, values: ['numerator', 'denominator'] });
  const mixed = await embedMany({ model: embedder, values: ['denominator', 'fraction', 'numerator'] });
  console.log(
    'embedding calls:',
    embeddingModel.doEmbedCalls.map((call) => call.values),
  );
  console.log('served:', mixed.providerMetadata?.xCache, 'tokens spent:', mixed.usage.tokens);

  await cache.close();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
