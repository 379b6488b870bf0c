import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Money } from '../../test/fixtures/opaque.ts';
import { withToJSON } from '../../test/support.ts';
import { CacheError, UnserializableValueError } from '../errors.ts';
import {
  buildKey,
  canonicalize,
  hashCanonical,
  hashRequest,
  KEY_SCHEMA_VERSION,
  keyPrefix,
  parseKey,
  validateName,
} from './index.ts';

function expectDistinct(a: unknown, b: unknown): void {
  expect(canonicalize(a)).not.toBe(canonicalize(b));
  expect(hashRequest(a)).not.toBe(hashRequest(b));
}

function expectSame(a: unknown, b: unknown): void {
  expect(canonicalize(a)).toBe(canonicalize(b));
  expect(hashRequest(a)).toBe(hashRequest(b));
}

function unserializable(fn: () => unknown): UnserializableValueError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(UnserializableValueError);
    expect(CacheError.isInstance(error) && error.code).toBe('E_UNSERIALIZABLE');
    return error as UnserializableValueError;
  }
  throw new Error('expected UnserializableValueError');
}

/** `{ a: { a: ... 1 } }`, `levels` objects deep. */
function nested(levels: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < levels; i++) value = { a: value };
  return value;
}

describe('canonicalize', () => {
  it('ignores object key order at every depth', () => {
    const a = { model: 'm', temperature: 0.2, messages: [{ role: 'user', content: 'hi', name: 'x' }] };
    const b = { messages: [{ name: 'x', content: 'hi', role: 'user' }], temperature: 0.2, model: 'm' };
    expectSame(a, b);
    expectSame({ b: 1, a: 2, 10: 'x', 2: 'y' }, { 2: 'y', 10: 'x', a: 2, b: 1 });
  });

  it('sorts keys by UTF-16 code unit', () => {
    // Integer-like keys come first from Object.keys; canonical order puts '10' before '2' before 'B' before 'a'.
    expect(canonicalize({ a: 1, B: 2, 2: 3, 10: 4 })).toBe('{s2:104,s1:23,s1:B2,s1:a1}');
  });

  it('keeps array order significant', () => {
    expectDistinct([1, 2], [2, 1]);
  });

  it('drops undefined properties but keeps undefined array slots as null', () => {
    expectSame({ a: undefined }, {});
    expectSame({ a: 1, b: undefined }, { a: 1 });
    expectDistinct([undefined], []);
    expectSame([undefined], [null]);
    // A hole reads as undefined, as in JSON.
    // biome-ignore lint/suspicious/noSparseArray: the hole is what is being tested
    expectSame([1, , 3], [1, null, 3]);
  });

  it('distinguishes primitive types', () => {
    expectDistinct('1', 1);
    expectDistinct(1, 1n);
    expectDistinct('1', 1n);
    expectDistinct(true, 'true');
    expectDistinct(null, 'null');
    expectDistinct(null, 0);
    expectDistinct(false, 0);
    expectDistinct('', null);
    expectDistinct(1.5, 15);
  });

  it('treats -0 as 0 and gives NaN and infinities their own tokens', () => {
    expectSame(-0, 0);
    expectSame({ t: -0 }, { t: 0 });
    expectDistinct(Number.NaN, null);
    expectDistinct(Number.NaN, 'NaN');
    expectDistinct(Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY);
    expectDistinct(Number.POSITIVE_INFINITY, 'Infinity');
    expectDistinct(Number.POSITIVE_INFINITY, 1e308);
  });

  it('cannot be spoofed by strings that look like tokens', () => {
    expectDistinct({ a: 's1:b' }, { a: 'b' });
    expectDistinct(['a', 'b'], ['a,s1:b']);
    expectDistinct({ a: 1, b: 2 }, { a: '1,s1:b2' });
    expectDistinct({ 'a,s1:b': 1 }, { a: 1, b: 1 });
    expectDistinct([new Date(5)], ['D5']);
    expectDistinct(new Map([['a', 1]]), 'M{s1:a:1}');
  });

  it('escapes lone surrogates so they survive UTF-8 encoding', () => {
    // Both would become U+FFFD if written raw into the hashed UTF-8 stream.
    expectDistinct('\uD800', '\uDC00');
    expectDistinct({ '\uD800': 1 }, { '\uDBFF': 1 });
    expectDistinct('\uD800', '\uFFFD');
    expect(canonicalize('\uD800')).toBe('j"\\ud800"');
    // A well-formed pair is not affected.
    expect(canonicalize('😀')).toBe('s2:😀');
  });

  it('encodes Date by time and rejects invalid dates', () => {
    expectSame(new Date(1000), new Date(1000));
    expectDistinct(new Date(1000), new Date(1001));
    expectDistinct(new Date(1000), 1000);
    expectDistinct(new Date(1000), new Date(1000).toISOString());
    const error = unserializable(() => canonicalize({ when: [new Date(Number.NaN)] }));
    expect(error.path).toBe('when[0]');
    expect(error.message).toContain('invalid Date');
  });

  it('encodes URL by href', () => {
    expectSame(new URL('https://a.example/x?q=1'), new URL('HTTPS://A.EXAMPLE/x?q=1'));
    expectDistinct(new URL('https://a.example/x'), new URL('https://a.example/y'));
    expectDistinct(new URL('https://a.example/x'), 'https://a.example/x');
  });

  it('hashes binary data instead of inlining it', () => {
    const image = new Uint8Array(100_000).fill(7);
    const other = image.slice();
    other[54_321] = 8;
    expectSame(image, image.slice());
    expectDistinct({ image }, { image: other });
    expect(canonicalize(image).length).toBeLessThan(100);
    expect(canonicalize(new Uint8Array([1, 2]))).toBe(
      `xUint8Array:2:${createHash('sha256')
        .update(new Uint8Array([1, 2]))
        .digest('base64url')}`,
    );
  });

  it('keys binary data by kind, length and content', () => {
    const bytes = new Uint8Array(new Float32Array([1, 2, 3]).buffer);
    expectDistinct(new Float32Array([1, 2, 3]), bytes);
    expectDistinct(new Float32Array([1, 2, 3]), new Int32Array(new Float32Array([1, 2, 3]).buffer));
    expectDistinct(bytes, bytes.buffer);
    expectDistinct(bytes, new DataView(bytes.buffer));
    expectDistinct(new Uint8Array(0), new Uint8Array(1));
    expectDistinct(new Uint8Array([1]), new Uint8ClampedArray([1]));
    // Buffer is Node's Uint8Array; the same bytes key alike either way.
    expectSame(Buffer.from([1, 2, 3]), new Uint8Array([1, 2, 3]));
    // Only the viewed window counts, not the whole backing buffer.
    const backing = new Uint8Array([9, 1, 2, 3, 9]);
    expectSame(backing.subarray(1, 4), new Uint8Array([1, 2, 3]));
    expectSame(new Float64Array([0.5]), new Float64Array([0.5]));
    expectDistinct(new BigInt64Array([1n]), new BigUint64Array([1n]));
  });

  it('sorts Map entries and Set members and keeps them apart from objects and arrays', () => {
    expectSame(
      new Map<unknown, unknown>([
        ['b', 1],
        [2, 'x'],
        ['a', { z: 1, y: 2 }],
      ]),
      new Map<unknown, unknown>([
        ['a', { y: 2, z: 1 }],
        [2, 'x'],
        ['b', 1],
      ]),
    );
    expectDistinct(new Map([['a', 1]]), { a: 1 });
    expectDistinct(new Map([[1, 'a']]), new Map([['1', 'a']]));
    expectDistinct(new Map([['a', 1]]), new Map([['a', 2]]));
    expectSame(new Set([3, 1, 2]), new Set([1, 2, 3]));
    expectDistinct(new Set([1, 2]), [1, 2]);
    expectDistinct(new Set([1, 2]), new Set([1, 2, 3]));
    expectDistinct(new Set(['1']), new Set([1]));
    expectDistinct(new Set(), new Map());
    expectDistinct({}, []);
  });

  it('encodes bigint exactly', () => {
    expectDistinct(2n ** 64n, 2n ** 64n + 1n);
    expectSame(10n, BigInt('10'));
    expectDistinct(-1n, 1n);
  });

  it('unwraps boxed primitives', () => {
    expectSame(Object('x'), 'x');
    expectSame(Object(1), 1);
    expectSame(Object(false), false);
    expectSame(Object(5n), 5n);
    expectDistinct(Object('1'), 1);
  });

  it('calls toJSON like JSON.stringify, passing the property name', () => {
    const seen: string[] = [];
    const money = (cents: number) => ({
      toJSON(key: string) {
        seen.push(key);
        return { cents };
      },
    });
    expectSame({ price: money(5) }, { price: { cents: 5 } });
    expectDistinct({ price: money(5) }, { price: { cents: 6 } });
    expect(seen).toContain('price');
    // The result is not asked for toJSON again.
    class Inner {
      v = 1;
      toJSON(): string {
        return 'never';
      }
    }
    expectSame({ toJSON: () => new Inner() }, { v: 1 });
    expectSame({ x: { toJSON: () => new Inner() } }, { x: { v: 1 } });
  });

  it('drops a property whose toJSON returns undefined, as JSON.stringify does', () => {
    const absent = { toJSON: () => undefined };
    expectSame({ a: absent }, {});
    expectDistinct({ a: absent }, { a: null });
    expectSame({ a: absent, b: 1 }, { b: 1 });
    expectSame({ a: 1, b: absent, c: 2 }, { a: 1, c: 2 });
    class Hidden {
      secret = 1;
      toJSON(): undefined {
        return undefined;
      }
    }
    expectSame({ h: new Hidden(), n: 1 }, { n: 1 });
    // toJSON gets the property name and decides per property.
    const only = { toJSON: (key: string) => (key === 'keep' ? 'v' : undefined) };
    expectSame({ keep: only, drop: only }, { keep: 'v' });
    // As in JSON, an array slot reads as null and the root as undefined.
    expectSame([absent], [null]);
    expectSame(absent, undefined);
    expect(JSON.stringify({ a: absent, b: [absent] })).toBe('{"b":[null]}');
  });

  it('keys bigint, Map, Set and the other built-ins the same when they have a toJSON polyfill', () => {
    const request = { n: 12n, m: new Map([['a', 1]]), s: new Set([1]), at: new Date(1), boxed: Object(2n) };
    const before = hashRequest(request);
    withToJSON(
      BigInt.prototype,
      function (this: unknown) {
        return String(this);
      },
      () => {
        expectDistinct({ n: 12n }, { n: '12' });
        expect(hashRequest(request)).toBe(before);
      },
    );
    withToJSON(
      Map.prototype,
      () => ({}),
      () => expect(hashRequest(request)).toBe(before),
    );
    withToJSON(
      Set.prototype,
      () => [],
      () => expect(hashRequest(request)).toBe(before),
    );
    withToJSON(
      Date.prototype,
      () => 'x',
      () => expect(hashRequest(request)).toBe(before),
    );
    expect(Object.hasOwn(BigInt.prototype, 'toJSON')).toBe(false);
  });

  it('treats plain-data class instances like objects with their own enumerable props', () => {
    class Message {
      role = 'user';
      content = 'hi';
      get shout(): string {
        return this.content.toUpperCase();
      }
    }
    expectSame(new Message(), { role: 'user', content: 'hi' });
    expectDistinct(new Message(), { role: 'user', content: 'ho' });
  });

  it('accepts shared references that are not cycles', () => {
    const shared = { role: 'user', content: 'same' };
    const dag = { a: shared, b: [shared, shared], c: new Map([['k', shared]]) };
    expectSame(dag, {
      a: { role: 'user', content: 'same' },
      b: [
        { content: 'same', role: 'user' },
        { content: 'same', role: 'user' },
      ],
      c: new Map([['k', { role: 'user', content: 'same' }]]),
    });
  });
});

