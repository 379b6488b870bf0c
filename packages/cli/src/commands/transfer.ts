import { closeSync, createWriteStream, openSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { StoredEntry } from '@x/cache-core';
import { announceChangedKeys } from '@x/cache-core';
import type { CommandSpec, Context } from '../command.ts';
import { entries, formatInt } from '../format.ts';
import type { OutputStream } from '../io.ts';
import { CliError, messageOf, usageError, writeOut } from '../io.ts';
import { parseJsonLine, readLines, where } from '../jsonl.ts';
import { scanKeys } from '../keys.ts';
import { filterOf, NAMESPACE_OPTION, TIER_OPTION } from '../options.ts';
import { createProgress } from '../progress.ts';
import { readEntries } from '../store.ts';

export const EXPORT_FORMAT = 'llm-cache-export';
export const EXPORT_VERSION = 1;
const BATCH = 500;

/** One line of an export: the stored bytes verbatim, so any value (binary included) and its TTL come back exactly. */
export interface ExportRecord {
  key: string;
  /** Epoch ms when the store drops the entry (its TTL plus any grace); `null` = never. */
  expiresAt: number | null;
  /** Tags as stored (scoped to tier and namespace: `responses/default#math`). */
  tags: string[];
  /** The encoded entry (header + payload), base64. */
  value: string;
}

/**
 * One line per counter scope, after the entries (unfiltered exports only): the statistics
 * applications flushed to the store (`t:<tier>:<namespace>`, `l:<level>`, the ledger's), which
 * import adds to the target's.
 */
export interface ExportCounters {
  /** The counter scope, as the store keeps it. */
  scope: string;
  counters: Record<string, number>;
}

export interface ExportHeader {
  format: typeof EXPORT_FORMAT;
  version: number;
  exportedAt: string;
  source: string;
}

function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const SIGNAL_EXIT: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 130, SIGTERM: 143 };

/**
 * Opens the target file up front (a clear error for a bad path) and writes to a temporary name.
 * Until commit or abort, Ctrl-C (SIGINT) or SIGTERM deletes the temporary file and exits 130 / 143
 * (unless the process already had handlers of its own for the signal: those then decide, and the
 * export goes on).
 */
function openTarget(
  file: string,
  stderr: OutputStream,
): {
  stream: OutputStream & NodeJS.WritableStream;
  commit(): void;
  abort(): void;
} {
  // A directory is refused before anything is read: the rename at the end would fail only after
  // the whole store was written.
  if (file.endsWith('/') || statSync(file, { throwIfNoEntry: false })?.isDirectory()) {
    throw usageError(
      `cannot export to ${file}: it is a directory; name a file, e.g. ${join(file, 'cache.jsonl')}`,
    );
  }
  const temporary = `${file}.${process.pid}.tmp`;
  // Only for signals the process does not handle itself (the CLI used as a library): a host's
  // handler decides what a signal does, and the export must not be cut from under it. The process
  // exits right after, so the stream is never written to again.
  const signals = Object.keys(SIGNAL_EXIT).filter((signal) => process.listenerCount(signal) === 0);
  const onSignal = (signal: NodeJS.Signals) => {
    rmSync(temporary, { force: true });
    stderr.write(`llm-cache: export interrupted (${signal}); ${file} was not written\n`);
    process.exit(SIGNAL_EXIT[signal] ?? 1);
  };
  const unlisten = () => {
    for (const signal of signals) process.off(signal, onSignal);
  };
  // Listening before the file exists: a signal that arrives as it is created cannot leave it behind
  // (without a listener the signal's default action ends the process at once).
  for (const signal of signals) process.on(signal, onSignal);
  let fd: number;
  try {
    fd = openSync(temporary, 'w');
  } catch (error) {
    unlisten();
    throw new CliError(`cannot write ${file}: ${messageOf(error)}`);
  }
  const stream = createWriteStream(temporary, { fd });
  let failure: unknown;
  stream.on('error', (error) => {
    failure = error;
  });
  // Once the stream has closed the descriptor its number may belong to another file.
  let closed = false;
  stream.on('close', () => {
    closed = true;
  });
  const remove = () => {
    if (!closed) {
      closed = true;
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
    rmSync(temporary, { force: true });
  };
  return {
    stream,
    commit() {
      unlisten();
      if (failure) throw new CliError(`cannot write ${file}: ${messageOf(failure)}`);
      renameSync(temporary, file);
    },
    abort() {
      unlisten();
      remove();
    },
  };
}

async function finish(stream: NodeJS.WritableStream): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    stream.once('error', reject);
    stream.end(() => resolve());
  });
}

