import type { CacheBackend } from './backends/backend.ts';

/** The pub/sub channel (under the store's key prefix) on which caches announce changes. */
export const BUS_CHANNEL = 'bus';

/** Keys per announcement: one message stays small however many entries changed. */
const KEYS_PER_MESSAGE = 500;

/**
 * Tells the caches that share `store` (other processes with a memory level in front of it) that
 * `keys` changed, so they drop their copies and outdate computations under way: for tools that
 * write to the store directly, such as `llm-cache import`. A cache's own writes announce
 * themselves. Does nothing for a store without pub/sub.
 */
export async function announceChangedKeys(store: CacheBackend, keys: readonly string[]): Promise<void> {
  if (!store.capabilities.pubsub || !store.publish || keys.length === 0) return;
  for (let start = 0; start < keys.length; start += KEYS_PER_MESSAGE) {
    await store.publish(BUS_CHANNEL, JSON.stringify({ k: keys.slice(start, start + KEYS_PER_MESSAGE) }));
  }
}
