import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { memoryBackend } from '../src/backends/memory.ts';
import { sqliteBackend } from '../src/backends/sqlite.ts';
import type { Cache, CacheOptions } from '../src/cache.ts';
import { createCache } from '../src/cache.ts';
import { CacheError } from '../src/errors.ts';
import type { ToolCallContext, ToolLedgerOptions } from '../src/ledger/index.ts';
import {
  createToolLedger,
  IdempotencyConflictError,
  LEDGER_KEY_PREFIX,
  RecordedToolError,
  ToolInProgressError,
  ToolOutcomeUnknownError,
  toolCallContext,
} from '../src/ledger/index.ts';
import { deferred, type FakeClock, fakeClock } from './support.ts';

/**
 * A real memory store whose every call goes through `around` (a fault: a delay, an outage), as a
 * network store's calls can; `run` makes the call itself.
 */
function faultyMemoryStore(around: (method: string, run: () => Promise<unknown>) => Promise<unknown>) {
  return new Proxy(memoryBackend(), {
    get(target, property) {
      const member = Reflect.get(target, property, target);
      if (typeof member !== 'function') return member;
      return (...args: unknown[]) =>
        around(String(property), () => Promise.resolve(member.apply(target, args)));
    },
  });
}

let dir: string;
const caches: Cache[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'x-ledger-'));
});
afterEach(async () => {
  for (const cache of caches.splice(0)) await cache.close();
  rmSync(dir, { recursive: true, force: true });
});

function open(
  options: Omit<ToolLedgerOptions, 'cache'> & { cacheOptions?: CacheOptions; clock?: FakeClock } = {},
) {
  const clock = options.clock ?? fakeClock();
  const cache = createCache({ clock, ...options.cacheOptions });
  caches.push(cache);
  const { cacheOptions: _, ...rest } = options;
  const ledger = createToolLedger({
    cache,
    tools: {
      send_email: { kind: 'write' },
      run_shell: { kind: 'write' },
      git_commit: { kind: 'write', invalidates: ['list_files'] },
      git_status: { kind: 'read', ttl: '10m' },
      git_log: { kind: 'read', ttl: '1h' },
      list_files: { kind: 'read', ttl: '1h' },
    },
    pollInterval: 10,
    ...rest,
  });
  return { clock, cache, ledger };
}

/** A tool body that counts its runs. */
function counted<T>(make: (run: number) => T) {
  const tool = {
    runs: 0,
    execute: async (): Promise<T> => {
      tool.runs++;
      return make(tool.runs);
    },
  };
  return tool;
}

