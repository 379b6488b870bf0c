export { type CachedFetchOptions, cachedFetch, createCachedFetch } from './fetch.ts';
