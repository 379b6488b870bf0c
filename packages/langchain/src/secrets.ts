/**
 * Key hygiene. LangChain's cache key for a call (`llmString`) and a model's constructor arguments
 * can carry credentials: ChatOpenAI's identifying params spread its client config, API key
 * included. Credentials are dropped before a key is built, so they never reach a store (not
 * even inside a hash) and rotating one leaves every key unchanged.
 */

/** Name endings (lower-case, separators removed) that mark a credential. */
const CREDENTIAL_SUFFIXES = [
  'apikey',
  'apitoken',
  'secret',
  'secretkey',
  'secretaccesskey',
  'accesskey',
  'accesskeyid',
  'privatekey',
  'password',
  'passwd',
  'passphrase',
  'credential',
  'credentials',
  'authorization',
  'auth',
  'token',
  'cookie',
  'cookies',
  'header',
  'headers',
];

/**
 * Request data that is sent to the model as-is: tool definitions and output schemas may well
 * have a property called `password` or `token`, and two schemas differing there must not collide.
 */
export const VERBATIM_KEYS: ReadonlySet<string> = new Set([
  'tools',
  'functions',
  'tool_choice',
  'function_call',
  'response_format',
  'ls_structured_output_format',
  'schema',
  'parameters',
  'input_schema',
  'json_schema',
]);

/**
 * Declared secrets (`lc_secrets`) that are really part of the model's identity: a different Azure
 * deployment or instance is a different model, a different organisation a different tenant. They
 * stay in the key, which is a one-way SHA-256 and never stored with the entry.
 */
const IDENTITY_WORDS = [
  'deployment',
  'instance',
  'endpoint',
  'organization',
  'organisation',
  'project',
  'region',
  'location',
  'baseurl',
  'version',
];

const SECRET_VALUE = /^(?:(?:sk|rk|pk)-[A-Za-z0-9_-]{16,}|(?:Bearer|Basic)\s+\S+)$/;

export function normaliseName(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]/g, '');
}

/** Decides which object keys are credentials; built once per adapter from its `secretKeys`. */
export class SecretFilter {
  readonly #extra: ReadonlySet<string>;
  readonly #declared: ReadonlySet<string>;

