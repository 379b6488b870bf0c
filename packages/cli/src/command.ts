import type { CliIo, OutputStream } from './io.ts';
import type { Connection, ConnectOptions } from './store.ts';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Placeholder shown in help: `--tier <tier>`. */
  value?: string;
  description: string;
}

export type OptionValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** What a command gets: its parsed arguments, the streams, and a way to open the store. */
export interface Context {
  readonly command: string;
  readonly positionals: readonly string[];
  readonly options: OptionValues;
  readonly format: 'table' | 'json';
  readonly quiet: boolean;
  /** Progress output is wanted (stderr is a terminal, or --progress) and not silenced by --quiet. */
  readonly progress: boolean;
  readonly stdout: OutputStream;
  readonly stderr: OutputStream;
  readonly stdin: NonNullable<CliIo['stdin']>;
  readonly env: Readonly<Record<string, string | undefined>>;
  now(): number;
  connect(options?: ConnectOptions): Promise<Connection>;
  string(name: string): string | undefined;
  strings(name: string): string[];
  flag(name: string): boolean;
  /** Writes a line of results to stdout. */
  print(text: string): Promise<void>;
  /** Writes a value as JSON to stdout. */
  json(value: unknown): Promise<void>;
  /** A result message: stdout, unless --quiet. */
  say(text: string): Promise<void>;
}

export interface CommandSpec {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** `llm-cache ls [prefix] [options]`. */
  usage: string;
  /** Paragraphs shown by `--help`. */
  description: string;
  options: Record<string, OptionSpec>;
  examples: string[];
  args: { min: number; max: number };
  run(context: Context): Promise<number | undefined>;
}
