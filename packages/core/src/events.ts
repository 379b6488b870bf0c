/** Payloads of the events a cache emits. `key` is the full storage key. */
export interface CacheEvents {
  hit: { key: string; tier: string; level: string; stale: boolean; ageMs: number };
  miss: { key: string; tier: string };
  set: { key: string; tier: string; bytes: number; ttlMs: number | undefined };
  evict: { key: string; tier: string; level: string; reason: 'size' | 'expired' | 'quota' | 'corrupt' };
  error: {
    operation: string;
    tier?: string | undefined;
    level?: string | undefined;
    key?: string | undefined;
    error: unknown;
  };
}

export type CacheEventName = keyof CacheEvents;
type Listener<E extends CacheEventName> = (payload: CacheEvents[E]) => void;

/**
 * A minimal emitter: the hot path asks `has(event)` first so that an unobserved cache builds
 * no payload objects. Listener errors are swallowed — an observer must never break a cache call.
 */
export class CacheEmitter {
  readonly #listeners: { [E in CacheEventName]?: Set<Listener<E>> } = {};

  on<E extends CacheEventName>(event: E, listener: Listener<E>): () => void {
    let set = this.#listeners[event] as Set<Listener<E>> | undefined;
    if (!set) {
      set = new Set();
      (this.#listeners as Record<string, unknown>)[event] = set;
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  off<E extends CacheEventName>(event: E, listener: Listener<E>): void {
    (this.#listeners[event] as Set<Listener<E>> | undefined)?.delete(listener);
  }

  has(event: CacheEventName): boolean {
    const set = this.#listeners[event];
    return set !== undefined && set.size > 0;
  }

  emit<E extends CacheEventName>(event: E, payload: CacheEvents[E]): void {
    const set = this.#listeners[event] as Set<Listener<E>> | undefined;
    if (!set) return;
    for (const listener of set) {
      try {
        listener(payload);
      } catch {
        // observers must not break cache calls
      }
    }
  }
}
