import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { memoryBackend } from '../backends/memory.ts';
import { Level, LevelTimeoutError, withTimeout } from './stack.ts';

function clock(start = 0) {
  let now = start;
  return { now: () => now, advance: (ms: number) => void (now += ms) };
}

describe('Level circuit breaker', () => {
  it('opens after the failures, lets one probe through after the pause, and only the probe closes it', () => {
    const time = clock();
    const level = new Level({ backend: memoryBackend(), breaker: { failures: 2, openFor: 100 } });
    expect(level.admit(time)).toBe(1);
    level.failed(time.now());
    level.failed(time.now());
    expect(level.admit(time)).toBe(0);
    // A slow call admitted before the breaker opened succeeds now: the breaker stays open.
    level.succeeded(1);
    expect(level.admit(time)).toBe(0);
    time.advance(100);
    expect(level.admit(time)).toBe(2);
    expect(level.admit(time)).toBe(0);
    level.succeeded(2);
    expect(level.admit(time)).toBe(1);
  });

  it('re-opens when the probe fails', () => {
    const time = clock();
    const level = new Level({ backend: memoryBackend(), breaker: { failures: 1, openFor: 50 } });
    level.failed(time.now());
    time.advance(50);
    expect(level.admit(time)).toBe(2);
    expect(level.failed(time.now())).toBe(true);
    expect(level.admit(time)).toBe(0);
    time.advance(50);
    expect(level.admit(time)).toBe(2);
  });
});

describe('Level bulkTimeout', () => {
  // A backend by another name: the defaults depend on whether it lives in this process.
  const remote = Object.defineProperty(Object.create(memoryBackend()), 'name', {
    value: 'redis',
  }) as ReturnType<typeof memoryBackend>;
  it('defaults to 20 × timeout and at least 10 s for a network level, none for an in-process one', () => {
    expect(new Level({ backend: remote }).bulkTimeoutMs).toBe(10_000);
    expect(new Level({ backend: remote, timeout: '2s' }).bulkTimeoutMs).toBe(40_000);
    expect(new Level({ backend: remote, timeout: 100, bulkTimeout: '3s' }).bulkTimeoutMs).toBe(3000);
    expect(new Level({ backend: memoryBackend() }).bulkTimeoutMs).toBeUndefined();
  });

  it('rejects a malformed bulkTimeout with a typed error', () => {
    expect(() => new Level({ backend: remote, bulkTimeout: 'soon' as '1s' })).toThrow(/bulkTimeout/);
  });
});

