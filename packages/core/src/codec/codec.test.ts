import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { Money } from '../../test/fixtures/opaque.ts';
import { withToJSON } from '../../test/support.ts';
import { CacheError, UnserializableValueError } from '../errors.ts';
import {
  decodeEntry,
  deserializeValue,
  ENTRY_FORMAT_VERSION,
  type EntryMeta,
  encodeEntry,
  readEntryHeader,
  serializeValue,
} from './index.ts';

const META: EntryMeta = { createdAt: 1_700_000_000_000 };

function roundTrip<T>(value: T, meta: EntryMeta = META): T {
  return decodeEntry<T>(encodeEntry(value, meta)).value;
}

/** toStrictEqual checks types (prototypes), undefined vs missing, and holes; Object.is covers -0. */
function expectExact(value: unknown): unknown {
  const back = roundTrip(value);
  expect(back).toStrictEqual(value);
  return back;
}

/** `{ a: { a: ... leaf } }`, `levels` objects deep. */
function nested(levels: number, leaf: unknown = 1): unknown {
  let value = leaf;
  for (let i = 0; i < levels; i++) value = { a: value };
  return value;
}

function expectCorrupt(bytes: Uint8Array, message?: RegExp): void {
  let caught: unknown;
  try {
    decodeEntry(bytes);
  } catch (error) {
    caught = error;
  }
  expect(CacheError.isInstance(caught)).toBe(true);
  expect((caught as CacheError).code).toBe('E_CORRUPT_ENTRY');
  if (message) expect((caught as CacheError).message).toMatch(message);
}

