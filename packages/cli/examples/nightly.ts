/**
 * The CLI as a library: `run(argv, io)` is what the llm-cache binary runs, with the streams
 * passed in. A nightly job can prune, then keep the savings report as JSON.
 *
 *   LLM_CACHE_URL=sqlite://.cache/llm-cache.db node --conditions=@x/source examples/nightly.ts
 */
import { PassThrough } from 'node:stream';
import type { StatsReport } from '@x/cache-cli';
import { run } from '@x/cache-cli';

const pruned = await run(['prune', '--quiet']);
if (pruned !== 0) process.exit(pruned);

const stdout = new PassThrough();
let text = '';
stdout.on('data', (chunk: Buffer) => {
  text += chunk.toString('utf8');
});
const code = await run(['stats', '--format', 'json'], { stdout });
if (code !== 0) process.exit(code);

const report = JSON.parse(text) as StatsReport;
console.log(
  `hit rate ${(report.overall.hitRate * 100).toFixed(1)}%, saved ${report.overall.tokensSaved} tokens ` +
    `($${report.overall.costSavedUsd.toFixed(4)})`,
);
