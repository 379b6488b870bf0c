import type { CallbackManagerForLLMRun } from '@langchain/core/callbacks/manager';
import type { BaseLanguageModelInput } from '@langchain/core/language_models/base';
import type { BaseChatModelCallOptions, BindToolsInput } from '@langchain/core/language_models/chat_models';
import { BaseChatModel } from '@langchain/core/language_models/chat_models';
import type { ChatModelStreamEvent } from '@langchain/core/language_models/event';
import { ChatModelStream } from '@langchain/core/language_models/stream';
import type { AIMessageChunk, BaseMessage, BaseMessageChunk } from '@langchain/core/messages';
import type { ChatGenerationChunk, ChatResult, LLMResult } from '@langchain/core/outputs';
import type { Runnable } from '@langchain/core/runnables';
import {
  RunnableAssign,
  RunnableBinding,
  RunnableMap,
  RunnableSequence,
  RunnableWithFallbacks,
} from '@langchain/core/runnables';
import type { CachePolicy, CacheView } from '@x/cache-core';
import { LeaderAborted, leaderError, raceAbort } from '@x/cache-core';
import type { AdmissionOptions, CacheCandidate } from './admission.ts';
import { candidateOf, defaultShouldCache } from './admission.ts';
import { langchainCacheError } from './errors.ts';
import type { CachedChatRecord } from './messages.ts';
import {
  modelNameOf,
  recordOfResult,
  restoreChunk,
  resultOfRecord,
  storeGeneration,
  usageOfRecord,
} from './messages.ts';
import { keyable, messageForKey } from './normalize.ts';
import type { SharedCacheOptions } from './options.ts';
import {
  ADMISSION_OPTION,
  basePolicy,
  checkOptions,
  NAME_OPTION,
  resolveView,
  SHARED_OPTIONS,
} from './options.ts';
import { declaredSecrets, isRuntimeOption, SecretFilter } from './secrets.ts';

export interface WithCacheOptions extends SharedCacheOptions, AdmissionOptions {
  /** Key name of the entries; `cache.invalidate(name)` drops them all. @default 'langchain.chat' */
  name?: string | undefined;
  /**
   * Cache `.stream()` too: a miss streams live while recording the chunks, a hit replays them
   * (tool-call chunks included). `false` streams straight from the model, uncached.
   * @default true
   */
  streams?: boolean | undefined;
}

/** Constructor arguments that configure the client, not the answer. */
const RUNTIME_FIELDS = new Set([
  'callbacks',
  'callbackManager',
  'cache',
  'verbose',
  'tags',
  'metadata',
  'maxRetries',
  'maxConcurrency',
  'onFailedAttempt',
  'timeout',
  'signal',
  'client',
  'disableStreaming',
]);

/**
 * What LangGraph puts in a run's `configurable` (thread and checkpoint ids, its `__pregel_*`
 * internals). A configurable model (`initChatModel` with `configurableFields: 'any'`) passes every
 * `configurable` entry to the constructor of the model it builds, where they would make each
 * thread and step a key of its own.
 */
function isGraphRunField(field: string): boolean {
  return field.startsWith('__') || GRAPH_RUN_FIELDS.has(field);
}

const GRAPH_RUN_FIELDS = new Set(['thread_id', 'checkpoint_id', 'checkpoint_ns', 'checkpoint_map']);

/**
 * What `initChatModel()` returns (`ConfigurableModel` of langchain / @langchain/classic): a chat
 * model that builds the provider's model for each call (`_model(config)`, from its defaults, the
 * call's `configurable` fields and its queued `bindTools` / `withStructuredOutput`) and works only
 * through its own `invoke` / `stream`. Its `_generate` has no bound tools, it has no
 * `_streamResponseChunks`, and the runnable it resolves to with structured output has no
 * `_generate` at all.
 */
interface ConfigurableChatModel {
  _model(config?: unknown): Promise<unknown>;
  _queuedMethodOperations: Record<string, unknown>;
}

