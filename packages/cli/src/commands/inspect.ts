import { inspect } from 'node:util';
import type { Usage } from '@x/cache-core';
import { costOf, DEFAULT_PRICES, decodeEntry } from '@x/cache-core';
import type { CommandSpec, Context } from '../command.ts';
import { describeEntry } from '../entries.ts';
import { formatBytes, formatDuration, formatInt, formatUsd, renderFields } from '../format.ts';
import { CliError, messageOf, usageError } from '../io.ts';
import { resolveKey } from '../keys.ts';
import { readEntries } from '../store.ts';

const DEFAULT_MAX_CHARS = 2000;

function hexPreview(bytes: Uint8Array, full: boolean): string {
  const shown = full ? bytes : bytes.subarray(0, 64);
  const hex = Buffer.from(shown.buffer, shown.byteOffset, shown.byteLength).toString('hex');
  const pairs = hex.match(/../g)?.join(' ') ?? '';
  const more = bytes.byteLength - shown.byteLength;
  return `<${formatInt(bytes.byteLength)} bytes> ${pairs}${more > 0 ? ` … (${formatInt(more)} more bytes)` : ''}`;
}

/** Plain JSON prints as JSON (copy-pasteable); binary, Map, Set, Date and bigint as Node shows them. */
export function previewValue(value: unknown, codec: string | undefined, full: boolean): string {
  if (value instanceof Uint8Array) return hexPreview(value, full);
  if (codec === 'json') return JSON.stringify(value, null, 2) ?? String(value);
  return inspect(value, {
    depth: full ? Number.POSITIVE_INFINITY : 6,
    maxArrayLength: full ? Number.POSITIVE_INFINITY : 50,
    maxStringLength: full ? Number.POSITIVE_INFINITY : 1000,
    breakLength: 100,
  });
}

const graphemes = new Intl.Segmenter(undefined, { granularity: 'grapheme' });
/** Code units around the cut that the grapheme search looks at: longer than any real cluster. */
const CUT_WINDOW = 128;

/** Whether `code` is the first half (high surrogate) of a UTF-16 surrogate pair. */
function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

/**
 * Where to cut `text` to keep at most `max` UTF-16 code units without splitting a character as
 * the reader sees it: a surrogate pair (🌍), a ZWJ sequence (👨‍👩‍👧), a flag (🇫🇷), a letter and its
 * combining accents. Only a window before the cut is segmented, so a huge value costs nothing.
 */
function cutPoint(text: string, max: number): number {
  const start = Math.max(0, max - CUT_WINDOW);
  const segment = graphemes.segment(text.slice(start, max + CUT_WINDOW)).containing(max - start);
  const end = start + (segment?.index ?? max - start);
  if (end > start || start === 0) return end;
  // A cluster longer than the window: at least never leave half a surrogate pair.
  return isHighSurrogate(text.charCodeAt(max - 1)) ? max - 1 : max;
}

/** Cuts after `max` UTF-16 code units, fewer rather than split a character (an emoji) in two. */
function truncate(text: string, max: number): { text: string; truncated: boolean } {
  if (text.length <= max) return { text, truncated: false };
  const end = cutPoint(text, max);
  return {
    text: `${text.slice(0, end)}… (${formatInt(text.length - end)} more characters; --full shows all)`,
    truncated: true,
  };
}

