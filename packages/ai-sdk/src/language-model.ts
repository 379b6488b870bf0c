import type {
  LanguageModelV4,
  LanguageModelV4CallOptions,
  LanguageModelV4GenerateResult,
  LanguageModelV4Middleware,
  LanguageModelV4StreamPart,
  LanguageModelV4StreamResult,
  LanguageModelV4Usage,
  SharedV4ProviderMetadata,
} from '@ai-sdk/provider';
import type { CachePolicy, CacheResult, CacheView, Duration, Usage } from '@x/cache-core';
import { CacheError, LeaderAborted, leaderError, parseDuration, raceAbort } from '@x/cache-core';
import type { CacheCandidate } from './admission.ts';
import { defaultShouldCache, generateCandidate, streamCandidate } from './admission.ts';
import { languageModelRequest } from './key.ts';
import type { CacheCallOptions, CommonCacheOptions } from './options.ts';
import {
  GENERATE_KEY_NAME,
  invalidOption,
  mergeTags,
  resolveView,
  STREAM_KEY_NAME,
  splitCall,
  validateCommon,
} from './options.ts';
import type { StreamRecording } from './stream-flight.ts';
import { StreamFlight } from './stream-flight.ts';
import type { ReplayPacing } from './streams.ts';
import { replayStream, subscriberStream, timerMs, validatePacing } from './streams.ts';

type JSONObject = SharedV4ProviderMetadata[string];

export interface CacheMiddlewareOptions extends CommonCacheOptions {
  /**
   * Admission: return false to keep a complete response out of the cache. Incomplete streams
   * (an error part, a stream error, no finish part, an upstream cut off by an abort or a cancel
   * before its end) and thrown errors are never stored, whatever this returns.
   * @default defaultShouldCache — not stored: finishReason error / content-filter / length /
   *   interrupted, empty output, an answer that breaks the toolChoice, JSON output that does not
   *   parse or violates the requested schema
   */
  shouldCache?: (candidate: CacheCandidate) => boolean;
  /** Pace of a replayed stream; a `delayMs` above 2^31 - 1 ms is clamped to it. @default 'instant' */
  pacing?: ReplayPacing;
  /**
   * How long a caller that joined an identical in-flight stream waits for the shared stream to
   * start and between its parts. Past it, a caller that has received nothing makes its own
   * upstream call; one that has received parts ends with an error part. Above 2^31 - 1 ms (about
   * 24.8 days, Node's timer limit) it is clamped to that: `'30d'` waits practically forever.
   * @default '60s'
   */
  joinTimeout?: Duration;
  /**
   * Usage reported on a hit. `'zero'` reports what the hit spent (no tokens); the original usage
   * is in `providerMetadata.xCache.savedUsage` and counted as saved in the cache statistics.
   * `'original'` reports the usage of the response that was stored.
   * @default 'zero'
   */
  usageOnHit?: 'zero' | 'original';
}

/** What a stored generate result holds: the result without its raw HTTP bodies. */
type StoredGenerate = Omit<LanguageModelV4GenerateResult, 'request' | 'response'> & {
  request?: { url?: string };
  response?: Omit<NonNullable<LanguageModelV4GenerateResult['response']>, 'body'>;
};

interface CallContext {
  view: CacheView;
  keyInput: { name: string; request: unknown };
  storageKey: string;
  own: CacheCallOptions;
  params: LanguageModelV4CallOptions;
  model: LanguageModelV4;
}

const DEFAULT_JOIN_TIMEOUT = '60s';

/**
 * The marker of a call whose request no key can express, so it was neither read nor stored. A new
 * object per call: the caller owns its result and may change it.
 */
const uncacheableEntry = (): JSONObject => ({ hit: false, cacheable: false });

function zeroUsage(): LanguageModelV4Usage {
  return {
    inputTokens: { total: 0, noCache: 0, cacheRead: 0, cacheWrite: 0 },
    outputTokens: { total: 0, text: 0, reasoning: 0 },
  };
}

function tokenCounts(usage: LanguageModelV4Usage | undefined): Omit<Usage, 'model'> | undefined {
  const input = usage?.inputTokens.total;
  const output = usage?.outputTokens.total;
  if (input === undefined && output === undefined) return undefined;
  return { inputTokens: input ?? 0, outputTokens: output ?? 0 };
}

