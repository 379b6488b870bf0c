import type { CachePolicy, Duration, Usage } from '@x/cache-core';
import { CacheError, parseDuration, validateName } from '@x/cache-core';
import type { CommandSpec, Context } from '../command.ts';
import { entries } from '../format.ts';
import { CliError, messageOf, usageError } from '../io.ts';
import { parseJsonLine, readLines, where } from '../jsonl.ts';
import { createProgress } from '../progress.ts';

/** One line of a warm file. */
export interface WarmRecord {
  /** @default --tier, else 'responses' */
  tier?: string;
  /** @default --namespace, else LLM_CACHE_NAMESPACE, else 'default' */
  namespace?: string;
  /** The operation: `chat`, `intro_page`, a tool name. */
  name: string;
  /** What identifies the call; hashed into the key exactly as the application's `{ name, request }`. */
  request?: unknown;
  /** The answer to store (JSON). */
  value: unknown;
  /** `'7d'`, `'12h'` or ms. @default --ttl, else the tier's TTL */
  ttl?: Duration;
  tags?: string[];
  /** What a hit on this entry saves: `{ inputTokens, outputTokens, model? }`. */
  usage?: Usage;
}

const ZERO_TTL =
  "0 keeps an entry for no time, so nothing would be stored — give a duration like '7d', or leave it out for the tier's TTL";

/** A ttl that parses to 0 ms; a malformed one is left for the cache to name. */
function isZero(ttl: Duration): boolean {
  try {
    return parseDuration(ttl, 'ttl') === 0;
  } catch {
    return false;
  }
}

function check(raw: unknown, at: string): WarmRecord {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CliError(
      `${at}: expected an object { name, request, value, tier?, namespace?, ttl?, tags?, usage? }`,
    );
  }
  const record = raw as Record<string, unknown>;
  if (typeof record.name !== 'string') throw new CliError(`${at}: "name" must be a string`);
  if (!('value' in record)) {
    throw new CliError(`${at}: "value" is missing (the answer to store)`);
  }
  for (const field of ['tier', 'namespace'] as const) {
    if (record[field] !== undefined && typeof record[field] !== 'string') {
      throw new CliError(`${at}: "${field}" must be a string`);
    }
  }
  if (record.ttl !== undefined && typeof record.ttl !== 'string' && typeof record.ttl !== 'number') {
    throw new CliError(`${at}: "ttl" must be a duration like "7d" or a number of ms`);
  }
  if (
    record.tags !== undefined &&
    (!Array.isArray(record.tags) || record.tags.some((t) => typeof t !== 'string'))
  ) {
    throw new CliError(`${at}: "tags" must be an array of strings`);
  }
  if (record.usage !== undefined) {
    const usage = record.usage as Record<string, unknown> | null;
    if (
      typeof usage !== 'object' ||
      usage === null ||
      typeof usage.inputTokens !== 'number' ||
      typeof usage.outputTokens !== 'number'
    ) {
      throw new CliError(`${at}: "usage" must be { inputTokens, outputTokens, model? }`);
    }
  }
  return record as unknown as WarmRecord;
}

