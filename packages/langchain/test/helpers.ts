import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CallbackManagerForLLMRun } from '@langchain/core/callbacks/manager';
import type { BaseLanguageModelInput } from '@langchain/core/language_models/base';
import type {
  BaseChatModelCallOptions,
  BaseChatModelParams,
  BindToolsInput,
} from '@langchain/core/language_models/chat_models';
import { BaseChatModel } from '@langchain/core/language_models/chat_models';
import { createContentParser } from '@langchain/core/language_models/structured_output';
import type { AIMessageFields, BaseMessage } from '@langchain/core/messages';
import { AIMessage, AIMessageChunk } from '@langchain/core/messages';
import type { ChatResult } from '@langchain/core/outputs';
import { ChatGenerationChunk } from '@langchain/core/outputs';
import type { Runnable } from '@langchain/core/runnables';
import { tool } from '@langchain/core/tools';
import { convertToOpenAITool } from '@langchain/core/utils/function_calling';
import { toJsonSchema } from '@langchain/core/utils/json_schema';
import type { Cache, Clock } from '@x/cache-core';
import { createCache } from '@x/cache-core';
import { afterEach } from 'vitest';
import { z } from 'zod';

export interface ScriptedCallOptions extends BaseChatModelCallOptions {
  tools?: Record<string, unknown>[];
  response_format?: Record<string, unknown>;
}

export type Responder = (messages: BaseMessage[], options: ScriptedCallOptions) => AIMessageFields;

export interface ScriptedChatModelFields extends BaseChatModelParams {
  model?: string;
  apiKey?: string;
  temperature?: number;
  /** Decides the answer; by default a digest of everything the model was sent. */
  respond?: Responder;
  /** Answer invoke() with an AIMessageChunk, as some providers do (LangChain's own structured output expects one). */
  chunkMessages?: boolean;
}

/** Counters shared by a model and the copies it makes of itself. */
export interface CallLog {
  generate: number;
  stream: number;
  /** When set, every call waits for it: lets a test hold calls in flight without sleeping. */
  gate?: Promise<void> | undefined;
  /** When set, a stream waits for what it returns before sending chunk `index`. */
  beforeChunk?: ((index: number) => Promise<void> | undefined) | undefined;
}

/** Digest of the complete request, so a wrong cache hit shows up as a wrong answer. */
export function digestOf(messages: BaseMessage[], options: ScriptedCallOptions): string {
  const seen = messages.map((message) => ({ type: message.getType(), content: message.content }));
  return createHash('sha256')
    .update(JSON.stringify({ seen, tools: options.tools ?? null }))
    .digest('hex')
    .slice(0, 12);
}

/**
 * Stands in for a provider's chat model class (ChatOpenAI, ChatAnthropic …): a real
 * BaseChatModel with an API key declared in lc_secrets and spread into its identifying params
 * (as ChatOpenAI's client config is), tools bound as call options, usage and response metadata
 * on every answer, and a stream of text and tool-call chunks.
 */
export class ScriptedChatModel extends BaseChatModel<ScriptedCallOptions> {
  static override lc_name(): string {
    return 'ScriptedChatModel';
  }

  override lc_serializable = true;
  model: string;
  apiKey: string | undefined;
  temperature: number | undefined;
  respond: Responder | undefined;
  chunkMessages: boolean;
  log: CallLog = { generate: 0, stream: 0 };

  override get lc_secrets(): Record<string, string> {
    return { apiKey: 'SCRIPTED_API_KEY' };
  }

  constructor(fields: ScriptedChatModelFields = {}) {
    super(fields);
    this.model = fields.model ?? 'scripted-1';
    this.apiKey = fields.apiKey;
    this.temperature = fields.temperature;
    this.respond = fields.respond;
    this.chunkMessages = fields.chunkMessages ?? false;
  }

  _llmType(): string {
    return 'scripted';
  }

  override _identifyingParams(): Record<string, unknown> {
    return { model_name: this.model, temperature: this.temperature, apiKey: this.apiKey };
  }

  override invocationParams(options?: this['ParsedCallOptions']): Record<string, unknown> {
    return {
      model: this.model,
      temperature: this.temperature,
      tools: options?.tools,
      tool_choice: options?.tool_choice,
      response_format: options?.response_format,
    };
  }