/** The usage recorded with an entry, which the core counts as saved (and prices) on every hit. */
function coreUsage(usage: LanguageModelV4Usage | undefined, modelId: string): Usage | undefined {
  const counts = tokenCounts(usage);
  return counts && { ...counts, model: modelId };
}

function isUnserializable(error: unknown): boolean {
  return CacheError.isInstance(error) && error.code === 'E_UNSERIALIZABLE';
}

const TIMED_OUT = Symbol('timed out');

function within<T>(
  promise: Promise<T>,
  ms: number,
  signal: AbortSignal | undefined,
): Promise<T | typeof TIMED_OUT> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), timerMs(ms));
  });
  return raceAbort(Promise.race([promise, timeout]), signal).finally(() => clearTimeout(timer));
}

/** Copies what a shared (not decoded) value holds so that no two callers share one mutable object. */
function cloneDeep<T>(value: T): T {
  if (Array.isArray(value)) return value.map((item) => cloneDeep(item)) as T;
  if (value instanceof Date) return new Date(value.getTime()) as T;
  if (value instanceof URL) return new URL(value.href) as T;
  if (ArrayBuffer.isView(value)) return (value as unknown as Uint8Array).slice() as T;
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = cloneDeep(item);
    return out as T;
  }
  return value;
}

function toStoredGenerate(result: LanguageModelV4GenerateResult): StoredGenerate {
  const { request, response, ...rest } = result;
  const stored: StoredGenerate = { ...rest };
  // Raw HTTP bodies are left out: they repeat the prompt and the output and can be large.
  if (request?.url !== undefined) stored.request = { url: request.url };
  if (response) {
    const { body: _body, ...metadata } = response;
    stored.response = metadata;
  }
  return stored;
}

/**
 * Caches a language model's `doGenerate` and `doStream` calls, so every `generateText`,
 * `streamText`, `generateObject`, `streamObject` and tool-loop step through the wrapped model is
 * served from the cache when the same request was answered before:
 *
 * ```ts
 * const model = wrapLanguageModel({ model: openai('gpt-4o-mini'), middleware: cacheMiddleware({ cache }) });
 * ```
 */