export const exportCommand: CommandSpec = {
  name: 'export',
  summary: 'write entries to JSONL (stdout or a file), bytes and TTLs exactly as stored',
  usage: 'llm-cache export [file] [--tier <tier>] [--namespace <ns>] [--prefix <prefix>]',
  description: [
    'Writes one JSON line per live record: {"key","expiresAt","tags","value"}, where value is the',
    'stored entry (header and payload) in base64 and expiresAt the absolute time the store drops it.',
    "Every record in the store is written (the idempotency ledger's too) unless --tier, --namespace",
    'or --prefix narrow it. An export of the whole store ends with the statistics counters, one',
    'line per scope: {"scope","counters"} (--no-counters leaves them out; a narrowed export has none).',
    'import writes them back byte for byte, so binary values, typed arrays, usage and TTLs survive,',
    'also between SQLite and Redis. The first line is a header ({"format":"llm-cache-export",...}).',
    'Without a file (or with -) the lines go to stdout. A file is written under a temporary name and',
    'renamed when complete.',
  ].join('\n'),
  options: {
    tier: TIER_OPTION,
    namespace: NAMESPACE_OPTION,
    prefix: { type: 'string', value: 'prefix', description: 'only keys starting with this' },
    counters: {
      type: 'boolean',
      description: 'write the statistics counters after the entries (default: on, unless narrowed)',
    },
  },
  examples: [
    'llm-cache export backup.jsonl',
    'llm-cache export --tier embeddings > embeddings.jsonl',
    'llm-cache export --url sqlite://.cache/llm-cache.db | llm-cache import --url redis://localhost:6379',
  ],
  args: { min: 0, max: 1 },
  async run(context: Context) {
    const filter = filterOf(context, context.string('prefix'));
    const file = context.positionals[0] === '-' ? undefined : context.positionals[0];
    // The file first: one that cannot be opened must not leave a store connection behind.
    const narrowed =
      filter.prefix !== undefined || filter.tier !== undefined || filter.namespace !== undefined;
    const withCounters = context.options.counters !== false && !narrowed;
    if (context.options.counters === true && narrowed) {
      throw usageError(
        '--counters: the counters cover the whole store, not a --tier, --namespace or --prefix; drop one',
      );
    }
    const target = file === undefined ? undefined : openTarget(file, context.stderr);
    const connection = await context.connect().catch((error: unknown) => {
      target?.abort();
      throw error;
    });
    const out = target?.stream ?? context.stdout;
    let count = 0;
    let scopes = 0;
    try {
      const header: ExportHeader = {
        format: EXPORT_FORMAT,
        version: EXPORT_VERSION,
        exportedAt: new Date(context.now()).toISOString(),
        source: connection.target.display,
      };
      await writeOut(out, `${JSON.stringify(header)}\n`);
      const progress = createProgress(context.stderr, context.progress, 'export', ['entry', 'entries']);
      const write = async (keys: string[]) => {
        const stored = await readEntries(connection.store, keys);
        let chunk = '';
        keys.forEach((key, index) => {
          const entry = stored[index];
          if (!entry) return; // expired or deleted since the scan
          const record: ExportRecord = {
            key,
            expiresAt: entry.expiresAt ?? null,
            tags: entry.tags ? [...entry.tags] : [],
            value: toBase64(entry.value),
          };
          chunk += `${JSON.stringify(record)}\n`;
          count++;
        });
        if (chunk) await writeOut(out, chunk);
        progress.tick(keys.length);
      };
      let batch: string[] = [];
      for await (const key of scanKeys(connection.store, filter)) {
        batch.push(key);
        if (batch.length >= BATCH) {
          await write(batch);
          batch = [];
        }
      }
      if (batch.length > 0) await write(batch);
      if (withCounters && connection.store.readCounters) {
        let chunk = '';
        for (const [scope, counters] of Object.entries(await connection.store.readCounters())) {
          const line: ExportCounters = { scope, counters };
          chunk += `${JSON.stringify(line)}\n`;
          scopes++;
        }
        if (chunk) await writeOut(out, chunk);
      }
      progress.done();
      if (target) {
        await finish(target.stream);
        target.commit();
      }
    } catch (error) {
      target?.abort();
      throw error;
    } finally {
      await connection.close();
    }
    const what = `${entries(count)}${scopes > 0 ? ' and the statistics counters' : ''}`;
    if (file !== undefined) {
      if (context.format === 'json') await context.json({ exported: count, counters: scopes, file });
      else await context.say(`Exported ${what} to ${file}.`);
    } else if (!context.quiet) {
      context.stderr.write(`Exported ${what}.\n`);
    }
    return 0;
  },
};

/** A counter line, or undefined for any other line (an entry). */
function parseCounters(raw: unknown, at: string): ExportCounters | undefined {
  if (typeof raw !== 'object' || raw === null || !('scope' in raw) || 'key' in raw) return undefined;
  const { scope, counters } = raw as Record<string, unknown>;
  if (typeof scope !== 'string' || scope === '')
    throw new CliError(`${at}: "scope" must be a non-empty string`);
  if (
    typeof counters !== 'object' ||
    counters === null ||
    Array.isArray(counters) ||
    Object.values(counters).some((value) => typeof value !== 'number' || !Number.isFinite(value))
  ) {
    throw new CliError(`${at}: "counters" must be an object of numbers, as export writes it`);
  }
  return { scope, counters: counters as Record<string, number> };
}

