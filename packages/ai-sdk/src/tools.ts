import type { CacheView, ToolLedger, ToolPolicy, ToolScope } from '@x/cache-core';
import { createToolLedger, getDefaultCache, validateName } from '@x/cache-core';
import type { ToolExecutionOptions, ToolSet } from 'ai';
import { invalidOption } from './options.ts';

/** What a `scope` or `idempotencyKey` function is told about the tool call it is asked about. */
export interface ToolCallInfo extends ToolExecutionOptions<any> {
  /** The tool's name: its key in the tool set, and the name its policy is listed under in the ledger. */
  toolName: string;
}

/**
 * Options of `cachedTools`. Pass a `ledger`, or a `cache` and `policies` to build one; a shared
 * ledger is what lets several tool sets (and other adapters) see one history and statistics.
 */
export interface CachedToolsOptions {
  /**
   * The ledger every call goes through: `createToolLedger({ cache, tools: { … } })`. Its per-tool
   * policies decide which tools run once per key (`write`), are cached (`read`) or just run.
   * @default a ledger over `cache` with `policies`
   */
  ledger?: ToolLedger | undefined;
  /**
   * The cache of the ledger built when no `ledger` is given: read tools are cached in its `tools`
   * tier, records go to its store. Not allowed together with `ledger`.
   * @default getDefaultCache()
   */
  cache?: CacheView | undefined;
  /**
   * Per-tool policies of the ledger built when no `ledger` is given (the ledger's `tools` option),
   * keyed by tool name: `{ send_email: { kind: 'write' }, git_status: { kind: 'read', ttl: '30s' } }`.
   * Tools not listed run on every call. Not allowed together with `ledger`.
   * @default none: a `ledger` or `policies` is required
   */
  policies?: Readonly<Record<string, ToolPolicy>> | undefined;
  /**
   * The task and work item the calls belong to: part of a write's derived idempotency key (a retry
   * of the same step replays, the same call in another task runs) and of the history. A function
   * can read it from the call, e.g. from the tool's `context`.
   * @default {} (every call of a write tool with the same input shares one key)
   */
  scope?: ToolScope | ((input: any, call: ToolCallInfo) => ToolScope | undefined) | undefined;
  /**
   * A write's idempotency key, instead of the one the ledger derives from tool, input and scope.
   * Called only for tools whose ledger policy is `write`: read and unlisted tools have no key (they
   * are cached by input, or run every time), so one function can serve the whole tool set. Return
   * `undefined` to use the derived key.
   * Never use `call.toolCallId`: a retried generation produces new ids, so nothing would replay.
   * @default derived by the ledger from tool name, input, taskId and workItemId
   */
  idempotencyKey?: ((input: any, call: ToolCallInfo) => string | undefined) | undefined;
  /** Run every call again and record the new outcome, even when one was recorded or cached. @default false */
  force?: boolean | undefined;
}

const KNOWN_OPTIONS = new Set(['ledger', 'cache', 'policies', 'scope', 'idempotencyKey', 'force']);

/**
 * The same tool set with every `execute` going through the tool ledger: per the ledger's policy
 * for the tool's name, a side-effecting tool runs once per idempotency key and a retry replays
 * its recorded outcome, a read-only tool is answered from the cache while fresh, and any other
 * tool runs as before. Everything else of each tool (description, schemas, `toModelOutput`,
 * approval settings) and the tool set's type are unchanged, so the result goes wherever the tool
 * set went: `generateText({ tools: cachedTools(tools, { ledger }) })`.
 */
export function cachedTools<TOOLS extends ToolSet>(tools: TOOLS, options: CachedToolsOptions): TOOLS {
  if (typeof tools !== 'object' || tools === null || Array.isArray(tools)) {
    throw invalidOption(
      'cachedTools needs a tool set — pass an object of tools: cachedTools({ weather: tool({ … }) }, options)',
    );
  }
  const ledger = resolveLedger(options);
  const scope = options.scope;
  const idempotencyKey = options.idempotencyKey;
  const wrapped: Record<string, unknown> = {};
  for (const [name, original] of Object.entries(tools)) {
    const execute = (original as { execute?: unknown }).execute;
    // Tools without `execute` (client-side, provider-executed) never run here: nothing to record.
    if (typeof execute !== 'function') {
      wrapped[name] = original;
      continue;
    }
    checkToolName(name);
    const run = execute as (input: unknown, callOptions: ToolExecutionOptions<any>) => unknown;
    wrapped[name] = {
      ...original,
      execute: (input: unknown, callOptions: ToolExecutionOptions<any>) => {
        const call: ToolCallInfo = { ...callOptions, toolName: name };
        const kind = ledger.policyOf(name).kind;
        // Only a write has an idempotency key: one given to a read (or unlisted) tool would make
        // the ledger refuse the call, or turn an unlisted tool into a write that runs once.
        const key = kind === 'write' ? idempotencyKey?.(input, call) : undefined;
        const record = (execute: () => unknown): Promise<unknown> =>
          ledger
            .executeOrReplay({
              tool: name,
              input,
              scope: typeof scope === 'function' ? scope(input, call) : scope,
              idempotencyKey: key,
              force: options.force,
              // A tool that stopped because its call was aborted has no outcome to replay: the
              // claim is released and a retry runs it.
              isControlFlow: () => callOptions.abortSignal?.aborted === true,
              execute,
            })
            .then((outcome) => outcome.value);
        if (kind === 'none') {
          return runUnrecorded(() => run.call(original, input, callOptions), record);
        }
        // Recorded or cached, the tool's final output is what a replay or a hit gives back.
        return record(() => finalOutput(run.call(original, input, callOptions)));
      },
    };
  }
  return wrapped as TOOLS;
}