describe('tool ledger: write tools', () => {
  it('runs a write once per idempotency key and replays its outcome on retry', async () => {
    const { ledger } = open();
    const email = counted((run) => ({ messageId: `m-${run}`, sentAt: new Date(Date.UTC(2030, 0, 1)) }));
    const call = {
      tool: 'send_email',
      input: { to: 'a@example.com', subject: 'hi' },
      idempotencyKey: 'welcome-a',
      execute: email.execute,
    };
    const first = await ledger.executeOrReplay(call);
    expect(first).toMatchObject({ source: 'executed', replayed: false, status: 'succeeded', attempt: 1 });
    expect(first.value.messageId).toBe('m-1');
    const retry = await ledger.executeOrReplay(call);
    expect(retry).toMatchObject({ source: 'replayed', replayed: true, attempt: 1, key: 'welcome-a' });
    expect(retry.value).toEqual(first.value);
    expect(retry.value.sentAt).toBeInstanceOf(Date);
    expect(email.runs).toBe(1);
  });

  it('keeps recorded writes when the cache is cleared (SQLite and memory-only)', async () => {
    for (const cacheOptions of [{ store: sqliteBackend({ path: join(dir, 'clear.db') }) }, {}]) {
      const { cache, ledger } = open({ cacheOptions });
      const email = counted((run) => `sent ${run}`);
      const call = {
        tool: 'send_email',
        input: { to: 'b@example.com' },
        idempotencyKey: 'k',
        execute: email.execute,
      };
      await ledger.executeOrReplay(call);
      await cache.tier('responses').set('cached', 1);
      await cache.flushStats();
      await cache.clearAll();
      expect(await cache.get('cached')).toBeUndefined();
      // The ledger's counters stay with its records; the cache's own are reset.
      expect(await ledger.stats()).toMatchObject({ calls: 1, executions: 1 });
      expect((await cache.getAllStats()).totals.sets).toBe(0);
      expect(await ledger.executeOrReplay(call)).toMatchObject({ source: 'replayed', value: 'sent 1' });
      expect(email.runs).toBe(1);
    }
  });

  it('keeps the counts of a call whose counter write SQLite refused (busy), instead of losing them', async () => {
    const path = join(dir, 'busy.db');
    const errors: string[] = [];
    const { ledger } = open({
      cacheOptions: { store: sqliteBackend({ path, busyTimeoutMs: 20 }), memory: false },
      onError: (_error, context) => errors.push(context.operation),
    });
    const status = counted(() => 'clean');
    const locker = new Database(path);
    try {
      locker.exec('BEGIN IMMEDIATE');
      const result = await ledger.executeOrReplay({ tool: 'git_status', input: {}, execute: status.execute });
      expect(result.value).toBe('clean');
      // The counter write met the lock (it is reported), and the call still answered.
      expect(errors).toContain('stats');
      locker.exec('COMMIT');
    } finally {
      locker.close();
    }
    expect(await ledger.stats()).toMatchObject({ calls: 1, executions: 1 });
  });

  it('never replays a write from another key: each key runs once', async () => {
    const { ledger } = open();
    const email = counted((run) => run);
    const input = { to: 'a@example.com' };
    const a = await ledger.executeOrReplay({
      tool: 'send_email',
      input,
      idempotencyKey: 'k-a',
      execute: email.execute,
    });
    const b = await ledger.executeOrReplay({
      tool: 'send_email',
      input,
      idempotencyKey: 'k-b',
      execute: email.execute,
    });
    expect([a.value, b.value, email.runs]).toEqual([1, 2, 2]);
  });

  it('derives the key from tool, input, task and work item when none is given', async () => {
    const { ledger } = open();
    const email = counted((run) => run);
    const send = (input: unknown, workItemId: string) =>
      ledger.executeOrReplay({
        tool: 'send_email',
        input,
        scope: { taskId: 't1', workItemId },
        execute: email.execute,
      });
    expect((await send({ to: 'x' }, 'w1')).source).toBe('executed');
    expect((await send({ to: 'x' }, 'w1')).source).toBe('replayed');
    expect((await send({ to: 'x' }, 'w2')).source).toBe('executed');
    expect((await send({ to: 'y' }, 'w1')).source).toBe('executed');
    expect(email.runs).toBe(3);
  });

  it('a key reused with a different input throws IdempotencyConflictError and runs nothing', async () => {
    const { ledger } = open();
    const email = counted(() => 'sent');
    await ledger.executeOrReplay({
      tool: 'send_email',
      input: { to: 'a' },
      idempotencyKey: 'k',
      execute: email.execute,
    });
    const conflict = await ledger
      .executeOrReplay({
        tool: 'send_email',
        input: { to: 'b' },
        idempotencyKey: 'k',
        execute: email.execute,
      })
      .catch((error) => error);
    expect(conflict).toBeInstanceOf(IdempotencyConflictError);
    expect(conflict.code).toBe('E_IDEMPOTENCY_CONFLICT');
    // The same key for another tool is another request too.
    await expect(
      ledger.executeOrReplay({
        tool: 'run_shell',
        input: { to: 'a' },
        idempotencyKey: 'k',
        execute: email.execute,
      }),
    ).rejects.toBeInstanceOf(IdempotencyConflictError);
    expect(email.runs).toBe(1);
  });

  it('force re-executes and records anew; later calls replay the new outcome', async () => {
    const { ledger } = open();
    const email = counted((run) => `attempt ${run}`);
    const call = { tool: 'send_email', input: 'x', idempotencyKey: 'k', execute: email.execute };
    await ledger.executeOrReplay(call);
    const forced = await ledger.executeOrReplay({ ...call, force: true });
    expect(forced).toMatchObject({ source: 'executed', value: 'attempt 2', attempt: 2 });
    expect(await ledger.executeOrReplay(call)).toMatchObject({
      source: 'replayed',
      value: 'attempt 2',
      attempt: 2,
    });
    expect(email.runs).toBe(2);
  });

  it('a thrown error is recorded and replayed; onFailed: "retry" runs the tool again', async () => {
    const { ledger } = open({
      tools: { charge: { kind: 'write' }, flaky: { kind: 'write', onFailed: 'retry' } },
    });
    let runs = 0;
    const failing = async () => {
      runs++;
      throw Object.assign(new RangeError(`card declined (${runs})`), { code: 'card_declined' });
    };
    const first = await ledger
      .executeOrReplay({ tool: 'charge', input: 1, idempotencyKey: 'c', execute: failing })
      .catch((e) => e);
    expect(first).toBeInstanceOf(RangeError);
    const replayed = await ledger
      .executeOrReplay({ tool: 'charge', input: 1, idempotencyKey: 'c', execute: failing })
      .catch((e) => e);
    expect(replayed).toBeInstanceOf(RecordedToolError);
    expect(RecordedToolError.isInstance(replayed)).toBe(true);
    expect(replayed).toMatchObject({
      name: 'RangeError',
      message: 'card declined (1)',
      code: 'card_declined',
    });
    expect(replayed.replayed).toBe(true);
    expect(runs).toBe(1);

    await ledger.executeOrReplay({ tool: 'flaky', input: 1, execute: failing }).catch(() => undefined);
    const again = await ledger.executeOrReplay({ tool: 'flaky', input: 1, execute: failing }).catch((e) => e);
    expect(again).toBeInstanceOf(RangeError);
    expect(again.message).toBe('card declined (3)');
    expect(runs).toBe(3);
  });

  it('ledger-wide onFailed, onAbandoned and isFailure apply to every tool that sets none', async () => {
    const { ledger } = open({
      onFailed: 'retry',
      isFailure: (value) => (value as { ok?: boolean }).ok === false,
      tools: { charge: { kind: 'write' }, strict: { kind: 'write', onFailed: 'replay' } },
    });
    let runs = 0;
    const failing = async () => {
      runs++;
      throw new Error(`declined ${runs}`);
    };
    await ledger.executeOrReplay({ tool: 'charge', input: 1, execute: failing }).catch(() => undefined);
    await ledger.executeOrReplay({ tool: 'charge', input: 1, execute: failing }).catch(() => undefined);
    expect(runs).toBe(2);
    // A tool's own policy wins.
    await ledger.executeOrReplay({ tool: 'strict', input: 1, execute: failing }).catch(() => undefined);
    const replayed = await ledger
      .executeOrReplay({ tool: 'strict', input: 1, execute: failing })
      .catch((e) => e);
    expect(replayed).toBeInstanceOf(RecordedToolError);
    expect(runs).toBe(3);
    const refused = await ledger.executeOrReplay({
      tool: 'charge',
      input: 2,
      execute: async () => ({ ok: false }),
    });
    expect(refused.status).toBe('failed');
    expect(ledger.policyOf('charge')).toMatchObject({ kind: 'write', onFailed: 'retry' });
    expect(() => open({ onAbandoned: 'rerun' as never })).toThrow(
      /onAbandoned must be 'reexecute' or 'throw'/,
    );
    expect(() => open({ maxWait: 'soon' as never })).toThrow(/maxWait/);
    expect(() => open({ tools: { t: { kind: 'write', onFailed: 'again' as never } } })).toThrow(
      /tools\.t\.onFailed must be 'replay' or 'retry'/,
    );
  });

  it('a tool that fails with nothing (throw undefined) is replayed as a failure, not a success', async () => {
    const { ledger } = open({ tools: { charge: { kind: 'write' } } });
    let runs = 0;
    const call = {
      tool: 'charge',
      input: { amount: 1 },
      idempotencyKey: 'k1',
      execute: async () => {
        runs++;
        return Promise.reject(undefined);
      },
    };
    await expect(ledger.executeOrReplay(call)).rejects.toBeUndefined();
    const replayed = await ledger.executeOrReplay(call).then(
      (outcome) => ({ resolved: outcome.value }),
      (error: unknown) => ({ rejected: error }),
    );
    expect(replayed).toMatchObject({ rejected: { message: 'tool "charge" threw undefined' } });
    expect(RecordedToolError.isInstance((replayed as { rejected: unknown }).rejected)).toBe(true);
    expect(runs).toBe(1);
  });

  it('passes a control-flow error on without recording it, so the resumed call runs', async () => {
    const { ledger } = open({ tools: { send: { kind: 'write' } } });
    class Pause extends Error {}
    let paused = true;
    let runs = 0;
    const call = {
      tool: 'send',
      input: { to: 'bob' },
      isControlFlow: (error: unknown) => error instanceof Pause,
      execute: async () => {
        runs++;
        if (paused) throw new Pause('waiting for approval');
        return 'sent';
      },
    };
    await expect(ledger.executeOrReplay(call)).rejects.toBeInstanceOf(Pause);
    paused = false;
    expect((await ledger.executeOrReplay(call)).value).toBe('sent');
    expect((await ledger.executeOrReplay(call)).source).toBe('replayed');
    expect(runs).toBe(2);
  });

  it('records exit code, stdout and stderr; a non-zero exit is a failed outcome, replayed as a value', async () => {
    const { ledger } = open();
    const shell = counted((run) => ({ exitCode: 1, stdout: `run ${run}\n`, stderr: 'tests failed\n' }));
    const call = {
      tool: 'run_shell',
      input: { command: 'npm test' },
      scope: { taskId: 't' },
      execute: shell.execute,
    };
    const first = await ledger.executeOrReplay(call);
    expect(first).toMatchObject({ source: 'executed', status: 'failed' });
    const retry = await ledger.executeOrReplay(call);
    expect(retry).toMatchObject({
      source: 'replayed',
      status: 'failed',
      value: { exitCode: 1, stdout: 'run 1\n', stderr: 'tests failed\n' },
    });
    expect(shell.runs).toBe(1);
    expect((await ledger.history({ taskId: 't' })).map((entry) => [entry.source, entry.exitCode])).toEqual([
      ['executed', 1],
      ['replayed', 1],
    ]);
  });

  it('two executions with the same large output share one blob', async () => {
    const { ledger } = open();
    const bigOutput = `${'0123456789abcdef'.repeat(1024)}\n`; // 16 KB
    const shell = counted((run) => ({ exitCode: 0, stdout: bigOutput, stderr: `warning ${run}` }));
    for (const workItemId of ['w1', 'w2']) {
      await ledger.executeOrReplay({
        tool: 'run_shell',
        input: { command: 'cat big.txt' },
        scope: { taskId: 't', workItemId },
        execute: shell.execute,
      });
    }
    expect(shell.runs).toBe(2);
    const backend = ledger.idempotency.backend;
    const blobs: string[] = [];
    for await (const key of backend.keys({ prefix: `${LEDGER_KEY_PREFIX}default:blob:` })) blobs.push(key);
    expect(blobs).toHaveLength(1);
    const replayed = await ledger.executeOrReplay({
      tool: 'run_shell',
      input: { command: 'cat big.txt' },
      scope: { taskId: 't', workItemId: 'w2' },
      execute: shell.execute,
    });
    expect(replayed.value).toEqual({ exitCode: 0, stdout: bigOutput, stderr: 'warning 2' });
  });

  it('gives back a large output cut inside an emoji exactly (lone surrogate)', async () => {
    const { ledger } = open();
    const cut = `${'x'.repeat(20_000)}${'😀'.slice(0, 1)}`;
    const other = `${'x'.repeat(20_000)}${'😃'.slice(0, 1)}`;
    const shell = counted((run) => ({ exitCode: 0, stdout: run === 1 ? cut : other }));
    for (const workItemId of ['w1', 'w2']) {
      await ledger.executeOrReplay({
        tool: 'run_shell',
        input: { command: 'head -c 20001 log' },
        scope: { taskId: 't', workItemId },
        execute: shell.execute,
      });
    }
    for (const [workItemId, expected] of [
      ['w1', cut],
      ['w2', other],
    ] as const) {
      const replayed = await ledger.executeOrReplay({
        tool: 'run_shell',
        input: { command: 'head -c 20001 log' },
        scope: { taskId: 't', workItemId },
        execute: shell.execute,
      });
      expect(replayed.source).toBe('replayed');
      expect((replayed.value as { stdout: string }).stdout === expected).toBe(true);
    }
    expect(shell.runs).toBe(2);
  });

  it('parallel calls with the same key execute once; each caller gets its own copy', async () => {
    const { ledger } = open();
    const gate = deferred();
    let runs = 0;
    const calls = Array.from({ length: 10 }, () =>
      ledger.executeOrReplay({
        tool: 'send_email',
        input: { to: 'all' },
        idempotencyKey: 'broadcast',
        execute: async () => {
          runs++;
          await gate.promise;
          return { recipients: ['a', 'b'] };
        },
      }),
    );
    await sleep(20);
    gate.resolve();
    const outcomes = await Promise.all(calls);
    expect(runs).toBe(1);
    expect(outcomes.map((o) => o.source).sort()).toEqual(['executed', ...Array(9).fill('joined')].sort());
    expect(new Set(outcomes.map((o) => o.value)).size).toBe(10);
    for (const o of outcomes) expect(o.value).toEqual({ recipients: ['a', 'b'] });
  });

  it("onConcurrent: 'throw' gives a typed in-progress error while the first call runs", async () => {
    const { ledger } = open({ onConcurrent: 'throw' });
    const gate = deferred();
    const call = {
      tool: 'send_email',
      input: 1,
      idempotencyKey: 'busy',
      execute: async () => {
        await gate.promise;
        return 'done';
      },
    };
    const first = ledger.executeOrReplay(call);
    const second = await ledger.executeOrReplay(call).catch((e) => e);
    expect(second).toBeInstanceOf(ToolInProgressError);
    expect(ToolInProgressError.isInstance(second)).toBe(true);
    expect(second).toMatchObject({
      code: 'E_IN_PROGRESS',
      reason: 'running',
      key: 'busy',
      tool: 'send_email',
    });
    gate.resolve();
    expect((await first).value).toBe('done');
    expect((await ledger.executeOrReplay(call)).source).toBe('replayed');
  });

  it('another ledger over the same SQLite file waits for the running call, then replays it', async () => {
    const clock = fakeClock();
    const path = join(dir, 'shared.db');
    const a = open({ clock, cacheOptions: { store: sqliteBackend({ path, clock }) } });
    const b = open({ clock, cacheOptions: { store: sqliteBackend({ path, clock }) } });
    const gate = deferred();
    let runs = 0;
    const call = {
      tool: 'send_email',
      input: 1,
      idempotencyKey: 'shared',
      execute: async () => {
        runs++;
        await gate.promise;
        return 'from a';
      },
    };
    const first = a.ledger.executeOrReplay(call);
    await sleep(20);
    const second = b.ledger.executeOrReplay(call);
    await sleep(50);
    expect(runs).toBe(1);
    gate.resolve();
    expect((await first).source).toBe('executed');
    expect(await second).toMatchObject({ source: 'replayed', value: 'from a' });
    expect(runs).toBe(1);
    await expect(
      b.ledger.executeOrReplay({ ...call, idempotencyKey: 'shared', onConcurrent: 'throw' }),
    ).resolves.toMatchObject({ source: 'replayed' });
  });

  it('an abandoned claim is re-executed once its lease ran out, or reported with onAbandoned: "throw"', async () => {
    const { ledger, clock } = open({
      tools: { deploy: { kind: 'write', leaseTtl: '1m' }, migrate: { kind: 'write', onAbandoned: 'throw' } },
    });
    // A process that claimed the keys, then died without recording anything.
    for (const tool of ['deploy', 'migrate']) {
      const claim = await ledger.idempotency.checkOrCreate(
        `${tool}-1`,
        { tool, input: 'v2' },
        { leaseTtl: '1m' },
      );
      expect(claim.status).toBe('created');
    }
    clock.advance(60_000);
    let runs = 0;
    const execute = async (context: ToolCallContext) => {
      runs++;
      return { attempt: context.attempt, recovered: context.recovered };
    };
    const deploy = await ledger.executeOrReplay({
      tool: 'deploy',
      input: 'v2',
      idempotencyKey: 'deploy-1',
      execute,
    });
    expect(deploy).toMatchObject({ source: 'executed', recovered: true, attempt: 2 });
    expect(deploy.value).toEqual({ attempt: 2, recovered: true });

    const migrate = await ledger
      .executeOrReplay({ tool: 'migrate', input: 'v2', idempotencyKey: 'migrate-1', execute })
      .catch((e) => e);
    expect(migrate).toBeInstanceOf(ToolOutcomeUnknownError);
    expect(migrate).toMatchObject({ code: 'E_OUTCOME_UNKNOWN', attempts: 1 });
    expect(runs).toBe(1);
    const forced = await ledger.executeOrReplay({
      tool: 'migrate',
      input: 'v2',
      idempotencyKey: 'migrate-1',
      execute,
      force: true,
    });
    expect(forced).toMatchObject({ source: 'executed', recovered: true });
    expect(runs).toBe(2);
  });

  it('a running holder renews its lease, so a slow execution is never taken over', async () => {
    const clock = fakeClock();
    const cache = createCache({ clock });
    caches.push(cache);
    const tools = { send_email: { kind: 'write' as const, leaseTtl: 60 } };
    const running = createToolLedger({ cache, tools });
    const other = createToolLedger({ cache, tools });
    const gate = deferred();
    const call = running.executeOrReplay({
      tool: 'send_email',
      input: 1,
      idempotencyKey: 'slow',
      execute: async () => {
        await gate.promise;
        return 'done';
      },
    });
    // Time passes well beyond one lease while the holder keeps running (and renewing every 20 ms).
    for (let i = 0; i < 8; i++) {
      await sleep(50);
      clock.advance(40);
      const seen = await other.idempotency.checkOrCreate('slow', { tool: 'send_email', input: 1 });
      expect(seen.status).toBe('pending');
    }
    gate.resolve();
    expect((await call).source).toBe('executed');
  });

  it('a holder that lost its lease is told through its signal and cannot overwrite the new outcome', async () => {
    const clock = fakeClock();
    const cache = createCache({ clock });
    caches.push(cache);
    const tools = { send_email: { kind: 'write' as const, leaseTtl: 60 } };
    const slow = createToolLedger({ cache, tools });
    const other = createToolLedger({ cache, tools });
    const gate = deferred();
    let signal: AbortSignal | undefined;
    const running = slow.executeOrReplay({
      tool: 'send_email',
      input: 1,
      idempotencyKey: 'k',
      execute: async (context) => {
        signal = context.signal;
        await gate.promise;
        return 'late';
      },
    });
    await sleep(5);
    // The slow holder stalls past its lease; another caller takes the key over and records first.
    let owner: string | undefined;
    for (let i = 0; i < 100 && !owner; i++) {
      clock.advance(1000);
      const claim = await other.idempotency.checkOrCreate('k', { tool: 'send_email', input: 1 });
      if (claim.status === 'created') owner = claim.owner;
    }
    expect(owner).toBeDefined();
    await other.idempotency.markSucceeded('k', 'taken over', owner!);
    for (let i = 0; i < 100 && !signal?.aborted; i++) await sleep(10);
    expect(signal?.aborted).toBe(true);
    gate.resolve();
    expect((await running).value).toBe('late');
    expect(
      await other.executeOrReplay({
        tool: 'send_email',
        input: 1,
        idempotencyKey: 'k',
        execute: async () => 'x',
      }),
    ).toMatchObject({ source: 'replayed', value: 'taken over' });
  });

  it('a result that cannot be stored is returned; a replay reports it instead of running again', async () => {
    const errors: string[] = [];
    const { ledger } = open({ onError: (_error, context) => errors.push(context.operation) });
    let runs = 0;
    const call = {
      tool: 'send_email',
      input: 1,
      idempotencyKey: 'weird',
      execute: async () => {
        runs++;
        return { send: () => 'a function is not data' };
      },
    };
    expect(typeof (await ledger.executeOrReplay(call)).value.send).toBe('function');
    expect(errors).toEqual(['record-partial']);
    const replay = await ledger.executeOrReplay(call).catch((e) => e);
    expect(CacheError.isInstance(replay)).toBe(true);
    expect(replay.code).toBe('E_UNSERIALIZABLE');
    expect(replay.message).toMatch(/could not be recorded.*force: true/);
    expect(runs).toBe(1);
  });

  it('a failure value that cannot be stored stays a failure in the record and the stats', async () => {
    const { ledger } = open({ onError: () => undefined });
    let runs = 0;
    const call = {
      tool: 'run_shell',
      input: { command: 'deploy' },
      idempotencyKey: 'failed-weird',
      execute: async () => {
        runs++;
        return { exitCode: 2, retry: () => 'a function is not data' };
      },
    };
    expect(await ledger.executeOrReplay(call)).toMatchObject({ status: 'failed', source: 'executed' });
    const record = await ledger.idempotency.check('failed-weird');
    expect(record?.status).toBe('failed');
    const replay = await ledger.executeOrReplay(call).catch((e) => e);
    expect(CacheError.isInstance(replay) && replay.code).toBe('E_UNSERIALIZABLE');
    expect(runs).toBe(1);
  });

  it('records an output too large for the store as done without it, at once, so it never runs twice', async () => {
    const errors: string[] = [];
    const { ledger } = open({
      cacheOptions: { store: sqliteBackend({ path: join(dir, 'small.db'), maxBytes: 1_500 }), memory: false },
      tools: { send_email: { kind: 'write' } },
      onError: (error) => errors.push(String(error)),
    });
    let runs = 0;
    const call = {
      tool: 'send_email',
      input: { to: 'ada' },
      idempotencyKey: 'big',
      execute: async () => {
        runs++;
        return 'x'.repeat(3_000);
      },
    };
    expect((await ledger.executeOrReplay(call)).value).toHaveLength(3_000);
    expect(errors.join()).toMatch(/maxBytes/);
    expect((await ledger.idempotency.check('big'))?.status).toBe('succeeded');
    const replay = await ledger.executeOrReplay(call).catch((error) => error);
    expect(CacheError.isInstance(replay) && replay.code).toBe('E_UNSERIALIZABLE');
    expect(runs).toBe(1);
  });

  it('records a failure whose error is too large (or cannot be printed) with a short stand-in, at once', async () => {
    const errors: string[] = [];
    const { ledger } = open({
      cacheOptions: {
        store: sqliteBackend({ path: join(dir, 'small-errors.db'), maxBytes: 1_500 }),
        memory: false,
      },
      tools: { send_email: { kind: 'write' } },
      onError: (error) => errors.push(String(error)),
    });
    let runs = 0;
    const failing = (key: string, thrown: () => unknown) => ({
      tool: 'send_email',
      input: { to: key },
      idempotencyKey: key,
      execute: async () => {
        runs++;
        throw thrown();
      },
    });
    const noise = randomBytes(3_000).toString('base64');
    const huge = failing('huge', () => new RangeError(`declined ${noise}`));
    const started = performance.now();
    await expect(ledger.executeOrReplay(huge)).rejects.toBeInstanceOf(RangeError);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(errors.join()).toMatch(/maxBytes/);
    const replayed = await ledger.executeOrReplay(huge).catch((error) => error);
    expect(replayed).toBeInstanceOf(RecordedToolError);
    expect(replayed.message).toMatch(
      /failed with RangeError: declined \S+ \(the full error was too large to record\)/,
    );
    // An error whose message cannot even be made a string is recorded too.
    const odd = failing('odd', () => Object.assign(Object.create(null), { message: Object.create(null) }));
    await expect(ledger.executeOrReplay(odd)).rejects.toBeDefined();
    expect(await ledger.executeOrReplay(odd).catch((error) => error)).toBeInstanceOf(RecordedToolError);
    expect(runs).toBe(2);
  });

  it('a forced call waits for an outcome still being recorded, then runs, without blocking the process', async () => {
    let down = false;
    const store = faultyMemoryStore((_method, run) =>
      down ? Promise.reject(new Error('store unreachable')) : run(),
    );
    const { ledger } = open({ store, tools: { charge: { kind: 'write' } } });
    let runs = 0;
    const charge = (force?: boolean, onConcurrent?: 'throw') =>
      ledger.executeOrReplay({
        tool: 'charge',
        input: { amount: 5 },
        force,
        onConcurrent,
        execute: async () => {
          runs++;
          // The store goes away right after the side effect, for longer than the caller waits.
          down = true;
          setTimeout(() => {
            down = false;
          }, 2_500);
          return `charged ${runs}`;
        },
      });
    expect((await charge()).value).toBe('charged 1');
    // Finished, though still being recorded: not "in progress" for a caller that would rather throw.
    expect(await charge(false, 'throw')).toMatchObject({ source: 'joined', value: 'charged 1' });
    let beats = 0;
    const heartbeat = setInterval(() => beats++, 100);
    try {
      const forced = await charge(true);
      expect(forced).toMatchObject({ source: 'executed', value: 'charged 2' });
      expect(beats).toBeGreaterThan(0);
    } finally {
      clearInterval(heartbeat);
      down = false;
    }
  }, 20_000);

  it('an isFailure that throws is reported and the value recorded as a success', async () => {
    const errors: string[] = [];
    const { ledger } = open({
      tools: {
        charge: {
          kind: 'write',
          isFailure: () => {
            throw new Error('predicate broke');
          },
        },
      },
      onError: (error, context) => errors.push(`${context.operation}: ${(error as Error).message}`),
    });
    let runs = 0;
    const call = { tool: 'charge', input: 1, execute: async () => ({ ok: ++runs }) };
    expect(await ledger.executeOrReplay(call)).toMatchObject({ status: 'succeeded', value: { ok: 1 } });
    expect(errors).toEqual(['isFailure: predicate broke']);
    expect(await ledger.executeOrReplay(call)).toMatchObject({ source: 'replayed', value: { ok: 1 } });
    expect(runs).toBe(1);
  });

  it('withdraws a timed-out claim that lands after the first try at withdrawing it', async () => {
    // A store whose next swap is slow: the claim times out, the withdrawal finds nothing, then the
    // claim lands (a reordered network write).
    let slowSwap = false;
    const store = faultyMemoryStore(async (method, run) => {
      if (method === 'compareAndSwap' && slowSwap) {
        slowSwap = false;
        await sleep(300);
      }
      return run();
    });
    const { ledger } = open({
      store,
      timeout: '100ms',
      leaseTtl: '20s',
      tools: { charge: { kind: 'write' } },
    });
    let runs = 0;
    const charge = () =>
      ledger.executeOrReplay({ tool: 'charge', input: { amount: 5 }, execute: async () => ++runs });
    slowSwap = true;
    await expect(charge()).rejects.toMatchObject({ code: 'E_TIMEOUT' });
    await sleep(1_500);
    const started = performance.now();
    expect((await charge()).value).toBe(1);
    expect(performance.now() - started).toBeLessThan(3_000);
  });

  it('keeps recorded writes in a SQLite store bounded by maxEntries, however many entries follow', async () => {
    const { cache, ledger } = open({
      cacheOptions: { store: sqliteBackend({ path: join(dir, 'bounded.db'), maxEntries: 3 }), memory: false },
    });
    const mail = counted(() => ({ sent: true }));
    const call = {
      tool: 'send_email',
      input: { to: 'ada' },
      idempotencyKey: 'welcome',
      execute: mail.execute,
    };
    await ledger.executeOrReplay(call);
    for (let i = 0; i < 10; i++) await cache.set(`filler-${i}`, i);
    expect((await ledger.executeOrReplay(call)).source).toBe('replayed');
    expect(mail.runs).toBe(1);
  });

  it("lets a bounded SQLite store evict the ledger's history, not the cache entries beside it", async () => {
    const { cache, ledger } = open({
      cacheOptions: {
        store: sqliteBackend({ path: join(dir, 'history.db'), maxEntries: 20 }),
        memory: false,
      },
    });
    for (let i = 0; i < 25; i++) {
      await ledger.executeOrReplay({
        tool: 'lookup',
        input: i,
        scope: { taskId: 't' },
        execute: async () => i,
      });
    }
    for (let i = 0; i < 5; i++) await cache.set(`kept-${i}`, i);
    expect(await Promise.all([0, 1, 2, 3, 4].map((i) => cache.get(`kept-${i}`)))).toEqual([0, 1, 2, 3, 4]);
  });

  it('asks a briefly busy SQLite file again before giving up on recording an outcome', async () => {
    const path = join(dir, 'busy.db');
    const { ledger } = open({
      cacheOptions: { store: sqliteBackend({ path, busyTimeoutMs: 20 }), memory: false },
      tools: { send_email: { kind: 'write' } },
    });
    const other = new Database(path);
    let runs = 0;
    const call = {
      tool: 'send_email',
      input: { to: 'ada' },
      idempotencyKey: 'busy',
      execute: async () => {
        runs++;
        // Another process holds the write lock for a moment, just when the outcome is recorded.
        other.exec('BEGIN IMMEDIATE');
        setTimeout(() => other.exec('ROLLBACK'), 60);
        return 'sent';
      },
    };
    expect((await ledger.executeOrReplay(call)).value).toBe('sent');
    expect((await ledger.idempotency.check('busy'))?.status).toBe('succeeded');
    expect(await ledger.executeOrReplay(call)).toMatchObject({ source: 'replayed', value: 'sent' });
    expect(runs).toBe(1);
    other.close();
  });

  it('outcomes, history and stats survive a restart on SQLite', async () => {
    const path = join(dir, 'restart.db');
    const email = counted(() => 'sent');
    const call = {
      tool: 'send_email',
      input: 1,
      scope: { taskId: 't' },
      idempotencyKey: 'k',
      execute: email.execute,
    };
    const clock = fakeClock();
    const before = open({ clock, cacheOptions: { store: sqliteBackend({ path, clock }) } });
    await before.ledger.executeOrReplay(call);
    clock.advance(1000);
    await before.ledger.executeOrReplay(call);
    await before.cache.close();
    clock.advance(1000);
    const after = open({ clock, cacheOptions: { store: sqliteBackend({ path, clock }) } });
    expect((await after.ledger.executeOrReplay(call)).source).toBe('replayed');
    expect(email.runs).toBe(1);
    expect((await after.ledger.history({ taskId: 't' })).map((entry) => entry.source)).toEqual([
      'executed',
      'replayed',
      'replayed',
    ]);
    expect(await after.ledger.stats()).toMatchObject({
      calls: 3,
      executions: 1,
      replays: 2,
      executionsAvoided: 2,
    });
  });
});

