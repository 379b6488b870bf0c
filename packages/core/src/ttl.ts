import { cacheError } from './errors.ts';

/** A duration: milliseconds as a number, or a string such as `'500ms'`, `'30s'`, `'15m'`, `'12h'`, `'7d'`, `'2w'`. */
export type Duration = number | `${number}${DurationUnit}` | `${number} ${DurationUnit}`;
export type DurationUnit = 'ms' | 's' | 'm' | 'h' | 'd' | 'w';

const UNIT_MS: Record<DurationUnit, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

const DURATION_RE = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$/;

/**
 * Parses a duration into milliseconds. `undefined` stays `undefined` (no expiry).
 * `Infinity` also means no expiry.
 */
export function parseDuration(value: Duration | undefined, what = 'ttl'): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'number') {
    if (value === Number.POSITIVE_INFINITY) return undefined;
    if (!Number.isFinite(value) || value < 0) {
      throw cacheError(
        'E_INVALID_OPTION',
        'options',
        `${what} must be a non-negative number of ms, got ${value}`,
      );
    }
    return value;
  }
  const match = typeof value === 'string' ? DURATION_RE.exec(value) : null;
  if (!match) {
    throw cacheError(
      'E_INVALID_OPTION',
      'options',
      `${what} "${String(value)}" is not a duration: use a number of ms or a string like '500ms', '30s', '15m', '12h', '7d'`,
    );
  }
  return Math.round(Number(match[1]) * UNIT_MS[match[2] as DurationUnit]);
}

/**
 * A duration that must be more than 0 ms (`timeout`, `lockTtl`): 0 is refused with `hint`, which
 * names what to pass instead. `Infinity` gives undefined, which the caller reads as "none" or
 * refuses.
 */
export function positiveDuration(value: Duration, what: string, hint: string): number | undefined {
  const ms = parseDuration(value, what);
  if (ms === 0) {
    throw cacheError('E_INVALID_OPTION', 'options', `${what} must be more than 0 ms; ${hint}`);
  }
  return ms;
}

/**
 * A duration that must be finite (a lease, a pause before a retry): `Infinity` is refused with
 * `hint`, which says what the value is for; with `positive`, so is 0 (as `positiveDuration`).
 */
export function finiteDuration(value: Duration, what: string, hint: string, positive = false): number {
  const ms = positive ? positiveDuration(value, what, hint) : parseDuration(value, what);
  if (ms === undefined) {
    throw cacheError('E_INVALID_OPTION', 'options', `${what} must be finite: ${hint}`);
  }
  return ms;
}

/** Resolves `ttl` or the source documents' `ttlHours` form into ms. */
export function resolveTtl(options: {
  ttl?: Duration | undefined;
  ttlHours?: number | undefined;
}): number | undefined {
  if (options.ttl !== undefined && options.ttlHours !== undefined) {
    throw cacheError('E_INVALID_OPTION', 'options', 'pass either ttl or ttlHours, not both');
  }
  if (options.ttlHours !== undefined) return parseDuration(options.ttlHours * 3_600_000, 'ttlHours');
  return parseDuration(options.ttl);
}
