import type { CallbackManagerForToolRun } from '@langchain/core/callbacks/manager';
import { Document } from '@langchain/core/documents';
import { isBaseMessage, ToolMessage } from '@langchain/core/messages';
import type { StructuredToolInterface, ToolRunnableConfig } from '@langchain/core/tools';
import type { CacheView, ToolLedger, ToolPolicy, ToolScope } from '@x/cache-core';
import { createToolLedger, getDefaultCache, raceAbort, validateName } from '@x/cache-core';
import { langchainCacheError } from './errors.ts';
import type { CachedMessage } from './messages.ts';
import { restoreMessage, storeMessage } from './messages.ts';
import type { OptionCheck } from './options.ts';
import { checkOptions, isFunction, SHARED_OPTIONS } from './options.ts';

/**
 * Options of `cachedTool`. Pass the `ledger` your tools share (one history, one set of policies),
 * or a `policy` for this tool and, optionally, the `cache` to build a ledger on.
 */
export interface CachedToolOptions {
  /**
   * The ledger every call goes through: `createToolLedger({ cache, tools: { … } })`. Its policy for
   * the tool's name decides whether it runs once per key (`write`), is cached (`read`) or just runs.
   * @default a ledger over `cache` with `policy` for this tool
   */
  ledger?: ToolLedger | undefined;
  /**
   * This tool's policy when no `ledger` is given: `{ kind: 'write' }`, `{ kind: 'read', ttl: '30s' }`.
   * Not allowed together with `ledger` (list it in the ledger's `tools` instead).
   * @default none: a `ledger` or a `policy` is required
   */
  policy?: ToolPolicy | undefined;
  /**
   * The cache of the ledger built from `policy`: read results go to its `tools` tier, records to
   * its store. Not allowed together with `ledger`.
   * @default getDefaultCache()
   */
  cache?: CacheView | undefined;
  /**
   * The name the ledger knows the tool by (its policy, history and keys).
   * @default the tool's `name`
   */
  name?: string | undefined;
  /**
   * The task and work item a call belongs to: part of a write's derived idempotency key (a retry of
   * the same step replays, the same call in another task runs) and of the history. A function gets
   * the parsed input and the run config, e.g. `(input, config) => ({ taskId: config.configurable?.thread_id })`.
   * @default {} (every call of a write tool with the same input shares one key)
   */
  scope?: ToolScope | ((input: any, config: ToolRunnableConfig) => ToolScope | undefined) | undefined;
  /**
   * A write's idempotency key, instead of the one the ledger derives from tool, input and scope.
   * Never use the tool call's `id`: a retried model call produces new ids, so nothing would replay.
   * @default derived by the ledger from the tool name, input, taskId and workItemId
   */
  idempotencyKey?: ((input: any, config: ToolRunnableConfig) => string | undefined) | undefined;
  /** Run every call again and record the new outcome, even when one was recorded or cached. @default false */
  force?: boolean | undefined;
}

const KNOWN_OPTIONS = new Set(['ledger', 'policy', 'cache', 'name', 'scope', 'idempotencyKey', 'force']);

/** Type checks of the options the ledger does not check itself (it checks `policy`). */
const OPTION_CHECKS: Readonly<Record<string, OptionCheck>> = {
  cache: SHARED_OPTIONS.cache,
  name: { valid: (value) => typeof value === 'string', expected: 'a tool name', fix: "name: 'get_weather'" },
  scope: {
    valid: (value) =>
      isFunction(value) || (typeof value === 'object' && value !== null && !Array.isArray(value)),
    expected: '{ taskId, workItemId } or a function returning it',
    fix: 'scope: { taskId: run.id } or scope: (input, config) => ({ taskId: config.configurable?.thread_id })',
  },
  idempotencyKey: {
    valid: isFunction,
    expected: 'a function of (input, config)',
    fix: "idempotencyKey: (input) => 'order:' + input.id",
  },
  force: { valid: (value) => typeof value === 'boolean', expected: 'true or false', fix: 'force: true' },
};

/** The body of a StructuredTool, after LangChain parsed the input and before it formats the output. */
type ToolBody = (
  input: unknown,
  runManager?: CallbackManagerForToolRun,
  config?: ToolRunnableConfig,
) => Promise<unknown> | AsyncGenerator<unknown, unknown>;

/** How a ToolMessage returned by a tool is recorded: its fields, rebuilt for the call that replays it. */
interface RecordedToolMessage {
  '~toolMessage': {
    content: ToolMessage['content'];
    artifact?: unknown;
    status?: 'success' | 'error' | undefined;
    name?: string | undefined;
    tool_call_id: string;
    additional_kwargs?: Record<string, unknown>;
    response_metadata?: Record<string, unknown>;
    metadata?: Record<string, unknown> | undefined;
  };
}

