export { cachedLlmCall } from './cached-llm-call.ts';
export { invalidateCached, invalidateCachedPrefix, warm } from './helpers.ts';
export type {
  AsyncFunction,
  AsyncMethodName,
  CachedCallOptions,
  CachedFunctionOptions,
  CachedLlmCallDecorator,
  CachedMethodOptions,
  InvalidatePrefixOptions,
  MethodArgs,
  MethodResult,
  WarmOptions,
  WarmReport,
} from './types.ts';