describe('payload round trip', () => {
  it('keeps plain JSON values on the untagged fast path', () => {
    const value = {
      s: 'x',
      n: 1.5,
      neg: -3,
      b: true,
      nil: null,
      list: [1, 'two', { three: [] }],
      nested: { a: {} },
    };
    expect(serializeValue(value)).toEqual({ text: JSON.stringify(value), tagged: false });
    const bytes = encodeEntry(value, META);
    expect(readEntryHeader(bytes).codec).toBe('json');
    expect(decodeEntry(bytes).value).toStrictEqual(value);
  });

  it('round-trips top-level primitives', () => {
    for (const value of ['', 'text', 0, 42, -1.25, true, false, null]) expectExact(value);
    expect(Object.is(roundTrip(-0), -0)).toBe(true);
    expect(roundTrip(undefined)).toBeUndefined();
    expect(readEntryHeader(encodeEntry(undefined, META)).codec).toBe('json-tagged');
  });

  it('round-trips special numbers and bigint', () => {
    const value = {
      nan: Number.NaN,
      inf: Number.POSITIVE_INFINITY,
      ninf: Number.NEGATIVE_INFINITY,
      big: 2n ** 70n,
    };
    const back = expectExact(value) as typeof value;
    expect(Number.isNaN(back.nan)).toBe(true);
    expect(back.big).toBe(2n ** 70n);
    expect(Object.is((roundTrip({ z: -0 }) as { z: number }).z, -0)).toBe(true);
    expect(roundTrip(-5n)).toBe(-5n);
    expect(readEntryHeader(encodeEntry(value, META)).codec).toBe('json-tagged');
  });

  it('round-trips Dates, including invalid ones', () => {
    const back = expectExact({ at: new Date(1_234_567), list: [new Date(0)] }) as { at: Date };
    expect(back.at).toBeInstanceOf(Date);
    expect(back.at.getTime()).toBe(1_234_567);
    expect(Number.isNaN((roundTrip(new Date(Number.NaN)) as Date).getTime())).toBe(true);
  });

  it('round-trips undefined inside arrays without turning it into null or a hole', () => {
    const back = expectExact([1, undefined, [undefined], 3]) as unknown[];
    expect(back).toHaveLength(4);
    expect(1 in back).toBe(true);
    expect(back[1]).toBeUndefined();
    expect(roundTrip({ a: [undefined] })).toStrictEqual({ a: [undefined] });
  });

  it('drops undefined object properties like JSON', () => {
    expect(roundTrip({ a: 1, b: undefined })).toStrictEqual({ a: 1 });
  });

  it('round-trips binary data with its type, reading a nested Buffer back as a Buffer', () => {
    // Buffer.from('hello') is a window into Node's shared pool: only the window is stored.
    const back = roundTrip({
      buf: Buffer.from('hello'),
      u8: new Uint8Array([0, 255]),
      list: [Buffer.from('')],
    });
    expect(Buffer.isBuffer(back.buf)).toBe(true);
    expect(String(back.buf)).toBe('hello');
    expect(back.buf).toStrictEqual(Buffer.from('hello'));
    expect(Buffer.isBuffer(back.u8)).toBe(false);
    expect(back.u8).toStrictEqual(new Uint8Array([0, 255]));
    expect(Buffer.isBuffer(back.list[0])).toBe(true);
    expectExact({ bytes: new Uint8Array(0), map: new Map([['b', Buffer.from([1, 2])]]) });
    // A tag with an unknown flag is not guessed at.
    expect(() => deserializeValue('{"\\u0000":["u8","AQ==","Blob"]}', true)).toThrow(/malformed Uint8Array/);
  });

  it('still decodes entries written by the previous version the same way', () => {
    // encodeEntry({ v: {...}, u: {...} }) from the version before the Buffer flag: its Buffer reads
    // back as a Uint8Array, as it always did.
    const old = Buffer.from(
      'iVhDRQEBAAAAAIBW/rx4QgAAAAAAAAAAJwEAACcBAADIqxokAAAB+sJ9eyJ2Ijp7ImJ1ZiI6eyJcdTAwMDAiOlsidTgiLCJhR1ZzYkc4PSJdfSwidTgiOnsiXHUwMDAwIjpbInU4IiwiQVA4PSJdfSwiYmlnIjp7Ilx1MDAwMCI6WyJiIiwiMTIiXX0sImF0Ijp7Ilx1MDAwMCI6WyJEIiw1XX0sIm0iOnsiXHUwMDAwIjpbIm1hcCIsW1siayIseyJcdTAwMDAiOlsic2V0IixbMV1dfV1dXX0sImxpc3QiOlt7Ilx1MDAwMCI6WyJ1Il19LHsiXHUwMDAwIjpbIm4iLCJOYU4iXX1dLCJlc2MiOnsiXHUwMDAwIjpbIm9iaiIsW1siXHUwMDAwIixbIkQiLDFdXV1dfX0sInUiOnsiaW5wdXRUb2tlbnMiOjF9fQ==',
      'base64',
    );
    expect(decodeEntry(new Uint8Array(old)).value).toStrictEqual({
      v: {
        buf: new Uint8Array(Buffer.from('hello')),
        u8: new Uint8Array([0, 255]),
        big: 12n,
        at: new Date(5),
        m: new Map([['k', new Set([1])]]),
        list: [undefined, Number.NaN],
        esc: { '\u0000': ['D', 1] },
      },
      u: { inputTokens: 1 },
    });
  });

  it('reads back what it stored when built-ins have a toJSON polyfill', () => {
    withToJSON(
      BigInt.prototype,
      function (this: unknown) {
        return String(this);
      },
      () => {
        expect(roundTrip({ tokens: 12n })).toStrictEqual({ tokens: 12n });
        expect(roundTrip(12n)).toBe(12n);
        expect(roundTrip({ list: [1n], m: new Map([[2n, 3n]]), boxed: Object(5n) })).toStrictEqual({
          list: [1n],
          m: new Map([[2n, 3n]]),
          boxed: 5n,
        });
        // A toJSON returning a bigint still stores the bigint; its result is not asked again.
        expect(roundTrip({ n: { toJSON: () => 7n } })).toStrictEqual({ n: 7n });
      },
    );
    withToJSON(
      Map.prototype,
      function (this: unknown) {
        return Object.fromEntries(this as Map<string, unknown>);
      },
      () => {
        expectExact({ m: new Map([['a', 1]]) });
        expectExact(new Map([['a', new Map([['b', 2]])]]));
      },
    );
    withToJSON(
      Set.prototype,
      function (this: unknown) {
        return [...(this as Set<unknown>)];
      },
      () => expectExact({ s: new Set([1, 'x']) }),
    );
    withToJSON(
      ArrayBuffer.prototype,
      () => 'buffer',
      () => expectExact({ b: new Uint8Array([1, 2]).buffer }),
    );
    withToJSON(
      Date.prototype,
      () => 'a date',
      () => expectExact({ at: new Date(9) }),
    );
    withToJSON(
      Uint8Array.prototype,
      () => 'bytes',
      () => expectExact({ u8: new Uint8Array([3]) }),
    );
    // Boxed primitives are stored unwrapped, whatever their prototype's toJSON says.
    withToJSON(
      String.prototype,
      () => 'replaced',
      () => {
        expect(roundTrip({ s: Object('text'), plain: 'text' })).toStrictEqual({ s: 'text', plain: 'text' });
      },
    );
    withToJSON(
      Number.prototype,
      () => 'replaced',
      () => {
        expect(roundTrip([Object(1)])).toStrictEqual([1]);
      },
    );
    // Removed again: nothing leaks into other tests.
    expect(Object.hasOwn(BigInt.prototype, 'toJSON')).toBe(false);
    expect(Object.hasOwn(Map.prototype, 'toJSON')).toBe(false);
  });

  it('round-trips every typed array kind, DataView and ArrayBuffer', () => {
    const values = [
      new Int8Array([-1, 2]),
      new Uint8ClampedArray([1, 255]),
      new Int16Array([-300, 7]),
      new Uint16Array([65535]),
      new Int32Array([-2_000_000_000]),
      new Uint32Array([4_000_000_000]),
      new Float32Array([1.5, -0.25, Number.NaN]),
      new Float64Array([Math.PI, -Number.MAX_VALUE]),
      new BigInt64Array([-(2n ** 63n)]),
      new BigUint64Array([2n ** 64n - 1n]),
      new DataView(new Uint8Array([1, 2, 3]).buffer),
      new Uint8Array([9, 8, 7]).buffer,
    ];
    for (const value of values) {
      const back = expectExact({ value }) as { value: object };
      expect(Object.getPrototypeOf(back.value)).toBe(Object.getPrototypeOf(value));
    }
  });

  it('stores embeddings as base64 of the raw bytes, not number arrays', () => {
    const embedding = new Float32Array(1536).map((_, i) => Math.sin(i));
    const { text, tagged } = serializeValue({ embedding });
    expect(tagged).toBe(true);
    expect(text.length).toBeLessThan(1536 * 4 * 1.4);
    expect(text).not.toContain(String(embedding[1]));
    // A view into a bigger buffer stores only its own window.
    const window = new Float32Array(embedding.buffer, 8, 2);
    const back = roundTrip(window);
    expect(back).toStrictEqual(new Float32Array([embedding[2]!, embedding[3]!]));
  });

  it('round-trips Maps and Sets with any keys and nested special values', () => {
    const value = new Map<unknown, unknown>([
      ['a', 1],
      [2, new Set([1n, 'x', new Date(5)])],
      [{ k: 1 }, [undefined, Number.NaN]],
      [undefined, new Map([['inner', undefined]])],
    ]);
    const back = expectExact({ value }) as { value: Map<unknown, unknown> };
    expect([...back.value.keys()]).toStrictEqual(['a', 2, { k: 1 }, undefined]);
    expect(back.value.has(undefined)).toBe(true);
    expectExact(new Set());
    expectExact(new Map());
  });

  it('round-trips URLs', () => {
    const back = expectExact({ url: new URL('https://example.com/a?b=c#d') }) as { url: URL };
    expect(back.url).toBeInstanceOf(URL);
    expect(back.url.href).toBe('https://example.com/a?b=c#d');
  });

  it('round-trips deeply nested mixes', () => {
    expectExact({
      messages: [
        { role: 'user', content: [{ type: 'image', data: new Uint8Array([1, 2, 3]) }], at: new Date(7) },
        { role: 'assistant', content: 'ok', usage: { tokens: 12n, cost: Number.POSITIVE_INFINITY } },
      ],
      index: new Map([['doc', { vectors: [new Float32Array([0.5])] }]]),
    });
  });

  it('leaves user objects that look like tags unchanged', () => {
    const lookalikes = [
      { '\u0000': ['D', 5] },
      { '\u0000': ['u'] },
      { '\u0000': ['obj', [['a', 1]]], other: 1 },
      { '\u0000': { '\u0000': ['n', 'NaN'] } },
      { nested: [{ '\u0000': ['map', []] }], at: new Date(1) },
      { $type: 'Date', value: 0 },
      { type: 'Buffer', data: [1, 2] },
    ];
    for (const value of lookalikes) expectExact(value);
    // Escaping also runs on the plain path: any object with the tag key forces the tagged codec.
    expect(serializeValue({ '\u0000': 1 }).tagged).toBe(true);
    expect(serializeValue({ $type: 'Date' }).tagged).toBe(false);
  });

  it('round-trips unicode, including astral characters and lone surrogates', () => {
    const value = {
      text: 'héllo wörld ✓ 日本語 😀 \u2028\u2029',
      lone: 'a\uD800b\uDFFFc',
      key: { 'ключ 🔑': 'значение' },
    };
    expectExact(value);
    expectExact('😀'.repeat(10_000));
  });

  it('stores objects with toJSON as JSON would, and class instances as plain objects', () => {
    const money = { toJSON: () => ({ cents: 5, at: new Date(3) }) };
    expect(roundTrip({ price: money })).toStrictEqual({ price: { cents: 5, at: new Date(3) } });
    class Point {
      constructor(
        public x: number,
        public y: number,
      ) {}
    }
    expect(roundTrip(new Point(1, 2))).toStrictEqual({ x: 1, y: 2 });
    expect(roundTrip([Object('s'), Object(1)])).toStrictEqual(['s', 1]);
  });

  it('uses the raw bytes codec for a top-level Uint8Array or Buffer', () => {
    const bytes = randomBytes(1000);
    const encoded = encodeEntry(bytes, META);
    const header = readEntryHeader(encoded);
    expect(header.codec).toBe('bytes');
    expect(header.payloadBytes).toBe(1000);
    const back = decodeEntry<Uint8Array>(encoded).value;
    expect(back).toStrictEqual(new Uint8Array(bytes));
    // The result owns its memory: it does not alias the entry.
    encoded[encoded.length - 1]! ^= 0xff;
    expect(back[999]).toBe(bytes[999]);
  });

  it('deserializes exactly what serializes', () => {
    const value = { a: [new Date(1), undefined], m: new Map([[1, 2]]) };
    const { text, tagged } = serializeValue(value);
    expect(deserializeValue(text, tagged)).toStrictEqual(value);
    expect(deserializeValue('{"a":1}', false)).toStrictEqual({ a: 1 });
  });

  it('reports malformed payload text as corrupt', () => {
    for (const [text, tagged] of [
      ['{"a":', false],
      ['{"\\u0000":["nope"]}', true],
      ['{"\\u0000":["b","12x"]}', true],
      ['{"\\u0000":["ta","Nope",""]}', true],
      ['{"\\u0000":["ta","Float32Array","AAA="]}', true],
      ['{"\\u0000":"x"}', true],
    ] as const) {
      expect(() => deserializeValue(text, tagged)).toThrow(
        expect.objectContaining({ code: 'E_CORRUPT_ENTRY' }),
      );
    }
  });

  it('round-trips a 10 MB value', () => {
    const chunk = randomBytes(1024).toString('base64');
    const value = { docs: Array.from({ length: 7_500 }, (_, i) => ({ id: i, text: chunk })) };
    const encoded = encodeEntry(value, META);
    const header = readEntryHeader(encoded);
    expect(header.payloadBytes).toBeGreaterThan(10_000_000);
    expect(decodeEntry(encoded).value).toStrictEqual(value);

    const raw = randomBytes(10 * 1024 * 1024);
    const back = decodeEntry<Uint8Array>(encodeEntry(raw, META)).value;
    expect(Object.getPrototypeOf(back)).toBe(Uint8Array.prototype);
    // Byte-wise toStrictEqual on 10 MB takes seconds; Buffer#equals is a memcmp.
    expect(raw.equals(back)).toBe(true);
  });
});

