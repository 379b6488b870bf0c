import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CacheBackend, Clock } from '../backends/backend.ts';
import type { CacheResult, CacheView } from '../cache.ts';
import { CacheError, cacheError } from '../errors.ts';
import { hashRequest, validateName } from '../keys/index.ts';
import type { Duration } from '../ttl.ts';
import { parseDuration } from '../ttl.ts';
import { timerMs } from '../util/timers.ts';
import { boundStore, ledgerTimeout, outlivedDeadline } from './bounded.ts';
import type { RecordedError } from './errors.ts';
import {
  IdempotencyConflictError,
  RecordedToolError,
  recordError,
  ToolInProgressError,
  ToolOutcomeUnknownError,
} from './errors.ts';
import type { IdempotencyRecord, IdempotencyStats, IdempotencyStore } from './idempotency.ts';
import { createIdempotencyStore } from './idempotency.ts';
import {
  copyValue,
  decodeRecord,
  encodeRecord,
  ledgerPrefix,
  resolveClock,
  resolveStore,
} from './internal.ts';

/**
 * - `write`: side-effecting. Runs once per idempotency key; the outcome is recorded and replayed
 *   to every later call with that key, and never served to another key.
 * - `read`: read-only. Cached by its input in the `tools` tier for `ttl`, shared across keys and tasks.
 * - `none`: not cached: runs on every call (the history still records it).
 */
export type ToolKind = 'write' | 'read' | 'none';

export interface ToolPolicy<T = any> {
  kind: ToolKind;
  /**
   * `read`: how long a result is served from the cache. `write`: how long the outcome is kept
   * and replayed. @default read: the tools tier's TTL (1h); write: the ledger's ttl ('7d')
   */
  ttl?: Duration | undefined;
  /**
   * Read tools whose cached results this tool makes stale, dropped after each of its executions
   * (in addition to the cache's `dependencies` map). @default []
   */
  invalidates?: readonly string[] | undefined;
  /** A write's claim lasts this long unless renewed (the holder renews it while running). @default the ledger's leaseTtl */
  leaseTtl?: Duration | undefined;
  /** A second call while the first runs: wait for its outcome, or throw `ToolInProgressError`. @default the ledger's */
  onConcurrent?: 'wait' | 'throw' | undefined;
  /** A recorded failure: replay it (throw it again / return the failed value), or run again. @default 'replay' */
  onFailed?: 'replay' | 'retry' | undefined;
  /**
   * A write whose holder stopped (crashed) before recording an outcome: run it again once the
   * lease ran out, or throw `ToolOutcomeUnknownError` so a human (or `force`) decides. @default 'reexecute'
   */
  onAbandoned?: 'reexecute' | 'throw' | undefined;
  /** Longest wait for another caller's outcome. @default the ledger's maxWait */
  maxWait?: Duration | undefined;
  /**
   * Whether a returned value is a failure (recorded as `failed`, never cached for read tools).
   * @default a value with a numeric `exitCode` other than 0
   */
  isFailure?: ((value: T) => boolean) | undefined;
}

export interface ToolScope {
  taskId?: string | undefined;
  workItemId?: string | undefined;
}

/** Handed to `execute`, and available inside it as `toolCallContext()`. */
export interface ToolCallContext {
  tool: string;
  /**
   * The idempotency key of this call (write tools) or its cache key (read tools). Pass it on to
   * the outside world (an `Idempotency-Key` header, a client token) so that a run after a crash
   * cannot apply the side effect twice.
   */
  idempotencyKey: string;
  /** 1 for the first execution under this key; higher after takeovers, retries or force. */
  attempt: number;
  /** This execution took over from a holder that stopped before recording an outcome. */
  recovered: boolean;
  /** Aborted when this caller lost its claim (its lease ran out and another caller took over). */
  signal: AbortSignal;
  scope: ToolScope;
}

export interface ExecuteOrReplayCall<I, O> {
  tool: string;
  input: I;
  scope?: ToolScope | undefined;
  execute: (context: ToolCallContext) => O | Promise<O>;
  /** Run again and record the new outcome, even if one was recorded (or cached). Never runs in parallel with a holder. @default false */
  force?: boolean | undefined;
  /**
   * The write's idempotency key. A tool not listed in the policies but given a key is treated as
   * a write. @default derived from tool, input, taskId and workItemId
   */
  idempotencyKey?: string | undefined;
  /** Overrides the policy's onConcurrent for this call. @default the policy's */
  onConcurrent?: 'wait' | 'throw' | undefined;
  /**
   * Errors that are control flow rather than the tool's outcome, such as LangGraph's
   * `interrupt()` (a human-in-the-loop pause the graph resumes later): such an error is passed
   * on, nothing is recorded, and a write's claim is released so that the resumed call runs.
   * @default none: every thrown error is the tool's outcome
   */
  isControlFlow?: ((error: unknown) => boolean) | undefined;
}

export type OutcomeSource = 'executed' | 'replayed' | 'cached' | 'joined';

export interface LedgerOutcome<O> {
  value: O;
  /**
   * `executed` by this call; `replayed` from a recorded outcome; `cached` from a read tool's
   * cache; `joined` another concurrent call's execution.
   */
  source: OutcomeSource;
  /** Anything but `executed`: the tool did not run for this call. */
  replayed: boolean;
  /** `failed` for a recorded failure value (a non-zero exit code); thrown errors are thrown. */
  status: 'succeeded' | 'failed';
  tool: string;
  kind: ToolKind;
  /** The idempotency key (write) or cache key (read) of this call. */
  key: string;
  attempt: number;
  recovered: boolean;
  /** The execution's duration, for calls that executed. */
  durationMs?: number | undefined;
}

