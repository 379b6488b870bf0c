import type { BaseMessage } from '@langchain/core/messages';
import { parseJsonMarkdown } from '@langchain/core/output_parsers';
import type { ChatGeneration, Generation } from '@langchain/core/outputs';

type AnyRecord = Record<string, unknown>;

/** A response offered for storage; `shouldCache` decides whether it is kept. */
export interface CacheCandidate {
  /**
   * `generate`: the generations of a model call (`invoke`, `batch`, LangChain's `cache` option);
   * `stream`: a recorded stream, its chunks aggregated into one generation as LangChain does.
   */
  type: 'generate' | 'stream';
  /** What the model answered (a chat model's generations carry their `message`), usage included. */
  generations: readonly (Generation | ChatGeneration)[];
  /**
   * The request's parameters, credentials removed. `withCache`: the call options merged with the
   * model's `invocationParams()` for the call (`response_format`, `tools`, …); `LangChainCache`:
   * the parameters LangChain put in its `llmString` (identifying parameters and call options).
   */
  params: Readonly<AnyRecord>;
  /**
   * The first generation's finish reason as its provider spells it (`'stop'`, `'length'`,
   * `'max_tokens'`, `'MAX_TOKENS'` …), from `response_metadata`, `generationInfo` or
   * `additional_kwargs`.
   */
  finishReason: string | undefined;
  /** The first generation's text. */
  text: string;
  /**
   * The call asked for JSON text: `response_format` of a JSON type, `withStructuredOutput` with
   * `jsonMode` / `jsonSchema`, Google's `responseMimeType: 'application/json'`, Ollama's `format: 'json'`.
   */
  json: boolean;
}

/** The admission option of the model adapters. */
export interface AdmissionOptions {
  /**
   * Decides whether a response is stored. A refused response still answers its call (and the
   * calls that joined it); it is counted as a miss and never written. Compose with the default:
   * `shouldCache: (c) => defaultShouldCache(c) || c.finishReason === 'length'`.
   * @default defaultShouldCache
   */
  shouldCache?: ((candidate: CacheCandidate) => boolean) | undefined;
}

/**
 * Finish reasons (lower case, `-` as `_`) of answers that are not the model's complete answer:
 * cut off (OpenAI `length`, Anthropic / Google `max_tokens`, Mistral `model_length`, OpenAI
 * Responses `max_output_tokens`, Anthropic `pause_turn`), filtered or refused (`content_filter`,
 * Bedrock `content_filtered` / `guardrail_intervened`, Anthropic `refusal`, Google `safety`,
 * `recitation`, `blocklist`, `prohibited_content`, `spii`, `image_safety`, Cohere `error_toxic`)
 * or failed (`error`, Google `malformed_function_call`).
 */
export const UNCACHEABLE_FINISH_REASONS: ReadonlySet<string> = new Set([
  'length',
  'max_tokens',
  'model_length',
  'max_output_tokens',
  'pause_turn',
  'content_filter',
  'content_filtered',
  'guardrail_intervened',
  'refusal',
  'safety',
  'recitation',
  'blocklist',
  'prohibited_content',
  'spii',
  'image_safety',
  'error_toxic',
  'error',
  'malformed_function_call',
]);

/** Where providers put the finish reason: OpenAI, Anthropic, Google, Bedrock, Ollama spellings. */
const FINISH_REASON_FIELDS = ['finish_reason', 'stop_reason', 'finishReason', 'stopReason', 'done_reason'];