/**
 * The same tool, with its body going through the tool ledger: per the ledger's policy for the
 * tool's name, a side-effecting tool runs once per idempotency key and a retry replays its
 * recorded output, a read-only tool is answered from the cache while fresh, and any other tool runs
 * as before. Works for `StructuredTool` subclasses, `DynamicStructuredTool`, `DynamicTool` and what
 * `tool()` returns. The result is an instance of the same class with the same name, description,
 * schema and settings, so it goes wherever the tool went: `invoke`, `model.bindTools([...])`, a
 * tool-calling loop, an agent. Input parsing, callbacks and the `ToolMessage` for the current
 * tool call are LangChain's, on every call; only the tool's own body is skipped on a replay.
 */
export function cachedTool<T extends StructuredToolInterface>(tool: T, options: CachedToolOptions): T {
  const body = (tool as unknown as { _call?: unknown })._call;
  if (typeof tool !== 'object' || tool === null || typeof body !== 'function') {
    throw langchainCacheError(
      'E_INVALID_OPTION',
      'cachedTool needs a LangChain tool (a StructuredTool, DynamicStructuredTool, DynamicTool or what tool() returns)',
      'pass the tool object; for a runnable.asTool(), build it with tool(fn, { name, schema }) instead',
    );
  }
  const where = `cachedTool(${JSON.stringify(tool.name)})`;
  const given = checkToolOptions(where, options);
  const name = checkName(given.name ?? tool.name);
  const ledger = resolveLedger(where, name, given);
  const run = body as ToolBody;
  const { scope, idempotencyKey, force } = given;

  // A retriever-style tool returns [content, artifact]: the artifact (Documents…) keeps its classes.
  const contentAndArtifact = (tool as { responseFormat?: unknown }).responseFormat === 'content_and_artifact';
  const wrapped = Object.create(tool) as T;
  // Instance field, not a subclass: the tool keeps its class, prototype chain and every setting.
  Object.defineProperty(wrapped, '_call', {
    configurable: true,
    writable: true,
    value: async (
      input: unknown,
      runManager?: CallbackManagerForToolRun,
      config: ToolRunnableConfig = {},
    ) => {
      let produced: { value: unknown } | undefined;
      // The body runs to its end and its outcome is recorded whatever the caller's signal does:
      // LangChain only stops waiting on an abort (the body goes on), so recording the AbortError
      // would replay a cancellation for a side effect that happened. The caller still stops
      // waiting at once.
      const { signal } = config;
      // Already aborted: nothing runs, as with LangChain's own tool wrapper.
      signal?.throwIfAborted();
      const bodyConfig: ToolRunnableConfig = signal ? { ...config, signal: undefined } : config;
      const pending = ledger.executeOrReplay({
        tool: name,
        input,
        scope: typeof scope === 'function' ? scope(input, config) : scope,
        idempotencyKey: idempotencyKey?.(input, config),
        force,
        // LangGraph's interrupt() (and its other bubble-up errors) pauses the graph: not an
        // outcome to record, or the resumed call would replay the pause instead of running.
        isControlFlow: isGraphBubbleUp,
        execute: async () => {
          const value = await finalOutput(run.call(tool, input, runManager, bodyConfig), runManager);
          produced = { value };
          return encode(value, config, contentAndArtifact);
        },
      });
      pending.catch(() => undefined);
      const outcome = await raceAbort(pending, signal);
      // The caller that ran the tool gets exactly what it returned; the others get the record.
      if (outcome.source === 'executed' && produced) return produced.value;
      return decode(outcome.value, config);
    },
  });
  return wrapped;
}

/** The options of `cachedTool`, type-checked, without those set to `null` (see `checkOptions`). */
function checkToolOptions(where: string, options: CachedToolOptions): CachedToolOptions {
  if (typeof options !== 'object' || options === null) {
    throw langchainCacheError(
      'E_INVALID_OPTION',
      `${where} needs options`,
      "pass { ledger } or { policy: { kind: 'write' } }",
    );
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) {
      throw langchainCacheError(
        'E_INVALID_OPTION',
        `${where}: unknown option "${key}"`,
        `use one of ${[...KNOWN_OPTIONS].join(', ')}`,
      );
    }
  }
  return checkOptions(where, options, OPTION_CHECKS);
}

