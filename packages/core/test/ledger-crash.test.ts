/**
 * Crash recovery of the tool ledger with real processes sharing a real store (a SQLite file, a
 * redis-server): a holder killed mid-execution, restarts, and many processes racing for one key.
 * Leases are short real times here; everything in-process uses fake clocks (ledger.test.ts).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openStore } from './fixtures/open-store.ts';
import type { RedisHandle } from './redis-server.ts';
import { redisUnavailable, startRedis } from './redis-server.ts';

const skipRedis = redisUnavailable();
const here = import.meta.dirname;

let server: RedisHandle | undefined;
let dir: string;
let seq = 0;

beforeAll(async () => {
  if (!skipRedis) server = await startRedis();
}, 30_000);
afterAll(async () => {
  await server?.stop();
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'x-ledger-crash-'));
  return () => rmSync(dir, { recursive: true, force: true });
});

interface WorkerResult {
  value?: { deployedBy: number; attempt: number };
  source?: string;
  attempt?: number;
  recovered?: boolean;
  error?: { name?: string; code?: string; message?: string };
}

interface Worker {
  child: ChildProcess;
  done: Promise<{ code: number | null; results: WorkerResult[] }>;
}

interface Setup {
  store: string;
  keyPrefix: string;
  key: string;
  countFile: string;
}

function worker(
  setup: Setup,
  config: {
    callers?: number;
    executeMs: number;
    leaseTtlMs: number;
    onAbandoned?: 'reexecute' | 'throw';
    barrier?: [string, number];
  },
): Worker {
  const child = spawn(
    process.execPath,
    [
      '--conditions=@x/source',
      join(here, 'fixtures/ledger-worker.ts'),
      setup.store,
      setup.keyPrefix,
      JSON.stringify({ key: setup.key, countFile: setup.countFile, callers: 1, ...config }),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout!.on('data', (chunk) => {
    out += chunk;
  });
  const done = new Promise<{ code: number | null; results: WorkerResult[] }>((resolve) => {
    child.on('exit', (code) =>
      resolve({ code, results: code === 0 ? (JSON.parse(out) as WorkerResult[]) : [] }),
    );
  });
  return { child, done };
}

/** Pids of the processes that started an execution, in order. */
function executions(countFile: string): number[] {
  return existsSync(countFile) ? readFileSync(countFile, 'utf8').split('\n').filter(Boolean).map(Number) : [];
}

async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 800 && !condition(); i++) await sleep(25);
  expect(condition()).toBe(true);
}

const stores: Array<{ label: string; skip: string | undefined; setup: () => Setup }> = [
  {
    label: 'SQLite',
    skip: undefined,
    setup: () => ({
      store: join(dir, 'ledger.db'),
      keyPrefix: '',
      key: `deploy-${++seq}`,
      countFile: join(dir, 'executions.txt'),
    }),
  },
  {
    label: 'Redis',
    skip: skipRedis,
    setup: () => ({
      store: server!.url,
      keyPrefix: `ledger-crash-${process.pid}-${++seq}:`,
      key: `deploy-${seq}`,
      countFile: join(dir, 'executions.txt'),
    }),
  },
];

for (const { label, skip, setup: makeSetup } of stores) {
  describe.skipIf(skip)(`tool ledger across processes (${label})`, () => {
    it('compareAndSwap loses no update with 4 processes incrementing one counter', async () => {
      const setup = makeSetup();
      const barrier = join(dir, 'cas-barrier.txt');
      const runs = Array.from({ length: 4 }, () => {
        const child = spawn(
          process.execPath,
          [
            '--conditions=@x/source',
            join(here, 'fixtures/ledger-cas-worker.ts'),
            setup.store,
            setup.keyPrefix,
            '50',
            barrier,
            '4',
          ],
          { stdio: ['ignore', 'ignore', 'inherit'] },
        );
        return new Promise<number | null>((resolve) => child.on('exit', resolve));
      });
      expect(await Promise.all(runs)).toEqual([0, 0, 0, 0]);
      const store = openStore(setup.store, setup.keyPrefix);
      const counter = await store.get('ns:counter');
      await store.close();
      expect(new TextDecoder().decode(counter?.value)).toBe('200');
    }, 60_000);

    it('a holder killed mid-execution: the retry waits out its lease, re-executes once, and a restart replays', async () => {
      const setup = makeSetup();
      const holder = worker(setup, { executeMs: 60_000, leaseTtlMs: 1000 });
      await until(() => executions(setup.countFile).length === 1);
      expect(executions(setup.countFile)).toEqual([holder.child.pid]);

      // The retry finds the pending record with a live lease and waits instead of running.
      const retry = worker(setup, { executeMs: 50, leaseTtlMs: 1000 });
      await sleep(400);
      expect(executions(setup.countFile)).toHaveLength(1);
      holder.child.kill('SIGKILL');

      const retried = await retry.done;
      expect(retried.code).toBe(0);
      expect(executions(setup.countFile)).toEqual([holder.child.pid, retry.child.pid]);
      expect(retried.results).toEqual([
        {
          value: { deployedBy: retry.child.pid, attempt: 2 },
          source: 'executed',
          attempt: 2,
          recovered: true,
        },
      ]);

      // A process started later (a restart) replays the recorded outcome and runs nothing.
      const restarted = await worker(setup, { executeMs: 50, leaseTtlMs: 1000 }).done;
      expect(restarted.results).toEqual([
        {
          value: { deployedBy: retry.child.pid, attempt: 2 },
          source: 'replayed',
          attempt: 2,
          recovered: false,
        },
      ]);
      expect(executions(setup.countFile)).toHaveLength(2);
    }, 60_000);

    it("with onAbandoned: 'throw', the retry reports an unknown outcome instead of running again", async () => {
      const setup = makeSetup();
      const holder = worker(setup, { executeMs: 60_000, leaseTtlMs: 500, onAbandoned: 'throw' });
      await until(() => executions(setup.countFile).length === 1);
      holder.child.kill('SIGKILL');
      await holder.done;
      const retried = await worker(setup, { executeMs: 50, leaseTtlMs: 500, onAbandoned: 'throw' }).done;
      expect(retried.results).toEqual([
        { error: expect.objectContaining({ name: 'ToolOutcomeUnknownError', code: 'E_OUTCOME_UNKNOWN' }) },
      ]);
      expect(executions(setup.countFile)).toEqual([holder.child.pid]);
    }, 60_000);

    it('4 processes x 10 concurrent callers execute once; later processes only replay', async () => {
      const setup = makeSetup();
      const barrier: [string, number] = [join(dir, 'barrier.txt'), 4];
      const racers = Array.from({ length: 4 }, () =>
        worker(setup, { callers: 10, executeMs: 500, leaseTtlMs: 5000, barrier }),
      );
      const results = await Promise.all(racers.map((each) => each.done));
      expect(results.map((each) => each.code)).toEqual([0, 0, 0, 0]);
      const runs = executions(setup.countFile);
      expect(runs).toHaveLength(1);
      const all = results.flatMap((each) => each.results);
      expect(all).toHaveLength(40);
      expect(all.every((each) => each.value?.deployedBy === runs[0])).toBe(true);
      expect(all.filter((each) => each.source === 'executed')).toHaveLength(1);

      for (let restart = 0; restart < 2; restart++) {
        const again = await worker(setup, { callers: 3, executeMs: 50, leaseTtlMs: 5000 }).done;
        expect(again.results.map((each) => each.source)).toEqual(['replayed', 'replayed', 'replayed']);
      }
      expect(executions(setup.countFile)).toHaveLength(1);
    }, 60_000);
  });
}
