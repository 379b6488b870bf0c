import type {
  LanguageModelV4CallOptions,
  LanguageModelV4Content,
  LanguageModelV4FinishReason,
  LanguageModelV4GenerateResult,
  LanguageModelV4StreamPart,
} from '@ai-sdk/provider';
import { violatesSchema } from './json-schema.ts';

/** A complete response offered for storage; `shouldCache` decides whether it is kept. */
export type CacheCandidate =
  | {
      type: 'generate';
      /** The call options the model saw (our providerOptions entry removed). */
      params: LanguageModelV4CallOptions;
      finishReason: LanguageModelV4FinishReason;
      /** All text parts joined (or `structuredOutputText` when the model set it). */
      text: string;
      result: LanguageModelV4GenerateResult;
    }
  | {
      type: 'stream';
      params: LanguageModelV4CallOptions;
      finishReason: LanguageModelV4FinishReason;
      /** All text deltas joined. */
      text: string;
      /** Every part in order, as the model streamed them. */
      parts: readonly LanguageModelV4StreamPart[];
    };

/** Finish reasons whose responses are not stored by default: failed, filtered, cut off or incomplete. */
export const UNCACHEABLE_FINISH_REASONS: ReadonlySet<LanguageModelV4FinishReason['unified']> = new Set([
  'error',
  'content-filter',
  'length',
  'interrupted',
]);

const SUBSTANTIVE_PARTS = new Set([
  'tool-call',
  'tool-result',
  'tool-approval-request',
  'file',
  'reasoning-file',
  'source',
  'custom',
]);

function contentIsEmpty(content: readonly LanguageModelV4Content[]): boolean {
  return !content.some((part) =>
    part.type === 'text' || part.type === 'reasoning'
      ? part.text.length > 0
      : SUBSTANTIVE_PARTS.has(part.type),
  );
}

function streamIsEmpty(parts: readonly LanguageModelV4StreamPart[]): boolean {
  return !parts.some((part) =>
    part.type === 'text-delta' || part.type === 'reasoning-delta'
      ? part.delta.length > 0
      : SUBSTANTIVE_PARTS.has(part.type),
  );
}

function toolCalls(candidate: CacheCandidate): { toolName: string }[] {
  const parts: readonly ({ type: string } | { type: 'tool-call'; toolName: string })[] =
    candidate.type === 'generate' ? candidate.result.content : candidate.parts;
  return parts.filter((part): part is { type: 'tool-call'; toolName: string } => part.type === 'tool-call');
}

/**
 * Whether the answer breaks the call's `toolChoice` the way `ai` 7 checks it after every step
 * (`AI_ToolChoiceViolationError`): `'none'` with a tool call, `'required'` without one, or a named
 * tool that was not called. Like the SDK, a step that finished `interrupted` is not held to a
 * `'required'` or named choice.
 */
function violatesToolChoice(candidate: CacheCandidate): boolean {
  const choice = candidate.params.toolChoice;
  if (choice === undefined || choice.type === 'auto') return false;
  const calls = toolCalls(candidate);
  if (choice.type === 'none') return calls.length > 0;
  if (candidate.finishReason.unified === 'interrupted') return false;
  return !calls.some((call) => choice.type === 'required' || call.toolName === choice.toolName);
}

const UNPARSEABLE = Symbol('unparseable');

/**
 * Parses as the SDK does (`secureJsonParse`): JSON that would set a prototype (a `__proto__` key,
 * or `constructor.prototype`) is refused like a syntax error.
 */
function parseJson(text: string): unknown {
  let forbidden = false;
  let value: unknown;
  try {
    value = JSON.parse(text, (key, item: unknown) => {
      if (
        key === '__proto__' ||
        (key === 'constructor' &&
          typeof item === 'object' &&
          item !== null &&
          Object.hasOwn(item, 'prototype'))
      )
        forbidden = true;
      return item;
    });
  } catch {
    return UNPARSEABLE;
  }
  return forbidden ? UNPARSEABLE : value;
}

/**
 * The default admission rule: a response is stored unless it finished with `error`,
 * `content-filter`, `length` or `interrupted`, produced nothing (no text, reasoning, tool call,
 * file or source), breaks the call's `toolChoice` (`'required'` or a named tool not called,
 * `'none'` with a tool call), or was asked for JSON (`responseFormat: { type: 'json' }`, as
 * `generateObject`, `streamObject` and `Output.object` do) and its text does not parse or
 * certainly violates the requested `responseFormat.schema`: a response the SDK would reject must
 * not be replayed. (JSON in a markdown fence does not parse: below an `extractJsonMiddleware` the
 * cache cannot tell that something above will unwrap it, and without one the SDK rejects it; list
 * such middlewares after `cacheMiddleware`.)
 * Compose with it in your own `shouldCache`:
 * `shouldCache: (c) => defaultShouldCache(c) || c.finishReason.unified === 'length'`.
 */
export function defaultShouldCache(candidate: CacheCandidate): boolean {
  if (UNCACHEABLE_FINISH_REASONS.has(candidate.finishReason.unified)) return false;
  const empty =
    candidate.type === 'generate' ? contentIsEmpty(candidate.result.content) : streamIsEmpty(candidate.parts);
  if (empty) return false;
  if (violatesToolChoice(candidate)) return false;
  const format = candidate.params.responseFormat;
  // A step that calls tools is not the structured answer: the SDK parses the last step only.
  if (format?.type === 'json' && toolCalls(candidate).length === 0) {
    const value = parseJson(candidate.text);
    if (value === UNPARSEABLE) return false;
    if (format.schema !== undefined && violatesSchema(value, format.schema)) return false;
  }
  return true;
}

export function generateCandidate(
  params: LanguageModelV4CallOptions,
  result: LanguageModelV4GenerateResult,
): CacheCandidate {
  const text =
    result.structuredOutputText ??
    result.content.map((part) => (part.type === 'text' ? part.text : '')).join('');
  return { type: 'generate', params, finishReason: result.finishReason, text, result };
}

export function streamCandidate(
  params: LanguageModelV4CallOptions,
  parts: readonly LanguageModelV4StreamPart[],
  finishReason: LanguageModelV4FinishReason,
): CacheCandidate {
  let text = '';
  for (const part of parts) if (part.type === 'text-delta') text += part.delta;
  return { type: 'stream', params, finishReason, text, parts };
}
