/**
 * `pnpm demo`: every x-llm-cache adapter, run twice over one cache store — cold, then warm — with
 * a table per adapter of what the cache did (from the core's own counters) and the store's
 * statistics at the end. Offline by default: the models are LOCAL STAND-INS written against the AI
 * SDK's and LangChain's model interfaces (src/local/); set OPENAI_API_KEY or ANTHROPIC_API_KEY
 * for real providers. Exits non-zero when the warm run was not served from the cache.
 *
 * Store: SQLite at apps/demo/.cache/demo.db by default; `--redis` or LLM_CACHE_URL=redis://… for
 * Redis; `--tiers` for an in-memory level in front. Without `--tiers` there is no memory level, so
 * every warm hit is read from the store itself (as after a restart, or from another process).
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Cache, CacheBackend } from '@x/cache-core';
import { createCache, LEDGER_KEY_PREFIX, storeFromUrl } from '@x/cache-core';
import type { DemoConfig } from './config.ts';
import { parseConfig, redactUrl, USAGE, UsageError } from './config.ts';
import { LOCAL_PRICES } from './local/names.ts';
import type { Pass } from './measure.ts';
import { Recorder } from './measure.ts';
import { selectProviders } from './providers.ts';
import { adapterTable, crashTable, int, ms, speedUp, usd } from './report.ts';
import { AI_SDK_NAMESPACE, aiSdkScenario } from './scenarios/ai-sdk.ts';
import { crashAndRetry, LEDGER_NAMESPACE } from './scenarios/crash.ts';
import { DECORATORS_NAMESPACE, decoratorsScenario } from './scenarios/decorators.ts';
import { LANGCHAIN_NAMESPACE, langchainScenario } from './scenarios/langchain.ts';
import type { Scenario, ScenarioContext } from './scenarios/types.ts';
import { llmCacheStats } from './store-stats.ts';
import { summarise } from './verdict.ts';

const APP_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
const DEMO_NAMESPACE = 'demo';
const TIERS = ['responses', 'embeddings', 'tools'] as const;

const SCENARIOS: readonly { namespace: string; setup: (context: ScenarioContext) => Scenario }[] = [
  { namespace: AI_SDK_NAMESPACE, setup: aiSdkScenario },
  { namespace: LANGCHAIN_NAMESPACE, setup: langchainScenario },
  { namespace: DECORATORS_NAMESPACE, setup: decoratorsScenario },
];

/** Fails fast, in one line, when the store cannot be reached (the cache itself would only count misses). */
async function probe(backend: CacheBackend, config: DemoConfig): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('no answer within 3 s')), 3000);
  });
  try {
    // One cheap read (no scan): a shared store may be large.
    await Promise.race([backend.has('llm-cache-demo-probe'), timeout]);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    const fix =
      config.kind === 'redis'
        ? 'start redis-server (or point LLM_CACHE_URL at a reachable Redis), or run without --redis for SQLite'
        : 'check the path in LLM_CACHE_URL / LLM_CACHE_DIR';
    throw new UsageError(`cannot reach the store ${config.storeLabel}: ${reason} — ${fix}`);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Each run starts cold: the demo's own store is reset; in a shared store only the demo's cache
 * entries go. `clearAll` keeps tool-ledger records (they stand for side effects already done), so
 * in its own store the demo drops its namespaces' records too; in a shared one they stay, and each
 * run is a new ledger task instead.
 */
async function startCold(
  cache: Cache,
  store: CacheBackend,
  config: DemoConfig,
  namespaces: readonly string[],
): Promise<void> {
  if (config.keep) return;
  if (config.owned) {
    await cache.clearAll();
    for (const namespace of namespaces) await store.deleteByPrefix(`${LEDGER_KEY_PREFIX}${namespace}:`);
    return;
  }
  for (const namespace of namespaces) {
    for (const tier of TIERS) await cache.withNamespace(namespace).tier(tier).clear();
  }
}

async function main(argv: readonly string[]): Promise<number> {
  const config = parseConfig(argv, process.env, APP_DIR);
  if (config.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const out = config.json ? () => {} : (line = '') => process.stdout.write(`${line}\n`);
  const providers = await selectProviders(process.env, config.forceLocal);

  const store = storeFromUrl(config.url)!;
  try {
    await probe(store, config);
  } catch (error) {
    // A Redis client that never connected keeps retrying; do not wait for it to give up.
    void store.close().catch(() => {});
    throw error;
  }
  const cache = createCache({
    store,
    // Off by default so that warm hits visibly come from the store; --tiers adds the hot level.
    memory: config.tiers ? { maxEntries: 10_000 } : false,
    namespace: DEMO_NAMESPACE,
    pricing: LOCAL_PRICES,
  });
  await cache.ready();

  // One agent run: the ledger replays write tools within it. Unique, so a shared store starts cold too.
  const taskId = `demo-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  const context: ScenarioContext = { cache, providers, taskId, tools: { calls: 0, executions: 0 } };
  const namespaces = [...SCENARIOS.map((scenario) => scenario.namespace), LEDGER_NAMESPACE];
  await startCold(cache, store, config, namespaces);

  out();
  out('x-llm-cache demo — every adapter, cold then warm');
  out(`  models: ${providers.label}`);
  out(
    `  store:  ${config.storeLabel}` +
      (config.tiers
        ? ' with an in-memory level in front (--tiers)'
        : ' — no memory level: warm hits come from the store (--tiers adds one)'),
  );
  out(
    `  start:  ${config.keep ? 'kept the existing entries (--keep)' : config.owned ? 'store reset (the demo owns it)' : `cleared namespaces ${namespaces.join(', ')}`}`,
  );

  const counters = providers.local ? [providers.counters.chat, providers.counters.embeddings] : undefined;
  const recorder = new Recorder(cache, counters, context.tools);
  const titles = new Map<string, string>();
  for (const pass of ['cold', 'warm'] as const satisfies readonly Pass[]) {
    out();
    out(`${pass === 'cold' ? 'Cold run: every call goes to the model' : 'Warm run: the same calls again'} …`);
    const started = performance.now();
    // Fresh adapters for each pass: nothing is remembered in process memory between the runs.
    for (const { setup } of SCENARIOS) {
      const scenario = setup(context);
      titles.set(scenario.namespace, scenario.title);
      for (const operation of scenario.operations) {
        await recorder.measure(pass, scenario.namespace, scenario.namespace, operation.name, operation.run);
      }
    }
    await cache.flushStats();
    out(`  done in ${ms(performance.now() - started)}`);
  }

  const records = [...recorder.records.values()];
  const summary = summarise(records, providers.local);
  for (const [namespace, title] of titles) {
    out();
    out(`${title} · namespace ${namespace}`);
    out(adapterTable(records.filter((record) => record.adapter === namespace)));
  }

  out();
  out(
    `All adapters: warm run ${summary.warm.hits}/${summary.warm.calls} lookups served from the cache in ` +
      `${ms(summary.warm.ms)} (cold: ${ms(summary.cold.ms)}, ${speedUp(summary.cold.ms, summary.warm.ms)} faster); ` +
      `saved ${int(summary.warm.inputTokensSaved + summary.warm.outputTokensSaved)} tokens, ${usd(summary.warm.costSavedUsd)}`,
  );

  out();
  out(`Tool ledger — a crash and a retry (@x/cache-core createToolLedger) · namespace ${LEDGER_NAMESPACE}`);
  const crash = await crashAndRetry(config.url, taskId);
  out(crashTable(crash));
  if (!crash.ok) {
    summary.ok = false;
    summary.problems.push(...crash.problems);
  }

  // Closing flushes the counters to the store, where the CLI reads them.
  await cache.close();
  const stats = await llmCacheStats(config, config.json ? 'json' : 'table');
  out();
  out(`$ ${redactUrl(stats.command)}`);
  out(stats.stdout.trimEnd());
  if (stats.exitCode !== 0) {
    summary.ok = false;
    summary.problems.push(`llm-cache stats failed (exit ${stats.exitCode}): ${stats.stderr.trim()}`);
  }

  if (config.json) {
    const document = {
      ok: summary.ok,
      problems: summary.problems,
      models: providers.label,
      local: providers.local,
      store: { kind: config.kind, label: config.storeLabel, tiers: config.tiers, owned: config.owned },
      cold: summary.cold,
      warm: summary.warm,
      operations: records,
      ledgerCrash: crash,
      storeStats: stats.exitCode === 0 ? JSON.parse(stats.stdout) : null,
    };
    process.stdout.write(`${JSON.stringify(document, null, 2)}\n`);
  }
  out();
  if (summary.ok) {
    out('OK: the warm run was served entirely from the cache.');
    return 0;
  }
  process.stderr.write(
    `demo: FAILED — the warm run must be served from the cache:\n  ${summary.problems.join('\n  ')}\n`,
  );
  return 1;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  if (error instanceof UsageError) {
    process.stderr.write(`demo: ${error.message}\n`);
    process.exit(2);
  }
  throw error;
}
