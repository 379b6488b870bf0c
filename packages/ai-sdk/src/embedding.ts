import type {
  EmbeddingModelV4,
  EmbeddingModelV4CallOptions,
  EmbeddingModelV4Middleware,
  EmbeddingModelV4Result,
  SharedV4ProviderMetadata,
} from '@ai-sdk/provider';
import type { CacheError, CachePolicy, CacheView } from '@x/cache-core';
import { LeaderAborted, leaderError, raceAbort, vectorProblem } from '@x/cache-core';
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
   * How vectors are stored and returned. `float32` keeps 4 bytes per dimension (what providers
   * compute in) and returns each number rounded to float32, on a miss as on a hit. `float64` keeps
   * every number exactly, at 8 bytes per dimension.
   * @default 'float32'
   */
  vectorType?: 'float32' | 'float64';
}

type StoredVector = Float32Array | Float64Array;

/** What a call that waited on another call's request for a value gets: the vector and its token share. */
interface SharedVector {
  vector: number[];
  tokens: number | undefined;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  // Nobody may be waiting: a failure then belongs to the call that made the request, not to this.
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** Tokens this call spent upstream: none when nothing went upstream, unknown when a call did not say. */
function spentUsage(calls: readonly EmbeddingModelV4Result[]): EmbeddingModelV4Result['usage'] {
  if (calls.length === 0) return { tokens: 0 };
  let tokens = 0;
  for (const call of calls) {
    if (call.usage?.tokens === undefined) return calls.length === 1 ? call.usage : undefined;
    tokens += call.usage.tokens;
  }
  return { tokens };
}

/**
 * Caches an embedding model per value, for `wrapEmbeddingModel`: `embed` and `embedMany` serve
 * every value they have seen from the cache and send only the others upstream, keeping the order
 * of the input. The middleware sees each `doEmbed` call on its own: one upstream call per call it
 * sees, so one per chunk when `embedMany` splits a batch (`maxEmbeddingsPerCall`, the model's
 * input-bytes limit), and `providerMetadata.xCache` counts one such call — `ai` merges the chunks'
 * metadata by overwriting, so a chunked `embedMany` shows its last chunk's counts. The tier's
 * `stats()` has the totals.
 *
 * List middlewares that change settings (`defaultEmbeddingSettingsMiddleware`, …) before this one,
 * so their settings are in the key.
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
  const toStored = (vector: readonly number[]): StoredVector =>
    vectorType === 'float32' ? Float32Array.from(vector) : Float64Array.from(vector);
  const cacheRef: { current?: CacheView | undefined } = {};
  /** Values sent upstream and not yet written, by storage key, with what their callers get. */
  const inflight = new Map<string, Promise<SharedVector>>();

