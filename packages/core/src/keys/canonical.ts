import { createHash, type Hash, hash } from 'node:crypto';
import { types } from 'node:util';
import {
  indexSegment,
  isStackOverflow,
  mapKeySegment,
  mapValueSegment,
  PathError,
  propertySegment,
  setMemberSegment,
  stackOverflowError,
  toPublicError,
  withSegment,
} from './path.ts';

/**
 * Version of the canonical form. It is hashed into every key, so bumping it (whenever the encoding of
 * any value changes) moves every request to a fresh key instead of silently matching stale entries.
 */
export const KEY_SCHEMA_VERSION = 1;

/**
 * Strings longer than this go straight to `hash.update` when hashing, which skips flattening them
 * into the pending buffer (a full copy) and the per-call overhead stays negligible at this size.
 */
const STREAM_THRESHOLD = 16 * 1024;

/** The trailing newline separates the tag from the canonical form, which never starts with a digit. */
function versionTag(schemaVersion: number): string {
  return 'x-cache-key/v' + schemaVersion + '\n';
}

const CURRENT_TAG = versionTag(KEY_SCHEMA_VERSION);

// `isWellFormed` is ES2024; the project's lib is ES2023, the runtime (Node >= 20) has it. Shared
// with the ledger.
interface WellFormedCheck {
  isWellFormed(): boolean;
}

export function isWellFormed(value: string): boolean {
  return (value as unknown as WellFormedCheck).isWellFormed();
}

/**
 * Leaves already-sorted key lists alone (common for generated requests) and uses insertion sort
 * for the typical handful of keys, which beats the generic `Array#sort` machinery at that size.
 * Both compare by UTF-16 code unit, like the default sort.
 */
function sortKeys(keys: string[]): string[] {
  const n = keys.length;
  let i = 1;
  while (i < n && keys[i - 1]! <= keys[i]!) i++;
  if (i >= n) return keys;
  if (n > 16) return keys.sort();
  for (; i < n; i++) {
    const key = keys[i]!;
    let j = i - 1;
    while (j >= 0 && keys[j]! > key) {
      keys[j + 1] = keys[j]!;
      j--;
    }
    keys[j + 1] = key;
  }
  return keys;
}

/** Web platform objects whose data is not in their own properties (or is a one-shot stream). */
const OPAQUE_CLASSES: ReadonlyArray<readonly [string, unknown]> = [
  ['a FormData', globalThis.FormData],
  ['a Blob or File', globalThis.Blob],
  ['a Request', globalThis.Request],
  ['a Response', globalThis.Response],
  ['a ReadableStream', globalThis.ReadableStream],
  ['an Error', Error],
];

function objectTypeName(value: object): string {
  if (types.isPromise(value)) return 'a Promise';
  if (types.isWeakMap(value) || types.isWeakSet(value)) return 'a weak collection';
  if (value instanceof WeakRef) return 'a WeakRef';
  for (const [name, Class] of OPAQUE_CLASSES) {
    if (
      typeof Class === 'function' &&
      value instanceof (Class as abstract new (...args: never[]) => object)
    ) {
      return name;
    }
  }
  return '';
}

/**
 * Why an object that is not plain data cannot stand for what it holds (it would key, or be stored,
 * as `{}`), or undefined when its own enumerable properties are its data. For keys and values.
 */
export function opaqueObject(value: object): string | undefined {
  const name = objectTypeName(value);
  if (name !== '') return `${name} has no data`;
  if (!isOpaqueInstance(value)) return undefined;
  const className = (value as { constructor?: { name?: string } }).constructor?.name || 'class';
  return `a ${className} instance has no own enumerable data (private fields or accessors; give it a toJSON())`;
}

/**
 * An instance of a class whose data is invisible to a key (private `#fields`, accessors, native
 * internals): it has no own enumerable property, so every instance would key alike.
 */
function isOpaqueInstance(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) return false;
  for (const key in value) if (Object.hasOwn(value, key)) return false;
  return Object.getOwnPropertySymbols(value).length === 0;
}

