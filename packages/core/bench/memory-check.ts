/**
 * Child process (a clean heap): memory overhead of the in-memory level and its byte bound.
 * Prints one JSON object (see `MemoryCheck`).
 *
 * Usage: memory-check.ts <entries> <bounded fill bytes>
 */
import { collectGarbage } from './measure.ts';
import { KEY_NAME, makeRequest, makeResponse } from './workload.ts';

export interface MemoryCheck {
  entries: number;
  /** Sum of the UTF-8 JSON sizes of the stored values. */
  payloadBytes: number;
  /** Growth of heapUsed + arrayBuffers after filling, with a forced GC before both readings. */
  growthBytes: number;
  /** (growth - payload) / payload, in %. */
  overheadPct: number;
  /** What the cache's own stats report for the memory level. */
  reportedBytes: number;
  reportedEntries: number;
  bound: {
    maxBytes: number;
    filledBytes: number;
    maxReported: number;
    finalReported: number;
    respected: boolean;
  };
}

const entries = Number(process.argv[2] ?? 100_000);
const boundedFill = Number(process.argv[3] ?? 50_000_000);

const { createCache } = await import('../src/index.ts');

function footprint(): number {
  collectGarbage();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

// Warm the code paths (and lazily created module state) before the baseline reading.
{
  const warm = createCache({ memory: { maxEntries: 200_000, maxBytes: 512 * 1024 * 1024 } });
  for (let i = 0; i < 200; i++) await warm.set({ name: KEY_NAME, request: makeRequest(i) }, makeResponse(i));
  await warm.close();
}

const before = footprint();
const cache = createCache({ memory: { maxEntries: 200_000, maxBytes: 512 * 1024 * 1024 } });
let payloadBytes = 0;
for (let i = 0; i < entries; i++) {
  const value = makeResponse(i);
  payloadBytes += Buffer.byteLength(JSON.stringify(value));
  await cache.set({ name: KEY_NAME, request: makeRequest(i) }, value);
}
const after = footprint();
const stats = await cache.getAllStats();
const memory = stats.levels.memory ?? { bytes: Number.NaN, entries: Number.NaN };
const growthBytes = after - before;
const result: Omit<MemoryCheck, 'bound'> = {
  entries,
  payloadBytes,
  growthBytes,
  overheadPct: ((growthBytes - payloadBytes) / payloadBytes) * 100,
  reportedBytes: memory.bytes,
  reportedEntries: memory.entries,
};
await cache.close();

// Byte bound: 8 MiB, filled with `boundedFill` bytes of values; stats are read along the way.
const maxBytes = 8 * 1024 * 1024;
const bounded = createCache({ memory: { maxBytes } });
let filled = 0;
let maxReported = 0;
let i = 0;
while (filled < boundedFill) {
  const value = makeResponse(i);
  filled += Buffer.byteLength(JSON.stringify(value));
  await bounded.set({ name: KEY_NAME, request: makeRequest(i) }, value);
  if (i % 500 === 0) {
    const levels = (await bounded.getAllStats()).levels;
    maxReported = Math.max(maxReported, levels.memory?.bytes ?? Number.POSITIVE_INFINITY);
  }
  i++;
}
const finalReported = (await bounded.getAllStats()).levels.memory?.bytes ?? Number.POSITIVE_INFINITY;
maxReported = Math.max(maxReported, finalReported);
await bounded.close();

const check: MemoryCheck = {
  ...result,
  bound: { maxBytes, filledBytes: filled, maxReported, finalReported, respected: maxReported <= maxBytes },
};
process.stdout.write(JSON.stringify(check) + '\n');
