/**
 * The LOCAL STAND-IN behind every demo model: a deterministic function of the request with a
 * realistic latency, so `pnpm demo` runs offline and without an API key. The AI SDK and LangChain
 * model classes in this folder translate their framework's request into `Turn`s and tools, ask
 * `reply`, and translate the answer back; they are real implementations of the frameworks' model
 * interfaces, so every cache adapter runs through its real path.
 *
 * It answers like a (very small) model would: text about the topic of the last user message,
 * JSON that follows the requested schema, and tool calls — one tool per step, in the order the
 * tools were given, then a final answer that uses the tool results.
 */

export type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  minItems?: number;
  maxItems?: number;
  description?: string;
  [other: string]: unknown;
};

export interface Turn {
  role: 'system' | 'user' | 'assistant' | 'tool';
  text: string;
  /** For `tool` turns: the tool whose result this is. */
  toolName?: string | undefined;
}

export interface ToolSpec {
  name: string;
  schema: JsonSchema;
}

export interface LocalRequest {
  turns: Turn[];
  tools?: readonly ToolSpec[] | undefined;
  /** Set when the caller asked for JSON (structured output): the schema to follow. */
  json?: JsonSchema | undefined;
}

export type LocalReply =
  | { type: 'text'; text: string }
  | { type: 'tool-call'; name: string; input: Record<string, unknown> };

