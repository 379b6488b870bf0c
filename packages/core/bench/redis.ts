/**
 * Redis hit benchmark (part of `pnpm bench`): our Redis level against the raw ioredis floor and
 * against LangChain's ioredis RedisCache and bentocache's Redis driver, on the same workload
 * (2 KB chat prompt as the key source, 2 KB JSON response), all against one redis-server of our
 * own on a free loopback port. Prints ratios; never fails on a missed target.
 */
import { createHash } from 'node:crypto';
import { RedisCache as LangChainRedisCache } from '@langchain/community/caches/ioredis';
import { AIMessage } from '@langchain/core/messages';
import type { ChatGeneration } from '@langchain/core/outputs';
import { BentoCache, bentostore } from 'bentocache';
import { memoryDriver } from 'bentocache/drivers/memory';
import { redisDriver } from 'bentocache/drivers/redis';
import { Redis } from 'ioredis';
import { redisBackend } from '../src/backends/redis.ts';
import { createCache } from '../src/cache.ts';
import { startRedis } from '../test/redis-server.ts';
import type { Subject } from './measure.ts';
import { runSubjects } from './measure.ts';
import { ops, ratio, table, us } from './report.ts';
import { DISTINCT_PROMPTS, KEY_NAME, makeRequest, makeResponse } from './workload.ts';

const quick = process.argv.includes('--quick');
const server = await startRedis();
const requests = Array.from({ length: DISTINCT_PROMPTS }, (_, i) => makeRequest(i));
const responses = Array.from({ length: DISTINCT_PROMPTS }, (_, i) => makeResponse(i));
const pick = (i: number) => i % DISTINCT_PROMPTS;
const sha = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * Wraps an ioredis client so we can count the commands each operation sends; `stop()` restores
 * it, so the timed runs pay nothing for the counting.
 */
function counting(client: Redis): { sent: string[]; stop(): void } {
  const sent: string[] = [];
  const original = client.sendCommand;
  const send = original.bind(client);
  client.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
    sent.push(command.name);
    return (send as (...args: unknown[]) => unknown)(command, ...rest);
  }) as typeof client.sendCommand;
  return {
    sent,
    stop: () => {
      client.sendCommand = original;
    },
  };
}

// Floors: sha256 of the prompt + raw GET + JSON.parse, with a plain client (what
// redisBackend({ url }) creates) and with an auto-pipelined one.
const raw = new Redis(server.url);
const rawAuto = new Redis(server.url, { enableAutoPipelining: true });
for (let i = 0; i < DISTINCT_PROMPTS; i++) {
  await raw.set(`floor:${sha(JSON.stringify(requests[i]))}`, JSON.stringify(responses[i]));
}

// Ours: Redis as the only level (memory: false), so every hit goes to Redis.
const oursClient = new Redis(server.url);
const counter = counting(oursClient);
const oursSent = counter.sent;
const ours = createCache({
  store: redisBackend({ client: oursClient, keyPrefix: 'bench:' }),
  memory: false,
  singleFlight: 'process',
});
const oursDistributed = createCache({
  store: redisBackend({ client: oursClient, keyPrefix: 'bench-d:' }),
  memory: false,
});
const withMemory = createCache({ store: redisBackend({ client: oursClient, keyPrefix: 'bench:' }) });
for (let i = 0; i < DISTINCT_PROMPTS; i++) {
  await ours.set({ name: KEY_NAME, request: requests[i] }, responses[i]);
}

