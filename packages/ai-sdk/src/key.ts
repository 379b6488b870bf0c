import type {
  EmbeddingModelV4CallOptions,
  LanguageModelV4CallOptions,
  LanguageModelV4Prompt,
  SharedV4FileData,
} from '@ai-sdk/provider';

/**
 * Version of the request shape below. Bump it whenever a field is added to or removed from the
 * key so that old entries are no longer matched instead of being matched wrongly.
 */
export const REQUEST_VERSION = 1;

/**
 * The request a language-model entry is keyed on. It is built from an allow-list rather than by
 * deleting fields from the call options: a field a future SDK adds (a new sampling setting, a
 * transport option) then neither silently enters the key (splitting identical calls) nor silently
 * stays out of it while it changes the output — it stays out until it is reviewed and listed
 * here, with `REQUEST_VERSION` bumped.
 *
 * Left out on purpose: `headers` and `abortSignal` (transport), and everything the SDK handles
 * above the model (retries, timeouts, telemetry, callbacks), which never reaches `LanguageModelV4CallOptions`.
 */
export function languageModelRequest(
  model: { provider: string; modelId: string },
  params: LanguageModelV4CallOptions,
  mode: 'generate' | 'stream',
): Record<string, unknown> {
  return {
    v: REQUEST_VERSION,
    provider: model.provider,
    modelId: model.modelId,
    prompt: normalizePrompt(params.prompt),
    maxOutputTokens: params.maxOutputTokens,
    temperature: params.temperature,
    stopSequences: params.stopSequences,
    topP: params.topP,
    topK: params.topK,
    presencePenalty: params.presencePenalty,
    frequencyPenalty: params.frequencyPenalty,
    responseFormat: params.responseFormat,
    seed: params.seed,
    tools: params.tools,
    toolChoice: params.toolChoice,
    reasoning: params.reasoning,
    providerOptions: nonEmpty(params.providerOptions),
    // Raw chunks change what a stream contains, so a recording without them cannot serve a call
    // that asks for them; for generate calls the flag has no effect.
    includeRawChunks: mode === 'stream' && params.includeRawChunks === true ? true : undefined,
  };
}

/** The request one embedding is keyed on: the model, the value and the settings that change the vector. */
export function embeddingRequest(
  model: { provider: string; modelId: string },
  params: EmbeddingModelV4CallOptions,
  value: string,
  vectorType: 'float32' | 'float64' = 'float32',
): Record<string, unknown> {
  return {
    v: REQUEST_VERSION,
    provider: model.provider,
    modelId: model.modelId,
    value,
    dimensions: params.dimensions,
    providerOptions: nonEmpty(params.providerOptions),
    // float32 entries cannot serve a middleware that promises exact float64 numbers; left out
    // for float32 (the default) so its keys stay as they were.
    vectorType: vectorType === 'float64' ? vectorType : undefined,
  };
}

function nonEmpty<T extends object>(value: T | undefined): T | undefined {
  return value && Object.keys(value).length > 0 ? value : undefined;
}

/**
 * Inline file data may arrive as bytes or as base64; both forms of the same bytes must key
 * alike. Base64 is decoded only when it round-trips exactly, because Node's decoder is lenient
 * and two different strings must never collapse into one key.
 */
function normalizeFileData(data: SharedV4FileData): SharedV4FileData {
  if (data.type !== 'data' || typeof data.data !== 'string') return data;
  const bytes = Buffer.from(data.data, 'base64');
  if (bytes.toString('base64') !== data.data) return data;
  return { ...data, data: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
}

function normalizePart<T>(part: T): T {
  const candidate = part as { type?: unknown; data?: SharedV4FileData; output?: unknown };
  if ((candidate.type === 'file' || candidate.type === 'reasoning-file') && candidate.data) {
    const data = normalizeFileData(candidate.data);
    return data === candidate.data ? part : ({ ...part, data } as T);
  }
  if (candidate.type === 'tool-result') {
    const output = candidate.output as { type?: unknown; value?: unknown } | undefined;
    if (output?.type === 'content' && Array.isArray(output.value)) {
      const value = output.value.map((item) => normalizePart(item));
      return value.every((item, index) => item === (output.value as unknown[])[index])
        ? part
        : ({ ...part, output: { ...output, value } } as T);
    }
  }
  return part;
}

function normalizePrompt(prompt: LanguageModelV4Prompt): unknown {
  return prompt.map((message) => {
    if (!Array.isArray(message.content)) return message;
    const content = (message.content as unknown[]).map((part) => normalizePart(part));
    return content.every((part, index) => part === (message.content as unknown[])[index])
      ? message
      : { ...message, content };
  });
}
