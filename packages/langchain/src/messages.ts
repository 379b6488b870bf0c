import type { BaseMessage } from '@langchain/core/messages';
import {
  AIMessage,
  AIMessageChunk,
  ChatMessage,
  ChatMessageChunk,
  FunctionMessage,
  FunctionMessageChunk,
  HumanMessage,
  HumanMessageChunk,
  RemoveMessage,
  SystemMessage,
  SystemMessageChunk,
  ToolMessage,
  ToolMessageChunk,
} from '@langchain/core/messages';
import type { ChatGeneration, ChatResult, Generation } from '@langchain/core/outputs';
import { ChatGenerationChunk } from '@langchain/core/outputs';
import type { Usage } from '@x/cache-core';
import { storable } from './normalize.ts';

type AnyRecord = Record<string, unknown>;

/** A message as the cache stores it: its type, whether it was a chunk, and its fields as plain data. */
export interface CachedMessage {
  type: string;
  chunk?: true;
  fields: AnyRecord;
}

/** One generation (or one streamed chunk) as the cache stores it. */
export interface CachedGeneration {
  text: string;
  info?: AnyRecord;
  message?: CachedMessage;
}

/**
 * A chat model response as the cache stores it. `streamed` records hold the chunks in the order
 * the provider sent them, so a hit can replay the stream; the others hold complete generations.
 */
export interface CachedChatRecord {
  streamed?: true;
  generations: CachedGeneration[];
  llmOutput?: AnyRecord;
}

const MESSAGE_FIELDS = [
  'content',
  'id',
  'name',
  'additional_kwargs',
  'response_metadata',
  'tool_calls',
  'invalid_tool_calls',
  'tool_call_chunks',
  'usage_metadata',
  'tool_call_id',
  'status',
  'artifact',
  'role',
] as const;

type MessageClass = new (fields: any) => BaseMessage;

const CLASSES: Record<string, [MessageClass, MessageClass]> = {
  ai: [AIMessage, AIMessageChunk],
  human: [HumanMessage, HumanMessageChunk],
  system: [SystemMessage, SystemMessageChunk],
  generic: [ChatMessage, ChatMessageChunk],
  function: [FunctionMessage, FunctionMessageChunk],
  tool: [ToolMessage, ToolMessageChunk],
  // LangGraph updates delete messages with these.
  remove: [RemoveMessage, RemoveMessage],
};

function isChunk(message: BaseMessage): boolean {
  return typeof (message as { concat?: unknown }).concat === 'function';
}

export function storeMessage(message: BaseMessage): CachedMessage {
  const source = message as unknown as AnyRecord;
  const fields: AnyRecord = {};
  for (const field of MESSAGE_FIELDS) {
    const value = source[field];
    if (value === undefined) continue;
    // Chunks collapse tool_call_chunks into tool_calls; storing the chunks is enough to rebuild both.
    if ((field === 'tool_calls' || field === 'invalid_tool_calls') && hasToolCallChunks(source)) continue;
    // LangChain stamps `run-<runId>` on a response without a provider id: that run's id, not the
    // answer's. Replayed, it would give every hit the first run's id (and LangGraph's message
    // reducer merges messages by id).
    if (field === 'id' && typeof value === 'string' && value.startsWith('run-')) continue;
    fields[field] = storable(value);
  }
  const type = typeof message.getType === 'function' ? message.getType() : message._getType();
  return isChunk(message) ? { type, chunk: true, fields } : { type, fields };
}

function hasToolCallChunks(source: AnyRecord): boolean {
  return Array.isArray(source.tool_call_chunks) && source.tool_call_chunks.length > 0;
}

export interface RestoreOptions {
  /** Rebuild as a chunk class (`AIMessageChunk`) whatever the stored message was. @default false */
  asChunk?: boolean;
  /**
   * Report zero token usage, as LangChain does for a response it did not pay for: `usage_metadata`
   * and every usage record in `response_metadata` and `generationInfo` keep their shape with
   * their counts at zero. @default false
   */
  zeroUsage?: boolean;
}

