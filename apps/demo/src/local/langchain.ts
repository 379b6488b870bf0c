/**
 * LOCAL STAND-INS for a LangChain provider: a real `BaseChatModel` subclass (invoke, stream, tool
 * calling through `bindTools`) and a real `Embeddings` subclass, answered by the deterministic
 * `brain`. `ChatOpenAI` / `ChatAnthropic` / `OpenAIEmbeddings` take their place when an API key is
 * set (see ../providers.ts).
 */
import type { CallbackManagerForLLMRun } from '@langchain/core/callbacks/manager';
import { Embeddings } from '@langchain/core/embeddings';
import type { BaseLanguageModelInput } from '@langchain/core/language_models/base';
import type {
  BaseChatModelCallOptions,
  BaseChatModelParams,
  BindToolsInput,
} from '@langchain/core/language_models/chat_models';
import { BaseChatModel } from '@langchain/core/language_models/chat_models';
import type { AIMessageFields, BaseMessage, UsageMetadata } from '@langchain/core/messages';
import { AIMessage, AIMessageChunk } from '@langchain/core/messages';
import type { ChatResult } from '@langchain/core/outputs';
import { ChatGenerationChunk } from '@langchain/core/outputs';
import type { Runnable } from '@langchain/core/runnables';
import { convertToOpenAITool } from '@langchain/core/utils/function_calling';
import type { JsonSchema, LocalRequest, ToolSpec, Turn } from './brain.ts';
import { hashOf, latencyFor, reply, seedOf, sleep, tokensOf } from './brain.ts';
import { LOCAL_CHAT_MODEL, LOCAL_EMBEDDING_MODEL, type ModelCallCounter } from './names.ts';
import { vectorOf } from './vectors.ts';

interface OpenAIToolDefinition {
  type?: string;
  function?: { name?: string; parameters?: unknown };
}

export interface LocalChatCallOptions extends BaseChatModelCallOptions {
  /** Tools in OpenAI's format, as `bindTools` binds them (and as ChatOpenAI takes them). */
  tools?: OpenAIToolDefinition[];
}

export interface LocalChatModelFields extends BaseChatModelParams {
  /** Counts the calls that reached the model. */
  counter: ModelCallCounter;
}

function textOf(message: BaseMessage): string {
  const content = message.content;
  if (typeof content === 'string') return content;
  return content
    .map((block) => ('text' in block && typeof block.text === 'string' ? block.text : ''))
    .join('');
}

function turnsOf(messages: BaseMessage[]): Turn[] {
  return messages.map((message): Turn => {
    const type = message.getType();
    if (type === 'system') return { role: 'system', text: textOf(message) };
    if (type === 'ai') {
      const calls = (message as AIMessage).tool_calls ?? [];
      return {
        role: 'assistant',
        text: textOf(message) + calls.map((call) => `${call.name}(${JSON.stringify(call.args)})`).join(''),
      };
    }
    if (type === 'tool') return { role: 'tool', toolName: message.name, text: textOf(message) };
    return { role: 'user', text: textOf(message) };
  });
}

function toolsOf(options: LocalChatCallOptions): ToolSpec[] {
  const out: ToolSpec[] = [];
  for (const tool of options.tools ?? []) {
    const name = tool.function?.name;
    if (name) out.push({ name, schema: (tool.function?.parameters ?? { type: 'object' }) as JsonSchema });
  }
  return out;
}

/**
 * A deterministic local chat model. `_identifyingParams` names the model, so LangChain's
 * `llmString` (the `cache` option's key) and the `withCache` wrapper's key both carry it, and the
 * usage each answer reports is priced under that name.
 */
export class LocalChatModel extends BaseChatModel<LocalChatCallOptions> {
  static override lc_name(): string {
    return 'LocalChatModel';
  }

  model = LOCAL_CHAT_MODEL;
  readonly counter: ModelCallCounter;

  constructor({ counter, ...fields }: LocalChatModelFields) {
    // The counter stays out of the constructor arguments LangChain records (`lc_kwargs`): the
    // wrapper keys on those, and a changing count would make every call a new request.
    super(fields);
    this.counter = counter;
  }

  _llmType(): string {
    return 'local-stand-in';
  }

  override _identifyingParams(): Record<string, unknown> {
    return { model_name: this.model };
  }

  override invocationParams(options?: this['ParsedCallOptions']): Record<string, unknown> {
    return { model: this.model, tools: options?.tools };
  }