  async function wrapEmbed({
    params: rawParams,
    model,
  }: {
    params: EmbeddingModelV4CallOptions;
    model: EmbeddingModelV4;
  }): Promise<EmbeddingModelV4Result> {
    // An aborted caller gets its abort, not a hit (nor an upstream call nobody reads).
    rawParams.abortSignal?.throwIfAborted();
    const { own, params } = splitCall(rawParams, optionsKey);
    // A model that takes provider options per value (a transformer `embedMany` slices them with)
    // gets options that belong to positions in the batch, not to a value: neither a per-value key
    // nor a sub-batch of the misses could carry them. Such calls go through uncached.
    if (hasPerValueOptions(model, params)) return model.doEmbed(params);
    const view = resolveView(options, 'embeddings', own, cacheRef);
    const keys = params.values.map((value) => ({
      name: EMBED_KEY_NAME,
      request: embeddingRequest(model, params, value, vectorType),
    }));
    const cached: (StoredVector | undefined)[] = own.noCache
      ? new Array(keys.length).fill(undefined)
      : await raceAbort(view.getMany<StoredVector>(keys), params.abortSignal);

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

    // A value another call has already sent upstream is waited for instead of sent again (per
    // middleware instance, as the language-model streams are). A noCache call wants its own answer
    // and never waits; a noStore call may wait, but others do not wait on it: it stores nothing.
    const canJoin = !own.noCache;
    const canLead = canJoin && !own.noStore;
    const send: string[] = [];
    const joins: [string, Promise<SharedVector>][] = [];
    const leading = new Map<string, { storageKey: string; flight: Deferred<SharedVector> }>();

    const policy: CachePolicy<StoredVector> = {};
    const ttl = own.ttl ?? options.ttl;
    if (ttl !== undefined) policy.ttl = ttl;
    const tags = mergeTags(options.tags, own.tags);
    if (tags) policy.tags = tags;
    const calls: EmbeddingModelV4Result[] = [];
    const store = (value: string, stored: StoredVector, tokens: number | undefined): Promise<void> => {
      if (own.noStore) return Promise.resolve();
      const usage =
        tokens === undefined ? undefined : { inputTokens: tokens, outputTokens: 0, model: model.modelId };
      return view
        .set(keys[missing.get(value)![0]!]!, stored, { ...policy, ...(usage ? { usage } : {}) })
        .catch(() => {
          // A vector that cannot be stored is just not cached; the caller has it already.
        });
    };
    /**
     * One upstream call for `values`; fills their positions, stores them, settles their flights —
     * on every exit: a flight left pending would strand every call waiting on it. Rejecting one
     * already resolved is a no-op.
     */
    const fetchUpstream = async (values: string[]): Promise<void> => {
      try {
        const upstream = await model.doEmbed({ ...params, values });
        checkVectors(upstream.embeddings, values.length);
        calls.push(upstream);
        const tokens = upstream.usage?.tokens;
        const totalChars = values.reduce((sum, value) => sum + value.length, 0);
        const writes = values.map((value, index) => {
          const stored = toStored(upstream.embeddings[index]!);
          // A miss returns what a later hit decodes (numbers rounded to float32 by default), so the
          // same value gets the same vector whether it was cached or not, here and for waiting calls.
          const vector = Array.from(stored);
          for (const position of missing.get(value)!) embeddings[position] = [...vector];
          // The call reports one token count for the batch; each value is credited its share by length.
          const portion =
            tokens === undefined
              ? undefined
              : Math.round(tokens * (totalChars === 0 ? 1 / values.length : value.length / totalChars));
          leading.get(value)?.flight.resolve({ vector, tokens: portion });
          return store(value, stored, portion);
        });
        await Promise.all(writes);
      } catch (error) {
        // Callers that joined share the failure, except one our own abort caused: they ask again.
        const shared = leaderError(error, params.abortSignal);
        for (const value of values) leading.get(value)?.flight.reject(shared);
        throw error;
      }
    };

    let coalesced = 0;
    const retry: string[] = [];
    const join = async ([value, flight]: [string, Promise<SharedVector>]): Promise<void> => {
      let shared: SharedVector;
      try {
        shared = await raceAbort(flight, params.abortSignal);
      } catch (error) {
        // The call we joined was aborted by its own caller: ours is still live, so we ask ourselves.
        if (error instanceof LeaderAborted && !params.abortSignal?.aborted) {
          retry.push(value);
          return;
        }
        throw error instanceof LeaderAborted ? params.abortSignal?.reason : error;
      }
      const positions = missing.get(value)!;
      for (const position of positions) embeddings[position] = [...shared.vector];
      coalesced += positions.length;
      view.recordCoalesced(
        shared.tokens === undefined
          ? undefined
          : { inputTokens: shared.tokens, outputTokens: 0, model: model.modelId },
      );
    };

    try {
      // Every flight registered here is settled by the fetchUpstream started right after, in the
      // same synchronous run, so no call can join a flight that nothing will settle; should the loop
      // throw, the finally unregisters its flights before anyone could see them.
      for (const [value, positions] of missing) {
        const storageKey = canJoin ? view.key(keys[positions[0]!]!) : undefined;
        const existing = storageKey === undefined ? undefined : inflight.get(storageKey);
        if (existing) {
          joins.push([value, existing]);
          continue;
        }
        send.push(value);
        if (storageKey !== undefined && canLead) {
          const flight = deferred<SharedVector>();
          inflight.set(storageKey, flight.promise);
          leading.set(value, { storageKey, flight });
        }
      }
      await Promise.all([send.length > 0 ? fetchUpstream(send) : undefined, ...joins.map(join)]);
      if (retry.length > 0) await fetchUpstream(retry);
    } finally {
      // Written (or failed) by now: later callers read the entries, or lead their own call.
      for (const { storageKey, flight } of leading.values()) {
        if (inflight.get(storageKey) === flight.promise) inflight.delete(storageKey);
      }
    }

    const entry: Record<string, number> = { hits, misses: params.values.length - hits };
    if (coalesced > 0) entry.coalesced = coalesced;
    const first = calls[0];
    const providerMetadata: SharedV4ProviderMetadata = { ...first?.providerMetadata, [optionsKey]: entry };
    const result: EmbeddingModelV4Result = {
      embeddings,
      providerMetadata,
      warnings: calls.flatMap((call) => call.warnings ?? []),
    };
    // Only what this call spent upstream: values served from the cache or by another call cost nothing.
    const usage = spentUsage(calls);
    if (usage) result.usage = usage;
    if (first?.response) result.response = first.response;
    return result;
  }

  return { specificationVersion: 'v4', wrapEmbed };
}

function providerBug(problem: string): CacheError {
  return invalidOption(
    `the embedding model ${problem} — this is a provider bug; ` +
      'call it without embeddingCacheMiddleware to see its raw answer',
  );
}

/**
 * Refuses an answer the middleware cannot turn into one vector per value before any of it is
 * used, so the caller and the calls waiting on its values get this error, not a TypeError from
 * deep inside (`Float32Array.from(null)`).
 */
function checkVectors(embeddings: readonly unknown[], count: number): void {
  if (embeddings.length !== count)
    throw providerBug(`returned ${embeddings.length} vectors for ${count} values`);
  const bad = embeddings.findIndex((vector) => vectorProblem(vector) !== undefined);
  if (bad !== -1) {
    throw providerBug(`returned a malformed vector at index ${bad} (${vectorProblem(embeddings[bad])})`);
  }
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