function resolveLedger(options: CachedToolsOptions): ToolLedger {
  if (typeof options !== 'object' || options === null) {
    throw invalidOption(
      'cachedTools needs options — pass { ledger } or { cache, policies: { send_email: { kind: "write" } } }',
    );
  }
  for (const name of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(name)) {
      throw invalidOption(
        `cachedTools: unknown option "${name}" — use one of ${[...KNOWN_OPTIONS].join(', ')}`,
      );
    }
  }
  if (
    options.scope !== undefined &&
    typeof options.scope !== 'function' &&
    typeof options.scope !== 'object'
  ) {
    throw invalidOption(
      'cachedTools: scope must be { taskId, workItemId } or a function returning it — pass scope: { taskId: run.id }',
    );
  }
  if (options.idempotencyKey !== undefined && typeof options.idempotencyKey !== 'function') {
    throw invalidOption(
      "cachedTools: idempotencyKey must be a function of (input, call) — pass idempotencyKey: (input) => 'order:' + input.id",
    );
  }
  if (options.ledger !== undefined) {
    if (options.cache !== undefined || options.policies !== undefined) {
      throw invalidOption(
        'cachedTools takes a ledger, or a cache and policies to build one, not both — put the policies in createToolLedger({ cache, tools })',
      );
    }
    if (typeof options.ledger?.executeOrReplay !== 'function') {
      throw invalidOption(
        'cachedTools: ledger is not a tool ledger — pass createToolLedger({ cache, tools })',
      );
    }
    return options.ledger;
  }
  if (options.policies === undefined) {
    throw invalidOption(
      'cachedTools needs a ledger or policies: without them every tool would just run — ' +
        "pass { ledger } or { policies: { send_email: { kind: 'write' }, git_status: { kind: 'read', ttl: '30s' } } }",
    );
  }
  return createToolLedger({ cache: options.cache ?? getDefaultCache(), tools: options.policies });
}

function checkToolName(name: string): void {
  try {
    validateName(name, 'name');
  } catch (error) {
    throw invalidOption(
      `cachedTools: tool name ${JSON.stringify(name)} cannot name a ledger entry (${(error as Error).message}) — ` +
        'name tools with 1-128 of A-Z a-z 0-9 _ . - / @',
    );
  }
}

/**
 * Runs a tool the ledger neither records nor caches, through the ledger (so it is in the history
 * and sees `toolCallContext()`). Whether it streams is known only from what it returns, as in the
 * SDK: an `async *execute`, or a plain function returning an async iterable, streams. Its outputs
 * are then passed on as they come, and the ledger gets the last one (or the error) at the end.
 */
function runUnrecorded(
  execute: () => unknown,
  record: (execute: () => unknown) => Promise<unknown>,
): unknown {
  let outputs: AsyncIterable<unknown> | undefined;
  let settle: { resolve: (last: unknown) => void; reject: (error: unknown) => void } | undefined;
  let synchronous = true;
  const outcome = record(() => {
    const result = execute();
    if (!isAsyncIterable(result)) return result;
    // A ledger that runs the tool later than in this call cannot hand its outputs on any more.
    if (!synchronous) return finalOutput(result);
    outputs = result;
    return new Promise((resolve, reject) => {
      settle = { resolve, reject };
    });
  });
  synchronous = false;
  if (outputs === undefined || settle === undefined) return outcome;
  return passThrough(outputs, settle, outcome);
}

/** Yields a streaming tool's outputs as they come, then hands its last output (or its error) to the ledger. */
async function* passThrough(
  outputs: AsyncIterable<unknown>,
  settle: { resolve: (last: unknown) => void; reject: (error: unknown) => void },
  outcome: Promise<unknown>,
): AsyncGenerator<unknown> {
  let last: unknown;
  let ended = false;
  try {
    for await (const output of outputs) {
      last = output;
      yield output;
    }
    ended = true;
  } catch (error) {
    ended = true;
    settle.reject(error);
    await outcome.catch(() => undefined);
    throw error;
  } finally {
    // The consumer stopped reading before the last output: the tool did not finish.
    if (!ended) {
      settle.reject(new Error('[@x/ai-sdk-cache] the tool was stopped before its last output'));
      void outcome.catch(() => undefined);
    }
  }
  settle.resolve(last);
  await outcome;
}

/**
 * A streaming `execute` of a recorded or cached tool (an async iterable of preliminary outputs)
 * is recorded by its last output, which is the tool's result for the SDK too; it is then returned
 * as a plain value.
 */
async function finalOutput(value: unknown): Promise<unknown> {
  const resolved = await value;
  if (!isAsyncIterable(resolved)) return resolved;
  let last: unknown;
  for await (const output of resolved) last = output;
  return last;
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function'
  );
}
