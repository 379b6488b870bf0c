const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'] as const;

/** `1536` → `1.5 KiB`. */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** Thousands separators whatever the user's locale, so output is stable for scripts and tests. */
export function formatInt(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}

/** `1 entry`, `2,500 entries`. */
export function entries(count: number): string {
  return `${formatInt(count)} ${count === 1 ? 'entry' : 'entries'}`;
}

export function formatRate(hits: number, misses: number): string {
  const lookups = hits + misses;
  return lookups === 0 ? '-' : `${((hits / lookups) * 100).toFixed(1)}%`;
}

/** Sub-dollar savings need more digits to be visible at all. */
export function formatUsd(value: number): string {
  return value >= 1 || value === 0 ? `$${value.toFixed(2)}` : `$${value.toFixed(4)}`;
}

const STEPS: ReadonlyArray<readonly [unit: string, ms: number]> = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1_000],
];

/** The two largest units, rounded down: `6d 21h`, `3m 12s`, `450ms`. */
export function formatDuration(ms: number): string {
  const abs = Math.abs(ms);
  if (abs < 1000) return `${Math.floor(abs)}ms`;
  const parts: string[] = [];
  let rest = abs;
  for (const [unit, size] of STEPS) {
    if (parts.length === 0 && rest < size) continue;
    parts.push(`${Math.floor(rest / size)}${unit}`);
    rest %= size;
    if (parts.length === 2) break;
  }
  return parts.join(' ');
}

export interface Column {
  header: string;
  /** Right-align (numbers). @default false */
  right?: boolean;
}

/** A plain-text table: two spaces between columns, no trailing spaces. */
export function renderTable(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  const widths = columns.map((column, i) =>
    Math.max(column.header.length, ...rows.map((row) => (row[i] ?? '').length)),
  );
  const line = (cells: readonly string[]) =>
    columns
      .map((column, i) => {
        const cell = cells[i] ?? '';
        const width = widths[i]!;
        return column.right ? cell.padStart(width) : cell.padEnd(width);
      })
      .join('  ')
      .trimEnd();
  return [line(columns.map((column) => column.header)), ...rows.map(line)].join('\n');
}

/** `key   value` lines with the keys aligned. */
export function renderFields(fields: ReadonlyArray<readonly [label: string, value: string]>): string {
  const width = Math.max(...fields.map(([label]) => label.length));
  return fields.map(([label, value]) => `${label.padEnd(width)}  ${value}`).join('\n');
}
