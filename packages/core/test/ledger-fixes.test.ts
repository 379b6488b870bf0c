import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { memoryBackend } from '../src/backends/memory.ts';
import { sqliteBackend } from '../src/backends/sqlite.ts';
import type { Cache, CacheOptions } from '../src/cache.ts';
import { createCache } from '../src/cache.ts';
import { decodeEntry, encodeEntry } from '../src/codec/index.ts';
import { CacheError } from '../src/errors.ts';
import type { ToolLedgerOptions } from '../src/ledger/index.ts';
import {
  createToolLedger,
  LEDGER_KEY_PREFIX,
  RecordedToolError,
  ToolInProgressError,
} from '../src/ledger/index.ts';
import { deferred, fakeClock as frozenClock } from './support.ts';

let dir: string;
const caches: Cache[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'x-ledger-fixes-'));
});
afterEach(async () => {
  for (const cache of caches.splice(0)) await cache.close();
  rmSync(dir, { recursive: true, force: true });
});

function open(cacheOptions: CacheOptions, options: Omit<ToolLedgerOptions, 'cache'> = {}) {
  const cache = createCache({ clock: frozenClock(), ...cacheOptions });
  caches.push(cache);
  const ledger = createToolLedger({
    cache,
    tools: { w: { kind: 'write' }, r: { kind: 'read', ttl: '1h' } },
    pollInterval: 10,
    ...options,
  });
  return { cache, ledger };
}

const sqlite = (name: string): CacheOptions => ({ store: sqliteBackend({ path: join(dir, name) }) });

describe('ledger fixes: a bounded memory store keeps idempotency records', () => {
  it('a write is replayed, not run again, after its store evicted other entries to stay in bounds', async () => {
    const { ledger } = open({ store: memoryBackend({ maxEntries: 5 }), memory: false });
    let sent = 0;
    const write = {
      tool: 'w',
      input: { to: 'ada' },
      idempotencyKey: 'k',
      execute: async () => `sent ${++sent}`,
    };
    expect(await ledger.executeOrReplay(write)).toMatchObject({ source: 'executed', value: 'sent 1' });
    for (let i = 0; i < 20; i++) {
      await ledger.executeOrReplay({ tool: 'r', input: i, execute: async () => `read ${i}` });
    }
    expect(await ledger.executeOrReplay(write)).toMatchObject({ source: 'replayed', value: 'sent 1' });
    expect(sent).toBe(1);
  });

  it('keeps large outputs (blobs) of recorded writes through the same pressure', async () => {
    const { ledger } = open(
      { store: memoryBackend({ maxEntries: 6, maxBytes: 64 * 1024 }), memory: false },
      { blobThreshold: 1024 },
    );
    let runs = 0;
    const stdout = 'x'.repeat(20_000);
    const write = {
      tool: 'w',
      input: 'build',
      idempotencyKey: 'big',
      execute: async () => ({ exitCode: 0, run: ++runs, stdout }),
    };
    await ledger.executeOrReplay(write);
    for (let i = 0; i < 30; i++) {
      await ledger.executeOrReplay({ tool: 'r', input: i, execute: async () => 'y'.repeat(4000) });
    }
    const replay = await ledger.executeOrReplay(write);
    expect(replay).toMatchObject({ source: 'replayed', value: { run: 1 } });
    expect(replay.value.stdout).toBe(stdout);
    expect(runs).toBe(1);
  });
});

describe('ledger fixes: a waiting joiner does not take a thrower’s in-progress error', () => {
  it("a call that waits, joining an in-process call with onConcurrent: 'throw', waits for the holder", async () => {
    const a = open(sqlite('join.db'));
    const b = open(sqlite('join.db'));
    const release = deferred<string>();
    const started = deferred();
    // Process A holds the key.
    const holder = a.ledger.executeOrReplay({
      tool: 'w',
      input: 1,
      idempotencyKey: 'shared',
      execute: async () => {
        started.resolve();
        return release.promise;
      },
    });
    await started.promise;
    // In process B, a thrower leads, and a waiter joins it before it has its answer.
    const thrower = b.ledger
      .executeOrReplay({
        tool: 'w',
        input: 1,
        idempotencyKey: 'shared',
        onConcurrent: 'throw',
        execute: async () => 'thrower ran',
      })
      .catch((error: unknown) => error);
    const waiter = b.ledger.executeOrReplay({
      tool: 'w',
      input: 1,
      idempotencyKey: 'shared',
      execute: async () => 'waiter ran',
    });
    expect(ToolInProgressError.isInstance(await thrower)).toBe(true);
    release.resolve('holder ran');
    expect(await holder).toMatchObject({ source: 'executed', value: 'holder ran' });
    expect(await waiter).toMatchObject({ source: 'replayed', value: 'holder ran' });
  });
});