describe('canonicalize errors', () => {
  it('names the path of a function', () => {
    const request = { messages: [{}, {}, { role: 'user', content: () => 'x' }] };
    const error = unserializable(() => hashRequest(request));
    expect(error.path).toBe('messages[2].content');
    expect(error.message).toContain('messages[2].content');
    expect(error.message).toContain('function');
  });

  it('quotes keys that are not identifiers', () => {
    const error = unserializable(() => canonicalize({ options: { tools: { 'my-tool': Symbol('x') } } }));
    expect(error.path).toBe('options.tools["my-tool"]');
    expect(error.message).toContain('symbol');
  });

  it('reports the root as an empty path', () => {
    expect(unserializable(() => canonicalize(() => 1)).path).toBe('');
    expect(unserializable(() => canonicalize(Symbol('x'))).path).toBe('');
  });

  it('rejects enumerable symbol keys', () => {
    const key = Symbol('secret');
    const error = unserializable(() => canonicalize({ meta: { [key]: 1 } }));
    expect(error.path).toBe('meta[Symbol(secret)]');
    // Non-enumerable symbol props are hidden bookkeeping, like other non-enumerable props.
    const hidden = {};
    Object.defineProperty(hidden, key, { value: 1, enumerable: false });
    expectSame({ a: hidden }, { a: {} });
  });

  it('rejects cycles with the path of the back reference', () => {
    const node: Record<string, unknown> = { name: 'n' };
    node.children = [{ parent: node }];
    const error = unserializable(() => canonicalize({ tree: node }));
    expect(error.path).toBe('tree.children[0].parent');
    expect(error.message).toContain('circular');

    const list: unknown[] = [];
    list.push(list);
    expect(unserializable(() => canonicalize(list)).path).toBe('[0]');

    const viaToJSON = {
      toJSON() {
        return { self: viaToJSON };
      },
    };
    expect(unserializable(() => canonicalize({ x: viaToJSON })).path).toBe('x.self');
  });

  it('reports requests nested too deeply with a typed error', () => {
    for (const request of [nested(20_000), { messages: [nested(20_000)] }]) {
      for (const walk of [canonicalize, hashRequest]) {
        const error = unserializable(() => walk(request));
        expect(error.message).toMatch(/nested too deeply/);
        expect(error.message).toMatch(/flatter form/);
      }
    }
    // Depths where a real request lives are fine.
    expect(hashRequest(nested(500))).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('shortens the path of a failure very deep down', () => {
    const request = { tree: nested(100) } as { tree: unknown };
    let leaf = request.tree as Record<string, unknown>;
    while (typeof leaf.a === 'object') leaf = leaf.a as Record<string, unknown>;
    leaf.a = () => 1;
    const error = unserializable(() => hashRequest(request));
    expect(error.path).toBe(`tree${'.a'.repeat(19)}…${'.a'.repeat(10)}`);
    expect(unserializable(() => hashRequest({ tree: { a: { b: () => 1 } } })).path).toBe('tree.a.b');
  });

  it('names paths inside Maps and Sets', () => {
    expect(unserializable(() => canonicalize({ m: new Map([['k', () => 1]]) })).path).toBe('m.get("k")');
    expect(unserializable(() => canonicalize({ m: new Map([[1, [Symbol('s')]]]) })).path).toBe('m.get(1)[0]');
    expect(unserializable(() => canonicalize({ s: new Set([1, () => 1]) })).path).toBe('s[...values()][1]');
  });

  it('rejects objects that carry no data', () => {
    expect(unserializable(() => canonicalize({ p: Promise.resolve(1) })).path).toBe('p');
    expect(unserializable(() => canonicalize({ w: new WeakMap() })).path).toBe('w');
  });

  it('rejects objects whose data a key cannot see, naming the fix', () => {
    for (const [value, name] of [
      [new FormData(), 'FormData'],
      [new Blob(['a']), 'Blob'],
      [new Request('https://example.com/a'), 'Request'],
      [new Error('boom'), 'Error'],
      [new Money(5), 'Money'],
    ] as const) {
      const error = unserializable(() => canonicalize({ arg: value }));
      expect(error.path).toBe('arg');
      expect(error.message).toContain(name);
      expect(error.message).toMatch(/plain data/);
    }
    // A class holding plain data still keys like an object with the same properties.
    class Point {
      readonly x: number;
      readonly y: number;
      constructor(x: number, y: number) {
        this.x = x;
        this.y = y;
      }
    }
    expect(canonicalize({ p: new Point(1, 2) })).toBe(canonicalize({ p: { x: 1, y: 2 } }));
  });

  it('keys URLSearchParams and Headers by their content', () => {
    const params = (text: string) => hashRequest({ q: new URLSearchParams(text) });
    expect(params('q=cats')).not.toBe(params('q=dogs'));
    expect(params('a=1&b=2')).toBe(params('a=1&b=2'));
    expect(params('a=1&b=2')).not.toBe(params('b=2&a=1'));
    expect(params('q=cats')).not.toBe(hashRequest({ q: 'q=cats' }));
    const headers = (init: Record<string, string>) => hashRequest({ h: new Headers(init) });
    expect(headers({ accept: 'a' })).not.toBe(headers({ accept: 'b' }));
    expect(headers({ Accept: 'a', 'X-Id': '1' })).toBe(headers({ 'x-id': '1', accept: 'a' }));
  });
});

describe('hashing', () => {
  it('is a 43-char base64url SHA-256 of the version tag and the canonical form', () => {
    const request = { model: 'm', messages: [{ role: 'user', content: 'hi' }] };
    const digest = hashRequest(request);
    expect(digest).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(hashCanonical(canonicalize(request))).toBe(digest);
    const expected = createHash('sha256')
      .update(`x-cache-key/v${KEY_SCHEMA_VERSION}\n${canonicalize(request)}`)
      .digest('base64url');
    expect(digest).toBe(expected);
  });

  it('changes every hash when the schema version changes', () => {
    expect(KEY_SCHEMA_VERSION).toBe(1);
    for (const request of [{}, 'x', [1, 2], { model: 'm' }]) {
      const canonical = canonicalize(request);
      expect(hashCanonical(canonical, KEY_SCHEMA_VERSION)).toBe(hashRequest(request));
      expect(hashCanonical(canonical, KEY_SCHEMA_VERSION + 1)).not.toBe(hashRequest(request));
    }
  });

  it('streams big strings to the same hash as the canonical form', () => {
    const big = 'a'.repeat(200_000);
    const bigTwoByte = 'é€'.repeat(50_000);
    const request = { model: 'm', messages: [{ role: 'user', content: big }, { content: bigTwoByte }], n: 1 };
    expect(hashRequest(request)).toBe(hashCanonical(canonicalize(request)));
    expect(hashRequest(request)).not.toBe(hashRequest({ ...request, n: 2 }));
    expect(hashRequest({ x: big })).not.toBe(hashRequest({ x: big + 'a' }));
    // Inside Maps and Sets (sorted before emission) big strings are not streamed; same result.
    const inMap = { m: new Map([['k', big]]), s: new Set([big]) };
    expect(hashRequest(inMap)).toBe(hashCanonical(canonicalize(inMap)));
  });
});

describe('key stability', () => {
  // Keys address stored entries: a change here orphans every entry written by an earlier version.
  // Only KEY_SCHEMA_VERSION may move them all at once.
  class Point {
    constructor(
      public x: number,
      public y: number,
    ) {}
  }
  const pinned: [string, unknown, string][] = [
    [
      'chat',
      {
        model: 'gpt-4o-mini',
        temperature: 0.2,
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'héllo 😀', name: undefined },
        ],
        stop: [undefined, null],
      },
      'q34LMKl9KmdMHTVVw-WW_jkNMgngwPDb85xEhRkpVRA',
    ],
    [
      'special values',
      {
        at: new Date(1_700_000_000_000),
        url: new URL('https://example.com/a?b=c'),
        big: 2n ** 70n,
        nan: Number.NaN,
        neg: -0,
        boxed: [Object('s'), Object(1), Object(false)],
      },
      '0Bx8kF4UV6aGjdIdCLkmPQrRgnOlop5bW2xq4eoZREo',
    ],
    [
      'collections',
      {
        m: new Map<unknown, unknown>([
          ['b', 1],
          ['a', [2]],
        ]),
        s: new Set<unknown>(['y', 'x', 3]),
        q: new URLSearchParams('a=1&b=2'),
        h: new Headers({ Accept: 'json' }),
      },
      '2I6AZ7ME8mGiLb7HG65cikeoB7RZeC7PzcxGkevZv2Q',
    ],
    [
      'binary',
      { u8: new Uint8Array([1, 2, 3]), buf: Buffer.from('hi'), f32: new Float32Array([0.5]), re: /a+/gi },
      'XGVWS8rAdJuS1jB_P7-n92XT9xMqWsvK588v2v-6WXg',
    ],
    [
      'toJSON and classes',
      {
        price: { toJSON: (key: string) => ({ cents: 5, key }) },
        p: new Point(1, 2),
        nul: { toJSON: () => null },
      },
      'ZklbBBLqUd9OAI8WCTgfYFO38XU4mi6OUNn1NOSPyJE',
    ],
    [
      'nesting and odd keys',
      { a: { b: { c: { d: [[[{ e: 'f' }]]] } } }, '\u0000': 1, 'my-key': 'v' },
      'X-7I2XSHW_2gHeyOuCo8gdD-mINwuBfvrOrnPg4zivk',
    ],
  ];

  it.each(pinned)('keeps the key of %s', (_name, request, key) => {
    expect(hashRequest(request)).toBe(key);
    expect(hashCanonical(canonicalize(request))).toBe(key);
  });
});