describe('unserializable values', () => {
  function unserializable(value: unknown): UnserializableValueError {
    try {
      encodeEntry(value, META);
    } catch (error) {
      expect(error).toBeInstanceOf(UnserializableValueError);
      return error as UnserializableValueError;
    }
    throw new Error('expected UnserializableValueError');
  }

  it('rejects functions and symbols with the path of the field', () => {
    expect(unserializable({ messages: [{}, {}, { content: () => 'x' }] }).path).toBe('messages[2].content');
    expect(unserializable({ tools: { 'my-tool': Symbol('x') } }).path).toBe('tools["my-tool"]');
    expect(unserializable([1, Symbol('x')]).path).toBe('[1]');
    expect(unserializable(() => 1).path).toBe('');
    expect(unserializable({ m: new Map([['k', () => 1]]) }).path).toBe('m.get("k")');
    expect(unserializable({ s: { [Symbol('k')]: 1 } }).path).toBe('s[Symbol(k)]');
  });

  it('says it is a value being stored, not a key', () => {
    const error = unserializable({ answer: () => 1 });
    expect(error.message).toMatch(/\[codec\] cannot store answer: .*convert that field before it is cached/);
    expect(error.message).not.toMatch(/key/);
  });

  it('refuses values whose data it cannot see instead of storing them as {}', () => {
    for (const [value, name] of [
      [new Money(5), 'Money'],
      [new Error('boom'), 'Error'],
      [new URLSearchParams('q=1'), 'URLSearchParams'],
    ] as const) {
      const error = unserializable({ result: value });
      expect(error.path).toBe('result');
      expect(error.message).toContain(name);
    }
    // Class instances holding their data in own properties are stored as plain objects.
    class Point {
      x = 1;
      y = 2;
    }
    expect(roundTrip({ p: new Point() })).toEqual({ p: { x: 1, y: 2 } });
  });

  it('stores an object whose toJSON returns itself, as JSON does', () => {
    class Self {
      a = 1;
      toJSON() {
        return this;
      }
    }
    expect(roundTrip({ s: new Self() })).toEqual({ s: { a: 1 } });
  });

  it('reads back a typed array subclass that renames itself', () => {
    class Embedding extends Float32Array {}
    Object.defineProperty(Embedding.prototype, Symbol.toStringTag, { get: () => 'Embedding' });
    const back = roundTrip({ e: new Embedding([1.5, 2]) }) as { e: Float32Array };
    expect(back.e).toBeInstanceOf(Float32Array);
    expect(Array.from(back.e)).toEqual([1.5, 2]);
  });

  it('checks the data under a "\\u0000" key like any other', () => {
    const withFunction = unserializable({ '\u0000': { f: () => 1 } });
    expect(withFunction.path).toBe('["\\u0000"].f');
    expect(withFunction.message).toContain('function');
    const cyclic: Record<string, unknown> = {};
    cyclic['\u0000'] = { back: cyclic };
    const cycle = unserializable(cyclic);
    expect(cycle.path).toBe('["\\u0000"].back');
    expect(cycle.message).toContain('circular');
    expectExact({ '\u0000': { n: 1n, at: new Date(1) } });
  });

  it('refuses values nested too deeply to be read back, with a typed error', () => {
    // Deep enough for the stack to run out while walking it.
    const overflow = unserializable(nested(20_000));
    expect(overflow.code).toBe('E_UNSERIALIZABLE');
    expect(overflow.message).toMatch(/nested too deeply/);
    expect(overflow.message).toMatch(/flatter form/);
    // Writable, but the tagged reader would run out of stack on it: refused when stored.
    const deep = unserializable({ v: nested(3_000, 1n) });
    expect(deep.message).toMatch(/more than 1000 levels/);
    expect(deep.path.startsWith('v.a.a.a')).toBe(true);
    expect(deep.path).toContain('…');
    expect(() => encodeEntry({ v: nested(1_500) }, META)).toThrow(UnserializableValueError);
    // Maps count as the levels they take once stored.
    let maps: unknown = 1;
    for (let i = 0; i < 300; i++) maps = new Map([['k', maps]]);
    expect(() => encodeEntry(maps, META)).toThrow(/more than 1000 levels/);
    // Called from a stack that is already deep, the walk can run out before the limit (simulated).
    const atLimit = {
      a: {
        toJSON() {
          throw new RangeError('Maximum call stack size exceeded');
        },
      },
    };
    expect(unserializable(atLimit).message).toMatch(
      /nested too deeply: the call stack ran out \d+ levels down/,
    );
    // Up to the limit, values round-trip.
    expectExact(nested(998, 1n));
    expectExact(nested(999));
  });

  it('rejects cycles but accepts shared references', () => {
    const node: Record<string, unknown> = {};
    node.self = { again: node };
    const error = unserializable({ root: node });
    expect(error.path).toBe('root.self.again');
    expect(error.message).toContain('circular');

    const shared = { x: new Date(1) };
    expect(roundTrip({ a: shared, b: [shared] })).toStrictEqual({ a: shared, b: [shared] });
  });
});

