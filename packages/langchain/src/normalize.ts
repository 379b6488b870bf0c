import { BaseMessage } from '@langchain/core/messages';
import { isLangChainTool } from '@langchain/core/tools';
import { toJsonSchema } from '@langchain/core/utils/json_schema';
import { isInteropZodSchema } from '@langchain/core/utils/types';
import type { SecretFilter } from './secrets.ts';
import { VERBATIM_KEYS } from './secrets.ts';

type AnyRecord = Record<string, unknown>;

function isAtomic(value: object): boolean {
  return (
    value instanceof Date ||
    value instanceof URL ||
    ArrayBuffer.isView(value) ||
    value instanceof ArrayBuffer ||
    (typeof SharedArrayBuffer !== 'undefined' && value instanceof SharedArrayBuffer)
  );
}

function isPlain(value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function schemaOf(schema: unknown): unknown {
  try {
    return toJsonSchema(schema as Parameters<typeof toJsonSchema>[0]);
  } catch {
    return undefined;
  }
}

/**
 * Turns request data (call options, model parameters, message content) into plain data the core
 * can key on. Runtime objects that do not change the answer (signals, clients, callbacks,
 * functions) are dropped; tools and Zod schemas become the JSON schema sent to the provider;
 * binary stays binary (the core hashes it). With a `filter`, credential fields are dropped too,
 * except inside tool definitions and output schemas, which are keyed verbatim.
 */
export function keyable(value: unknown, filter?: SecretFilter, ancestors: object[] = []): unknown {
  if (typeof value === 'function' || typeof value === 'symbol') return undefined;
  if (filter?.isSecretValue(value)) return undefined;
  if (typeof value !== 'object' || value === null) return value;
  if (isAtomic(value)) return value;
  if (ancestors.includes(value)) return undefined;
  ancestors.push(value);
  try {
    if (Array.isArray(value)) return value.map((item) => keyable(item, filter, ancestors) ?? null);
    if (BaseMessage.isInstance(value)) return messageForKey(value);
    if (isInteropZodSchema(value)) return schemaOf(value);
    if (isLangChainTool(value)) {
      const tool = value as { name?: unknown; description?: unknown; schema?: unknown };
      return { name: tool.name, description: tool.description, schema: schemaOf(tool.schema) };
    }
    if (value instanceof Map) {
      return [...value].map(([k, v]) => [keyable(k, filter, ancestors), keyable(v, filter, ancestors)]);
    }
    if (value instanceof Set) return [...value].map((item) => keyable(item, filter, ancestors) ?? null);
    if (typeof AbortSignal !== 'undefined' && value instanceof AbortSignal) return undefined;
    if (!isPlain(value) && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
      return keyable((value as { toJSON(): unknown }).toJSON(), filter, ancestors);
    }
    const out: AnyRecord = {};
    for (const [key, item] of Object.entries(value)) {
      let clean: unknown;
      if (filter && VERBATIM_KEYS.has(key)) clean = keyable(item, undefined, ancestors);
      else if (filter?.isSecretName(key)) continue;
      else clean = keyable(item, filter, ancestors);
      if (clean !== undefined) out[key] = clean;
    }
    return out;
  } finally {
    ancestors.pop();
  }
}

/** Drops `undefined` fields and empty collections, so equal requests key alike however they were built. */
function compact(record: AnyRecord): AnyRecord {
  for (const key of Object.keys(record)) {
    const value = record[key];
    if (
      value === undefined ||
      (Array.isArray(value) && value.length === 0) ||
      (typeof value === 'object' &&
        value !== null &&
        !Array.isArray(value) &&
        Object.keys(value).length === 0)
    ) {
      delete record[key];
    }
  }
  return record;
}

/**
 * What a message contributes to a request: everything a provider is sent (type, role, name, the
 * complete content blocks with their bytes, tool calls, tool results), nothing it is not (ids,
 * response metadata, usage of earlier turns, artifacts).
 */
export function messageForKey(message: BaseMessage): unknown {
  const any = message as unknown as AnyRecord;
  const type = typeof message.getType === 'function' ? message.getType() : message._getType();
  const toolCalls = Array.isArray(any.tool_calls)
    ? (any.tool_calls as AnyRecord[]).map((call) => ({
        id: call.id,
        name: call.name,
        args: keyable(call.args),
      }))
    : undefined;
  return compact({
    type,
    role: any.role,
    name: any.name,
    content: keyable(message.content),
    tool_calls: toolCalls,
    invalid_tool_calls: keyable(any.invalid_tool_calls),
    tool_call_id: any.tool_call_id,
    status: any.status === 'error' ? 'error' : undefined,
    additional_kwargs: keyable(message.additional_kwargs),
  });
}

/**
 * Turns a value into data the core codec stores exactly: plain objects, arrays, strings, numbers,
 * binary, dates. Functions and cycles are dropped, class instances become their JSON form or
 * their own fields, so a provider's exotic metadata can never make a write fail.
 */
export function storable(value: unknown, ancestors: object[] = []): unknown {
  if (typeof value === 'function' || typeof value === 'symbol') return undefined;
  if (typeof value !== 'object' || value === null) return value;
  if (isAtomic(value)) return value;
  if (ancestors.includes(value)) return undefined;
  ancestors.push(value);
  try {
    if (Array.isArray(value)) return value.map((item) => storable(item, ancestors) ?? null);
    if (value instanceof Map)
      return new Map([...value].map(([k, v]) => [storable(k, ancestors), storable(v, ancestors)]));
    if (value instanceof Set) return new Set([...value].map((item) => storable(item, ancestors)));
    if (!isPlain(value) && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
      return storable((value as { toJSON(): unknown }).toJSON(), ancestors);
    }
    const out: AnyRecord = {};
    for (const [key, item] of Object.entries(value)) {
      const clean = storable(item, ancestors);
      if (clean !== undefined) out[key] = clean;
    }
    return out;
  } finally {
    ancestors.pop();
  }
}