/** Fields that hold token counts: `usage`, `tokenUsage`, `usageMetadata`, `estimatedTokenUsage` … */
const USAGE_KEYS = /usage/i;

/** The same data with every number at zero: a hit keeps the fields callers read, not the counts. */
function zeroCounts(value: unknown): unknown {
  if (typeof value === 'number') return 0;
  if (Array.isArray(value)) return value.map(zeroCounts);
  if (typeof value === 'object' && value !== null && !ArrayBuffer.isView(value) && !(value instanceof Date)) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, zeroCounts(item)]));
  }
  return value;
}

/** A copy of provider metadata (`response_metadata`, `generationInfo`, `llmOutput`) with its usage records zeroed. */
function withZeroUsage(metadata: AnyRecord): AnyRecord {
  return Object.fromEntries(
    Object.entries(metadata).map(([key, value]) => [key, USAGE_KEYS.test(key) ? zeroCounts(value) : value]),
  );
}

export function restoreMessage(stored: CachedMessage, options: RestoreOptions = {}): BaseMessage {
  const classes = CLASSES[stored.type];
  if (!classes) throw new TypeError(`cannot restore a cached message of type "${stored.type}"`);
  const chunk = options.asChunk || stored.chunk === true;
  const fields: AnyRecord = { ...stored.fields };
  if (chunk && stored.type === 'ai' && !stored.chunk && Array.isArray(fields.tool_calls)) {
    // What LangChain's convertToChunk does: a chunk carries its tool calls as tool_call_chunks too.
    fields.tool_call_chunks = (fields.tool_calls as AnyRecord[]).map((call) => ({
      type: 'tool_call_chunk',
      id: call.id,
      name: call.name,
      args: JSON.stringify(call.args ?? {}),
      index: undefined,
    }));
  }
  if (options.zeroUsage) {
    if (fields.usage_metadata !== undefined) {
      fields.usage_metadata = { input_tokens: 0, output_tokens: 0, total_tokens: 0 };
    }
    // Providers repeat their raw counts here (ChatOpenAI and ChatAnthropic `usage`, Google
    // `usageMetadata`); left as stored, code reading them would count tokens a hit never spent.
    if (fields.response_metadata && typeof fields.response_metadata === 'object') {
      fields.response_metadata = withZeroUsage(fields.response_metadata as AnyRecord);
    }
  }
  if (fields.content === undefined) fields.content = '';
  const Class = chunk ? classes[1] : classes[0];
  const message = new Class(fields);
  if (chunk && stored.type === 'ai' && !stored.chunk && Array.isArray(fields.invalid_tool_calls)) {
    // The chunk class derives its calls from tool_call_chunks, which hold only the valid ones: the
    // invalid calls the provider sent (unparseable arguments, with their error) are kept as stored.
    (message as AIMessageChunk).invalid_tool_calls =
      fields.invalid_tool_calls as AIMessageChunk['invalid_tool_calls'];
  }
  return message;
}

export function storeGeneration(generation: Generation | ChatGeneration): CachedGeneration {
  const out: CachedGeneration = { text: generation.text ?? '' };
  if (generation.generationInfo && Object.keys(generation.generationInfo).length > 0) {
    out.info = storable(generation.generationInfo) as AnyRecord;
  }
  const message = (generation as Partial<ChatGeneration>).message;
  if (message) out.message = storeMessage(message);
  return out;
}

export function restoreGeneration(
  stored: CachedGeneration,
  options: RestoreOptions = {},
): Generation | ChatGeneration {
  const generation: Generation & { message?: BaseMessage } = { text: stored.text };
  if (stored.info) generation.generationInfo = infoOf(stored, options);
  if (stored.message) generation.message = restoreMessage(stored.message, options);
  return generation;
}

export function restoreChunk(stored: CachedGeneration, options: RestoreOptions = {}): ChatGenerationChunk {
  const message = restoreMessage(stored.message ?? { type: 'ai', fields: { content: stored.text } }, {
    ...options,
    asChunk: true,
  });
  return new ChatGenerationChunk({
    text: stored.text,
    message: message as AIMessageChunk,
    ...(stored.info ? { generationInfo: infoOf(stored, options) } : {}),
  });
}

