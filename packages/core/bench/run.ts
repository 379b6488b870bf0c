/**
 * `pnpm bench`: hit latency and throughput of @x/cache-core against floors (the least work a
 * cache hit can do) and peers, plus key cost, memory overhead, the byte bound and SQLite cold
 * open. Figures are printed as ratios and checked against targets; a missed target is reported,
 * never an error (the exit code is 0 unless the harness itself breaks).
 *
 * Flags: --json [file]  also write the results as JSON (default bench/results.json)
 *        --quick        fewer rounds and a 20k-entry SQLite file, for trying the harness out
 */
import { hash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { crc32 } from 'node:zlib';
import { InMemoryCache } from '@langchain/core/caches';
import { BentoCache, bentostore } from 'bentocache';
import { memoryDriver } from 'bentocache/drivers/memory';
import Database from 'better-sqlite3';
import type { Cache } from '../src/index.ts';
import { runChild } from './child.ts';
import type { LatencySummary, Op, RunOptions, Subject, SubjectResult } from './measure.ts';
import { collectGarbage, runLatencyOnly, runSubjects } from './measure.ts';
import type { MemoryCheck } from './memory-check.ts';
import { mib, ms, ops, pct, ratio, table, us } from './report.ts';
import type { ChatRequest, ChatResponse } from './workload.ts';
import {
  bigRequest,
  DISTINCT_PROMPTS,
  KEY_NAME,
  makeRequest,
  makeResponse,
  SQLITE_ENTRIES,
} from './workload.ts';

type Core = typeof import('../src/index.ts');
type SqliteModule = typeof import('../src/backends/sqlite.ts');

// ---------------------------------------------------------------------------------------------
// Options

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const benchDir = dirname(fileURLToPath(import.meta.url));
const packageDir = resolve(benchDir, '..');
let jsonPath: string | undefined;
for (let a = 0; a < argv.length; a++) {
  const arg = argv[a]!;
  if (arg === '--json') {
    const next = argv[a + 1];
    jsonPath = next !== undefined && !next.startsWith('--') ? resolve(next) : join(benchDir, 'results.json');
  } else if (arg.startsWith('--json=')) {
    jsonPath = resolve(arg.slice('--json='.length));
  }
}

const run: RunOptions = quick
  ? { warmup: 1000, blocks: 6, blockSamples: 500, slices: 3, sliceMs: 100, concurrency: 64 }
  : { warmup: 3000, blocks: 30, blockSamples: 500, slices: 10, sliceMs: 100, concurrency: 64 };
/** The 160 KB key subjects take ~0.2-1.5 ms per call: smaller blocks. */
const bigKeyRun = { warmup: 100, blocks: quick ? 4 : 20, blockSamples: 50 };
const smallRun = { warmup: 2000, blocks: quick ? 6 : 20, blockSamples: 500 };
const sqliteEntries = quick ? 20_000 : SQLITE_ENTRIES;
const COLD_RUNS = quick ? 3 : 7;
const MEMORY_ENTRIES = 100_000;
const BOUNDED_FILL = 50_000_000;
const BIG_PROMPT_CHARS = 160 * 1024;
const NAMESPACE = 'responses/default';

const started = performance.now();
const loadAtStart = loadavg()
  .map((value) => value.toFixed(2))
  .join(' ');
function progress(message: string): void {
  process.stderr.write(`[bench ${((performance.now() - started) / 1000).toFixed(1)}s] ${message}\n`);
}

const notes: string[] = [];
function note(message: string): void {
  notes.push(message);
  progress('note: ' + message);
}

const sha = (input: string): string => hash('sha256', input, 'base64url');
const tmp = mkdtempSync(join(tmpdir(), 'x-cache-bench-'));

// ---------------------------------------------------------------------------------------------
// Workload

const N = DISTINCT_PROMPTS;
const requests: ChatRequest[] = Array.from({ length: N }, (_, k) => makeRequest(k));
const responses: ChatResponse[] = Array.from({ length: N }, (_, k) => makeResponse(k));
/** Measured prompts inside the SQLite files: spread evenly over the whole key range. */
const sqliteIndex = (k: number): number => (k * Math.floor(sqliteEntries / N) + 37) % sqliteEntries;
const sqliteRequests: ChatRequest[] = Array.from({ length: N }, (_, k) => makeRequest(sqliteIndex(k)));
const sqliteResponses: ChatResponse[] = Array.from({ length: N }, (_, k) => makeResponse(sqliteIndex(k)));
const requestBytes = Buffer.byteLength(JSON.stringify(requests[0]));
const responseBytes = Buffer.byteLength(JSON.stringify(responses[0]));

// ---------------------------------------------------------------------------------------------
// The engine (loaded dynamically so floors and peers still run while it is being written)

let core: Core | undefined;
let sqliteModule: SqliteModule | undefined;
try {
  core = await import('../src/index.ts');
} catch (error) {
  note(`engine not loadable, "ours" rows are n/a: ${(error as Error).message.split('\n')[0]}`);
}
try {
  sqliteModule = await import('../src/backends/sqlite.ts');
} catch (error) {
  note(`sqlite backend not loadable, SQLite rows are n/a: ${(error as Error).message.split('\n')[0]}`);
}

// ---------------------------------------------------------------------------------------------
// 1a. Memory floor: sha256(JSON.stringify(prompt)) + Map.get + JSON.parse

const floorMap = new Map<string, string>();
for (let k = 0; k < N; k++) floorMap.set(sha(JSON.stringify(requests[k])), JSON.stringify(responses[k]));
const memoryFloor: Op = (i) => JSON.parse(floorMap.get(sha(JSON.stringify(requests[i % N])))!);

// 1b. SQLite floor: same hash + prepared SELECT by primary key on a file with `sqliteEntries` rows

progress(`filling the SQLite floor file (${sqliteEntries} rows)`);
const floorPath = join(tmp, 'floor.db');
{
  const db = new Database(floorPath);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('CREATE TABLE t (k TEXT PRIMARY KEY, value TEXT NOT NULL)');
  const insert = db.prepare('INSERT INTO t (k, value) VALUES (?, ?)');
  db.transaction(() => {
    for (let i = 0; i < sqliteEntries; i++)
      insert.run(sha(JSON.stringify(makeRequest(i))), JSON.stringify(makeResponse(i)));
  })();
  db.close();
}
const floorDb = new Database(floorPath, { readonly: true });
const floorSelect = floorDb.prepare<[string], string>('SELECT value FROM t WHERE k = ?').pluck();
const sqliteFloor: Op = (i) => JSON.parse(floorSelect.get(sha(JSON.stringify(sqliteRequests[i % N])))!);

// ---------------------------------------------------------------------------------------------
// 3. Peers

// LangChain: prompt = JSON of the messages, llmString = JSON of the call parameters.
const langchain = new InMemoryCache<ChatResponse>();
const llmString = (request: ChatRequest): string =>
  JSON.stringify({ model: request.model, temperature: request.temperature });
for (let k = 0; k < N; k++) {
  await langchain.update(JSON.stringify(requests[k]!.messages), llmString(requests[k]!), responses[k]!);
}
const langchainHit: Op = (i) => {
  const request = requests[i % N]!;
  return langchain.lookup(JSON.stringify(request.messages), llmString(request));
};

// bentocache: memory L1 only, keyed by a sha256 of the prompt as a user would.
const bento = new BentoCache({
  default: 'memory',
  stores: { memory: bentostore().useL1Layer(memoryDriver({ maxItems: 10_000, maxSize: '64mb' })) },
});
const computes = { bento: 0, ours: 0, oursSqlite: 0 };
const bentoHit: Op = (i) => {
  const k = i % N;
  return bento.getOrSet({
    key: sha(JSON.stringify(requests[k])),
    ttl: '7d',
    factory: () => {
      computes.bento++;
      return responses[k]!;
    },
  });
};
for (let k = 0; k < N; k++) await bentoHit(k);

// ---------------------------------------------------------------------------------------------
// 2. Ours

let memoryCache: Cache | undefined;
let sqliteCache: Cache | undefined;
/** Same file, LRU touch writes pushed out of the measured window: shows what they cost. */
let sqliteNoTouchCache: Cache | undefined;
const NO_TOUCH = { touchFlushSize: 1e9, touchFlushIntervalMs: 1e9 };
const oursPath = join(tmp, 'ours.db');
const smallPath = join(tmp, 'one-entry.db');
const COLD_INDEX = 54_321 % sqliteEntries;
let fillMs = Number.NaN;

if (core) {
  memoryCache = core.createCache();
  for (let k = 0; k < N; k++) {
    await memoryCache.getOrCompute({ name: KEY_NAME, request: requests[k] }, () => responses[k]);
  }
}
const oursMemoryHit: Op = (i) => {
  const k = i % N;
  return memoryCache!.getOrCompute({ name: KEY_NAME, request: requests[k] }, () => {
    computes.ours++;
    return responses[k]!;
  });
};

if (core && sqliteModule) {
  progress(`filling ours SQLite file (${sqliteEntries} entries, cache.set in a loop)`);
  const t0 = performance.now();
  const fill = core.createCache({ store: sqliteModule.sqliteBackend({ path: oursPath }), memory: false });
  for (let i = 0; i < sqliteEntries; i++)
    await fill.set({ name: KEY_NAME, request: makeRequest(i) }, makeResponse(i));
  await fill.close();
  fillMs = performance.now() - t0;
  progress(`filled in ${(fillMs / 1000).toFixed(1)} s`);
  const small = core.createCache({ store: sqliteModule.sqliteBackend({ path: smallPath }), memory: false });
  await small.set({ name: KEY_NAME, request: makeRequest(COLD_INDEX) }, makeResponse(COLD_INDEX));
  await small.close();
  sqliteCache = core.createCache({ store: sqliteModule.sqliteBackend({ path: oursPath }), memory: false });
  sqliteNoTouchCache = core.createCache({
    store: sqliteModule.sqliteBackend({ path: oursPath, ...NO_TOUCH }),
    memory: false,
  });
}
const oursSqliteHit: Op = (i) => {
  const k = i % N;
  return sqliteCache!.getOrCompute({ name: KEY_NAME, request: sqliteRequests[k] }, () => {
    computes.oursSqlite++;
    return sqliteResponses[k]!;
  });
};

const oursSqliteNoTouchHit: Op = (i) => {
  const k = i % N;
  return sqliteNoTouchCache!.getOrCompute({ name: KEY_NAME, request: sqliteRequests[k] }, () => {
    computes.oursSqlite++;
    return sqliteResponses[k]!;
  });
};

// Sanity: every subject returns the right value, and ours serves it from the intended level.
async function verify(label: string, op: Op, expected: readonly ChatResponse[]): Promise<void> {
  for (let k = 0; k < N; k += 97) {
    const value = (await op(k)) as ChatResponse | null | undefined;
    if (value?.response?.id !== expected[k]!.response.id)
      throw new Error(`${label}: wrong value for prompt ${k}`);
  }
}
await verify('memory floor', memoryFloor, responses);
await verify('sqlite floor', sqliteFloor, sqliteResponses);
await verify('langchain', langchainHit, responses);
await verify('bentocache', bentoHit, responses);
const levelsSeen: Record<string, string | undefined> = {};
if (memoryCache) {
  await verify('ours memory', oursMemoryHit, responses);
  const result = await memoryCache.getOrComputeResult(
    { name: KEY_NAME, request: requests[1] },
    () => responses[1],
  );
  levelsSeen.memory = result.hit ? result.level : 'miss';
}
if (sqliteCache) {
  await verify('ours sqlite', oursSqliteHit, sqliteResponses);
  await verify('ours sqlite, touches deferred', oursSqliteNoTouchHit, sqliteResponses);
  const result = await sqliteCache.getOrComputeResult(
    { name: KEY_NAME, request: sqliteRequests[1] },
    () => sqliteResponses[1],
  );
  levelsSeen.sqlite = result.hit ? result.level : 'miss';
}
const computesBefore = { ...computes };

// ---------------------------------------------------------------------------------------------
// Hit latency and throughput

const memorySubjects: Subject[] = [
  { id: 'memory-floor', label: 'memory floor (sha256 + Map.get + JSON.parse)', op: memoryFloor },
];
if (memoryCache)
  memorySubjects.push({ id: 'ours-memory', label: 'ours: memory hit (getOrCompute)', op: oursMemoryHit });
memorySubjects.push(
  { id: 'langchain', label: 'LangChain InMemoryCache.lookup', op: langchainHit },
  { id: 'bentocache', label: 'bentocache memory getOrSet', op: bentoHit },
);
const sqliteSubjects: Subject[] = [
  { id: 'sqlite-floor', label: `SQLite floor (sha256 + SELECT by PK + JSON.parse)`, op: sqliteFloor },
];
if (sqliteCache) {
  sqliteSubjects.push(
    { id: 'ours-sqlite', label: 'ours: SQLite hit (memory: false)', op: oursSqliteHit },
    {
      id: 'ours-sqlite-no-touch',
      label: 'ours: SQLite hit, LRU touch writes deferred (info)',
      op: oursSqliteNoTouchHit,
    },
  );
}

// A no-op through the same harness: what one await + two hrtime reads cost.
const harness = await runLatencyOnly([{ id: 'noop', label: 'harness', op: () => undefined }], {
  warmup: 1000,
  blocks: 20,
  blockSamples: 1000,
});

progress(`measuring memory hits (${memorySubjects.length} subjects)`);
const memoryResults = await runSubjects(memorySubjects, run);
progress(`measuring SQLite hits (${sqliteSubjects.length} subjects)`);
const sqliteResults = await runSubjects(sqliteSubjects, run);
const allHit =
  computes.bento === computesBefore.bento &&
  computes.ours === computesBefore.ours &&
  computes.oursSqlite === computesBefore.oursSqlite;
if (!allHit)
  note(
    `some measured calls computed: ${JSON.stringify(computes)} (before: ${JSON.stringify(computesBefore)})`,
  );

// ---------------------------------------------------------------------------------------------
// 4. Key cost

progress('measuring key cost');
const BIG_VARIANTS = [
  { id: 'ascii', label: 'ASCII', wide: false },
  { id: 'wide', label: 'two-byte', wide: true },
] as const;
const keySubjectsBig: Subject[] = [];
let bigBytes = 0;
for (const variant of BIG_VARIANTS) {
  const bigRequests = Array.from({ length: 4 }, (_, s) => bigRequest(BIG_PROMPT_CHARS, 11 + s, variant.wide));
  const bigPrompts = bigRequests.map((request) => request.messages[0]!.content);
  bigBytes = Math.max(bigBytes, Buffer.byteLength(bigPrompts[0]!));
  keySubjectsBig.push(
    { id: `sha-${variant.id}`, label: 'sha256(prompt)', op: (i) => sha(bigPrompts[i % 4]!) },
    {
      id: `sha-json-${variant.id}`,
      label: 'sha256(JSON.stringify(request))',
      op: (i) => sha(JSON.stringify(bigRequests[i % 4])),
    },
  );
  if (core) {
    const { buildKey } = core;
    keySubjectsBig.push({
      id: `key-${variant.id}`,
      label: 'buildKey',
      op: (i) => buildKey(NAMESPACE, KEY_NAME, bigRequests[i % 4]),
    });
  }
}
const keySubjectsSmall: Subject[] = [
  {
    id: 'sha-json-2k',
    label: 'sha256(JSON.stringify(request))',
    op: (i) => sha(JSON.stringify(requests[i % N])),
  },
];
if (core) {
  const { buildKey } = core;
  keySubjectsSmall.push({
    id: 'key-2k',
    label: 'buildKey',
    op: (i) => buildKey(NAMESPACE, KEY_NAME, requests[i % N]),
  });
}
const keyBig = await runLatencyOnly(keySubjectsBig, bigKeyRun);
const keySmall = await runLatencyOnly(keySubjectsSmall, smallRun);

// ---------------------------------------------------------------------------------------------
// Where a memory hit's time goes (informational): the engine's own pieces, timed alone

const breakdown = new Map<string, LatencySummary>();
if (core && memoryCache) {
  progress('measuring the memory-hit breakdown');
  const { buildKey, decodeEntry, encodeEntry, memoryBackend, readEntryHeader } = core;
  const now = Date.now();
  const expiresAt = now + 7 * 24 * 3600 * 1000;
  const keys = requests.map((request) => buildKey(NAMESPACE, KEY_NAME, request));
  const encoded = responses.map((response) => encodeEntry({ v: response }, { createdAt: now, expiresAt }));
  const payloads = encoded.map((entry) =>
    entry.subarray(entry.byteLength - readEntryHeader(entry).storedBytes),
  );
  const payloadTexts = payloads.map((payload) => Buffer.from(payload).toString('utf8'));
  const backend = memoryBackend({ maxEntries: 10_000, maxBytes: 64 * 1024 * 1024 });
  const plain = new Map<string, Uint8Array>();
  keys.forEach((key, k) => {
    backend.setSync(key, { value: encoded[k]!, expiresAt });
    plain.set(key, encoded[k]!);
  });
  const parts: Subject[] = [
    { id: 'full', label: 'getOrCompute (whole hit)', op: oursMemoryHit },
    {
      id: 'sync',
      label: 'buildKey + getSync + decodeEntry',
      op: (i) => decodeEntry(backend.getSync(buildKey(NAMESPACE, KEY_NAME, requests[i % N]))!.value),
    },
    { id: 'key', label: 'buildKey', op: (i) => buildKey(NAMESPACE, KEY_NAME, requests[i % N]) },
    { id: 'getSync', label: 'memory backend getSync (LRU move)', op: (i) => backend.getSync(keys[i % N]!) },
    { id: 'mapGet', label: 'Map.get (what the floor does)', op: (i) => plain.get(keys[i % N]!) },
    { id: 'decode', label: 'decodeEntry', op: (i) => decodeEntry(encoded[i % N]!) },
    { id: 'crc', label: 'zlib.crc32(payload)', op: (i) => crc32(payloads[i % N]!) },
    {
      id: 'utf8',
      label: 'UTF-8 decode of the payload',
      op: (i) => Buffer.from(payloads[i % N]!).toString('utf8'),
    },
    { id: 'parse', label: 'JSON.parse(payload text)', op: (i) => JSON.parse(payloadTexts[i % N]!) },
  ];
  for (const [id, summary] of await runLatencyOnly(parts, smallRun)) {
    breakdown.set(id, summary);
  }
}

// ---------------------------------------------------------------------------------------------
// 5. Mutable objects: two hits of one key must not share an object

interface MutableCheck {
  subject: string;
  distinct: boolean;
  equal: boolean;
  isolated: boolean;
  pass: boolean;
}
async function mutableCheck(subject: string, op: Op, index: number): Promise<MutableCheck> {
  const first = (await op(index)) as ChatResponse;
  const second = (await op(index)) as ChatResponse;
  const distinct = first !== second && first.usage !== second.usage;
  const equal = isDeepStrictEqual(first, second);
  const original = second.text;
  const originalTokens = second.usage.outputTokens;
  first.text = 'mutated by the caller';
  first.usage.outputTokens = -1;
  const third = (await op(index)) as ChatResponse;
  const isolated = third.text === original && third.usage.outputTokens !== -1;
  first.text = original; // repair what a shared-object cache would keep
  first.usage.outputTokens = originalTokens;
  return { subject, distinct, equal, isolated, pass: distinct && equal && isolated };
}
const mutable: MutableCheck[] = [];
if (memoryCache) mutable.push(await mutableCheck('ours: memory', oursMemoryHit, 3));
if (sqliteCache) mutable.push(await mutableCheck('ours: SQLite', oursSqliteHit, 3));
mutable.push(await mutableCheck('LangChain InMemoryCache', langchainHit, 5));
mutable.push(await mutableCheck('bentocache memory', bentoHit, 5));

// Release what the hit benchmarks held before the child processes run.
await bento.disconnectAll();
floorDb.close();
await memoryCache?.close();
await sqliteCache?.close();
await sqliteNoTouchCache?.close();
sqliteNoTouchCache = undefined;
memoryCache = undefined;
sqliteCache = undefined;
collectGarbage();

// ---------------------------------------------------------------------------------------------
// 6. Memory overhead and byte bound (child process: a clean heap)

let memory: MemoryCheck | undefined;
if (core) {
  progress(
    `memory check: ${MEMORY_ENTRIES} entries, then an 8 MiB cache filled with ${BOUNDED_FILL / 1e6} MB`,
  );
  try {
    memory = await runChild<MemoryCheck>('./memory-check.ts', [String(MEMORY_ENTRIES), String(BOUNDED_FILL)]);
  } catch (error) {
    note(`memory check failed: ${(error as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// 7. SQLite cold open (child processes, alternating big and small file)

interface ColdOpen {
  openMs: number;
  firstHitMs: number;
  totalMs: number;
  reopenMs: number;
  hit: boolean;
  level: string | undefined;
}
const cold = { big: [] as ColdOpen[], small: [] as ColdOpen[] };
if (core && sqliteModule) {
  progress(`cold open: ${COLD_RUNS} child processes per file`);
  try {
    for (let r = 0; r < COLD_RUNS; r++) {
      cold.big.push(await runChild<ColdOpen>('./cold-open.ts', [oursPath, String(COLD_INDEX)]));
      cold.small.push(await runChild<ColdOpen>('./cold-open.ts', [smallPath, String(COLD_INDEX)]));
    }
    if (![...cold.big, ...cold.small].every((each) => each.hit)) note('a cold-open run missed its entry');
  } catch (error) {
    note(`cold open failed: ${(error as Error).message}`);
  }
}
function medianOf(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
const coldBig = {
  openMs: medianOf(cold.big.map((each) => each.openMs)),
  firstHitMs: medianOf(cold.big.map((each) => each.firstHitMs)),
  totalMs: medianOf(cold.big.map((each) => each.totalMs)),
  reopenMs: medianOf(cold.big.map((each) => each.reopenMs)),
};
const coldSmall = {
  openMs: medianOf(cold.small.map((each) => each.openMs)),
  firstHitMs: medianOf(cold.small.map((each) => each.firstHitMs)),
  totalMs: medianOf(cold.small.map((each) => each.totalMs)),
  reopenMs: medianOf(cold.small.map((each) => each.reopenMs)),
};

rmSync(tmp, { recursive: true, force: true });

// ---------------------------------------------------------------------------------------------
// Report

const byId = new Map<string, SubjectResult>();
for (const result of [...memoryResults, ...sqliteResults]) byId.set(result.id, result);
const get = (id: string): SubjectResult | undefined => byId.get(id);
/** Cost ratio: time per op of `subject` over that of `reference` (> 1 means slower). */
function costRatios(subject: SubjectResult, reference: SubjectResult) {
  return {
    p50: subject.latency.p50 / reference.latency.p50,
    p99: subject.latency.p99 / reference.latency.p99,
    ops1: reference.opsPerSec1 / subject.opsPerSec1,
    ops64: reference.opsPerSec64 / subject.opsPerSec64,
  };
}

const out: string[] = [];
out.push('');
out.push(
  `# @x/cache-core benchmark — ${new Date().toISOString().slice(0, 10)}, node ${process.version}, ` +
    `${cpus().length} CPU (${cpus()[0]?.model ?? 'unknown'}), load average at start ${loadAtStart}, at end ` +
    `${loadavg()
      .map((value) => value.toFixed(2))
      .join(' ')}`,
);
out.push('');
out.push(
  `Workload: ${N} distinct chat requests (${requestBytes} B of JSON each) cycled through, ` +
    `values of ~${responseBytes} B of JSON; SQLite files hold ${sqliteEntries.toLocaleString('en-US')} entries. ` +
    `${run.blocks * run.blockSamples} timed hits per subject in ${run.blocks} blocks taken in turns; ` +
    `throughput is the median of ${run.slices} slices of ${run.sliceMs} ms per subject and caller count. ` +
    `Harness cost per timed op: ${us(harness.get('noop')!.p50)} µs (p50).`,
);
out.push('');
out.push('## Hits');
out.push('');
const hitRows = [...memoryResults, ...sqliteResults].map((result) => [
  result.label,
  us(result.latency.p50),
  us(result.latency.p99),
  ops(result.opsPerSec1),
  ops(result.opsPerSec64),
]);
out.push(
  table(['subject', 'p50 µs', 'p99 µs', 'ops/s 1 caller', `ops/s ${run.concurrency} callers`], hitRows),
);
out.push('');
out.push('Cost ratios (time per hit of the subject ÷ that of the reference; > 1× means slower):');
out.push('');
const ratioRows: string[][] = [];
const memoryRefs = ['memory-floor', 'langchain', 'bentocache'];
for (const result of memoryResults) {
  for (const refId of memoryRefs) {
    const reference = get(refId);
    if (!reference || reference.id === result.id) continue;
    const r = costRatios(result, reference);
    ratioRows.push([
      result.label,
      reference.label,
      ratio(r.p50),
      ratio(r.p99),
      ratio(r.ops1),
      ratio(r.ops64),
    ]);
  }
}
for (const result of sqliteResults) {
  const reference = get('sqlite-floor');
  if (!reference || reference.id === result.id) continue;
  const r = costRatios(result, reference);
  ratioRows.push([result.label, reference.label, ratio(r.p50), ratio(r.p99), ratio(r.ops1), ratio(r.ops64)]);
}
out.push(table(['subject', 'reference', 'p50', 'p99', '1 caller', `${run.concurrency} callers`], ratioRows));
out.push('');

out.push('## Key cost (p50)');
out.push('');
const keyRow = (
  size: string,
  label: string,
  summary: LatencySummary | undefined,
  base: LatencySummary | undefined,
) => [
  size,
  label,
  us(summary?.p50 ?? Number.NaN),
  us(summary?.p99 ?? Number.NaN),
  ratio((summary?.p50 ?? Number.NaN) / (base?.p50 ?? Number.NaN)),
];
const bigRows: string[][] = [];
for (const variant of BIG_VARIANTS) {
  const size = `${BIG_PROMPT_CHARS / 1024} KB ${variant.label}`;
  const base = keyBig.get(`sha-${variant.id}`);
  bigRows.push(
    keyRow(size, 'sha256(prompt) (floor)', base, base),
    keyRow(size, 'sha256(JSON.stringify(request))', keyBig.get(`sha-json-${variant.id}`), base),
    keyRow(size, 'buildKey(namespace, name, request)', keyBig.get(`key-${variant.id}`), base),
  );
}
const small = keySmall.get('sha-json-2k');
out.push(
  table(
    ['prompt', 'operation', 'p50 µs', 'p99 µs', 'vs floor'],
    [
      ...bigRows,
      keyRow('2 KB request', 'sha256(JSON.stringify(request)) (floor)', small, small),
      keyRow('2 KB request', 'buildKey(namespace, name, request)', keySmall.get('key-2k'), small),
    ],
  ),
);
out.push('');

if (breakdown.size > 0) {
  const full = breakdown.get('full')!.p50;
  const share = (id: string): string => pct(((breakdown.get(id)?.p50 ?? Number.NaN) / full) * 100);
  out.push('## Where a memory hit goes (ours, each piece timed alone, p50)');
  out.push('');
  const rows = [
    ['getOrCompute (whole hit)', 'full'],
    ['buildKey + getSync + decodeEntry, called directly', 'sync'],
    ['  buildKey', 'key'],
    ['  memory backend getSync (LRU move)', 'getSync'],
    ['  Map.get (what the floor does instead)', 'mapGet'],
    ['  decodeEntry', 'decode'],
    ['    zlib.crc32(payload) (one of its two checksums)', 'crc'],
    ['    UTF-8 decode of the payload', 'utf8'],
    ['    JSON.parse(payload text)', 'parse'],
  ].map(([label, id]) => [label!, us(breakdown.get(id!)?.p50 ?? Number.NaN), share(id!)]);
  const orchestration = full - breakdown.get('sync')!.p50;
  rows.push([
    'engine orchestration (whole hit − direct calls)',
    us(orchestration),
    pct((orchestration / full) * 100),
  ]);
  out.push(table(['piece', 'p50 µs', 'share of the hit'], rows));
  out.push('');
  out.push(
    `Each figure includes the harness's ~${us(harness.get('noop')!.p50)} µs; the subtraction cancels it.`,
  );
  out.push('');
}

out.push('## Mutable objects (two hits of one key)');
out.push('');
out.push(
  table(
    ['subject', 'distinct objects', 'deep-equal', 'mutation isolated', 'result'],
    mutable.map((each) => [
      each.subject,
      each.distinct ? 'yes' : 'no',
      each.equal ? 'yes' : 'no',
      each.isolated ? 'yes' : 'no',
      each.pass ? 'PASS' : 'FAIL',
    ]),
  ),
);
out.push('');

out.push('## Memory and SQLite open');
out.push('');
const otherRows: string[][] = [];
if (memory) {
  otherRows.push(
    [
      `memory level, ${memory.entries.toLocaleString('en-US')} entries`,
      `payload ${mib(memory.payloadBytes)}, heap+arrayBuffers growth ${mib(memory.growthBytes)}`,
      `overhead ${pct(memory.overheadPct)}`,
    ],
    [
      `memory level stats`,
      `${memory.reportedEntries.toLocaleString('en-US')} entries, ${mib(memory.reportedBytes)}`,
      '',
    ],
    [
      `memory: { maxBytes: ${mib(memory.bound.maxBytes)} } filled with ${(memory.bound.filledBytes / 1e6).toFixed(0)} MB`,
      `largest reported ${mib(memory.bound.maxReported)}, final ${mib(memory.bound.finalReported)}`,
      memory.bound.respected ? 'within bound' : 'OVER bound',
    ],
  );
}
if (cold.big.length > 0) {
  otherRows.push(
    [
      `cold open + first hit, ${sqliteEntries.toLocaleString('en-US')}-entry file`,
      `open ${ms(coldBig.openMs)} + first hit ${ms(coldBig.firstHitMs)}`,
      ms(coldBig.totalMs),
    ],
    [
      'cold open + first hit, 1-entry file',
      `open ${ms(coldSmall.openMs)} + first hit ${ms(coldSmall.firstHitMs)}`,
      ms(coldSmall.totalMs),
    ],
    [
      'second open + hit in the same process (big ÷ small)',
      `${ms(coldBig.reopenMs)} vs ${ms(coldSmall.reopenMs)}`,
      ratio(coldBig.reopenMs / coldSmall.reopenMs),
    ],
  );
}
if (Number.isFinite(fillMs)) {
  otherRows.push([
    `filling the SQLite file (cache.set × ${sqliteEntries.toLocaleString('en-US')})`,
    `${((sqliteEntries / fillMs) * 1000).toFixed(0)} sets/s`,
    ms(fillMs),
  ]);
}
out.push(table(['check', 'measured', 'figure'], otherRows));
out.push('');

interface Target {
  target: string;
  measured: string;
  limit: string;
  pass: boolean | undefined;
}
const targets: Target[] = [];
const oursMemory = get('ours-memory');
const memoryFloorResult = get('memory-floor')!;
const bentoResult = get('bentocache')!;
const oursSqlite = get('ours-sqlite');
const sqliteFloorResult = get('sqlite-floor')!;
const check = (value: number, limit: number): boolean | undefined =>
  Number.isFinite(value) ? value <= limit : undefined;
{
  const value = (oursMemory?.latency.p50 ?? Number.NaN) / memoryFloorResult.latency.p50;
  targets.push({
    target: 'memory hit p50 vs memory floor',
    measured: ratio(value),
    limit: '≤ 1.50×',
    pass: check(value, 1.5),
  });
}
{
  const value = (oursMemory?.latency.p50 ?? Number.NaN) / bentoResult.latency.p50;
  targets.push({
    target: 'memory hit p50 vs bentocache memory hit',
    measured: ratio(value),
    limit: '< 1.00×',
    pass: Number.isFinite(value) ? value < 1 : undefined,
  });
}
{
  const value = (oursSqlite?.latency.p50 ?? Number.NaN) / sqliteFloorResult.latency.p50;
  targets.push({
    target: 'SQLite hit p50 vs SQLite floor',
    measured: ratio(value),
    limit: '≤ 1.50×',
    pass: check(value, 1.5),
  });
}
for (const variant of BIG_VARIANTS) {
  const value = (keyBig.get(`key-${variant.id}`)?.p50 ?? Number.NaN) / keyBig.get(`sha-${variant.id}`)!.p50;
  targets.push({
    target: `buildKey, ${BIG_PROMPT_CHARS / 1024} KB ${variant.label} prompt, vs sha256 of it`,
    measured: ratio(value),
    limit: '≤ 1.50×',
    pass: check(value, 1.5),
  });
}
targets.push({
  target: 'memory overhead beyond payload',
  measured: pct(memory?.overheadPct ?? Number.NaN),
  limit: '≤ 50%',
  pass: check(memory?.overheadPct ?? Number.NaN, 50),
});
targets.push({
  target: 'memory byte bound respected (8 MiB, 50 MB written)',
  measured: memory ? `max ${mib(memory.bound.maxReported)}` : 'n/a',
  limit: `≤ 8.0 MiB`,
  pass: memory?.bound.respected,
});
{
  const value = coldBig.totalMs / coldSmall.totalMs;
  targets.push({
    target: `SQLite cold open + first hit, ${sqliteEntries / 1000}k entries vs 1 entry`,
    measured: ratio(value),
    limit: '≤ 2.00×',
    pass: check(value, 2),
  });
}
{
  const ours = mutable.filter((each) => each.subject.startsWith('ours'));
  targets.push({
    target: 'hits return distinct objects (ours)',
    measured:
      ours.length > 0
        ? ours.map((each) => `${each.subject.slice(6)} ${each.pass ? 'ok' : 'shared'}`).join(', ')
        : 'n/a',
    limit: 'not ===',
    pass: ours.length > 0 ? ours.every((each) => each.pass) : undefined,
  });
}
out.push('## Targets');
out.push('');
out.push(
  table(
    ['target', 'measured', 'limit', 'result'],
    targets.map((each) => [
      each.target,
      each.measured,
      each.limit,
      each.pass === undefined ? 'n/a' : each.pass ? 'PASS' : 'FAIL',
    ]),
  ),
);
out.push('');
if (notes.length > 0) {
  out.push('Notes:');
  for (const each of notes) out.push(`- ${each}`);
  out.push('');
}
out.push(
  `All measured hits were hits: ${allHit ? 'yes' : 'NO'}; levels that served ours: ${JSON.stringify(levelsSeen)}.`,
);
process.stdout.write(out.join('\n') + '\n');

// ---------------------------------------------------------------------------------------------
// JSON

if (jsonPath !== undefined) {
  const version = (name: string): string | undefined => {
    try {
      return (
        JSON.parse(readFileSync(join(packageDir, 'node_modules', name, 'package.json'), 'utf8')) as {
          version: string;
        }
      ).version;
    } catch {
      return undefined;
    }
  };
  const results = {
    date: new Date().toISOString(),
    machine: {
      node: process.version,
      cpus: cpus().length,
      cpu: cpus()[0]?.model,
      platform: process.platform,
    },
    versions: {
      '@langchain/core': version('@langchain/core'),
      bentocache: version('bentocache'),
      'better-sqlite3': version('better-sqlite3'),
    },
    options: { ...run, quick, sqliteEntries, distinctPrompts: N, requestBytes, responseBytes },
    harnessNoopUs: harness.get('noop'),
    hits: [...memoryResults, ...sqliteResults],
    keyCost: {
      bigPromptChars: BIG_PROMPT_CHARS,
      bigPromptBytes: bigBytes,
      big: Object.fromEntries(keyBig),
      small: Object.fromEntries(keySmall),
    },
    breakdown: Object.fromEntries(breakdown),
    mutable,
    memory,
    coldOpen: { big: coldBig, small: coldSmall, runs: cold },
    fillMs,
    allHit,
    levelsSeen,
    targets,
    notes,
  };
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(jsonPath, JSON.stringify(results, null, 2) + '\n');
  progress(`wrote ${jsonPath}`);
}
progress('done');
