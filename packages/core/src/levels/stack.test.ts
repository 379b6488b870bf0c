import { describe, expect, it } from 'vitest';
import { memoryBackend } from '../backends/memory.ts';
import { Level } from './stack.ts';

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
