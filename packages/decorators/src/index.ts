export { cachedLlmCall } from './cached-llm-call.ts';
export type { CachedToolDecorator, CachedToolOptions } from './cached-tool.ts';
export { cachedTool } from './cached-tool.ts';
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
