/**
 * `initChatModel` and its `ConfigurableModel` as @langchain/classic 1.0.50 (`langchain/chat_models/
 * universal`) implements them, copied method for method from its `dist/chat_models/universal.js`.
 * @langchain/classic is not a dependency of this package, and it loads the provider class with
 * `import('@langchain/openai')`; the one change is that providers come from the `providers` map
 * the test passes (the stand-ins in helpers.ts). `streamLog` and `streamEvents` are left out: the
 * wrapper calls neither.
 */
import type { BaseLanguageModelInput } from '@langchain/core/language_models/base';
import type { BaseChatModelParams, BindToolsInput } from '@langchain/core/language_models/chat_models';
import { BaseChatModel } from '@langchain/core/language_models/chat_models';
import type { AIMessageChunk, BaseMessage } from '@langchain/core/messages';
import type { ChatResult } from '@langchain/core/outputs';
import type { RunnableConfig } from '@langchain/core/runnables';
import { ensureConfig, RunnableBinding } from '@langchain/core/runnables';
import { AsyncGeneratorWithSetup, IterableReadableStream } from '@langchain/core/utils/stream';

export type Providers = Record<string, new (fields: any) => BaseChatModel<any, any>>;

interface ConfigurableModelFields extends BaseChatModelParams {
  defaultConfig?: Record<string, any>;
  configurableFields?: string[] | 'any';
  configPrefix?: string;
  queuedMethodOperations?: Record<string, any>;
  /** Stand-in only: where `_initChatModelHelper` finds the provider classes. */
  providers: Providers;
}

async function initChatModelHelper(
  providers: Providers,
  model: string,
  modelProvider: string | undefined,
  params: Record<string, any> = {},
): Promise<BaseChatModel<any, any>> {
  const modelProviderCopy = modelProvider;
  if (!modelProviderCopy) {
    throw new Error(
      `Unable to infer model provider for { model: ${model} }, please specify modelProvider directly.`,
    );
  }
  const Provider = providers[modelProviderCopy];
  if (!Provider) throw new Error(`Unsupported { modelProvider: ${modelProviderCopy} }.`);
  const { modelProvider: _unused, ...passedParams } = params;
  return new Provider({ model, ...passedParams });
}

export class ConfigurableModel extends BaseChatModel<any, AIMessageChunk> {
  _llmType(): string {
    return 'chat_model';
  }

  override lc_namespace = ['langchain', 'chat_models'];
  _defaultConfig: Record<string, any> = {};
  _configurableFields: string[] | 'any' = 'any';
  _configPrefix: string;
  _queuedMethodOperations: Record<string, any> = {};
  readonly #providers: Providers;

  constructor(fields: ConfigurableModelFields) {
    super(fields);
    this.#providers = fields.providers;
    this._defaultConfig = fields.defaultConfig ?? {};
    if (fields.configurableFields === 'any') this._configurableFields = 'any';
    else this._configurableFields = fields.configurableFields ?? ['model', 'modelProvider'];
    if (fields.configPrefix) {
      this._configPrefix = fields.configPrefix.endsWith('_')
        ? fields.configPrefix
        : `${fields.configPrefix}_`;
    } else this._configPrefix = '';
    this._queuedMethodOperations = fields.queuedMethodOperations ?? this._queuedMethodOperations;
  }

  async _model(config?: RunnableConfig): Promise<any> {
    const params = { ...this._defaultConfig, ...this._modelParams(config) };
    let initializedModel: any = await initChatModelHelper(
      this.#providers,
      params.model,
      params.modelProvider,
      params,
    );
    const queuedMethodOperationsEntries = Object.entries(this._queuedMethodOperations);
    if (queuedMethodOperationsEntries.length > 0) {
      for (const [method, args] of queuedMethodOperationsEntries) {
        if (method in initializedModel && typeof initializedModel[method] === 'function') {
          initializedModel = await initializedModel[method](...args);
        }
      }
    }
    return initializedModel;
  }

  async _generate(
    messages: BaseMessage[],
    options?: this['ParsedCallOptions'],
    runManager?: any,
  ): Promise<ChatResult> {
    return (await this._model(options as RunnableConfig))._generate(messages, options ?? {}, runManager);
  }

  override bindTools(tools: BindToolsInput[], params?: Record<string, any>): ConfigurableModel {
    const newQueuedOperations = { ...this._queuedMethodOperations };
    newQueuedOperations.bindTools = [tools, params];
    return new ConfigurableModel({
      defaultConfig: this._defaultConfig,
      configurableFields: this._configurableFields,
      configPrefix: this._configPrefix,
      queuedMethodOperations: newQueuedOperations,
      providers: this.#providers,
    });
  }