/**
 * Grammar (every token announces its type with its first character, so the form is injective):
 *   null / undefined   n            boolean       t | f
 *   number             String(n)    (digits, '-', 'NaN', 'Infinity'; -0 prints as '0')
 *   bigint             b<digits>    Date          D<epoch ms>
 *   string             s<length>:<raw UTF-16>   or  j<JSON string> when it has lone surrogates
 *   array              [v,v]        object        {<key string><value>,...}  (keys sorted)
 *   Map                M{<k>:<v>,...} (entries sorted)        Set   S[v,...] (members sorted)
 *   URL                U<string>    RegExp        R<string>
 *   URLSearchParams    P<string>    Headers       H<string of the sorted [name, value] pairs>
 *   binary             x<kind>:<byteLength>:<base64url sha256>
 * Raw strings are length-prefixed rather than escaped so no escaping pass runs over big prompts;
 * strings with lone surrogates are JSON-escaped because UTF-8 encoding would otherwise map them all
 * to U+FFFD and make different requests hash alike.
 */
class Canonicalizer {
  out: string;
  /** Created only when a big string is streamed, so small requests hash in one native call. */
  hasher: Hash | undefined = undefined;
  private readonly stream: boolean;
  /** > 0 while rendering Map / Set members into side strings that must be sorted before emission. */
  private detached = 0;
  private readonly ancestors: object[] = [];

  constructor(prefix: string, stream: boolean) {
    this.out = prefix;
    this.stream = stream;
  }

  run(value: unknown): void {
    try {
      this.write(value, '');
    } catch (error) {
      // The ancestors of the value the stack ran out on are still there (they pop only on success).
      if (isStackOverflow(error)) throw toPublicError(stackOverflowError(this.ancestors.length, 'key'));
      throw toPublicError(error);
    }
  }

  private write(value: unknown, key: string | number): void {
    switch (typeof value) {
      case 'string':
        this.string(value);
        return;
      case 'number':
        this.out += value;
        return;
      case 'boolean':
        this.out += value ? 't' : 'f';
        return;
      case 'undefined':
        this.out += 'n';
        return;
      case 'bigint':
        this.out += 'b' + value;
        return;
      case 'object':
        if (value === null) this.out += 'n';
        else this.object(value, key);
        return;
      case 'function':
        throw new PathError('functions cannot be part of a cache key');
      default:
        throw new PathError('symbols cannot be part of a cache key');
    }
  }

  private string(value: string): void {
    if (!isWellFormed(value)) {
      this.out += 'j' + JSON.stringify(value);
    } else if (value.length > STREAM_THRESHOLD && this.stream && this.detached === 0) {
      this.hasher ??= createHash('sha256');
      this.hasher.update(this.out + 's' + value.length + ':');
      this.hasher.update(value);
      this.out = '';
    } else {
      this.out += 's' + value.length + ':' + value;
    }
  }

  private object(value: object, key: string | number): void {
    if (Array.isArray(value)) {
      this.array(value);
      return;
    }
    const proto: unknown = Object.getPrototypeOf(value);
    if (
      (proto === Object.prototype || proto === null) &&
      typeof (value as { toJSON?: unknown }).toJSON !== 'function'
    ) {
      this.record(value);
    } else {
      this.special(value, key, true);
    }
  }

  private enter(value: object): void {
    // Ancestor chains are short, and a linear scan of a small array beats Set bookkeeping; a value
    // seen again outside its own ancestry (a DAG) is legal.
    if (this.ancestors.includes(value)) throw new PathError('circular reference');
    this.ancestors.push(value);
  }

  private array(value: readonly unknown[]): void {
    this.enter(value);
    this.out += '[';
    let i = 0;
    try {
      for (; i < value.length; i++) {
        if (i > 0) this.out += ',';
        this.write(value[i], i);
      }
    } catch (error) {
      throw withSegment(error, indexSegment, i);
    }
    this.out += ']';
    this.ancestors.pop();
  }

