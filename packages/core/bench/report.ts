/** Plain-text (Markdown) tables, so the output can be pasted into docs/benchmarks.md as is. */

export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: readonly string[]): string =>
    '| ' + cells.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ') + ' |';
  const rule = '|' + widths.map((width) => '-'.repeat(width + 2)).join('|') + '|';
  return [line(headers), rule, ...rows.map(line)].join('\n');
}

/** Microseconds with 3 significant figures. */
export function us(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

export function ops(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  return value >= 1e6
    ? (value / 1e6).toFixed(2) + 'M'
    : value >= 1e3
      ? (value / 1e3).toFixed(0) + 'k'
      : value.toFixed(0);
}

export function ratio(value: number): string {
  return Number.isFinite(value) ? value.toFixed(2) + '×' : 'n/a';
}

export function ms(value: number): string {
  return Number.isFinite(value) ? value.toFixed(value >= 100 ? 0 : 2) + ' ms' : 'n/a';
}

export function pct(value: number): string {
  return Number.isFinite(value) ? value.toFixed(1) + '%' : 'n/a';
}

export function mib(value: number): string {
  return Number.isFinite(value) ? (value / 1024 / 1024).toFixed(1) + ' MiB' : 'n/a';
}