function isRecord(value: unknown): value is AnyRecord {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function messageOf(generation: Generation | ChatGeneration): BaseMessage | undefined {
  return (generation as Partial<ChatGeneration>).message;
}

function reasonsIn(metadata: unknown): string[] {
  if (!isRecord(metadata)) return [];
  const reasons: string[] = [];
  for (const field of FINISH_REASON_FIELDS) {
    const value = metadata[field];
    if (typeof value === 'string' && value !== '') reasons.push(value);
  }
  // OpenAI's Responses API says why an answer is incomplete instead.
  const incomplete = metadata.incomplete_details;
  if (isRecord(incomplete) && typeof incomplete.reason === 'string') reasons.push(incomplete.reason);
  return reasons;
}

/**
 * A generation's finish reasons. LangChain chat models report them in the message's
 * `response_metadata`, in `generationInfo` (ChatOpenAI, before LangChain merges it into
 * `response_metadata` after `_generate` returns) or in `additional_kwargs`: a streamed ChatAnthropic
 * answer carries its `stop_reason` (from `message_delta`) only there, in the chunk and in the
 * message LangChain aggregates from the chunks. All are kept, since merged metadata can hold more
 * than one spelling.
 */
function finishReasonsOf(generation: Generation | ChatGeneration): string[] {
  const message = messageOf(generation);
  return [message?.response_metadata, generation.generationInfo, message?.additional_kwargs].flatMap(
    reasonsIn,
  );
}

function hasToolCalls(message: BaseMessage): boolean {
  const fields = message as unknown as AnyRecord;
  const kwargs = message.additional_kwargs ?? {};
  return (
    ['tool_calls', 'invalid_tool_calls', 'tool_call_chunks'].some(
      (field) => Array.isArray(fields[field]) && (fields[field] as unknown[]).length > 0,
    ) ||
    (Array.isArray(kwargs.tool_calls) && kwargs.tool_calls.length > 0) ||
    kwargs.function_call !== undefined
  );
}

function hasContent(message: BaseMessage): boolean {
  const { content } = message;
  if (typeof content === 'string') return content.length > 0;
  // Any block counts (image, audio, reasoning, a provider's own) except an empty text block.
  return (
    Array.isArray(content) &&
    content.some((block: unknown) => !(isRecord(block) && block.type === 'text' && !block.text))
  );
}

function textOf(generation: Generation | ChatGeneration): string {
  const message = messageOf(generation);
  return message ? message.text : (generation.text ?? '');
}

/**
 * Whether the text is JSON as LangChain's JSON-mode parsers read it (`JsonOutputParser`,
 * `StandardSchemaOutputParser`): from the first Markdown fence when there is one, prose around it
 * allowed. Admitting only what they parse keeps a structured-output retry from getting an answer
 * its parser already refused, without refusing one it accepted.
 */
function parsesAsJson(text: string): boolean {
  try {
    parseJsonMarkdown(text, JSON.parse);
    return true;
  } catch {
    return false;
  }
}

/** Whether the request parameters ask the model for JSON text (not a tool call). */
function asksForJson(params: Readonly<AnyRecord>): boolean {
  // What withStructuredOutput records for tracing: the most direct statement of the method.
  const structured = params.ls_structured_output_format;
  const method = isRecord(structured) && isRecord(structured.kwargs) ? structured.kwargs.method : undefined;
  if (typeof method === 'string') return /^json_?(?:mode|schema)$/i.test(method);
  const format = params.response_format;
  if (format === 'json') return true;
  if (isRecord(format) && typeof format.type === 'string' && format.type.startsWith('json')) return true;
  const mime = params.responseMimeType ?? params.response_mime_type;
  return mime === 'application/json' || params.format === 'json';
}

export function candidateOf(
  type: CacheCandidate['type'],
  generations: readonly (Generation | ChatGeneration)[],
  params: Readonly<AnyRecord>,
): CacheCandidate {
  const first = generations[0];
  return {
    type,
    generations,
    params,
    finishReason: first && finishReasonsOf(first)[0],
    text: first ? textOf(first) : '',
    json: asksForJson(params),
  };
}

function admits(generation: Generation | ChatGeneration, json: boolean): boolean {
  const reasons = finishReasonsOf(generation);
  if (reasons.some((reason) => UNCACHEABLE_FINISH_REASONS.has(reason.toLowerCase().replace(/-/g, '_')))) {
    return false;
  }
  const message = messageOf(generation);
  const toolCalls = message !== undefined && hasToolCalls(message);
  const empty = message ? !hasContent(message) && !toolCalls : (generation.text ?? '') === '';
  if (empty) return false;
  // A JSON answer that does not parse makes the caller's parser throw: replaying it would fail
  // every retry. A tool call is the answer when the model chose one.
  return !json || toolCalls || parsesAsJson(textOf(generation));
}

/**
 * The default admission rule, as `@x/ai-sdk-cache` applies it: a response is stored unless one of
 * its generations finished for a reason in `UNCACHEABLE_FINISH_REASONS` (cut off, filtered,
 * refused, failed), is empty (no content and no tool call), or the call asked for JSON and its text
 * does not parse. Responses without a finish reason (many fake and local models) are judged on
 * the other two rules.
 */
export function defaultShouldCache(candidate: CacheCandidate): boolean {
  return (
    candidate.generations.length > 0 &&
    candidate.generations.every((generation) => admits(generation, candidate.json))
  );
}