  override bindTools(
    tools: BindToolsInput[],
    kwargs?: Partial<ScriptedCallOptions>,
  ): Runnable<BaseLanguageModelInput, AIMessageChunk, ScriptedCallOptions> {
    return this.withConfig({
      tools: tools.map((tool) => convertToOpenAITool(tool) as unknown as Record<string, unknown>),
      ...kwargs,
    });
  }

  #answer(messages: BaseMessage[], options: ScriptedCallOptions): AIMessageFields {
    const n = this.log.generate + this.log.stream;
    const fields: AIMessageFields = this.respond
      ? this.respond(messages, options)
      : { content: `answer ${digestOf(messages, options)}` };
    return {
      id: `msg-${n}`,
      additional_kwargs: { provider_extra: { call: n } },
      usage_metadata: { input_tokens: 12, output_tokens: 5, total_tokens: 17 },
      ...fields,
      response_metadata: {
        model_name: this.model,
        finish_reason: (fields.tool_calls?.length ?? 0) > 0 ? 'tool_calls' : 'stop',
        ...fields.response_metadata,
      },
    };
  }

  async _generate(messages: BaseMessage[], options: this['ParsedCallOptions']): Promise<ChatResult> {
    this.log.generate++;
    await this.log.gate;
    const fields = this.#answer(messages, options);
    const message = this.chunkMessages ? new AIMessageChunk(fields) : new AIMessage(fields);
    return {
      generations: [{ text: message.text, message }],
      llmOutput: { tokenUsage: { promptTokens: 12 } },
    };
  }

  override async *_streamResponseChunks(
    messages: BaseMessage[],
    options: this['ParsedCallOptions'],
    runManager?: CallbackManagerForLLMRun,
  ): AsyncGenerator<ChatGenerationChunk> {
    this.log.stream++;
    await this.log.gate;
    const answer = this.#answer(messages, options);
    const text = typeof answer.content === 'string' ? answer.content : '';
    const pieces: AIMessageChunk[] = [];
    for (let i = 0; i < text.length; i += 4)
      pieces.push(new AIMessageChunk({ content: text.slice(i, i + 4), id: answer.id }));
    (answer.tool_calls ?? []).forEach((call, index) => {
      const args = JSON.stringify(call.args);
      const half = Math.floor(args.length / 2);
      pieces.push(
        new AIMessageChunk({
          content: '',
          id: answer.id,
          tool_call_chunks: [
            { type: 'tool_call_chunk', id: call.id, name: call.name, args: args.slice(0, half), index },
          ],
        }),
        new AIMessageChunk({
          content: '',
          tool_call_chunks: [{ type: 'tool_call_chunk', args: args.slice(half), index }],
        }),
      );
    });
    pieces.push(
      new AIMessageChunk({
        content: '',
        usage_metadata: answer.usage_metadata,
        response_metadata: answer.response_metadata ?? {},
      }),
    );
    for (const [index, message] of pieces.entries()) {
      await this.log.beforeChunk?.(index);
      const chunk = new ChatGenerationChunk({
        text: typeof message.content === 'string' ? message.content : '',
        message,
      });
      yield chunk;
      await runManager?.handleLLMNewToken(chunk.text, undefined, undefined, undefined, undefined, { chunk });
    }
  }
}

/** A provider whose withStructuredOutput uses a JSON-schema response format, as ChatOpenAI's does. */
export class ScriptedJsonModel extends ScriptedChatModel {
  static override lc_name(): string {
    return 'ScriptedJsonModel';
  }

  // One loose signature stands in for BaseChatModel's overloads in this test double.
  override withStructuredOutput(schema: any): any {
    const format = { type: 'json_schema', json_schema: { name: 'output', schema: toJsonSchema(schema) } };
    return this.withConfig({ response_format: format }).pipe(createContentParser(schema));
  }
}

/** What one request to the provider carried. */
export interface SentRequest {
  tools: string[];
  response_format: string | undefined;
}

/**
 * Keeps what `bindTools`, `withStructuredOutput` and `withConfig` bind on a new copy of itself, as
 * ChatOpenAI (@langchain/openai 1.x) does: `withConfig` returns a new instance holding them in
 * `defaultOptions`, which `_combineCallOptions` merges in its own `invoke` / `stream`, in
 * `invocationParams` and in `_streamResponseChunks`, but not in `_generate`. Its
 * `withStructuredOutput` is ChatOpenAI's `jsonSchema` method. Copies share `log` and `sent`.
 */