describe('compression', () => {
  const repetitive = { text: 'the same sentence over and over. '.repeat(2_000) };

  it('compresses large repetitive payloads and reads them back', () => {
    const encoded = encodeEntry(repetitive, META);
    const header = readEntryHeader(encoded);
    expect(header.compression).toBe('zstd');
    expect(header.storedBytes).toBeLessThan(header.payloadBytes / 10);
    expect(encoded.byteLength).toBeLessThan(header.payloadBytes / 10);
    expect(decodeEntry(encoded).value).toStrictEqual(repetitive);
  });

  it('honours the brotli and none choices and the threshold', () => {
    const brotli = encodeEntry(repetitive, META, { compression: 'brotli' });
    expect(readEntryHeader(brotli).compression).toBe('brotli');
    expect(decodeEntry(brotli).value).toStrictEqual(repetitive);
    expect(readEntryHeader(encodeEntry(repetitive, META, { compression: 'none' })).compression).toBe('none');
    expect(readEntryHeader(encodeEntry(repetitive, META, { compressThreshold: 1e9 })).compression).toBe(
      'none',
    );
    const small = { text: 'abc'.repeat(100) };
    expect(readEntryHeader(encodeEntry(small, META)).compression).toBe('none');
    expect(readEntryHeader(encodeEntry(small, META, { compressThreshold: 0 })).compression).toBe('zstd');
  });

  it('keeps incompressible payloads uncompressed', () => {
    const noise = randomBytes(64 * 1024);
    const header = readEntryHeader(encodeEntry(noise, META));
    expect(header.compression).toBe('none');
    expect(header.storedBytes).toBe(noise.byteLength);
    // Base64 of noise still shrinks by ~25% (6 bits per byte), which clears the 10% bar.
    expect(readEntryHeader(encodeEntry({ b64: noise.toString('base64') }, META)).compression).toBe('zstd');
  });

  it('rejects invalid options', () => {
    expect(() => encodeEntry(1, META, { compression: 'lz4' as 'none' })).toThrow(
      expect.objectContaining({ code: 'E_INVALID_OPTION' }),
    );
    expect(() => encodeEntry(1, META, { compressThreshold: -1 })).toThrow(
      expect.objectContaining({ code: 'E_INVALID_OPTION' }),
    );
  });
});

