import { once } from 'node:events';

/** A stream the CLI writes to: `process.stdout` / `process.stderr`, or a test's PassThrough. */
export interface OutputStream {
  write(chunk: string): boolean;
  once(event: 'drain', listener: () => void): unknown;
  /** Set on terminals; progress output and prompts depend on it. */
  isTTY?: boolean | undefined;
}

/** Where `run` reads and writes, so the CLI runs the same in a terminal and in a test. */
export interface CliIo {
  /** @default process.stdout */
  stdout?: OutputStream;
  /** @default process.stderr */
  stderr?: OutputStream;
  /** Read by `import` / `warm` without a file, and by the `clear` confirmation prompt. @default process.stdin */
  stdin?: NodeJS.ReadableStream & { isTTY?: boolean | undefined };
  /** Environment (`LLM_CACHE_URL`, `LLM_CACHE_DIR`). @default process.env */
  env?: Readonly<Record<string, string | undefined>>;
  /** Clock for ages and TTLs shown. @default Date.now */
  now?: () => number;
}

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;

/**
 * An error the CLI reports as one line and an exit code: 2 for a usage error (bad option,
 * bad URL), 1 for anything that went wrong at run time (unreachable store, missing entry).
 */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number = EXIT_ERROR) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

export function usageError(message: string): CliError {
  return new CliError(message, EXIT_USAGE);
}

/** Writes honouring back-pressure, so exporting a large store to a pipe does not buffer it all. */
export async function writeOut(stream: OutputStream, chunk: string): Promise<void> {
  if (!stream.write(chunk)) await once(stream as unknown as NodeJS.EventEmitter, 'drain');
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
