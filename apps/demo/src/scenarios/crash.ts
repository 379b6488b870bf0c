/**
 * The tool ledger surviving a crash: a first process sends an email (a write tool, recorded by
 * the ledger), starts posting an announcement and is killed with SIGKILL in the middle of it. A
 * second process retries the same task on the same store: the email is replayed from the ledger,
 * not sent again; the announcement, whose holder died before recording an outcome, runs once its
 * lease has expired — with the same idempotency key, which the outside world can deduplicate on.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { OutboxLine, WorkerConfig, WorkerEvent } from '../ledger-worker.ts';

export const LEDGER_NAMESPACE = 'demo/ledger';
const LEASE_TTL_MS = 1000;
const WORKER = fileURLToPath(new URL('../ledger-worker.js', import.meta.url));

type Outcome = Extract<WorkerEvent, { event: 'outcome' }>;

export interface ProcessReport {
  pid: number;
  /** `killed` when the demo killed it mid-tool, else its exit code. */
  exit: 'killed' | number;
  outcomes: Outcome[];
  /** Tools whose execution had started when the process ended. */
  started: string[];
}

export interface CrashReport {
  ok: boolean;
  problems: string[];
  taskId: string;
  first: ProcessReport;
  retry: ProcessReport;
  outbox: OutboxLine[];
  ms: number;
}

/** Runs the worker; with `killOn`, kills it (SIGKILL) as soon as that tool has started. */
function runWorker(mode: 'crash' | 'retry', config: WorkerConfig, killOn?: string): Promise<ProcessReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=@x/source', WORKER, mode, JSON.stringify(config)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const report: ProcessReport = { pid: child.pid ?? 0, exit: 0, outcomes: [], started: [] };
    let buffered = '';
    let stderr = '';
    let killed = false;
    // A worker that never reaches the tool would hang the demo: give up after 20 s.
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const event = JSON.parse(buffered.slice(0, newline)) as WorkerEvent;
        buffered = buffered.slice(newline + 1);
        if (event.event === 'outcome') report.outcomes.push(event);
        if (event.event === 'tool-started') {
          report.started.push(event.tool);
          if (event.tool === killOn && !killed) {
            killed = true;
            child.kill('SIGKILL');
          }
        }
        newline = buffered.indexOf('\n');
      }
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      report.exit = killed ? 'killed' : (code ?? -1);
      if (!killed && code !== 0) {
        reject(new Error(`the ledger worker (${mode}) exited with ${code}: ${stderr.trim()}`));
        return;
      }
      resolve(report);
    });
  });
}

/** Runs the crash and the retry against the demo's store (`url`); `taskId` names this demo run. */
export async function crashAndRetry(url: string, taskId: string): Promise<CrashReport> {
  const dir = mkdtempSync(join(tmpdir(), 'llm-cache-demo-outbox-'));
  const outbox = join(dir, 'outbox.jsonl');
  const config: WorkerConfig = {
    url,
    namespace: LEDGER_NAMESPACE,
    taskId: `${taskId}-crash`,
    outbox,
    leaseTtlMs: LEASE_TTL_MS,
  };
  const started = performance.now();
  try {
    const first = await runWorker('crash', config, 'post_announcement');
    const retry = await runWorker('retry', config);
    const lines = existsSync(outbox) ? readFileSync(outbox, 'utf8').split('\n').filter(Boolean) : [];
    const delivered = lines.map((line) => JSON.parse(line) as OutboxLine);
    const report: CrashReport = {
      ok: true,
      problems: [],
      taskId: config.taskId,
      first,
      retry,
      outbox: delivered,
      ms: performance.now() - started,
    };
    check(report);
    return report;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function check(report: CrashReport): void {
  const problem = (text: string) => report.problems.push(`ledger crash/retry: ${text}`);
  const count = (effect: OutboxLine['effect']) =>
    report.outbox.filter((line) => line.effect === effect).length;
  if (report.first.exit !== 'killed') problem('the first process was not killed mid-tool');
  const email = report.retry.outcomes.find((outcome) => outcome.tool === 'send_welcome_email');
  const post = report.retry.outcomes.find((outcome) => outcome.tool === 'post_announcement');
  if (email?.source !== 'replayed')
    problem(`the retry's email was ${email?.source ?? 'missing'}, not replayed`);
  if (count('email') !== 1) problem(`${count('email')} emails were sent, not 1`);
  if (post?.source !== 'executed' || !post.recovered)
    problem('the retry did not take over the abandoned post');
  if (count('announcement') !== 1) problem(`${count('announcement')} announcements were posted, not 1`);
  report.ok = report.problems.length === 0;
}
