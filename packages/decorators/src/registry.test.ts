import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { CacheError, createCache } from '@x/cache-core';
import { describe, expect, it } from 'vitest';
import { cachedLlmCall } from './index.ts';
import { registeredCount } from './registry.ts';

/** `global.gc` without restarting the worker with --expose-gc. */
function exposeGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** Wraps `count` functions and drops them, as code that wraps a function per request does. */
function wrapAndDrop(prefix: string, count: number): void {
  for (let index = 0; index < count; index++)
    cachedLlmCall(prefix, async (text: string) => `${text} ${index}`);
}

/** Lets the current job end (WeakRef targets stay alive until it does), then collects. */
async function collect(gc: () => void): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 0));
  gc();
  await new Promise((resolve) => setTimeout(resolve, 0));
}

describe('the registry of cached functions and methods', () => {
  it('drops the registrations of collected functions', async () => {
    const gc = exposeGc();
    const kept = cachedLlmCall('dropped_per_request', async (text: string) => text);
    wrapAndDrop('dropped_per_request', 2000);
    for (let attempt = 0; attempt < 20 && registeredCount('dropped_per_request') > 1; attempt++) {
      await collect(gc);
    }
    expect(registeredCount('dropped_per_request')).toBe(1);
    expect(typeof kept).toBe('function');
  });

  it('prunes collected registrations when a prefix registers again, before any finalizer runs', async () => {
    const gc = exposeGc();
    wrapAndDrop('pruned_per_request', 1000);
    await new Promise((resolve) => setTimeout(resolve, 0));
    gc();
    // From here on synchronous: finalizers run in a later task, so only registration can prune.
    expect(registeredCount('pruned_per_request')).toBe(1000);
    wrapAndDrop('pruned_per_request', 30);
    expect(registeredCount('pruned_per_request')).toBeLessThan(100);
  });

  it('refuses a static and an instance method of one name at their first call when the compiler gives no metadata', async () => {
    // What TypeScript 5.0 and 5.1 emit for standard decorators: a context without `metadata`, so
    // the class is known only to the initializers, and the collision only when the scope is needed.
    const cache = createCache();
    const decorate = cachedLlmCall('no_metadata_define', { cache }) as unknown as (
      method: Function,
      context: object,
    ) => Function;
    const staticInit: Array<(this: unknown) => void> = [];
    const instanceInit: Array<(this: unknown) => void> = [];
    const context = (isStatic: boolean) => ({
      kind: 'method',
      name: 'define',
      static: isStatic,
      private: false,
      addInitializer: (init: (this: unknown) => void) => (isStatic ? staticInit : instanceInit).push(init),
    });
    class Glossary {
      static define: (term: string) => Promise<string>;
      declare define: (term: string) => Promise<string>;
      constructor() {
        for (const init of instanceInit) init.call(this);
      }
    }
    Glossary.define = decorate(async (term: string) => `static ${term}`, context(true)) as never;
    Glossary.prototype.define = decorate(async (term: string) => `instance ${term}`, context(false)) as never;
    for (const init of staticInit) init.call(Glossary);

    expect(await Glossary.define('a')).toBe('static a');
    const error = await new Glossary().define('a').catch((e: unknown) => e);
    expect(CacheError.isInstance(error)).toBe(true);
    expect((error as CacheError).code).toBe('E_INVALID_OPTION');
    expect((error as Error).message).toMatch(
      /static define and instance define of Glossary would share entries under prefix "no_metadata_define" — give one of them a scope option, e.g. scope: 'Glossary.define.static'/,
    );
  });
});