/** FNV-1a, 32 bits: a stable hash so the same request always gets the same answer and latency. */
export function hashOf(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** Rough token count (about 4 characters a token, as for English with common BPE vocabularies). */
export function tokensOf(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

/**
 * Latency of one call: `DEMO_LATENCY_MS` when set (tests use a few ms), else 150–400 ms chosen by
 * the request's hash — like a hosted small model, and the same on every run.
 */
export function latencyFor(seed: string): number {
  const fixed = process.env.DEMO_LATENCY_MS;
  if (fixed !== undefined && fixed !== '') {
    const ms = Number(fixed);
    if (Number.isFinite(ms) && ms >= 0) return ms;
  }
  return 150 + (hashOf(seed) % 251);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The request as one string: what the latency and the answer's variations are derived from. */
export function seedOf(request: LocalRequest): string {
  return JSON.stringify([request.turns, request.tools?.map((tool) => tool.name), request.json ?? null]);
}

/** The subject of a prompt: what follows its first "about" / "on" / "of" / "explain", up to a preposition. */
export function topicOf(prompt: string): string {
  const phrase = /\b(?:about|on|of|explain|describe)\s+([^.?!,;:()\n]+)/i.exec(prompt)?.[1];
  const topic = phrase
    ?.split(/\s+(?:to|for|in|with|from|as)\s+/i)[0]
    ?.replace(/^(the|a|an)\s+/i, '')
    .trim();
  if (topic) return topic;
  return prompt.trim().split(/\s+/).slice(0, 4).join(' ') || 'this';
}

function pick<T>(items: readonly T[], seed: number): T {
  return items[seed % items.length]!;
}

const OPENERS = [
  'Think of {t} as a story about parts and wholes.',
  'At its heart, {t} is about noticing a pattern and naming it.',
  'You already meet {t} every day, even if you have never called it that.',
  'The easiest way into {t} is with something you can hold in your hands.',
];
const MIDDLES = [
  'Start with a concrete example, draw it, and only then write it down in symbols.',
  'Compare two cases side by side and ask what changed and what stayed the same.',
  'Explain each step out loud; if a step is hard to say, it is the step to practise.',
  'Build the idea from smaller pieces you already trust, one piece at a time.',
];
const CLOSERS = [
  'Check your understanding: can you make up your own example and explain it to a friend?',
  'Try this: find one example of {t} at home and describe it in two sentences.',
  'Quick check: what would change if the numbers were twice as large?',
  'To finish, write one question about {t} that you still find puzzling.',
];

function lesson(topic: string, seed: number): string {
  const fill = (template: string) => template.replaceAll('{t}', topic);
  return [
    fill(pick(OPENERS, seed)),
    fill(pick(MIDDLES, seed >>> 3)),
    `For example, with ${topic} we can look at a simple case first and then a slightly harder one.`,
    fill(pick(CLOSERS, seed >>> 6)),
  ].join(' ');
}

function lastUserText(turns: readonly Turn[]): string {
  for (let i = turns.length - 1; i >= 0; i--) if (turns[i]!.role === 'user') return turns[i]!.text;
  return '';
}

/** Tool results that arrived after the last user message, in order. */
function toolResultsSinceUser(turns: readonly Turn[]): Turn[] {
  const results: Turn[] = [];
  for (let i = turns.length - 1; i >= 0; i--) {
    const turn = turns[i]!;
    if (turn.role === 'user') break;
    if (turn.role === 'tool') results.unshift(turn);
  }
  return results;
}

function typeOf(schema: JsonSchema): string {
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
  if (type) return type;
  if (schema.properties) return 'object';
  if (schema.items) return 'array';
  return 'string';
}

/** A value that follows `schema`, filled from the prompt (its topic, its first number) and the seed. */
export function valueFor(schema: JsonSchema, prompt: string, seed: number, field = 'value'): unknown {
  if (schema.enum && schema.enum.length > 0) return pick(schema.enum, seed);
  const topic = topicOf(prompt);
  switch (typeOf(schema)) {
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const [name, property] of Object.entries(schema.properties ?? {})) {
        out[name] = valueFor(property, prompt, hashOf(`${seed}:${name}`), name);
      }
      return out;
    }
    case 'array': {
      const count = Math.min(Math.max(schema.minItems ?? 3, 1), schema.maxItems ?? 3);
      const items = schema.items ?? { type: 'string' };
      return Array.from({ length: count }, (_, i) =>
        valueFor(items, prompt, hashOf(`${seed}:${i}`), `${singular(field)} ${i + 1}`),
      );
    }
    case 'integer':
    case 'number': {
      const inPrompt = /\b(\d{1,4})\b/.exec(prompt)?.[1];
      const low = schema.minimum ?? 1;
      const high = schema.maximum ?? Math.max(low + 9, 10);
      const value =
        inPrompt !== undefined && /grade|level|age/i.test(field)
          ? Number(inPrompt)
          : low + (seed % (high - low + 1));
      return Math.min(Math.max(value, low), high);
    }
    case 'boolean':
      return seed % 2 === 0;
    default:
      if (/topic|subject|query|keyword|country|city|place/i.test(field)) return topic;
      if (/title|name/i.test(field))
        return `${capitalise(topic)}: ${pick(['a first look', 'step by step', 'in pictures'], seed)}`;
      return `${capitalise(field.replace(/_/g, ' '))} for ${topic}: ${pick(MIDDLES, seed).toLowerCase()}`;
  }
}

function singular(word: string): string {
  return word.endsWith('s') ? word.slice(0, -1) : word;
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The stand-in's answer to a request. Pure: the same request always gets the same answer. */
export function reply(request: LocalRequest): LocalReply {
  const seed = hashOf(seedOf(request));
  const prompt = lastUserText(request.turns);
  if (request.json) {
    return { type: 'text', text: JSON.stringify(valueFor(request.json, prompt, seed, 'answer')) };
  }
  const tools = request.tools ?? [];
  const results = toolResultsSinceUser(request.turns);
  if (tools.length > 0) {
    const called = new Set(results.map((turn) => turn.toolName));
    const next = tools.find((tool) => !called.has(tool.name));
    if (next) {
      return {
        type: 'tool-call',
        name: next.name,
        input: valueFor(next.schema, prompt, hashOf(`${seed}:${next.name}`), 'input') as Record<
          string,
          unknown
        >,
      };
    }
  }
  const topic = topicOf(prompt);
  const text = lesson(topic, seed);
  if (results.length === 0) return { type: 'text', text };
  const facts = results.map((turn) => `${turn.toolName}: ${turn.text}`).join('; ');
  return { type: 'text', text: `Using ${facts} — ${text}` };
}