export const warmCommand: CommandSpec = {
  name: 'warm',
  summary: 'pre-fill the cache from JSONL records { tier?, namespace?, name, request, value, ttl?, tags? }',
  usage: 'llm-cache warm <file | -> [--tier <tier>] [--namespace <ns>] [--ttl <duration>]',
  description: [
    'Stores known answers ahead of time, through the cache API, so they get the same keys as the',
    "application's own calls: each line is",
    '  {"tier":"responses","namespace":"default","name":"intro_page","request":{...},"value":...,',
    '   "ttl":"7d","tags":["math"],"usage":{"inputTokens":150,"outputTokens":900,"model":"gpt-4o-mini"}}',
    'tier, namespace, ttl, tags and usage are optional (--tier, --namespace and --ttl give defaults;',
    "then 'responses', $LLM_CACHE_NAMESPACE or 'default', and the tier's TTL), as the application",
    'using getDefaultCache() reads them. usage is what each hit on the entry saves. A ttl of 0 is',
    'refused: it stores nothing (and would delete what the key holds).',
    'Values are JSON. Stops at the first invalid line, naming it; the lines before it are stored.',
  ].join('\n'),
  options: {
    tier: { type: 'string', value: 'tier', description: 'tier for records without one (default: responses)' },
    namespace: {
      type: 'string',
      value: 'namespace',
      description: 'namespace for records without one (default: $LLM_CACHE_NAMESPACE, else default)',
    },
    ttl: {
      type: 'string',
      value: 'duration',
      description: "TTL for records without one (default: the tier's)",
    },
  },
  examples: [
    'llm-cache warm common-questions.jsonl',
    'generate-answers | llm-cache warm - --tier responses --ttl 30d',
  ],
  args: { min: 1, max: 1 },
  async run(context: Context) {
    const file = context.positionals[0];
    const defaultTier = context.string('tier') ?? 'responses';
    // The namespace the application's getDefaultCache() writes to (core's optionsFromEnv).
    const fromEnv = context.string('namespace') === undefined && !!context.env.LLM_CACHE_NAMESPACE;
    const defaultNamespace = context.string('namespace') ?? (context.env.LLM_CACHE_NAMESPACE || 'default');
    validateName(defaultTier, 'name');
    try {
      validateName(defaultNamespace, 'namespace');
    } catch (error) {
      if (fromEnv) throw usageError(`LLM_CACHE_NAMESPACE: ${messageOf(error)} — fix it or pass --namespace`);
      throw error;
    }
    const ttlFlag = context.string('ttl');
    // A flag value is a string: digits alone are milliseconds, as a number ttl is in a record.
    const defaultTtl: Duration | undefined =
      ttlFlag !== undefined && /^\s*\d+(?:\.\d+)?\s*$/.test(ttlFlag)
        ? Number(ttlFlag)
        : (ttlFlag as Duration);
    if (defaultTtl !== undefined) {
      let ms: number | undefined;
      try {
        ms = parseDuration(defaultTtl, 'ttl');
      } catch (error) {
        throw usageError(`--ttl: ${messageOf(error)}`);
      }
      if (ms === 0) throw usageError(`--ttl: ${ZERO_TTL}`);
    }
    const connection = await context.connect({ create: true });
    let stored = 0;
    try {
      const cache = connection.cache();
      const progress = createProgress(context.stderr, context.progress, 'warm', ['entry', 'entries']);
      for await (const line of readLines(file, context.stdin)) {
        const at = where(file, line.number);
        const record = check(parseJsonLine(line, file), at);
        const policy: CachePolicy = {};
        const ttl = record.ttl ?? defaultTtl;
        if (ttl !== undefined) policy.ttl = ttl;
        if (record.ttl !== undefined && isZero(record.ttl)) throw new CliError(`${at}: "ttl": ${ZERO_TTL}`);
        if (record.tags) policy.tags = record.tags;
        if (record.usage) policy.usage = record.usage;
        try {
          const view = cache
            .tier(record.tier ?? defaultTier)
            .withNamespace(record.namespace ?? defaultNamespace);
          await view.set({ name: record.name, request: record.request }, record.value, policy);
        } catch (error) {
          if (CacheError.isInstance(error)) throw new CliError(`${at}: ${messageOf(error)}`);
          throw error;
        }
        connection.assertNoErrors();
        stored++;
        progress.tick(1, line.fraction);
      }
      progress.done();
    } catch (error) {
      if (error instanceof CliError && stored > 0) {
        throw new CliError(`${error.message} (stored ${entries(stored)} before it)`);
      }
      throw error;
    } finally {
      await connection.close();
    }
    if (context.format === 'json') await context.json({ stored });
    else await context.say(`Warmed ${entries(stored)}.`);
    return 0;
  },
};