export interface ToolLedgerOptions {
  /** The cache: read tools are cached in its `tools` tier; records go to its store. */
  cache: CacheView;
  /** The backend for records, history and blobs. @default the cache's store (memory for a memory-only cache) */
  store?: CacheBackend | undefined;
  /** @default cache.namespace */
  namespace?: string | undefined;
  /** Policy per tool name. @default {} */
  tools?: Readonly<Record<string, ToolPolicy>> | undefined;
  /** Policy of tools not in `tools` (and given no idempotencyKey). @default { kind: 'none' } */
  unlisted?: ToolPolicy | undefined;
  /** Write records are kept (and replayed) this long after their outcome. @default '7d' */
  ttl?: Duration | undefined;
  /** A write's claim lasts this long unless renewed; renewed every third of it while running. @default '30s' */
  leaseTtl?: Duration | undefined;
  /** @default 'wait' */
  onConcurrent?: 'wait' | 'throw' | undefined;
  /** Longest wait for another caller's outcome; then `ToolInProgressError`. @default unlimited (while the holder renews) */
  maxWait?: Duration | undefined;
  /** Every tool's `onFailed` unless it sets its own. @default 'replay' */
  onFailed?: 'replay' | 'retry' | undefined;
  /** Every tool's `onAbandoned` unless it sets its own. @default 'reexecute' */
  onAbandoned?: 'reexecute' | 'throw' | undefined;
  /** Every tool's `isFailure` unless it sets its own. @default a numeric `exitCode` other than 0 */
  isFailure?: ((value: unknown) => boolean) | undefined;
  /** Longest pause between two reads of a record another process holds. @default 100 */
  pollInterval?: Duration | undefined;
  /** Execution history per task and work item; `false` records none. @default true */
  history?: boolean | undefined;
  /** How long history entries are kept. @default '30d' */
  historyTtl?: Duration | undefined;
  /** Recorded outputs over this many bytes are stored once by content hash. @default 10240 */
  blobThreshold?: number | undefined;
  /** @default the cache's clock */
  clock?: Clock | undefined;
  /**
   * Longest wait for one store call. A claim or record that takes longer fails with `E_TIMEOUT`
   * (a write tool then throws rather than running unrecorded); history and counters are skipped
   * while the store does not answer.
   * @default the timeout of the cache's store level (500 ms for Redis), none in-process
   */
  timeout?: Duration | undefined;
  /**
   * Called when bookkeeping fails after a tool ran; the caller still gets the tool's value.
   * `operation` says what: `record` (the outcome could not be recorded and the ledger gave up: a
   * later call may run the tool again), `record-retrying` (the store is not taking the outcome
   * yet; the ledger keeps asking), `record-partial` (recorded without its result, or with a short
   * stand-in for an error too large to keep), `release`, `renew`, `history`, `stats`,
   * `invalidate`, `isFailure`. @default none
   */
  onError?:
    | ((error: unknown, context: { operation: string; tool: string; key?: string }) => void)
    | undefined;
}

export interface LedgerHistoryEntry {
  id: string;
  tool: string;
  kind: ToolKind;
  taskId?: string | undefined;
  workItemId?: string | undefined;
  key: string;
  source: OutcomeSource;
  status: 'succeeded' | 'failed';
  startedAt: number;
  finishedAt: number;
  durationMs: number;
  attempt: number;
  forced: boolean;
  recovered: boolean;
  exitCode?: number | undefined;
  error?: Pick<RecordedError, 'name' | 'message'> | undefined;
}

export interface HistoryFilter {
  taskId?: string | undefined;
  workItemId?: string | undefined;
  tool?: string | undefined;
  /** Only the most recent `limit` entries. @default all */
  limit?: number | undefined;
}

export interface ToolStats {
  /** executions + replays */
  calls: number;
  executions: number;
  /** Calls answered without running the tool: replayed, cached or joined. */
  replays: number;
  replayed: number;
  cached: number;
  joined: number;
  /** Executions that failed (threw, or returned a failure value). */
  failures: number;
  forced: number;
  /** Executions that took over from a holder that stopped. */
  recovered: number;
}

export interface LedgerStats extends ToolStats {
  /** Executions the ledger saved: same as replays. */
  executionsAvoided: number;
  /** replays / calls, 0 without calls. */
  replayRate: number;
  tools: Record<string, ToolStats>;
  /** Write records by state (filtered by task / work item when asked). */
  records: IdempotencyStats;
}

export interface WrapOptions<I, Rest extends unknown[]> {
  scope?: ToolScope | ((input: I, ...rest: Rest) => ToolScope | undefined) | undefined;
  idempotencyKey?: ((input: I, ...rest: Rest) => string | undefined) | undefined;
  force?: boolean | undefined;
}

export interface ToolLedger {
  readonly namespace: string;
  /** The idempotency store that keeps the write records. */
  readonly idempotency: IdempotencyStore;
  /** Runs the tool, or replays its recorded (or cached) outcome, per its policy. */
  executeOrReplay<I, O>(call: ExecuteOrReplayCall<I, O>): Promise<LedgerOutcome<O>>;
  /**
   * `execute` with the ledger in front, same signature: what adapters wrap a framework's tool
   * `execute` with. Extra arguments are passed through; `toolCallContext()` inside gives the key.
   */
  wrap<I, O, Rest extends unknown[] = []>(
    tool: string,
    execute: (input: I, ...rest: Rest) => O | Promise<O>,
    options?: WrapOptions<I, Rest>,
  ): (input: I, ...rest: Rest) => Promise<O>;
  /** The policy that applies to a tool (and, for an unlisted one, to a call with a key). */
  policyOf(tool: string, withKey?: boolean): ToolPolicy;
  /** Executions and replays, oldest first. O(history entries under the filter's prefix). */
  history(filter?: HistoryFilter): Promise<LedgerHistoryEntry[]>;
  /** Replay rate and executions avoided; per task / work item when filtered (from the history). */
  stats(filter?: Omit<HistoryFilter, 'limit'>): Promise<LedgerStats>;
}

const toolCallStorage = new AsyncLocalStorage<ToolCallContext>();

/** The ledger context of the tool call running now (inside `execute` or a wrapped function), if any. */
export function toolCallContext(): ToolCallContext | undefined {
  return toolCallStorage.getStore();
}

/** A numeric exitCode other than 0 (shell-like results) is a failure. */
export function defaultIsFailure(value: unknown): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { exitCode?: unknown }).exitCode === 'number' &&
    (value as { exitCode: number }).exitCode !== 0
  );
}

