import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { RedisHandle } from '../../test/redis-server.ts';
import { redisUnavailable, startRedis } from '../../test/redis-server.ts';
import { CacheError } from '../errors.ts';
import { createCacheFromEnv, getDefaultCache, optionsFromEnv, redactUrl, setDefaultCache } from './env.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'x-env-'));
});
afterEach(() => {
  setDefaultCache(undefined);
  rmSync(dir, { recursive: true, force: true });
});

describe('createCacheFromEnv', () => {
  it('opens the SQLite file named by LLM_CACHE_URL and persists across instances', async () => {
    const file = join(dir, 'nested', 'llm.db');
    const env = { LLM_CACHE_URL: `sqlite://${file}` };
    const first = createCacheFromEnv(env);
    await first.set('k', 'v');
    await first.close();
    expect(existsSync(file)).toBe(true);
    const second = createCacheFromEnv(env);
    expect(await second.get('k')).toBe('v');
    await second.close();
  });

  it('puts the default SQLite file in LLM_CACHE_DIR', async () => {
    const cache = createCacheFromEnv({ LLM_CACHE_DIR: dir });
    await cache.set('k', 1);
    await cache.close();
    expect(existsSync(join(dir, 'llm-cache.db'))).toBe(true);
  });

  it('memory:// keeps everything in memory', async () => {
    const cache = createCacheFromEnv({ LLM_CACHE_URL: 'memory://' });
    await cache.set('k', 1);
    expect((await cache.getResult('k'))?.level).toBe('memory');
    await cache.close();
  });

  it('LLM_CACHE_DISABLED=1 makes a pass-through cache', async () => {
    const cache = createCacheFromEnv({ LLM_CACHE_DISABLED: '1', LLM_CACHE_URL: 'memory://' });
    let calls = 0;
    await cache.getOrCompute('k', async () => ++calls);
    await cache.getOrCompute('k', async () => ++calls);
    expect(calls).toBe(2);
    await cache.close();
  });

  it('LLM_CACHE_MAX_MEMORY_ENTRIES bounds the memory level and LLM_CACHE_NAMESPACE sets the namespace', async () => {
    const cache = createCacheFromEnv({
      LLM_CACHE_URL: 'memory://',
      LLM_CACHE_MAX_MEMORY_ENTRIES: '2',
      LLM_CACHE_NAMESPACE: 'app-1',
    });
    expect(cache.namespace).toBe('app-1');
    for (const k of ['a', 'b', 'c']) await cache.set(k, k);
    expect(await cache.get('a')).toBeUndefined();
    expect(await cache.get('c')).toBe('c');
    await cache.close();
  });

  it('rejects an unknown URL scheme or a bad number with a typed error', () => {
    const bad = (env: Record<string, string>) => {
      try {
        createCacheFromEnv(env);
      } catch (error) {
        return error;
      }
      return undefined;
    };
    const scheme = bad({ LLM_CACHE_URL: 'mongodb://user:secret@host/db' });
    expect(CacheError.isInstance(scheme)).toBe(true);
    expect((scheme as Error).message).toContain('sqlite://');
    expect((scheme as Error).message).not.toContain('secret');
    // A password holding @ or / is hidden whole.
    for (const url of ['mongodb://user:se@cret@host/db', 'mongodb://user:se/cret@host/db']) {
      const message = (bad({ LLM_CACHE_URL: url }) as Error).message;
      expect(message).toContain('//***@host/db');
      expect(message).not.toContain('cret');
    }
    const number = bad({ LLM_CACHE_URL: 'memory://', LLM_CACHE_MAX_MEMORY_ENTRIES: 'lots' });
    expect((number as CacheError).code).toBe('E_INVALID_OPTION');
  });
});