/** A generation's info as stored; LangChain merges it into `response_metadata`, so usage is zeroed alike. */
function infoOf(stored: CachedGeneration, options: RestoreOptions): AnyRecord {
  return options.zeroUsage ? withZeroUsage(stored.info!) : { ...stored.info };
}

export function recordOfResult(result: ChatResult): CachedChatRecord {
  const record: CachedChatRecord = { generations: result.generations.map(storeGeneration) };
  if (result.llmOutput && Object.keys(result.llmOutput).length > 0) {
    record.llmOutput = storable(result.llmOutput) as AnyRecord;
  }
  return record;
}

/**
 * A ChatResult rebuilt from a record: real message instances, a stream's chunks aggregated into one
 * generation as LangChain aggregates them. A hit passes `zeroUsage`; admission sees the usage as
 * the provider reported it.
 */
export function resultOfRecord(record: CachedChatRecord, options: RestoreOptions = {}): ChatResult {
  if (record.streamed) {
    let aggregated: ChatGenerationChunk | undefined;
    for (const stored of record.generations) {
      const chunk = restoreChunk(stored, options);
      aggregated = aggregated ? aggregated.concat(chunk) : chunk;
    }
    return { generations: aggregated ? [aggregated] : [] };
  }
  const generations = record.generations.map(
    (stored) => restoreGeneration(stored, options) as ChatGeneration,
  );
  if (!record.llmOutput) return { generations };
  return {
    generations,
    // LangChain merges llmOutput (`tokenUsage`) into the message's response_metadata.
    llmOutput: options.zeroUsage ? withZeroUsage(record.llmOutput) : { ...record.llmOutput },
  };
}

function num(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}

/**
 * The usage a cached response stands for, i.e. what a hit saves: the messages' usage_metadata
 * (summed over a stream's chunks), else the provider's `llmOutput.tokenUsage`.
 */
export function usageOfGenerations(
  generations: readonly CachedGeneration[],
  llmOutput: AnyRecord | undefined,
  fallbackModel: string | undefined,
): Usage | undefined {
  let inputTokens = 0;
  let outputTokens = 0;
  let found = false;
  let model: string | undefined;
  for (const generation of generations) {
    const fields = generation.message?.fields;
    const usage = fields?.usage_metadata as AnyRecord | undefined;
    if (usage) {
      found = true;
      inputTokens += num(usage.input_tokens);
      outputTokens += num(usage.output_tokens);
    }
    const metadata = fields?.response_metadata as AnyRecord | undefined;
    const named = metadata?.model_name ?? metadata?.model ?? metadata?.modelId;
    if (typeof named === 'string' && named !== '') model ??= named;
  }
  if (!found) {
    const tokenUsage = (llmOutput?.tokenUsage ?? llmOutput?.estimatedTokenUsage) as AnyRecord | undefined;
    if (!tokenUsage) return undefined;
    inputTokens = num(tokenUsage.promptTokens ?? tokenUsage.prompt_tokens);
    outputTokens = num(tokenUsage.completionTokens ?? tokenUsage.completion_tokens);
    if (inputTokens === 0 && outputTokens === 0) return undefined;
  }
  return { inputTokens, outputTokens, model: model ?? fallbackModel };
}

export function usageOfRecord(
  record: CachedChatRecord,
  fallbackModel: string | undefined,
): Usage | undefined {
  return usageOfGenerations(record.generations, record.llmOutput, fallbackModel);
}

/** The model name among a model's identifying parameters, for pricing the tokens a hit saves. */
export function modelNameOf(params: unknown): string | undefined {
  if (typeof params !== 'object' || params === null) return undefined;
  const record = params as AnyRecord;
  for (const field of ['model', 'model_name', 'modelName', 'modelId', 'model_id', 'deploymentName']) {
    const value = record[field];
    if (typeof value === 'string' && value !== '') return value;
  }
  return undefined;
}
