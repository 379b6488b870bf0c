import type { ToolLedger, ToolScope } from '@x/cache-core';
import { CacheError, validateName } from '@x/cache-core';
import { decoratorError, rejectGenerator } from './errors.ts';
import { argsKey } from './registry.ts';
import type { CachedLlmCallDecorator } from './types.ts';

/**
 * Options of `@cachedTool(name, options)`. The ledger's policy for `name` decides what a call does:
 * `write` runs once per idempotency key and replays the outcome, `read` is cached while fresh,
 * anything else runs every time.
 */
export interface CachedToolOptions<This = any, Args extends unknown[] = any[]> {
  /**
   * The ledger the calls go through, or a function of the instance for services that receive it
   * in the constructor: `(self) => self.ledger`.
   */
  ledger: ToolLedger | ((self: This) => ToolLedger);
  /**
   * The task and work item a call belongs to: part of a write's derived idempotency key (a retry
   * of the same step replays, the same call in another task runs) and of the history. A function
   * gets the instance and the arguments: `(self, …args) => ({ taskId: self.taskId })`.
   * @default {} (every call of a write tool with the same input shares one key)
   */
  scope?: ToolScope | ((self: This, ...args: Args) => ToolScope | undefined);
  /**
   * What identifies a call (the tool input, keyed and recorded), instead of all of its arguments:
   * `(self, path, options) => ({ path })`. The instance is never part of it unless selected here.
   * @default the arguments, as a list (trailing `undefined` ones dropped)
   */
  input?: (self: This, ...args: Args) => unknown;
  /**
   * A write's idempotency key, instead of the one the ledger derives from the name, input and scope.
   * @default derived by the ledger from the tool name, input, taskId and workItemId
   */
  idempotencyKey?: (self: This, ...args: Args) => string | undefined;
  /** Run again and record the new outcome even when one was recorded or cached: a flag or a function of the call. @default false */
  force?: boolean | ((self: This, ...args: Args) => boolean);
}

/**
 * What `@cachedTool(name, options)` returns: a method decorator for standard (TC39) decorators and
 * for `experimentalDecorators`. The method keeps its type; one that does not return a promise, or
 * whose parameters do not fit the options' functions, is a type error.
 */
export type CachedToolDecorator<This, Args extends unknown[], R> = CachedLlmCallDecorator<This, Args, R>;

const KNOWN_OPTIONS = new Set(['ledger', 'scope', 'input', 'idempotencyKey', 'force']);

interface Resolved {
  ledger: ToolLedger | ((self: unknown) => ToolLedger);
  scope: ToolScope | ((self: unknown, ...args: unknown[]) => ToolScope | undefined) | undefined;
  input: ((self: unknown, ...args: unknown[]) => unknown) | undefined;
  idempotencyKey: ((self: unknown, ...args: unknown[]) => string | undefined) | undefined;
  force: boolean | ((self: unknown, ...args: unknown[]) => boolean) | undefined;
}

/**
 * Runs an async method through the tool ledger under `name`: per the ledger's policy for that
 * name, a side-effecting method runs once per idempotency key and every later call (a retry, a run
 * after a restart) gets the recorded result or error, a read-only one is answered from the cache
 * while fresh, and anything else runs every time. Works with standard decorators and
 * `experimentalDecorators`.
 *
 * @example
 * class Repo {
 *   @cachedTool('git_commit', { ledger: (self: Repo) => self.ledger, scope: (self: Repo) => ({ taskId: self.taskId }) })
 *   async commit(message: string): Promise<{ sha: string }> { … }
 * }
 */
export function cachedTool<This = any, Args extends unknown[] = any[], R = any>(
  name: string,
  options: CachedToolOptions<This, Args>,
): CachedToolDecorator<This, Args, R> {
  const where = `@cachedTool(${JSON.stringify(name)})`;
  try {
    validateName(name, 'name');
  } catch (error) {
    throw decoratorError(
      'E_INVALID_NAME',
      `${where}: ${JSON.stringify(name)} is not a valid tool name`,
      'use 1-128 characters of A-Z a-z 0-9 _ . - / @, the name the ledger lists the tool under, e.g. "git_commit"',
      { cause: error },
    );
  }
  const resolved = checkOptions(options, where);
  const decorator = (target: unknown, context: unknown, descriptor?: unknown): unknown => {
    if (typeof context === 'object' && context !== null && 'kind' in context) {
      const kind = (context as { kind: string }).kind;
      if (kind !== 'method' || typeof target !== 'function') throw notAMethod(where, kind);
      rejectGenerator(target, where, `method ${String((context as { name?: unknown }).name)}`);
      return wrap(name, resolved, target, where);
    }
    if (typeof context === 'string' || typeof context === 'symbol') {
      const method = (descriptor as PropertyDescriptor | undefined)?.value;
      if (typeof method !== 'function') {
        throw notAMethod(where, descriptor === undefined ? 'property' : 'getter or setter');
      }
      rejectGenerator(method, where, `method ${String(context)}`);
      const next = descriptor as PropertyDescriptor;
      next.value = wrap(name, resolved, method, where);
      return next;
    }
    throw decoratorError(
      'E_INVALID_OPTION',
      `${where} was applied to something that is not a class method`,
      "put it on an async method: @cachedTool('git_status', { ledger }) async status() { … }",
    );
  };
  return decorator as CachedToolDecorator<This, Args, R>;
}

