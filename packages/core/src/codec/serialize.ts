import { types } from 'node:util';
import { CacheError, cacheError } from '../errors.ts';
import { opaqueObject } from '../keys/canonical.ts';
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
} from '../keys/path.ts';

/**
 * Values JSON cannot represent are written as `{"\u0000": [kind, ...data]}`. A user object that has
 * this key itself is escaped as `{"\u0000": ["obj", [[key, value], ...]]}`, so on the read side every
 * object with the key is ours. NUL makes real clashes (and thus escaping) practically never happen.
 */
const TAG = '\u0000';

type Tag =
  | ['u']
  | ['n', 'NaN' | 'Infinity' | '-Infinity' | '-0']
  | ['b', string]
  | ['D', number | null]
  | ['u8' | 'dv' | 'ab' | 'sab', string]
  // A Node.js Buffer (older versions wrote it as a plain `u8`, and read this one as a Uint8Array).
  | ['u8', string, 'Buffer']
  | ['ta', string, string]
  | ['url', string]
  | ['map', unknown[][]]
  | ['set', unknown[]]
  | ['obj', unknown[][]];

type Tagged = { [TAG]: Tag };

const UNDEFINED_TAG: Tagged = Object.freeze({ [TAG]: ['u'] }) as Tagged;
const UNDEFINED_TEXT = JSON.stringify(UNDEFINED_TAG);

type TypedArrayConstructor = {
  new (buffer: ArrayBuffer): ArrayBufferView;
  readonly BYTES_PER_ELEMENT: number;
};

/** %TypedArray%.prototype[Symbol.toStringTag]: the element type's name, whatever a subclass says. */
const typedArrayName = Object.getOwnPropertyDescriptor(
  Object.getPrototypeOf(Int8Array.prototype),
  Symbol.toStringTag,
)!.get!;

const TYPED_ARRAYS = new Map<string, TypedArrayConstructor>(
  (
    [
      Int8Array,
      Uint8Array,
      Uint8ClampedArray,
      Int16Array,
      Uint16Array,
      Int32Array,
      Uint32Array,
      Float32Array,
      Float64Array,
      BigInt64Array,
      BigUint64Array,
      (globalThis as { Float16Array?: TypedArrayConstructor }).Float16Array,
    ] as (TypedArrayConstructor | undefined)[]
  )
    .filter((ctor) => ctor !== undefined)
    .map((ctor) => [ctor.name, ctor]),
);

function corrupt(message: string, cause?: unknown): CacheError {
  return cacheError('E_CORRUPT_ENTRY', 'codec', message, cause === undefined ? undefined : { cause });
}

/**
 * How deep a stored value may nest, counted in levels of its stored JSON (an object or array is one,
 * a Map four, a Set three). Reading a tagged entry back recurses once per level and runs out of stack
 * at a few thousand, so deeper values are refused on write instead of being stored unreadable.
 */
const MAX_VALUE_DEPTH = 1000;

/**
 * Walks the value once before stringifying: rejects what JSON would silently drop or choke on
 * (functions, symbols, cycles) with a path, and finds out whether the plain — and on the read side
 * much faster, reviver-free — JSON form is exact.
 */
class Scanner {
  readonly ancestors: object[] = [];
  /** Levels of stored JSON the ancestors add up to (see MAX_VALUE_DEPTH). */
  private depth = 0;

  /** True when the value needs the tagged encoding. */
  scan(value: unknown, key: string | number, inArray: boolean): boolean {
    switch (typeof value) {
      case 'string':
      case 'boolean':
        return false;
      case 'number':
        return !Number.isFinite(value) || (value === 0 && 1 / value < 0);
      case 'bigint':
        return true;
      case 'undefined':
        // Dropped from objects (as JSON does); kept in arrays, where JSON would turn it into null.
        return inArray;
      case 'object':
        return value === null ? false : this.object(value, key, true);
      case 'function':
        throw new PathError('functions cannot be stored');
      default:
        throw new PathError('symbols cannot be stored');
    }
  }

  private enter(value: object, levels: number): void {
    if (this.ancestors.includes(value)) throw new PathError('circular reference');
    if ((this.depth += levels) > MAX_VALUE_DEPTH) {
      throw new PathError(
        `nested too deeply: more than ${MAX_VALUE_DEPTH} levels (an object or array is one level, a Map four, ` +
          'a Set three) could not be read back; store a flatter form, e.g. the deep part as a JSON string',
      );
    }
    this.ancestors.push(value);
  }

  private leave(levels: number): void {
    this.ancestors.pop();
    this.depth -= levels;
  }

