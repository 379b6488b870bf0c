/** Model ids of the local stand-ins, and the prices the demo counts their saved tokens at. */
import type { PriceTable } from '@x/cache-core';

export const LOCAL_CHAT_MODEL = 'local-stand-in';
export const LOCAL_EMBEDDING_MODEL = 'local-stand-in-embed';

/**
 * The stand-ins cost nothing, but a demo of savings needs a price: they are priced like the models
 * they stand in for (gpt-4o-mini and text-embedding-3-small, from the core's DEFAULT_PRICES).
 */
export const LOCAL_PRICES: PriceTable = {
  [LOCAL_CHAT_MODEL]: { input: 0.15, output: 0.6 },
  [LOCAL_EMBEDDING_MODEL]: { input: 0.02 },
};

/** Calls that reached a model (and, for embedding models, the values it embedded). */
export interface ModelCallCounter {
  calls: number;
  values?: number;
}
