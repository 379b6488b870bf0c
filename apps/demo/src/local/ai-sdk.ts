/**
 * LOCAL STAND-INS for an AI SDK provider: a `LanguageModelV4` and an `EmbeddingModelV4` written
 * against the SDK's model interface (`doGenerate`, `doStream`, `doEmbed`), answered by the
 * deterministic `brain`. `openai('gpt-4o-mini')` or `anthropic(...)` take their place when an API
 * key is set (see ../providers.ts); nothing else in the demo changes.
 */
import type { EmbeddingModel, LanguageModel } from 'ai';
import type { JsonSchema, LocalRequest, ToolSpec, Turn } from './brain.ts';
import { hashOf, latencyFor, reply, seedOf, sleep, tokensOf } from './brain.ts';
import { LOCAL_CHAT_MODEL, LOCAL_EMBEDDING_MODEL, type ModelCallCounter } from './names.ts';
import { vectorOf } from './vectors.ts';

// The provider types, taken from what `ai` accepts so the demo needs no direct @ai-sdk/provider dependency.
export type LanguageModelV4 = Extract<LanguageModel, { specificationVersion: 'v4' }>;
export type EmbeddingModelV4 = Extract<EmbeddingModel, { specificationVersion: 'v4' }>;
type CallOptions = Parameters<LanguageModelV4['doGenerate']>[0];
type GenerateResult = Awaited<ReturnType<LanguageModelV4['doGenerate']>>;
type StreamResult = Awaited<ReturnType<LanguageModelV4['doStream']>>;
type StreamPart = StreamResult['stream'] extends ReadableStream<infer P> ? P : never;
type Usage = GenerateResult['usage'];

function turnsOf(prompt: CallOptions['prompt']): Turn[] {
  const turns: Turn[] = [];
  for (const message of prompt) {
    switch (message.role) {
      case 'system':
        turns.push({ role: 'system', text: message.content });
        break;
      case 'user':
        turns.push({
          role: 'user',
          text: message.content
            .map((part) => (part.type === 'text' ? part.text : `[${part.mediaType}]`))
            .join(''),
        });
        break;
      case 'assistant':
        turns.push({
          role: 'assistant',
          text: message.content
            .map((part) =>
              part.type === 'text'
                ? part.text
                : part.type === 'tool-call'
                  ? `${part.toolName}(${JSON.stringify(part.input)})`
                  : '',
            )
            .join(''),
        });
        break;
      case 'tool':
        for (const part of message.content) {
          if (part.type !== 'tool-result') continue;
          const output = part.output;
          const text =
            output.type === 'text' || output.type === 'error-text'
              ? output.value
              : 'value' in output
                ? JSON.stringify(output.value)
                : JSON.stringify(output);
          turns.push({ role: 'tool', toolName: part.toolName, text });
        }
        break;
    }
  }
  return turns;
}

function requestOf(options: CallOptions): LocalRequest {
  const tools: ToolSpec[] = [];
  for (const tool of options.tools ?? []) {
    if (tool.type === 'function') tools.push({ name: tool.name, schema: tool.inputSchema as JsonSchema });
  }
  const format = options.responseFormat;
  return {
    turns: turnsOf(options.prompt),
    tools,
    json: format?.type === 'json' ? ((format.schema ?? { type: 'object' }) as JsonSchema) : undefined,
  };
}

function usageOf(request: LocalRequest, output: string): Usage {
  const input = tokensOf(seedOf(request));
  const out = tokensOf(output);
  return {
    inputTokens: { total: input, noCache: input, cacheRead: 0, cacheWrite: 0 },
    outputTokens: { total: out, text: out, reasoning: 0 },
  };
}

interface Answer {
  request: LocalRequest;
  content: GenerateResult['content'];
  finishReason: GenerateResult['finishReason'];
  usage: Usage;
  id: string;
}

