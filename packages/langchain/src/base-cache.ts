import { BaseCache } from '@langchain/core/caches';
import type { Generation } from '@langchain/core/outputs';
import type { CachePolicy, CacheView } from '@x/cache-core';
import type { AdmissionOptions, CacheCandidate } from './admission.ts';
import { candidateOf, defaultShouldCache } from './admission.ts';
import type { CachedGeneration } from './messages.ts';
import { modelNameOf, restoreGeneration, storeGeneration, usageOfGenerations } from './messages.ts';
import { keyable } from './normalize.ts';
import type { SharedCacheOptions } from './options.ts';
import {
  ADMISSION_OPTION,
  basePolicy,
  checkOptions,
  NAME_OPTION,
  reportError,
  resolveView,
  SHARED_OPTIONS,
} from './options.ts';
import {
  hasUnserialisable,
  isRuntimeOption,
  mentionsUnserialisable,
  parseLlmString,
  redactLlmString,
  SecretFilter,
} from './secrets.ts';

export interface LangChainCacheOptions extends SharedCacheOptions, AdmissionOptions {
  /** Key name of the entries; `cache.invalidate(name)` drops them all. @default 'langchain.generate' */
  name?: string | undefined;
}

/** What an entry holds: the generations of one prompt. */
interface CachedGenerations {
  generations: CachedGeneration[];
}

/**
 * LangChain's `BaseCache`, backed by `@x/cache-core`: pass it as the `cache` option of any chat
 * model or LLM (`new ChatOpenAI({ cache: new LangChainCache({ cache }) })`).
 *
 * A hit restores the complete generation — message class, content, tool calls, additional_kwargs,
 * response_metadata and id — with zero usage (as LangChain reports a cached response), and the
 * usage it replaced is counted as tokens saved. Responses `shouldCache` refuses (by default: cut
 * off, filtered, empty, unparsable JSON) are not stored. Credentials in LangChain's `llmString`
 * are dropped before keying, so they never reach the store and rotating a key keeps the cache.
 *
 * LangChain hands this class only a prompt string and that `llmString`; see `withCache` for a
 * wrapper that keys on the complete request (images, tool messages) and caches streams.
 */
export class LangChainCache extends BaseCache<Generation[]> {
  /** The cache view (tier and namespace) entries are read from and written to. */
  readonly view: CacheView;
  readonly #options: LangChainCacheOptions;
  readonly #name: string;
  readonly #filter: SecretFilter;
  readonly #policy: CachePolicy<CachedGenerations>;
  readonly #shouldCache: (candidate: CacheCandidate) => boolean;

  constructor(options: LangChainCacheOptions = {}) {
    super();
    options = checkOptions('LangChainCache', options, {
      ...SHARED_OPTIONS,
      ...NAME_OPTION,
      ...ADMISSION_OPTION,
    });
    this.view = resolveView(options, 'responses');
    this.#options = options;
    this.#name = options.name ?? 'langchain.generate';
    // Validates the name now rather than on the first model call.
    this.view.prefix(this.#name);
    this.#filter = new SecretFilter(options.secretKeys);
    this.#policy = basePolicy(options);
    this.#shouldCache = options.shouldCache ?? defaultShouldCache;
  }

  /**
   * The key of one prompt under one `llmString`, without credentials, and the parameters it was
   * read from (none when the string has another form). `undefined` when the `llmString` cannot
   * tell requests apart: it holds an object LangChain could not serialise (tools made with `tool()`
   * passed as call options all read `not_implemented`), so the call is neither read nor stored.
   */
  #key(
    prompt: string,
    llmString: string,
  ):
    | { key: { name: string; request: unknown }; params: Record<string, unknown>; model?: string }
    | undefined {
    const parsed = parseLlmString(llmString);
    if (!parsed) {
      if (mentionsUnserialisable(llmString)) return undefined;
      return {
        key: { name: this.#name, request: { prompt, llm: redactLlmString(llmString, this.#filter) } },
        params: {},
      };
    }
    for (const [option, value] of Object.entries(parsed)) {
      if (isRuntimeOption(option, value)) delete parsed[option];
    }
    if (hasUnserialisable(parsed)) return undefined;
    const llm = keyable(parsed, this.#filter) as Record<string, unknown>;
    return { key: { name: this.#name, request: { prompt, llm } }, params: llm, model: modelNameOf(llm) };
  }

  async lookup(prompt: string, llmString: string): Promise<Generation[] | null> {
    try {
      const keyed = this.#key(prompt, llmString);
      if (!keyed) {
        // Uncacheable: the call goes to the model, as after any miss.
        this.view.recordLookup('miss');
        return null;
      }
      const result = await this.view.getResult<CachedGenerations>(keyed.key);
      if (!result) return null;
      return result.value.generations.map((stored) => restoreGeneration(stored, { zeroUsage: true }));
    } catch (error) {
      reportError(this.#options, error);
      return null;
    }
  }

  async update(prompt: string, llmString: string, value: Generation[]): Promise<void> {
    try {
      const keyed = this.#key(prompt, llmString);
      if (!keyed) return;
      const { key, params, model } = keyed;
      // A refused response answered its call but is never written: the lookup counted the miss.
      if (!this.#shouldCache(candidateOf('generate', value, params))) return;
      const record: CachedGenerations = { generations: value.map(storeGeneration) };
      const usage = usageOfGenerations(record.generations, undefined, model);
      await this.view.set(key, record, usage ? { ...this.#policy, usage } : this.#policy);
    } catch (error) {
      reportError(this.#options, error);
    }
  }
}
