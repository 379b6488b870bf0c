/**
 * `llm-cache stats` for the demo's store, run in-process through the CLI's own entry point
 * (`run(argv, io)` from @x/cache-cli), exactly as `llm-cache stats --url <store>` prints it.
 */
import type { OutputStream } from '@x/cache-cli';
import { run as llmCache } from '@x/cache-cli';
import type { DemoConfig } from './config.ts';

export interface StoreReport {
  /** The command line shown to the reader. */
  command: string;
  exitCode: number;
  stdout: string;
  stderr: string;
}

function capture(): OutputStream & { text: string } {
  return {
    text: '',
    write(chunk: string) {
      this.text += chunk;
      return true;
    },
    once() {
      return this;
    },
    isTTY: false,
  };
}

/** Runs `llm-cache stats --url <store> [--format json]` after the demo's cache is closed (counters flushed). */
export async function llmCacheStats(config: DemoConfig, format: 'table' | 'json'): Promise<StoreReport> {
  const argv = ['stats', '--url', config.url, ...(format === 'json' ? ['--format', 'json'] : [])];
  const stdout = capture();
  const stderr = capture();
  const exitCode = await llmCache(argv, { stdout, stderr, env: {} });
  return { command: `llm-cache ${argv.join(' ')}`, exitCode, stdout: stdout.text, stderr: stderr.text };
}
