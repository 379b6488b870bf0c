import { UnserializableValueError } from '../errors.ts';

/**
 * Internal signal for "this value cannot be serialised". Walkers throw it at the offending value and
 * every enclosing container appends its segment while it unwinds, so the happy path does no path
 * bookkeeping at all (no per-node string building or segment stacks).
 */
export class PathError extends Error {
  /** Formatted segments, innermost first. */
  readonly segments: string[] = [];
  readonly reason: string;

  constructor(reason: string) {
    super(reason);
    this.reason = reason;
  }
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** `.name` for identifiers, `["my-tool"]` otherwise, so the path can be pasted into JS. */
export function propertySegment(key: string): string {
  return IDENTIFIER.test(key) ? '.' + key : '[' + JSON.stringify(key) + ']';
}

export function indexSegment(index: number): string {
  return '[' + index + ']';
}

/** `.get("k")` when the key has a literal form, else the entry's position. */
export function mapValueSegment(key: unknown, position: number): string {
  switch (typeof key) {
    case 'string':
      return '.get(' + JSON.stringify(key) + ')';
    case 'number':
    case 'boolean':
      return '.get(' + String(key) + ')';
    case 'bigint':
      return '.get(' + String(key) + 'n)';
    default:
      return key === null ? '.get(null)' : '[...entries()][' + position + '][1]';
  }
}

export function mapKeySegment(position: number): string {
  return '[...keys()][' + position + ']';
}

export function setMemberSegment(position: number): string {
  return '[...values()][' + position + ']';
}

/**
 * Adds the segment `segment(...args)` to a `PathError` passing through a container; anything else
 * propagates untouched. The segment is built only for a PathError: a stack overflow unwinding
 * through here has no stack left to build one with (a regex test would throw a SyntaxError).
 */
export function withSegment<A extends unknown[]>(
  error: unknown,
  segment: (...args: A) => string,
  ...args: A
): unknown {
  if (error instanceof PathError) error.segments.push(segment(...args));
  return error;
}

/** Paths of more segments (only absurdly deep ones) keep their outer 20 and inner 10, around a `…`. */
const MAX_PATH_SEGMENTS = 40;

export function formatPath(segments: readonly string[]): string {
  // Segments are innermost first.
  const n = segments.length;
  let path = '';
  if (n <= MAX_PATH_SEGMENTS) {
    for (let i = n - 1; i >= 0; i--) path += segments[i];
  } else {
    for (let i = n - 1; i >= n - 20; i--) path += segments[i];
    path += '…';
    for (let i = 9; i >= 0; i--) path += segments[i];
  }
  return path.startsWith('.') ? path.slice(1) : path;
}

/** A stack overflow, which a walker hits on a value nested a few thousand levels deep. */
export function isStackOverflow(error: unknown): boolean {
  return (
    (error instanceof RangeError && /call stack/i.test(error.message)) ||
    (error instanceof SyntaxError && /stack overflow/i.test(error.message))
  );
}

/** The error for a request or value the stack ran out on, `depth` levels down when known. */
export function stackOverflowError(depth: number | undefined, what: 'key' | 'value'): PathError {
  return new PathError(
    `nested too deeply: the call stack ran out${depth === undefined ? '' : ` ${depth} levels down`}; ` +
      (what === 'key'
        ? 'key on a flatter form of it, e.g. the deep part as a JSON string'
        : 'store a flatter form, e.g. the deep part as a JSON string'),
  );
}

/** Converts the internal signal into the public error; other errors pass through. */
export function toPublicError(error: unknown, what: 'key' | 'value' = 'key'): unknown {
  return error instanceof PathError
    ? new UnserializableValueError(formatPath(error.segments), error.reason, what)
    : error;
}
