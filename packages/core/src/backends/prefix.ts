/**
 * Key-prefix helpers shared by the backends. Keys look like `<namespace>:<name>:<hash>` where the
 * namespace (e.g. `tier/ns`) never contains `:` (see `keys/`), so `ns:` identifies one namespace
 * exactly and backends can keep running totals per namespace.
 */

import { cacheError } from '../errors.ts';

/** The `<namespace>:` part of `key`, or `''` for a key without a colon. */
export function namespaceOf(key: string): string {
  return key.slice(0, key.indexOf(':') + 1);
}

const MAX_CODE_POINT = 0x10ffff;

/**
 * The smallest string greater than every string that starts with `prefix`, in UTF-8 byte order
 * (SQLite's BINARY collation), so that `key >= prefix AND key < bound` is an index range scan.
 * Returns `undefined` when there is no such bound (empty prefix, or only U+10FFFF characters).
 *
 * Incrementing the last code point works because UTF-8 preserves code point order and is
 * prefix-free. Surrogates are skipped because they cannot be encoded in UTF-8.
 */
export function prefixUpperBound(prefix: string): string | undefined {
  const codePoints = Array.from(prefix, (char) => char.codePointAt(0) ?? 0);
  while (codePoints.length > 0) {
    const last = codePoints.pop() ?? 0;
    if (last === MAX_CODE_POINT) continue;
    const next = last === 0xd7ff ? 0xe000 : last + 1;
    return String.fromCodePoint(...codePoints, next);
  }
  return undefined;
}

interface WellFormedCheck {
  isWellFormed(): boolean;
}

/**
 * Whether `value` (a key or a tag) can be stored as given: well-formed text (no lone surrogate)
 * without NUL. SQLite keeps text as UTF-8, in which every lone surrogate becomes U+FFFD (two keys
 * the memory backend keeps apart would share one row), and its text functions (`instr` and
 * `substr` of the namespace totals) stop at a NUL. The engine's own keys and tags always pass.
 */
export function isStorable(value: string): boolean {
  return (value as unknown as WellFormedCheck).isWellFormed() && !value.includes('\0');
}

/**
 * Throws `E_INVALID_KEY` for a key or tag that `isStorable` refuses, or for a prefix that is not
 * well-formed (cut inside a surrogate pair, it would match different keys in UTF-16 and in UTF-8).
 * A prefix with a NUL is accepted: it matches no key, as no key can hold one.
 */
export function checkStorable(backend: string, what: 'key' | 'tag' | 'prefix', value: string): void {
  const wellFormed = (value as unknown as WellFormedCheck).isWellFormed();
  if (wellFormed && (what === 'prefix' || !value.includes('\0'))) return;
  const shown =
    JSON.stringify(value.length > 80 ? value.slice(0, 80) : value) + (value.length > 80 ? '…' : '');
  throw cacheError(
    'E_INVALID_KEY',
    backend,
    wellFormed
      ? `${what} ${shown} contains a NUL character, which SQLite's text functions stop at; ` +
          `remove it from the ${what} (or encode the ${what}, e.g. with encodeURIComponent)`
      : `${what} ${shown} is not well-formed text (it has a lone surrogate, e.g. text cut inside an ` +
          `emoji), which SQLite would store as U+FFFD, the same as other ${what}s; ` +
          `pass well-formed text (String.prototype.toWellFormed() repairs it)`,
  );
}

/** `checkStorable` for an entry about to be written: its key and each of its tags. */
export function checkEntry(backend: string, key: string, tags: readonly string[] | undefined): void {
  checkStorable(backend, 'key', key);
  if (tags !== undefined) for (const tag of tags) checkStorable(backend, 'tag', tag);
}