export const inspectCommand: CommandSpec = {
  name: 'inspect',
  summary: 'show one entry: header, tags, age, TTL left, size, usage and a preview of its value',
  usage: 'llm-cache inspect <key | key prefix | hash prefix> [--full] [--max-chars <n>] [--format json]',
  description: [
    'Shows one live entry. The key may be the full key, a prefix of it that matches one entry, or',
    'the start of its hash (the HASH column of ls). The value is decoded and previewed: plain JSON',
    'as JSON, binary as hex, Map / Set / Date / typed arrays as Node prints them; the preview is',
    'cut at --max-chars unless --full.',
  ].join('\n'),
  options: {
    full: { type: 'boolean', description: 'print the whole value' },
    'max-chars': {
      type: 'string',
      value: 'n',
      description: `cut the value preview after n characters (default: ${DEFAULT_MAX_CHARS})`,
    },
  },
  examples: [
    'llm-cache inspect responses/default:intro_page:Xk2v9QeP1aBc',
    'llm-cache inspect Xk2v9QeP1aBc --full',
    'llm-cache inspect Xk2v9QeP1aBc --format json',
  ],
  args: { min: 1, max: 1 },
  async run(context: Context) {
    const full = context.flag('full');
    const maxRaw = context.string('max-chars');
    const max = maxRaw === undefined ? DEFAULT_MAX_CHARS : Number(maxRaw);
    if (!Number.isInteger(max) || max <= 0) {
      throw usageError(`--max-chars must be a positive whole number, got "${maxRaw}"`);
    }
    const connection = await context.connect();
    try {
      const key = await resolveKey(connection.store, context.positionals[0]!);
      const [stored] = await readEntries(connection.store, [key]);
      if (!stored) throw new CliError(`"${key}" expired or was removed just now`);
      const info = describeEntry(key, stored, context.now());
      let value: unknown;
      let usage: Usage | undefined;
      let decodeError: string | undefined;
      try {
        const decoded = decodeEntry(stored.value).value;
        // The cache stores `{ v: value, u?: usage }`; other writers may store anything.
        if (info.tier !== undefined && typeof decoded === 'object' && decoded !== null && 'v' in decoded) {
          value = (decoded as { v: unknown }).v;
          usage = (decoded as { u?: Usage }).u;
        } else {
          value = decoded;
        }
      } catch (error) {
        decodeError = messageOf(error);
      }
      const costPerHit = usage ? costOf(usage, DEFAULT_PRICES) : undefined;
      const preview =
        decodeError === undefined
          ? truncate(previewValue(value, info.codec, full), full ? Number.POSITIVE_INFINITY : max)
          : undefined;
      if (context.format === 'json') {
        await context.json({
          ...info,
          storedTags: stored.tags ?? [],
          usage: usage ?? null,
          costPerHitUsd: costPerHit ?? null,
          preview: preview?.text ?? null,
          truncated:
            (preview?.truncated ?? false) || (!full && value instanceof Uint8Array && value.byteLength > 64),
          decodeError: decodeError ?? null,
        });
        return decodeError === undefined ? 0 : 1;
      }
      const fields: Array<[string, string]> = [['key', key]];
      if (info.tier !== undefined) {
        fields.push(['tier', info.tier], ['namespace', info.namespace!], ['name', info.name!]);
      }
      const payload =
        info.payloadBytes === undefined
          ? ''
          : ` · payload ${formatBytes(info.payloadBytes)} ${info.codec}` +
            `${info.compression === 'none' ? '' : `, ${info.compression}`} · format v${info.formatVersion}`;
      fields.push(['size', `${formatBytes(info.bytes)} stored${payload}`]);
      if (info.createdAt !== undefined) {
        fields.push([
          'created',
          `${new Date(info.createdAt).toISOString()} (${formatDuration(info.ageMs ?? 0)} ago)`,
        ]);
      }
      if (info.expiresAt === null || info.expiresAt === undefined) {
        fields.push(['expires', 'never']);
      } else if (info.stale) {
        const kept =
          info.storeExpiresAt === null ? '' : `, kept for its grace period until ${iso(info.storeExpiresAt)}`;
        fields.push([
          'expires',
          `${iso(info.expiresAt)} (stale for ${formatDuration(-(info.ttlMs ?? 0))}${kept})`,
        ]);
      } else {
        const grace =
          info.storeExpiresAt !== null && info.storeExpiresAt > info.expiresAt
            ? ` · grace until ${iso(info.storeExpiresAt)}`
            : '';
        fields.push(['expires', `${iso(info.expiresAt)} (in ${formatDuration(info.ttlMs ?? 0)})${grace}`]);
      }
      fields.push(['tags', info.tags.length > 0 ? info.tags.join(', ') : '(none)']);
      if (usage) {
        fields.push([
          'usage',
          `${formatInt(usage.inputTokens)} in / ${formatInt(usage.outputTokens)} out tokens` +
            `${usage.model ? ` · ${usage.model}` : ''} · saves ${formatUsd(costPerHit ?? 0)} per hit`,
        ]);
      }
      if (info.unreadable) fields.push(['header', `unreadable: ${info.unreadable}`]);
      if (decodeError) fields.push(['value', `cannot be decoded: ${decodeError}`]);
      await context.print(renderFields(fields));
      if (preview) await context.print(`value\n${preview.text}`);
      if (decodeError) context.stderr.write(`llm-cache: the value of ${key} cannot be decoded\n`);
      return decodeError === undefined ? 0 : 1;
    } finally {
      await connection.close();
    }
  },
};

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
