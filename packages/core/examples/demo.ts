/**
 * `pnpm demo`: a cold and a warm pass of a small lesson generator over a SQLite cache.
 *
 * The "model" here is a LOCAL STAND-IN — a deterministic function with a realistic latency —
 * so the demo runs offline with no API key. Swap `localModel` for a real provider call and
 * nothing else changes.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { sqliteBackend } from '../src/backends/sqlite.ts';
import type { Usage } from '../src/index.ts';
import { createCache } from '../src/index.ts';

const MODEL = 'gpt-4o-mini';
const LATENCY_MS = 250;

interface Completion {
  text: string;
  usage: { inputTokens: number; outputTokens: number };
}

/** Local stand-in for an LLM: deterministic text after a realistic delay. */
async function localModel(prompt: string): Promise<Completion> {
  await new Promise((resolve) => setTimeout(resolve, LATENCY_MS));
  const text = `[local stand-in] A short lesson about ${prompt}, with an example and a question to check understanding.`;
  return { text, usage: { inputTokens: 40 + prompt.length, outputTokens: 120 } };
}

const topics = [
  'fractions',
  'decimals',
  'photosynthesis',
  'the water cycle',
  'prime numbers',
  'plate tectonics',
];

const dir = join(process.cwd(), '.cache');
mkdirSync(dir, { recursive: true });
const cache = createCache({ store: sqliteBackend({ path: join(dir, 'demo.db') }), namespace: 'demo' });
await cache.clear();

async function pass(label: string) {
  const started = performance.now();
  let hits = 0;
  for (const topic of topics) {
    const result = await cache.getOrComputeResult(
      { name: 'intro_page', request: { model: MODEL, topic, grade: 5 } },
      () => localModel(topic),
      {
        ttl: '7d',
        usage: (c: Completion): Usage => ({ ...c.usage, model: MODEL }),
      },
    );
    if (result.hit) hits++;
  }
  return { label, calls: topics.length, hits, ms: performance.now() - started };
}

const cold = await pass('cold');
const warm = await pass('warm');
const stats = await cache.stats();

const fmt = (ms: number) => `${ms.toFixed(1)} ms`;
console.log(
  `\n@x/cache-core demo — model: ${MODEL} (local stand-in, ${LATENCY_MS} ms per call), store: SQLite\n`,
);
console.table(
  [cold, warm].map((p) => ({ pass: p.label, calls: p.calls, hits: p.hits, 'total latency': fmt(p.ms) })),
);
console.log(`speed-up on the warm pass: ${(cold.ms / Math.max(warm.ms, 0.001)).toFixed(0)}x`);
console.log(
  `saved: ${stats.inputTokensSaved + stats.outputTokensSaved} tokens, $${stats.costSavedUsd.toFixed(6)} (hit rate ${(stats.hitRate * 100).toFixed(0)}%)`,
);
await cache.close();
if (warm.hits !== topics.length) {
  console.error('demo: the warm pass was not served from the cache');
  process.exit(1);
}