  private object(value: object, key: string | number, allowToJSON: boolean): boolean {
    if (Array.isArray(value)) return this.array(value);
    const proto: unknown = Object.getPrototypeOf(value);
    if (
      (proto === Object.prototype || proto === null) &&
      typeof (value as { toJSON?: unknown }).toJSON !== 'function'
    ) {
      return this.record(value);
    }
    if (
      types.isDate(value) ||
      ArrayBuffer.isView(value) ||
      types.isAnyArrayBuffer(value) ||
      value instanceof URL
    ) {
      return true;
    }
    if (types.isMap(value)) return this.map(value as Map<unknown, unknown>);
    if (types.isSet(value)) return this.set(value as Set<unknown>);
    if (types.isBoxedPrimitive(value)) {
      // Stored unwrapped; a toJSON (a polyfill on String.prototype, say) needs the replacer to skip it.
      const needsTags = this.scan((value as { valueOf(): unknown }).valueOf(), key, false);
      return needsTags || typeof (value as { toJSON?: unknown }).toJSON === 'function';
    }
    if (allowToJSON && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
      this.enter(value, 0);
      const replaced: unknown = (value as { toJSON(key: string): unknown }).toJSON(String(key));
      if (replaced === value) {
        // `toJSON() { return this }`: JSON writes the object's own properties, and so do we.
        this.leave(0);
        return this.record(value);
      }
      const needsTags =
        typeof replaced === 'object' && replaced !== null
          ? this.object(replaced, key, false)
          : this.scan(replaced, key, false);
      this.leave(0);
      return needsTags;
    }
    // Stored as `{}`, it would come back empty on every hit: refused instead (the caller still
    // gets its value; the write is reported).
    const opaque = opaqueObject(value);
    if (opaque) throw new PathError(`${opaque} to store; store plain data taken from it`);
    return this.record(value);
  }

  private array(value: readonly unknown[]): boolean {
    this.enter(value, 1);
    let needsTags = false;
    let i = 0;
    try {
      for (; i < value.length; i++) if (this.scan(value[i], i, true)) needsTags = true;
    } catch (error) {
      throw withSegment(error, indexSegment, i);
    }
    this.leave(1);
    return needsTags;
  }

  private record(value: object): boolean {
    // An object with the tag key is stored escaped, `{"\u0000": ["obj", [[key, value]]]}`.
    const levels = Object.hasOwn(value, TAG) ? 4 : 1;
    this.enter(value, levels);
    const symbols = Object.getOwnPropertySymbols(value);
    for (let i = 0; i < symbols.length; i++) {
      const symbol = symbols[i]!;
      if (Object.prototype.propertyIsEnumerable.call(value, symbol)) {
        const error = new PathError('symbol-keyed properties cannot be stored');
        error.segments.push('[' + String(symbol) + ']');
        throw error;
      }
    }
    const keys = Object.keys(value);
    let needsTags = false;
    let key = '';
    try {
      for (let i = 0; i < keys.length; i++) {
        key = keys[i]!;
        // The value under the tag key is checked like any other (it is stored, escaped).
        if (this.scan((value as Record<string, unknown>)[key], key, false) || key === TAG) needsTags = true;
      }
    } catch (error) {
      throw withSegment(error, propertySegment, key);
    }
    this.leave(levels);
    return needsTags;
  }

  private map(value: Map<unknown, unknown>): true {
    // `{"\u0000": ["map", [[key, value], ...]]}`
    this.enter(value, 4);
    let position = 0;
    for (const [entryKey, entryValue] of value) {
      try {
        this.scan(entryKey, '', true);
      } catch (error) {
        throw withSegment(error, mapKeySegment, position);
      }
      try {
        this.scan(entryValue, '', true);
      } catch (error) {
        throw withSegment(error, mapValueSegment, entryKey, position);
      }
      position++;
    }
    this.leave(4);
    return true;
  }

  private set(value: Set<unknown>): true {
    // `{"\u0000": ["set", [member, ...]]}`
    this.enter(value, 3);
    let position = 0;
    try {
      for (const member of value) {
        this.scan(member, '', true);
        position++;
      }
    } catch (error) {
      throw withSegment(error, setMemberSegment, position);
    }
    this.leave(3);
    return true;
  }
}

function base64(view: ArrayBufferView | ArrayBufferLike): string {
  return ArrayBuffer.isView(view)
    ? Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString('base64')
    : Buffer.from(view).toString('base64');
}

