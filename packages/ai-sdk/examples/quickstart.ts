/**
 * Quickstart: cache every generateText / streamText call through one model.
 * Run offline: `node --conditions=@x/source examples/quickstart.ts`
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cacheMiddleware } from '@x/ai-sdk-cache';
import { createCache } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { generateText, simulateReadableStream, streamText, wrapLanguageModel } from 'ai';
import { MockLanguageModelV4 } from 'ai/test';

// Placeholder for a real provider model such as `openai('gpt-4o-mini')`: the SDK's own test
// model, so this file runs offline. Everything below is what you write with a real model.
const providerModel = new MockLanguageModelV4({
  modelId: 'gpt-4o-mini',
  doGenerate: async () => ({
    content: [{ type: 'text', text: 'Fractions split a whole into equal parts.' }],
    finishReason: { unified: 'stop', raw: 'stop' },
    usage: {
      inputTokens: { total: 12, noCache: 12, cacheRead: 0, cacheWrite: 0 },
      outputTokens: { total: 9, text: 9, reasoning: 0 },
    },
    warnings: [],
  }),
  doStream: async () => ({
    stream: simulateReadableStream({
      chunks: [
        { type: 'text-start', id: '1' },
        { type: 'text-delta', id: '1', delta: 'Equal ' },
        { type: 'text-delta', id: '1', delta: 'parts.' },
        { type: 'text-end', id: '1' },
        {
          type: 'finish',
          finishReason: { unified: 'stop', raw: 'stop' },
          usage: {
            inputTokens: { total: 12, noCache: 12, cacheRead: 0, cacheWrite: 0 },
            outputTokens: { total: 2, text: 2, reasoning: 0 },
          },
        },
      ],
    }),
  }),
});

export async function main(dir = '.cache'): Promise<void> {
  // A memory level in front of a SQLite file: entries survive restarts.
  const cache = createCache({ store: sqliteBackend({ path: join(dir, 'llm-cache.db') }) });
  const model = wrapLanguageModel({
    model: providerModel,
    middleware: cacheMiddleware({ cache, ttl: '7d' }),
  });

  for (let run = 1; run <= 2; run++) {
    const result = await generateText({ model, prompt: 'Explain fractions in one sentence.' });
    // On a hit: `xCache.hit` is true and usage is zero (no tokens were spent by this call).
    console.log(
      `generate #${run}:`,
      result.text,
      result.providerMetadata?.xCache?.hit,
      result.usage.totalTokens,
    );
  }

  for (let run = 1; run <= 2; run++) {
    const stream = streamText({ model, prompt: 'Fractions, briefly.' });
    let text = '';
    for await (const delta of stream.textStream) text += delta;
    console.log(`stream #${run}:`, text, (await stream.providerMetadata)?.xCache?.hit);
  }

  const stats = await cache.stats();
  console.log(
    `hits ${stats.hits}, misses ${stats.misses}, tokens saved ${stats.inputTokensSaved + stats.outputTokensSaved}`,
  );
  await cache.close();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