describe('tool ledger: read tools and invalidation', () => {
  it('read tools are cached per input for their TTL; unlisted tools are never cached', async () => {
    const { ledger, clock } = open();
    const status = counted((run) => `status ${run}`);
    const read = (input: unknown) =>
      ledger.executeOrReplay({ tool: 'git_status', input, execute: status.execute });
    expect(await read({ repo: 'a' })).toMatchObject({ source: 'executed', value: 'status 1', kind: 'read' });
    // Shared across tasks: a read is not tied to a scope.
    expect(
      await ledger.executeOrReplay({
        tool: 'git_status',
        input: { repo: 'a' },
        scope: { taskId: 'other' },
        execute: status.execute,
      }),
    ).toMatchObject({ source: 'cached', value: 'status 1' });
    expect((await read({ repo: 'b' })).value).toBe('status 2');
    clock.advance(10 * 60_000);
    expect(await read({ repo: 'a' })).toMatchObject({ source: 'executed', value: 'status 3' });

    const weather = counted((run) => run);
    for (let i = 0; i < 3; i++)
      await ledger.executeOrReplay({ tool: 'get_weather', input: 'x', execute: weather.execute });
    expect(weather.runs).toBe(3);
    expect(ledger.policyOf('get_weather').kind).toBe('none');
  });

  it('a write invalidates the read tools that depend on it (cache dependencies and policy invalidates)', async () => {
    const { ledger } = open({ cacheOptions: { dependencies: { git_commit: ['git_status', 'git_log'] } } });
    const reads = {
      git_status: counted((r) => r),
      git_log: counted((r) => r),
      list_files: counted((r) => r),
    };
    const readAll = async () => {
      for (const [tool, body] of Object.entries(reads)) {
        await ledger.executeOrReplay({ tool, input: { repo: 'a' }, execute: body.execute });
      }
    };
    await readAll();
    await readAll();
    expect(Object.values(reads).map((body) => body.runs)).toEqual([1, 1, 1]);
    await ledger.executeOrReplay({
      tool: 'git_commit',
      input: { message: 'fix' },
      scope: { taskId: 't' },
      execute: async () => 'abc123',
    });
    await readAll();
    expect(Object.values(reads).map((body) => body.runs)).toEqual([2, 2, 2]);
    // A replayed write changes nothing, so it invalidates nothing.
    await ledger.executeOrReplay({
      tool: 'git_commit',
      input: { message: 'fix' },
      scope: { taskId: 't' },
      execute: async () => 'abc123',
    });
    await readAll();
    expect(Object.values(reads).map((body) => body.runs)).toEqual([2, 2, 2]);
  });

  it('failed reads (thrown, or a non-zero exit) are not cached; force refreshes a cached read', async () => {
    const { ledger } = open();
    let runs = 0;
    const flaky = async () => {
      runs++;
      if (runs === 1) throw new Error('git lock held');
      if (runs === 2) return { exitCode: 128, stdout: '', stderr: 'not a repo' };
      return { exitCode: 0, stdout: `log ${runs}`, stderr: '' };
    };
    const read = (force = false) =>
      ledger.executeOrReplay({ tool: 'git_log', input: 'r', execute: flaky, force });
    await expect(read()).rejects.toThrow('git lock held');
    expect(await read()).toMatchObject({ source: 'executed', status: 'failed' });
    expect(await read()).toMatchObject({ source: 'executed', value: { stdout: 'log 3' } });
    expect(await read()).toMatchObject({ source: 'cached', value: { stdout: 'log 3' } });
    expect(await read(true)).toMatchObject({ source: 'executed', value: { stdout: 'log 4' } });
    expect(await read()).toMatchObject({ source: 'cached', value: { stdout: 'log 4' } });
  });

  it('an unlisted tool runs even when its input cannot be keyed (a Blob, a callback)', async () => {
    const { ledger } = open();
    let runs = 0;
    const upload = ledger.wrap('upload', async (input: { file: Blob; onProgress: () => void }) => {
      runs++;
      return input.file.size;
    });
    expect(await upload({ file: new Blob(['abc']), onProgress: () => undefined })).toBe(3);
    expect(await upload({ file: new Blob(['abcd']), onProgress: () => undefined })).toBe(4);
    expect(runs).toBe(2);
    const history = await ledger.history({ tool: 'upload' });
    expect(history.map((entry) => [entry.kind, entry.status])).toEqual([
      ['none', 'succeeded'],
      ['none', 'succeeded'],
    ]);
  });

  it('an unlisted tool given a key is a write; a read tool given a key is refused', async () => {
    const { ledger } = open();
    const tool = counted(() => 'ok');
    await ledger.executeOrReplay({
      tool: 'create_ticket',
      input: 1,
      idempotencyKey: 'T-1',
      execute: tool.execute,
    });
    const again = await ledger.executeOrReplay({
      tool: 'create_ticket',
      input: 1,
      idempotencyKey: 'T-1',
      execute: tool.execute,
    });
    expect(again.source).toBe('replayed');
    expect(tool.runs).toBe(1);
    await expect(
      ledger.executeOrReplay({ tool: 'git_status', input: 1, idempotencyKey: 'x', execute: tool.execute }),
    ).rejects.toThrow(/read tool.*kind: "write"/);
  });
});