/** Raw bytes go out as base64 of the memory (platform byte order, little-endian everywhere Node runs). */
function encodeObject(value: object): unknown {
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    if (types.isDate(value)) {
      const time = Date.prototype.getTime.call(value);
      return { [TAG]: ['D', Number.isNaN(time) ? null : time] };
    }
    if (ArrayBuffer.isView(value)) {
      if (types.isUint8Array(value)) {
        return { [TAG]: Buffer.isBuffer(value) ? ['u8', base64(value), 'Buffer'] : ['u8', base64(value)] };
      }
      if (types.isDataView(value)) return { [TAG]: ['dv', base64(value)] };
      // The built-in name (a subclass may override Symbol.toStringTag, which would not read back).
      const name = typedArrayName.call(value) as string;
      return { [TAG]: ['ta', name, base64(value)] };
    }
    if (types.isArrayBuffer(value)) return { [TAG]: ['ab', base64(value)] };
    if (types.isSharedArrayBuffer(value)) return { [TAG]: ['sab', base64(value)] };
    if (value instanceof URL) return { [TAG]: ['url', value.href] };
    if (types.isMap(value)) return { [TAG]: ['map', Array.from(value as Map<unknown, unknown>)] };
    if (types.isSet(value)) return { [TAG]: ['set', Array.from(value as Set<unknown>)] };
    if (types.isBoxedPrimitive(value)) return encodeValue((value as { valueOf(): unknown }).valueOf(), false);
  }
  if (Object.hasOwn(value, TAG)) {
    const entries: unknown[][] = [];
    for (const key of Object.keys(value)) {
      const item = (value as Record<string, unknown>)[key];
      if (item !== undefined) entries.push([key, item]);
    }
    return { [TAG]: ['obj', entries] };
  }
  return value;
}

function encodeValue(value: unknown, inArray: boolean): unknown {
  switch (typeof value) {
    case 'number':
      if (Number.isFinite(value) && !(value === 0 && 1 / value < 0)) return value;
      return { [TAG]: ['n', value === 0 ? '-0' : String(value)] };
    case 'bigint':
      return { [TAG]: ['b', value.toString()] };
    case 'undefined':
      return inArray ? UNDEFINED_TAG : undefined;
    case 'object':
      return value === null || Array.isArray(value) ? value : encodeObject(value);
    default:
      return value;
  }
}

/**
 * The types the codec encodes itself, whatever their `toJSON` says (Date, Buffer and URL have one;
 * polyfills add one to bigint, Map, Set...). The Scanner skips `toJSON` for exactly these.
 */
function encodesItself(value: unknown): boolean {
  if (typeof value === 'bigint') return true;
  return (
    typeof value === 'object' &&
    value !== null &&
    (types.isDate(value) ||
      ArrayBuffer.isView(value) ||
      types.isAnyArrayBuffer(value) ||
      value instanceof URL ||
      types.isMap(value) ||
      types.isSet(value) ||
      types.isBoxedPrimitive(value))
  );
}

/**
 * JSON runs `toJSON` before the replacer, so for the types the codec encodes itself the original is
 * read back from the holder; every other value is taken after `toJSON`, as JSON itself would
 * serialise it.
 */
function replacer(this: unknown, key: string, value: unknown): unknown {
  const original = (this as Record<string, unknown>)[key];
  return encodeValue(original !== value && encodesItself(original) ? original : value, Array.isArray(this));
}

/**
 * The payload layer: `text` is JSON; `tagged` says it carries tagged special values and must be read
 * with `deserializeValue(text, true)`. Plain values (the common case) produce plain JSON that reads
 * back with a bare `JSON.parse`.
 *
 * @throws UnserializableValueError for functions, symbols (values or enumerable keys), cycles and
 *   values nested too deeply to be read back.
 */
export function serializeValue(value: unknown): { text: string; tagged: boolean } {
  const scanner = new Scanner();
  let tagged: boolean;
  try {
    tagged = scanner.scan(value, '', false);
  } catch (error) {
    // Only when the caller's own stack is already deep: MAX_VALUE_DEPTH stops the Scanner first.
    const reported = isStackOverflow(error) ? stackOverflowError(scanner.ancestors.length, 'value') : error;
    throw toPublicError(reported, 'value');
  }
  // JSON.stringify returns undefined when the root itself (possibly via toJSON) is undefined.
  let text: string | undefined;
  try {
    text = tagged ? JSON.stringify(value, replacer) : JSON.stringify(value);
  } catch (error) {
    if (isStackOverflow(error)) throw toPublicError(stackOverflowError(undefined, 'value'), 'value');
    throw error;
  }
  return text === undefined ? { text: UNDEFINED_TEXT, tagged: true } : { text, tagged };
}

