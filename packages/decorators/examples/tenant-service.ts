/**
 * A service that receives its cache in the constructor and whose answers depend on instance state
 * (the tenant and the model): select those fields with `key`, since `this` is never part of the key
 * on its own.
 */
import type { CacheView } from '@x/cache-core';
import { cachedLlmCall, invalidateCached } from '@x/cache-decorators';
import { callModel } from './model.ts';

export class TenantAssistant {
  constructor(
    readonly tenant: string,
    readonly model: string,
    readonly cache: CacheView,
  ) {}

  @cachedLlmCall('assistant_answer', {
    ttl: '12h',
    cache: (self: TenantAssistant) => self.cache.withNamespace(self.tenant),
    key: (self: TenantAssistant, question: string) => ({ model: self.model, question }),
  })
  async answer(question: string, requestId: string): Promise<string> {
    const { text } = await callModel(`[${this.model}] ${question} (request ${requestId})`);
    return text;
  }
}

export async function demo(cache: CacheView): Promise<{ shared: boolean; otherTenantShared: boolean }> {
  const acme = new TenantAssistant('acme', 'gpt-4o-mini', cache);
  const globex = new TenantAssistant('globex', 'gpt-4o-mini', cache);
  const first = await acme.answer('What is a fraction?', 'req-1');
  const again = await acme.answer('What is a fraction?', 'req-2'); // hit: the request id is not in the key
  const other = await globex.answer('What is a fraction?', 'req-3'); // miss: another namespace
  // The key and cache read the instance, so pass it (not just acme.answer).
  await invalidateCached(acme, 'answer', 'What is a fraction?', 'any-request-id');
  return { shared: first === again, otherTenantShared: other === first };
}
