/**
 * The benchmark workload: deterministic ~2 KB chat requests and ~2 KB AI-SDK-like responses,
 * generated from an index so that the parent process, child processes and every subject see
 * exactly the same data without keeping 100k objects alive.
 */

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ChatRequest {
  model: string;
  temperature: number;
  messages: ChatMessage[];
}

export interface ChatResponse {
  text: string;
  finishReason: string;
  usage: { inputTokens: number; outputTokens: number; totalTokens: number; cachedInputTokens: number };
  response: { id: string; modelId: string; timestamp: string; headers: Record<string, string> };
  providerMetadata: { openai: Record<string, number> };
  warnings: string[];
}

/** Distinct prompts the hit loops cycle through. */
export const DISTINCT_PROMPTS = 1000;

/** Entries in the SQLite files (floor and ours). */
export const SQLITE_ENTRIES = 100_000;

/** Name the requests are cached under (`{ name, request }` keys). */
export const KEY_NAME = 'chat';

const WORDS = (
  'the a cache key value model prompt token request response latency stream agent tool call ' +
  'user system assistant function result error retry budget cost usage context window summary ' +
  'document section paragraph table figure chart report data query index shard replica node ' +
  'service client server queue worker batch job schedule deploy release version branch commit ' +
  'review test suite fixture mock spec build bundle module package import export type interface ' +
  'class method field record schema migration column row page file path folder archive backup ' +
  'please explain why how what when where which could would should must may might also then ' +
  'because therefore however although while until unless since before after during between'
).split(' ');

/** mulberry32: a tiny deterministic PRNG. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Sentence-like ASCII text of exactly `length` characters. */
export function text(length: number, seed: number): string {
  const random = prng(seed);
  let out = '';
  let sentence = 0;
  while (out.length < length) {
    const word = WORDS[Math.floor(random() * WORDS.length)]!;
    out += sentence === 0 ? word[0]!.toUpperCase() + word.slice(1) : word;
    sentence++;
    if (sentence > 8 && random() < 0.15) {
      out += '. ';
      sentence = 0;
    } else {
      out += ' ';
    }
  }
  return out.slice(0, length);
}

/** Request `i`: four messages, ~2 KB of JSON in total, distinct for every `i`. */
export function makeRequest(i: number): ChatRequest {
  return {
    model: 'gpt-4o-mini',
    temperature: 0,
    messages: [
      {
        role: 'system',
        content: 'You are a support assistant for ticket queue ' + (i % 17) + '. ' + text(380, 1),
      },
      { role: 'user', content: 'Ticket #' + i + ': ' + text(640, i * 4 + 1) },
      { role: 'assistant', content: text(520, i * 4 + 2) },
      { role: 'user', content: 'Follow-up on #' + i + ': ' + text(300, i * 4 + 3) },
    ],
  };
}

/** Response `i`: an AI-SDK-like `generateText` result of ~2 KB of JSON. */
export function makeResponse(i: number): ChatResponse {
  const id = 'chatcmpl-' + (i * 2654435761).toString(36).padStart(12, '0') + i.toString(36);
  return {
    text: 'Regarding ticket #' + i + ': ' + text(1385, i * 7 + 5),
    finishReason: 'stop',
    usage: {
      inputTokens: 480 + (i % 50),
      outputTokens: 290 + (i % 40),
      totalTokens: 770 + (i % 90),
      cachedInputTokens: 0,
    },
    response: {
      id,
      modelId: 'gpt-4o-mini-2024-07-18',
      timestamp: new Date(Date.UTC(2026, 10, 22, 12, 0, 0) + i * 1000).toISOString(),
      headers: {
        'content-type': 'application/json',
        'openai-organization': 'org-benchmark',
        'openai-processing-ms': String(300 + (i % 400)),
        'openai-version': '2020-10-01',
        'x-ratelimit-remaining-requests': String(9999 - (i % 1000)),
        'x-ratelimit-remaining-tokens': String(199_000 - (i % 5000)),
        'x-request-id': 'req_' + id.slice(9),
      },
    },
    providerMetadata: {
      openai: {
        reasoningTokens: 0,
        acceptedPredictionTokens: 0,
        rejectedPredictionTokens: 0,
        cachedPromptTokens: 0,
      },
    },
    warnings: [],
  };
}

/**
 * A single-message request whose prompt is `chars` UTF-16 units long: ASCII text after a short
 * head. With `wide`, the head holds an em dash, so V8 stores the whole string two bytes per
 * character (as any prompt with an emoji, a curly quote or CJK text) and UTF-8 encoding it costs more.
 */
export function bigRequest(chars: number, seed: number, wide: boolean): ChatRequest {
  const head = wide ? 'Summary — of this repository dump:\n' : 'Summary: of this repository dump:\n';
  return {
    model: 'gpt-4o-mini',
    temperature: 0,
    messages: [{ role: 'user', content: head + text(chars - head.length, seed) }],
  };
}
