import { formatInt } from './format.ts';
import type { OutputStream } from './io.ts';

/**
 * Progress of a long operation on stderr. On a terminal one line is redrawn in place; when forced
 * with `--progress` on a pipe or file, a line is printed at most once a second, then a final one.
 */
export interface Progress {
  /** Adds to the count; `fraction` (0..1) when the total is known. */
  tick(count?: number, fraction?: number): void;
  /** Prints the final state (non-terminal) or clears the line (terminal). */
  done(): void;
}

const NOOP: Progress = { tick() {}, done() {} };

export function createProgress(
  stream: OutputStream,
  enabled: boolean,
  label: string,
  units: readonly [one: string, many: string],
  clock: () => number = Date.now,
): Progress {
  if (!enabled) return NOOP;
  const tty = stream.isTTY === true;
  const started = clock();
  const interval = tty ? 100 : 1000;
  let count = 0;
  let fraction: number | undefined;
  let last = 0;
  let shown = -1;
  const text = () => {
    const percent = fraction === undefined ? '' : ` (${Math.min(100, Math.floor(fraction * 100))}%)`;
    const seconds = ((clock() - started) / 1000).toFixed(1);
    return `${label}: ${formatInt(count)} ${count === 1 ? units[0] : units[1]}${percent}, ${seconds}s`;
  };
  const render = () => {
    shown = count;
    if (tty) stream.write(`\r${text()}\x1b[K`);
    else stream.write(`${text()}\n`);
  };
  return {
    tick(added = 1, at) {
      count += added;
      if (at !== undefined) fraction = at;
      const now = clock();
      if (now - last >= interval) {
        last = now;
        render();
      }
    },
    done() {
      if (tty) stream.write('\r\x1b[K');
      else if (shown !== count) render();
    },
  };
}

/** A ticking line for operations that report no intermediate count (prune is one store call). */
export function createSpinner(stream: OutputStream, enabled: boolean, label: string): { stop(): void } {
  if (!enabled) return { stop() {} };
  const tty = stream.isTTY === true;
  const started = Date.now();
  if (!tty) {
    stream.write(`${label}: started\n`);
    return { stop: () => void stream.write(`${label}: finished\n`) };
  }
  const frames = ['|', '/', '-', '\\'];
  let frame = 0;
  const timer = setInterval(() => {
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    stream.write(`\r${label} ${frames[frame++ % frames.length]} ${seconds}s\x1b[K`);
  }, 100);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      stream.write('\r\x1b[K');
    },
  };
}
