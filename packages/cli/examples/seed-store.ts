/**
 * Fills a SQLite store the way an application would, so there is something to look at with
 * llm-cache. The "model" here is a clearly-labelled local stand-in: nothing calls a provider.
 *
 *   node --conditions=@x/source examples/seed-store.ts .cache/llm-cache.db
 *   llm-cache stats --url sqlite://.cache/llm-cache.db
 */
import { createCache, createToolLedger } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';

/** LOCAL STAND-IN for a model call: deterministic text and a plausible token count. */
async function fakeModel(
  prompt: string,
): Promise<{ text: string; inputTokens: number; outputTokens: number }> {
  return { text: `(local stand-in answer to: ${prompt})`, inputTokens: prompt.length, outputTokens: 400 };
}

const path = process.argv[2] ?? '.cache/llm-cache.db';
const cache = createCache({ store: sqliteBackend({ path }) });

for (const topic of ['fractions', 'decimals', 'fractions', 'percentages', 'fractions']) {
  await cache.getOrCompute(
    { name: 'intro_page', request: { subject: 'math', topic, grade: 5 } },
    () => fakeModel(`Write an introduction to ${topic} for grade 5.`),
    {
      ttl: '7d',
      tags: ['math'],
      usage: (answer) => ({
        inputTokens: answer.inputTokens,
        outputTokens: answer.outputTokens,
        model: 'gpt-4o-mini',
      }),
    },
  );
}
await cache
  .tier('embeddings')
  .set(
    { name: 'embed', request: { model: 'text-embedding-3-small', text: 'fractions' } },
    new Float32Array(8),
  );
await cache
  .tier('tools')
  .withNamespace('tenant-a')
  .set({ name: 'git_status', request: { repo: 'app' } }, { exitCode: 0, stdout: 'clean' }, { tags: ['git'] });

// An agent's tools through the ledger: the email is sent once, the retry of the task replays it.
const ledger = createToolLedger({
  cache,
  tools: { send_email: { kind: 'write' }, git_status: { kind: 'read', ttl: '10m' } },
});
for (const attempt of [1, 2]) {
  await ledger.executeOrReplay({
    tool: 'send_email',
    input: { to: 'ada@example.com', subject: 'Your lesson plan' },
    scope: { taskId: 'run-42' },
    execute: async () => ({ messageId: `local-stand-in-${attempt}` }),
  });
  await ledger.executeOrReplay({
    tool: 'git_status',
    input: { repo: 'lessons' },
    scope: { taskId: 'run-42' },
    execute: async () => ({ exitCode: 0, stdout: 'nothing to commit', stderr: '' }),
  });
}

await cache.close();
console.log(`seeded ${path}`);
