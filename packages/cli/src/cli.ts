import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CacheError } from '@x/cache-core';
import type { CommandSpec, Context, OptionSpec, OptionValues } from './command.ts';
import { clearCommand } from './commands/clear.ts';
import { inspectCommand } from './commands/inspect.ts';
import { invalidateCommand } from './commands/invalidate.ts';
import { lsCommand } from './commands/ls.ts';
import { pruneCommand } from './commands/prune.ts';
import { statsCommand } from './commands/stats.ts';
import { exportCommand, importCommand } from './commands/transfer.ts';
import { warmCommand } from './commands/warm.ts';
import type { CliIo } from './io.ts';
import { CliError, EXIT_ERROR, EXIT_OK, EXIT_USAGE, messageOf, usageError, writeOut } from './io.ts';
import { GLOBAL_OPTIONS } from './options.ts';
import { connect, resolveTarget } from './store.ts';

export const COMMANDS: readonly CommandSpec[] = [
  statsCommand,
  lsCommand,
  inspectCommand,
  clearCommand,
  pruneCommand,
  invalidateCommand,
  exportCommand,
  importCommand,
  warmCommand,
];

/** The package version, read from package.json next to src/ and dist/ alike. */
export function version(): string {
  const text = readFileSync(new URL('../package.json', import.meta.url), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}

function optionLines(options: Record<string, OptionSpec>): string[] {
  const entries = Object.entries(options).map(([name, spec]) => {
    const flag = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.value ? ` <${spec.value}>` : ''}`;
    return [flag, spec.description + (spec.multiple ? ' (repeatable)' : '')] as const;
  });
  const width = Math.max(...entries.map(([flag]) => flag.length));
  return entries.map(([flag, description]) => `  ${flag.padEnd(width)}  ${description}`);
}

export function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((command) => command.name.length));
  return [
    `llm-cache ${version()} — inspect and manage an @x/cache-core store (SQLite or Redis)`,
    '',
    'Usage: llm-cache <command> [arguments] [options]',
    '',
    'Commands:',
    ...COMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
    '',
    'Options for every command:',
    ...optionLines(GLOBAL_OPTIONS),
    '  -V, --version              print the version',
    '',
    'The store: --url, else $LLM_CACHE_URL, else $LLM_CACHE_DIR/llm-cache.db or .cache/llm-cache.db',
    '(what an application using getDefaultCache() writes). memory:// cannot be inspected from outside.',
    'Exit codes: 0 ok, 1 failed (store unreachable, entry not found, bad input file), 2 usage error.',
    'Run llm-cache <command> --help for its options and examples.',
  ].join('\n');
}

export function commandHelp(spec: CommandSpec): string {
  const own = Object.keys(spec.options).length > 0 ? ['', 'Options:', ...optionLines(spec.options)] : [];
  return [
    `Usage: ${spec.usage}`,
    '',
    spec.description,
    ...own,
    '',
    'Options for every command:',
    ...optionLines(GLOBAL_OPTIONS),
    '',
    'Examples:',
    ...spec.examples.map((example) => `  ${example}`),
  ].join('\n');
}

/** `--url`, `-q`, …: an option every command takes. */
function isGlobalOption(token: string): boolean {
  const name = token.replace(/^--?/, '');
  return (
    Object.hasOwn(GLOBAL_OPTIONS, name) ||
    Object.values(GLOBAL_OPTIONS).some((spec) => spec.short !== undefined && spec.short === name)
  );
}

/** Options that take a value, so that `--url x stats` finds `stats` and not `x` as the command. */
function valueOptions(): Set<string> {
  const names = new Set<string>();
  for (const options of [GLOBAL_OPTIONS, ...COMMANDS.map((command) => command.options)]) {
    for (const [name, spec] of Object.entries(options)) if (spec.type === 'string') names.add(name);
  }
  return names;
}

function splitCommand(argv: readonly string[]): { command: string | undefined; rest: string[] } {
  const takesValue = valueOptions();
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    if (token === '--') break;
    if (token.startsWith('--')) {
      if (!token.includes('=') && takesValue.has(token.slice(2))) i++;
      continue;
    }
    if (token.startsWith('-') && token.length > 1) continue;
    return { command: token, rest: [...argv.slice(0, i), ...argv.slice(i + 1)] };
  }
  return { command: undefined, rest: [...argv] };
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length]!;
}

function unknownCommand(name: string): CliError {
  const near = COMMANDS.map((command) => command.name).find((known) => distance(known, name) <= 2);
  return usageError(
    `unknown command "${name}"${near ? ` — did you mean "${near}"?` : ''} (llm-cache --help lists the commands)`,
  );
}

/**
 * Request hashes are base64url and may start with '-' (`inspect -kMpEDMw801P`, `--key -kMp…`):
 * such a word is an argument, not a cluster of short options, when it is not made of known ones.
 */
function dashedValues(args: readonly string[], options: Record<string, OptionSpec>): string[] {
  const shorts = new Set(Object.values(options).flatMap((option) => (option.short ? [option.short] : [])));
  const longs = new Set(Object.keys(options).flatMap((name) => [`--${name}`, `--no-${name}`]));
  const known = (token: string) =>
    longs.has(token.split('=')[0]!) || [...token.slice(1)].every((letter) => shorts.has(letter));
  // A key or hash fragment may start with dashes (base64url): `-Xk2v…`, or `--WHcM…`, which no
  // option name looks like (options are lower-case words).
  const dashed = (token: string) =>
    token !== '--' &&
    !known(token) &&
    (/^-[^-]/.test(token) || (/^--[A-Za-z0-9_-]{2,}$/.test(token) && !/^--[a-z][a-z-]*$/.test(token)));
  const out: string[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const token = args[i]!;
    if (token === '--') {
      positionals.push(...args.slice(i + 1));
      break;
    }
    const option = token.startsWith('--') ? options[token.slice(2)] : undefined;
    const next = args[i + 1];
    if (option?.type === 'string' && next !== undefined && dashed(next)) {
      out.push(`${token}=${next}`);
      i++;
    } else if (/^-[A-Za-z0-9_-]{4,}$/.test(token) && dashed(token)) {
      positionals.push(token);
    } else {
      out.push(token);
    }
  }
  return positionals.length > 0 ? [...out, '--', ...positionals] : out;
}

function parse(spec: CommandSpec, args: string[]): { values: OptionValues; positionals: string[] } {
  const options = Object.fromEntries(
    Object.entries({ ...GLOBAL_OPTIONS, ...spec.options }).map(([name, option]) => [
      name,
      {
        type: option.type,
        ...(option.short ? { short: option.short } : {}),
        multiple: option.multiple ?? false,
      },
    ]),
  );
  try {
    const parsed = parseArgs({
      args: dashedValues(args, { ...GLOBAL_OPTIONS, ...spec.options }),
      options,
      allowPositionals: true,
      strict: true,
      allowNegative: true,
    });
    return { values: parsed.values as OptionValues, positionals: parsed.positionals };
  } catch (error) {
    const code = (error as { code?: string }).code;
    const hint = `see llm-cache ${spec.name} --help`;
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      const option = /'([^']+)'/.exec(messageOf(error))?.[1] ?? 'option';
      throw usageError(`unknown option ${option} for ${spec.name} — ${hint}`);
    }
    if (code?.startsWith('ERR_PARSE_ARGS_')) {
      // One line, as every error of the CLI: parseArgs explains itself over several.
      const first = messageOf(error).split('\n')[0]!.replace(/\.$/, '');
      throw usageError(`${first} — ${hint}`);
    }
    throw error;
  }
}

const USAGE_CODES = new Set(['E_INVALID_NAME', 'E_INVALID_OPTION']);

/**
 * Runs the CLI with `argv` (without the node and script paths) and resolves to the exit code:
 * 0 ok, 1 runtime error, 2 usage error. Errors are reported on `io.stderr` as one line.
 */
export async function run(argv: readonly string[], io: CliIo = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const stdin = io.stdin ?? process.stdin;
  const env = io.env ?? process.env;
  const now = io.now ?? Date.now;
  try {
    const { command, rest } = splitCommand(argv);
    if (command === undefined || command === 'help') {
      const topic = command === 'help' ? rest.find((token) => !token.startsWith('-')) : undefined;
      if (topic !== undefined) {
        const spec = COMMANDS.find((each) => each.name === topic);
        if (!spec) throw unknownCommand(topic);
        await writeOut(stdout, `${commandHelp(spec)}\n`);
        return EXIT_OK;
      }
      if (rest.includes('--version') || rest.includes('-V')) {
        await writeOut(stdout, `${version()}\n`);
        return EXIT_OK;
      }
      if (command === 'help' || rest.includes('--help') || rest.includes('-h')) {
        await writeOut(stdout, `${mainHelp()}\n`);
        return EXIT_OK;
      }
      const unknown = rest.find((token) => token.startsWith('-'));
      if (unknown) {
        const name = unknown.split('=')[0]!;
        if (isGlobalOption(name)) throw usageError(`no command given — llm-cache --help lists the commands`);
        throw usageError(`unknown option ${name} — llm-cache --help lists the options`);
      }
      stderr.write(`${mainHelp()}\n`);
      return EXIT_USAGE;
    }
    const spec = COMMANDS.find((each) => each.name === command);
    if (!spec) throw unknownCommand(command);
    const { values, positionals } = parse(spec, rest);
    if (values.help === true) {
      await writeOut(stdout, `${commandHelp(spec)}\n`);
      return EXIT_OK;
    }
    const format = (values.format as string | undefined) ?? 'table';
    if (format !== 'table' && format !== 'json') {
      throw usageError(`--format must be table or json, got "${format}"`);
    }
    const timeoutRaw = values.timeout as string | undefined;
    const timeoutMs = timeoutRaw === undefined ? 2000 : Number(timeoutRaw);
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw usageError(`--timeout must be a positive number of ms, got "${timeoutRaw}"`);
    }
    if (positionals.length < spec.args.min) {
      throw usageError(`${spec.name} needs an argument — usage: ${spec.usage}`);
    }
    if (positionals.length > spec.args.max) {
      throw usageError(`unexpected argument "${positionals[spec.args.max]}" — usage: ${spec.usage}`);
    }
    const quiet = values.quiet === true;
    const context: Context = {
      command: spec.name,
      positionals,
      options: values,
      format,
      quiet,
      progress: !quiet && (values.progress === true || stderr.isTTY === true),
      stdout,
      stderr,
      stdin,
      env,
      now,
      connect: (options) =>
        connect(resolveTarget(values.url as string | undefined, env), { timeoutMs, ...options }),
      string(name) {
        const value = values[name];
        return typeof value === 'string' ? value : undefined;
      },
      strings(name) {
        const value = values[name];
        if (Array.isArray(value)) return value.filter((each): each is string => typeof each === 'string');
        return typeof value === 'string' ? [value] : [];
      },
      flag: (name) => values[name] === true,
      print: (text) => writeOut(stdout, `${text}\n`),
      json: (value) => writeOut(stdout, `${JSON.stringify(value, null, 2)}\n`),
      say: (text) => (quiet ? Promise.resolve() : writeOut(stdout, `${text}\n`)),
    };
    return (await spec.run(context)) ?? EXIT_OK;
  } catch (error) {
    if (error instanceof CliError) {
      stderr.write(`llm-cache: ${error.message}\n`);
      return error.exitCode;
    }
    if (CacheError.isInstance(error)) {
      stderr.write(`llm-cache: ${error.message}\n`);
      return USAGE_CODES.has(error.code) ? EXIT_USAGE : EXIT_ERROR;
    }
    stderr.write(`llm-cache: ${messageOf(error)}\n`);
    if (env.LLM_CACHE_DEBUG && error instanceof Error && error.stack) stderr.write(`${error.stack}\n`);
    return EXIT_ERROR;
  }
}
