import { memoryBackend } from '@x/cache-core';
import { describe, expect, it } from 'vitest';
import { LEDGER_PREFIX, readLedger } from './ledger.ts';

describe('readLedger', () => {
  const counters: Record<string, Record<string, number>> = {
    [`${LEDGER_PREFIX}default:send_email`]: { calls: 4, executions: 1, replays: 3, failures: 0 },
    [`${LEDGER_PREFIX}default:git_status`]: { calls: 6, executions: 2, replays: 4, failures: 1 },
    [`${LEDGER_PREFIX}tenant-a:deploy`]: { calls: 1, executions: 1, replays: 0, failures: 0 },
    't:responses:default': { hits: 9 },
  };
  const cache = () => {
    throw new Error('the counters-only path must not open a cache');
  };

  it('falls back to the per-tool counters when the core has no ledger API', async () => {
    const result = await readLedger({
      store: memoryBackend(),
      counters,
      cache,
      taskId: undefined,
      create: null,
    });
    expect(result.fromApi).toBe(false);
    expect(Object.keys(result.namespaces)).toEqual(['default', 'tenant-a']);
    expect(result.namespaces.default).toMatchObject({
      totals: { calls: 10, executions: 3, replays: 7, failures: 1 },
      replayRate: 0.7,
      records: null,
    });
    expect(result.namespaces.default!.tools.git_status).toMatchObject({ calls: 6, replays: 4 });
  });

  it('has nothing per task without the ledger API (the counters are totals)', async () => {
    const result = await readLedger({
      store: memoryBackend(),
      counters,
      cache,
      taskId: 'run-1',
      create: null,
    });
    expect(result.namespaces).toEqual({});
  });
});
