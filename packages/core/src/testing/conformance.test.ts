import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryBackend } from '../backends/memory.ts';
import { sqliteBackend } from '../backends/sqlite.ts';
import { runBackendConformance } from './index.ts';

runBackendConformance('memory', () => ({
  open: ({ clock }) => memoryBackend({ clock }),
}));

runBackendConformance('sqlite (file)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cache-conformance-'));
  return {
    open: ({ clock }) => sqliteBackend({ path: join(dir, 'nested', 'cache.db'), clock }),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
});

runBackendConformance('sqlite (bounded, tiny flush batches)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cache-conformance-'));
  return {
    // Bounds far above what the suite stores: exercises the transactional write path without evicting.
    open: ({ clock }) =>
      sqliteBackend({
        path: join(dir, 'cache.db'),
        clock,
        maxEntries: 1_000_000,
        maxBytes: 2 ** 40,
        touchFlushSize: 2,
      }),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
});

runBackendConformance(
  'sqlite (:memory:)',
  () => ({ open: ({ clock }) => sqliteBackend({ path: ':memory:', clock }) }),
  // A private in-memory database does not outlive its connection.
  { persistent: false },
);