interface Flight {
  requestHash: string;
  /** Resolves true once the leader knows it executes (false: it replays or waits elsewhere). */
  claimed: Promise<boolean>;
  promise: Promise<LedgerOutcome<unknown>>;
  /** The leader has its outcome (its recording may still go on in the background). */
  done: boolean;
  /** Resolves when the flight leaves `flights` (after its recording): forced calls wait for it. */
  left: Promise<void>;
  /**
   * The leader's history entry when it threw the tool's outcome (its failure, executed or
   * replayed): joiners rethrow it and are counted as such. Unset for an error of the ledger's own.
   */
  thrown?: ThrownEntry | undefined;
}

type ThrownEntry = Omit<LedgerHistoryEntry, 'id'>;

type Counter = keyof ToolStats;
const COUNTERS: readonly Counter[] = [
  'calls',
  'executions',
  'replays',
  'replayed',
  'cached',
  'joined',
  'failures',
  'forced',
  'recovered',
];
const NEVER_ABORTED = new AbortController().signal;
const DEFAULT_HISTORY_TTL = '30d';

/**
 * A task or work item id as a history key segment: percent-encoded, and `idem` / `blob` with their
 * first letter encoded too, so that a history key never reads as an idempotency record or a blob
 * (`~ledger/<ns>:idem:…`), which stores never evict and do not count against their bounds.
 */
function historySegment(id: string): string {
  const encoded = encodeURIComponent(id);
  return encoded === 'idem' || encoded === 'blob'
    ? `%${encoded.charCodeAt(0).toString(16)}${encoded.slice(1)}`
    : encoded;
}

/**
 * The tool ledger: every tool call goes through `executeOrReplay`, which, per the tool's policy,
 * runs it once per idempotency key and replays the recorded outcome (write tools), serves it from
 * the `tools` tier while fresh (read tools), or just runs it (unlisted tools).
 */