describe('header', () => {
  it('round-trips every field without decoding the payload', () => {
    const meta = {
      createdAt: 1_700_000_000_123.5,
      expiresAt: 1_700_000_060_000,
      tags: ['user:42', 'ümlaut ✓', ''],
    };
    const encoded = encodeEntry({ a: new Date(1) }, meta);
    const header = readEntryHeader(encoded);
    expect(header).toStrictEqual({
      formatVersion: ENTRY_FORMAT_VERSION,
      codec: 'json-tagged',
      compression: 'none',
      createdAt: meta.createdAt,
      expiresAt: meta.expiresAt,
      tags: meta.tags,
      payloadBytes: header.storedBytes,
      storedBytes: encoded.byteLength - (42 + 3 * 2 + Buffer.byteLength(meta.tags.join(''))),
    });
    const { value, ...decodedHeader } = decodeEntry(encoded);
    expect(decodedHeader).toStrictEqual(header);
    expect(value).toStrictEqual({ a: new Date(1) });
  });

  it('does not touch the payload when only reading the header', () => {
    const encoded = encodeEntry({ a: 1 }, META);
    encoded[encoded.length - 2]! ^= 0x01;
    expect(readEntryHeader(encoded).createdAt).toBe(META.createdAt);
    expectCorrupt(encoded, /payload checksum/);
  });

  it('marks an absent expiry as undefined and keeps 0 as a real expiry', () => {
    expect(readEntryHeader(encodeEntry(1, META)).expiresAt).toBeUndefined();
    expect(readEntryHeader(encodeEntry(1, { createdAt: 0, expiresAt: 0 })).expiresAt).toBe(0);
    expect(readEntryHeader(encodeEntry(1, META)).tags).toStrictEqual([]);
  });

  it('uses the standard CRC-32 for the header checksum', () => {
    const encoded = encodeEntry(1, META);
    const view = new DataView(encoded.buffer, encoded.byteOffset);
    expect(view.getUint32(38, true)).toBe(crc32(encoded.subarray(0, 38)));
    expect(view.getUint32(32, true)).toBe(crc32(encoded.subarray(42)));
  });

  it('rejects invalid metadata', () => {
    for (const meta of [
      { createdAt: Number.NaN },
      { createdAt: 1, expiresAt: Number.POSITIVE_INFINITY },
      { createdAt: 1, tags: [1 as unknown as string] },
      { createdAt: 1, tags: ['x'.repeat(70_000)] },
    ]) {
      expect(() => encodeEntry(1, meta)).toThrow(expect.objectContaining({ code: 'E_INVALID_OPTION' }));
    }
  });

  it('records the format version', () => {
    expect(ENTRY_FORMAT_VERSION).toBe(1);
    expect(encodeEntry(1, META)[4]).toBe(ENTRY_FORMAT_VERSION);
  });
});