  private record(value: object): void {
    this.enter(value);
    rejectSymbolKeys(value);
    const keys = sortKeys(Object.keys(value));
    this.out += '{';
    let first = true;
    let key = '';
    try {
      for (let i = 0; i < keys.length; i++) {
        key = keys[i]!;
        const item = (value as Record<string, unknown>)[key];
        if (item === undefined) continue;
        const toJSON = typeof item === 'object' && item !== null ? toJSONOf(item) : undefined;
        if (toJSON !== undefined) {
          // Resolved before the property is written: JSON drops it when toJSON returns undefined.
          this.enter(item as object);
          const replaced: unknown = toJSON.call(item, key);
          if (replaced !== undefined) {
            if (first) first = false;
            else this.out += ',';
            this.string(key);
            this.replaced(replaced, key);
          }
          this.ancestors.pop();
          continue;
        }
        if (first) first = false;
        else this.out += ',';
        this.string(key);
        this.write(item, key);
      }
    } catch (error) {
      throw withSegment(error, propertySegment, key);
    }
    this.out += '}';
    this.ancestors.pop();
  }

  private special(value: object, key: string | number, allowToJSON: boolean): void {
    if (types.isDate(value)) {
      const time = Date.prototype.getTime.call(value);
      if (Number.isNaN(time)) throw new PathError('invalid Date');
      this.out += 'D' + time;
    } else if (ArrayBuffer.isView(value)) {
      // Typed arrays and DataView carry their name in Symbol.toStringTag; Buffer reports Uint8Array,
      // so a Buffer and a Uint8Array of the same bytes key alike.
      const kind = (value as unknown as Record<symbol, string | undefined>)[Symbol.toStringTag] ?? 'DataView';
      this.binary(kind, new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
    } else if (types.isAnyArrayBuffer(value)) {
      this.binary(
        types.isSharedArrayBuffer(value) ? 'SharedArrayBuffer' : 'ArrayBuffer',
        new Uint8Array(value),
      );
    } else if (value instanceof URL) {
      this.out += 'U';
      this.string(value.href);
    } else if (types.isMap(value)) {
      this.map(value as Map<unknown, unknown>);
    } else if (types.isSet(value)) {
      this.set(value as Set<unknown>);
    } else if (types.isBoxedPrimitive(value)) {
      this.write((value as { valueOf(): unknown }).valueOf(), key);
    } else if (types.isRegExp(value)) {
      this.out += 'R';
      this.string(String(value));
    } else if (allowToJSON && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
      // Like JSON.stringify: the result stands for the value and is not asked for toJSON again.
      // The value stays an ancestor meanwhile so a toJSON returning `this` inside itself is a cycle.
      // (`record` resolves toJSON itself for property values; this is the root, arrays, Maps, Sets.)
      this.enter(value);
      this.replaced((value as { toJSON(key: string): unknown }).toJSON(String(key)), key);
      this.ancestors.pop();
    } else if (typeof URLSearchParams !== 'undefined' && value instanceof URLSearchParams) {
      // Order matters in a query string, so the pairs are kept as given.
      this.out += 'P';
      this.string(value.toString());
    } else if (typeof Headers !== 'undefined' && value instanceof Headers) {
      // Headers iterate with lower-cased names in sorted order.
      this.out += 'H';
      this.string(JSON.stringify([...value]));
    } else {
      const opaque = opaqueObject(value);
      if (opaque) throw new PathError(`${opaque} to key on; key on plain data taken from it`);
      // Class instances holding plain data key like objects with the same own enumerable props.
      this.record(value);
    }
  }

  /** Writes what a toJSON returned, without asking it for toJSON again. */
  private replaced(replaced: unknown, key: string | number): void {
    if (typeof replaced === 'object' && replaced !== null && !Array.isArray(replaced)) {
      this.special(replaced, key, false);
    } else {
      this.write(replaced, key);
    }
  }

  private binary(kind: string, bytes: Uint8Array): void {
    this.out += 'x' + kind + ':' + bytes.byteLength + ':' + hash('sha256', bytes, 'base64url');
  }

  /** Renders one value on its own so Map / Set members can be sorted by their canonical form. */
  private detachedForm(value: unknown, key: string | number): string {
    const saved = this.out;
    this.out = '';
    this.detached++;
    try {
      this.write(value, key);
      return this.out;
    } finally {
      this.detached--;
      this.out = saved;
    }
  }

  private map(value: Map<unknown, unknown>): void {
    this.enter(value);
    const entries: string[] = [];
    let position = 0;
    for (const [entryKey, entryValue] of value) {
      let keyForm: string;
      try {
        keyForm = this.detachedForm(entryKey, '');
      } catch (error) {
        throw withSegment(error, mapKeySegment, position);
      }
      try {
        entries.push(keyForm + ':' + this.detachedForm(entryValue, ''));
      } catch (error) {
        throw withSegment(error, mapValueSegment, entryKey, position);
      }
      position++;
    }
    this.out += 'M{' + entries.sort().join(',') + '}';
    this.ancestors.pop();
  }

  private set(value: Set<unknown>): void {
    this.enter(value);
    const members: string[] = [];
    let position = 0;
    try {
      for (const member of value) {
        members.push(this.detachedForm(member, ''));
        position++;
      }
    } catch (error) {
      throw withSegment(error, setMemberSegment, position);
    }
    this.out += 'S[' + members.sort().join(',') + ']';
    this.ancestors.pop();
  }
}

/**
 * The `toJSON` a key uses for `value`: that of an object `special` would pass to it, not of the types
 * it encodes itself (Date, binary, URL, Map, Set, boxed primitives, RegExp: a polyfill's toJSON on
 * them is ignored) nor of arrays. Must match the order in `object` / `special`.
 */
function toJSONOf(value: object): ((key: string) => unknown) | undefined {
  const toJSON: unknown = (value as { toJSON?: unknown }).toJSON;
  if (
    typeof toJSON !== 'function' ||
    Array.isArray(value) ||
    types.isDate(value) ||
    ArrayBuffer.isView(value) ||
    types.isAnyArrayBuffer(value) ||
    value instanceof URL ||
    types.isMap(value) ||
    types.isSet(value) ||
    types.isBoxedPrimitive(value) ||
    types.isRegExp(value)
  ) {
    return undefined;
  }
  return toJSON as (key: string) => unknown;
}

function rejectSymbolKeys(value: object): void {
  // Symbol-keyed props cannot be expressed in the key; non-enumerable ones are invisible like
  // other hidden props (libraries attach those as bookkeeping), enumerable ones would be data loss.
  const symbols = Object.getOwnPropertySymbols(value);
  for (let i = 0; i < symbols.length; i++) {
    const symbol = symbols[i]!;
    if (Object.prototype.propertyIsEnumerable.call(value, symbol)) {
      const error = new PathError('symbol-keyed properties cannot be part of a cache key');
      error.segments.push('[' + String(symbol) + ']');
      throw error;
    }
  }
}

/**
 * Deterministic, injective string form of a JSON-like request: object keys sorted, `undefined`
 * properties dropped, also when their toJSON returns undefined (`undefined` in arrays reads as null,
 * as in JSON), Date / URL / Map / Set /
 * bigint / binary / boxed primitives / `toJSON` supported, binary data represented by its SHA-256.
 *
 * @throws UnserializableValueError for functions, symbols, cycles and invalid Dates, with the
 *   offending field's path (`messages[2].content`), and for requests nested too deeply for the stack.
 */
export function canonicalize(value: unknown): string {
  const canonicalizer = new Canonicalizer('', false);
  canonicalizer.run(value);
  return canonicalizer.out;
}

/**
 * Base64url SHA-256 (43 chars) of a canonical form produced by `canonicalize`, tagged with the key
 * schema version. `hashCanonical(canonicalize(v)) === hashRequest(v)`.
 */
export function hashCanonical(canonical: string, schemaVersion: number = KEY_SCHEMA_VERSION): string {
  return hash('sha256', versionTag(schemaVersion) + canonical, 'base64url');
}

/**
 * Same result as `hashCanonical(canonicalize(value))` without materialising the canonical form of
 * big strings: they are streamed into the hash as they are met.
 */
export function hashRequest(value: unknown): string {
  const canonicalizer = new Canonicalizer(CURRENT_TAG, true);
  canonicalizer.run(value);
  const { hasher, out } = canonicalizer;
  return hasher === undefined ? hash('sha256', out, 'base64url') : hasher.update(out).digest('base64url');
}
