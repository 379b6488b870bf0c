import type {
  EmbeddingModelV4,
  EmbeddingModelV4CallOptions,
  EmbeddingModelV4Middleware,
  EmbeddingModelV4Result,
  SharedV4ProviderMetadata,
} from '@ai-sdk/provider';
import type { CachePolicy, CacheView } from '@x/cache-core';
import { embeddingRequest } from './key.ts';
import type { CommonCacheOptions } from './options.ts';
import {
  EMBED_KEY_NAME,
  invalidOption,
  mergeTags,
  resolveView,
  splitCall,
  validateCommon,
} from './options.ts';

export interface EmbeddingCacheMiddlewareOptions extends CommonCacheOptions {
  /**
   * How vectors are stored. `float32` keeps 4 bytes per dimension (what providers compute in);
   * a hit then returns each number rounded to float32. `float64` keeps every number exactly, at 8
   * bytes per dimension.
   * @default 'float32'
   */
  vectorType?: 'float32' | 'float64';
}

type StoredVector = Float32Array | Float64Array;

/**
 * Caches an embedding model per value, for `wrapEmbeddingModel`: `embed` and `embedMany` serve
 * every value they have seen from the cache and send only the others upstream, in one call,
 * keeping the order of the input.
 *
 * ```ts
 * const embedder = wrapEmbeddingModel({ model: openai.embedding('text-embedding-3-small'), middleware: embeddingCacheMiddleware({ cache }) });
 * ```
 */
export function embeddingCacheMiddleware(
  options: EmbeddingCacheMiddlewareOptions = {},
): EmbeddingModelV4Middleware {
  const optionsKey = validateCommon(options);
  const vectorType = options.vectorType ?? 'float32';
  if (vectorType !== 'float32' && vectorType !== 'float64') {
    throw invalidOption(`vectorType must be 'float32' or 'float64', got ${JSON.stringify(vectorType)}`);
  }
  const cacheRef: { current?: CacheView | undefined } = {};

  async function wrapEmbed({
    params: rawParams,
    model,
  }: {
    params: EmbeddingModelV4CallOptions;
    model: EmbeddingModelV4;
  }): Promise<EmbeddingModelV4Result> {
    const { own, params } = splitCall(rawParams, optionsKey);
    // A model that takes provider options per value (a transformer `embedMany` slices them with)
    // gets options that belong to positions in the batch, not to a value: neither a per-value key
    // nor a sub-batch of the misses could carry them. Such calls go through uncached.
    if (hasPerValueOptions(model, params)) return model.doEmbed(params);
    const view = resolveView(options, 'embeddings', own, cacheRef);
    const keys = params.values.map((value) => ({
      name: EMBED_KEY_NAME,
      request: embeddingRequest(model, params, value),
    }));
    const cached: (StoredVector | undefined)[] = own.noCache
      ? new Array(keys.length).fill(undefined)
      : await view.getMany<StoredVector>(keys);

    // Each distinct missing value goes upstream once, however often the batch repeats it.
    const missing = new Map<string, number[]>();
    params.values.forEach((value, index) => {
      if (cached[index] !== undefined) return;
      const positions = missing.get(value);
      if (positions) positions.push(index);
      else missing.set(value, [index]);
    });

    const embeddings: number[][] = cached.map((vector) => (vector ? Array.from(vector) : []));
    const hits = params.values.length - [...missing.values()].reduce((sum, list) => sum + list.length, 0);
    let upstream: EmbeddingModelV4Result | undefined;
    if (missing.size > 0) {
      const values = [...missing.keys()];
      upstream = await model.doEmbed({ ...params, values });
      if (upstream.embeddings.length !== values.length) {
        throw invalidOption(
          `the embedding model returned ${upstream.embeddings.length} vectors for ${values.length} values — ` +
            'this is a provider bug; call it without embeddingCacheMiddleware to see its raw answer',
        );
      }
      const tokens = upstream.usage?.tokens;
      const totalChars = values.reduce((sum, value) => sum + value.length, 0);
      const policy: CachePolicy<StoredVector> = {};
      const ttl = own.ttl ?? options.ttl;
      if (ttl !== undefined) policy.ttl = ttl;
      const tags = mergeTags(options.tags, own.tags);
      if (tags) policy.tags = tags;
      const writes: Promise<void>[] = [];
      values.forEach((value, index) => {
        const vector = upstream!.embeddings[index]!;
        for (const position of missing.get(value)!) embeddings[position] = [...vector];
        if (own.noStore) return;
        // The call reports one token count for the batch; each value is credited its share by length.
        const share =
          tokens === undefined
            ? undefined
            : Math.round(tokens * (totalChars === 0 ? 1 / values.length : value.length / totalChars));
        const stored = vectorType === 'float32' ? Float32Array.from(vector) : Float64Array.from(vector);
        const position = missing.get(value)![0]!;
        writes.push(
          view
            .set(keys[position]!, stored, {
              ...policy,
              ...(share === undefined
                ? {}
                : { usage: { inputTokens: share, outputTokens: 0, model: model.modelId } }),
            })
            .catch(() => {
              // A vector that cannot be stored is just not cached; the caller has it already.
            }),
        );
      });
      await Promise.all(writes);
    }

    const entry = { hits, misses: params.values.length - hits };
    const providerMetadata: SharedV4ProviderMetadata = { ...upstream?.providerMetadata, [optionsKey]: entry };
    const result: EmbeddingModelV4Result = {
      embeddings,
      providerMetadata,
      warnings: upstream?.warnings ?? [],
    };
    // Only what this call spent upstream: values served from the cache cost nothing.
    const usage = upstream ? upstream.usage : { tokens: 0 };
    if (usage) result.usage = usage;
    if (upstream?.response) result.response = upstream.response;
    return result;
  }

  return { specificationVersion: 'v4', wrapEmbed };
}

/** What `ai` calls to slice a model's provider options per value (`embedMany`). */
const PROVIDER_OPTIONS_TRANSFORMER = Symbol.for('vercel.ai.embeddingModel.providerOptionsTransformer');

function hasPerValueOptions(model: EmbeddingModelV4, params: EmbeddingModelV4CallOptions): boolean {
  if (typeof (model as unknown as Record<symbol, unknown>)[PROVIDER_OPTIONS_TRANSFORMER] !== 'function') {
    return false;
  }
  const options = params.providerOptions;
  return options !== undefined && Object.values(options).some((entry) => Object.keys(entry ?? {}).length > 0);
}