describe('corruption', () => {
  const value = { answer: 'forty-two', at: new Date(42), list: [1, 2, 3] };
  const good = encodeEntry(value, { createdAt: 1, expiresAt: 2, tags: ['t'] });
  const compressed = encodeEntry({ text: 'compress me '.repeat(1_000) }, META);

  function flipped(bytes: Uint8Array, index: number): Uint8Array {
    const copy = bytes.slice();
    copy[index]! ^= 0x10;
    return copy;
  }

  it('decodes the untouched fixtures', () => {
    expect(decodeEntry(good).value).toStrictEqual(value);
    expect(readEntryHeader(compressed).compression).toBe('zstd');
  });

  it('detects a flipped byte anywhere in the payload', () => {
    for (let i = good.length - 40; i < good.length; i++) expectCorrupt(flipped(good, i), /payload checksum/);
    expectCorrupt(flipped(compressed, compressed.length - 5), /checksum/);
  });

  it('skips only the payload checksum when asked (bytes that never left the process)', () => {
    const bytes = encodeEntry({ n: 1 }, { createdAt: 0 });
    const last = bytes.length - 2;
    const tampered = flipped(bytes, last);
    expect(() => decodeEntry(tampered)).toThrow(/payload checksum/);
    expect(() => decodeEntry(tampered, { verifyChecksum: false })).not.toThrow(/checksum/);
    expect(decodeEntry(bytes, { verifyChecksum: false }).value).toEqual({ n: 1 });
    // The header is always verified.
    expect(() => decodeEntry(flipped(bytes, 6), { verifyChecksum: false })).toThrow();
  });

  it('detects a flipped byte anywhere in the header', () => {
    const headerEnd = 42 + 2 + 1;
    for (let i = 0; i < headerEnd; i++) {
      expectCorrupt(flipped(good, i));
      expect(() => readEntryHeader(flipped(good, i))).toThrow(
        expect.objectContaining({ code: 'E_CORRUPT_ENTRY' }),
      );
    }
  });

  it('detects truncation at every length', () => {
    for (let length = 0; length < good.length; length++) expectCorrupt(good.subarray(0, length));
    expectCorrupt(compressed.subarray(0, compressed.length - 1), /truncated/);
  });

  it('rejects trailing bytes', () => {
    const longer = new Uint8Array(good.length + 1);
    longer.set(good);
    expectCorrupt(longer, /unexpected bytes/);
  });

  it('rejects empty input, wrong magic and non-binary input', () => {
    expectCorrupt(new Uint8Array(0), /truncated/);
    const wrongMagic = good.slice();
    wrongMagic.set([0x7b, 0x22, 0x61, 0x22], 0);
    expectCorrupt(wrongMagic, /magic/);
    expectCorrupt(Buffer.from(JSON.stringify(value).padEnd(64)), /magic/);
    expectCorrupt('not bytes' as unknown as Uint8Array, /Uint8Array/);
  });

  it('reports a future format version as such', () => {
    const future = good.slice();
    future[4] = ENTRY_FORMAT_VERSION + 1;
    expectCorrupt(future, /newer than this build supports/);
    expect(() => readEntryHeader(future)).toThrow(/newer/);
  });

  it('rejects unknown codec or compression ids even with a valid header checksum', () => {
    for (const [offset, id] of [
      [5, 7],
      [6, 9],
      [7, 0x80],
    ] as const) {
      const bad = good.slice();
      bad[offset] = id;
      const view = new DataView(bad.buffer);
      view.setUint32(41, crc32(bad.subarray(0, 41)), true);
      expectCorrupt(bad, /unknown/);
    }
  });

  it('bounds decompression by the declared size', () => {
    // A forged header (valid checksums) that under-declares the payload size must not inflate past it.
    const bad = compressed.slice();
    const view = new DataView(bad.buffer);
    view.setUint32(24, 100, true);
    view.setUint32(38, crc32(bad.subarray(0, 38)), true);
    expectCorrupt(bad, /decompression failed/);
    // Claiming an absurd size is refused before any allocation.
    view.setUint32(24, 0xffff_fff0, true);
    view.setUint32(38, crc32(bad.subarray(0, 38)), true);
    expectCorrupt(bad, /over the limit/);
  });

  it('rejects a payload that is not valid JSON even when checksums match', () => {
    const text = Buffer.from('{"a":');
    const bad = new Uint8Array(42 + text.length);
    bad.set(encodeEntry(1, META).subarray(0, 38));
    bad.set(text, 42);
    const view = new DataView(bad.buffer);
    view.setUint32(24, text.length, true);
    view.setUint32(28, text.length, true);
    view.setUint32(32, crc32(text), true);
    view.setUint32(38, crc32(bad.subarray(0, 38)), true);
    expectCorrupt(bad, /not valid JSON/);
  });
});
