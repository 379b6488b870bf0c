/**
 * Timing primitives. Every operation is awaited, whether it returns a promise or not, so each
 * subject pays the same harness cost (one `await`, two `process.hrtime.bigint()` calls).
 *
 * The loops yield to the event loop every few operations, as a server does between requests:
 * an awaited synchronous hit only runs microtasks, so without it timers and `setImmediate` work
 * a cache defers (LRU bookkeeping, stats flushes) would never run and never be counted.
 */

/** One hit: `i` selects the prompt (callers take it modulo the number of distinct prompts). */
export type Op = (i: number) => unknown;

export interface LatencySummary {
  /** Median, microseconds. */
  p50: number;
  /** 99th percentile, microseconds. */
  p99: number;
  samples: number;
}

export interface Subject {
  id: string;
  label: string;
  op: Op;
}

export interface SubjectResult {
  id: string;
  label: string;
  latency: LatencySummary;
  /** Operations per second, one caller awaiting each hit in turn (median over rounds). */
  opsPerSec1: number;
  /** Operations per second, 64 concurrent async callers (median over rounds). */
  opsPerSec64: number;
}

export function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    gc();
  }
}

/** Nearest-rank percentile of nanosecond samples, in microseconds. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]! / 1000;
}

export function summarize(samples: readonly Float64Array[]): LatencySummary {
  let total = 0;
  for (const part of samples) total += part.length;
  const all = new Float64Array(total);
  let offset = 0;
  for (const part of samples) {
    all.set(part, offset);
    offset += part.length;
  }
  all.sort();
  return { p50: percentile(all, 50), p99: percentile(all, 99), samples: total };
}

/** Operations between two event-loop turns, per caller. */
export const YIELD_EVERY = 16;

export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Times `count` awaited calls one by one (ns per call); event-loop turns happen between samples, untimed. */
export async function sampleLatency(op: Op, count: number, start: number): Promise<Float64Array> {
  const samples = new Float64Array(count);
  for (let k = 0; k < count; k++) {
    if (k % YIELD_EVERY === 0) await turn();
    const t0 = process.hrtime.bigint();
    await op(start + k);
    samples[k] = Number(process.hrtime.bigint() - t0);
  }
  return samples;
}

/**
 * Operations per second with `callers` async loops sharing one counter, for about `ms`
 * milliseconds. Each loop reads the clock and yields to the event loop every `YIELD_EVERY`
 * operations, so deferred work is counted and the harness adds almost nothing.
 */
export async function throughput(op: Op, callers: number, ms: number, start: number): Promise<number> {
  let next = start;
  let done = 0;
  const t0 = performance.now();
  const deadline = t0 + ms;
  const loop = async (): Promise<void> => {
    while (performance.now() < deadline) {
      for (let k = 0; k < YIELD_EVERY; k++) await op(next++);
      done += YIELD_EVERY;
      await turn();
    }
  };
  const loops: Promise<void>[] = [];
  for (let c = 0; c < callers; c++) loops.push(loop());
  await Promise.all(loops);
  return done / ((performance.now() - t0) / 1000);
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export interface RunOptions {
  warmup: number;
  /**
   * Latency blocks per subject. Subjects take turns block by block (a few ms each), so a
   * burst of load from elsewhere on the machine hits every subject alike instead of one.
   */
  blocks: number;
  /** Timed hits per block. */
  blockSamples: number;
  /** Throughput slices per subject and caller count, taken in turns like the blocks. */
  slices: number;
  sliceMs: number;
  concurrency: number;
}

/** `subjects` rotated by `offset`, so no subject always runs right after the same neighbour. */
function rotated<T>(items: readonly T[], offset: number): T[] {
  const start = offset % items.length;
  return [...items.slice(start), ...items.slice(0, start)];
}

/** Latency of every subject, block by block in turns; p50 and p99 over all its samples. */
export async function runLatencyOnly(
  subjects: readonly Subject[],
  options: Pick<RunOptions, 'warmup' | 'blocks' | 'blockSamples'>,
): Promise<Map<string, LatencySummary>> {
  const latency = new Map<string, Float64Array[]>();
  for (const subject of subjects) {
    latency.set(subject.id, []);
    for (let i = 0; i < options.warmup; i++) await subject.op(i);
  }
  // One forced GC before the phase, none between blocks: forcing them would reset V8's heap
  // sizing every few ms and penalise allocation unevenly; collecting is part of a hit's cost.
  collectGarbage();
  for (let block = 0; block < options.blocks; block++) {
    for (const subject of rotated(subjects, block)) {
      const start = block * options.blockSamples;
      latency.get(subject.id)!.push(await sampleLatency(subject.op, options.blockSamples, start));
    }
  }
  const out = new Map<string, LatencySummary>();
  for (const subject of subjects) out.set(subject.id, summarize(latency.get(subject.id)!));
  return out;
}

/** Latency, then throughput with 1 and with `concurrency` callers, each interleaved across subjects. */
export async function runSubjects(
  subjects: readonly Subject[],
  options: RunOptions,
): Promise<SubjectResult[]> {
  const latency = await runLatencyOnly(subjects, options);
  const single = new Map<string, number[]>();
  const concurrent = new Map<string, number[]>();
  for (const subject of subjects) {
    single.set(subject.id, []);
    concurrent.set(subject.id, []);
  }
  collectGarbage();
  for (let slice = 0; slice < options.slices; slice++) {
    for (const subject of rotated(subjects, slice)) {
      single.get(subject.id)!.push(await throughput(subject.op, 1, options.sliceMs, slice * 10_000));
      concurrent
        .get(subject.id)!
        .push(await throughput(subject.op, options.concurrency, options.sliceMs, slice * 10_000));
    }
  }
  return subjects.map((subject) => ({
    id: subject.id,
    label: subject.label,
    latency: latency.get(subject.id)!,
    opsPerSec1: median(single.get(subject.id)!),
    opsPerSec64: median(concurrent.get(subject.id)!),
  }));
}