  constructor(extra: readonly string[] = [], declared: readonly string[] = []) {
    this.#extra = new Set(extra.map(normaliseName));
    // A declared path `configuration.apiKey` is matched by its last segment wherever it appears.
    this.#declared = new Set(
      declared
        .map((path) => normaliseName(path.split('.').pop() ?? path))
        .filter((name) => name !== '' && !IDENTITY_WORDS.some((word) => name.includes(word))),
    );
  }

  /** A filter that also drops the credentials a model declares in `lc_secrets`. */
  withDeclared(declared: readonly string[]): SecretFilter {
    if (declared.length === 0) return this;
    return new SecretFilter([...this.#extra], [...this.#declared, ...declared]);
  }

  isSecretName(name: string): boolean {
    const bare = normaliseName(name);
    if (bare === '') return false;
    if (this.#extra.has(bare) || this.#declared.has(bare)) return true;
    return CREDENTIAL_SUFFIXES.some((suffix) => bare.endsWith(suffix));
  }

  isSecretValue(value: unknown): boolean {
    if (typeof value === 'string') return SECRET_VALUE.test(value);
    // LangChain's serialised form of a secret: `{ lc: 1, type: 'secret', id: ['OPENAI_API_KEY'] }`.
    return (
      typeof value === 'object' &&
      value !== null &&
      (value as { lc?: unknown }).lc === 1 &&
      (value as { type?: unknown }).type === 'secret'
    );
  }
}

/** The secret paths a LangChain object declares, from its whole class chain (as `toJSON` reads them). */
export function declaredSecrets(target: object): string[] {
  const paths = new Set<string>();
  for (let proto = Object.getPrototypeOf(target); proto; proto = Object.getPrototypeOf(proto)) {
    let declared: unknown;
    try {
      declared = Reflect.get(proto, 'lc_secrets', target);
    } catch {
      continue;
    }
    if (declared && typeof declared === 'object') for (const path of Object.keys(declared)) paths.add(path);
  }
  return [...paths];
}

/** End (exclusive) of the JSON value starting at `start`, or -1 when there is none. */
function scanJson(text: string, start: number): number {
  const first = text[start];
  if (first === undefined) return -1;
  if (first !== '{' && first !== '[' && first !== '"') {
    const comma = text.indexOf(',', start);
    return comma < 0 ? text.length : comma;
  }
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const char = text[i];
    if (inString) {
      if (char === '\\') i++;
      else if (char === '"') {
        inString = false;
        if (depth === 0) return i + 1;
      }
    } else if (char === '"') inString = true;
    else if (char === '{' || char === '[') depth++;
    else if (char === '}' || char === ']') {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return -1;
}

/**
 * Call options that steer the run, not the request sent to the provider: LangChain's runnable
 * config, and what LangGraph adds when a node passes its `config` on (`model.invoke(messages,
 * config)`): per-step ids (`executionInfo`), the runtime's functions, the store and the graph run's
 * own options (`durability` …, LangGraph's `CONFIG_KEYS`). None of them may enter a key, or every
 * graph step would miss.
 */
export const RUNTIME_OPTIONS: ReadonlySet<string> = new Set([
  'signal',
  'timeout',
  'promptIndex',
  'callbacks',
  'runManager',
  'maxConcurrency',
  'tags',
  'metadata',
  'runName',
  'runId',
  'configurable',
  'recursionLimit',
  // the runnable config itself, which LangChain hands on in the parsed call options
  'config',
  // LangGraph's runtime (LangGraphRunnableConfig); `context` and `store` see isRuntimeOption
  'writer',
  'interrupt',
  'heartbeat',
  'executionInfo',
  'serverInfo',
  'control',
  // LangGraph's run options: graph.invoke(input, { durability: 'exit' }) puts it in every node's config
  'durability',
  'checkpointDuring',
  'streamMode',
  'outputKeys',
  'interruptBefore',
  'interruptAfter',
]);

/**
 * Whether a call option steers the run rather than the request. LangGraph's `store` (a BaseStore)
 * and `context` (the run's own context object) share their names with provider parameters (OpenAI's
 * boolean `store`, Ollama's token array `context`), which are kept.
 */
export function isRuntimeOption(name: string, value: unknown): boolean {
  if (RUNTIME_OPTIONS.has(name)) return true;
  if (name === 'store') return typeof value !== 'boolean';
  if (name === 'context') return typeof value === 'object' && value !== null && !Array.isArray(value);
  // streamEvents' `version: 'v2'`, which reaches the call options of the models it runs
  if (name === 'version') return typeof value === 'string' && /^v\d$/.test(value);
  return false;
}

/**
 * Parses LangChain's `llmString` (`key:<JSON>,key:<JSON>,…`, as built by
 * `_getSerializedCacheKeyParametersForCall`) into an object; `undefined` when it has another form.
 */
export function parseLlmString(llmString: string): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = {};
  let i = 0;
  while (i < llmString.length) {
    const colon = llmString.indexOf(':', i);
    if (colon <= i) return undefined;
    const end = scanJson(llmString, colon + 1);
    if (end < 0) return undefined;
    const text = llmString.slice(colon + 1, end);
    // `JSON.stringify` of a function (a LangGraph runtime option such as `interrupt`) is undefined.
    if (text !== 'undefined') {
      try {
        out[llmString.slice(i, colon)] = JSON.parse(text);
      } catch {
        return undefined;
      }
    }
    if (end === llmString.length) return out;
    if (llmString[end] !== ',') return undefined;
    i = end + 1;
  }
  return out;
}

/**
 * Whether a parsed `llmString` holds an object LangChain could not serialise: `JSON.stringify` of a
 * LangChain object that is not serialisable (a tool made with `tool()`, a `DynamicStructuredTool`,
 * a runnable) gives `{ lc: 1, type: 'not_implemented', id: [...class path] }`, the same for every
 * instance of the class, so two different tools passed as call options would share a key.
 */
export function hasUnserialisable(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (Array.isArray(value)) return value.some(hasUnserialisable);
  const object = value as Record<string, unknown>;
  if ('lc' in object && object.type === 'not_implemented') return true;
  return Object.values(object).some(hasUnserialisable);
}

/** The same test on an `llmString` `parseLlmString` could not read. */
export function mentionsUnserialisable(llmString: string): boolean {
  return /"lc"\s*:\s*\d+\s*,\s*"type"\s*:\s*"not_implemented"/.test(llmString);
}

const QUOTED_PAIR = /"([^"\\]*)"\s*:\s*("(?:[^"\\]|\\.)*"|\{[^{}]*\})/g;
const TOP_LEVEL_PAIR = /(^|,)([A-Za-z_$][\w$]*):("(?:[^"\\]|\\.)*")/g;

/** Fallback for an `llmString` LangChain did not build: credentials are redacted pair by pair. */
export function redactLlmString(llmString: string, filter: SecretFilter): string {
  return llmString
    .replace(TOP_LEVEL_PAIR, (pair, lead: string, name: string) =>
      filter.isSecretName(name) ? `${lead}${name}:null` : pair,
    )
    .replace(QUOTED_PAIR, (pair, name: string) => (filter.isSecretName(name) ? `"${name}":null` : pair))
    .replace(/(?:sk|rk|pk)-[A-Za-z0-9_-]{16,}/g, '[secret]');
}