function asConfigurable(model: unknown): ConfigurableChatModel | undefined {
  const candidate = model as Partial<ConfigurableChatModel>;
  const queued = candidate._queuedMethodOperations;
  return typeof candidate._model === 'function' && typeof queued === 'object' && queued !== null
    ? (candidate as ConfigurableChatModel)
    : undefined;
}

/** Thrown to the callers waiting on a stream whose first caller stopped reading it. */
class StreamAbandonedError extends Error {
  constructor() {
    super('the stream this call was waiting for was abandoned by its consumer');
    this.name = 'StreamAbandonedError';
  }
}

/** Joining again is bounded: each retry needs another first caller that left. */
const MAX_JOIN_ATTEMPTS = 8;

/**
 * The chunks of a live stream, pushed by the call that computes it and read by that call's
 * consumer at its own pace. A consumer that stops early marks it abandoned, which stops the
 * upstream request instead of paying for tokens nobody reads.
 */
class LiveStream<T> {
  abandoned = false;
  readonly #items: T[] = [];
  #read = 0;
  #done = false;
  #failed = false;
  #error: unknown;
  #wake: (() => void) | undefined;

  push(item: T): void {
    this.#items.push(item);
    this.#notify();
  }

  end(): void {
    this.#done = true;
    this.#notify();
  }

