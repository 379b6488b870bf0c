/**
 * Tools behind the tool ledger (@x/cache-core `createToolLedger`): read-only tools are served from
 * the cache's `tools` tier, side-effecting ones run once per idempotency key and are replayed
 * after that. The counter shows how often a tool was called and how often it really ran.
 */
import type { ToolLedger, ToolScope } from '@x/cache-core';

export interface ToolCounter {
  /** Calls of a tool by the framework (the model asked for it). */
  calls: number;
  /** Times its body actually ran: the rest were served by the ledger. */
  executions: number;
}

/** `execute` with the ledger in front, counted; the framework calls the result as its tool function. */
export function ledgerTool<I, O>(
  ledger: ToolLedger,
  name: string,
  execute: (input: I) => Promise<O>,
  counter: ToolCounter,
  scope: ToolScope,
): (input: I) => Promise<O> {
  const wrapped = ledger.wrap(
    name,
    async (input: I) => {
      counter.executions++;
      return execute(input);
    },
    { scope },
  );
  return (input: I) => {
    counter.calls++;
    return wrapped(input);
  };
}
