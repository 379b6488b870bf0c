import { afterEach, describe, expect, it, vi } from 'vitest';
import { main as options } from '../examples/options.ts';
import { main as quickstart } from '../examples/quickstart.ts';
import { tempDir } from './helpers.ts';

const cleanups: Array<() => void> = [];
afterEach(() => {
  vi.restoreAllMocks();
  for (const cleanup of cleanups.splice(0)) cleanup();
});

function captureLog(): string[] {
  const lines: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
    lines.push(args.map((arg) => (typeof arg === 'string' ? arg : JSON.stringify(arg))).join(' '));
  });
  return lines;
}

describe('examples', () => {
  it('quickstart serves the second generate and stream from the cache', async () => {
    const { dir, cleanup } = tempDir();
    cleanups.push(cleanup);
    const lines = captureLog();
    await quickstart(dir);
    expect(lines).toEqual([
      'generate #1: Fractions split a whole into equal parts. false 21',
      'generate #2: Fractions split a whole into equal parts. true 0',
      'stream #1: Equal parts. false',
      'stream #2: Equal parts. true',
      'hits 2, misses 2, tokens saved 35',
    ]);
  });

  it('options shows per-call control and partial embedding hits', async () => {
    const lines = captureLog();
    await options();
    expect(lines[0]).toContain('"hit":true');
    expect(lines[0]).toContain('"namespace":"tenant-a"');
    expect(lines[1]).toBe('embedding calls: [["numerator","denominator"],["fraction"]]');
    expect(lines[2]).toBe('served: {"hits":2,"misses":1} tokens spent: 4');
  });
});