function parseRecord(raw: unknown, at: string): [string, StoredEntry] {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CliError(`${at}: expected an object {"key","expiresAt","tags","value"}`);
  }
  const { key, expiresAt, tags, value } = raw as Record<string, unknown>;
  if (typeof key !== 'string' || key === '') throw new CliError(`${at}: "key" must be a non-empty string`);
  if (typeof value !== 'string' || !BASE64.test(value) || value.length % 4 !== 0) {
    throw new CliError(`${at}: "value" must be the base64 of the stored entry, as export writes it`);
  }
  if (
    expiresAt !== null &&
    expiresAt !== undefined &&
    (typeof expiresAt !== 'number' || !Number.isFinite(expiresAt))
  ) {
    throw new CliError(`${at}: "expiresAt" must be epoch milliseconds or null`);
  }
  if (tags !== undefined && (!Array.isArray(tags) || tags.some((tag) => typeof tag !== 'string'))) {
    throw new CliError(`${at}: "tags" must be an array of strings`);
  }
  const bytes = Buffer.from(value, 'base64');
  return [
    key,
    {
      value: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      expiresAt: typeof expiresAt === 'number' ? expiresAt : undefined,
      tags: tags && tags.length > 0 ? (tags as string[]) : undefined,
    },
  ];
}

export const importCommand: CommandSpec = {
  name: 'import',
  summary: 'write entries from an export (JSONL from stdin or a file) back into a store',
  usage: 'llm-cache import [file]',
  description: [
    'Reads what export wrote and stores every entry byte for byte with its expiry and tags,',
    'replacing entries with the same key. Entries that expired since the export are skipped.',
    "Statistics counters in the export are added to the target's (import a file once).",
    'Without a file (or with -) the lines are read from stdin. A missing SQLite file is created.',
    'Stops at the first malformed line, naming it; the lines before it are imported.',
  ].join('\n'),
  options: {},
  examples: [
    'llm-cache import backup.jsonl --url sqlite://restored.db',
    'llm-cache export --url sqlite://.cache/llm-cache.db | llm-cache import --url redis://localhost:6379',
  ],
  args: { min: 0, max: 1 },
  async run(context: Context) {
    const file = context.positionals[0];
    const connection = await context.connect({ create: true });
    let imported = 0;
    let expired = 0;
    let scopes = 0;
    let batch: Array<[string, StoredEntry]> = [];
    let announce = true;
    const flush = async () => {
      if (batch.length === 0) return;
      await connection.store.setMany(batch);
      // Running applications drop their memory-level copies of the keys replaced. The entries
      // are written either way: a store that refuses pub/sub (a Redis ACL) costs a warning.
      if (announce) {
        try {
          await announceChangedKeys(
            connection.store,
            batch.map(([key]) => key),
          );
        } catch (error) {
          announce = false;
          context.stderr.write(
            `llm-cache: warning: running applications were not told of the replaced entries (${messageOf(error)}); their memory levels keep old copies until they expire\n`,
          );
        }
      }
      imported += batch.length;
      batch = [];
    };
    try {
      const progress = createProgress(context.stderr, context.progress, 'import', ['entry', 'entries']);
      const now = context.now();
      let first = true;
      for await (const line of readLines(file, context.stdin)) {
        const raw = parseJsonLine(line, file);
        const at = where(file, line.number);
        if (first) {
          first = false;
          const header = raw as Partial<ExportHeader> | null;
          if (header && typeof header === 'object' && 'format' in header) {
            if (header.format !== EXPORT_FORMAT || header.version !== EXPORT_VERSION) {
              throw new CliError(
                `${at}: not an llm-cache export this version reads (format ${String(header.format)} v${String(header.version)}; expected ${EXPORT_FORMAT} v${EXPORT_VERSION})`,
              );
            }
            continue;
          }
        }
        const counters = parseCounters(raw, at);
        if (counters) {
          await flush();
          const deltas = Object.fromEntries(
            Object.entries(counters.counters).filter(([, value]) => value !== 0),
          );
          if (Object.keys(deltas).length > 0 && connection.store.incrementCounters) {
            await connection.store.incrementCounters(counters.scope, deltas);
            scopes++;
          }
          continue;
        }
        const [key, entry] = parseRecord(raw, at);
        if (entry.expiresAt !== undefined && entry.expiresAt <= now) {
          expired++;
        } else {
          batch.push([key, entry]);
          if (batch.length >= BATCH) await flush();
        }
        progress.tick(1, line.fraction);
      }
      await flush();
      progress.done();
    } catch (error) {
      // A bad line: keep what came before it, as the help promises.
      if (error instanceof CliError) await flush();
      if (error instanceof CliError && imported > 0) {
        throw new CliError(`${error.message} (imported ${entries(imported)} before it)`);
      }
      throw error;
    } finally {
      await connection.close();
    }
    if (context.format === 'json') await context.json({ imported, expired, counters: scopes });
    else {
      await context.say(
        `Imported ${entries(imported)}` +
          (scopes > 0 ? ' and the statistics counters' : '') +
          (expired > 0
            ? ` (${formatInt(expired)} had expired since the export and ${expired === 1 ? 'was' : 'were'} skipped).`
            : '.'),
      );
    }
    return 0;
  },
};
