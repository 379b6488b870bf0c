import type { Cache } from '@x/cache-core';
import type { Providers } from '../providers.ts';
import type { ToolCounter } from './tools.ts';

export interface ScenarioContext {
  cache: Cache;
  providers: Providers;
  /** The agent run: scopes the ledger's records (write tools replay within one run). */
  taskId: string;
  /** Counts tool calls and real executions across the scenarios. */
  tools: ToolCounter;
}

export interface Operation {
  /** What the row of the table says, e.g. `generateText ×3`. */
  name: string;
  /** Runs the operation once; returns a short sample of the answer. */
  run: () => Promise<string | undefined>;
}

/** One adapter's part of the demo: its namespace and the operations each pass runs. */
export interface Scenario {
  /** Title of the adapter's table. */
  title: string;
  /** The namespace its entries and counters live in. */
  namespace: string;
  operations: Operation[];
}
