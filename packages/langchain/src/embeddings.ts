import type { EmbeddingsInterface } from '@langchain/core/embeddings';
import { Embeddings } from '@langchain/core/embeddings';
import type { CachePolicy, CacheView, KeyInput, Usage } from '@x/cache-core';
import { countTokens, redactUrl, vectorProblem } from '@x/cache-core';
import { langchainCacheError } from './errors.ts';
import type { SharedCacheOptions } from './options.ts';
import {
  basePolicy,
  checkOptions,
  isFunction,
  NAME_OPTION,
  reportError,
  resolveView,
  SHARED_OPTIONS,
} from './options.ts';
import { declaredSecrets, SecretFilter } from './secrets.ts';

export interface CachedEmbeddingsOptions extends SharedCacheOptions {
  /**
   * The model id in the key (and for pricing saved tokens). Set it when the embeddings class does
   * not expose its model as `model`, `modelName` or `modelId`.
   * @default detected from the wrapped embeddings
   */
  model?: string | undefined;
  /**
   * How vectors are stored: `float32` (4 bytes a dimension, what embedding APIs compute in) or
   * `float64` (exact JS numbers). Hits and misses return the same values either way: the two
   * are keyed apart, so neither is served the other's entries.
   * @default 'float32'
   */
  precision?: 'float32' | 'float64' | undefined;
  /**
   * What a hit saves: `'estimate'` counts the text's tokens with a real tokenizer, a function
   * gets the vector. @default none (hits are counted, saved tokens are not)
   */
  usage?: CachePolicy<Float32Array | Float64Array>['usage'] | undefined;
  /** Key name prefix: entries are `${name}.documents` and `${name}.query`. @default 'langchain.embed' */
  name?: string | undefined;
}

/** Own fields of an embeddings client that do not change the vectors. */
const RUNTIME_FIELDS = new Set([
  'batchSize',
  'timeout',
  'maxRetries',
  'maxConcurrency',
  'verbose',
  'caller',
  'client',
]);

/**
 * Where a client sends its requests, when a settings object holds it (OpenAIEmbeddings'
 * `clientConfig`, built from its `configuration`): the server decides the vectors as much as the
 * model name does.
 */
const ENDPOINT_FIELDS = ['baseURL', 'baseUrl', 'basePath', 'endpoint', 'endpointUrl', 'host'];

type Vector = Float32Array | Float64Array;