// Round trips, counted on the client.
oursSent.length = 0;
await ours.getOrCompute({ name: KEY_NAME, request: requests[0] }, () => responses[0]);
const hitCommands = [...oursSent];
oursSent.length = 0;
await ours.getOrCompute({ name: KEY_NAME, request: { miss: 1 } }, () => responses[0]);
const missCommands = [...oursSent];
oursSent.length = 0;
await oursDistributed.getOrCompute({ name: KEY_NAME, request: { miss: 2 } }, () => responses[0]);
const distributedMissCommands = [...oursSent];
await withMemory.getOrCompute({ name: KEY_NAME, request: requests[1] }, () => responses[1]);
oursSent.length = 0;
await withMemory.getOrCompute({ name: KEY_NAME, request: requests[1] }, () => responses[1]);
const memoryHitCommands = [...oursSent];
oursSent.length = 0;
await Promise.all(
  requests
    .slice(0, 64)
    .map((request, i) => ours.getOrCompute({ name: KEY_NAME, request }, () => responses[i])),
);
const concurrentHitCommands = [...oursSent];
counter.stop();

// LangChain's ioredis RedisCache: lookup(prompt, llmString) as BaseChatModel calls it.
const lcClient = new Redis(server.url);
const langchain = new LangChainRedisCache(lcClient);
const llmString = JSON.stringify({ model: 'gpt-4o-mini', temperature: 0 });
const prompts = requests.map((r) => JSON.stringify(r.messages));
for (let i = 0; i < DISTINCT_PROMPTS; i++) {
  // A chat generation, as chat models store them (message included).
  const generation: ChatGeneration = { text: responses[i]!.text, message: new AIMessage(responses[i]!.text) };
  await langchain.update(prompts[i]!, llmString, [generation]);
}

// bentocache with only its Redis layer, keyed by a sha256 of the prompt as a user would.
const bento = new BentoCache({
  default: 'redis',
  stores: {
    redis: bentostore().useL2Layer(redisDriver({ connection: { host: '127.0.0.1', port: server.port } })),
  },
});
for (let i = 0; i < DISTINCT_PROMPTS; i++) {
  await bento.set({ key: sha(JSON.stringify(requests[i])), value: responses[i] });
}

// bentocache's recommended two-level setup (memory in front of Redis), against ours with a memory
// level: what most deployments run. Information only; the targets are about Redis hits.
const bentoTiered = new BentoCache({
  default: 'tiered',
  stores: {
    tiered: bentostore()
      .useL1Layer(memoryDriver({ maxItems: 10_000, maxSize: '64mb' }))
      .useL2Layer(redisDriver({ connection: { host: '127.0.0.1', port: server.port } })),
  },
});
for (let i = 0; i < DISTINCT_PROMPTS; i++) {
  await bentoTiered.set({ key: sha(JSON.stringify(requests[i])), value: responses[i] });
}

const subjects: Subject[] = [
  {
    id: 'floor',
    label: 'floor: sha256 + ioredis GET + JSON.parse',
    op: async (i) => JSON.parse((await raw.get(`floor:${sha(JSON.stringify(requests[pick(i)]))}`))!),
  },
  {
    id: 'floor-auto',
    label: 'floor, auto-pipelined client',
    op: async (i) => JSON.parse((await rawAuto.get(`floor:${sha(JSON.stringify(requests[pick(i)]))}`))!),
  },
  {
    id: 'ours',
    label: 'ours: redis level hit',
    op: (i) => ours.getOrCompute({ name: KEY_NAME, request: requests[pick(i)] }, () => responses[pick(i)]),
  },
  {
    id: 'langchain',
    label: 'LangChain RedisCache (ioredis)',
    op: (i) => langchain.lookup(prompts[pick(i)]!, llmString),
  },
  {
    id: 'bentocache',
    label: 'bentocache redis driver',
    op: (i) =>
      bento.getOrSet({ key: sha(JSON.stringify(requests[pick(i)])), factory: () => responses[pick(i)] }),
  },
  {
    id: 'bento-l1',
    label: 'bentocache memory + redis (info)',
    op: (i) =>
      bentoTiered.getOrSet({
        key: sha(JSON.stringify(requests[pick(i)])),
        factory: () => responses[pick(i)],
      }),
  },
  {
    id: 'ours-l1',
    label: 'ours: memory level in front of redis',
    op: (i) =>
      withMemory.getOrCompute({ name: KEY_NAME, request: requests[pick(i)] }, () => responses[pick(i)]),
  },
];