  fail(error: unknown): void {
    this.#failed = true;
    this.#error = error;
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async *drain(): AsyncGenerator<T> {
    try {
      while (true) {
        if (this.#read < this.#items.length) {
          const item = this.#items[this.#read]!;
          this.#items[this.#read++] = undefined as T;
          yield item;
          continue;
        }
        if (this.#failed) throw this.#error;
        if (this.#done) return;
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
        });
      }
    } finally {
      if (!this.#done && !this.#failed) this.abandoned = true;
    }
  }
}

/**
 * LangChain's own cache path ends a run it answered from the cache with
 * `handleLLMEnd(output, runId, parentRunId, tags, { cached: true })`, which tracers (LangSmith)
 * show. A wrapper hit is ended by BaseChatModel after `_generate` or `_streamResponseChunks`
 * returns, with no way to pass that flag: the hit's run manager (one per run) adds it to the
 * `handleLLMEnd` call that ends the run.
 */
function markCached(runManager: CallbackManagerForLLMRun | undefined): void {
  if (!runManager) return;
  const end = runManager.handleLLMEnd;
  runManager.handleLLMEnd = function (output, runId, parentRunId, tags, extraParams) {
    runManager.handleLLMEnd = end;
    return end.call(this, output, runId, parentRunId, tags, { ...extraParams, cached: true });
  };
}

function cloneWith<T extends object>(node: T, fields: Record<string, unknown>): T {
  return Object.assign(Object.create(Object.getPrototypeOf(node)), node, fields) as T;
}

/**
 * A chat model that answers from the cache: usable wherever a chat model is (invoke, batch,
 * stream, bindTools, withStructuredOutput, chains, agents). Keys are built from the complete
 * messages (content blocks with their bytes, tool calls, tool results), the model's identity
 * (class, constructor arguments, identifying and invocation parameters, credentials removed) and
 * the call options (tools, tool_choice, response_format, stop …). Concurrent identical calls run
 * the model once; streams are recorded live and replayed chunk by chunk on a hit. Responses
 * `shouldCache` refuses (by default: cut off, filtered, empty, unparsable JSON) are not stored.
 */
export class CachedChatModel<
  CallOptions extends BaseChatModelCallOptions = BaseChatModelCallOptions,
  OutputMessageType extends BaseMessageChunk = AIMessageChunk,
> extends BaseChatModel<CallOptions, OutputMessageType> {
  static override lc_name(): string {
    return 'CachedChatModel';
  }

  /** The wrapped model; call it directly to bypass the cache. */
  readonly inner: BaseChatModel<CallOptions, OutputMessageType>;
  /** The cache view (tier and namespace) entries are read from and written to. */
  readonly view: CacheView;
  readonly cacheOptions: WithCacheOptions;
  readonly #name: string;
  readonly #filter: SecretFilter;
  readonly #policy: CachePolicy<CachedChatRecord>;
  readonly #shouldCache: (candidate: CacheCandidate) => boolean;
  /** Set when the wrapped model is a configurable one (`initChatModel`), resolved per call. */
  readonly #configurable: ConfigurableChatModel | undefined;
  #identity: { value: unknown; model: string | undefined } | undefined;

  constructor(inner: BaseChatModel<CallOptions, OutputMessageType>, options: WithCacheOptions = {}) {
    super({
      callbacks: inner.callbacks,
      tags: inner.tags,
      metadata: inner.metadata,
      verbose: inner.verbose,
      disableStreaming: inner.disableStreaming,
      outputVersion: inner.outputVersion,
    });
    if (!(inner instanceof BaseChatModel)) {
      throw langchainCacheError(
        'E_INVALID_OPTION',
        'withCache() needs a LangChain chat model (a BaseChatModel)',
        'pass e.g. new ChatOpenAI(...); for an LLM use the `cache` option with new LangChainCache()',
      );
    }
    // BaseChatModel does not read `disableStreaming` from its fields (each provider sets it):
    // copied, a model that must not stream does not stream through the wrapper either.
    this.disableStreaming = inner.disableStreaming;
    options = checkOptions('withCache()', options, {
      ...SHARED_OPTIONS,
      ...NAME_OPTION,
      ...ADMISSION_OPTION,
      streams: {
        valid: (value) => typeof value === 'boolean',
        expected: 'true or false',
        fix: 'streams: false',
      },
    });
    this.inner = inner;
    this.cacheOptions = options;
    this.view = resolveView(options, 'responses');
    this.#name = options.name ?? 'langchain.chat';
    this.view.prefix(this.#name);
    this.#filter = new SecretFilter(options.secretKeys).withDeclared(declaredSecrets(inner));
    const policy = basePolicy<CachedChatRecord>(options);
    policy.usage = (record) => usageOfRecord(record, this.#modelIdentity().model);
    this.#policy = policy;
    this.#shouldCache = options.shouldCache ?? defaultShouldCache;
    this.lc_namespace = inner.lc_namespace;
    this.#configurable = asConfigurable(inner);
    // LangChain decides whether a model streams by comparing this method with the base one, so a
    // model that cannot stream must not look as if it could. A configurable model streams when
    // the model it resolves to does, which is known only per call.
    if (
      !this.#configurable &&
      inner._streamResponseChunks === BaseChatModel.prototype._streamResponseChunks
    ) {
      this._streamResponseChunks = BaseChatModel.prototype._streamResponseChunks as never;
    }
  }

  _llmType(): string {
    // Called by the base constructor before `inner` is set.
    return this.inner ? this.inner._llmType() : 'cached';
  }

  override _modelType(): string {
    return this.inner._modelType();
  }

  override _identifyingParams(): Record<string, any> {
    return this.inner._identifyingParams();
  }

  override invocationParams(options?: this['ParsedCallOptions']): any {
    return this.inner.invocationParams(options as never);
  }

  override getLsParams(options: this['ParsedCallOptions']) {
    return this.inner.getLsParams(options as never);
  }

  override _combineLLMOutput(...llmOutputs: LLMResult['llmOutput'][]): LLMResult['llmOutput'] {
    return this.inner._combineLLMOutput?.(...llmOutputs);
  }

  override get callKeys(): string[] {
    return this.inner ? this.inner.callKeys : super.callKeys;
  }

  override get profile() {
    return this.inner.profile;
  }

  override getName(suffix?: string): string {
    return this.inner ? this.inner.getName(suffix) : super.getName(suffix);
  }

  override getNumTokens(content: Parameters<BaseChatModel['getNumTokens']>[0]): Promise<number> {
    return this.inner.getNumTokens(content);
  }

  /** Traces show the wrapped model, which is what answered (or would have). */
  override toJSON() {
    return this.inner.toJSON();
  }

  /** Class, constructor arguments and identifying parameters of the wrapped model, computed once. */
  #modelIdentity(): { value: unknown; model: string | undefined } {
    if (this.#identity) return this.#identity;
    const inner = this.inner;
    const kwargs: Record<string, unknown> = {};
    for (const [field, value] of Object.entries(inner.lc_kwargs ?? {})) {
      if (!RUNTIME_FIELDS.has(field) && !isGraphRunField(field)) kwargs[field] = value;
    }
    let params: unknown;
    try {
      params = keyable(inner._identifyingParams(), this.#filter);
    } catch {
      params = undefined;
    }
    const ctor = inner.constructor as { lc_name?: () => string; name: string };
    const kwargsKey = keyable(kwargs, this.#filter);
    this.#identity = {
      value: { type: inner._llmType(), class: ctor.lc_name?.() ?? ctor.name, kwargs: kwargsKey, params },
      model: modelNameOf(params) ?? modelNameOf(kwargsKey),
    };
    return this.#identity;
  }

  /**
   * The options the wrapped model answers a call with. ChatOpenAI (and the classes built on it)
   * binds tools, structured output and `withConfig` options on a new copy of itself
   * (`defaultOptions`), merged by `_combineCallOptions` in its own `invoke` / `stream`, in
   * `invocationParams` and in `_streamResponseChunks`, but not in `_generate`: called through
   * here, its `_generate` would send no tools while the key said it had. Each call merges them
   * once and uses the result for its key and for the model. The merge is a spread (bound options
   * first, the call's on top), so the inner paths that merge again get the same options back.
   */
  #callOptions(options: this['ParsedCallOptions']): this['ParsedCallOptions'] {
    const inner = this.inner as unknown as { _combineCallOptions?: (options: unknown) => unknown };
    if (typeof inner._combineCallOptions !== 'function') return options;
    return inner._combineCallOptions(options) as this['ParsedCallOptions'];
  }

  /**
   * The runnable a configurable model stands for in one call — the provider's model built with
   * the call's `configurable` fields, its queued `bindTools` / `withStructuredOutput` applied —
   * with every chat model in it answering through this cache, keyed as that model. This is what
   * the configurable model's own `invoke` / `stream` call.
   */
  async #resolve(config: unknown): Promise<Runnable> {
    const resolved = await this.#configurable!._model(config);
    const state = { found: false };
    const routed = this.#route(resolved, state);
    if (!state.found) {
      const name = (resolved as { getName?: () => string } | undefined)?.getName?.() ?? typeof resolved;
      throw langchainCacheError(
        'E_INVALID_OPTION',
        `${this.inner.getName()} resolved to a ${name} that hides the chat model, which cannot be cached`,
        'wrap the provider model itself: withCache(new ChatOpenAI(...)), then bindTools / withStructuredOutput on the result',
      );
    }
    return routed as Runnable;
  }

  /**
   * The cached chat model and call options a configurable model resolves to when LangChain calls
   * `_generate` / `_streamResponseChunks` itself (`generate()`, chat-model stream events). Those
   * calls carry no runnable config, so the model is built from its defaults, as the configurable
   * model's own `_generate` builds it. Options bound on a `RunnableBinding` (`bindTools` of
   * ChatAnthropic and most providers) are merged as the binding merges them.
   */
  async #resolveModel(
    options: this['ParsedCallOptions'],
    config: unknown = options,
  ): Promise<[CachedChatModel<any, any>, this['ParsedCallOptions']]> {
    const routed = await this.#resolve(config);
    if (routed instanceof CachedChatModel) return [routed, options];
    if (routed instanceof RunnableBinding && routed.bound instanceof CachedChatModel) {
      const model = routed.bound as CachedChatModel<any, any>;
      const [, bound] = model._separateRunnableConfigFromCallOptionsCompat(routed.config as never);
      const { signal: _signal, ...fields } = bound as Record<string, unknown>;
      return [model, { ...fields, ...options, ...routed.kwargs } as this['ParsedCallOptions']];
    }
    throw langchainCacheError(
      'E_INVALID_OPTION',
      `${this.inner.getName()} resolved to a ${routed.getName()} (withStructuredOutput), which is not a chat model`,
      'call it with invoke() or stream()',
    );
  }

  /**
   * The key of one call (model identity, invocation parameters, call options and messages) and
   * its policy, whose admission rule sees the call's parameters (did it ask for JSON?).
   */
  #request(
    messages: BaseMessage[],
    options: this['ParsedCallOptions'],
  ): { key: { name: string; request: unknown }; policy: CachePolicy<CachedChatRecord> } {
    const callOptions: Record<string, unknown> = {};
    for (const [field, value] of Object.entries(options ?? {})) {
      if (!isRuntimeOption(field, value)) callOptions[field] = value;
    }
    let invocation: unknown;
    try {
      invocation = keyable(this.inner.invocationParams(options as never), this.#filter);
    } catch {
      invocation = undefined;
    }
    const keyedOptions = keyable(callOptions, this.#filter) as Record<string, unknown>;
    const params = { ...keyedOptions, ...(invocation as Record<string, unknown> | undefined) };
    return {
      key: {
        name: this.#name,
        request: {
          model: this.#modelIdentity().value,
          invocation,
          options: keyedOptions,
          messages: messages.map(messageForKey),
        },
      },
      policy: { ...this.#policy, shouldCache: (record) => this.#admits(record, params) },
    };
  }

  /**
   * Whether a computed response is stored. A record without generations has nothing to replay;
   * the others go to `shouldCache` as LangChain would return them (a stream aggregated), with the
   * usage the provider reported.
   */
  #admits(record: CachedChatRecord, params: Record<string, unknown>): boolean {
    if (record.generations.length === 0) return false;
    const { generations } = resultOfRecord(record);
    return this.#shouldCache(candidateOf(record.streamed ? 'stream' : 'generate', generations, params));
  }

  /**
   * `streamEvents()` without a version (the chat-model event stream): LangChain hands the events
   * generator the call options only, without `configurable`, so a configurable model is resolved
   * here, from the whole call config, as its own `streamEvents` does.
   */
  override streamEvents(input: BaseLanguageModelInput, options?: any, streamOptions?: any): any {
    if (!this.#configurable || options?.version === 'v1' || options?.version === 'v2') {
      return super.streamEvents(input, options, streamOptions);
    }
    const messages = BaseChatModel._convertInputToPromptValue(input).toChatMessages();
    const [, callOptions] = this._separateRunnableConfigFromCallOptionsCompat(options);
    const resolveModel = (parsed: this['ParsedCallOptions']) => this.#resolveModel(parsed, options);
    async function* events(): AsyncGenerator<ChatModelStreamEvent> {
      const [model, resolved] = await resolveModel(callOptions as never);
      yield* model._streamChatModelEvents(messages, resolved);
    }
    return new ChatModelStream(events());
  }

  /** A configurable model (`initChatModel`) is resolved per call, as its own `invoke` does. */
  override async invoke(input: BaseLanguageModelInput, options?: CallOptions): Promise<OutputMessageType> {
    if (!this.#configurable) return super.invoke(input, options);
    const routed = await this.#resolve(options);
    return routed.invoke(input, options) as Promise<OutputMessageType>;
  }

  async _generate(
    messages: BaseMessage[],
    options: this['ParsedCallOptions'],
    runManager?: CallbackManagerForLLMRun,
  ): Promise<ChatResult> {
    if (this.#configurable) {
      const [model, resolved] = await this.#resolveModel(options);
      return model._generate(messages, resolved, runManager);
    }
    options = this.#callOptions(options);
    const signal = options?.signal;
    // Already aborted: nothing is looked up, joined or computed.
    signal?.throwIfAborted();
    const { key, policy } = this.#request(messages, options);
    for (let attempt = 0; ; attempt++) {
      let computed = false;
      let own: ChatResult | undefined;
      try {
        const flight = this.view.getOrComputeResult(
          key,
          async () => {
            computed = true;
            try {
              // A caller that left while the lookup ran does not start a model call.
              signal?.throwIfAborted();
              own = await this.inner._generate(messages, options as never, runManager);
            } catch (error) {
              throw leaderError(error, signal);
            }
            return recordOfResult(own);
          },
          policy,
        );
        // The caller stops waiting as soon as its own signal aborts, whether it runs the model
        // call or joined one. The model call sees only its first caller's signal, so a joiner
        // leaving does not disturb it; a first caller's abort fails it as before (LeaderAborted:
        // nothing stored, joiners ask again).
        const result = await raceAbort(flight, signal);
        // The caller that paid for the response gets it as the provider sent it; everyone else
        // gets a copy that reports no usage, and a run LangChain ends as a cached one.
        if (own) return own;
        markCached(runManager);
        const hit = resultOfRecord(result.value, { zeroUsage: true });
        // What LangChain's own cache does on a hit (`_generateCached`): one token with the whole
        // text, so a token handler (ChatOpenAI({ streaming: true }) with handleLLMNewToken) sees
        // the answer it would have seen token by token. The message goes along as the token's
        // chunk, a copy: handlers that emit chunks rather than text (LangGraph's streamMode
        // 'messages', streamEvents) then emit the whole message, tool calls included, as they did
        // when the run ended with no token.
        const first = hit.generations[0];
        if (runManager && first) {
          const chunk = restoreChunk(storeGeneration(first));
          await runManager.handleLLMNewToken(first.text, undefined, undefined, undefined, undefined, {
            chunk,
          });
        }
        return hit;
      } catch (error) {
        if (computed) throw error instanceof LeaderAborted ? error.reason : error;
        // A joined call whose first caller aborted, or stopped reading the stream it joined, asks
        // again rather than failing with it.
        const gone = error instanceof LeaderAborted || error instanceof StreamAbandonedError;
        if (gone && !signal?.aborted && attempt < MAX_JOIN_ATTEMPTS) continue;
        throw error instanceof LeaderAborted ? (signal?.reason ?? error.reason) : error;
      }
    }
  }

  /**
   * `.stream()`. With `streams: false` it goes straight to the wrapped model, uncached. (Only
   * here: LangChain also streams `invoke()` through `_streamResponseChunks` when a streaming
   * callback handler is attached, as LangGraph's `streamMode: 'messages'` and `streamEvents` do,
   * and those calls stay cached.)
   */
  override async *_streamIterator(
    input: BaseLanguageModelInput,
    options?: Partial<CallOptions>,
  ): AsyncGenerator<OutputMessageType> {
    if (this.#configurable) {
      // The model the configurable one resolves to for this call streams (or not) as it would.
      const target = this.cacheOptions.streams === false ? this.inner : await this.#resolve(options);
      yield* (await target.stream(input, options as never)) as AsyncIterable<OutputMessageType>;
      return;
    }
    if (this.cacheOptions.streams === false) {
      yield* this.inner._streamIterator(input, options as never) as AsyncGenerator<OutputMessageType>;
      return;
    }
    yield* super._streamIterator(input, options);
  }

  override async *_streamResponseChunks(
    messages: BaseMessage[],
    options: this['ParsedCallOptions'],
    runManager?: CallbackManagerForLLMRun,
  ): AsyncGenerator<ChatGenerationChunk> {
    if (this.#configurable) {
      const [model, resolved] = await this.#resolveModel(options);
      if (
        model.disableStreaming ||
        model._streamResponseChunks === BaseChatModel.prototype._streamResponseChunks
      ) {
        // A model that cannot stream answers as one chunk, as LangChain streams such a model.
        const result = await model._generate(messages, resolved, runManager);
        const first = result.generations[0];
        if (first) yield restoreChunk(storeGeneration(first));
        return;
      }
      yield* model._streamResponseChunks(messages, resolved, runManager);
      return;
    }
    options = this.#callOptions(options);
    const { key, policy } = this.#request(messages, options);
    for (let attempt = 0; ; attempt++) {
      const live = new LiveStream<ChatGenerationChunk>();
      let leader = false;
      let started!: () => void;
      const startedPromise = new Promise<void>((resolve) => {
        started = resolve;
      });
      const outcome = this.view.getOrComputeResult(
        key,
        () => {
          leader = true;
          started();
          return this.#record(live, messages, options, runManager);
        },
        policy,
      );
      // The leader learns of failures through the live stream; this only silences the duplicate.
      outcome.catch(() => undefined);
      await Promise.race([
        startedPromise,
        outcome.then(
          () => undefined,
          () => undefined,
        ),
      ]);
      if (leader) {
        yield* live.drain();
        await outcome.catch(() => undefined);
        return;
      }
      let record: CachedChatRecord;
      try {
        record = (await outcome).value;
      } catch (error) {
        const gone = error instanceof StreamAbandonedError || error instanceof LeaderAborted;
        if (gone && !options?.signal?.aborted && attempt < MAX_JOIN_ATTEMPTS) continue;
        throw error instanceof LeaderAborted ? (options?.signal?.reason ?? error.reason) : error;
      }
      markCached(runManager);
      yield* this.#replay(record, options, runManager);
      return;
    }
  }

  /** Streams from the wrapped model into `live`, recording each chunk as the provider sent it. */
  async #record(
    live: LiveStream<ChatGenerationChunk>,
    messages: BaseMessage[],
    options: this['ParsedCallOptions'],
    runManager: CallbackManagerForLLMRun | undefined,
  ): Promise<CachedChatRecord> {
    const iterator = this.inner._streamResponseChunks(messages, options as never, runManager);
    const chunks: CachedChatRecord['generations'] = [];
    try {
      while (true) {
        if (live.abandoned) {
          await iterator.return(undefined);
          throw new StreamAbandonedError();
        }
        const next = await iterator.next();
        if (next.done) break;
        // Recorded before the consumer sees it: LangChain stamps run ids and metadata on chunks.
        chunks.push(storeGeneration(next.value));
        live.push(next.value);
      }
      // A stream cut short by an abort is not the model's answer; never store it.
      options?.signal?.throwIfAborted();
      live.end();
      return { streamed: true, generations: chunks };
    } catch (error) {
      live.fail(error);
      throw leaderError(error, options?.signal);
    }
  }

  async *#replay(
    record: CachedChatRecord,
    options: this['ParsedCallOptions'],
    runManager: CallbackManagerForLLMRun | undefined,
  ): AsyncGenerator<ChatGenerationChunk> {
    // A response cached by invoke() replays as one chunk, as LangChain streams a non-streaming model.
    const stored = record.streamed ? record.generations : record.generations.slice(0, 1);
    for (const each of stored) {
      if (options?.signal?.aborted) return;
      const chunk = restoreChunk(each, { zeroUsage: true });
      yield chunk;
      await runManager?.handleLLMNewToken(chunk.text, undefined, undefined, undefined, undefined, { chunk });
    }
  }

  /**
   * Rebuilds a runnable the wrapped model returned (from bindTools, withStructuredOutput) so that
   * every chat model in it answers through this cache.
   */
  #route(node: unknown, state: { found: boolean }): unknown {
    if (node === this.inner || node instanceof CachedChatModel) {
      state.found = true;
      return node === this.inner ? this : node;
    }
    if (node instanceof BaseChatModel) {
      // Some models bind tools on a fresh copy of themselves; it gets the same cache.
      state.found = true;
      return new CachedChatModel(node as BaseChatModel<any, any>, this.cacheOptions);
    }
    if (node instanceof RunnableBinding) {
      const bound = this.#route(node.bound, state);
      return bound === node.bound ? node : cloneWith(node, { bound });
    }
    if (node instanceof RunnableSequence) {
      // first / middle / last are protected in the typings but plain fields at runtime.
      const sequence = node as unknown as { first: unknown; middle: unknown[]; last: unknown };
      const first = this.#route(sequence.first, state);
      const middle = sequence.middle.map((step) => this.#route(step, state));
      const last = this.#route(sequence.last, state);
      const changed =
        first !== sequence.first ||
        last !== sequence.last ||
        middle.some((step, i) => step !== sequence.middle[i]);
      return changed ? cloneWith(node, { first, middle, last }) : node;
    }
    if (node instanceof RunnableWithFallbacks) {
      const runnable = this.#route(node.runnable, state);
      const fallbacks = node.fallbacks.map((fallback) => this.#route(fallback, state));
      const changed = runnable !== node.runnable || fallbacks.some((step, i) => step !== node.fallbacks[i]);
      return changed ? cloneWith(node, { runnable, fallbacks }) : node;
    }
    if (node instanceof RunnableAssign) {
      const mapper = this.#route(node.mapper, state);
      return mapper === node.mapper ? node : cloneWith(node, { mapper });
    }
    if (node instanceof RunnableMap) {
      let changed = false;
      const steps: Record<string, unknown> = {};
      const map = node as unknown as { steps: Record<string, unknown> };
      for (const [name, step] of Object.entries(map.steps)) {
        steps[name] = this.#route(step, state);
        if (steps[name] !== step) changed = true;
      }
      return changed ? cloneWith(node, { steps }) : node;
    }
    return node;
  }

  override bindTools(
    tools: BindToolsInput[],
    kwargs?: Partial<CallOptions>,
  ): Runnable<BaseLanguageModelInput, OutputMessageType, CallOptions> {
    if (typeof this.inner.bindTools !== 'function') {
      throw langchainCacheError(
        'E_INVALID_OPTION',
        `${this.inner.getName()} does not support tool calling (it has no bindTools())`,
        'use a chat model that does, or call the wrapped model without tools',
      );
    }
    const state = { found: false };
    const bound = this.#route(this.inner.bindTools(tools, kwargs), state);
    if (!state.found) {
      throw langchainCacheError(
        'E_INVALID_OPTION',
        `${this.inner.getName()}.bindTools() returned a runnable that hides the model`,
        'bind the tools on the model first and wrap the result with withCache(), or pass tools as call options',
      );
    }
    return bound as Runnable<BaseLanguageModelInput, OutputMessageType, CallOptions>;
  }

  static {
    // Assigned rather than declared so the method keeps BaseChatModel's overloads (whose types
    // vary across @langchain/core 1.x releases) while running through the cache.
    (CachedChatModel.prototype as { withStructuredOutput: unknown }).withStructuredOutput = function (
      this: CachedChatModel,
      schema: unknown,
      config?: unknown,
    ) {
      const state = { found: false };
      let routed: unknown;
      try {
        routed = this.#route((this.inner.withStructuredOutput as Function)(schema, config), state);
      } catch {
        state.found = false;
      }
      if (state.found) return routed;
      // The model's own implementation hides it (e.g. inside a closure): use LangChain's
      // tool-calling implementation on this wrapper, which reaches the model through bindTools.
      return (BaseChatModel.prototype.withStructuredOutput as Function).call(this, schema, config);
    };
  }
}

type CachedChatModelOf<M> =
  M extends BaseChatModel<infer CallOptions, infer Output> ? CachedChatModel<CallOptions, Output> : never;

/**
 * Wraps a chat model so every call — invoke, batch, stream, bound tools, structured output,
 * inside chains and agents — is answered from the cache when the complete request was seen.
 *
 * ```ts
 * const model = withCache(new ChatOpenAI({ model: 'gpt-4o-mini' }), { cache, ttl: '7d' });
 * ```
 */
export function withCache<M extends BaseChatModel<any, any>>(
  model: M,
  options: WithCacheOptions = {},
): CachedChatModelOf<M> {
  return new CachedChatModel(model, options) as unknown as CachedChatModelOf<M>;
}