describe('validateName', () => {
  it('accepts namespaces and names of the allowed alphabet', () => {
    for (const value of ['chat', 'team-a/summaries', 'v1.2_beta', '@scope/pkg', 'a', 'x'.repeat(128)]) {
      expect(validateName(value, 'namespace')).toBe(value);
      expect(validateName(value, 'name')).toBe(value);
    }
  });

  it('rejects bad namespaces and names with the value and the allowed form', () => {
    for (const value of ['', 'a:b', 'has space', 'tab\t', 'ümlaut', 'x'.repeat(129), 'a*b']) {
      let caught: unknown;
      try {
        validateName(value, 'namespace');
      } catch (error) {
        caught = error;
      }
      expect(CacheError.isInstance(caught)).toBe(true);
      const error = caught as CacheError;
      expect(error.code).toBe('E_INVALID_NAME');
      expect(error.message).toContain('namespace');
      expect(error.message).toContain('A-Z a-z 0-9 _ . - / @');
      if (value.length > 0 && value.length <= 80) expect(error.message).toContain(JSON.stringify(value));
      expect(() => validateName(value, 'name')).toThrow(/invalid name/);
    }
    expect(() => validateName(42 as unknown as string, 'name')).toThrow(/\(number\)/);
  });

  it('accepts printable tags and rejects control characters and bad lengths', () => {
    for (const value of ['user:42', 'has space', 'ümlaut ✓', 'a', 't'.repeat(256)]) {
      expect(validateName(value, 'tag')).toBe(value);
    }
    for (const value of ['', 'a\nb', 'nul\u0000', 'del\u007f', 'c1\u0085', 't'.repeat(257), 'lone\uD800']) {
      expect(() => validateName(value, 'tag')).toThrow(
        expect.objectContaining({ code: 'E_INVALID_NAME', message: expect.stringContaining('invalid tag') }),
      );
    }
  });
});

