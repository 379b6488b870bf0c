/**
 * Key-prefix helpers shared by the backends. Keys look like `<namespace>:<name>:<hash>` where the
 * namespace (e.g. `tier/ns`) never contains `:` (see `keys/`), so `ns:` identifies one namespace
 * exactly and backends can keep running totals per namespace.
 */

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
