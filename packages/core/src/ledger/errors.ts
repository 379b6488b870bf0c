import type { CacheErrorCode } from '../errors.ts';
import { CacheError } from '../errors.ts';

/** Codes of the ledger's own errors (part of `CacheErrorCode`). */
export type LedgerErrorCode = Extract<
  CacheErrorCode,
  'E_IDEMPOTENCY_CONFLICT' | 'E_IN_PROGRESS' | 'E_OUTCOME_UNKNOWN'
>;

function ledgerCode(code: LedgerErrorCode): CacheErrorCode {
  return code;
}

const conflictMarker = Symbol.for('x.cache.idempotency-conflict');
const inProgressMarker = Symbol.for('x.cache.tool-in-progress');
const unknownMarker = Symbol.for('x.cache.outcome-unknown');
const recordedMarker = Symbol.for('x.cache.recorded-tool-error');

function marked(error: unknown, marker: symbol): boolean {
  return typeof error === 'object' && error !== null && (error as Record<symbol, unknown>)[marker] === true;
}

/** An idempotency key was reused for a different request: never a silent replay of the other one. */
export class IdempotencyConflictError extends CacheError {
  readonly [conflictMarker] = true;
  readonly key: string;
  /** Request hash recorded under the key. */
  readonly recordedHash: string;
  /** Request hash of this call. */
  readonly requestHash: string;

  constructor(key: string, recordedHash: string, requestHash: string) {
    super(
      ledgerCode('E_IDEMPOTENCY_CONFLICT'),
      `[@x/cache-core] [ledger] idempotency key "${shorten(key)}" was already used for a different request ` +
        '— use a new key for a new request (derive it from the request, or a fresh id per intended action)',
    );
    this.name = 'IdempotencyConflictError';
    this.key = key;
    this.recordedHash = recordedHash;
    this.requestHash = requestHash;
  }

  static override isInstance(error: unknown): error is IdempotencyConflictError {
    return marked(error, conflictMarker);
  }
}

/** Another caller holds the key and `onConcurrent: 'throw'` was chosen, or waiting timed out. */
export class ToolInProgressError extends CacheError {
  readonly [inProgressMarker] = true;
  readonly key: string;
  readonly tool: string | undefined;
  /** When the holder's lease runs out unless it renews it (epoch ms). */
  readonly leaseExpiresAt: number | undefined;
  readonly reason: 'running' | 'timeout';

  constructor(
    key: string,
    tool: string | undefined,
    leaseExpiresAt: number | undefined,
    reason: 'running' | 'timeout',
  ) {
    super(
      ledgerCode('E_IN_PROGRESS'),
      `[@x/cache-core] [ledger] ${tool ? `tool "${tool}" with ` : ''}idempotency key "${shorten(key)}" ` +
        (reason === 'running'
          ? 'is running in another call — retry later, or use onConcurrent: "wait" to wait for its outcome'
          : 'was still running when maxWait ran out — raise maxWait, or retry later'),
    );
    this.name = 'ToolInProgressError';
    this.key = key;
    this.tool = tool;
    this.leaseExpiresAt = leaseExpiresAt;
    this.reason = reason;
  }

  static override isInstance(error: unknown): error is ToolInProgressError {
    return marked(error, inProgressMarker);
  }
}

/**
 * The holder of a pending record stopped renewing its lease (it crashed) and the policy is
 * `onAbandoned: 'throw'`: the side effect may or may not have happened.
 */
export class ToolOutcomeUnknownError extends CacheError {
  readonly [unknownMarker] = true;
  readonly key: string;
  readonly tool: string | undefined;
  readonly attempts: number;

  constructor(key: string, tool: string | undefined, attempts: number) {
    super(
      ledgerCode('E_OUTCOME_UNKNOWN'),
      `[@x/cache-core] [ledger] ${tool ? `tool "${tool}" with ` : ''}idempotency key "${shorten(key)}" was ` +
        'started by a caller that stopped before recording an outcome, so its side effect may have happened ' +
        '— check the outside world, then call again with force: true to run it again',
    );
    this.name = 'ToolOutcomeUnknownError';
    this.key = key;
    this.tool = tool;
    this.attempts = attempts;
  }