describe('withTimeout', () => {
  const never = () => new Promise<never>(() => undefined);
  const resolveAfter = <T>(ms: number, value: T) =>
    new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));

  it('fails a call that outlives the timeout, never early and at most about a quarter late', async () => {
    const level = new Level({ backend: memoryBackend(), timeout: 80 });
    const started = performance.now();
    await expect(withTimeout(level, 'get', never)).rejects.toThrow(LevelTimeoutError);
    const waited = performance.now() - started;
    expect(waited).toBeGreaterThanOrEqual(79);
    // A quarter of the timeout, plus room for a loaded machine's timer lateness.
    expect(waited).toBeLessThan(80 + 20 + 60);
  });

  it('fails a call on time even when a busy event loop delays the sweeps', async () => {
    const level = new Level({ backend: memoryBackend(), timeout: 80 });
    const started = performance.now();
    let failedAt = 0;
    const call = withTimeout(level, 'get', never).catch(() => {
      failedAt = performance.now() - started;
    });
    // Each turn of the loop blocks for 100 ms, as a CPU-heavy request handler would.
    while (failedAt === 0 && performance.now() - started < 2000) {
      const until = performance.now() + 100;
      while (performance.now() < until) {
        // busy
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    await call;
    expect(failedAt).toBeGreaterThanOrEqual(79);
    // Counting sweeps alone (5 of them, one per blocked turn) would take about 500 ms.
    expect(failedAt).toBeLessThan(400);
  });

  it('works with a backend call that returns a plain value', async () => {
    const level = new Level({ backend: memoryBackend(), timeout: 50 });
    await expect(withTimeout(level, 'get', () => 42 as unknown as Promise<number>)).resolves.toBe(42);
  });

  it('settles each call once: results in time pass through, a late result after the timeout is dropped', async () => {
    const level = new Level({ backend: memoryBackend(), timeout: 40 });
    const outcomes: string[] = [];
    const calls = [
      withTimeout(level, 'get', () => resolveAfter(5, 'fast')).then((v) => outcomes.push(`ok ${v}`)),
      withTimeout(level, 'get', () => resolveAfter(150, 'slow')).then(
        (v) => outcomes.push(`ok ${v}`),
        (error: Error) => outcomes.push(error.name),
      ),
      withTimeout(level, 'get', () => Promise.reject(new Error('boom'))).catch((error: Error) =>
        outcomes.push(error.message),
      ),
      withTimeout(level, 'get', () => {
        throw new Error('thrown');
      }).catch((error: Error) => outcomes.push(error.message)),
    ];
    await Promise.all(calls);
    await resolveAfter(150, undefined);
    expect(outcomes.sort()).toEqual(['LevelTimeoutError', 'boom', 'ok fast', 'thrown']);
  });

  it('keeps timing out calls among many that finish (the queue of deadlines stays in order)', async () => {
    const level = new Level({ backend: memoryBackend(), timeout: 30 });
    const quick = Array.from({ length: 2000 }, (_, i) =>
      withTimeout(level, 'get', () => resolveAfter(i % 5, i)),
    );
    const stuck = withTimeout(level, 'get', never).then(
      () => 'resolved',
      (error: Error) => error.name,
    );
    const more = Array.from({ length: 2000 }, (_, i) =>
      withTimeout(level, 'get', () => resolveAfter(i % 5, i)),
    );
    expect(await Promise.all([...quick, ...more])).toHaveLength(4000);
    expect(await stuck).toBe('LevelTimeoutError');
  });

  it('fails only the stuck calls wherever they sit among calls that finish out of order', async () => {
    const level = new Level({ backend: memoryBackend(), timeout: 40 });
    const outcome = (call: Promise<unknown>) =>
      call.then(
        (value) => `ok ${String(value)}`,
        (error: Error) => error.name,
      );
    // Stuck first, in the middle and last; the others finish in reverse order of their start.
    const calls = [
      outcome(withTimeout(level, 'get', never)),
      ...[30, 20, 10].map((ms) => outcome(withTimeout(level, 'get', () => resolveAfter(ms, ms)))),
      outcome(withTimeout(level, 'get', never)),
      ...[15, 5].map((ms) => outcome(withTimeout(level, 'get', () => resolveAfter(ms, ms)))),
      outcome(withTimeout(level, 'get', never)),
    ];
    expect(await Promise.all(calls)).toEqual([
      'LevelTimeoutError',
      'ok 30',
      'ok 20',
      'ok 10',
      'LevelTimeoutError',
      'ok 15',
      'ok 5',
      'LevelTimeoutError',
    ]);
    // The level keeps working after the sweeps emptied its list.
    await expect(withTimeout(level, 'get', () => resolveAfter(1, 'again'))).resolves.toBe('again');
  });

  it('lets a finished call and its result be collected at once, not at the next deadline sweep', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    // A long timeout: the sweep that would drop a kept deadline is a minute away.
    const level = new Level({ backend: memoryBackend(), timeout: '60s' });
    // The calls run in a function of their own, so this test's frame holds none of their values.
    const run = async (): Promise<WeakRef<object>[]> => {
      const refs: WeakRef<object>[] = [];
      for (let i = 0; i < 50; i++) {
        refs.push(
          new WeakRef(await withTimeout(level, 'get', async () => ({ payload: 'x'.repeat(1000), i }))),
        );
      }
      return refs;
    };
    const refs = await run();
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    expect(refs.flatMap((ref, i) => (ref.deref() !== undefined ? [i] : []))).toEqual([]);
  });
});
