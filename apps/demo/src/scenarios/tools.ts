/**
 * Counting around the tools of the tool loops: how often the framework called a tool, and how
 * often its body really ran (the rest were served by the tool ledger behind `cachedTools` /
 * `cachedTool`).
 */

export interface ToolCounter {
  /** Calls of a tool by the framework (the model asked for it). */
  calls: number;
  /** Times its body actually ran: the rest were served by the ledger. */
  executions: number;
}

/** A tool body that counts its runs. */
export function counted<A extends unknown[], O>(counter: ToolCounter, body: (...args: A) => Promise<O>) {
  return (...args: A): Promise<O> => {
    counter.executions++;
    return body(...args);
  };
}

/** The same AI SDK tool set with each `execute` counting its calls (outside the ledger). */
export function countCalls<T extends Record<string, { execute?: unknown }>>(
  tools: T,
  counter: ToolCounter,
): T {
  const out: Record<string, unknown> = {};
  for (const [name, entry] of Object.entries(tools)) {
    const execute = entry.execute as ((...args: unknown[]) => unknown) | undefined;
    out[name] = execute
      ? {
          ...entry,
          execute: (...args: unknown[]) => {
            counter.calls++;
            return execute(...args);
          },
        }
      : entry;
  }
  return out as T;
}