  override bindTools(
    tools: BindToolsInput[],
    kwargs?: Partial<LocalChatCallOptions>,
  ): Runnable<BaseLanguageModelInput, AIMessageChunk, LocalChatCallOptions> {
    return this.withConfig({
      tools: tools.map((tool) => convertToOpenAITool(tool) as OpenAIToolDefinition),
      ...kwargs,
    });
  }

  #answer(messages: BaseMessage[], options: LocalChatCallOptions): { fields: AIMessageFields; seed: string } {
    const request: LocalRequest = { turns: turnsOf(messages), tools: toolsOf(options) };
    const seed = seedOf(request);
    const out = reply(request);
    const id = `local-${hashOf(seed).toString(16)}`;
    const outputText = out.type === 'text' ? out.text : JSON.stringify(out.input);
    const usage: UsageMetadata = {
      input_tokens: tokensOf(seed),
      output_tokens: tokensOf(outputText),
      total_tokens: tokensOf(seed) + tokensOf(outputText),
    };
    const response_metadata = {
      model_name: this.model,
      finish_reason: out.type === 'tool-call' ? 'tool_calls' : 'stop',
    };
    if (out.type === 'tool-call') {
      return {
        seed,
        fields: {
          id,
          content: '',
          tool_calls: [
            {
              id: `call-${hashOf(seed + out.name).toString(16)}`,
              name: out.name,
              args: out.input,
              type: 'tool_call',
            },
          ],
          usage_metadata: usage,
          response_metadata,
        },
      };
    }
    return { seed, fields: { id, content: out.text, usage_metadata: usage, response_metadata } };
  }

  async _generate(messages: BaseMessage[], options: this['ParsedCallOptions']): Promise<ChatResult> {
    this.counter.calls++;
    const { fields, seed } = this.#answer(messages, options);
    await sleep(latencyFor(seed), options.signal);
    const message = new AIMessage(fields);
    return { generations: [{ text: message.text, message }] };
  }

  override async *_streamResponseChunks(
    messages: BaseMessage[],
    options: this['ParsedCallOptions'],
    runManager?: CallbackManagerForLLMRun,
  ): AsyncGenerator<ChatGenerationChunk> {
    this.counter.calls++;
    const { fields, seed } = this.#answer(messages, options);
    const latency = latencyFor(seed);
    const text = typeof fields.content === 'string' ? fields.content : '';
    const pieces: AIMessageChunk[] = (text.match(/\S+\s*/g) ?? []).map(
      (word) => new AIMessageChunk({ content: word, id: fields.id }),
    );
    (fields.tool_calls ?? []).forEach((call, index) => {
      pieces.push(
        new AIMessageChunk({
          content: '',
          id: fields.id,
          tool_call_chunks: [
            { type: 'tool_call_chunk', id: call.id, name: call.name, args: JSON.stringify(call.args), index },
          ],
        }),
      );
    });
    pieces.push(
      new AIMessageChunk({
        content: '',
        usage_metadata: fields.usage_metadata,
        response_metadata: fields.response_metadata ?? {},
      }),
    );
    const firstDelay = Math.round(latency * 0.6);
    const gap = (latency - firstDelay) / pieces.length;
    for (const [index, message] of pieces.entries()) {
      await sleep(index === 0 ? firstDelay : gap, options.signal);
      const chunk = new ChatGenerationChunk({
        text: typeof message.content === 'string' ? message.content : '',
        message,
      });
      yield chunk;
      await runManager?.handleLLMNewToken(chunk.text, undefined, undefined, undefined, undefined, { chunk });
    }
  }
}

/** Deterministic local embeddings for LangChain: 64-dimensional vectors. */
export class LocalEmbeddings extends Embeddings {
  model = LOCAL_EMBEDDING_MODEL;
  readonly counter: ModelCallCounter;

  constructor(counter: ModelCallCounter) {
    super({});
    this.counter = counter;
  }

  async embedDocuments(documents: string[]): Promise<number[][]> {
    this.counter.calls++;
    this.counter.values = (this.counter.values ?? 0) + documents.length;
    await sleep(Math.round(latencyFor(documents.join('\n')) / 3));
    return documents.map((document) => vectorOf(document));
  }

  async embedQuery(query: string): Promise<number[]> {
    this.counter.calls++;
    this.counter.values = (this.counter.values ?? 0) + 1;
    await sleep(Math.round(latencyFor(`query:${query}`) / 3));
    return vectorOf(query);
  }
}