describe('tool ledger: history and stats', () => {
  it('keeps history per task and work item, oldest first, filterable by tool and limited', async () => {
    const { ledger, clock } = open();
    const ok = async () => 'ok';
    const plan: Array<[string, string | undefined, string | undefined]> = [
      ['send_email', 't1', 'w1'],
      ['git_status', 't1', 'w1'],
      ['send_email', 't1', 'w2'],
      ['send_email', 't1', 'w1'],
      ['git_status', 't2', 'w1'],
      ['send_email', undefined, undefined],
    ];
    for (const [tool, taskId, workItemId] of plan) {
      clock.advance(1000);
      await ledger.executeOrReplay({ tool, input: 'same', scope: { taskId, workItemId }, execute: ok });
    }
    const t1 = await ledger.history({ taskId: 't1' });
    expect(t1.map((e) => [e.tool, e.workItemId, e.source])).toEqual([
      ['send_email', 'w1', 'executed'],
      ['git_status', 'w1', 'executed'],
      ['send_email', 'w2', 'executed'],
      ['send_email', 'w1', 'replayed'],
    ]);
    expect(t1.map((e) => e.startedAt)).toEqual([...t1.map((e) => e.startedAt)].sort((a, b) => a - b));
    expect((await ledger.history({ taskId: 't1', workItemId: 'w1' })).map((e) => e.source)).toEqual([
      'executed',
      'executed',
      'replayed',
    ]);
    expect((await ledger.history({ workItemId: 'w1' })).map((e) => e.taskId)).toEqual([
      't1',
      't1',
      't1',
      't2',
    ]);
    expect((await ledger.history({ tool: 'git_status' })).map((e) => [e.taskId, e.source])).toEqual([
      ['t1', 'executed'],
      ['t2', 'cached'],
    ]);
    expect(await ledger.history({ limit: 2 })).toHaveLength(2);
    const last = (await ledger.history()).at(-1);
    expect(last?.tool).toBe('send_email');
    expect(last?.taskId).toBeUndefined();
    // Task ids are data, not key syntax.
    await ledger.executeOrReplay({ tool: 'send_email', input: 1, scope: { taskId: 'a:b/c d' }, execute: ok });
    expect(await ledger.history({ taskId: 'a:b/c d' })).toHaveLength(1);
    expect(await ledger.history({ taskId: 'a' })).toHaveLength(0);
  });

  it('reports replay rate and executions avoided, per tool and per task, and records by state', async () => {
    const { ledger } = open();
    const ok = async () => 'ok';
    for (let i = 0; i < 4; i++) {
      await ledger.executeOrReplay({ tool: 'send_email', input: 1, scope: { taskId: 't1' }, execute: ok });
    }
    await ledger.executeOrReplay({ tool: 'git_status', input: 1, scope: { taskId: 't2' }, execute: ok });
    await ledger.executeOrReplay({ tool: 'git_status', input: 1, scope: { taskId: 't2' }, execute: ok });
    await ledger
      .executeOrReplay({
        tool: 'run_shell',
        input: 1,
        scope: { taskId: 't2' },
        execute: async () => {
          throw new Error('x');
        },
      })
      .catch(() => undefined);
    const all = await ledger.stats();
    expect(all).toMatchObject({
      calls: 7,
      executions: 3,
      replays: 4,
      replayed: 3,
      cached: 1,
      failures: 1,
      executionsAvoided: 4,
      replayRate: 4 / 7,
      records: { succeeded: 1, failed: 1, pending: 0, total: 2 },
    });
    expect(all.tools.send_email).toMatchObject({ calls: 4, executions: 1, replays: 3 });
    const t2 = await ledger.stats({ taskId: 't2' });
    expect(t2).toMatchObject({ calls: 3, executions: 2, replays: 1, failures: 1, replayRate: 1 / 3 });
    expect(t2.records).toMatchObject({ failed: 1, succeeded: 0, total: 1 });
    expect((await ledger.stats({ tool: 'git_status' })).calls).toBe(2);
  });
});

