import { closeSync, createWriteStream, openSync, renameSync, rmSync } from 'node:fs';
import type { StoredEntry } from '@x/cache-core';
import type { CommandSpec, Context } from '../command.ts';
import { entries, formatInt } from '../format.ts';
import type { OutputStream } from '../io.ts';
import { CliError, messageOf, writeOut } from '../io.ts';
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

/** Opens the target file up front (a clear error for a bad path) and writes to a temporary name. */
function openTarget(file: string): {
  stream: OutputStream & NodeJS.WritableStream;
  commit(): void;
  abort(): void;
} {
  const temporary = `${file}.${process.pid}.tmp`;
  let fd: number;
  try {
    fd = openSync(temporary, 'w');
  } catch (error) {
    throw new CliError(`cannot write ${file}: ${messageOf(error)}`);
  }
  const stream = createWriteStream(temporary, { fd });
  let failure: unknown;
  stream.on('error', (error) => {
    failure = error;
  });
  return {
    stream,
    commit() {
      if (failure) throw new CliError(`cannot write ${file}: ${messageOf(failure)}`);
      renameSync(temporary, file);
    },
    abort() {
      try {
        closeSync(fd);
      } catch {
        // already closed by the stream
      }
      rmSync(temporary, { force: true });
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
    'or --prefix narrow it.',
    'import writes them back byte for byte, so binary values, typed arrays, usage and TTLs survive,',
    'also between SQLite and Redis. The first line is a header ({"format":"llm-cache-export",...}).',
    'Without a file (or with -) the lines go to stdout. A file is written under a temporary name and',
    'renamed when complete.',
  ].join('\n'),
  options: {
    tier: TIER_OPTION,
    namespace: NAMESPACE_OPTION,
    prefix: { type: 'string', value: 'prefix', description: 'only keys starting with this' },
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
    const target = file === undefined ? undefined : openTarget(file);
    const connection = await context.connect().catch((error: unknown) => {
      target?.abort();
      throw error;
    });
    const out = target?.stream ?? context.stdout;
    let count = 0;
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
    if (file !== undefined) {
      if (context.format === 'json') await context.json({ exported: count, file });
      else await context.say(`Exported ${entries(count)} to ${file}.`);
    } else if (!context.quiet) {
      context.stderr.write(`Exported ${entries(count)}.\n`);
    }
    return 0;
  },
};

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
    let batch: Array<[string, StoredEntry]> = [];
    const flush = async () => {
      if (batch.length === 0) return;
      await connection.store.setMany(batch);
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
    if (context.format === 'json') await context.json({ imported, expired });
    else {
      await context.say(
        `Imported ${entries(imported)}` +
          (expired > 0
            ? ` (${formatInt(expired)} had expired since the export and ${expired === 1 ? 'was' : 'were'} skipped).`
            : '.'),
      );
    }
    return 0;
  },
};