  // An instance field, as in @langchain/classic.
  override withStructuredOutput: any = (schema: unknown, ...args: unknown[]) => {
    const newQueuedOperations = { ...this._queuedMethodOperations };
    newQueuedOperations.withStructuredOutput = [schema, ...args];
    return new ConfigurableModel({
      defaultConfig: this._defaultConfig,
      configurableFields: this._configurableFields,
      configPrefix: this._configPrefix,
      queuedMethodOperations: newQueuedOperations,
      providers: this.#providers,
    });
  };

  _modelParams(config?: RunnableConfig): Record<string, any> {
    const configurable = config?.configurable ?? {};
    let modelParams: Record<string, any> = {};
    for (const [key, value] of Object.entries(configurable)) {
      if (key.startsWith(this._configPrefix)) {
        const strippedKey = this._removePrefix(key, this._configPrefix);
        modelParams[strippedKey] = value;
      }
    }
    if (this._configurableFields !== 'any') {
      const fields = this._configurableFields;
      modelParams = Object.fromEntries(Object.entries(modelParams).filter(([key]) => fields.includes(key)));
    }
    return modelParams;
  }

  _removePrefix(str: string, prefix: string): string {
    return str.startsWith(prefix) ? str.slice(prefix.length) : str;
  }

  override withConfig(config?: RunnableConfig): any {
    const mergedConfig: RunnableConfig = { ...(config || {}) };
    const modelParams = this._modelParams(mergedConfig);
    const remainingConfig: RunnableConfig = Object.fromEntries(
      Object.entries(mergedConfig).filter(([k]) => k !== 'configurable'),
    );
    remainingConfig.configurable = Object.fromEntries(
      Object.entries(mergedConfig.configurable || {}).filter(
        ([k]) =>
          this._configPrefix && !Object.keys(modelParams).includes(this._removePrefix(k, this._configPrefix)),
      ),
    );
    const newConfigurableModel = new ConfigurableModel({
      defaultConfig: { ...this._defaultConfig, ...modelParams },
      configurableFields: Array.isArray(this._configurableFields)
        ? [...this._configurableFields]
        : this._configurableFields,
      configPrefix: this._configPrefix,
      queuedMethodOperations: this._queuedMethodOperations,
      providers: this.#providers,
    });
    return new RunnableBinding({ config: mergedConfig, bound: newConfigurableModel, kwargs: {} });
  }

  override async invoke(input: BaseLanguageModelInput, options?: any): Promise<AIMessageChunk> {
    const model = await this._model(options);
    const config = ensureConfig(options);
    return model.invoke(input, config);
  }

  override async stream(input: BaseLanguageModelInput, options?: any): Promise<IterableReadableStream<any>> {
    const model = await this._model(options);
    const wrappedGenerator = new AsyncGeneratorWithSetup({
      generator: await model.stream(input, options),
      config: options,
    });
    await wrappedGenerator.setup;
    return IterableReadableStream.fromAsyncGenerator(wrappedGenerator);
  }

  override async *transform(
    generator: AsyncGenerator<BaseLanguageModelInput>,
    options: any,
  ): AsyncGenerator<any> {
    const model = await this._model(options);
    const config = ensureConfig(options);
    yield* model.transform(generator, config);
  }
}

export interface InitChatModelFields extends Record<string, any> {
  modelProvider?: string;
  configurableFields?: string[] | 'any';
  configPrefix?: string;
}

/** `initChatModel(model, fields)` of @langchain/classic, with `providers` in place of the package imports. */
export async function initChatModel(
  providers: Providers,
  model?: string,
  fields?: InitChatModelFields,
): Promise<ConfigurableModel> {
  let { configurableFields, configPrefix, modelProvider, ...params } = {
    configPrefix: '',
    ...(fields ?? {}),
  };
  if (modelProvider === undefined && model?.includes(':')) {
    const modelComponents = model.split(':', 2);
    if (modelComponents[0]! in providers) [modelProvider, model] = modelComponents as [string, string];
  }
  let configurableFieldsCopy = Array.isArray(configurableFields)
    ? [...configurableFields]
    : configurableFields;
  if (!model && configurableFieldsCopy === undefined) configurableFieldsCopy = ['model', 'modelProvider'];
  const paramsCopy: Record<string, any> = { ...params };
  if (configurableFieldsCopy === undefined) {
    return new ConfigurableModel({
      defaultConfig: { ...paramsCopy, model, modelProvider },
      configPrefix,
      providers,
    });
  }
  if (model) paramsCopy.model = model;
  if (modelProvider) paramsCopy.modelProvider = modelProvider;
  return new ConfigurableModel({
    defaultConfig: paramsCopy,
    configPrefix,
    configurableFields: configurableFieldsCopy,
    providers,
  });
}
