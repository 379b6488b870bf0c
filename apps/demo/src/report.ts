/** Plain-text tables for the demo's output (console.table quotes strings and adds an index column). */
import type { OperationRecord, PassFigures } from './measure.ts';
import type { CrashReport } from './scenarios/crash.ts';

/** `textColumns` are left-aligned (by default only the first); the others hold figures, right-aligned. */
export function table(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  textColumns = 1,
): string {
  const indent = '  ';
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: readonly string[]) =>
    indent +
    cells
      .map((cell, column) =>
        column < textColumns ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!),
      )
      .join('  ')
      .trimEnd();
  const rule = indent + widths.map((width) => '─'.repeat(width)).join('  ');
  return [line(headers), rule, ...rows.map(line)].join('\n');
}

export function ms(value: number): string {
  if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
  if (value >= 100) return `${value.toFixed(0)} ms`;
  return `${value.toFixed(1)} ms`;
}

export function int(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}

export function usd(value: number): string {
  return `$${value.toFixed(6)}`;
}

export function speedUp(cold: number, warm: number): string {
  if (warm <= 0) return '—';
  const ratio = cold / warm;
  return ratio >= 10 ? `${ratio.toFixed(0)}×` : `${ratio.toFixed(1)}×`;
}

export function sumFigures(list: readonly (PassFigures | undefined)[]): PassFigures {
  const total: PassFigures = {
    calls: 0,
    hits: 0,
    ms: 0,
    inputTokensSaved: 0,
    outputTokensSaved: 0,
    costSavedUsd: 0,
    modelCalls: 0,
    servedBy: [],
    toolCalls: 0,
    toolExecutions: 0,
  };
  for (const figures of list) {
    if (!figures) continue;
    total.calls += figures.calls;
    total.hits += figures.hits;
    total.ms += figures.ms;
    total.inputTokensSaved += figures.inputTokensSaved;
    total.outputTokensSaved += figures.outputTokensSaved;
    total.costSavedUsd += figures.costSavedUsd;
    total.toolCalls += figures.toolCalls;
    total.toolExecutions += figures.toolExecutions;
    total.modelCalls =
      total.modelCalls === undefined || figures.modelCalls === undefined
        ? undefined
        : total.modelCalls + figures.modelCalls;
    for (const level of figures.servedBy) if (!total.servedBy.includes(level)) total.servedBy.push(level);
  }
  return total;
}

const HEADERS = [
  'operation',
  'cold hits',
  'cold time',
  'warm hits',
  'warm time',
  'speed-up',
  'tokens saved',
  'cost saved',
  'served by',
];

function row(label: string, cold: PassFigures, warm: PassFigures): string[] {
  return [
    label,
    `${cold.hits}/${cold.calls}`,
    ms(cold.ms),
    `${warm.hits}/${warm.calls}`,
    ms(warm.ms),
    speedUp(cold.ms, warm.ms),
    int(warm.inputTokensSaved + warm.outputTokensSaved),
    usd(warm.costSavedUsd),
    warm.servedBy.join(', ') || '—',
  ];
}

/** One adapter's table: a row per operation, then the adapter's total. */
export function adapterTable(records: readonly OperationRecord[]): string {
  const rows = records.map((record) => row(record.operation, record.cold!, record.warm!));
  const cold = sumFigures(records.map((record) => record.cold));
  const warm = sumFigures(records.map((record) => record.warm));
  rows.push(row('total', cold, warm));
  const lines = [table(HEADERS, rows)];
  const modelCalls =
    cold.modelCalls === undefined || warm.modelCalls === undefined
      ? ''
      : ` · model calls: ${cold.modelCalls} cold, ${warm.modelCalls} warm`;
  lines.push(
    `  warm run saved ${int(warm.inputTokensSaved)} input + ${int(warm.outputTokensSaved)} output tokens, ` +
      `${usd(warm.costSavedUsd)}${modelCalls}`,
  );
  if (cold.toolCalls + warm.toolCalls > 0) {
    lines.push(
      `  tool calls: ${cold.toolCalls} cold (${cold.toolExecutions} ran), ${warm.toolCalls} warm ` +
        `(${warm.toolExecutions} ran; the tool ledger served the rest)`,
    );
  }
  for (const record of records) {
    if (!record.sample) continue;
    const same = record.sameAnswer ? 'same answer warm' : 'ANSWER DIFFERED warm';
    lines.push(`  › ${record.operation} (${same}): ${record.sample}`);
  }
  return lines.join('\n');
}

/** The crash-and-retry story, one row per tool, and what reached the outside world. */
export function crashTable(report: CrashReport): string {
  const firstOf = (tool: string) => {
    const outcome = report.first.outcomes.find((each) => each.tool === tool);
    if (outcome) return `${outcome.source} (attempt ${outcome.attempt})`;
    return report.first.started.includes(tool) ? 'killed mid-execution' : 'never reached';
  };
  const retryOf = (tool: string) => {
    const outcome = report.retry.outcomes.find((each) => each.tool === tool);
    if (!outcome) return 'missing';
    if (outcome.source === 'replayed') return `replayed ${outcome.value.id} (not run again)`;
    return `${outcome.source} (attempt ${outcome.attempt}${outcome.recovered ? ', took over after the lease' : ''})`;
  };
  const delivered = (effect: string) => String(report.outbox.filter((line) => line.effect === effect).length);
  const rows = [
    ['send_welcome_email', firstOf('send_welcome_email'), retryOf('send_welcome_email'), delivered('email')],
    [
      'post_announcement',
      firstOf('post_announcement'),
      retryOf('post_announcement'),
      delivered('announcement'),
    ],
  ];
  return [
    `  process 1 (pid ${report.first.pid}) ran the task and was killed with SIGKILL while post_announcement ran;`,
    `  process 2 (pid ${report.retry.pid}) retried the same task (${report.taskId}) on the same store:`,
    table(['write tool', 'process 1', 'process 2 (retry)', 'delivered'], rows, 3),
    `  ${report.ok ? 'each side effect reached the outbox exactly once' : report.problems.join('; ')} (${ms(report.ms)})`,
  ].join('\n');
}
