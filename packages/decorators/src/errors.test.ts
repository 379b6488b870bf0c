import { CacheError, createCache, createToolLedger } from '@x/cache-core';
import { describe, expect, it } from 'vitest';
import { cachedLlmCall, cachedTool, invalidateCached, invalidateCachedPrefix, warm } from './index.ts';

function thrown(run: () => unknown): CacheError {
  try {
    run();
  } catch (error) {
    expect(CacheError.isInstance(error)).toBe(true);
    return error as CacheError;
  }
  throw new Error('expected an error');
}

const noop = async (x: string) => x;

describe('cachedLlmCall option errors', () => {
  it.each([
    ['an unknown option', { ttlHour: 24 }, /unknown option "ttlHour" — use one of ttl, ttlHours/],
    ['an invalid ttl', { ttl: 'soon' }, /"soon" is not a duration/],
    ['ttl and ttlHours together', { ttl: '1h', ttlHours: 1 }, /either ttl or ttlHours/],
    ['tags that are not a list', { tags: 'math' }, /"tags" must be a list/],
    ['a cache that is not a cache', { cache: {} }, /"cache" must be a cache/],
    ['an empty scope', { scope: '' }, /"scope" must be a non-empty string or false/],
    ['a key that is not a function', { key: 'subject' }, /"key" must be a function/],
    ['a misspelt usage', { usage: 'estimat' }, /"usage" must be 'estimate', a usage object or a function/],
    ['a model that is not a string', { model: 42 }, /"model" must be a model id string/],
    ['an invalid tier name', { tier: 'bad tier' }, /option "tier": .*bad tier/],
    ['an invalid tag', { tags: ['bad\u0001tag'] }, /option "tags": .*invalid tag/],
  ])('rejects %s when the method is decorated', (_, options, message) => {
    const error = thrown(() => cachedLlmCall('intro_page', options as never));
    expect(error.code).toBe('E_INVALID_OPTION');
    expect(error.message).toMatch(/^\[@x\/cache-decorators\] @cachedLlmCall\("intro_page"\): /);
    expect(error.message).toMatch(message);
    expect(() => cachedLlmCall('intro_page', noop, options as never)).toThrow(message);
  });

  it('rejects a prefix that is not a cache name', () => {
    const error = thrown(() => cachedLlmCall('intro page'));
    expect(error.code).toBe('E_INVALID_NAME');
    expect(error.message).toContain('— use 1-128 characters of A-Z a-z 0-9 _ . - / @');
  });

  it('says what to do when applied to something other than a method', () => {
    const decorate = cachedLlmCall('intro_page') as unknown as (...args: unknown[]) => unknown;
    // The argument shapes compilers pass for a field (standard) and a property (experimental).
    expect(() => decorate(undefined, { kind: 'field', name: 'x' })).toThrow(
      /can only decorate methods, not a field — put it on an async method/,
    );
    expect(() => decorate({}, 'x', undefined)).toThrow(/can only decorate methods, not a property/);
    expect(() => decorate({}, 'x', { get: () => 1 })).toThrow(/not a getter or setter/);
    expect(() => decorate(noop)).toThrow(/is not a class method/);
  });
});

describe('generators', () => {
  it.each([
    ['an async generator', async function* tokens() {}, /cannot cache async generator function/],
    ['a generator', function* tokens() {}, /cannot cache generator function/],
  ])('refuses to wrap %s, naming the fix', (_, fn, message) => {
    const error = thrown(() => cachedLlmCall('stream_tokens', fn as never));
    expect(error.code).toBe('E_INVALID_OPTION');
    expect(error.message).toMatch(message);
    expect(error.message).toMatch(/returns the collected result.*@x\/ai-sdk-cache.*@x\/langchain-cache/);
  });

  it('refuses a generator method under @cachedTool (both decorator forms)', () => {
    const decorate = cachedTool('list_files', {
      ledger: createToolLedger({ cache: createCache() }),
    }) as unknown as (...args: unknown[]) => unknown;
    // The argument shapes compilers pass: standard (value, context) and experimental (proto, name, descriptor).
    const standard = thrown(() => decorate(async function* files() {}, { kind: 'method', name: 'files' }));
    expect(standard.code).toBe('E_INVALID_OPTION');
    expect(standard.message).toMatch(
      /cannot cache async generator method files: a cached call returns one Promise/,
    );
    expect(() => decorate({}, 'walk', { value: function* walk() {} })).toThrow(
      /cannot cache generator method walk.*returns the collected result/,
    );
    // An ordinary async method is still accepted.
    expect(typeof decorate(async function run() {}, { kind: 'method', name: 'run' })).toBe('function');
  });
});

describe('helper errors', () => {
  const cached = cachedLlmCall('helper_errors', noop, { cache: createCache() });

  it('does not recognise a function that is not cached, or a bound one', async () => {
    await expect(invalidateCached(noop, 'x')).rejects.toThrow(
      /the first argument is not a cached method or function — pass service.introPage/,
    );
    await expect(invalidateCached(cached.bind(undefined), 'x')).rejects.toThrow(
      /bound functions are not recognised/,
    );
    await expect(
      (invalidateCached as (...args: unknown[]) => Promise<boolean>)({ m: noop }, 'm', 'x'),
    ).rejects.toThrow(/m is not a method decorated with @cachedLlmCall/);
    await expect(invalidateCachedPrefix(noop)).rejects.toThrow(/not a prefix or a cached method/);
  });

  it('validates warm arguments', async () => {
    await expect(warm(cached, [['a']], { concurrency: 0 })).rejects.toThrow(
      /concurrency must be a positive integer/,
    );
    await expect(warm(cached, ['a'] as never)).rejects.toThrow(/wrap single arguments too/);
    await expect(warm(cached, 5 as never)).rejects.toThrow(/an array of argument arrays/);
  });

  it('asks for the function when several use one prefix, and takes the newest of one re-evaluated', async () => {
    cachedLlmCall('twice', async function first(x: string) {
      return x;
    });
    cachedLlmCall('twice', async function second(x: string) {
      return x;
    });
    const cache = createCache();
    const evaluate = (version: number) =>
      cachedLlmCall(
        'reloaded',
        async function reloaded(x: string) {
          return `v${version}:${x}`;
        },
        { cache },
      );
    evaluate(1);
    const live = evaluate(2);
    expect(await warm('reloaded', [['a']])).toMatchObject({ filled: [['a']] });
    expect(await live('a')).toBe('v2:a');
    await expect(warm('twice', [['a']])).rejects.toThrow(
      /2 functions use the prefix "twice" \(first, second\) — pass the function/,
    );
  });
});