  static override isInstance(error: unknown): error is ToolOutcomeUnknownError {
    return marked(error, unknownMarker);
  }
}

/** A tool's error as the ledger records it. */
export interface RecordedError {
  name: string;
  message: string;
  /** The thrown value's `code` when it is a string, number or bigint. */
  code?: string | number | bigint | undefined;
  stack?: string | undefined;
}

/**
 * A recorded failure, thrown again on replay. It keeps the original `name`, `message` and `code`
 * so that code matching on them keeps working; `replayed` tells it apart from a fresh failure.
 */
export class RecordedToolError extends Error {
  readonly [recordedMarker] = true;
  readonly code: string | number | bigint | undefined;
  readonly replayed = true;
  readonly tool: string | undefined;
  /** When the failure was recorded (epoch ms). */
  readonly recordedAt: number | undefined;

  constructor(recorded: RecordedError, tool?: string, recordedAt?: number) {
    super(recorded.message);
    this.name = recorded.name;
    this.code = recorded.code;
    this.tool = tool;
    this.recordedAt = recordedAt;
    if (recorded.stack) this.stack = recorded.stack;
  }

  static isInstance(error: unknown): error is RecordedToolError {
    return marked(error, recordedMarker);
  }
}

/**
 * A thrown value as the ledger records it. Never throws, whatever was thrown: a plain object
 * (`{ code: 'E_QUOTA' }`, whose `code` and `name` are kept and whose JSON stands for a missing
 * message), an error whose `message` or `name` getter throws, a revoked proxy, a primitive.
 */
export function recordError(error: unknown): RecordedError {
  if (typeof error !== 'object' || error === null) return { name: 'Error', message: printable(error) };
  const name = field(error, 'name');
  const message = field(error, 'message');
  const code = field(error, 'code');
  const stack = field(error, 'stack');
  const recorded: RecordedError = {
    name:
      name === undefined || typeof name === 'object' || typeof name === 'function'
        ? 'Error'
        : printable(name),
    message:
      typeof message === 'string'
        ? message
        : message === undefined || typeof message === 'object' || typeof message === 'function'
          ? rendered(error)
          : printable(message),
  };
  if (typeof code === 'string' || typeof code === 'number' || typeof code === 'bigint') recorded.code = code;
  if (typeof stack === 'string') recorded.stack = stack;
  return recorded;
}

/** A property of a thrown object, undefined when reading it throws (a getter, a revoked proxy). */
function field(source: object, name: string): unknown {
  try {
    return (source as Record<string, unknown>)[name];
  } catch {
    return undefined;
  }
}

/** Field names whose values may be credentials: left out of a rendered message. */
const SECRET_FIELD = /auth|token|secret|passw|key|cookie|credential|signature|session/i;

/**
 * A thrown object without a string message: its own top-level fields with plain values as JSON
 * (`{"code":"E_QUOTA","status":429}`), or `String(error)` for an Error (its `name: message`) and
 * an object with none. Nested objects (a request config with its headers) and fields named like
 * credentials are left out: the message is recorded and replayed.
 */
function rendered(error: object): string {
  if (!isError(error)) {
    try {
      const plain: Record<string, unknown> = {};
      for (const key of Object.keys(error)) {
        if (SECRET_FIELD.test(key)) continue;
        const value = field(error, key);
        if (typeof value === 'bigint') plain[key] = `${value}n`;
        else if (value === null || ['string', 'number', 'boolean'].includes(typeof value)) plain[key] = value;
      }
      const json = JSON.stringify(plain);
      if (json !== '{}') return json.length > 500 ? `${json.slice(0, 500)}…` : json;
    } catch {
      // a proxy that refuses to list its keys: as text below
    }
  }
  return printable(error);
}

function isError(value: object): boolean {
  try {
    return value instanceof Error;
  } catch {
    return false;
  }
}

/** `String(value)`, or a description when it cannot be made a string (no `toString`, one that throws). */
function printable(value: unknown): string {
  try {
    return String(value);
  } catch {
    try {
      return Object.prototype.toString.call(value);
    } catch {
      return '[object]';
    }
  }
}

function shorten(text: string): string {
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}
