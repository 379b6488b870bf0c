/**
 * Prices in USD per million tokens. The defaults are list prices published by the providers
 * (late 2025) for common models; they exist so that "cost saved" is a useful figure out of
 * the box. Pass `pricing` to `createCache` to correct or extend them.
 */
export interface ModelPrice {
  /** USD per million input (prompt) tokens. */
  input: number;
  /** USD per million output (completion) tokens. @default 0 (embedding models) */
  output?: number;
}

export type PriceTable = Readonly<Record<string, ModelPrice>>;

export const DEFAULT_PRICES: PriceTable = {
  'gpt-5': { input: 1.25, output: 10 },
  'gpt-5-mini': { input: 0.25, output: 2 },
  'gpt-5-nano': { input: 0.05, output: 0.4 },
  'gpt-4.1': { input: 2, output: 8 },
  'gpt-4.1-mini': { input: 0.4, output: 1.6 },
  'gpt-4.1-nano': { input: 0.1, output: 0.4 },
  'gpt-4o': { input: 2.5, output: 10 },
  'gpt-4o-mini': { input: 0.15, output: 0.6 },
  o3: { input: 2, output: 8 },
  'o4-mini': { input: 1.1, output: 4.4 },
  'claude-opus-4': { input: 15, output: 75 },
  'claude-sonnet-4': { input: 3, output: 15 },
  'claude-haiku-4': { input: 1, output: 5 },
  'claude-3-7-sonnet': { input: 3, output: 15 },
  'claude-3-5-sonnet': { input: 3, output: 15 },
  'claude-3-5-haiku': { input: 0.8, output: 4 },
  'gemini-2.5-pro': { input: 1.25, output: 10 },
  'gemini-2.5-flash': { input: 0.3, output: 2.5 },
  'text-embedding-3-small': { input: 0.02 },
  'text-embedding-3-large': { input: 0.13 },
};

/** Token usage that a cached value stands for: what a hit saves. */
export interface Usage {
  inputTokens: number;
  outputTokens: number;
  /** Model id used to price the usage, e.g. `gpt-4o-mini` or `openai:gpt-4o-mini`. */
  model?: string | undefined;
  /** Known cost in USD; when absent it is computed from the price table. */
  costUsd?: number | undefined;
}

/**
 * Finds the price for a model id: exact match first, then the longest known id that prefixes
 * it (so `gpt-4o-mini-2024-07-18` prices as `gpt-4o-mini`), ignoring a provider prefix such as
 * `openai:` or `openai/`.
 */
export function findPrice(model: string | undefined, table: PriceTable): ModelPrice | undefined {
  if (!model) return undefined;
  const bare = model.replace(/^[\w.-]+[:/]/, '').toLowerCase();
  const exact = table[model] ?? table[bare];
  if (exact) return exact;
  let best: string | undefined;
  for (const id of Object.keys(table)) {
    if (bare.startsWith(id) && (best === undefined || id.length > best.length)) best = id;
  }
  return best === undefined ? undefined : table[best];
}

/** Per-table memo of model id → price, so a hit does not walk the table. */
const resolved = new WeakMap<PriceTable, Map<string, ModelPrice | null>>();

function cachedPrice(model: string | undefined, table: PriceTable): ModelPrice | undefined {
  if (!model) return undefined;
  let memo = resolved.get(table);
  if (!memo) {
    memo = new Map();
    resolved.set(table, memo);
  }
  let price = memo.get(model);
  if (price === undefined) {
    price = findPrice(model, table) ?? null;
    if (memo.size < 10_000) memo.set(model, price);
  }
  return price ?? undefined;
}

export function costOf(usage: Usage, table: PriceTable): number {
  // Usage comes from providers and user callbacks: a missing or non-numeric count is no cost,
  // never a NaN that would poison the totals (and every later flush of them).
  if (usage.costUsd !== undefined) return Number.isFinite(usage.costUsd) ? usage.costUsd : 0;
  const price = cachedPrice(usage.model, table);
  if (!price) return 0;
  const cost =
    (finite(usage.inputTokens) * price.input + finite(usage.outputTokens) * (price.output ?? 0)) / 1_000_000;
  return Number.isFinite(cost) ? cost : 0;
}

function finite(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}