function resolveLedger(where: string, name: string, options: CachedToolOptions): ToolLedger {
  if (options.ledger !== undefined) {
    if (options.policy !== undefined || options.cache !== undefined) {
      throw langchainCacheError(
        'E_INVALID_OPTION',
        `${where} takes a ledger, or a policy and a cache to build one, not both`,
        'list the policy in createToolLedger({ cache, tools: { [name]: policy } })',
      );
    }
    if (typeof options.ledger?.executeOrReplay !== 'function') {
      throw langchainCacheError(
        'E_INVALID_OPTION',
        `${where}: ledger is not a tool ledger`,
        'pass createToolLedger({ cache, tools })',
      );
    }
    return options.ledger;
  }
  if (options.policy === undefined) {
    throw langchainCacheError(
      'E_INVALID_OPTION',
      `${where} needs a ledger or a policy: without one the tool would just run`,
      "pass { ledger } (shared by your tools) or { policy: { kind: 'read', ttl: '30s' } }",
    );
  }
  return createToolLedger({ cache: options.cache ?? getDefaultCache(), tools: { [name]: options.policy } });
}

function checkName(name: string): string {
  try {
    return validateName(name, 'name');
  } catch (error) {
    throw langchainCacheError(
      'E_INVALID_NAME',
      `tool name ${JSON.stringify(name)} cannot name a ledger entry (${(error as Error).message})`,
      "pass a name option of 1-128 characters of A-Z a-z 0-9 _ . - / @, e.g. name: 'get_weather'",
    );
  }
}

/**
 * A streaming tool body (an async generator) sends its events to the callbacks as LangChain
 * would, and is recorded by its return value, which is the tool's output.
 */
async function finalOutput(
  value: Promise<unknown> | AsyncGenerator<unknown, unknown>,
  runManager: CallbackManagerForToolRun | undefined,
): Promise<unknown> {
  const resolved = await value;
  if (!isAsyncGenerator(resolved)) return resolved;
  for (;;) {
    const step = await resolved.next();
    if (step.done) return step.value;
    await runManager?.handleToolEvent(step.value);
  }
}

function isAsyncGenerator(value: unknown): value is AsyncGenerator<unknown, unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as AsyncGenerator).next === 'function' &&
    typeof (value as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function'
  );
}

function encode(value: unknown, config: ToolRunnableConfig, contentAndArtifact = false): unknown {
  if (contentAndArtifact && Array.isArray(value) && value.length === 2) {
    return { '~contentAndArtifact': [value[0], encodeData(value[1])] };
  }
  if (isCommand(value)) {
    commandClass ??= value.constructor as CommandClass;
    const recorded: RecordedCommand = {
      '~command': {
        update: encodeData(value.update),
        resume: encodeData(value.resume),
        goto: encodeGoto(value.goto),
        graph: value.graph,
        toolCallId: config.toolCall?.id,
      },
    };
    return recorded;
  }
  if (!ToolMessage.isInstance(value)) return value;
  const recorded: RecordedToolMessage = {
    '~toolMessage': {
      content: value.content,
      artifact: encodeData(value.artifact),
      status: value.status,
      name: value.name,
      tool_call_id: value.tool_call_id,
      additional_kwargs: value.additional_kwargs,
      response_metadata: value.response_metadata,
      metadata: value.metadata,
    },
  };
  return recorded;
}

/** A recorded ToolMessage answers the tool call being made now, not the one it first answered. */
async function decode(value: unknown, config: ToolRunnableConfig): Promise<unknown> {
  if (typeof value !== 'object' || value === null) return value;
  if ('~command' in value) return replayCommand((value as RecordedCommand)['~command'], config);
  if ('~contentAndArtifact' in value) {
    const [content, artifact] = (value as { '~contentAndArtifact': [unknown, unknown] })[
      '~contentAndArtifact'
    ];
    return [content, decodeData(artifact, undefined, undefined)];
  }
  if (!('~toolMessage' in value)) return value;
  const fields = (value as RecordedToolMessage)['~toolMessage'];
  return new ToolMessage({
    ...fields,
    artifact: decodeData(fields.artifact, undefined, undefined),
    tool_call_id: config.toolCall?.id ?? fields.tool_call_id,
  });
}

/** What a LangGraph `Command` carries (duck-typed: `@langchain/langgraph` is an optional peer). */
interface CommandLike {
  lg_name: 'Command';
  update?: unknown;
  resume?: unknown;
  goto?: unknown;
  graph?: string | undefined;
}

type CommandClass = new (fields: Record<string, unknown>) => unknown;

/** A `Command` a tool returned, recorded as data; messages inside stay faithful (class, fields). */
interface RecordedCommand {
  '~command': {
    update: unknown;
    resume: unknown;
    goto: unknown;
    graph: string | undefined;
    /** The tool call it answered; its ToolMessages are re-addressed to the call that replays it. */
    toolCallId: string | undefined;
  };
}

/** The class that rebuilds a Command: taken from the first one seen, else loaded on replay. */
let commandClass: CommandClass | undefined;

/**
 * A Command instance, as LangGraph's own isCommand sees it: a plain object that merely has
 * `lg_name: 'Command'` (JSON from elsewhere) is data, not a Command.
 */