function isPrimitive(value: unknown): boolean {
  return typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean';
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Embeddings answered from the cache, text by text: `embedDocuments` sends only the texts it has
 * not seen (each once, however often it occurs in the batch) and returns every vector in input
 * order; `embedQuery` is cached separately, since some providers embed queries differently.
 * Keys hold the model and the client's settings (dimensions, input type …); vectors are stored
 * as raw Float32Array bytes.
 */
export class CachedEmbeddings extends Embeddings {
  /** The wrapped embeddings; call them directly to bypass the cache. */
  readonly embeddings: EmbeddingsInterface;
  /** The cache view (tier and namespace) vectors are read from and written to. */
  readonly view: CacheView;
  readonly #options: CachedEmbeddingsOptions;
  readonly #identity: unknown;
  readonly #names: { documents: string; query: string };
  readonly #policy: CachePolicy<Vector>;
  readonly #Vector: Float32ArrayConstructor | Float64ArrayConstructor;

  constructor(embeddings: EmbeddingsInterface, options: CachedEmbeddingsOptions = {}) {
    super({});
    if (
      typeof embeddings?.embedDocuments !== 'function' ||
      typeof (embeddings as { embedQuery?: unknown }).embedQuery !== 'function'
    ) {
      throw langchainCacheError(
        'E_INVALID_OPTION',
        'CachedEmbeddings needs a LangChain Embeddings instance (embedDocuments and embedQuery)',
        'pass e.g. new OpenAIEmbeddings(...) as the first argument',
      );
    }
    options = checkOptions('CachedEmbeddings', options, {
      ...SHARED_OPTIONS,
      ...NAME_OPTION,
      model: {
        valid: (value) => typeof value === 'string',
        expected: 'a model id',
        fix: "model: 'text-embedding-3-small'",
      },
      precision: {
        valid: (value) => value === 'float32' || value === 'float64',
        expected: "'float32' or 'float64'",
        fix: "precision: 'float64'",
      },
      usage: {
        valid: (value) =>
          value === 'estimate' || isFunction(value) || (typeof value === 'object' && value !== null),
        expected: "'estimate', a function of the vector or a usage object",
        fix: "usage: 'estimate'",
      },
    });
    this.embeddings = embeddings;
    this.#options = options;
    this.view = resolveView(options, 'embeddings');
    const name = options.name ?? 'langchain.embed';
    this.#names = { documents: `${name}.documents`, query: `${name}.query` };
    this.view.prefix(this.#names.documents);
    this.#Vector = options.precision === 'float64' ? Float64Array : Float32Array;
    this.#identity = identityOf(embeddings, options);
    const policy = basePolicy<Vector>(options);
    if (options.usage !== undefined && options.usage !== 'estimate') policy.usage = options.usage;
    this.#policy = policy;
  }

  /**
   * The policy for one text. With `usage: 'estimate'` a hit saves the text's input tokens (an
   * embedding has no output tokens), priced for the embeddings model.
   */
  async #policyFor(text: string): Promise<CachePolicy<Vector>> {
    if (this.#options.usage !== 'estimate') return this.#policy;
    const { model } = this.#identity as { model?: unknown };
    return {
      ...this.#policy,
      usage: {
        inputTokens: await countTokens(text),
        outputTokens: 0,
        model: typeof model === 'string' ? model : undefined,
      },
    };
  }

  #key(kind: 'documents' | 'query', text: string): KeyInput {
    // float32 entries cannot serve a float64 wrapper (their numbers are rounded), nor float64
    // entries a float32 one (hits would return other numbers than misses): float64 is keyed
    // apart, and float32 (the default) keeps the keys it always had.
    const request =
      this.#Vector === Float64Array
        ? { model: this.#identity, text, precision: 'float64' }
        : { model: this.#identity, text };
    return { name: this.#names[kind], request };
  }

  /** The vector to store and return; anything but finite numbers is refused (`what` names the text). */
  #pack(vector: unknown, what: string): Vector {
    const problem = vectorProblem(vector);
    if (problem !== undefined) {
      throw langchainCacheError(
        'E_INVALID_OPTION',
        `the wrapped embeddings returned a malformed vector for ${what} (${problem}); nothing was cached`,
        'check the embeddings class; CachedEmbeddings expects an array of finite numbers per text',
      );
    }
    return this.#Vector.from(vector as ArrayLike<number>);
  }

  async #store(key: KeyInput, text: string, vector: Vector): Promise<void> {
    try {
      await this.view.set(key, vector, await this.#policyFor(text));
    } catch (error) {
      reportError(this.#options, error);
    }
  }

  async embedDocuments(documents: string[]): Promise<number[][]> {
    const keys = documents.map((text) => this.#key('documents', text));
    let cached: (Vector | undefined)[];
    try {
      cached = await this.view.getMany<Vector>(keys);
    } catch (error) {
      reportError(this.#options, error);
      cached = new Array(documents.length).fill(undefined);
    }
    const out: number[][] = new Array(documents.length);
    const missing = new Map<string, number[]>();
    documents.forEach((text, index) => {
      const hit = cached[index];
      if (hit !== undefined) {
        out[index] = Array.from(this.#own(hit));
        return;
      }
      const positions = missing.get(text);
      if (positions) positions.push(index);
      else missing.set(text, [index]);
    });
    if (missing.size === 0) return out;
    const texts = [...missing.keys()];
    const vectors = await this.embeddings.embedDocuments(texts);
    if (!Array.isArray(vectors) || vectors.length !== texts.length) {
      throw langchainCacheError(
        'E_INVALID_OPTION',
        `the wrapped embeddings returned ${Array.isArray(vectors) ? vectors.length : 'no'} vectors for ${texts.length} texts`,
        'check the embeddings class; embedDocuments must return one vector per text, in order',
      );
    }
    // Every vector is checked before any is stored: a malformed answer leaves nothing behind.
    const packed = texts.map((text, i) => this.#pack(vectors[i], `document ${missing.get(text)![0]}`));
    const writes: Promise<void>[] = [];
    texts.forEach((text, i) => {
      const vector = packed[i]!;
      const positions = missing.get(text)!;
      // Misses return the stored precision too, so a text embeds to the same numbers hit or miss.
      for (const position of positions) out[position] = Array.from(vector);
      writes.push(this.#store(keys[positions[0]!]!, text, vector));
    });
    await Promise.all(writes);
    return out;
  }

  async embedQuery(document: string): Promise<number[]> {
    // The policy (with the text's token count, for 'estimate') is built on a miss only: a hit
    // does not pay for the tokenizer.
    let policy = this.#policy;
    const vector = await this.view.getOrCompute(
      this.#key('query', document),
      async () => {
        const packed = this.#pack(await this.embeddings.embedQuery(document), 'the query');
        policy = await this.#policyFor(document);
        return packed;
      },
      {
        ...this.#policy,
        usage: this.#options.usage === 'estimate' ? () => policy.usage as Usage : this.#policy.usage,
      },
    );
    return Array.from(this.#own(vector));
  }

  /**
   * A hit in this wrapper's precision: an entry stored by a version that keyed float64 and
   * float32 alike may hold the other one, and a hit must give the numbers a miss would.
   */
  #own(vector: Vector): Vector {
    return vector instanceof this.#Vector ? vector : this.#Vector.from(vector);
  }
}

/**
 * The embeddings model's identity: its class, model id, every primitive setting except runtime
 * ones and credentials (by name, by shape and as the class declares them in `lc_secrets`), and the
 * endpoint a settings object names (OpenAIEmbeddings' `configuration.baseURL`, in its
 * `clientConfig`): two clients of the same model on different servers never share vectors. Other
 * objects are left out: on a client they are as likely to be state that changes between calls (a
 * counter, a cache) as settings. The endpoint is keyed only when there is one, so a client without
 * it keeps the key it always had.
 */
function identityOf(embeddings: EmbeddingsInterface, options: CachedEmbeddingsOptions): unknown {
  const filter = new SecretFilter(options.secretKeys).withDeclared(declaredSecrets(embeddings));
  const settings: Record<string, unknown> = {};
  const endpoint: Record<string, string> = {};
  for (const [field, value] of Object.entries(embeddings)) {
    if (RUNTIME_FIELDS.has(field) || filter.isSecretName(field) || filter.isSecretValue(value)) continue;
    if (isPrimitive(value)) settings[field] = value;
    else if (isPlainObject(value)) {
      for (const name of ENDPOINT_FIELDS) {
        const url = value[name];
        if (typeof url === 'string' && url !== '' && !filter.isSecretValue(url)) {
          endpoint[`${field}.${name}`] = redactUrl(url);
        }
      }
    }
  }
  const ctor = (embeddings as object).constructor as { lc_name?: () => string; name?: string } | undefined;
  const identity: Record<string, unknown> = {
    class: ctor?.lc_name?.() ?? ctor?.name,
    model: options.model ?? settings.model ?? settings.modelName ?? settings.modelId ?? settings.model_name,
    settings,
  };
  if (Object.keys(endpoint).length > 0) identity.endpoint = endpoint;
  return identity;
}
