import { join } from 'node:path';
import { createCache } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { embedMany, generateText, streamText, wrapEmbeddingModel, wrapLanguageModel } from 'ai';
import { MockEmbeddingModelV4, MockLanguageModelV4 } from 'ai/test';
import { afterEach, describe, expect, it } from 'vitest';
import { cacheMiddleware, embeddingCacheMiddleware } from '../src/index.ts';
import { generateResult, streamModel, tempDir, textParts, until } from './helpers.ts';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** One "process": a cache on the SQLite file and fresh models wrapped with fresh middleware. */
function open(path: string) {
  const cache = createCache({ store: sqliteBackend({ path }) });
  const generator = new MockLanguageModelV4({
    modelId: 'gpt-4o-mini',
    doGenerate: async () =>
      generateResult([
        { type: 'text', text: 'persisted' },
        { type: 'file', mediaType: 'image/png', data: { type: 'data', data: new Uint8Array([1, 2, 3]) } },
      ]),
  });
  const streamer = streamModel(() => textParts(['per', 'sis', 'ted']), { modelId: 'gpt-4o-mini' });
  const embedder = new MockEmbeddingModelV4({
    maxEmbeddingsPerCall: 100,
    doEmbed: async (call) => ({
      embeddings: call.values.map((value) => [value.length, 0.5]),
      usage: { tokens: call.values.length * 3 },
      warnings: [],
    }),
  });
  const middleware = cacheMiddleware({ cache });
  return {
    cache,
    generator,
    streamer,
    embedder,
    generate: wrapLanguageModel({ model: generator, middleware }),
    stream: wrapLanguageModel({ model: streamer, middleware }),
    embed: wrapEmbeddingModel({ model: embedder, middleware: embeddingCacheMiddleware({ cache }) }),
  };
}

describe('persistence', () => {
  it('still hits after a restart on the same SQLite file', async () => {
    const { dir, cleanup } = tempDir();
    cleanups.push(cleanup);
    const path = join(dir, 'cache.db');

    const before = open(path);
    let writes = 0;
    before.cache.on('set', () => writes++);
    const generated = await generateText({ model: before.generate, prompt: 'hi' });
    await streamText({ model: before.stream, prompt: 'hi' }).consumeStream();
    await embedMany({ model: before.embed, values: ['one', 'three'] });
    // A stream's recording is written once the stream has ended, just after the caller got it.
    await until(() => writes === 4, 'the four writes');
    await before.cache.close();

    const after = open(path);
    const again = await generateText({ model: after.generate, prompt: 'hi' });
    const streamed = streamText({ model: after.stream, prompt: 'hi' });
    const embedded = await embedMany({ model: after.embed, values: ['three', 'one'] });

    expect(after.generator.doGenerateCalls).toHaveLength(0);
    expect(again.text).toBe('persisted');
    expect(again.files[0]!.uint8Array).toEqual(new Uint8Array([1, 2, 3]));
    expect(again.response.timestamp).toEqual(generated.response.timestamp);
    expect(again.response.timestamp).toBeInstanceOf(Date);
    expect(again.providerMetadata?.xCache).toMatchObject({ hit: true, level: 'sqlite' });
    expect(await streamed.text).toBe('persisted');
    expect((await streamed.providerMetadata)?.xCache).toMatchObject({ hit: true, level: 'sqlite' });
    expect(after.streamer.doStreamCalls).toHaveLength(0);
    expect(embedded.embeddings).toEqual([
      [5, 0.5],
      [3, 0.5],
    ]);
    expect(after.embedder.doEmbedCalls).toHaveLength(0);

    await after.cache.close();
    const reopened = open(path).cache;
    const stats = await reopened.getAllStats();
    await reopened.close();
    expect(stats.tiers.responses).toMatchObject({
      hits: 2,
      inputTokensSaved: 10 + 7,
      outputTokensSaved: 20 + 11,
    });
    expect(stats.tiers.embeddings).toMatchObject({ hits: 2, inputTokensSaved: 6 });
  });
});