function isCommand(value: unknown): value is CommandLike {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { lg_name?: unknown }).lg_name === 'Command' &&
    !isPlainRecord(value) &&
    value.constructor !== Object
  );
}

function isPlainRecord(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** The key LangGraph's `Overwrite` keeps its value under, in its class and in its wire form. */
const OVERWRITE = '__overwrite__';

/**
 * Messages, LangGraph's `Send` and `Overwrite` inside a Command become data the cache stores
 * exactly (messages keep their class and fields).
 */
function encodeData(value: unknown): unknown {
  if (isBaseMessage(value)) return { '~message': storeMessage(value) };
  if (value instanceof Document) {
    return {
      '~document': { pageContent: value.pageContent, metadata: encodeData(value.metadata), id: value.id },
    };
  }
  if (Array.isArray(value)) return value.map(encodeData);
  if (typeof value !== 'object' || value === null) return value;
  const lgName = (value as { lg_name?: unknown }).lg_name;
  if (lgName === 'Send') {
    const send = value as { node: string; args: unknown; timeout?: unknown };
    return {
      lg_name: 'Send',
      node: send.node,
      args: encodeData(send.args),
      ...(send.timeout !== undefined ? { timeout: send.timeout } : {}),
    };
  }
  if (lgName === 'Overwrite' || (isPlainRecord(value) && OVERWRITE in value)) {
    return { '~overwrite': encodeData((value as Record<string, unknown>)[OVERWRITE]) };
  }
  if (isPlainRecord(value)) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, encodeData(item)]));
  }
  return value;
}

function encodeGoto(goto: unknown): unknown {
  // A Command keeps goto as a list; an empty one means "no goto".
  if (Array.isArray(goto) && goto.length === 0) return undefined;
  return encodeData(goto);
}

/**
 * Rebuilds what `encodeData` stored. A tool message that answered the recorded call (a
 * ToolMessage, or a plain `{ tool_call_id }` message) answers the current one instead, without
 * its old id, which would make the messages reducer replace the earlier answer in place.
 */
function decodeData(value: unknown, from: string | undefined, to: string | undefined): unknown {
  if (Array.isArray(value)) return value.map((item) => decodeData(item, from, to));
  if (!isPlainRecord(value)) return value;
  const readdress = to !== undefined && to !== from;
  if ('~message' in value) {
    const stored = value['~message'] as CachedMessage;
    if (readdress && stored.type === 'tool' && stored.fields.tool_call_id === from) {
      const { id: _oldId, ...fields } = stored.fields;
      return restoreMessage({ ...stored, fields: { ...fields, tool_call_id: to } });
    }
    return restoreMessage(stored);
  }
  if ('~overwrite' in value) return { [OVERWRITE]: decodeData(value['~overwrite'], from, to) };
  if ('~document' in value) {
    const stored = value['~document'] as { pageContent: string; metadata: unknown; id?: string };
    return new Document({
      pageContent: stored.pageContent,
      metadata: decodeData(stored.metadata, from, to) as Record<string, unknown>,
      ...(stored.id !== undefined ? { id: stored.id } : {}),
    });
  }
  const out = Object.fromEntries(
    Object.entries(value).map(([key, item]) => [key, decodeData(item, from, to)]),
  );
  if (readdress && out.tool_call_id === from && from !== undefined) {
    out.tool_call_id = to;
    delete out.id;
  }
  return out;
}

async function replayCommand(
  recorded: RecordedCommand['~command'],
  config: ToolRunnableConfig,
): Promise<unknown> {
  if (!commandClass) {
    try {
      commandClass = (await import('@langchain/langgraph')).Command as unknown as CommandClass;
    } catch (error) {
      throw langchainCacheError(
        'E_MISSING_DEPENDENCY',
        `replaying a recorded LangGraph Command needs @langchain/langgraph (${(error as Error).message})`,
        'install @langchain/langgraph next to @langchain/core',
      );
    }
  }
  const from = recorded.toolCallId;
  const to = config.toolCall?.id ?? from;
  const fields: Record<string, unknown> = {};
  if (recorded.update !== undefined) fields.update = decodeData(recorded.update, from, to);
  if (recorded.resume !== undefined) fields.resume = decodeData(recorded.resume, from, to);
  if (recorded.goto !== undefined) fields.goto = decodeData(recorded.goto, from, to);
  if (recorded.graph !== undefined) fields.graph = recorded.graph;
  return new commandClass(fields);
}

/** LangGraph's control-flow errors (GraphInterrupt, NodeInterrupt, ParentCommand) say so themselves. */
function isGraphBubbleUp(error: unknown): boolean {
  return (
    typeof error === 'object' && error !== null && (error as { is_bubble_up?: unknown }).is_bubble_up === true
  );
}