export function cacheMiddleware(options: CacheMiddlewareOptions = {}): LanguageModelV4Middleware {
  const optionsKey = validateCommon(options);
  const pacing = validatePacing(options.pacing ?? 'instant');
  // Longer than ~24.8 days ('30d') is clamped where the timers are armed (timerMs): practically never.
  const joinTimeoutMs = parseDuration(options.joinTimeout ?? DEFAULT_JOIN_TIMEOUT, 'joinTimeout');
  if (joinTimeoutMs === undefined)
    throw invalidOption(`joinTimeout must be finite — e.g. '${DEFAULT_JOIN_TIMEOUT}'`);
  const usageOnHit = options.usageOnHit ?? 'zero';
  if (usageOnHit !== 'zero' && usageOnHit !== 'original') {
    throw invalidOption(`usageOnHit must be 'zero' or 'original', got ${JSON.stringify(usageOnHit)}`);
  }
  const shouldCache = options.shouldCache ?? defaultShouldCache;
  const cacheRef: { current?: CacheView | undefined } = {};
  // Identical streams in flight through this middleware, by storage key (which includes the namespace).
  const flights = new Map<string, StreamFlight>();
  // Stream cache reads in progress, by storage key, resolving to whether the read found an entry: an
  // identical call waits for the read (and the flight its miss starts) instead of reading too, so it
  // is counted as coalesced, not also as a miss.
  const lookups = new Map<string, Promise<boolean>>();

  const policyFor = <T>(own: CacheCallOptions): CachePolicy<T> => {
    const policy: CachePolicy<T> = {};
    const ttl = own.ttl ?? options.ttl;
    if (ttl !== undefined) policy.ttl = ttl;
    const tags = mergeTags(options.tags, own.tags);
    if (tags) policy.tags = tags;
    return policy;
  };

  const metadata = (
    result: Pick<CacheResult<unknown>, 'key' | 'tier' | 'namespace' | 'level' | 'ageMs'>,
    state: { hit: boolean; coalesced?: boolean },
  ): JSONObject => {
    const out: JSONObject = {
      hit: state.hit,
      key: result.key,
      tier: result.tier,
      namespace: result.namespace,
    };
    if (state.coalesced) out.coalesced = true;
    if (result.level !== undefined) out.level = result.level;
    if (result.ageMs !== undefined) out.ageMs = result.ageMs;
    return out;
  };

  /** The usage a served response stood for: what this call did not spend. */
  const withSaved = (entry: JSONObject, original: LanguageModelV4Usage | undefined): JSONObject => {
    const saved = tokenCounts(original);
    return saved ? { ...entry, savedUsage: saved } : entry;
  };

  const withMetadata = (
    providerMetadata: SharedV4ProviderMetadata | undefined,
    entry: JSONObject,
  ): SharedV4ProviderMetadata => ({ ...providerMetadata, [optionsKey]: entry });

  const prepare = (
    params: LanguageModelV4CallOptions,
    model: LanguageModelV4,
    mode: 'generate' | 'stream',
  ): {
    own: CacheCallOptions;
    params: LanguageModelV4CallOptions;
    view: CacheView;
    keyInput: CallContext['keyInput'];
  } => {
    const split = splitCall(params, optionsKey);
    const view = resolveView(options, 'responses', split.own, cacheRef);
    const keyInput = {
      name: mode === 'generate' ? GENERATE_KEY_NAME : STREAM_KEY_NAME,
      request: languageModelRequest(model, split.params, mode),
    };
    return { own: split.own, params: split.params, view, keyInput };
  };

  async function wrapGenerate({
    params: rawParams,
    model,
  }: {
    params: LanguageModelV4CallOptions;
    model: LanguageModelV4;
  }): Promise<LanguageModelV4GenerateResult> {
    rawParams.abortSignal?.throwIfAborted();
    const { own, params, view, keyInput } = prepare(rawParams, model, 'generate');
    const policy: CachePolicy<StoredGenerate> = {
      ...policyFor<StoredGenerate>(own),
      shouldCache: (stored) => shouldCache(generateCandidate(params, stored)),
      usage: (stored) => coreUsage(stored.usage, model.modelId),
    };
    if (own.noCache) policy.forceRefresh = true;
    if (own.noStore) policy.noStore = true;

    let fresh: LanguageModelV4GenerateResult | undefined;
    let led = false;
    const run = () =>
      view.getOrComputeResult<StoredGenerate>(
        keyInput,
        async () => {
          led = true;
          try {
            fresh = await model.doGenerate(params);
          } catch (error) {
            throw leaderError(error, params.abortSignal);
          }
          return toStoredGenerate(fresh);
        },
        policy,
      );
    let result: CacheResult<StoredGenerate>;
    for (;;) {
      try {
        result = await raceAbort(run(), params.abortSignal);
        break;
      } catch (error) {
        if (error instanceof LeaderAborted) {
          // Our own request: the caller sees the error its abort caused.
          if (led || params.abortSignal?.aborted) throw led ? error.reason : params.abortSignal?.reason;
          // This call joined another caller's request, which that caller aborted: its own signal
          // is still live, so it asks again (joining or leading) rather than inherit the abort.
          continue;
        }
        if (!led && isUnserializable(error)) {
          // A request the key cannot express (e.g. a function in a provider tool's args) is not
          // cacheable, but it is still a valid call: answer it uncached.
          const uncached = await model.doGenerate(params);
          return {
            ...uncached,
            providerMetadata: withMetadata(uncached.providerMetadata, uncacheableEntry()),
          };
        }
        throw error;
      }
    }

    if (!result.hit && !result.coalesced && fresh) {
      return {
        ...fresh,
        providerMetadata: withMetadata(fresh.providerMetadata, metadata(result, { hit: false })),
      };
    }
    // A coalesced caller may hold the very object the leader returned when it was not stored.
    const stored = result.coalesced ? cloneDeep(result.value) : result.value;
    return {
      ...stored,
      usage: usageOnHit === 'zero' ? zeroUsage() : stored.usage,
      providerMetadata: withMetadata(
        stored.providerMetadata,
        withSaved(metadata(result, { hit: true, coalesced: result.coalesced }), stored.usage),
      ),
    };
  }

  const markFinish =
    (entry: JSONObject, servedFromCache: boolean) =>
    (part: LanguageModelV4StreamPart): LanguageModelV4StreamPart => {
      if (part.type !== 'finish') return part;
      return {
        ...part,
        usage: servedFromCache && usageOnHit === 'zero' ? zeroUsage() : part.usage,
        providerMetadata: withMetadata(
          part.providerMetadata,
          servedFromCache ? withSaved(entry, part.usage) : entry,
        ),
      };
    };

  const storeWhenComplete = (context: CallContext, flight: StreamFlight): void => {
    void flight.finished.then(async (outcome) => {
      try {
        if (outcome.kind !== 'complete' || context.own.noStore) return;
        const { recording } = outcome;
        const finish = recording.parts.findLast((part) => part.type === 'finish');
        if (!finish || !shouldCache(streamCandidate(context.params, recording.parts, finish.finishReason)))
          return;
        await context.view.set<StreamRecording>({ storageKey: context.storageKey }, recording, {
          ...policyFor<StreamRecording>(context.own),
          usage: coreUsage(finish.usage, context.model.modelId),
        });
      } catch {
        // A recording that cannot be stored (e.g. an unserialisable raw chunk) is simply not cached;
        // the caller already has its stream.
      } finally {
        // Joiners may still attach to a finished flight until its entry is readable, so no
        // identical call slips between the end of the stream and the write.
        if (flights.get(context.storageKey) === flight) flights.delete(context.storageKey);
      }
    });
  };

  /** Starts an upstream call; `shared` makes it joinable by identical calls. */
  const startFlight = (context: CallContext, shared: boolean): StreamFlight => {
    const flight = new StreamFlight((signal) =>
      context.model.doStream({ ...context.params, abortSignal: signal }),
    );
    if (shared) flights.set(context.storageKey, flight);
    storeWhenComplete(context, flight);
    return flight;
  };

  const missEntry = (context: CallContext): JSONObject => ({
    hit: false,
    key: context.storageKey,
    tier: context.view.tierName,
    namespace: context.view.namespace,
  });

  const lead = async (context: CallContext, shared: boolean): Promise<LanguageModelV4StreamResult> => {
    const flight = startFlight(context, shared);
    const stream = subscriberStream(flight, {
      signal: context.params.abortSignal,
      transform: markFinish(missEntry(context), false),
    });
    const meta = await flight.started;
    return { ...meta, stream };
  };

  const join = async (context: CallContext, flight: StreamFlight): Promise<LanguageModelV4StreamResult> => {
    const signal = context.params.abortSignal;
    let meta: Awaited<StreamFlight['started']> | typeof TIMED_OUT;
    try {
      meta = await within(flight.started, joinTimeoutMs, signal);
    } catch (error) {
      if (signal?.aborted || flight.state !== 'abandoned') throw error;
      meta = TIMED_OUT;
    }
    // The shared call did not start in time, or every caller of it left before it did: this caller
    // makes its own call (not joinable, so the stalled one is not replaced for others), a miss.
    if (meta === TIMED_OUT || flight.state === 'abandoned') {
      context.view.recordLookup('miss');
      return lead(context, false);
    }
    const entry: JSONObject = { ...missEntry(context), hit: true, coalesced: true };
    const finish = markFinish(entry, true);
    const stream = subscriberStream(flight, {
      signal,
      // A joiner saved the call it did not make: count it, with the usage, in the core stats.
      transform: (part) => {
        if (part.type === 'finish')
          context.view.recordCoalesced(coreUsage(part.usage, context.model.modelId));
        return finish(part);
      },
      idleTimeoutMs: joinTimeoutMs,
      fallback: () => {
        context.view.recordLookup('miss');
        return subscriberStream(startFlight(context, false), {
          signal,
          transform: markFinish(missEntry(context), false),
        });
      },
    });
    return { ...meta, stream };
  };

  const replay = (context: CallContext, hit: CacheResult<StreamRecording>): LanguageModelV4StreamResult => {
    const recording = hit.value;
    const result: LanguageModelV4StreamResult = {
      stream: replayStream(
        recording,
        pacing,
        markFinish(metadata(hit, { hit: true }), true),
        context.params.abortSignal,
      ),
    };
    if (recording.request) result.request = recording.request;
    if (recording.response) result.response = recording.response;
    return result;
  };

  /** The stored recording of this call's key, if any (the read counts the hit or miss). */
  const readEntry = async (context: CallContext): Promise<CacheResult<StreamRecording> | undefined> => {
    const hit = await raceAbort(
      context.view.getResult<StreamRecording>({ storageKey: context.storageKey }),
      context.params.abortSignal,
    );
    return hit && Array.isArray(hit.value?.parts) ? hit : undefined;
  };

  /** After the read: replays a hit, or joins an identical call that started meanwhile, or leads. */
  const serve = (
    context: CallContext,
    hit: CacheResult<StreamRecording> | undefined,
    shared: boolean,
  ): LanguageModelV4StreamResult | Promise<LanguageModelV4StreamResult> => {
    if (hit) return replay(context, hit);
    // A `noCache` call may have started a flight while this one was reading the cache.
    const raced = flights.get(context.storageKey);
    if (raced?.joinable) return join(context, raced);
    // `lead` registers its flight synchronously: a call waiting on this one's read finds it.
    return lead(context, shared);
  };

  async function wrapStream({
    params: rawParams,
    model,
  }: {
    params: LanguageModelV4CallOptions;
    model: LanguageModelV4;
  }): Promise<LanguageModelV4StreamResult> {
    // An aborted caller gets its abort, not an upstream call nobody reads.
    rawParams.abortSignal?.throwIfAborted();
    const { own, params, view, keyInput } = prepare(rawParams, model, 'stream');
    let storageKey: string;
    try {
      storageKey = view.key(keyInput);
    } catch (error) {
      if (!isUnserializable(error)) throw error;
      // Not cacheable (see wrapGenerate): answered by the model, marked on its finish part.
      const uncached = await model.doStream(params);
      const mark = markFinish(uncacheableEntry(), false);
      return {
        ...uncached,
        stream: uncached.stream.pipeThrough(
          new TransformStream<LanguageModelV4StreamPart, LanguageModelV4StreamPart>({
            transform: (part, controller) => controller.enqueue(mark(part)),
          }),
        ),
      };
    }
    const context: CallContext = { view, keyInput, storageKey, own, params, model };
    // A call that skips the read still shares its fresh stream with identical calls that arrive
    // meanwhile, and stays joinable until its recording is stored, so the next call sees it.
    // A call that stores nothing (noStore, ttl 0) does not share its stream: a caller joining it
    // would see its answer go unstored.
    const shared = !own.noStore && parseDuration(own.ttl ?? options.ttl, 'ttl') !== 0;
    if (own.noCache) return lead(context, shared);
    const inFlight = flights.get(storageKey);
    if (inFlight?.joinable) return join(context, inFlight);
    // An identical call is reading the cache: its miss starts the flight this call joins, as the
    // core's single-flight does for generate (one miss, the others coalesced). After its hit this
    // call reads too (a hit of its own); when it led a flight nobody may join, or failed, this
    // call takes its place.
    for (let pending = lookups.get(storageKey); pending; pending = lookups.get(storageKey)) {
      const found = await raceAbort(pending, params.abortSignal);
      const started = flights.get(storageKey);
      if (started?.joinable) return join(context, started);
      if (found) return serve(context, await readEntry(context), shared);
    }
    let found = false;
    let settle!: (found: boolean) => void;
    const lookup = new Promise<boolean>((resolve) => {
      settle = resolve;
    });
    lookups.set(storageKey, lookup);
    try {
      const hit = await readEntry(context);
      found = hit !== undefined;
      return serve(context, hit, shared);
    } finally {
      if (lookups.get(storageKey) === lookup) lookups.delete(storageKey);
      settle(found);
    }
  }

  return { specificationVersion: 'v4', wrapGenerate, wrapStream };
}
