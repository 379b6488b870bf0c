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

/** Adds `segment` to a `PathError` passing through a container; anything else propagates untouched. */
export function withSegment(error: unknown, segment: string): unknown {
  if (error instanceof PathError) error.segments.push(segment);
  return error;
}

export function formatPath(segments: readonly string[]): string {
  let path = '';
  for (let i = segments.length - 1; i >= 0; i--) path += segments[i];
  return path.startsWith('.') ? path.slice(1) : path;
}

/** Converts the internal signal into the public error; other errors pass through. */
export function toPublicError(error: unknown, what: 'key' | 'value' = 'key'): unknown {
  return error instanceof PathError
    ? new UnserializableValueError(formatPath(error.segments), error.reason, what)
    : error;
}