export function createToolLedger(options: ToolLedgerOptions): ToolLedger {
  const cache = options.cache;
  if (!cache || typeof cache.tier !== 'function') {
    throw cacheError('E_INVALID_OPTION', 'ledger', 'createToolLedger needs `cache`: pass createCache(...)');
  }
  const clock = resolveClock(options);
  const store = boundStore(resolveStore(options, 'createToolLedger'), ledgerTimeout(options));
  const namespace = options.namespace ?? cache.namespace;
  const prefix = ledgerPrefix(namespace);
  const tools = cache.tier('tools').withNamespace(namespace);
  const idempotency = createIdempotencyStore({
    store,
    namespace,
    clock,
    ttl: options.ttl,
    leaseTtl: options.leaseTtl,
    blobThreshold: options.blobThreshold,
  });
  // Ledger-wide defaults under each tool's own policy (a tool's undefined keeps the default).
  const defaults = checkDefaults(options);
  const withDefaults = (policy: ToolPolicy): ToolPolicy => {
    const merged: ToolPolicy = { ...defaults, kind: policy.kind };
    for (const [name, value] of Object.entries(policy)) {
      if (value !== undefined) (merged as unknown as Record<string, unknown>)[name] = value;
    }
    return merged;
  };
  const policies = new Map<string, ToolPolicy>();
  for (const [tool, policy] of Object.entries(options.tools ?? {}))
    policies.set(tool, withDefaults(checkPolicy(tool, policy)));
  const unlisted = withDefaults(checkPolicy('unlisted', options.unlisted ?? { kind: 'none' }));
  const historyOn = options.history ?? true;
  const historyTtl = parseDuration(options.historyTtl ?? DEFAULT_HISTORY_TTL, 'historyTtl');
  const maxWait = options.maxWait;
  const pollInterval = options.pollInterval;
  const flights = new Map<string, Flight>();
  /** Outcomes still being recorded after their caller got them: same-process calls of the key wait. */
  const recordings = new Map<string, Promise<void>>();
  /** Counters for stores without persistent ones (memory). */
  const local = new Map<string, ToolStats>();
  let historySeq = 0;

  const report = (error: unknown, operation: string, tool: string, key?: string) => {
    try {
      options.onError?.(error, { operation, tool, key });
    } catch {
      // a reporting hook must not fail the call
    }
  };

  function policyOf(tool: string, withKey = false): ToolPolicy {
    return policies.get(tool) ?? (withKey ? { ...unlisted, kind: 'write' } : unlisted);
  }

  async function count(tool: string, deltas: Partial<ToolStats>): Promise<void> {
    // A stalled store is not asked (it would cost this call a timeout): counted here meanwhile.
    if (store.incrementCounters && !store.stalled) {
      try {
        await store.incrementCounters(`${prefix}${tool}`, deltas as Record<string, number>);
        return;
      } catch (error) {
        report(error, 'stats', tool);
        // Sent but unanswered: it may still land, and counting it here too would count it twice.
        // (A store that refused it, SQLite busy past its busy timeout, did not count it: kept here.)
        if (outlivedDeadline(error)) return;
      }
    }
    const into = local.get(tool) ?? emptyStats();
    for (const name of COUNTERS) into[name] += deltas[name] ?? 0;
    local.set(tool, into);
  }

  async function remember(entry: Omit<LedgerHistoryEntry, 'id'>): Promise<void> {
    const counts: Partial<ToolStats> = { calls: 1 };
    if (entry.source === 'executed') {
      counts.executions = 1;
      if (entry.status === 'failed') counts.failures = 1;
      if (entry.forced) counts.forced = 1;
      if (entry.recovered) counts.recovered = 1;
    } else {
      counts.replays = 1;
      counts[entry.source] = 1;
    }
    await count(entry.tool, counts);
    // History is best effort: a stalled store is skipped rather than waited on.
    if (!historyOn || store.stalled) return;
    const id = `${entry.startedAt.toString(36).padStart(9, '0')}-${(++historySeq).toString(36).padStart(8, '0')}-${randomBytes(4).toString('hex')}`;
    const key = `${historyPrefix(entry.taskId, entry.workItemId ?? '')}${id}`;
    const now = clock.now();
    try {
      await store.set(key, {
        value: encodeRecord({ ...entry, id }, now),
        expiresAt: historyTtl === undefined ? undefined : now + historyTtl,
      });
    } catch (error) {
      report(error, 'history', entry.tool, entry.key);
    }
  }

  function historyPrefix(taskId?: string, workItemId?: string): string {
    const task = `${prefix}hist:${historySegment(taskId ?? '')}:`;
    return workItemId === undefined ? task : `${task}${historySegment(workItemId)}:`;
  }

  async function invalidateAfter(tool: string, policy: ToolPolicy): Promise<void> {
    try {
      // The cache's dependency map (`git_commit: ['git_status', 'git_log']`) expands this name.
      await tools.invalidate(tool);
      for (const dependent of policy.invalidates ?? []) await tools.invalidate(dependent);
    } catch (error) {
      report(error, 'invalidate', tool);
    }
  }

  function entryOf(
    call: ExecuteOrReplayCall<unknown, unknown>,
    kind: ToolKind,
    key: string,
    source: OutcomeSource,
    startedAt: number,
    extra: Partial<LedgerHistoryEntry>,
  ): Omit<LedgerHistoryEntry, 'id'> {
    const finishedAt = clock.now();
    return {
      tool: call.tool,
      kind,
      taskId: call.scope?.taskId,
      workItemId: call.scope?.workItemId,
      key,
      source,
      status: 'succeeded',
      startedAt,
      finishedAt,
      durationMs: finishedAt - startedAt,
      attempt: 1,
      forced: call.force === true,
      recovered: false,
      ...extra,
    };
  }

  async function runUncached<O>(
    call: ExecuteOrReplayCall<unknown, O>,
    policy: ToolPolicy,
  ): Promise<LedgerOutcome<O>> {
    const startedAt = clock.now();
    const key = `${call.tool}:${uncachedId(call.input)}`;
    const context: ToolCallContext = {
      tool: call.tool,
      idempotencyKey: key,
      attempt: 1,
      recovered: false,
      signal: NEVER_ABORTED,
      scope: call.scope ?? {},
    };
    let value: O;
    try {
      value = await toolCallStorage.run(context, () => call.execute(context));
    } catch (error) {
      if (isControlFlow(call, error)) throw error;
      await invalidateAfter(call.tool, policy);
      await remember(
        entryOf(call, 'none', key, 'executed', startedAt, { status: 'failed', error: brief(error) }),
      );
      throw error;
    }
    await invalidateAfter(call.tool, policy);
    const failed = judge(policy, value, call.tool);
    const entry = entryOf(call, 'none', key, 'executed', startedAt, {
      status: failed ? 'failed' : 'succeeded',
      exitCode: exitCodeOf(value),
    });
    await remember(entry);
    return outcome(value, 'executed', entry, 'none');
  }

  async function runRead<O>(
    call: ExecuteOrReplayCall<unknown, O>,
    policy: ToolPolicy,
  ): Promise<LedgerOutcome<O>> {
    const startedAt = clock.now();
    const cacheKey = { name: call.tool, request: call.input };
    const storageKey = tools.key(cacheKey);
    const isFailure = (value: unknown) => judge(policy, value, call.tool);
    const context: ToolCallContext = {
      tool: call.tool,
      idempotencyKey: storageKey,
      attempt: 1,
      recovered: false,
      signal: NEVER_ABORTED,
      scope: call.scope ?? {},
    };
    let result: CacheResult<O>;
    // Whether this caller's own execute ran: callers that shared another's failed run joined it.
    let ran = false;
    try {
      result = await tools.getOrComputeResult<O>(
        cacheKey,
        () => {
          ran = true;
          return toolCallStorage.run(context, () => call.execute(context));
        },
        {
          ttl: policy.ttl,
          forceRefresh: call.force === true,
          shouldCache: (value) => value !== undefined && !isFailure(value),
        },
      );
    } catch (error) {
      if (isControlFlow(call, error)) throw error;
      // Sharing a failure is a join, as for writes: one execution and one failure, however many
      // callers it failed.
      await remember(
        entryOf(call, 'read', storageKey, ran ? 'executed' : 'joined', startedAt, {
          status: 'failed',
          error: brief(error),
        }),
      );
      throw error;
    }
    const source: OutcomeSource = result.hit ? 'cached' : result.coalesced ? 'joined' : 'executed';
    const failed = isFailure(result.value);
    const entry = entryOf(call, 'read', storageKey, source, startedAt, {
      status: failed ? 'failed' : 'succeeded',
      exitCode: exitCodeOf(result.value),
    });
    await remember(entry);
    return outcome(result.value, source, entry, 'read');
  }

  async function runWrite<O>(
    call: ExecuteOrReplayCall<unknown, O>,
    policy: ToolPolicy,
  ): Promise<LedgerOutcome<O>> {
    const key =
      call.idempotencyKey ??
      `auto:${call.tool}:${hashRequest({ input: call.input, taskId: call.scope?.taskId, workItemId: call.scope?.workItemId })}`;
    const request = { tool: call.tool, input: call.input };
    const requestHash = hashRequest(request);
    const onConcurrent = call.onConcurrent ?? policy.onConcurrent ?? options.onConcurrent ?? 'wait';
    // maxWait counts from here, also for a joiner that goes on to claim the key itself.
    const arrivedAt = Date.now();
    for (;;) {
      const flight = flights.get(key);
      if (!flight) break;
      if (flight.requestHash !== requestHash)
        throw new IdempotencyConflictError(key, flight.requestHash, requestHash);
      // A call that has finished is not in progress, even while its outcome is being recorded.
      if (onConcurrent === 'throw' && !flight.done && (await flight.claimed) && !flight.done) {
        throw new ToolInProgressError(key, call.tool, undefined, 'running');
      }
      const startedAt = clock.now();
      let joined: LedgerOutcome<unknown>;
      try {
        joined = await flight.promise;
      } catch (error) {
        const thrown = flight.thrown;
        // A forced call runs anyway, once the flight has left. So does a call that waits when
        // the leader gave up without an outcome (it chose onConcurrent: 'throw', or its own wait
        // ran out): that error is the leader's choice, not this caller's.
        if (call.force || (!thrown && onConcurrent === 'wait' && ToolInProgressError.isInstance(error))) {
          await flight.left;
          continue;
        }
        if (thrown) {
          // Sharing a failure is a join (or a replay) too: counted, and in the history.
          await remember(
            entryOf(call, 'write', key, thrown.source === 'executed' ? 'joined' : thrown.source, startedAt, {
              status: thrown.status,
              attempt: thrown.attempt,
              exitCode: thrown.exitCode,
              error: thrown.error,
            }),
          );
        }
        throw error;
      }
      // A forced call does not take another call's result: it waits its turn (until the flight
      // has left, its outcome recorded), then runs.
      if (call.force) {
        await flight.left;
        continue;
      }
      // Sharing a replay is a replay; sharing an execution is a join.
      const source: OutcomeSource = joined.source === 'executed' ? 'joined' : joined.source;
      const entry = entryOf(call, 'write', key, source, startedAt, {
        status: joined.status,
        attempt: joined.attempt,
        exitCode: exitCodeOf(joined.value),
      });
      await remember(entry);
      return outcome(copyValue(joined.value as O), source, entry, 'write');
    }
    let claimed!: (executes: boolean) => void;
    let left!: () => void;
    const flight: Flight = {
      requestHash,
      claimed: new Promise<boolean>((resolve) => {
        claimed = resolve;
      }),
      promise: undefined as never,
      done: false,
      left: new Promise<void>((resolve) => {
        left = resolve;
      }),
    };
    flight.promise = lead(call, policy, key, request, onConcurrent, arrivedAt, claimed, (entry) => {
      flight.thrown = entry;
    });
    const leave = () => {
      if (flights.get(key) === flight) flights.delete(key);
      left();
    };
    // Kept while its outcome is still being recorded in the background: a call of the same key in
    // this process joins it then, instead of finding the record pending (or its lease run out).
    const settled = () => {
      flight.done = true;
      claimed(false);
      const recording = recordings.get(key);
      if (recording) void recording.then(leave);
      else leave();
    };
    flight.promise.then(settled, settled);
    flights.set(key, flight);
    return flight.promise as Promise<LedgerOutcome<O>>;
  }

  async function lead<O>(
    call: ExecuteOrReplayCall<unknown, O>,
    policy: ToolPolicy,
    key: string,
    request: unknown,
    onConcurrent: 'wait' | 'throw',
    arrivedAt: number,
    claimed: (executes: boolean) => void,
    thrown: (entry: ThrownEntry) => void,
  ): Promise<LedgerOutcome<O>> {
    const startedAt = clock.now();
    const waitMs = parseDuration(policy.maxWait ?? maxWait, 'maxWait');
    // Real time, not the injected clock: a fake clock must not make a wait endless or instant.
    const deadline = waitMs === undefined ? undefined : arrivedAt + waitMs;
    for (;;) {
      const owner = randomUUID();
      let claim: Awaited<ReturnType<typeof idempotency.checkOrCreate<O>>>;
      try {
        claim = await idempotency.checkOrCreate<O>(key, request, {
          owner,
          leaseTtl: policy.leaseTtl,
          ttl: policy.ttl,
          force: call.force,
          retryFailed: policy.onFailed === 'retry',
          takeOver: call.force === true || policy.onAbandoned !== 'throw',
          metadata: { tool: call.tool, taskId: call.scope?.taskId, workItemId: call.scope?.workItemId },
        });
      } catch (error) {
        if (CacheError.isInstance(error) && error.code === 'E_TIMEOUT') {
          withdrawLater(key, owner, leaseMsOf(policy));
        }
        throw error;
      }
      if (claim.status === 'created') {
        claimed(true);
        return execute(call, policy, key, claim.owner, claim.record, claim.recovered, thrown);
      }
      if (claim.status === 'pending') {
        if (claim.abandoned) throw new ToolOutcomeUnknownError(key, call.tool, claim.record.attempts);
        if (onConcurrent === 'throw') {
          throw new ToolInProgressError(key, call.tool, claim.record.leaseExpiresAt, 'running');
        }
        // Someone runs it: same-process callers with onConcurrent 'throw' get the error too.
        claimed(true);
        const record = await idempotency.waitFor(key, {
          timeout: deadline === undefined ? undefined : Math.max(0, deadline - Date.now()),
          pollInterval,
        });
        if (record?.status === 'pending' && (record.leaseExpiresAt ?? 0) > clock.now()) {
          throw new ToolInProgressError(key, call.tool, record.leaseExpiresAt, 'timeout');
        }
        continue;
      }
      claimed(false);
      return replay(call, key, claim.record, startedAt, thrown);
    }
  }

  async function replay<O>(
    call: ExecuteOrReplayCall<unknown, O>,
    key: string,
    record: IdempotencyRecord<O>,
    startedAt: number,
    thrown: (entry: ThrownEntry) => void,
  ): Promise<LedgerOutcome<O>> {
    const base = { attempt: record.attempts, status: record.status as 'succeeded' | 'failed' };
    if (record.status === 'failed' && record.error !== undefined) {
      const entry = entryOf(call, 'write', key, 'replayed', startedAt, {
        ...base,
        error: brief(record.error),
      });
      await remember(entry);
      thrown(entry);
      throw new RecordedToolError(record.error, call.tool, record.completedAt);
    }
    if (record.resultNotStored !== undefined) {
      const error = cacheError(
        'E_UNSERIALIZABLE',
        'ledger',
        `tool "${call.tool}" ran under key "${key}" but its result could not be recorded ` +
          `(${record.resultNotStored}); return serialisable data from the tool, or call with force: true to run it again`,
      );
      // Still a replay of the recorded outcome (the tool did not run): counted, and in the history.
      const entry = entryOf(call, 'write', key, 'replayed', startedAt, { ...base, error: brief(error) });
      await remember(entry);
      thrown(entry);
      throw error;
    }
    const entry = entryOf(call, 'write', key, 'replayed', startedAt, {
      ...base,
      exitCode: exitCodeOf(record.result),
    });
    await remember(entry);
    return outcome(record.result as O, 'replayed', entry, 'write');
  }

  async function execute<O>(
    call: ExecuteOrReplayCall<unknown, O>,
    policy: ToolPolicy,
    key: string,
    owner: string,
    record: IdempotencyRecord<O>,
    recovered: boolean,
    thrown: (entry: ThrownEntry) => void,
  ): Promise<LedgerOutcome<O>> {
    const startedAt = clock.now();
    const leaseMs = leaseMsOf(policy);
    const lost = new AbortController();
    // Renewed well before it runs out, so that a live holder is never taken over.
    const renew = setInterval(
      () => {
        idempotency.renew(key, owner, leaseMs).then(
          (held) => {
            if (!held && !lost.signal.aborted)
              lost.abort(new ToolInProgressError(key, call.tool, undefined, 'running'));
          },
          (error) => report(error, 'renew', call.tool, key),
        );
      },
      timerMs(Math.max(10, Math.floor(leaseMs / 3))),
    );
    renew.unref();
    const context: ToolCallContext = {
      tool: call.tool,
      idempotencyKey: key,
      attempt: record.attempts,
      recovered,
      signal: lost.signal,
      scope: call.scope ?? {},
    };
    const extra = { attempt: record.attempts, recovered };
    let value: O;
    try {
      value = await toolCallStorage.run(context, () => call.execute(context));
    } catch (error) {
      if (isControlFlow(call, error)) {
        clearInterval(renew);
        // Not an outcome: the tool will run again when the caller resumes.
        await idempotency.release(key, owner).catch((failure) => report(failure, 'release', call.tool, key));
        throw error;
      }
      // A failure is recorded as one even when the tool threw nothing (`throw undefined`,
      // `Promise.reject()`), so that a retry replays the failure instead of an `undefined` success.
      const failure = error === undefined ? new Error(`tool "${call.tool}" threw undefined`) : error;
      await keepOutcome(
        async () => {
          try {
            await idempotency.markFailed(key, failure, owner, { ttl: policy.ttl });
          } catch (recordFailure) {
            if (!unstorable(recordFailure)) throw recordFailure;
            // The error itself cannot be kept (over the store's maxBytes): a short one stands in
            // for it, so the failure is still recorded and replayed, never run again.
            const { name, message } = brief(failure);
            // No stack: it would repeat the message and carry the frames.
            const stand = {
              name: 'Error',
              message: `tool "${call.tool}" failed with ${name}: ${message.slice(0, 200)} (the full error was too large to record)`,
            };
            await idempotency.markFailed(key, stand, owner, { ttl: policy.ttl });
            report(recordFailure, 'record-partial', call.tool, key);
          }
        },
        call.tool,
        key,
        lost.signal,
        renew,
      );
      // A failed write may still have changed something: what depends on it is stale either way.
      await invalidateAfter(call.tool, policy);
      const entry = entryOf(call, 'write', key, 'executed', startedAt, {
        ...extra,
        status: 'failed',
        error: brief(error),
      });
      await remember(entry);
      thrown(entry);
      throw error;
    }
    const failed = judge(policy, value, call.tool);
    const recordOutcome = (options: { result?: unknown; resultNotStored?: string }) =>
      failed
        ? idempotency.markFailed(key, undefined, owner, { ttl: policy.ttl, ...options })
        : idempotency.markSucceeded(key, options.result, owner, { ttl: policy.ttl, ...options });
    await keepOutcome(
      async () => {
        try {
          await recordOutcome({ result: value });
        } catch (error) {
          if (!unstorable(error)) throw error;
          // The value cannot be kept (not data, or over the store's maxBytes): asking again would
          // not help. Recorded as done without it: a replay must not run the side effect again.
          await recordOutcome({ resultNotStored: error.message });
          report(error, 'record-partial', call.tool, key);
        }
      },
      call.tool,
      key,
      lost.signal,
      renew,
    );
    await invalidateAfter(call.tool, policy);
    const entry = entryOf(call, 'write', key, 'executed', startedAt, {
      ...extra,
      status: failed ? 'failed' : 'succeeded',
      exitCode: exitCodeOf(value),
    });
    await remember(entry);
    return outcome(value, 'executed', entry, 'write');
  }

  /**
   * The policy's `isFailure`; one that throws is reported and the value taken as a success (the
   * tool did return it), so a faulty predicate never leaves a claim pending or a call unanswered.
   */
  function judge(policy: ToolPolicy, value: unknown, tool: string): boolean {
    try {
      return (policy.isFailure ?? defaultIsFailure)(value);
    } catch (error) {
      report(error, 'isFailure', tool);
      return false;
    }
  }

  function leaseMsOf(policy: ToolPolicy): number {
    return parseDuration(policy.leaseTtl ?? options.leaseTtl ?? '30s', 'leaseTtl') ?? 30_000;
  }

  /**
   * Records a write's outcome, asking again while the store does not answer (busy, stalled, timing
   * out, unreachable) for as long as this caller holds the claim, with its lease renewed
   * meanwhile: a record left pending would let the next caller run the side effect again once the
   * lease ran out. A refusal that will not change (an error of ours, not the store's) ends it after
   * RECORD_ATTEMPTS, and so does RECORD_GIVE_UP_MS without an answer. The caller waits up to
   * RECORD_WAIT_MS; past that it gets its outcome while recording goes on in the background, and
   * callers of the same key in this process join it meanwhile (see `recordings`).
   */
  async function keepOutcome(
    record: () => Promise<unknown>,
    tool: string,
    key: string,
    lost: AbortSignal,
    renew: ReturnType<typeof setInterval>,
  ): Promise<void> {
    const giveUp = Date.now() + RECORD_GIVE_UP_MS;
    const recording = (async () => {
      try {
        for (let attempt = 1; ; attempt++) {
          try {
            await record();
            return;
          } catch (error) {
            const closed = CacheError.isInstance(error) && error.code === 'E_CLOSED';
            const storeDown =
              !CacheError.isInstance(error) || error.code === 'E_TIMEOUT' || error.code === 'E_BACKEND';
            if (
              lost.aborted ||
              closed ||
              Date.now() >= giveUp ||
              (!storeDown && attempt >= RECORD_ATTEMPTS)
            ) {
              report(error, 'record', tool, key);
              return;
            }
            // Said once, while it keeps trying: the store is not taking the record.
            if (attempt === RECORD_ATTEMPTS) report(error, 'record-retrying', tool, key);
            await sleep(Math.min(RECORD_RETRY_MS * 4 ** (attempt - 1), RECORD_RETRY_MAX_MS));
          }
        }
      } finally {
        clearInterval(renew);
      }
    })();
    let waited: ReturnType<typeof setTimeout> | undefined;
    const done = await Promise.race([
      recording.then(() => true),
      new Promise<false>((resolve) => {
        waited = setTimeout(() => resolve(false), RECORD_WAIT_MS);
      }),
    ]);
    clearTimeout(waited);
    if (!done) {
      recordings.set(key, recording);
      void recording.then(() => {
        if (recordings.get(key) === recording) recordings.delete(key);
      });
    }
  }

  /**
   * A claim that timed out may still land when the store wakes up: withdrawn then (until its lease
   * would have run out), so that the retry of a call that never ran is not held up. A release that
   * finds nothing may have come before the claim: asked again until the record is ours and
   * released, someone else's, or complete.
   */
  function withdrawLater(key: string, owner: string, leaseMs: number): void {
    const until = Date.now() + leaseMs;
    void (async () => {
      while (Date.now() < until) {
        try {
          if (await idempotency.release(key, owner)) return;
          const record = await idempotency.check(key);
          if (record && (record.status !== 'pending' || record.owner !== owner)) return;
        } catch (error) {
          if (CacheError.isInstance(error) && error.code === 'E_CLOSED') return;
        }
        await sleep(RECORD_RETRY_MAX_MS, undefined, { ref: false });
      }
    })();
  }

  function outcome<O>(
    value: O,
    source: OutcomeSource,
    entry: Omit<LedgerHistoryEntry, 'id'>,
    kind: ToolKind,
  ): LedgerOutcome<O> {
    return {
      value,
      source,
      replayed: source !== 'executed',
      status: entry.status,
      tool: entry.tool,
      kind,
      key: entry.key,
      attempt: entry.attempt,
      recovered: entry.recovered,
      durationMs: source === 'executed' ? entry.durationMs : undefined,
    };
  }

  async function history(filter: HistoryFilter = {}): Promise<LedgerHistoryEntry[]> {
    const scanPrefix =
      filter.taskId !== undefined ? historyPrefix(filter.taskId, filter.workItemId) : `${prefix}hist:`;
    const keys: string[] = [];
    for await (const key of store.keys({ prefix: scanPrefix })) keys.push(key);
    const entries: LedgerHistoryEntry[] = [];
    for (let i = 0; i < keys.length; i += 200) {
      for (const stored of await store.getMany(keys.slice(i, i + 200))) {
        if (!stored) continue;
        const entry = decodeRecord<LedgerHistoryEntry>(stored.value);
        if (filter.workItemId !== undefined && entry.workItemId !== filter.workItemId) continue;
        if (filter.tool !== undefined && entry.tool !== filter.tool) continue;
        entries.push(entry);
      }
    }
    entries.sort(byTime);
    return filter.limit === undefined ? entries : entries.slice(Math.max(0, entries.length - filter.limit));
  }

  async function stats(filter: Omit<HistoryFilter, 'limit'> = {}): Promise<LedgerStats> {
    const perTool: Record<string, ToolStats> = {};
    if (filter.taskId !== undefined || filter.workItemId !== undefined) {
      for (const entry of await history(filter)) {
        const into = (perTool[entry.tool] ??= emptyStats());
        into.calls++;
        if (entry.source === 'executed') {
          into.executions++;
          if (entry.status === 'failed') into.failures++;
          if (entry.forced) into.forced++;
          if (entry.recovered) into.recovered++;
        } else {
          into.replays++;
          into[entry.source]++;
        }
      }
    } else {
      const persisted = store.readCounters ? await store.readCounters() : {};
      for (const [scope, values] of Object.entries(persisted)) {
        if (!scope.startsWith(prefix)) continue;
        const into = (perTool[scope.slice(prefix.length)] ??= emptyStats());
        for (const name of COUNTERS) into[name] += values[name] ?? 0;
      }
      for (const [tool, values] of local) {
        const into = (perTool[tool] ??= emptyStats());
        for (const name of COUNTERS) into[name] += values[name];
      }
      if (filter.tool !== undefined)
        for (const tool of Object.keys(perTool)) if (tool !== filter.tool) delete perTool[tool];
    }
    const totals = emptyStats();
    for (const each of Object.values(perTool)) for (const name of COUNTERS) totals[name] += each[name];
    const records = await idempotency.stats({
      metadata: { taskId: filter.taskId, workItemId: filter.workItemId, tool: filter.tool },
    });
    return {
      ...totals,
      executionsAvoided: totals.replays,
      replayRate: totals.calls === 0 ? 0 : totals.replays / totals.calls,
      tools: perTool,
      records,
    };
  }

  const ledger: ToolLedger = {
    namespace,
    idempotency,
    policyOf,
    history,
    stats,

    async executeOrReplay<I, O>(call: ExecuteOrReplayCall<I, O>): Promise<LedgerOutcome<O>> {
      validateName(call.tool, 'name');
      if (typeof call.execute !== 'function') {
        throw cacheError(
          'E_INVALID_OPTION',
          'ledger',
          `executeOrReplay for "${call.tool}" needs an execute function`,
        );
      }
      const policy = policyOf(call.tool, call.idempotencyKey !== undefined);
      const generic = call as ExecuteOrReplayCall<unknown, O>;
      if (policy.kind === 'write') return runWrite(generic, policy);
      if (call.idempotencyKey !== undefined) {
        throw cacheError(
          'E_INVALID_OPTION',
          'ledger',
          `tool "${call.tool}" is a ${policy.kind} tool, so an idempotencyKey would be ignored; ` +
            'declare it { kind: "write" } to run it once per key',
        );
      }
      return policy.kind === 'read' ? runRead(generic, policy) : runUncached(generic, policy);
    },

    wrap<I, O, Rest extends unknown[] = []>(
      tool: string,
      fn: (input: I, ...rest: Rest) => O | Promise<O>,
      wrapOptions: WrapOptions<I, Rest> = {},
    ): (input: I, ...rest: Rest) => Promise<O> {
      validateName(tool, 'name');
      return async (input: I, ...rest: Rest): Promise<O> => {
        const scope =
          typeof wrapOptions.scope === 'function' ? wrapOptions.scope(input, ...rest) : wrapOptions.scope;
        const result = await ledger.executeOrReplay<I, O>({
          tool,
          input,
          scope,
          idempotencyKey: wrapOptions.idempotencyKey?.(input, ...rest),
          force: wrapOptions.force,
          execute: () => fn(input, ...rest),
        });
        return result.value;
      };
    },
  };
  return ledger;
}

