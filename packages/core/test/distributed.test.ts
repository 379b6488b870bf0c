import { type ChildProcess, fork, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createCache } from '../src/cache.ts';
import { openStore } from './fixtures/open-store.ts';
import type { RedisHandle } from './redis-server.ts';
import { redisUnavailable, startRedis } from './redis-server.ts';

const skip = redisUnavailable();
const here = import.meta.dirname;
const nodeArgs = ['--conditions=@x/source'];

let server: RedisHandle | undefined;
let dir: string;
let seq = 0;

beforeAll(async () => {
  if (!skip) server = await startRedis();
}, 30_000);
afterAll(async () => {
  await server?.stop();
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'x-distributed-'));
  return () => rmSync(dir, { recursive: true, force: true });
});

function prefix(): string {
  return `dist-${process.pid}-${++seq}:`;
}

interface Worker {
  child: ChildProcess;
  done: Promise<{ code: number | null; values: string[] }>;
}

function flightWorker(
  store: string,
  keyPrefix: string,
  opts: {
    callers: number;
    computeMs: number;
    lockTtlMs: number;
    countFile: string;
    barrier?: [string, number];
    refuseFile?: string;
  },
): Worker {
  const child = spawn(
    process.execPath,
    [
      ...nodeArgs,
      join(here, 'fixtures/flight-worker.ts'),
      store,
      keyPrefix,
      'the-key',
      String(opts.callers),
      String(opts.computeMs),
      String(opts.lockTtlMs),
      opts.countFile,
      ...(opts.barrier ? [opts.barrier[0], String(opts.barrier[1])] : []),
    ],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: opts.refuseFile ? { ...process.env, REFUSE_FILE: opts.refuseFile } : process.env,
    },
  );
  let out = '';
  child.stdout!.on('data', (chunk) => {
    out += chunk;
  });
  const done = new Promise<{ code: number | null; values: string[] }>((resolve) => {
    child.on('exit', (code) => resolve({ code, values: code === 0 ? (JSON.parse(out) as string[]) : [] }));
  });
  return { child, done };
}

function computes(countFile: string): string[] {
  return existsSync(countFile) ? readFileSync(countFile, 'utf8').split('\n').filter(Boolean) : [];
}

const stores = () => [
  { label: 'Redis', store: server!.url },
  { label: 'SQLite', store: join(dir, 'shared.db') },
];