describe('redactUrl', () => {
  it('hides user and password, and nothing else', () => {
    expect(redactUrl('redis://default:secret@host:6379/0?prefix=a@b')).toBe(
      'redis://***@host:6379/0?prefix=a@b',
    );
    expect(redactUrl('redis://:pa@ssw0rd@127.0.0.1:1')).toBe('redis://***@127.0.0.1:1');
    expect(redactUrl('redis://:pa/ssw0rd@127.0.0.1:1')).toBe('redis://***@127.0.0.1:1');
    expect(redactUrl('redis://user:123/abc@host')).toBe('redis://***@host');
    // An @ in the query is not a credential: the host stays visible.
    expect(redactUrl('redis://127.0.0.1:1/0?prefix=team@app:')).toBe(
      'redis://127.0.0.1:1/0?prefix=team@app:',
    );
    expect(redactUrl('redis://host:6379')).toBe('redis://host:6379');
  });
  it('hides the password of a URL missing one or both slashes, or its host, keeping the host visible', () => {
    expect(redactUrl('redis:/:pw@127.0.0.1:1')).toBe('redis:/***@127.0.0.1:1');
    expect(redactUrl('redis:user:pw@h:1')).toBe('redis:***@h:1');
    expect(redactUrl('rediss:/:pw@h')).toBe('rediss:/***@h');
    expect(redactUrl('redis:///:pw@127.0.0.1:1')).toBe('redis:///***@127.0.0.1:1');
    // An unencoded ? in the password: the URL has no host, so its query is no query.
    expect(redactUrl('redis://:p?w@host:1')).toBe('redis://***@host:1');
  });
});

describe('getDefaultCache', () => {
  it('returns one process-wide instance until replaced', async () => {
    const mine = createCacheFromEnv({ LLM_CACHE_URL: 'memory://' });
    setDefaultCache(mine);
    expect(getDefaultCache()).toBe(mine);
    expect(getDefaultCache()).toBe(mine);
    await mine.close();
  });
});

describe('createCacheFromEnv with redis://', () => {
  it.each([
    ['no // after the scheme', 'redis:/:secret@127.0.0.1:1', /needs "\/\/" after the scheme/],
    ['no host', 'redis:///:secret@127.0.0.1:1', /has no host/],
    [
      'a path that is not a database number',
      'redis://:secret@127.0.0.1:1/my-app',
      /path "\/my-app" is not a database number/,
    ],
  ])('refuses a Redis URL with %s, without connecting or showing the password', (_, url, problem) => {
    let error: unknown;
    try {
      createCacheFromEnv({ LLM_CACHE_URL: url });
    } catch (caught) {
      error = caught;
    }
    expect(CacheError.isInstance(error)).toBe(true);
    expect(error).toMatchObject({ code: 'E_INVALID_OPTION' });
    expect((error as Error).message).toMatch(problem);
    expect((error as Error).message).not.toContain('secret');
  });

  const skip = redisUnavailable();
  let server: RedisHandle | undefined;
  beforeAll(async () => {
    if (!skip) server = await startRedis();
  }, 30_000);
  afterAll(async () => {
    await server?.stop();
  });

  it.skipIf(skip)('opens the Redis named by LLM_CACHE_URL, with the key prefix from ?prefix=', async () => {
    const env = { LLM_CACHE_URL: `${server!.url}/0?prefix=env-${process.pid}:` };
    const first = createCacheFromEnv(env);
    await first.set('k', 'shared');
    await first.close();
    const second = createCacheFromEnv(env);
    expect(await second.getResult('k')).toMatchObject({ value: 'shared', level: 'redis' });
    await second.close();
    const other = createCacheFromEnv({ LLM_CACHE_URL: `${server!.url}/0?prefix=other-${process.pid}:` });
    expect(await other.get('k')).toBeUndefined();
    await other.close();
  });

  it.skipIf(skip)('takes ?prefix= as written: empty, and with a plus sign', async () => {
    const raw = new Redis(server!.url);
    const empty = createCacheFromEnv({ LLM_CACHE_URL: `${server!.url}/0?prefix=` }, { memory: false });
    await empty.set('k', 'v');
    const plus = createCacheFromEnv({ LLM_CACHE_URL: `${server!.url}/0?prefix=a+b%3A` }, { memory: false });
    await plus.set('k', 'v');
    const keys = await raw.keys('*');
    expect(keys.some((key) => key.startsWith('e{'))).toBe(true);
    expect(keys.some((key) => key.startsWith('a+b:e{'))).toBe(true);
    await empty.clear();
    await plus.clear();
    await empty.close();
    await plus.close();
    raw.disconnect();
  });
});

describe('optionsFromEnv overrides', () => {
  it('keeps what the environment says for an override left undefined', () => {
    const options = optionsFromEnv(
      { LLM_CACHE_NAMESPACE: 'tenant-a', LLM_CACHE_URL: 'memory://' },
      {
        namespace: undefined,
      },
    );
    expect(options.namespace).toBe('tenant-a');
  });
});