describe('tool ledger: wrap and setup', () => {
  it('wrap keeps the signature, passes extra arguments, and exposes the key through toolCallContext', async () => {
    const { ledger } = open();
    const seen: Array<string | undefined> = [];
    let runs = 0;
    const send = ledger.wrap(
      'send_email',
      async (input: { to: string }, options: { toolCallId: string }) => {
        runs++;
        seen.push(toolCallContext()?.idempotencyKey, options.toolCallId);
        return `sent to ${input.to}`;
      },
      { scope: () => ({ taskId: 'agent-run-1' }), idempotencyKey: (input) => `email:${input.to}` },
    );
    expect(await send({ to: 'a' }, { toolCallId: 'call-1' })).toBe('sent to a');
    expect(await send({ to: 'a' }, { toolCallId: 'call-2' })).toBe('sent to a');
    expect(runs).toBe(1);
    expect(seen).toEqual(['email:a', 'call-1']);
    expect(toolCallContext()).toBeUndefined();
    expect((await ledger.history({ taskId: 'agent-run-1' })).map((e) => e.source)).toEqual([
      'executed',
      'replayed',
    ]);
  });

  it('rejects invalid tool names and policies with the fix in the message', () => {
    const cache = createCache();
    caches.push(cache);
    expect(() => createToolLedger({ cache, tools: { 'bad name': { kind: 'read' } } })).toThrow(
      /invalid name/,
    );
    expect(() => createToolLedger({ cache, tools: { t: { kind: 'cached' as never } } })).toThrow(
      /kind 'write'.*'read'.*'none'/,
    );
    expect(() => createToolLedger({ cache, tools: { t: { kind: 'read', ttl: 'soon' as never } } })).toThrow(
      /not a duration/,
    );
    expect(() => createToolLedger({} as never)).toThrow(/needs `cache`/);
    const ledger = createToolLedger({ cache });
    return expect(ledger.executeOrReplay({ tool: 'x:y', input: 1, execute: () => 1 })).rejects.toThrow(
      /invalid name/,
    );
  });
});