/** Tries at recording an outcome (25 ms, 100 ms, 400 ms apart) before the failure is reported; it goes on after. */
const RECORD_ATTEMPTS = 4;
const RECORD_RETRY_MS = 25;
/** Longest pause between two tries at recording, or at withdrawing a claim. */
const RECORD_RETRY_MAX_MS = 1000;
/** How long a caller waits for its outcome to be recorded before it gets it anyway. */
const RECORD_WAIT_MS = 2000;
/** How long recording an outcome goes on without an answer from the store before it is given up. */
const RECORD_GIVE_UP_MS = 10 * 60_000;

function isControlFlow(call: ExecuteOrReplayCall<unknown, unknown>, error: unknown): boolean {
  try {
    return call.isControlFlow?.(error) === true;
  } catch {
    return false;
  }
}

/**
 * The id of an unrecorded call in the history: the input's hash, or a random one for an input a
 * key cannot express (a Blob, a callback), since a tool that is never recorded must still run.
 */
function uncachedId(input: unknown): string {
  try {
    return hashRequest(input);
  } catch {
    return `call-${randomUUID()}`;
  }
}

function checkPolicy(tool: string, policy: ToolPolicy): ToolPolicy {
  validateName(tool, 'name');
  if (!policy || !['write', 'read', 'none'].includes(policy.kind)) {
    throw cacheError(
      'E_INVALID_OPTION',
      'ledger',
      `tool "${tool}" needs kind 'write' (side effects), 'read' (cacheable) or 'none', got ${JSON.stringify(policy?.kind)}`,
    );
  }
  for (const dependent of policy.invalidates ?? []) validateName(dependent, 'name');
  checkChoices(policy, `tools.${tool}`);
  if (policy.ttl !== undefined) parseDuration(policy.ttl, `tools.${tool}.ttl`);
  if (policy.leaseTtl !== undefined) parseDuration(policy.leaseTtl, `tools.${tool}.leaseTtl`);
  if (policy.maxWait !== undefined) parseDuration(policy.maxWait, `tools.${tool}.maxWait`);
  return policy;
}