describe('buildKey / keyPrefix / parseKey', () => {
  it('builds namespaced keys that parse back', () => {
    const request = { model: 'm', prompt: 'hi' };
    const key = buildKey('team-a/chat', 'complete', request);
    expect(key).toBe(`team-a/chat:complete:${hashRequest(request)}`);
    expect(parseKey(key)).toEqual({ namespace: 'team-a/chat', name: 'complete', hash: hashRequest(request) });
    expect(key.startsWith(keyPrefix('team-a/chat'))).toBe(true);
    expect(key.startsWith(keyPrefix('team-a/chat', 'complete'))).toBe(true);
    expect(key.startsWith(keyPrefix('team-a/chat', 'complet'))).toBe(false);
    expect(key.startsWith(keyPrefix('team-a'))).toBe(false);
  });

  it('returns the prefixes with a trailing colon', () => {
    expect(keyPrefix('ns')).toBe('ns:');
    expect(keyPrefix('ns', 'name')).toBe('ns:name:');
  });

  it('validates namespace and name', () => {
    expect(() => buildKey('a:b', 'n', {})).toThrow(expect.objectContaining({ code: 'E_INVALID_NAME' }));
    expect(() => buildKey('ns', '', {})).toThrow(expect.objectContaining({ code: 'E_INVALID_NAME' }));
    expect(() => keyPrefix('ns', 'x y')).toThrow(expect.objectContaining({ code: 'E_INVALID_NAME' }));
  });

  it('rejects strings that are not keys', () => {
    const hash = hashRequest('x');
    expect(parseKey(`ns:name:${hash}`)).toBeDefined();
    expect(parseKey(`ns:${hash}`)).toBeUndefined();
    expect(parseKey(`ns:name:${hash}x`)).toBeUndefined();
    expect(parseKey(`ns:name:${hash.slice(1)}`)).toBeUndefined();
    expect(parseKey(`n s:name:${hash}`)).toBeUndefined();
    expect(parseKey(`ns:na:me:${hash}`)).toBeUndefined();
    expect(parseKey('')).toBeUndefined();
  });
});