function notAMethod(where: string, kind: string): CacheError {
  return decoratorError(
    'E_INVALID_OPTION',
    `${where} can only decorate methods, not a ${kind}`,
    'put it on an async method, or call ledger.executeOrReplay({ tool, input, execute }) directly',
  );
}

function checkOptions(input: unknown, where: string): Resolved {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw decoratorError(
      'E_INVALID_OPTION',
      `${where} needs options with a ledger`,
      'pass { ledger } or { ledger: (self) => self.ledger }',
    );
  }
  const options = input as Record<string, unknown>;
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) {
      throw decoratorError(
        'E_INVALID_OPTION',
        `${where}: unknown option "${key}"`,
        `use one of ${[...KNOWN_OPTIONS].join(', ')}`,
      );
    }
  }
  const ledger = options.ledger;
  if (
    typeof ledger !== 'function' &&
    (typeof ledger !== 'object' ||
      ledger === null ||
      typeof (ledger as ToolLedger).executeOrReplay !== 'function')
  ) {
    throw decoratorError(
      'E_INVALID_OPTION',
      `${where}: option "ledger" must be a tool ledger or a function returning one`,
      'pass ledger: createToolLedger({ cache, tools }) or ledger: (self) => self.ledger',
    );
  }
  const scope = options.scope;
  if (scope !== undefined && typeof scope !== 'function' && (typeof scope !== 'object' || scope === null)) {
    throw decoratorError(
      'E_INVALID_OPTION',
      `${where}: option "scope" must be { taskId, workItemId } or a function returning it`,
      'pass scope: (self) => ({ taskId: self.taskId })',
    );
  }
  for (const key of ['input', 'idempotencyKey']) {
    if (options[key] !== undefined && typeof options[key] !== 'function') {
      throw decoratorError(
        'E_INVALID_OPTION',
        `${where}: option "${key}" must be a function of (self, …args)`,
        `pass ${key}: (self, …args) => …`,
      );
    }
  }
  const force = options.force;
  if (force !== undefined && typeof force !== 'boolean' && typeof force !== 'function') {
    throw decoratorError(
      'E_INVALID_OPTION',
      `${where}: option "force" must be a boolean or a function of (self, …args)`,
      'pass force: true',
    );
  }
  return options as unknown as Resolved;
}

function wrap(name: string, options: Resolved, original: Function, where: string): Function {
  const wrapper = async function cachedTool(this: unknown, ...args: unknown[]): Promise<unknown> {
    const ledger = typeof options.ledger === 'function' ? options.ledger(this) : options.ledger;
    if (typeof ledger !== 'object' || ledger === null || typeof ledger.executeOrReplay !== 'function') {
      throw decoratorError(
        'E_INVALID_OPTION',
        `${where}: the ledger option returned ${ledger === null ? 'null' : typeof ledger} instead of a tool ledger`,
        'return createToolLedger({ cache, tools }) (e.g. the ledger your service was given)',
      );
    }
    const scope = typeof options.scope === 'function' ? options.scope(this, ...args) : options.scope;
    const force = typeof options.force === 'function' ? options.force(this, ...args) : options.force;
    let started = false;
    try {
      const outcome = await ledger.executeOrReplay({
        tool: name,
        input: options.input ? options.input(this, ...args) : argsKey(args),
        scope,
        idempotencyKey: options.idempotencyKey?.(this, ...args),
        force,
        execute: () => {
          started = true;
          return original.apply(this, args);
        },
      });
      return outcome.value;
    } catch (error) {
      // Only the key of the input: a replay of an output that could not be recorded has the same code.
      if (!started && CacheError.isInstance(error) && error.name === 'UnserializableValueError') {
        throw decoratorError(
          'E_UNSERIALIZABLE',
          `${where}: the call's arguments cannot be turned into a tool input: ${(error as Error).message}`,
          'pass an input option that selects the serialisable parts, e.g. input: (self, path, options) => ({ path })',
          { cause: error },
        );
      }
      throw error;
    }
  };
  // Stack traces and `fn.name` keep naming the user's method.
  Object.defineProperty(wrapper, 'name', { value: original.name, configurable: true });
  Object.defineProperty(wrapper, 'length', { value: original.length, configurable: true });
  return wrapper;
}