const CHOICES = {
  onConcurrent: ['wait', 'throw'],
  onFailed: ['replay', 'retry'],
  onAbandoned: ['reexecute', 'throw'],
} as const;

/** Options with a fixed set of values, and `isFailure`, checked where they are given. */
function checkChoices(
  options: Partial<Record<keyof typeof CHOICES | 'isFailure', unknown>>,
  where: string,
): void {
  for (const [name, allowed] of Object.entries(CHOICES)) {
    const value = options[name as keyof typeof CHOICES];
    if (value !== undefined && !(allowed as readonly unknown[]).includes(value)) {
      throw cacheError(
        'E_INVALID_OPTION',
        'ledger',
        `${where}.${name} must be ${allowed.map((choice) => `'${choice}'`).join(' or ')}, got ${JSON.stringify(value)}`,
      );
    }
  }
  if (options.isFailure !== undefined && typeof options.isFailure !== 'function') {
    throw cacheError(
      'E_INVALID_OPTION',
      'ledger',
      `${where}.isFailure must be a function (value) => boolean`,
    );
  }
}

/** The ledger-wide policy defaults, checked. */
function checkDefaults(options: ToolLedgerOptions): Omit<ToolPolicy, 'kind'> {
  checkChoices(options, 'createToolLedger');
  // Checked here, not on the first call: a bad value would otherwise fail every write call.
  if (options.maxWait !== undefined) parseDuration(options.maxWait, 'maxWait');
  if (options.pollInterval !== undefined) parseDuration(options.pollInterval, 'pollInterval');
  const defaults: Omit<ToolPolicy, 'kind'> = {};
  if (options.onFailed !== undefined) defaults.onFailed = options.onFailed;
  if (options.onAbandoned !== undefined) defaults.onAbandoned = options.onAbandoned;
  if (options.isFailure !== undefined) defaults.isFailure = options.isFailure;
  return defaults;
}