describe('ledger fixes: history of a task named like a record kind', () => {
  it.each(['idem', 'blob'])(
    "a task or work item named '%s' keeps its history evictable and listable",
    async (id) => {
      const path = join(dir, `history-${id}.db`);
      const { ledger } = open({ store: sqliteBackend({ path, maxEntries: 3 }), memory: false });
      for (let i = 0; i < 6; i++) {
        await ledger.executeOrReplay({
          tool: 'w',
          input: i,
          idempotencyKey: `k${i}`,
          scope: { taskId: id, workItemId: id },
          execute: async () => i,
        });
      }
      // The history of that task is listed, and its entries are evicted like any history.
      const listed = await ledger.history({ taskId: id, workItemId: id });
      expect(listed.length).toBeGreaterThan(0);
      const reader = sqliteBackend({ path });
      const history: string[] = [];
      for await (const key of reader.keys()) if (key.includes(':hist:')) history.push(key);
      await reader.close();
      expect(history.length).toBeLessThan(6);
      // Every write is still replayed: the records themselves were kept.
      for (let i = 0; i < 6; i++) {
        const again = await ledger.executeOrReplay({
          tool: 'w',
          input: i,
          idempotencyKey: `k${i}`,
          scope: { taskId: id, workItemId: id },
          execute: async () => -1,
        });
        expect(again).toMatchObject({ source: 'replayed', value: i });
      }
    },
  );
});

describe('ledger fixes: history order within one millisecond', () => {
  // Ids carry a per-ledger sequence; before the fix 'a' … 'z' sorted fine and '10' (36) did not.
  it('lists calls in the order they were made, and limit keeps the latest', async () => {
    const { ledger } = open(sqlite('history.db'));
    const made: string[] = [];
    for (let i = 0; i < 40; i++) {
      made.push(`k${i}`);
      await ledger.executeOrReplay({
        tool: 'w',
        input: i,
        idempotencyKey: `k${i}`,
        scope: { taskId: 't' },
        execute: async () => i,
      });
    }
    const keys = async (limit?: number) =>
      (await ledger.history({ taskId: 't', limit })).map((entry) => entry.key);
    expect(await keys()).toEqual(made);
    expect(await keys(3)).toEqual(['k37', 'k38', 'k39']);
  });

  it('keeps ordering entries written with unpadded ids (before the fix) by their sequence', async () => {
    const { cache, ledger } = open(sqlite('history-old.db'));
    const made: string[] = [];
    for (let i = 0; i < 40; i++) {
      made.push(`k${i}`);
      await ledger.executeOrReplay({
        tool: 'w',
        input: i,
        idempotencyKey: `k${i}`,
        scope: { taskId: 't' },
        execute: async () => i,
      });
    }
    // Rewritten as an earlier version stored them: the sequence part not zero-padded.
    const store = cache.store!;
    const keys: string[] = [];
    for await (const key of store.keys({ prefix: `${LEDGER_KEY_PREFIX}${ledger.namespace}:hist:` }))
      keys.push(key);
    expect(keys).toHaveLength(40);
    for (const key of keys) {
      const stored = (await store.get(key))!;
      const entry = decodeEntry<{ id: string }>(stored.value).value;
      const [time, sequence, random] = entry.id.split('-') as [string, string, string];
      const id = `${time}-${Number.parseInt(sequence, 36).toString(36)}-${random}`;
      await store.delete(key);
      await store.set(key.slice(0, -entry.id.length) + id, {
        value: encodeEntry({ ...entry, id }, { createdAt: 0 }),
        expiresAt: stored.expiresAt,
      });
    }
    const history = await ledger.history({ taskId: 't' });
    expect(history.map((entry) => entry.key)).toEqual(made);
    expect(history[1]!.id).toMatch(/^[0-9a-z]+-2-/);
  });
});

describe('ledger fixes: replayed errors keep name, message and code', () => {
  it('a thrown plain object with a code and no message keeps its code on replay', async () => {
    const { ledger } = open(sqlite('plain.db'));
    const call = {
      tool: 'w',
      input: 1,
      idempotencyKey: 'plain',
      execute: async () => {
        throw { code: 'E_QUOTA', status: 429 };
      },
    };
    const first = await ledger.executeOrReplay(call).catch((error: unknown) => error);
    expect(first).toEqual({ code: 'E_QUOTA', status: 429 });
    const replay = await ledger.executeOrReplay(call).catch((error: unknown) => error);
    expect(RecordedToolError.isInstance(replay)).toBe(true);
    expect(replay).toMatchObject({ code: 'E_QUOTA', replayed: true });
    expect((replay as Error).message).toBe('{"code":"E_QUOTA","status":429}');
  });

  it('records no nested objects or credential-named fields of a thrown plain object', async () => {
    const { ledger } = open(sqlite('plain-secret.db'));
    const call = {
      tool: 'w',
      input: 1,
      idempotencyKey: 'plain-secret',
      execute: async () => {
        throw {
          code: 'E_HTTP',
          status: 401,
          apiKey: 'sk-secret-1',
          config: { headers: { Authorization: 'Bearer sk-secret-2' } },
        };
      },
    };
    await ledger.executeOrReplay(call).catch(() => undefined);
    const replay = await ledger.executeOrReplay(call).catch((error: unknown) => error);
    expect((replay as Error).message).toBe('{"code":"E_HTTP","status":401}');
  });

  it('keeps a bigint code and a non-string name', async () => {
    const { ledger } = open(sqlite('bigint.db'));
    const call = {
      tool: 'w',
      input: 2,
      idempotencyKey: 'bigint',
      execute: async () => {
        throw Object.assign(new Error('out of range'), { code: 12345678901234567890n, name: 404 });
      },
    };
    await ledger.executeOrReplay(call).catch(() => undefined);
    const replay = (await ledger.executeOrReplay(call).catch((error: unknown) => error)) as RecordedToolError;
    expect(replay.code).toBe(12345678901234567890n);
    expect(replay.name).toBe('404');
    expect(replay.message).toBe('out of range');
  });
});