export class OpenAILikeModel extends ScriptedChatModel {
  static override lc_name(): string {
    return 'OpenAILikeModel';
  }

  defaultOptions: Partial<ScriptedCallOptions> = {};
  /** Every request the provider received, from this model and its copies. */
  sent: SentRequest[] = [];
  readonly #fields: ScriptedChatModelFields;

  constructor(fields: ScriptedChatModelFields = {}) {
    super(fields);
    this.#fields = fields;
  }

  _combineCallOptions(options?: Partial<ScriptedCallOptions>): Partial<ScriptedCallOptions> {
    return { ...this.defaultOptions, ...(options ?? {}) };
  }

  override withConfig(config: Partial<ScriptedCallOptions>): any {
    const copy = new OpenAILikeModel(this.#fields);
    copy.log = this.log;
    copy.sent = this.sent;
    copy.defaultOptions = { ...this.defaultOptions, ...config };
    return copy;
  }

  override invoke(input: BaseLanguageModelInput, options?: Partial<ScriptedCallOptions>) {
    return super.invoke(input, this._combineCallOptions(options));
  }

  override stream(input: BaseLanguageModelInput, options?: Partial<ScriptedCallOptions>) {
    return super.stream(input, this._combineCallOptions(options));
  }

  override invocationParams(options?: this['ParsedCallOptions']): Record<string, unknown> {
    return super.invocationParams(this._combineCallOptions(options) as this['ParsedCallOptions']);
  }

  #send(options: Partial<ScriptedCallOptions>): void {
    const tools = (options.tools ?? []).map((tool) => (tool as { function: { name: string } }).function.name);
    this.sent.push({ tools, response_format: options.response_format?.type as string | undefined });
  }

  override async _generate(messages: BaseMessage[], options: this['ParsedCallOptions']): Promise<ChatResult> {
    this.#send(options);
    return super._generate(messages, options);
  }

  override async *_streamResponseChunks(
    messages: BaseMessage[],
    options: this['ParsedCallOptions'],
    runManager?: CallbackManagerForLLMRun,
  ): AsyncGenerator<ChatGenerationChunk> {
    const combined = this._combineCallOptions(options) as this['ParsedCallOptions'];
    this.#send(combined);
    yield* super._streamResponseChunks(messages, combined, runManager);
  }

  override withStructuredOutput(schema: any): any {
    const response_format = {
      type: 'json_schema',
      json_schema: { name: 'extract', schema, strict: undefined },
    };
    return this.withConfig({
      response_format,
      ls_structured_output_format: { kwargs: { method: 'json_schema' }, schema: toJsonSchema(schema) },
    } as Partial<ScriptedCallOptions>).pipe(createContentParser(schema));
  }
}

export interface AnthropicLikeFields extends BaseChatModelParams {
  /** What `message_delta` reports: `end_turn`, `max_tokens`, `refusal`, `pause_turn` … */
  stopReason?: string;
  /** ChatAnthropic's `streaming`: `_generate` aggregates the stream instead of one request. */
  streaming?: boolean;
}

/**
 * Reproduces ChatAnthropic's message shapes (@langchain/anthropic is not a dependency): its stream
 * is a `message_start` chunk, text chunks and a `message_delta` chunk whose `stop_reason` is only in
 * `additional_kwargs` (`_makeMessageChunkFromAnthropicEvent`); with `streaming: true`, `_generate`
 * concatenates that stream as ChatAnthropic's does. A non-streaming answer has the stop reason in
 * `response_metadata` too (`anthropicResponseToChatMessages`).
 */
export class AnthropicLikeModel extends BaseChatModel {
  static override lc_name(): string {
    return 'AnthropicLikeModel';
  }

  stopReason: string;
  streaming: boolean;
  /** Requests sent to the provider, streamed or not. */
  requests = 0;

  constructor(fields: AnthropicLikeFields = {}) {
    super(fields);
    this.stopReason = fields.stopReason ?? 'end_turn';
    this.streaming = fields.streaming ?? false;
  }

  _llmType(): string {
    return 'anthropic-like';
  }