function emptyStats(): ToolStats {
  return {
    calls: 0,
    executions: 0,
    replays: 0,
    replayed: 0,
    cached: 0,
    joined: 0,
    failures: 0,
    forced: 0,
    recovered: 0,
  };
}

function exitCodeOf(value: unknown): number | undefined {
  const code =
    typeof value === 'object' && value !== null ? (value as { exitCode?: unknown }).exitCode : undefined;
  return typeof code === 'number' ? code : undefined;
}

/**
 * Oldest first; calls of the same millisecond by their sequence number (the id's second part,
 * compared as a number: ids written before it was zero-padded have it unpadded), then by id.
 */
function byTime(a: LedgerHistoryEntry, b: LedgerHistoryEntry): number {
  return (
    a.startedAt - b.startedAt ||
    sequenceOf(a.id) - sequenceOf(b.id) ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

function sequenceOf(id: string): number {
  const sequence = Number.parseInt(id.split('-')[1] ?? '', 36);
  return Number.isFinite(sequence) ? sequence : 0;
}

function brief(error: unknown): Pick<RecordedError, 'name' | 'message'> {
  // recordError never throws, whatever was thrown (an object without toString, say).
  const { name, message } = recordError(error);
  return { name, message };
}

/** A record the store refuses for what it holds (not data, over its maxBytes): trying again would not help. */
function unstorable(error: unknown): error is CacheError {
  return (
    CacheError.isInstance(error) && (error.code === 'E_UNSERIALIZABLE' || error.code === 'E_INVALID_OPTION')
  );
}