describe('ledger fixes: every call is counted and in the history', () => {
  it('in-process joiners of a failed execution', async () => {
    const { ledger } = open(sqlite('joiners.db'));
    const go = deferred();
    const started = deferred();
    const call = {
      tool: 'w',
      input: 1,
      idempotencyKey: 'fails',
      scope: { taskId: 't' },
      execute: async () => {
        started.resolve();
        await go.promise;
        throw new Error('boom');
      },
    };
    const leader = ledger.executeOrReplay(call).catch((error: unknown) => error);
    await started.promise;
    const joiners = [1, 2].map(() => ledger.executeOrReplay(call).catch((error: unknown) => error));
    go.resolve();
    for (const result of await Promise.all([leader, ...joiners])) {
      expect((result as Error).message).toBe('boom');
    }
    const stats = await ledger.stats();
    expect(stats).toMatchObject({ calls: 3, executions: 1, failures: 1, replays: 2, joined: 2 });
    const history = await ledger.history({ taskId: 't' });
    expect(history.map((entry) => [entry.source, entry.status, entry.error?.message])).toEqual([
      ['executed', 'failed', 'boom'],
      ['joined', 'failed', 'boom'],
      ['joined', 'failed', 'boom'],
    ]);
  });

  it('a replay of a write whose result could not be stored', async () => {
    const { ledger } = open(sqlite('unstored.db'), { onError: () => undefined });
    const call = {
      tool: 'w',
      input: 1,
      idempotencyKey: 'unstored',
      scope: { taskId: 't' },
      execute: async () => ({ callback: () => 'not data' }),
    };
    await ledger.executeOrReplay(call);
    const replay = await ledger.executeOrReplay(call).catch((error: unknown) => error);
    expect(CacheError.isInstance(replay) && replay.code).toBe('E_UNSERIALIZABLE');
    expect(await ledger.stats()).toMatchObject({ calls: 2, executions: 1, replays: 1, replayed: 1 });
    const history = await ledger.history({ taskId: 't' });
    expect(history.map((entry) => entry.source)).toEqual(['executed', 'replayed']);
  });
});

describe('ledger fixes: an error whose fields cannot be read', () => {
  it('is recorded at once, and the caller gets the original error', async () => {
    const operations: string[] = [];
    const { ledger } = open(sqlite('getter.db'), {
      onError: (_error, context) => operations.push(context.operation),
    });
    const original = new Error('kept');
    Object.defineProperty(original, 'message', {
      get() {
        throw new Error('message getter');
      },
    });
    Object.defineProperty(original, 'name', {
      get() {
        throw new Error('name getter');
      },
    });
    let runs = 0;
    const call = {
      tool: 'w',
      input: 1,
      idempotencyKey: 'getter',
      execute: async () => {
        runs++;
        throw original;
      },
    };
    const startedAt = Date.now();
    const first = await ledger.executeOrReplay(call).catch((error: unknown) => error);
    expect(first).toBe(original);
    expect(Date.now() - startedAt).toBeLessThan(1000);
    expect(operations).toEqual([]);
    const replay = await ledger.executeOrReplay(call).catch((error: unknown) => error);
    expect(RecordedToolError.isInstance(replay)).toBe(true);
    expect(typeof (replay as Error).message).toBe('string');
    expect(runs).toBe(1);
  });
});

describe('ledger fixes: a read that fails once for several callers', () => {
  it('is one execution and one failure; the callers that shared it joined it', async () => {
    const { ledger } = open(sqlite('read-fail.db'));
    let runs = 0;
    const gate = deferred();
    const call = () =>
      ledger.executeOrReplay({
        tool: 'r',
        input: { repo: 'x' },
        execute: async () => {
          runs++;
          await gate.promise;
          throw new Error('git is not installed');
        },
      });
    const calls = Array.from({ length: 5 }, call);
    gate.resolve();
    const outcomes = await Promise.allSettled(calls);
    expect(outcomes.map((outcome) => outcome.status)).toEqual(Array(5).fill('rejected'));
    expect(runs).toBe(1);
    expect((await ledger.stats({ tool: 'r' })).tools.r).toMatchObject({
      calls: 5,
      executions: 1,
      failures: 1,
      joined: 4,
    });
    const history = await ledger.history({ tool: 'r' });
    expect(history.map((entry) => entry.source).sort()).toEqual([
      'executed',
      'joined',
      'joined',
      'joined',
      'joined',
    ]);
  });
});