  override async *_streamResponseChunks(
    _messages: BaseMessage[],
    _options: this['ParsedCallOptions'],
    runManager?: CallbackManagerForLLMRun,
  ): AsyncGenerator<ChatGenerationChunk> {
    this.requests++;
    const provider = { model_provider: 'anthropic' };
    const messages = [
      new AIMessageChunk({
        content: '',
        id: 'msg_01',
        additional_kwargs: { id: 'msg_01', type: 'message', role: 'assistant', model: 'claude-like' },
        response_metadata: { ...provider, usage: {} },
        usage_metadata: { input_tokens: 12, output_tokens: 1, total_tokens: 13 },
      }),
      new AIMessageChunk({ content: 'Once upon ', response_metadata: provider }),
      new AIMessageChunk({ content: 'a time', response_metadata: provider }),
      new AIMessageChunk({
        content: '',
        additional_kwargs: { stop_reason: this.stopReason, stop_sequence: null },
        response_metadata: {},
        usage_metadata: { input_tokens: 0, output_tokens: 4, total_tokens: 4 },
      }),
    ];
    for (const message of messages) {
      const chunk = new ChatGenerationChunk({ text: message.text, message });
      yield chunk;
      await runManager?.handleLLMNewToken(chunk.text, undefined, undefined, undefined, undefined, { chunk });
    }
  }

  async _generate(
    messages: BaseMessage[],
    options: this['ParsedCallOptions'],
    runManager?: CallbackManagerForLLMRun,
  ): Promise<ChatResult> {
    if (this.streaming) {
      let final: ChatGenerationChunk | undefined;
      for await (const chunk of this._streamResponseChunks(messages, options, runManager)) {
        final = final ? final.concat(chunk) : chunk;
      }
      return { generations: [{ text: final!.text, message: final!.message }] };
    }
    this.requests++;
    const kwargs = { id: 'msg_01', model: 'claude-like', stop_reason: this.stopReason, stop_sequence: null };
    const message = new AIMessage({
      content: 'Once upon a time',
      id: 'msg_01',
      additional_kwargs: kwargs,
      response_metadata: { ...kwargs, model_provider: 'anthropic' },
    });
    return { generations: [{ text: message.text, message }] };
  }
}

/** A chat model whose llmKey leaves its model name out, as some providers' do. */
export class NamelessKeyModel extends ScriptedChatModel {
  static override lc_name(): string {
    return 'NamelessKeyModel';
  }

  override _identifyingParams(): Record<string, unknown> {
    return {};
  }
}

export function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

export class ManualClock implements Clock {
  constructor(public time = Date.UTC(2025, 0, 1)) {}
  now(): number {
    return this.time;
  }
  advance(ms: number): void {
    this.time += ms;
  }
}

/** A fresh directory under the OS temp dir, removed by `cleanup`. */
export function tempDir(): { dir: string; file: (name: string) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'x-langchain-cache-'));
  return {
    dir,
    file: (name) => join(dir, name),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Every byte SQLite wrote for a database (main file, WAL and shared memory), as latin1 text. */
export function bytesOnDisk(dir: string): string {
  return readdirSync(dir)
    .map((name) => readFileSync(join(dir, name)).toString('latin1'))
    .join('\n');
}

/**
 * Cleanups run after each test of the calling file (it registers the `afterEach`), and a memory
 * cache that is closed by them.
 */
export function cleanupAfterEach(): { closers: Array<() => unknown>; memoryCache: () => Cache } {
  const closers: Array<() => unknown> = [];
  afterEach(async () => {
    while (closers.length > 0) await closers.pop()!();
  });
  const memoryCache = (): Cache => {
    const cache = createCache();
    closers.push(() => cache.close());
    return cache;
  };
  return { closers, memoryCache };
}

/** Two tools with different schemas, for keying tests. */
export const getWeather = tool(async ({ city }: { city: string }) => `It is sunny in ${city}.`, {
  name: 'get_weather',
  description: 'Current weather for a city',
  schema: z.object({ city: z.string() }),
});

export const getTime = tool(async ({ zone }: { zone: string }) => `12:00 in ${zone}`, {
  name: 'get_time',
  description: 'Current time in a zone',
  schema: z.object({ zone: z.string() }),
});
