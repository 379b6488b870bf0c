/**
 * Child process: opens a SQLite-backed cache (`memory: false`) on an existing file and serves
 * one hit. Prints `{ openMs, firstHitMs, totalMs, reopenMs, hit, level }`. The modules are imported
 * before the clock starts, so the figure is the cache's own cost, not Node's module loading (the
 * first open still loads better-sqlite3's native addon, as it would in an application).
 * `reopenMs` is a second open + hit of the same file in the same process: the part that depends
 * on the file rather than on process start-up.
 *
 * Usage: cold-open.ts <file> <request index>
 */
import type { CacheResult } from '../src/index.ts';
import { KEY_NAME, makeRequest, makeResponse } from './workload.ts';

const [file, index] = process.argv.slice(2);
if (file === undefined || index === undefined) throw new Error('usage: cold-open.ts <file> <request index>');
const request = makeRequest(Number(index));

const { createCache } = await import('../src/index.ts');
const { sqliteBackend } = await import('../src/backends/sqlite.ts');

const t0 = process.hrtime.bigint();
const cache = createCache({ store: sqliteBackend({ path: file }), memory: false });
const t1 = process.hrtime.bigint();
let computed = false;
const result: CacheResult<unknown> = await cache.getOrComputeResult({ name: KEY_NAME, request }, () => {
  computed = true;
  return makeResponse(Number(index));
});
const t2 = process.hrtime.bigint();
await cache.close();

const t3 = process.hrtime.bigint();
const again = createCache({ store: sqliteBackend({ path: file }), memory: false });
const second = await again.getOrComputeResult({ name: KEY_NAME, request }, () => {
  computed = true;
  return makeResponse(Number(index));
});
const t4 = process.hrtime.bigint();
await again.close();

process.stdout.write(
  JSON.stringify({
    openMs: Number(t1 - t0) / 1e6,
    firstHitMs: Number(t2 - t1) / 1e6,
    totalMs: Number(t2 - t0) / 1e6,
    reopenMs: Number(t4 - t3) / 1e6,
    hit: result.hit && second.hit && !computed,
    level: result.level,
  }) + '\n',
);
