import { cacheError } from '../errors.ts';
import { hashRequest } from './canonical.ts';

export type NameKind = 'namespace' | 'name' | 'tag';

export interface ParsedKey {
  namespace: string;
  name: string;
  /** Base64url SHA-256 of the request (see `hashRequest`). */
  hash: string;
}

// No ':' so `<namespace>:` and `<namespace>:<name>:` prefixes can never match a neighbour's keys.
/** Longest name (`validateName`); `<tier>/<namespace>` must fit in one too (keys join them). */
export const MAX_NAME_LENGTH = 128;
const NAME = /^[A-Za-z0-9_.\-/@]{1,128}$/;
const CONTROL = /\p{Cc}/u;
const KEY = /^([A-Za-z0-9_.\-/@]{1,128}):([A-Za-z0-9_.\-/@]{1,128}):([A-Za-z0-9_-]{43})$/;
const MAX_TAG_LENGTH = 256;

interface WellFormedCheck {
  isWellFormed(): boolean;
}

function show(value: unknown): string {
  if (typeof value !== 'string') return `(${value === null ? 'null' : typeof value})`;
  const shown =
    value.length > 80
      ? JSON.stringify(value.slice(0, 80)) + `… (${value.length} chars)`
      : JSON.stringify(value);
  return value.length === 0 ? '"" (empty)' : shown;
}

/**
 * Returns `value` when it is a valid namespace / name (1-128 chars of `A-Z a-z 0-9 _ . - / @`) or
 * tag (1-256 chars, no control characters or lone surrogates).
 *
 * @throws CacheError `E_INVALID_NAME` naming the bad value and the allowed form.
 */
export function validateName(value: string, what: NameKind): string {
  if (what === 'tag') {
    if (
      typeof value === 'string' &&
      value.length >= 1 &&
      value.length <= MAX_TAG_LENGTH &&
      !CONTROL.test(value) &&
      (value as unknown as WellFormedCheck).isWellFormed()
    ) {
      return value;
    }
    throw cacheError(
      'E_INVALID_NAME',
      'keys',
      `invalid tag ${show(value)}: expected 1-${MAX_TAG_LENGTH} characters without control characters or lone surrogates.`,
    );
  }
  if (typeof value === 'string' && NAME.test(value)) return value;
  throw cacheError(
    'E_INVALID_NAME',
    'keys',
    `invalid ${what} ${show(value)}: expected 1-128 characters of A-Z a-z 0-9 _ . - / @ ` +
      `(no ':', spaces or other punctuation), e.g. "chat" or "team-a/summaries".`,
  );
}

/** `<namespace>:<name>:<hash of request>`; validates namespace and name. */
export function buildKey(namespace: string, name: string, request: unknown): string {
  validateName(namespace, 'namespace');
  validateName(name, 'name');
  return namespace + ':' + name + ':' + hashRequest(request);
}

/** Prefix shared by every key of a namespace (or of one name inside it), for prefix invalidation. */
export function keyPrefix(namespace: string, name?: string): string {
  validateName(namespace, 'namespace');
  if (name === undefined) return namespace + ':';
  validateName(name, 'name');
  return namespace + ':' + name + ':';
}

/** Splits a key made by `buildKey`; `undefined` when `key` does not have that exact form. */
export function parseKey(key: string): ParsedKey | undefined {
  const match = typeof key === 'string' ? KEY.exec(key) : null;
  if (match === null) return undefined;
  return { namespace: match[1]!, name: match[2]!, hash: match[3]! };
}