describe.skipIf(skip)('cross-process single-flight', () => {
  for (const label of ['Redis', 'SQLite']) {
    it(`${label}: 4 processes x 25 concurrent callers compute once in total`, async () => {
      const { store } = stores().find((s) => s.label === label)!;
      const countFile = join(dir, 'computes.txt');
      const keyPrefix = prefix();
      const workers = Array.from({ length: 4 }, () =>
        flightWorker(store, keyPrefix, {
          callers: 25,
          computeMs: 1000,
          lockTtlMs: 5000,
          countFile,
          barrier: [join(dir, 'barrier.txt'), 4],
        }),
      );
      const results = await Promise.all(workers.map((w) => w.done));
      expect(results.map((r) => r.code)).toEqual([0, 0, 0, 0]);
      expect(computes(countFile)).toHaveLength(1);
      const all = results.flatMap((r) => r.values);
      expect(all).toHaveLength(100);
      expect(new Set(all).size).toBe(1);
    }, 60_000);

    it(`${label}: when the holder stores nothing, the waiting processes compute at once, not one by one`, async () => {
      const { store } = stores().find((s) => s.label === label)!;
      const countFile = join(dir, 'computes.txt');
      const refuseFile = join(dir, 'refused.txt');
      const keyPrefix = prefix();
      const computeMs = 800;
      const workers = Array.from({ length: 3 }, () =>
        flightWorker(store, keyPrefix, {
          callers: 5,
          computeMs,
          lockTtlMs: 5000,
          countFile,
          barrier: [join(dir, 'barrier.txt'), 3],
          refuseFile,
        }),
      );
      const results = await Promise.all(workers.map((w) => w.done));
      expect(results.map((r) => r.code)).toEqual([0, 0, 0]);
      // Nothing was stored, so every process computed once for its own callers.
      const runs = readFileSync(refuseFile, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((line) => line.split(' ').map(Number) as [number, number, number])
        .sort((a, b) => a[1] - b[1]);
      expect(runs).toHaveLength(3);
      expect(new Set(runs.map(([pid]) => pid)).size).toBe(3);
      for (const r of results) expect(new Set(r.values).size).toBe(1);
      // The two waiters started together once the holder was done; queued on the lock one after
      // the other, the last would have started a whole compute (800 ms) after the holder ended.
      const holderEnd = runs[0]![2];
      expect(runs[2]![1] - holderEnd).toBeLessThan(computeMs / 2);
      expect(runs[2]![1]).toBeLessThan(runs[1]![2]);
    }, 60_000);

    it(`${label}: a holder killed mid-compute is taken over exactly once, and nobody hangs`, async () => {
      const { store } = stores().find((s) => s.label === label)!;
      const countFile = join(dir, 'computes.txt');
      const keyPrefix = prefix();
      const holder = flightWorker(store, keyPrefix, {
        callers: 5,
        computeMs: 60_000,
        lockTtlMs: 1000,
        countFile,
      });
      for (let i = 0; i < 400 && computes(countFile).length === 0; i++) await sleep(25);
      expect(computes(countFile)).toHaveLength(1);
      const waiters = [1, 2].map(() =>
        flightWorker(store, keyPrefix, { callers: 5, computeMs: 200, lockTtlMs: 1000, countFile }),
      );
      await sleep(300);
      holder.child.kill('SIGKILL');
      const results = await Promise.all(waiters.map((w) => w.done));
      expect(results.map((r) => r.code)).toEqual([0, 0]);
      const log = computes(countFile);
      expect(log).toHaveLength(2);
      const values = results.flatMap((r) => r.values);
      expect(new Set(values).size).toBe(1);
      expect(values[0]).toBe(`computed by ${log[1]}`);
    }, 60_000);
  }
});

const coherenceStores = [
  { name: 'Redis', skip, where: () => server!.url, shared: 'redis' },
  { name: 'one SQLite file', skip: undefined, where: () => join(dir, 'shared.db'), shared: 'sqlite' },
];

describe.each(coherenceStores)('memory levels across processes sharing $name', (store) => {
  it.skipIf(store.skip)(
    'an overwrite or invalidation in one process reaches the other process memory level',
    async () => {
      const keyPrefix = prefix();
      const where = store.where();
      const cache = createCache({ store: openStore(where, keyPrefix) });
      await cache.ready();
      const child = fork(join(here, 'fixtures/coherence-worker.ts'), [where, keyPrefix], {
        execArgv: nodeArgs,
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      let id = 0;
      const pending = new Map<number, (value: { value: unknown; level: string | null }) => void>();
      const ready = new Promise<void>((resolve) => {
        child.on(
          'message',
          (message: { ready?: boolean; id?: number; value?: unknown; level?: string | null }) => {
            if (message.ready) resolve();
            else pending.get(message.id!)?.({ value: message.value, level: message.level ?? null });
          },
        );
      });
      const ask = (op: 'get' | 'close', key?: string) =>
        new Promise<{ value: unknown; level: string | null }>((resolve) => {
          const n = ++id;
          pending.set(n, resolve);
          child.send({ id: n, op, key });
        });
      /** The other process sees `expected` within the bus bound (polled, not slept through). */
      const eventually = async (key: string, expected: unknown) => {
        let last: unknown;
        for (let i = 0; i < 100; i++) {
          last = (await ask('get', key)).value;
          if (last === expected) return;
          await sleep(10);
        }
        expect(last).toBe(expected);
      };
      /**
       * The bus message for a write the other process already read may still arrive and drop the
       * entry once; after that the other process serves it from its memory level.
       */
      const servedFromMemory = async (key: string) => {
        let level: string | null = null;
        for (let i = 0; i < 100 && level !== 'memory'; i++) {
          level = (await ask('get', key)).level;
          if (level !== 'memory') await sleep(10);
        }
        expect(level).toBe('memory');
      };
      try {
        await ready;
        await cache.set({ name: 'doc', request: 'a' }, 'v1', { tags: ['docs'] });
        expect(await ask('get', 'a')).toEqual({ value: 'v1', level: store.shared });
        await servedFromMemory('a');

        await cache.set({ name: 'doc', request: 'a' }, 'v2', { tags: ['docs'] });
        await eventually('a', 'v2');

        await servedFromMemory('a');
        await cache.invalidateTags(['docs']);
        await eventually('a', null);

        await cache.set({ name: 'doc', request: 'b' }, 'b1');
        expect((await ask('get', 'b')).value).toBe('b1');
        await cache.invalidate('doc');
        await eventually('b', null);
      } finally {
        await ask('close');
        await cache.close();
      }
    },
    30_000,
  );
});
