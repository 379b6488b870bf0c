import { createHash } from 'node:crypto';
import { Embeddings } from '@langchain/core/embeddings';
import { getEnvironmentVariable } from '@langchain/core/utils/env';
import { SyntheticEmbeddings } from '@langchain/core/utils/testing';
import { countTokens, createCache } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { describe, expect, it } from 'vitest';
import { CachedEmbeddings } from '../src/index.ts';
import { cleanupAfterEach, deferred, tempDir } from './helpers.ts';

/** LangChain's synthetic embeddings with a model name, recording what reaches the "provider". */
class RecordingEmbeddings extends SyntheticEmbeddings {
  model: string;
  apiKey = 'AIzaSyEMBEDSECRETSECRET42';
  documents: string[][] = [];
  queries: string[] = [];
  gate: Promise<void> | undefined;

  constructor(model = 'embed-small', vectorSize = 8) {
    super({ vectorSize });
    this.model = model;
  }

  #vector(text: string): Promise<number[]> {
    // Values a float32 cannot hold exactly, as a provider's float64 JSON would be.
    return SyntheticEmbeddings.prototype.embedQuery.call(this, text).then((v) => v.map((x) => x + 1e-9));
  }

  override async embedDocuments(documents: string[]): Promise<number[][]> {
    this.documents.push(documents);
    return Promise.all(documents.map((text) => this.#vector(text)));
  }

  override async embedQuery(document: string): Promise<number[]> {
    this.queries.push(document);
    await this.gate;
    return this.#vector(document);
  }
}

interface OpenAIEmbeddingsFields {
  model?: string;
  modelName?: string;
  apiKey?: string;
  openAIApiKey?: string;
  batchSize?: number;
  stripNewLines?: boolean;
  timeout?: number;
  dimensions?: number;
  encodingFormat?: string;
  configuration?: Record<string, unknown>;
}

/**
 * OpenAIEmbeddings as @langchain/openai 1.6.0 builds itself (fields and constructor copied; the
 * package is not a dependency here): the endpoint and the rest of `configuration` end up in the
 * `clientConfig` object, next to the API key. Requests are recorded, with the endpoint they would
 * have gone to, instead of sent; each server answers with vectors of its own.
 */
class OpenAIEmbeddings extends Embeddings {
  model = 'text-embedding-ada-002';
  modelName: string;
  batchSize = 512;
  stripNewLines = true;
  dimensions: number | undefined;
  timeout: number | undefined;
  organization: string | undefined;
  encodingFormat: string | undefined;
  client: unknown;
  clientConfig: Record<string, unknown>;
  apiKey: string | undefined;
  /** Test only: the endpoint of every request. */
  static requests: string[] = [];

  constructor(fields?: OpenAIEmbeddingsFields) {
    const fieldsWithDefaults = { maxConcurrency: 2, ...fields };
    super(fieldsWithDefaults);
    const apiKey =
      fieldsWithDefaults?.apiKey ??
      fieldsWithDefaults?.openAIApiKey ??
      getEnvironmentVariable('OPENAI_API_KEY');
    this.organization =
      (fieldsWithDefaults?.configuration?.organization as string | undefined) ??
      getEnvironmentVariable('OPENAI_ORGANIZATION');
    this.model = fieldsWithDefaults?.model ?? fieldsWithDefaults?.modelName ?? this.model;
    this.modelName = this.model;
    this.batchSize = fieldsWithDefaults?.batchSize ?? this.batchSize;
    this.stripNewLines = fieldsWithDefaults?.stripNewLines ?? this.stripNewLines;
    this.timeout = fieldsWithDefaults?.timeout;
    this.dimensions = fieldsWithDefaults?.dimensions;
    this.encodingFormat = fieldsWithDefaults?.encodingFormat;
    this.clientConfig = {
      apiKey,
      organization: this.organization,
      dangerouslyAllowBrowser: true,
      ...fields?.configuration,
    };
  }

  #vector(text: string): number[] {
    const endpoint = String(this.clientConfig.baseURL ?? 'https://api.openai.com/v1');
    OpenAIEmbeddings.requests.push(endpoint);
    const digest = createHash('sha256').update(`${endpoint}\n${text}`).digest();
    return [...digest.subarray(0, 4)].map((byte) => byte / 256);
  }

  async embedDocuments(texts: string[]): Promise<number[][]> {
    return texts.map((text) => this.#vector(text));
  }

  async embedQuery(text: string): Promise<number[]> {
    return this.#vector(text);
  }
}

const { closers, memoryCache } = cleanupAfterEach();

describe('CachedEmbeddings', () => {
  it('sends only the texts it has not seen, once each, and keeps the input order', async () => {
    const upstream = new RecordingEmbeddings();
    const embeddings = new CachedEmbeddings(upstream, { cache: memoryCache() });

    const first = await embeddings.embedDocuments(['alpha', 'beta']);
    const second = await embeddings.embedDocuments(['beta', 'gamma', 'alpha', 'gamma']);

    expect(upstream.documents).toEqual([['alpha', 'beta'], ['gamma']]);
    expect(second[0]).toEqual(first[1]);
    expect(second[2]).toEqual(first[0]);
    expect(second[1]).toEqual(second[3]);
    expect(second[1]).not.toEqual(second[0]);
    const stats = await embeddings.view.stats();
    expect(stats).toMatchObject({ hits: 2, misses: 4 });
  });

  it('returns the same float32 numbers on a miss and on a hit', async () => {
    const upstream = new RecordingEmbeddings();
    const embeddings = new CachedEmbeddings(upstream, { cache: memoryCache() });
    const [miss] = await embeddings.embedDocuments(['precision']);
    const [hit] = await embeddings.embedDocuments(['precision']);
    expect(hit).toEqual(miss);
    const [raw] = await upstream.embedDocuments(['precision']);
    expect(miss).toEqual(raw!.map((x) => Math.fround(x)));
  });

  it('stores vectors compactly as raw float32 bytes', async () => {
    const cache = memoryCache();
    const written: number[] = [];
    cache.on('set', (event) => written.push(event.bytes));
    const embeddings = new CachedEmbeddings(new RecordingEmbeddings('embed-wide', 1536), { cache });
    await embeddings.embedDocuments(['a wide vector']);
    // 1536 float64 numbers as JSON text take ~30 KB; 1536 float32 bytes base64-encoded ~8 KB.
    expect(written).toHaveLength(1);
    expect(written[0]).toBeLessThan(1536 * 6);
  });

  it('caches embedQuery separately from documents and runs concurrent identical queries once', async () => {
    const upstream = new RecordingEmbeddings();
    const embeddings = new CachedEmbeddings(upstream, { cache: memoryCache() });
    await embeddings.embedDocuments(['question']);
    const gate = deferred();
    upstream.gate = gate.promise;
    const pending = Promise.all([embeddings.embedQuery('question'), embeddings.embedQuery('question')]);
    await new Promise((resolve) => setImmediate(resolve));
    gate.resolve();
    const [a, b] = await pending;
    expect(a).toEqual(b);
    expect(upstream.queries).toEqual(['question']);
    await embeddings.embedQuery('question');
    expect(upstream.queries).toEqual(['question']);
  });

  it('keys on the model and its settings, not on the API key', async () => {
    const cache = memoryCache();
    const small = new RecordingEmbeddings('embed-small', 8);
    const large = new RecordingEmbeddings('embed-large', 8);
    const wider = new RecordingEmbeddings('embed-small', 16);
    const rotated = new RecordingEmbeddings('embed-small', 8);
    rotated.apiKey = 'AIzaSyEMBEDROTATEDROTATED1';
    for (const upstream of [small, large, wider, rotated]) {
      await new CachedEmbeddings(upstream, { cache }).embedDocuments(['same text']);
    }
    expect([small, large, wider, rotated].map((upstream) => upstream.documents.length)).toEqual([1, 1, 1, 0]);
  });

  it('keys on the endpoint of an OpenAI-compatible client, not on its credentials', async () => {
    const cache = memoryCache();
    OpenAIEmbeddings.requests = [];
    const embed = async (fields: OpenAIEmbeddingsFields) =>
      (await new CachedEmbeddings(new OpenAIEmbeddings(fields), { cache }).embedDocuments(['same text']))[0];
    const model = 'nomic-embed-text';
    const openai = await embed({ model, apiKey: 'sk-test-0123456789abcdef' });
    const local = await embed({
      model,
      apiKey: 'ollama',
      configuration: { baseURL: 'http://localhost:11434/v1' },
    });
    const gpu = await embed({
      model,
      apiKey: 'ollama',
      configuration: { baseURL: 'http://gpu-box:8000/v1' },
    });
    expect(OpenAIEmbeddings.requests).toEqual([
      'https://api.openai.com/v1',
      'http://localhost:11434/v1',
      'http://gpu-box:8000/v1',
    ]);
    expect(new Set([openai, local, gpu].map(String)).size).toBe(3);

    // The same server with another key, auth headers and client plumbing shares the vectors.
    const again = await embed({
      model,
      apiKey: 'rotated',
      configuration: {
        baseURL: 'http://localhost:11434/v1',
        apiKey: 'sk-rotated-0123456789abcdef',
        defaultHeaders: { Authorization: 'Bearer rotated' },
        fetch: async () => new Response('{}'),
        dangerouslyAllowBrowser: false,
        maxRetries: 1,
      },
    });
    expect(again).toEqual(local);
    expect(OpenAIEmbeddings.requests).toHaveLength(3);
  });

  it('keeps state objects a client carries (counters, caches) out of the key', async () => {
    const cache = memoryCache();
    const first = Object.assign(new RecordingEmbeddings('embed-small', 8), { counter: { calls: 0 } });
    const later = Object.assign(new RecordingEmbeddings('embed-small', 8), {
      counter: { calls: 12, values: 40 },
      seen: { 'some text': true },
    });
    await new CachedEmbeddings(first, { cache }).embedDocuments(['same text']);
    await new CachedEmbeddings(later, { cache }).embedDocuments(['same text']);
    expect([first.documents.length, later.documents.length]).toEqual([1, 0]);
  });

  it('keeps the key of a client whose configuration holds no endpoint or other setting', async () => {
    const embeddings = new CachedEmbeddings(
      new OpenAIEmbeddings({
        model: 'text-embedding-3-small',
        apiKey: 'sk-test-0123456789abcdef',
        configuration: { organization: 'org-1', defaultHeaders: { 'X-Api-Key': 'secret' } },
      }),
      { cache: memoryCache() },
    );
    await embeddings.embedDocuments(['stable']);
    // The key this version and the ones before it give that client.
    const settings = {
      model: 'text-embedding-3-small',
      modelName: 'text-embedding-3-small',
      stripNewLines: true,
      organization: 'org-1',
    };
    const request = {
      model: { class: 'OpenAIEmbeddings', model: 'text-embedding-3-small', settings },
      text: 'stable',
    };
    expect(await embeddings.view.has({ name: 'langchain.embed.documents', request })).toBe(true);
  });

  it('uses the model option when the class does not expose its model', async () => {
    const cache = memoryCache();
    const a = new SyntheticEmbeddings({ vectorSize: 4 });
    const b = new SyntheticEmbeddings({ vectorSize: 4 });
    let calls = 0;
    b.embedDocuments = async (texts) => {
      calls++;
      return texts.map(() => [1, 2, 3, 4]);
    };
    await new CachedEmbeddings(a, { cache, model: 'model-a' }).embedDocuments(['t']);
    await new CachedEmbeddings(b, { cache, model: 'model-b' }).embedDocuments(['t']);
    expect(calls).toBe(1);
  });

  it('still hits after a restart on the same SQLite file', async () => {
    const { file, cleanup } = tempDir();
    closers.push(cleanup);
    const path = file('vectors.db');
    const first = createCache({ store: sqliteBackend({ path }) });
    const vectors = await new CachedEmbeddings(new RecordingEmbeddings(), { cache: first }).embedDocuments([
      'kept',
    ]);
    await first.close();

    const second = createCache({ store: sqliteBackend({ path }) });
    closers.push(() => second.close());
    const upstream = new RecordingEmbeddings();
    const again = await new CachedEmbeddings(upstream, { cache: second }).embedDocuments(['kept']);
    expect(again).toEqual(vectors);
    expect(upstream.documents).toEqual([]);
  });

  it('refuses an upstream that returns the wrong number of vectors, naming the fix', async () => {
    const broken = new SyntheticEmbeddings();
    broken.embedDocuments = async () => [[1, 2, 3, 4]];
    const embeddings = new CachedEmbeddings(broken, { cache: memoryCache() });
    await expect(embeddings.embedDocuments(['a', 'b'])).rejects.toThrow(/1 vectors for 2 texts — check/);
  });

  it('reports a vector the cache refuses to store to onError, for documents and queries alike', async () => {
    const cache = createCache({ quotas: { default: { maxEntries: 1, onExceed: 'reject' } } });
    closers.push(() => cache.close());
    const errors: unknown[] = [];
    const embeddings = new CachedEmbeddings(new RecordingEmbeddings(), {
      cache,
      onError: (error) => errors.push(error),
    });
    await embeddings.embedDocuments(['alpha']);
    expect(errors).toEqual([]);

    expect(await embeddings.embedQuery('beta')).toHaveLength(8);
    expect(await embeddings.embedDocuments(['gamma'])).toHaveLength(1);
    expect(errors.map((error) => (error as { code?: string }).code)).toEqual([
      'E_QUOTA_EXCEEDED',
      'E_QUOTA_EXCEEDED',
    ]);
    // Both count the refusal: the query through getOrCompute, the documents through view.set
    // with the policy's onStoreError.
    expect(await embeddings.view.stats()).toMatchObject({ sets: 1, droppedWrites: 2 });
  });

  it("usage: 'estimate' saves the text's tokens, priced for the embeddings model", async () => {
    const cache = memoryCache();
    const embeddings = new CachedEmbeddings(new RecordingEmbeddings('text-embedding-3-small'), {
      cache,
      usage: 'estimate',
    });
    const text = 'the quick brown fox jumps over the lazy dog';
    await embeddings.embedDocuments([text]);
    await embeddings.embedDocuments([text]);
    await embeddings.embedQuery(text);
    await embeddings.embedQuery(text);
    const stats = await embeddings.view.stats();
    const tokens = await countTokens(text);
    expect(stats.hits).toBe(2);
    expect(stats.inputTokensSaved).toBe(2 * tokens);
    expect(stats.outputTokensSaved).toBe(0);
    expect(stats.costSavedUsd).toBeCloseTo((2 * tokens * 0.02) / 1e6, 12);
  });

  it("keys precision: 'float64' apart from float32, whose keys stay as they were", async () => {
    const cache = memoryCache();
    const raw = [0.1, 0.2, 1 / 3];
    const rounded = raw.map((x) => Math.fround(x));
    const sent: string[] = [];
    const upstream = {
      embedDocuments: async (texts: string[]) => {
        sent.push(...texts);
        return texts.map(() => [...raw]);
      },
      embedQuery: async (text: string) => {
        sent.push(text);
        return [...raw];
      },
    };
    const float32 = new CachedEmbeddings(upstream, { cache, model: 'm' });
    const float64 = new CachedEmbeddings(upstream, { cache, model: 'm', precision: 'float64' });
    // An entry stored under the float32 key as it has always been is still a hit.
    const identity = { class: 'Object', model: 'm', settings: {} };
    await float32.view.set(
      { name: 'langchain.embed.documents', request: { model: identity, text: 'old' } },
      Float32Array.from([1, 2, 3]),
    );
    expect(await float32.embedDocuments(['old'])).toEqual([[1, 2, 3]]);
    // An entry a float64 wrapper stored under that same key before precision was keyed gives a
    // float32 wrapper the numbers its own miss would, not the float64 ones.
    await float32.view.set(
      { name: 'langchain.embed.documents', request: { model: identity, text: 'older' } },
      Float64Array.from(raw),
    );
    await float32.view.set(
      { name: 'langchain.embed.query', request: { model: identity, text: 'older' } },
      Float64Array.from(raw),
    );
    expect(await float32.embedDocuments(['older'])).toEqual([rounded]);
    expect(await float32.embedQuery('older')).toEqual(rounded);

    // Stored as float32, not served rounded to float64 …
    expect(await float32.embedDocuments(['a'])).toEqual([rounded]);
    expect(await float64.embedDocuments(['a'])).toEqual([raw]);
    // … and stored as float64, not served exact to float32 (its hits and misses agree).
    expect(await float64.embedDocuments(['b'])).toEqual([raw]);
    expect(await float32.embedDocuments(['b'])).toEqual([rounded]);
    expect(await float32.embedQuery('q')).toEqual(rounded);
    expect(await float64.embedQuery('q')).toEqual(raw);
    expect(sent).toEqual(['a', 'a', 'b', 'b', 'q', 'q']);
    // Each precision hits its own entries.
    expect(await float64.embedDocuments(['a', 'b'])).toEqual([raw, raw]);
    expect(await float32.embedDocuments(['a', 'b'])).toEqual([rounded, rounded]);
    expect(await float64.embedQuery('q')).toEqual(raw);
    expect(sent).toHaveLength(6);
  });

  it('refuses a vector that is not all finite numbers, naming the fix, and stores none of the answer', async () => {
    const upstream = new RecordingEmbeddings();
    const vector = (text: string): unknown[] =>
      text === 'bad' ? [null, 'x'] : text === 'nan' ? [0.5, Number.NaN] : [0.5, 0.25];
    upstream.embedDocuments = async (texts) => {
      upstream.documents.push(texts);
      return texts.map(vector) as number[][];
    };
    upstream.embedQuery = async (text) => {
      upstream.queries.push(text);
      return vector(text) as number[];
    };
    const embeddings = new CachedEmbeddings(upstream, { cache: memoryCache() });
    const refused = embeddings.embedDocuments(['good', 'good', 'bad']);
    await expect(refused).rejects.toMatchObject({ code: 'E_INVALID_OPTION' });
    await expect(refused).rejects.toThrow(
      /malformed vector for document 2 \(an item of type null\); nothing was cached — check the embeddings class/,
    );
    await expect(embeddings.embedQuery('nan')).rejects.toThrow(
      /malformed vector for the query \(an item that is NaN\)/,
    );
    await expect(embeddings.embedDocuments(['nan'])).rejects.toThrow(/an item that is NaN/);
    // Nothing of the refused answers was stored: each text goes upstream again.
    expect(await embeddings.embedDocuments(['good'])).toEqual([[0.5, 0.25]]);
    await expect(embeddings.embedQuery('nan')).rejects.toThrow(/NaN/);
    expect(upstream.documents).toEqual([['good', 'bad'], ['nan'], ['good']]);
    expect(upstream.queries).toEqual(['nan', 'nan']);
    expect(await embeddings.view.stats()).toMatchObject({ sets: 1 });
  });
});
