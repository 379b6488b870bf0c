import { describe, expect, it } from 'vitest';
import { namespaceOf, prefixUpperBound } from './prefix.ts';

/** UTF-8 byte order, which is what SQLite's BINARY collation compares. */
const utf8Compare = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

describe('prefixUpperBound', () => {
  it('increments the last code point', () => {
    expect(prefixUpperBound('a:')).toBe('a;');
    expect(prefixUpperBound('ns:x')).toBe('ns:y');
    expect(prefixUpperBound('😀')).toBe('😁');
    expect(prefixUpperBound('\uffff')).toBe('\u{10000}');
  });

  it('skips the surrogate range and carries over U+10FFFF', () => {
    expect(prefixUpperBound('a\ud7ff')).toBe('a\ue000');
    expect(prefixUpperBound('a\u{10ffff}')).toBe('b');
    expect(prefixUpperBound('\u{10ffff}\u{10ffff}')).toBeUndefined();
    expect(prefixUpperBound('')).toBeUndefined();
  });

  it('bounds exactly the strings that start with the prefix, in UTF-8 order', () => {
    const samples = [
      '',
      'a',
      'a:',
      'a:b',
      'a;',
      'ab',
      'b',
      '😀',
      '😀x',
      '😁',
      '\uffff',
      '\uffffz',
      '\u{10000}',
      'é',
      'e\u0301',
    ];
    const prefixes = ['a', 'a:', '😀', '\uffff', 'e', 'é', 'a\u{10ffff}'];
    for (const prefix of prefixes) {
      const upper = prefixUpperBound(prefix);
      for (const sample of [...samples, `${prefix}\u{10ffff}`, `${prefix}\u0000`]) {
        const inRange =
          utf8Compare(sample, prefix) >= 0 && (upper === undefined || utf8Compare(sample, upper) < 0);
        expect(inRange, `${JSON.stringify(sample)} under ${JSON.stringify(prefix)}`).toBe(
          sample.startsWith(prefix),
        );
      }
    }
  });
});

describe('namespaceOf', () => {
  it('returns the part up to and including the first colon', () => {
    expect(namespaceOf('tier/ns:name:hash')).toBe('tier/ns:');
    expect(namespaceOf('nocolon')).toBe('');
  });
});