function bytesOf(encoded: unknown, what: string): Uint8Array<ArrayBuffer> {
  if (typeof encoded !== 'string') throw corrupt(`malformed ${what} tag`);
  const decoded = Buffer.from(encoded, 'base64');
  // Copy out of Node's shared pool so the result owns an aligned, exactly sized buffer.
  const bytes = new Uint8Array(decoded.byteLength);
  bytes.set(decoded);
  return bytes;
}

function pairsOf(encoded: unknown, what: string): [unknown, unknown][] {
  if (!Array.isArray(encoded) || !encoded.every((pair) => Array.isArray(pair) && pair.length === 2)) {
    throw corrupt(`malformed ${what} tag`);
  }
  return encoded as [unknown, unknown][];
}

/** Stands for `undefined` until the enclosing array is revived: returning undefined would delete the slot. */
const HOLE: object = Object.freeze({});

function reviveTag(tag: unknown): unknown {
  if (!Array.isArray(tag)) throw corrupt('malformed tag');
  const data: unknown = tag[1];
  switch (tag[0]) {
    case 'u':
      return HOLE;
    case 'n':
      if (data === 'NaN') return Number.NaN;
      if (data === 'Infinity') return Number.POSITIVE_INFINITY;
      if (data === '-Infinity') return Number.NEGATIVE_INFINITY;
      if (data === '-0') return -0;
      throw corrupt('malformed number tag');
    case 'b':
      if (typeof data !== 'string' || !/^-?\d+$/.test(data)) throw corrupt('malformed bigint tag');
      return BigInt(data);
    case 'D':
      if (data !== null && typeof data !== 'number') throw corrupt('malformed Date tag');
      return new Date(data ?? Number.NaN);
    case 'u8': {
      const bytes = bytesOf(data, 'Uint8Array');
      if (tag.length === 2) return bytes;
      if (tag.length === 3 && tag[2] === 'Buffer') return Buffer.from(bytes.buffer);
      throw corrupt('malformed Uint8Array tag');
    }
    case 'dv':
      return new DataView(bytesOf(data, 'DataView').buffer);
    case 'ab':
      return bytesOf(data, 'ArrayBuffer').buffer;
    case 'sab': {
      const bytes = bytesOf(data, 'SharedArrayBuffer');
      const shared = new SharedArrayBuffer(bytes.byteLength);
      new Uint8Array(shared).set(bytes);
      return shared;
    }
    case 'ta': {
      const ctor = typeof data === 'string' ? TYPED_ARRAYS.get(data) : undefined;
      if (ctor === undefined) throw corrupt(`unknown typed array ${JSON.stringify(data)}`);
      const bytes = bytesOf(tag[2], data as string);
      if (bytes.byteLength % ctor.BYTES_PER_ELEMENT !== 0) throw corrupt(`malformed ${data as string} tag`);
      return new ctor(bytes.buffer);
    }
    case 'url':
      if (typeof data !== 'string' || !URL.canParse(data)) throw corrupt('malformed URL tag');
      return new URL(data);
    case 'map':
      return new Map(pairsOf(data, 'Map'));
    case 'set':
      if (!Array.isArray(data)) throw corrupt('malformed Set tag');
      return new Set(data);
    case 'obj': {
      const pairs = pairsOf(data, 'object');
      if (!pairs.every((pair) => typeof pair[0] === 'string')) throw corrupt('malformed object tag');
      return Object.fromEntries(pairs);
    }
    default:
      throw corrupt(`unknown tag ${JSON.stringify(tag[0])}`);
  }
}

function parseTagged(text: string): unknown {
  // Revivers run children first, so a HOLE is always met by its enclosing array before the parse
  // ends; counting them lets arrays skip the scan once none are pending.
  let holes = 0;
  const result: unknown = JSON.parse(text, (_key, value: unknown) => {
    if (typeof value !== 'object' || value === null) return value;
    if (Array.isArray(value)) {
      for (let i = 0; holes > 0 && i < value.length; i++) {
        if (value[i] === HOLE) {
          value[i] = undefined;
          holes--;
        }
      }
      return value;
    }
    if (!Object.hasOwn(value, TAG)) return value;
    const revived = reviveTag((value as Record<string, unknown>)[TAG]);
    if (revived === HOLE) holes++;
    return revived;
  });
  return result === HOLE ? undefined : result;
}

/**
 * Inverse of `serializeValue`.
 *
 * @throws CacheError `E_CORRUPT_ENTRY` when the text is not valid JSON or carries malformed tags.
 */
export function deserializeValue(text: string, tagged: boolean): unknown {
  try {
    return tagged ? parseTagged(text) : JSON.parse(text);
  } catch (error) {
    if (CacheError.isInstance(error)) throw error;
    throw corrupt(`payload is not valid JSON (${(error as Error).message})`, error);
  }
}