function answer(options: CallOptions): Answer {
  const request = requestOf(options);
  const seed = seedOf(request);
  const out = reply(request);
  const id = `local-${hashOf(seed).toString(16)}`;
  if (out.type === 'tool-call') {
    const input = JSON.stringify(out.input);
    return {
      request,
      id,
      content: [
        {
          type: 'tool-call',
          toolCallId: `call-${hashOf(seed + out.name).toString(16)}`,
          toolName: out.name,
          input,
        },
      ],
      finishReason: { unified: 'tool-calls', raw: 'tool_calls' },
      usage: usageOf(request, input),
    };
  }
  return {
    request,
    id,
    content: [{ type: 'text', text: out.text }],
    finishReason: { unified: 'stop', raw: 'stop' },
    usage: usageOf(request, out.text),
  };
}

/** Splits text the way providers stream it: a word (with its trailing space) per chunk. */
function chunksOf(text: string): string[] {
  return text.match(/\S+\s*/g) ?? [text];
}

/**
 * A deterministic local language model for the AI SDK (LanguageModelV4). `counter` counts the
 * calls that reached it, which is how the demo shows that warm calls never do.
 */
export function localLanguageModel(counter: ModelCallCounter): LanguageModelV4 {
  return {
    specificationVersion: 'v4',
    provider: 'local-stand-in',
    modelId: LOCAL_CHAT_MODEL,
    supportedUrls: {},
    async doGenerate(options) {
      counter.calls++;
      const result = answer(options);
      await sleep(latencyFor(seedOf(result.request)), options.abortSignal);
      return {
        content: result.content,
        finishReason: result.finishReason,
        usage: result.usage,
        response: { id: result.id, modelId: LOCAL_CHAT_MODEL, timestamp: new Date() },
        warnings: [],
      };
    },
    async doStream(options) {
      counter.calls++;
      const result = answer(options);
      const latency = latencyFor(seedOf(result.request));
      const parts: StreamPart[] = [
        { type: 'stream-start', warnings: [] },
        { type: 'response-metadata', id: result.id, modelId: LOCAL_CHAT_MODEL, timestamp: new Date() },
      ];
      for (const item of result.content) {
        if (item.type === 'text') {
          parts.push({ type: 'text-start', id: 't0' });
          for (const delta of chunksOf(item.text)) parts.push({ type: 'text-delta', id: 't0', delta });
          parts.push({ type: 'text-end', id: 't0' });
        } else if (item.type === 'tool-call') {
          parts.push(
            { type: 'tool-input-start', id: item.toolCallId, toolName: item.toolName },
            { type: 'tool-input-delta', id: item.toolCallId, delta: item.input },
            { type: 'tool-input-end', id: item.toolCallId },
            item,
          );
        }
      }
      parts.push({ type: 'finish', finishReason: result.finishReason, usage: result.usage });
      // Time to first token is most of the latency; the rest is spread over the chunks.
      const firstDelay = Math.round(latency * 0.6);
      const gap = (latency - firstDelay) / parts.length;
      const signal = options.abortSignal;
      let index = 0;
      const stream = new ReadableStream<StreamPart>({
        async pull(controller) {
          try {
            await sleep(index === 0 ? firstDelay : gap, signal);
          } catch (error) {
            controller.error(error);
            return;
          }
          const part = parts[index++];
          if (part) controller.enqueue(part);
          if (index >= parts.length) controller.close();
        },
      });
      return { stream };
    },
  };
}

/** A deterministic local embedding model for the AI SDK (EmbeddingModelV4): 64-dimensional vectors. */
export function localEmbeddingModel(counter: ModelCallCounter): EmbeddingModelV4 {
  return {
    specificationVersion: 'v4',
    provider: 'local-stand-in',
    modelId: LOCAL_EMBEDDING_MODEL,
    maxEmbeddingsPerCall: 2048,
    supportsParallelCalls: true,
    async doEmbed({ values, abortSignal }) {
      counter.calls++;
      counter.values = (counter.values ?? 0) + values.length;
      // Embedding calls are quicker than chat calls: about a third of the latency.
      await sleep(Math.round(latencyFor(values.join('\n')) / 3), abortSignal);
      return {
        embeddings: values.map((value) => vectorOf(value)),
        usage: { tokens: values.reduce((sum, value) => sum + tokensOf(value), 0) },
        warnings: [],
      };
    },
  };
}