const results = await runSubjects(subjects, {
  warmup: quick ? 200 : 2000,
  blocks: quick ? 4 : 20,
  blockSamples: quick ? 100 : 500,
  slices: quick ? 2 : 5,
  sliceMs: quick ? 100 : 300,
  concurrency: 64,
});
const byId = new Map(results.map((r) => [r.id, r]));
const floor = byId.get('floor')!;
const mine = byId.get('ours')!;

console.log('\n## Redis hit (2 KB prompt key source, 2 KB JSON value, one local redis-server)\n');
console.log(
  table(
    ['subject', 'p50', 'p99', 'ops/s (1)', 'ops/s (64)', 'p50 vs floor', 'ours p50 vs it'],
    results.map((r) => [
      r.label,
      `${us(r.latency.p50)} µs`,
      `${us(r.latency.p99)} µs`,
      ops(r.opsPerSec1),
      ops(r.opsPerSec64),
      ratio(r.latency.p50 / floor.latency.p50),
      ratio(mine.latency.p50 / r.latency.p50),
    ]),
  ),
);

// Throughput is held to the better of the two floors: our backend batches concurrent reads
// itself, so the auto-pipelined client is the floor it must be compared with.
const bestFloor64 = Math.max(floor.opsPerSec64, byId.get('floor-auto')!.opsPerSec64);
const targets: [string, boolean, string][] = [
  [
    'redis hit p50 <= 1.15x floor',
    mine.latency.p50 <= 1.15 * floor.latency.p50,
    ratio(mine.latency.p50 / floor.latency.p50),
  ],
  [
    '64-concurrent throughput >= 0.8x floor (the better of plain and auto-pipelined)',
    mine.opsPerSec64 >= 0.8 * bestFloor64,
    ratio(mine.opsPerSec64 / bestFloor64),
  ],
  ['a hit is one round trip', hitCommands.length === 1, hitCommands.join(', ')],
  [
    'a miss + store is at most two (singleFlight: process)',
    missCommands.length <= 2,
    missCommands.join(', '),
  ],
  [
    'ahead of LangChain RedisCache (p50 and 64-concurrent)',
    mine.latency.p50 < byId.get('langchain')!.latency.p50 &&
      mine.opsPerSec64 > byId.get('langchain')!.opsPerSec64,
    `${ratio(mine.latency.p50 / byId.get('langchain')!.latency.p50)} p50`,
  ],
  [
    'ahead of bentocache redis (p50 and 64-concurrent)',
    mine.latency.p50 < byId.get('bentocache')!.latency.p50 &&
      mine.opsPerSec64 > byId.get('bentocache')!.opsPerSec64,
    `${ratio(mine.latency.p50 / byId.get('bentocache')!.latency.p50)} p50`,
  ],
  [
    'a memory hit in front of redis sends no command',
    memoryHitCommands.length === 0,
    String(memoryHitCommands.length),
  ],
];
console.log('\n### Redis targets\n');
console.log(
  table(
    ['target', 'result', 'measured'],
    targets.map(([name, ok, value]) => [name, ok ? 'PASS' : 'FAIL', value]),
  ),
);
console.log(`\nmiss with the default singleFlight: 'distributed': ${distributedMissCommands.join(', ')}`);
const tally = new Map<string, number>();
for (const name of concurrentHitCommands) tally.set(name, (tally.get(name) ?? 0) + 1);
console.log(
  `64 concurrent hits sent ${concurrentHitCommands.length} commands (${[...tally].map(([name, n]) => `${n} ${name}`).join(', ')}): reads issued together share one MGET`,
);

await ours.close();
rawAuto.disconnect();
await oursDistributed.close();
await withMemory.close();
await bento.disconnectAll();
await bentoTiered.disconnectAll();
raw.disconnect();
lcClient.disconnect();
oursClient.disconnect();
await server.stop();
